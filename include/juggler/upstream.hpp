// Connections to servers: a per-worker idle list per server (keep-alive), new
// connections, and closing. The protocol on top lives in session.
#pragma once

#include "juggler/worker.hpp"

namespace juggler {

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

// The read callbacks an active or idle connection uses (defined in session).
void upstream_on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf);
void upstream_on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);

}  // namespace juggler
