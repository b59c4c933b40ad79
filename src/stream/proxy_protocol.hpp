// PROXY protocol v1 and v2 (haproxy.org/download/2.9/doc/proxy-protocol.txt):
// the header an L4 tier in front (a cloud NLB, HAProxy, IPVS) sends first on
// each connection, carrying the client's address. The parser is pure (no I/O,
// no allocation: proxy_header.cpp, fuzzed by tests/fuzz/fuzz_proxy.cpp);
// ProxyPrelude (proxy_protocol.cpp) runs it as a stream prelude
// (listen ... proxy_protocol).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "juggler/route.hpp"
#include "stream/buffered_prelude.hpp"

namespace juggler {

// A connection's two ends, as the PROXY protocol carries them (network byte
// order; an IPv4 address in the first 4 bytes).
struct ProxyAddrs {
  std::uint8_t family = 0;  // 4, 6, or 0: unknown (v1 UNKNOWN, v2 LOCAL)
  std::uint8_t src[16] = {}, dst[16] = {};
  std::uint16_t src_port = 0, dst_port = 0;
};

struct ProxyHeader {
  bool local = true;  // LOCAL / UNKNOWN / a family without an IP: the connection's own address stands
  std::uint8_t ip_len = 0;
  char ip[46] = {};   // the client's address as text ("192.0.2.7", "2001:db8::1") unless local
  std::uint16_t port = 0;
  ProxyAddrs addrs;   // both ends unless local
};

enum class ProxyParse : std::uint8_t { NeedMore, Done, Invalid };

// The longest header accepted (v1's is at most 107 bytes; a v2 header with
// its TLVs beyond this is refused).
inline constexpr std::size_t kMaxProxyHeader = 1024;

// Parses the PROXY header at the start of `data` (v1 or v2, told apart by
// their signatures). Done: `*used` is its length and `*out` its content.
// NeedMore: `data` is a valid beginning (never past kMaxProxyHeader).
// Invalid: not a PROXY header, or a malformed one.
ProxyParse parse_proxy_header(std::string_view data, ProxyHeader* out, std::size_t* used) noexcept;

// The longest header format_proxy_header writes (v1 TCP6 with both ports
// 65535 and CRLF: 104 bytes; v2 over IPv6: 52).
inline constexpr std::size_t kProxyHeaderOut = 108;

// Writes the header of `version` (V1 or V2) for `a` into `out` and returns
// its length: TCP4/TCP6 with both addresses and ports, or UNKNOWN (v1) /
// LOCAL (v2) when a.family is 0. An IPv4-mapped IPv6 pair goes as IPv4.
std::size_t format_proxy_header(SendProxy version, const ProxyAddrs& a, char (&out)[kProxyHeaderOut]) noexcept;

// The two ends of the accepted connection `tcp` (its peer, its local
// address), for a PROXY header of our own. False when either is unknown.
bool proxy_addrs_of(uv_tcp_t* tcp, ProxyAddrs* out) noexcept;

// The prelude of a `proxy_protocol` listener's connections: reads into a
// buffer of the worker's pool (given back once done), parses, writes the
// client's address into the owner's `ip`/`ip_len` (left as they are for a
// LOCAL header), and calls `on_done` (may be null) with the header before
// the protocol sees the bytes that followed it.
struct ProxyPrelude final : BufferedPrelude {
  char* ip = nullptr;               // the owner's, 46 bytes
  std::uint8_t* ip_len = nullptr;
  void (*on_done)(void* owner, const ProxyHeader& h) = nullptr;
  void* owner = nullptr;

  // Runs on `s` (accepted, not reading yet), then starts it reading.
  void start(Stream& s, BufferPool& buffers, char* ip_out, std::uint8_t* ip_len_out,
             void (*done)(void*, const ProxyHeader&), void* done_owner) noexcept;
  // No more than a header can need: what follows it waits in the kernel
  // (its delivery to the protocol must fit the protocol's room).
  uv_buf_t prelude_room() noexcept override { return room(kMaxProxyHeader); }
  Verdict prelude_read(std::size_t n, std::string_view* rest) noexcept override;
};

}  // namespace juggler
