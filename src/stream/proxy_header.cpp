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

// A textual address of `family`, checked by inet_pton, copied into out->ip.
bool parse_ip(std::string_view f, int family, ProxyHeader* out) {
  char text[46];
  if (f.empty() || f.size() >= sizeof text) return false;
  f.copy(text, f.size());
  text[f.size()] = '\0';
  unsigned char bin[16];
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
  std::uint16_t dp = 0;
  ProxyHeader dummy;
  if (!line.empty() || !parse_ip(src, family, out) || !parse_ip(dst, family, &dummy) ||
      !parse_port(sport, &out->port) || !parse_port(dport, &dp))
    return ProxyParse::Invalid;
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
  out->local = false;
  out->ip_len = static_cast<std::uint8_t>(std::strlen(out->ip));
  return ProxyParse::Done;
}

}  // namespace

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
