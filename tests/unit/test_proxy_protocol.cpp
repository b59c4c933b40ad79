// The PROXY protocol v1/v2 parser (src/stream/proxy_header.cpp): addresses
// out of each version and family, LOCAL/UNKNOWN keep the connection's own,
// TLVs skipped, every prefix of a header says NeedMore, malformed is Invalid.
#include <catch2/catch.hpp>

#include <cstring>
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

namespace {

std::string formatted(SendProxy v, const ProxyAddrs& a) {
  char out[kProxyHeaderOut];
  return {out, format_proxy_header(v, a, out)};
}

ProxyAddrs addrs_of(std::string_view header) {
  ProxyHeader h;
  std::size_t used = 0;
  REQUIRE(parse_proxy_header(header, &h, &used) == ProxyParse::Done);
  CHECK(used == header.size());
  return h.addrs;
}

}  // namespace

TEST_CASE("proxy: the headers send_proxy writes, and read back", "[proxy]") {
  SECTION("v1 and v2 of the addresses a header in carried") {
    for (const std::string& in : {std::string("PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n"), v2(0x21, 0x11, kV4Body),
                                  std::string("PROXY TCP6 2001:db8::1 ::1 65535 443\r\n")}) {
      CAPTURE(in);
      const ProxyAddrs a = addrs_of(in);
      const bool six = a.family == 6;
      CHECK(formatted(SendProxy::V1, a) ==
            (six ? "PROXY TCP6 2001:db8::1 ::1 65535 443\r\n" : "PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n"));
      const std::string two = formatted(SendProxy::V2, a);
      CHECK(two.size() == (six ? 52u : 28u));
      if (!six) CHECK(two == v2(0x21, 0x11, kV4Body));
      const ProxyAddrs back = addrs_of(two);  // what we send, our own parser reads the same
      CHECK(back.family == a.family);
      CHECK(back.src_port == a.src_port);
      CHECK(back.dst_port == a.dst_port);
      CHECK(std::memcmp(back.src, a.src, 16) == 0);
      CHECK(std::memcmp(back.dst, a.dst, 16) == 0);
    }
  }
  SECTION("an IPv4-mapped pair goes as IPv4") {
    ProxyAddrs a;
    a.family = 6;
    const std::uint8_t src[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7};
    const std::uint8_t dst[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
    std::memcpy(a.src, src, 16);
    std::memcpy(a.dst, dst, 16);
    a.src_port = 4242;
    a.dst_port = 80;
    CHECK(formatted(SendProxy::V1, a) == "PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n");
    CHECK(formatted(SendProxy::V2, a) == v2(0x21, 0x11, kV4Body));
  }
  SECTION("unknown addresses: UNKNOWN and LOCAL") {
    CHECK(formatted(SendProxy::V1, ProxyAddrs{}) == "PROXY UNKNOWN\r\n");
    CHECK(formatted(SendProxy::V2, ProxyAddrs{}) == v2(0x20, 0x00, ""));
  }
  SECTION("the longest v1 header fits") {
    const ProxyAddrs a = addrs_of("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe "
                                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffd 65535 65534\r\n");
    const std::string one = formatted(SendProxy::V1, a);
    CHECK(one.size() == 104);
    CHECK(addrs_of(one).dst_port == 65534);
  }
}
