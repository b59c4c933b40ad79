// The PROXY protocol v1/v2 parser (src/stream/proxy_header.cpp): addresses
// out of each version and family, LOCAL/UNKNOWN keep the connection's own,
// TLVs skipped, every prefix of a header says NeedMore, malformed is Invalid.
#include <catch2/catch.hpp>

#include <string>

#include "stream/proxy_protocol.hpp"

using namespace juggler;

namespace {

std::string v2(unsigned char ver_cmd, unsigned char fam, const std::string& body) {
  std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
  h += static_cast<char>(ver_cmd);
  h += static_cast<char>(fam);
  h += static_cast<char>(body.size() >> 8);
  h += static_cast<char>(body.size() & 0xff);
  return h + body;
}

const std::string kV4Body("\xc0\x00\x02\x07\x7f\x00\x00\x01\x10\x92\x00\x50", 12);  // 192.0.2.7:4242 -> 127.0.0.1:80

struct Case {
  std::string bytes;
  std::size_t used;
  bool local;
  const char* ip;
};

}  // namespace

TEST_CASE("proxy: headers of both versions, and what follows them", "[proxy]") {
  std::string v6(32, '\0');
  v6[0] = '\x20', v6[1] = '\x01', v6[2] = '\x0d', v6[3] = '\xb8', v6[15] = '\x01', v6[31] = '\x01';
  v6 += std::string("\x10\x92\x01\xbb", 4);
  const Case cases[] = {
      {"PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n", 40, false, "192.0.2.7"},
      {"PROXY TCP6 2001:db8::1 ::1 4242 443\r\n", 37, false, "2001:db8::1"},
      {"PROXY UNKNOWN ffff::1 whatever\r\n", 32, true, ""},
      {v2(0x21, 0x11, kV4Body), 28, false, "192.0.2.7"},
      {v2(0x21, 0x11, kV4Body + std::string("\x04\x00\x02" "ab", 5)), 33, false, "192.0.2.7"},  // a TLV
      {v2(0x21, 0x21, v6), 52, false, "2001:db8::1"},
      {v2(0x20, 0x00, ""), 16, true, ""},             // LOCAL
      {v2(0x21, 0x31, std::string(216, 'u')), 232, true, ""},  // AF_UNIX: no IP
  };
  for (const Case& c : cases) {
    const std::string with_tail = c.bytes + "GET / HTTP/1.1\r\n";
    ProxyHeader h;
    std::size_t used = 0;
    CAPTURE(c.bytes);
    REQUIRE(parse_proxy_header(with_tail, &h, &used) == ProxyParse::Done);
    CHECK(used == c.used);
    CHECK(h.local == c.local);
    CHECK(std::string(h.ip, h.ip_len) == c.ip);
    for (std::size_t k = 0; k < used; ++k) CHECK(parse_proxy_header(std::string_view(with_tail).substr(0, k), &h, &used) == ProxyParse::NeedMore);
  }
}

TEST_CASE("proxy: malformed headers are Invalid", "[proxy]") {
  const std::string bad[] = {
      "GET / HTTP/1.1\r\n",
      "PROXY TCP4 192.0.2.700 127.0.0.1 1 2\r\n",
      "PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n",  // family mismatch
      "PROXY TCP4 192.0.2.7 127.0.0.1 1 2 3\r\n",  // an extra field
      "PROXY TCP4 192.0.2.7 127.0.0.1 1 65536\r\n",
      "PROXY TCP4 192.0.2.7 127.0.0.1 01 2\r\n",   // leading zero
      "PROXY TCP4  192.0.2.7 127.0.0.1 1 2\r\n",   // two spaces
      "PROXY TCP5 192.0.2.7 127.0.0.1 1 2\r\n",
      "PROXY TCP4 192.0.2.7\r127.0.0.1 1 2\r\n",
      "PROXY UNKNOWN 1\r1.1\r\n",               // a bare CR, even where the rest is ignored
      "PROXY " + std::string(120, '1'),           // no CRLF within 107 bytes
      v2(0x31, 0x11, kV4Body),                    // version 3
      v2(0x22, 0x11, kV4Body),                    // command 2
      v2(0x21, 0x11, kV4Body.substr(0, 8)),       // shorter than its addresses
      v2(0x21, 0x11, std::string(1100, 'x')),     // longer than kMaxProxyHeader
  };
  for (const std::string& b : bad) {
    ProxyHeader h;
    std::size_t used = 0;
    CAPTURE(b);
    CHECK(parse_proxy_header(b, &h, &used) == ProxyParse::Invalid);
  }
}
