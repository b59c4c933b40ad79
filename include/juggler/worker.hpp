// The per-worker state: what every layer of a worker shares (pools, the
// balancer, the timer wheel, the idle lists, counters), and the process-wide
// Shared. The connection and exchange types live with their modules
// (http1/connection.hpp, exchange/exchange.hpp, juggler/upstream.hpp).
#pragma once

#include <netinet/in.h>
#include <uv.h>

#include <atomic>
#include <map>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "juggler/balance.hpp"
#include "juggler/buffer.hpp"
#include "juggler/config.hpp"
#include "juggler/error_pages.hpp"
#include "juggler/http.hpp"
#include "juggler/log.hpp"
#include "juggler/metrics.hpp"
#include "juggler/resolve.hpp"
#include "juggler/route.hpp"
#include "juggler/stream.hpp"
#include "juggler/timer_wheel.hpp"
#include "juggler/tls.hpp"

namespace juggler {

struct Worker;
struct Shared;
struct Exchange;
struct ClientSession;
struct UpstreamConn;
struct L4Worker;
struct H2Worker;
class Upstream;
class CacheStore;
class CacheFlights;
struct CacheWaits;
struct ListenerSlot;

// How an exchange gets a server connection (juggler/upstream.hpp): a live
// idle one to `server` (reused), or a new one connecting (Event::Connected
// follows; *rc is a libuv error when it could not even start), attached to
// `ex`, never null. A pointer in the worker, so the unit tests hand out fakes.
using UpstreamConnect = Upstream* (*)(Worker& w, std::uint16_t server, Exchange* ex, int* rc);
Upstream* upstream_connect_tcp(Worker& w, std::uint16_t server, Exchange* ex, int* rc);

// Outcome of a server's latest active check, written by the checker.
struct LastCheck {
  std::atomic<std::uint64_t> at_ms{0};  // wall clock (ms since the epoch); 0 = never checked
  std::atomic<std::uint8_t> result{0};  // CheckResult
  std::atomic<std::uint16_t> status{0};
};

struct IdleList {
  UpstreamConn* head = nullptr;
  std::uint32_t count = 0;  // the admin reads ServerCounters::idle
};

// One loaded route table and everything numbered by its servers, pools and
// routes, process-wide. A reload (src/runtime/reload.cpp) builds a second one
// beside the first: requests in flight keep the one they were routed with
// (through their WorkerTable), so an index never meets another table's arrays.
struct Routing {
  const RouteTable* table = nullptr;
  void* object = nullptr;  // the dlopen handle of a reloaded table; null when linked in
  std::vector<sockaddr_storage> server_addrs;        // per server (a resolve slot's is in `slot_addr`)
  std::unique_ptr<SlotAddress[]> slot_addr;          // per server: a resolve slot's current address (src/resolve)
  std::unique_ptr<ResolveStatus[]> resolve_status;   // per table->resolves
  std::unique_ptr<ServerHealth[]> health;            // per server (carried over by identity on reload)
  std::unique_ptr<LastCheck[]> last_check;           // per server
  struct RouteReply {
    std::string keep, close;  // `-> respond CODE`: keep-alive and Connection: close variants
  };
  std::vector<RouteReply> route_replies;             // per route (empty unless Respond)
  // Rows of Worker::metrics (MetricRows): per route, pool and server of this
  // table, its row; and how many rows of each the process had with it (a
  // worker swapping to it grows its Metrics to that).
  std::vector<std::int32_t> metric_route, metric_pool, metric_server;
  std::size_t route_rows = 0, pool_rows = 0, server_rows = 0;
  // Per listen statement of this table, its sockets (src/runtime/listeners):
  // a worker that swaps to this table opens the ones its old table lacked
  // and closes those this one lacks.
  std::vector<ListenerSlot*> listeners;
  // WorkerTables built on it; the main thread unloads it when none is left.
  std::atomic<std::uint32_t> users{0};
};

// The rows of the workers' Metrics: one per route (by its text), pool (by
// name) and server (by pool and address) of every table the process has
// had, in the order they first appeared, so the counters of what a reload
// keeps go on and what it adds gets rows of its own. The first table's are
// its own numbers (and route row `routes.size()` is "no route"). Main thread.
struct MetricRows {
  std::map<std::string, std::int32_t, std::less<>> routes, pools, servers;  // servers: "POOL ADDRESS"
  std::size_t route_rows = 0, pool_rows = 0, server_rows = 0;  // rows so far
};
MetricRows make_metric_rows(const RouteTable& first);

// Builds the Routing of `table` (addresses, fresh health, canned replies);
// its metric rows from `rows` (which gets the ones it lacks), or its own
// numbers when null (the first table, the unit tests). Throws
// std::runtime_error on an address that is none.
std::unique_ptr<Routing> make_routing(const RouteTable& table, MetricRows* rows);

// The table serving now, for the admin pages: the live one (under
// shared.reload_lock, which keeps it loaded) or the first.
const Routing& live_routing(const Shared& shared) noexcept;

// The server of pool `pool` at `authority` (and resolve slot `slot`, 0 for a
// numeric server) in `t` (a server's identity across reloads), or -1.
int find_server(const RouteTable& t, std::string_view pool, std::string_view authority,
                std::uint8_t slot = 0) noexcept;

// Where to connect to `server` of `r` now: its compiled address, or a resolve
// slot's current one copied into `copy` (the resolver may change it the next
// moment; the connection keeps this one). `version` is the slot's address
// version (0 for a numeric server), kept by the connection.
inline const sockaddr* server_sockaddr(const Routing& r, std::size_t server, sockaddr_storage& copy,
                                       std::uint32_t& version) noexcept {
  if (r.table->servers[server].slot == 0) {
    version = 0;
    return reinterpret_cast<const sockaddr*>(&r.server_addrs[server]);
  }
  version = r.slot_addr[server].load(copy);
  return reinterpret_cast<const sockaddr*>(&copy);
}

// A connection to `server` made at address `version` may no longer be used:
// the slot's address changed or went away.
inline bool server_moved(const Routing& r, std::size_t server, std::uint32_t version) noexcept {
  return r.table->servers[server].slot != 0 &&
         (r.slot_addr[server].version() != version || r.health[server].unresolved.load(std::memory_order_relaxed));
}

// A worker's view of one Routing: the per-worker state numbered by its table.
// An exchange (or tunnel) pins the worker's current one when it is routed and
// uses only it until it ends; the worker frees a replaced one once no
// exchange pins it (housekeeping), then the Routing may go.
struct WorkerTable {
  WorkerTable(Routing& r, const RouteTable& dispatch, std::uint32_t worker_id);
  ~WorkerTable();
  WorkerTable(const WorkerTable&) = delete;
  WorkerTable& operator=(const WorkerTable&) = delete;
  Routing& routing;
  const RouteTable* table;  // what this worker dispatches with (the admin worker: its own table)
  Balancer balancer;
  std::vector<IdleList> idle;  // per server
  // Retry budget, per pool: a request earns kRetryEarn tokens, a retry costs
  // kRetryCost (so retries stay near 20% of requests), capped at kRetryCap.
  static constexpr std::int32_t kRetryEarn = 1, kRetryCost = 5, kRetryCap = 100;
  std::vector<std::int32_t> retry_tokens;  // per pool
  std::uint32_t pins = 0;  // exchanges and tunnels in flight on it
};

// Process-wide, read-only after start-up (but for the atomics).
struct Shared {
  Config config;
  // The table the process started with (never unloaded: it is linked in);
  // its numbers are the first metric rows. The admin pages show the live one.
  std::unique_ptr<Routing> first;
  std::atomic<Routing*> live{nullptr};  // set by a reload: what the traffic workers swap to
  // Held by the admin thread while it reads the live Routing (live_routing),
  // and by the main thread while it frees a replaced one: never on the request path.
  mutable std::mutex reload_lock;
  std::uint16_t https_port = 443;                    // redirect https: the first https listener's port
  ErrorPages error_pages;                            // set error_pages, or the built-in pages
  // For the admin listener (src/admin), which reads them from its own thread:
  // the traffic workers (their counters and gauges, never anything else).
  std::vector<const Worker*> workers;
  std::shared_ptr<CacheStore> cache;  // routes with `cache` (src/cache); null without one
  std::shared_ptr<CacheFlights> cache_flights;  // concurrent misses collapsed (src/cache/collapse)
  std::string admin_token;  // set admin_token_file: the control endpoints' bearer token; empty = none
  // SIGTERM arrived: the admin's /ready answers 503 from that moment (an L4
  // front stops sending), the traffic listeners close drain.delay later.
  std::atomic<bool> stopping{false};
  std::atomic<std::uint64_t> reloads{0};  // route tables swapped in (src/runtime/reload.cpp)
};

struct Worker {
  // Dispatches with `dispatch` (the routing's own table but on the admin worker).
  Worker(Shared& shared, std::uint32_t id, int access_log_fd, Routing& routing, const RouteTable& dispatch);
  ~Worker();  // where Exchange is complete (runtime.cpp)
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  Shared& shared;
  std::uint32_t id;
  // The route table this worker dispatches with and what is numbered by it:
  // reached through this pointer (not a link-time call), so a reload swaps it
  // per worker. `tables` owns it and the replaced ones still pinned.
  WorkerTable* tab = nullptr;
  std::vector<std::unique_ptr<WorkerTable>> tables;
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
  AccessLog access_log;
  TimerWheel wheel;
  UpstreamConnect upstream_connect = upstream_connect_tcp;
  Counter retries, retries_denied;
  // For /metrics, beside `metrics`: answers of cached routes by X-Cache
  // (indexed by CacheStatus; 0 unused), body bytes into and out of the
  // compressors, and the tunnels open (L4 connections and WebSockets).
  Counter cache_results[5];
  Counter compress_in, compress_out;
  Gauge<std::uint32_t> tunnels_open;
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
  Metrics metrics;  // for /metrics: see metrics.hpp; rows of the first table (Routing::metric_*)
  std::uint64_t last_accept_error_ms = 0;
  std::unique_ptr<L4Worker> l4;
  H2Worker* h2 = nullptr;  // HTTP/2 connections' idle flush and free lists (src/http2): made on the first one
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
