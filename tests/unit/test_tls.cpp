// TlsStream against an in-memory OpenSSL client: handshake, record framing of
// writes, byte-exact plaintext both ways.
#include <catch2/catch.hpp>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <string>
#include <vector>

#include "test_cert.hpp"
#include "juggler/tls.hpp"

using namespace juggler;

namespace {

SSL_CTX* server_ctx() { return juggler::test::self_signed_server_ctx(); }

struct Client {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  BIO* in = BIO_new(BIO_s_mem());   // server → client
  BIO* out = BIO_new(BIO_s_mem());  // client → server
  Client() {
    BIO_set_mem_eof_return(in, -1);
    SSL_set_bio(ssl, in, out);
    SSL_set_connect_state(ssl);
  }
  ~Client() {
    SSL_free(ssl);
    SSL_CTX_free(ctx);
  }
  std::string take() {
    std::string s(BIO_ctrl_pending(out), '\0');
    if (!s.empty()) BIO_read(out, s.data(), static_cast<int>(s.size()));
    return s;
  }
};

// Drives both sides until the handshake is done on both.
void handshake(Client& c, TlsStream& t) {
  char plain[256];
  for (int round = 0; round < 10; ++round) {
    SSL_do_handshake(c.ssl);
    std::string to_server = c.take();
    if (!to_server.empty()) t.feed(to_server.data(), to_server.size());
    std::size_t got = 0;
    REQUIRE(t.read(plain, sizeof plain, &got) != TlsStream::Read::Error);
    t.take_output();
    const std::string to_client = t.out;
    if (!to_client.empty()) BIO_write(c.in, to_client.data(), static_cast<int>(to_client.size()));
    if (SSL_is_init_finished(c.ssl) && t.handshake_done()) return;
  }
  FAIL("handshake did not complete");
}

// Application-data records (type 23) in a ciphertext stream.
int app_records(const std::string& tls) {
  int n = 0;
  std::size_t at = 0;
  while (at + 5 <= tls.size()) {
    const auto len = static_cast<std::size_t>(static_cast<unsigned char>(tls[at + 3]) << 8 |
                                              static_cast<unsigned char>(tls[at + 4]));
    if (tls[at] == 23) ++n;
    at += 5 + len;
  }
  REQUIRE(at == tls.size());
  return n;
}

std::string client_read_all(Client& c, const std::string& tls) {
  BIO_write(c.in, tls.data(), static_cast<int>(tls.size()));
  std::string plain;
  char buf[4096];
  std::size_t got = 0;
  while (SSL_read_ex(c.ssl, buf, sizeof buf, &got) == 1) plain.append(buf, got);
  return plain;
}

}  // namespace

TEST_CASE("TLS writes: small slices share one record, large ones are not copied into many", "[tls]") {
  SSL_CTX* ctx = server_ctx();
  {
    TlsStream t(ctx);
    Client c;
    handshake(c, t);
    t.take_output();  // session tickets
    client_read_all(c, t.out);

    // A response as the session sends it: head pieces, our line, CRLF, body.
    std::string head1 = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n";
    std::string conn = "Connection: keep-alive\r\n";
    std::string crlf = "\r\n";
    std::string body = "hello";
    uv_buf_t iov[4] = {uv_buf_init(head1.data(), static_cast<unsigned>(head1.size())),
                       uv_buf_init(conn.data(), static_cast<unsigned>(conn.size())),
                       uv_buf_init(crlf.data(), static_cast<unsigned>(crlf.size())),
                       uv_buf_init(body.data(), static_cast<unsigned>(body.size()))};
    REQUIRE(t.write(iov, 4));
    t.take_output();
    std::string tls = t.out;
    CHECK(app_records(tls) == 1);
    CHECK(client_read_all(c, tls) == head1 + conn + crlf + body);

    // 40,000 bytes after a small head: records of at most 16 KB, as few as fit.
    std::string big(40000, 'x');
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
    uv_buf_t iov2[2] = {uv_buf_init(head1.data(), static_cast<unsigned>(head1.size())),
                        uv_buf_init(big.data(), static_cast<unsigned>(big.size()))};
    REQUIRE(t.write(iov2, 2));
    t.take_output();
    tls = t.out;
    CHECK(app_records(tls) == 3);
    CHECK(client_read_all(c, tls) == head1 + big);

    // Plaintext from the client arrives byte-exact.
    std::string req = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    std::size_t done = 0;
    REQUIRE(SSL_write_ex(c.ssl, req.data(), req.size(), &done) == 1);
    std::string to_server = c.take();
    t.feed(to_server.data(), to_server.size());
    char plain[256];
    std::size_t got = 0;
    REQUIRE(t.read(plain, sizeof plain, &got) == TlsStream::Read::Data);
    CHECK(std::string(plain, got) == req);
    CHECK_FALSE(t.buffered());
  }
  SSL_CTX_free(ctx);
}
