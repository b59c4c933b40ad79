// The per-worker state: what every layer of a worker shares (pools, the
// balancer, the timer wheel, the idle lists, counters), and the process-wide
// Shared. The connection and exchange types live with their modules
// (http1/connection.hpp, exchange/exchange.hpp, juggler/upstream.hpp).
#pragma once

#include <netinet/in.h>
#include <uv.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "juggler/balance.hpp"
#include "juggler/buffer.hpp"
#include "juggler/config.hpp"
#include "juggler/error_pages.hpp"
#include "juggler/http.hpp"
#include "juggler/log.hpp"
#include "juggler/metrics.hpp"
#include "juggler/route.hpp"
#include "juggler/stream.hpp"
#include "juggler/timer_wheel.hpp"
#include "juggler/tls.hpp"

namespace juggler {

struct Worker;
struct Exchange;
struct ClientSession;
struct UpstreamConn;
struct L4Worker;
class Upstream;
class CacheStore;
class CacheFlights;
struct CacheWaits;

// How an exchange gets a server connection (juggler/upstream.hpp): a live
// idle one to `server` (reused), or a new one connecting (Event::Connected
// follows; *rc is a libuv error when it could not even start), attached to
// `ex`, never null. A pointer in the worker, so the unit tests hand out fakes.
using UpstreamConnect = Upstream* (*)(Worker& w, std::uint16_t server, Exchange* ex, int* rc);
Upstream* upstream_connect_tcp(Worker& w, std::uint16_t server, Exchange* ex, int* rc);

// Process-wide, read-only after start-up (but for the atomics).
struct Shared {
  Config config;
  std::vector<sockaddr_storage> server_addrs;        // per compiled server
  std::unique_ptr<ServerHealth[]> health;            // per compiled server
  struct RouteReply {
    std::string keep, close;  // `-> respond CODE`: keep-alive and Connection: close variants
  };
  std::vector<RouteReply> route_replies;             // per route (empty unless Respond)
  std::uint16_t https_port = 443;                    // redirect https: the first https listener's port
  ErrorPages error_pages;                            // set error_pages, or the built-in pages
  // For the admin listener (src/admin), which reads them from its own thread:
  // the traffic workers (their counters and gauges, never anything else), and
  // the outcome of each server's latest active check, written by the checker.
  std::vector<const Worker*> workers;
  struct LastCheck {
    std::atomic<std::uint64_t> at_ms{0};  // wall clock (ms since the epoch); 0 = never checked
    std::atomic<std::uint8_t> result{0};  // CheckResult
    std::atomic<std::uint16_t> status{0};
  };
  std::unique_ptr<LastCheck[]> last_check;  // per compiled server
  std::shared_ptr<CacheStore> cache;  // routes with `cache` (src/cache); null without one
  std::shared_ptr<CacheFlights> cache_flights;  // concurrent misses collapsed (src/cache/collapse)
  std::string admin_token;  // set admin_token_file: the control endpoints' bearer token; empty = no control
  // SIGTERM arrived: the admin's /ready answers 503 from that moment (an L4
  // front stops sending), the traffic listeners close drain.delay later.
  std::atomic<bool> stopping{false};
};

struct IdleList {
  UpstreamConn* head = nullptr;
  Gauge<std::uint32_t> count;  // read by the admin listener
};

struct Worker {
  Worker(Shared& shared, std::uint32_t id, int access_log_fd);
  ~Worker();  // where Exchange is complete (runtime.cpp)
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  Shared& shared;
  std::uint32_t id;
  // The route table this worker dispatches with: reached through this pointer
  // (not a link-time call), so a new table can be swapped in per worker.
  const RouteTable* table;
  uv_loop_t loop;
  BufferPool buffers;  // heads and small bodies (16 KB, or limit.header_bytes + 1 KB)
  // Large bodies (downloads, uploads) move to bigger buffers once their head
  // went through: a quarter of the syscalls and copies per byte. Bounded per
  // worker; past the bound they stay on small buffers.
  // The pools' free lists hold what recent load needed (housekeeping trims
  // the rest, see HighWater), so bulk may keep all kMaxBulk when they are used.
  static constexpr std::uint32_t kBulkSize = 256 * 1024, kMaxBulk = 64;
  BufferPool bulk{kBulkSize, kMaxBulk, 2};
  std::uint32_t bulk_in_use = 0;
  Balancer balancer;
  AccessLog access_log;
  TimerWheel wheel;
  std::vector<IdleList> idle;  // per compiled server
  UpstreamConnect upstream_connect = upstream_connect_tcp;
  // Retry budget, per pool: a request earns kRetryEarn tokens, a retry costs
  // kRetryCost (so retries stay near 20% of requests), capped at kRetryCap.
  static constexpr std::int32_t kRetryEarn = 1, kRetryCost = 5, kRetryCap = 100;
  std::vector<std::int32_t> retry_tokens;  // per pool
  Counter retries, retries_denied;
  Exchange* free_exchanges = nullptr;
  ClientSession* free_sessions = nullptr;  // closed sessions kept for reuse
  std::size_t free_session_count = 0;
  std::vector<std::unique_ptr<Exchange>> exchanges;  // all ever made (owned)
  ClientSession* sessions = nullptr;                 // live client sessions
  Gauge<std::uint32_t> session_count;     // client connections open
  Gauge<std::uint32_t> active_exchanges;  // of which with a request in flight
  // Exchanges and closed sessions in use at most lately: housekeeping frees
  // the free ones beyond that (exchange_get and accept note the counts).
  HighWater exchange_water{64};
  HighWater session_water{64};
  std::uint64_t trimmed_bytes = 0;    // freed by housekeeping since the last malloc_trim
  std::uint64_t malloc_trim_ms = 0;   // when this worker last called it
  bool draining = false;
  StreamContext streams{&loop};  // write requests, TLS scratch and pumping, shared by this worker's streams
  Counter refused_connections;  // over limit.connections_per_worker
  Metrics metrics;  // for /metrics: see metrics.hpp
  std::uint64_t last_accept_error_ms = 0;
  std::unique_ptr<L4Worker> l4;
  std::unique_ptr<CacheWaits> cache_waits;  // misses waiting for another (src/cache/collapse); null without a cache  // L4 connections (src/listener/l4.hpp): made on the first one
  std::uint64_t now_ms() const noexcept { return uv_now(const_cast<uv_loop_t*>(&loop)); }

  // Returns a buffer of either size to its pool (null is fine).
  void put_buffer(Buffer* b) noexcept {
    if (!b) return;
    if (b->cap == kBulkSize && buffers.size() != kBulkSize) {
      bulk.put(b);
      --bulk_in_use;
    } else {
      buffers.put(b);
    }
  }
  // A bulk buffer in place of the empty small buffer `b`, when one may be had.
  Buffer* upgrade(Buffer* b) {
    if (!b || b->cap == kBulkSize || buffers.size() >= kBulkSize || bulk_in_use >= kMaxBulk) return b;
    buffers.put(b);
    ++bulk_in_use;
    return bulk.get();
  }
};

// Small helpers of the request path's modules.
inline const Settings& settings(const Worker& w) noexcept { return w.shared.config.settings; }
inline std::uint64_t now_us() noexcept { return uv_hrtime() / 1000; }
inline uv_stream_t* as_stream(uv_tcp_t* t) noexcept { return reinterpret_cast<uv_stream_t*>(t); }

// printf arguments for a server's authority with "%.*s": no string is built
// for a log line (which the level may drop anyway).
#define JUGGLER_SERVER_ARGS(server) static_cast<int>((server).authority.size()), (server).authority.data()

}  // namespace juggler
