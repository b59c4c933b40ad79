// The ClientHello parser (src/stream/client_hello.cpp): the server_name of
// ClientHellos OpenSSL writes (TLS 1.2 and 1.3, with and without SNI), every
// prefix says NeedMore, malformed lengths are Invalid, what is not TLS is
// Invalid at its first byte.
#include <openssl/ssl.h>

#include <catch2/catch.hpp>
#include <string>

#include "stream/client_hello.hpp"

using namespace juggler;

namespace {

// The first flight of an OpenSSL client: its ClientHello record(s).
std::string client_hello(const char* name, int max_version = TLS1_3_VERSION) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_max_proto_version(ctx, max_version);
  SSL* ssl = SSL_new(ctx);
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, in, out);
  if (name) SSL_set_tlsext_host_name(ssl, name);
  SSL_set_connect_state(ssl);
  SSL_do_handshake(ssl);  // wants the server's answer: the hello is in `out`
  char* data = nullptr;
  const long n = BIO_get_mem_data(out, &data);
  std::string hello(data, static_cast<std::size_t>(n));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return hello;
}

HelloParse parse(const std::string& bytes, std::string* name = nullptr) {
  std::string_view n;
  const HelloParse r = parse_client_hello(bytes, &n);
  if (name) *name = std::string(n);
  return r;
}

}  // namespace

TEST_CASE("client hello: the server_name of real ClientHellos, split anywhere", "[client_hello]") {
  for (const int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    for (const char* name : {"db.example.com", "A-b_c.Example.COM", static_cast<const char*>(nullptr)}) {
      const std::string hello = client_hello(name, version);
      CAPTURE(version, name ? name : "(none)");
      std::string got;
      REQUIRE(parse(hello + "more bytes after the record", &got) == HelloParse::Done);
      CHECK(got == (name ? name : ""));
      for (std::size_t k = 0; k < hello.size(); ++k) CHECK(parse(hello.substr(0, k)) == HelloParse::NeedMore);
    }
  }
}

TEST_CASE("client hello: not TLS, not a ClientHello, or lengths that do not add up: Invalid", "[client_hello]") {
  const std::string good = client_hello("db.example.com");
  REQUIRE(good.size() > 60);
  CHECK(parse("GET / HTTP/1.1\r\n") == HelloParse::Invalid);  // at the first byte
  CHECK(parse("G") == HelloParse::Invalid);
  CHECK(parse(std::string("\x16\x02", 2)) == HelloParse::Invalid);  // not a TLS 1.x record
  std::string server_hello = good;
  server_hello[5] = 2;
  CHECK(parse(server_hello) == HelloParse::Invalid);
  std::string huge = good;
  huge[3] = '\x7f';  // a record beyond one record's 16 KB
  CHECK(parse(huge) == HelloParse::Invalid);
  std::string short_body = good;
  short_body[8] = static_cast<char>(short_body[8] + 1);  // the handshake says one byte more than the record
  CHECK(parse(short_body) == HelloParse::Invalid);
  // Each byte of the handshake length, session id and suites lengths raised: never a crash,
  // never a name outside the record.
  for (std::size_t at = 6; at < 60; ++at) {
    std::string bad = good;
    bad[at] = '\xff';
    std::string name;
    const HelloParse r = parse(bad, &name);
    CAPTURE(at);
    if (r == HelloParse::Done) CHECK((name.empty() || good.find(name) != std::string::npos));
  }
  // A host_name that is no DNS name.
  std::string odd = good;
  const std::size_t at = odd.find("db.example.com");
  REQUIRE(at != std::string::npos);
  odd[at + 2] = '/';
  CHECK(parse(odd) == HelloParse::Invalid);
}
