// The PROXY protocol v1/v2 parser (proxy_protocol.hpp): pure, so the fuzz
// target (tests/fuzz/fuzz_proxy.cpp) links this file alone. What a malformed
// header gets is Invalid, never a guess: the connection is closed.
#include "stream/proxy_protocol.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace juggler {

namespace {

constexpr std::string_view kV1 = "PROXY ";
constexpr std::size_t kV1Max = 107;  // the spec's bound, CRLF included
constexpr char kV2Sig[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

// The next space-delimited field of `line` (at most one space between).
std::string_view field(std::string_view& line) {
  const std::size_t sp = line.find(' ');
  const std::string_view f = line.substr(0, sp);
  line = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
  return f;
}

bool parse_port(std::string_view f, std::uint16_t* out) {
  if (f.empty() || f.size() > 5 || (f.size() > 1 && f[0] == '0')) return false;
  std::uint32_t v = 0;
  for (char c : f) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (v > 65535) return false;
  *out = static_cast<std::uint16_t>(v);
  return true;
}

// A textual address of `family`, checked by inet_pton, into `bin` (16
// bytes) and, normalised, into out->ip.
bool parse_ip(std::string_view f, int family, std::uint8_t* bin, ProxyHeader* out) {
  char text[46];
  if (f.empty() || f.size() >= sizeof text) return false;
  f.copy(text, f.size());
  text[f.size()] = '\0';
  if (inet_pton(family, text, bin) != 1) return false;
  return inet_ntop(family, bin, out->ip, sizeof out->ip) != nullptr;
}

ProxyParse parse_v1(std::string_view data, ProxyHeader* out, std::size_t* used) {
  // The first CR ends the line, and it must be followed by LF within the
  // bound: a CR anywhere else is malformed, whether or not its LF arrived
  // (the same bytes must not be Invalid or Done depending on how they came).
  const std::size_t end = data.substr(0, kV1Max - 1).find('\r');
  if (end == std::string_view::npos) return data.size() >= kV1Max ? ProxyParse::Invalid : ProxyParse::NeedMore;
  if (end + 1 == data.size()) return ProxyParse::NeedMore;
  if (data[end + 1] != '\n') return ProxyParse::Invalid;
  std::string_view line = data.substr(kV1.size(), end - kV1.size());
  const std::string_view proto = field(line);
  *out = ProxyHeader{};
  *used = end + 2;
  if (proto == "UNKNOWN") return ProxyParse::Done;  // whatever follows is ignored
  const int family = proto == "TCP4" ? AF_INET : proto == "TCP6" ? AF_INET6 : -1;
  if (family < 0) return ProxyParse::Invalid;
  const std::string_view src = field(line), dst = field(line), sport = field(line), dport = field(line);
  ProxyHeader dummy;
  ProxyAddrs& a = out->addrs;
  if (!line.empty() || !parse_ip(src, family, a.src, out) || !parse_ip(dst, family, a.dst, &dummy) ||
      !parse_port(sport, &out->port) || !parse_port(dport, &a.dst_port))
    return ProxyParse::Invalid;
  a.family = family == AF_INET ? 4 : 6;
  a.src_port = out->port;
  out->local = false;
  out->ip_len = static_cast<std::uint8_t>(std::strlen(out->ip));
  return ProxyParse::Done;
}

ProxyParse parse_v2(std::string_view data, ProxyHeader* out, std::size_t* used) {
  if (data.size() < 16) return ProxyParse::NeedMore;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  const unsigned version = p[12] >> 4, command = p[12] & 0x0f;
  const unsigned family = p[13] >> 4, transport = p[13] & 0x0f;
  const std::size_t len = (static_cast<std::size_t>(p[14]) << 8) | p[15];
  if (version != 2 || command > 1 || 16 + len > kMaxProxyHeader) return ProxyParse::Invalid;
  if (data.size() < 16 + len) return ProxyParse::NeedMore;
  *out = ProxyHeader{};
  *used = 16 + len;
  // LOCAL (health checks of the tier in front), UNSPEC, UNIX and datagram
  // addresses carry no client IP to use: the connection's own stands.
  if (command == 0 || transport != 1 || (family != 1 && family != 2)) return ProxyParse::Done;
  const std::size_t addr_len = family == 1 ? 12 : 36;
  if (len < addr_len) return ProxyParse::Invalid;  // TLVs (after the addresses) are skipped
  const std::size_t ip_size = family == 1 ? 4 : 16;
  if (!inet_ntop(family == 1 ? AF_INET : AF_INET6, p + 16, out->ip, sizeof out->ip)) return ProxyParse::Invalid;
  out->port = static_cast<std::uint16_t>((p[16 + 2 * ip_size] << 8) | p[16 + 2 * ip_size + 1]);
  ProxyAddrs& a = out->addrs;
  a.family = family == 1 ? 4 : 6;
  std::memcpy(a.src, p + 16, ip_size);
  std::memcpy(a.dst, p + 16 + ip_size, ip_size);
  a.src_port = out->port;
  a.dst_port = static_cast<std::uint16_t>((p[16 + 2 * ip_size + 2] << 8) | p[16 + 2 * ip_size + 3]);
  out->local = false;
  out->ip_len = static_cast<std::uint8_t>(std::strlen(out->ip));
  return ProxyParse::Done;
}

// An IPv4-mapped IPv6 address (::ffff:a.b.c.d).
bool v4_mapped(const std::uint8_t* ip) {
  static constexpr std::uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return std::memcmp(ip, kPrefix, sizeof kPrefix) == 0;
}

char* put_port(char* p, std::uint16_t port) {
  char digits[5];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + port % 10);
    port = static_cast<std::uint16_t>(port / 10);
  } while (port);
  while (n) *p++ = digits[--n];
  return p;
}

}  // namespace

std::size_t format_proxy_header(SendProxy version, const ProxyAddrs& addrs, char (&out)[kProxyHeaderOut]) noexcept {
  ProxyAddrs a = addrs;
  if (a.family == 6 && v4_mapped(a.src) && v4_mapped(a.dst)) {
    // A dual-stack listener's IPv4 client: said as IPv4, as the listener's peer_ip() says it.
    std::memmove(a.src, a.src + 12, 4);
    std::memmove(a.dst, a.dst + 12, 4);
    a.family = 4;
  }
  if (version == SendProxy::V1) {
    if (a.family != 4 && a.family != 6) {
      constexpr std::string_view kUnknown = "PROXY UNKNOWN\r\n";
      kUnknown.copy(out, kUnknown.size());
      return kUnknown.size();
    }
    const int af = a.family == 4 ? AF_INET : AF_INET6;
    char* p = out;
    const std::string_view head = a.family == 4 ? "PROXY TCP4 " : "PROXY TCP6 ";
    p += head.copy(p, head.size());
    for (const std::uint8_t* ip : {a.src, a.dst}) {
      // INET6_ADDRSTRLEN (46) each: 11 + 2 * 46 leaves room for the ports.
      if (!inet_ntop(af, ip, p, static_cast<socklen_t>(out + kProxyHeaderOut - p))) return 0;
      p += std::strlen(p);
      *p++ = ' ';
    }
    p = put_port(p, a.src_port);
    *p++ = ' ';
    p = put_port(p, a.dst_port);
    *p++ = '\r';
    *p++ = '\n';
    return static_cast<std::size_t>(p - out);
  }
  std::memcpy(out, kV2Sig, sizeof kV2Sig);
  auto* p = reinterpret_cast<unsigned char*>(out);
  if (a.family != 4 && a.family != 6) {
    p[12] = 0x20;  // v2, LOCAL
    p[13] = 0x00;  // UNSPEC
    p[14] = p[15] = 0;
    return 16;
  }
  const std::size_t ip_size = a.family == 4 ? 4 : 16;
  p[12] = 0x21;                          // v2, PROXY
  p[13] = a.family == 4 ? 0x11 : 0x21;  // TCP over IPv4 / IPv6
  p[14] = 0;
  p[15] = static_cast<unsigned char>(2 * ip_size + 4);
  std::memcpy(p + 16, a.src, ip_size);
  std::memcpy(p + 16 + ip_size, a.dst, ip_size);
  unsigned char* ports = p + 16 + 2 * ip_size;
  ports[0] = static_cast<unsigned char>(a.src_port >> 8);
  ports[1] = static_cast<unsigned char>(a.src_port);
  ports[2] = static_cast<unsigned char>(a.dst_port >> 8);
  ports[3] = static_cast<unsigned char>(a.dst_port);
  return 16 + 2 * ip_size + 4;
}

ProxyParse parse_proxy_header(std::string_view data, ProxyHeader* out, std::size_t* used) noexcept {
  const std::size_t n1 = std::min(data.size(), kV1.size());
  if (data.substr(0, n1) == kV1.substr(0, n1) && n1 > 0) {
    if (data.size() <= kV1.size()) return ProxyParse::NeedMore;
    return parse_v1(data, out, used);
  }
  const std::size_t n2 = std::min(data.size(), sizeof kV2Sig);
  if (n2 > 0 && std::memcmp(data.data(), kV2Sig, n2) == 0) {
    if (data.size() < sizeof kV2Sig) return ProxyParse::NeedMore;
    return parse_v2(data, out, used);
  }
  return data.empty() ? ProxyParse::NeedMore : ProxyParse::Invalid;
}

}  // namespace juggler
