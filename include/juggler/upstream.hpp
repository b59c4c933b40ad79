// Connections to servers: what the exchange uses of one (Upstream), the TCP
// implementation (UpstreamConn) with a per-worker idle list per server
// (keep-alive), new connections, and closing. What is sent and read on them
// is the connector's and the relay's (src/upstream/connector,
// src/exchange/relay); the exchange reaches a connection only through
// Upstream and Worker::upstream_connect, so the unit tests drive it with a
// fake one.
#pragma once

#include "juggler/stream.hpp"
#include "juggler/worker.hpp"

namespace juggler {

// A connection to a server as the exchange uses it: the buffer the response
// is read into, and what the exchange asks of it. Its events (connected,
// bytes read, end, write done) reach the exchange as step() events.
class Upstream {
 public:
  // Writes request bytes (valid until written): true when all went out now;
  // else write_pending until the exchange receives Event::UpstreamWritten.
  virtual bool write(uv_buf_t* iov, unsigned n) noexcept = 0;
  // Starts or stops reading the server (backpressure while the client is behind).
  virtual void set_reading(bool on) noexcept = 0;
  // The response ended cleanly: back to its server's idle list (or closed).
  virtual void release() noexcept = 0;
  // Closes (idempotent); the exchange has forgotten it.
  virtual void close() noexcept = 0;

  Worker* worker = nullptr;
  Exchange* ex = nullptr;  // the exchange using it; null while idle
  Buffer* in = nullptr;
  std::uint32_t in_len = 0;
  std::uint32_t parse_pos = 0;
  std::uint16_t server = 0;  // numbered by `tab`'s table
  std::int32_t metric = 0;   // its row in Worker::metrics (Routing::metric_server)
  WorkerTable* tab = nullptr;  // the table it was opened under, or moved to by a reload while idle
  bool reused = false;  // taken from the idle list: connected already (a new one is not, until Event::Connected)
  // Mirrors of the stream's write_pending() and reading(), kept by the
  // implementation: the exchange reads them as fields, not virtual calls.
  bool write_pending = false;
  bool reading = false;

 protected:
  Upstream() = default;
  Upstream(const Upstream&) = default;
  Upstream& operator=(const Upstream&) = default;
  ~Upstream() = default;
};

// A connection to a server over a Stream (plain TCP): in use by one
// exchange, or idle on its server's list (reading, so a close by the server
// is noticed before reuse). The stream's events become the exchange's step()
// events; the object is freed from on_stream_closed.
struct UpstreamConn final : Upstream, StreamHandler {
  Stream stream;
  std::uint64_t idle_since_ms = 0;
  std::uint32_t addr_version = 0;  // a resolve slot's address version it connected to (server_sockaddr)
  UpstreamConn* prev = nullptr;  // idle list of its server
  UpstreamConn* next = nullptr;

  bool write(uv_buf_t* iov, unsigned n) noexcept override;
  void set_reading(bool on) noexcept override;
  void release() noexcept override;
  void close() noexcept override;

  uv_buf_t on_stream_alloc() noexcept override;
  void on_stream_read(ssize_t n) noexcept override;
  void on_stream_written(int status) noexcept override;
  void on_stream_closed() noexcept override;
  void on_stream_connected(int status) noexcept override;
};

// A failed attempt at `server` (of `pool`) counts against it (passive
// health); when that ejects it, the ejection is counted and logged with `why`.
// The exchange's connector and the L4 listeners both report through it.
void server_failure(Worker& w, WorkerTable& t, std::uint16_t server, const PoolDef& pool, const char* why) noexcept;

// Upstream keep-alive limits (per worker, per server).
inline constexpr std::uint32_t kMaxIdlePerServer = 512;
inline constexpr std::uint64_t kUpstreamIdleTimeoutMs = 30000;

// Pops a live idle connection to `server`, or null; connections to an
// address a resolve slot no longer has are closed on the way. The connection
// goes on reading; its read callback sees `ex` set once the caller attaches it.
UpstreamConn* upstream_take_idle(Worker& w, WorkerTable& t, std::uint16_t server) noexcept;

// A new, unconnected connection to `server` of `t` (its stream initialised). Never null.
UpstreamConn* upstream_new(Worker& w, WorkerTable& t, std::uint16_t server);

// Returns a connection whose last response ended cleanly to the idle list
// (or closes it when the list is full, the worker drains, or a reload
// replaced the table it was opened under while it was in use).
void upstream_release(UpstreamConn* c) noexcept;

// Closes (idempotent) and frees in the close callback; detaches any exchange.
void upstream_close(UpstreamConn* c) noexcept;

// Closes idle connections older than the idle timeout (all, when `all`), and
// those to an address a resolve slot no longer has.
void upstream_sweep(Worker& w, bool all) noexcept;

// A reload: the idle connections of `from` move to the lists of `to` where
// `to` has the same server (address and pool name), the others close.
void upstream_move_idle(Worker& w, WorkerTable& from, WorkerTable& to) noexcept;

}  // namespace juggler
