// L4 listeners (`listen tcp ADDR:PORT pool=NAME`, and `listen tls`, whose
// client side is a TLS stream: the tunnel relays its plaintext): each accepted connection
// becomes side 0 of a tunnel whose side 1 connects to a server the pool's
// strategy picks, through the same balancer events as an HTTP request
// (begin, pick, sent once connected, finish when the tunnel closes: so
// least_conn counts tunnels and consistent_hash key=ip keeps a client on one
// server). A refused connect or a connect timeout counts against the server
// (passive health) and the next server is tried, skipping those tried; none
// left: the client connection is closed.
#pragma once

#include "juggler/worker.hpp"
#include "tunnel/tunnel.hpp"

namespace juggler {

struct L4Conn;
struct UpgradeTunnel;

// A worker's L4 connections: made on its first L4 accept.
struct L4Worker {
  explicit L4Worker(Worker& w) noexcept;
  ~L4Worker();
  L4Worker(const L4Worker&) = delete;
  L4Worker& operator=(const L4Worker&) = delete;

  TunnelEnv env;
  L4Conn* live = nullptr;  // open connections (drain closes them; counted in Worker::tunnels_open)
  L4Conn* free = nullptr;  // closed connections kept for reuse (bounded)
  std::uint32_t free_count = 0;
  // HTTP/1 connections tunnelled after a 101 (src/http1/upgrade): drained
  // like the L4 connections.
  UpgradeTunnel* upgraded = nullptr;
};

// `w`'s tunnels, made on first use (an L4 accept or an upgrade).
inline L4Worker& l4_worker(Worker& w) {
  if (!w.l4) w.l4 = std::make_unique<L4Worker>(w);
  return *w.l4;
}

// Accepts a pending connection of the tcp or tls listener `server` (compiled
// from `def`, a statement of w.tab's table; `tls`: its certificates, TLS terminated on the client side) and
// starts connecting it to a server of def.pool (with proxy_protocol: once the
// PROXY header named the client; sni: of the pool the ClientHello's name
// routes to, peeked after the PROXY header when both are set).
void l4_accept(Worker& w, uv_stream_t* server, const ListenerDef& def, SSL_CTX* tls);

// Tunnels open in `w`: L4 connections and upgraded HTTP/1 connections.
inline std::uint32_t l4_count(const Worker& w) noexcept { return w.tunnels_open; }

// Closes every open tunnel of `w` (the end of a drain).
void l4_close_all(Worker& w) noexcept;

}  // namespace juggler
