// Connections to servers: a per-worker idle list per server (keep-alive), new
// connections, and closing. What is sent and read on them is the connector's
// and the relay's (src/upstream/connector, src/exchange/relay).
#pragma once

#include "juggler/worker.hpp"

namespace juggler {

// A connection to a server: in use by one exchange, or idle on its server's
// list (reading, so a close by the server is noticed before reuse).
struct UpstreamConn {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  Worker* worker;
  Exchange* ex = nullptr;  // the exchange using it; null while idle
  Buffer* in = nullptr;
  std::uint32_t in_len = 0;
  std::uint32_t parse_pos = 0;
  std::uint16_t server = 0;
  bool connected = false;
  bool reused = false;
  bool closing = false;
  bool write_pending = false;
  bool reading = false;
  std::uint64_t idle_since_ms = 0;
  UpstreamConn* prev = nullptr;  // idle list of its server
  UpstreamConn* next = nullptr;
};


// Upstream keep-alive limits (per worker, per server).
inline constexpr std::uint32_t kMaxIdlePerServer = 512;
inline constexpr std::uint64_t kUpstreamIdleTimeoutMs = 30000;

// Pops a live idle connection to `server`, or null. The connection goes on
// reading; its read callback sees `ex` set once the caller attaches it.
UpstreamConn* upstream_take_idle(Worker& w, std::uint16_t server) noexcept;

// A new, unconnected connection to `server` (uv_tcp_init done). Never null.
UpstreamConn* upstream_new(Worker& w, std::uint16_t server);

// Returns a connection whose last response ended cleanly to the idle list
// (or closes it when the list is full or the worker drains).
void upstream_release(UpstreamConn* c) noexcept;

// Closes (idempotent) and frees in the close callback; detaches any exchange.
void upstream_close(UpstreamConn* c) noexcept;

// Closes idle connections older than the idle timeout (all, when `all`).
void upstream_sweep(Worker& w, bool all) noexcept;

// The read callbacks an active or idle connection uses (src/upstream/connector.cpp).
void upstream_on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf);
void upstream_on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);

}  // namespace juggler
