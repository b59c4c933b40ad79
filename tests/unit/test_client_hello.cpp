// The ClientHello parser (src/stream/client_hello.cpp): the server_name of
// ClientHellos OpenSSL writes (TLS 1.2 and 1.3, with and without SNI), every
// prefix says NeedMore, malformed lengths are Invalid, what is not TLS is
// Invalid at its first byte.
#include <openssl/ssl.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

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

HelloParse parse(const std::string& bytes, std::string* name = nullptr, std::size_t* end = nullptr) {
  ClientHello hello;
  const HelloParse r = parse_client_hello(bytes, &hello);
  if (name) *name = std::string(hello.name);
  if (end) *end = hello.end;
  return r;
}

std::string record(std::string_view fragment, char type = 22) {
  const auto n = fragment.size();
  return std::string{type, 3, 1, static_cast<char>(n >> 8), static_cast<char>(n & 0xff)} + std::string(fragment);
}

// The handshake message of a one-record hello sent again in records cut at
// `cuts` (offsets into the message, ascending), as a client that fragments
// does.
std::string refragment(const std::string& hello, const std::vector<std::size_t>& cuts) {
  const std::string message = hello.substr(5);
  std::string out;
  std::size_t from = 0;
  for (std::size_t cut : cuts) {
    out += record(message.substr(from, cut - from));
    from = cut;
  }
  return out + record(message.substr(from));
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
  short_body[8] = static_cast<char>(short_body[8] + 1);  // the handshake says one byte more than the record:
  CHECK(parse(short_body) == HelloParse::NeedMore);          // the next record may carry it,
  CHECK(parse(short_body + "\x17\x03\x03") == HelloParse::Invalid);  // but application data may not
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

TEST_CASE("client hello: a hello fragmented over several records is joined", "[client_hello]") {
  const std::string hello = client_hello("db.example.com");
  const std::size_t message = hello.size() - 5;
  const std::size_t name_at = hello.find("db.example.com") - 5;
  REQUIRE(message > 200);
  const std::vector<std::vector<std::size_t>> cuts = {
      {1},                        // the handshake header itself cut
      {3},                        // ...and its length
      {message / 2},              // in two
      {name_at + 4},              // through the host_name: joined into ClientHello::joined
      {40, name_at + 1, message - 1},
      {name_at, name_at + 14},    // the name alone in a record
  };
  for (const auto& at : cuts) {
    const std::string records = refragment(hello, at);
    CAPTURE(at);
    std::string name;
    std::size_t end = 0;
    REQUIRE(parse(records + "\x17\x03\x03 early data", &name, &end) == HelloParse::Done);
    CHECK(name == "db.example.com");
    CHECK(end == records.size());
    for (std::size_t k = 0; k < records.size(); ++k) {
      std::size_t want = 0;
      CHECK(parse(records.substr(0, k), nullptr, &want) == HelloParse::NeedMore);
      CHECK(want > k);  // the hint: no answer before that many bytes
    }
  }
  // A byte per record, as a client defeating middleboxes may send it.
  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < message; ++i) every.push_back(i);
  std::string name;
  CHECK(parse(refragment(hello, every), &name) == HelloParse::Done);
  CHECK(name == "db.example.com");
}

TEST_CASE("client hello: fragments that are not a handshake, or too much of one: Invalid", "[client_hello]") {
  const std::string hello = client_hello("db.example.com");
  const std::string message = hello.substr(5);
  // Another record type between the fragments (RFC 8446 5.1: not interleaved).
  CHECK(parse(record(message.substr(0, 50)) + record("\x01\x00", 21) + record(message.substr(50))) ==
        HelloParse::Invalid);
  // An empty handshake record (RFC 8446 5.1 forbids them).
  CHECK(parse(record(message.substr(0, 50)) + record("") + record(message.substr(50))) == HelloParse::Invalid);
  // A message longer than kMaxHelloMessage, whatever the records: refused at its header.
  std::string big = message;
  big[1] = 0;
  big[2] = '\x40';
  big[3] = 0;  // 16384 bytes of body: 16388 with the header
  CHECK(parse(record(big.substr(0, 4))) == HelloParse::Invalid);
  big[2] = '\x3f';
  big[3] = '\xfc';  // 16380: exactly kMaxHelloMessage, still waited for
  CHECK(parse(record(big.substr(0, 4))) == HelloParse::NeedMore);
  // A record that is not a ClientHello's first is refused at its sixth byte.
  CHECK(parse(record(std::string("\x02", 1))) == HelloParse::Invalid);
}
