// The admin listener's responder: /metrics (Prometheus text format 0.0.4),
// /stats (a self-contained HTML page) and /stats.json (what the page polls).
//
// Where it plugs in: the admin listener is served by a worker of its own (a
// thread and loop running the same listener, HTTP/1 connection and exchange
// code as the traffic workers, runtime.cpp) whose route table is
// admin_table(): its one route's action is Action::Admin, which the exchange
// hands to admin_respond() like any other local responder. The pages read the
// traffic workers' counters (metrics.hpp, lock-free) and the shared health
// atomics; nothing here runs on a traffic worker.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "juggler/balance.hpp"

#include "juggler/metrics.hpp"
#include "juggler/route.hpp"

namespace juggler {

struct Exchange;
struct Shared;
struct Routing;
enum class State : std::uint8_t;

// `traffic` with its routes replaced by one that takes every request to
// admin_respond(). The value points into `traffic` and static storage.
RouteTable admin_table(const RouteTable& traffic) noexcept;

// Answers an admin request (Action::Admin): a page, 404 for an unknown path,
// 405 for a method a page does not take.
// Like the other responders, it prepares the answer and returns the state
// that writes it (exchange.hpp).
State admin_respond(Exchange* ex);

// Writes a whole answer (head and body) into the exchange, which keeps it
// until the write is done, and sends it. `extra`: header lines, each ending
// in CRLF. A request whose body is not read yet closes the connection after.
State admin_answer(Exchange* ex, int status, std::string_view type, std::string_view body, std::string_view extra = {});

// Runtime control, POST /servers/POOL/HOST:PORT/{drain,ready,weight?w=N}
// (control.cpp): applied through the servers' ServerHealth atomics, so every
// worker's next pick sees it. Guarded by the bearer token of
// `set admin_token_file` (401 without it; 403 when no token is set).
State admin_control(Exchange* ex);

// The token in `path` (surrounding blanks dropped). Throws std::runtime_error
// naming the file when it cannot be read or is empty. At start-up.
std::string read_admin_token(const std::string& path);

// Milliseconds since the epoch (the stats page's clock, check times).
inline std::uint64_t wall_clock_ms() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

// The traffic workers' counters summed at one moment (each value read once,
// racily but safely: see counter.hpp), by metric row (Routing::metric_*:
// the pages list `live`'s routes, pools and servers, each with its row).
struct Snapshot {
  struct Requests {
    std::uint64_t by_class[kStatusClasses] = {};
    std::uint64_t buckets[kLatencyBuckets] = {};
    std::uint64_t sum_us = 0;
    [[nodiscard]] std::uint64_t count() const noexcept;
    [[nodiscard]] std::uint64_t errors() const noexcept { return by_class[4]; }  // 5xx
    // The q-quantile (0..1) of the durations in ms, interpolated within its
    // bucket; 0 without requests.
    [[nodiscard]] double quantile_ms(double q) const noexcept;
  };
  struct Server {
    Requests req;
    std::uint64_t conn_new = 0, conn_reused = 0, conn_closed = 0, idle = 0, ejections = 0;
    [[nodiscard]] std::uint64_t busy() const noexcept;  // open and not idle: requests in flight
  };
  std::vector<std::uint64_t> routes;  // route rows * kStatusClasses (metrics.hpp)
  std::vector<Requests> pools;
  std::vector<Requests> pool_ttfb;  // per pool: the time to first byte (buckets and sum only)
  std::vector<Server> servers;
  Requests all;  // every request of every pool
  std::uint64_t bytes_in = 0, bytes_out = 0, accept_errors = 0, refused = 0, retries = 0, retries_denied = 0;
  std::uint64_t log_dropped = 0;  // access log lines lost to failed writes
  std::uint64_t tls_full = 0, tls_resumed = 0, tls_failures = 0, connections = 0, active = 0;
  std::uint64_t sendfile_bytes = 0;  // cache hits' bodies sent by sendfile(2)
  std::uint64_t cache[5] = {};  // answers of cached routes by CacheStatus (0 unused)
  std::uint64_t compress_in = 0, compress_out = 0, tunnels = 0;
  std::uint64_t by_protocol[2] = {};  // requests from HTTP/1.x and HTTP/2 clients
};
Snapshot take_snapshot(const Shared& shared, const Routing& live);

// The snapshot's rows of `live`'s pools and servers (its numbers in `live`'s
// table; Routing::metric_pool / metric_server give the rows).
struct LiveRows {
  const Routing& live;
  const Snapshot& s;
  [[nodiscard]] const Snapshot::Requests& pool(std::size_t p) const noexcept;
  [[nodiscard]] const Snapshot::Requests& ttfb(std::size_t p) const noexcept;
  [[nodiscard]] const Snapshot::Server& server(std::size_t i) const noexcept;
};

// The bodies of /metrics and /stats.json for the table serving now
// (live_routing, under shared.reload_lock), appended to `out`.
void render_metrics(const Shared& shared, const Routing& live, const Snapshot& snap, std::string& out);
void render_stats_json(const Shared& shared, const Routing& live, const Snapshot& snap, std::string& out);
// The /stats page (static: it fetches /stats.json).
std::string_view stats_page() noexcept;

// A server's state for the pages: "up", "down" (active checks), "ejected"
// (passive health) or "drain" (the admin drained it).
// `server` is a number of `live`'s table.
std::string_view server_state(const Routing& live, std::size_t server) noexcept;
// Its weight now: the admin's, else the compiled one.
std::uint16_t server_weight(const Routing& live, std::size_t server) noexcept;

}  // namespace juggler
