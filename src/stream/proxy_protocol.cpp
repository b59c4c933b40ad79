// The PROXY protocol prelude (proxy_protocol.hpp): the parser
// (proxy_header.cpp) run on a connection's first bytes.
#include "stream/proxy_protocol.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace juggler {

// ---------------------------------------------------------------- the prelude

void ProxyPrelude::start(Stream& s, BufferPool& buffers, char* ip_out, std::uint8_t* ip_len_out,
                         void (*done)(void*, const ProxyHeader&), void* done_owner) noexcept {
  ip = ip_out;
  ip_len = ip_len_out;
  on_done = done;
  owner = done_owner;
  begin(s, buffers);
}

Prelude::Verdict ProxyPrelude::prelude_read(std::size_t n, std::string_view* rest) noexcept {
  len += static_cast<std::uint32_t>(n);
  ProxyHeader h;
  std::size_t used = 0;
  const ProxyParse r = parse_proxy_header(std::string_view(buf->data, len), &h, &used);
  if (r == ProxyParse::NeedMore) return Verdict::NeedMore;
  if (r == ProxyParse::Invalid) {
    release();
    return Verdict::Reject;
  }
  if (!h.local) {
    std::memcpy(ip, h.ip, h.ip_len + 1u);
    *ip_len = h.ip_len;
  }
  if (on_done) on_done(owner, h);
  *rest = std::string_view(buf->data + used, len - used);
  return Verdict::Done;
}

// ---------------------------------------------------------------- our own header

bool proxy_addrs_of(uv_tcp_t* tcp, ProxyAddrs* out) noexcept {
  sockaddr_storage ends[2];
  int len = sizeof ends[0];
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ends[0]), &len) != 0) return false;
  len = sizeof ends[1];
  if (uv_tcp_getsockname(tcp, reinterpret_cast<sockaddr*>(&ends[1]), &len) != 0) return false;
  if (ends[0].ss_family != ends[1].ss_family) return false;
  *out = ProxyAddrs{};
  for (int i = 0; i < 2; ++i) {
    std::uint8_t* ip = i == 0 ? out->src : out->dst;
    std::uint16_t& port = i == 0 ? out->src_port : out->dst_port;
    if (ends[i].ss_family == AF_INET) {
      const auto& in = reinterpret_cast<const sockaddr_in&>(ends[i]);
      std::memcpy(ip, &in.sin_addr, 4);
      port = ntohs(in.sin_port);
      out->family = 4;
    } else if (ends[i].ss_family == AF_INET6) {
      const auto& in6 = reinterpret_cast<const sockaddr_in6&>(ends[i]);
      std::memcpy(ip, &in6.sin6_addr, 16);
      port = ntohs(in6.sin6_port);
      out->family = 6;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace juggler
