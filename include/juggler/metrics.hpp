// What a worker counts for /metrics and the stats page (src/admin): requests
// by route, pool and server and status class, request durations, bytes,
// upstream connections. One Metrics per worker, written by that worker only
// (counter.hpp), summed by the admin listener when it answers.
//
// Per request the exchange's end costs one call (exchange_done): a handful of
// plain increments and one bucket search, no allocation, no lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>

#include "juggler/counter.hpp"

namespace juggler {

// 1xx .. 5xx; anything outside 100..599 counts as 5xx.
inline constexpr std::size_t kStatusClasses = 5;
[[nodiscard]] constexpr std::size_t status_class(int status) noexcept {
  return status >= 100 && status < 600 ? static_cast<std::size_t>(status / 100 - 1) : 4;
}

// Upper bounds of the request-duration buckets, in microseconds (Prometheus
// `le`, in seconds on the wire); the last bucket is +Inf.
inline constexpr std::uint64_t kLatencyBoundsUs[] = {100,    250,    500,     1000,    2500,    5000,
                                                     10000,  25000,  50000,   100000,  250000,  500000,
                                                     1000000, 2500000, 5000000, 10000000};
inline constexpr std::size_t kLatencyBuckets = std::size(kLatencyBoundsUs) + 1;

[[nodiscard]] constexpr std::size_t latency_bucket(std::uint64_t us) noexcept {
  std::size_t i = 0;
  while (i < std::size(kLatencyBoundsUs) && us > kLatencyBoundsUs[i]) ++i;
  return i;
}

// Request durations: per bucket (not cumulative: the scrape accumulates) and
// their sum; the count is the buckets' sum.
struct Histogram {
  Counter buckets[kLatencyBuckets];
  Counter sum_us;
  void observe(std::size_t bucket, std::uint64_t us) noexcept {
    ++buckets[bucket];
    sum_us.add(us);
  }
};

// Requests that ended on a pool or a server, by status class, and how long
// they took (from the first byte of the request to the end of the answer).
struct RequestCounters {
  Counter by_class[kStatusClasses];
  Histogram duration;
};

// A pool's, with its time to first byte: from the request's first byte to
// the first byte of the answering server's response (proxied requests that
// got one; not local answers, not 502/503/504 the proxy wrote).
struct PoolCounters : RequestCounters {
  Histogram ttfb;
};

struct ServerCounters : RequestCounters {
  Counter conn_new;     // connections opened to it
  Counter conn_reused;  // requests sent on a kept-alive connection
  Counter conn_closed;  // open = new - closed
  Counter ejections;    // passive ejections this worker made
  Gauge<std::uint32_t> idle;  // on the worker's idle lists now (theirs change with a reload; this row does not)
};

struct Metrics {
  // One row more of each than the table has: the sink where a reloaded
  // table's routes, pools and servers the first table lacks are counted
  // (never shown: the admin pages list the first table's).
  Metrics(std::size_t routes, std::size_t pools, std::size_t servers)
      : route_count(routes),
        by_route(std::make_unique<Counter[]>((routes + 2) * kStatusClasses)),
        pool(std::make_unique<PoolCounters[]>(pools + 1)),
        server(std::make_unique<ServerCounters[]>(servers + 1)) {}

  // Per route, by status class ((routes + 2) rows: row `routes` is the
  // requests no route took: 404 for no match, or refused before routing;
  // the last is the sink).
  std::size_t route_count;
  std::unique_ptr<Counter[]> by_route;
  std::unique_ptr<PoolCounters[]> pool;
  std::unique_ptr<ServerCounters[]> server;
  Counter bytes_in;   // read from clients (TLS: plaintext)
  Counter bytes_out;  // answered to clients (heads and bodies)
  Counter accept_errors;
  Counter by_protocol[2];  // requests (exchanges) by the client's protocol: HTTP/1.x, HTTP/2

  // An exchange ended (once per request, whatever its outcome). `route`,
  // `pool`, `server`: indexes in the route table, -1 when none; `ttfb_us`:
  // -1 when no server answered; `h2`: it came on an HTTP/2 stream.
  void exchange_done(int route, int pool_index, int server_index, int status, std::uint64_t bytes,
                     std::uint64_t duration_us, std::int64_t ttfb_us, bool h2) noexcept {
    const std::size_t cls = status_class(status);
    ++by_protocol[h2 ? 1 : 0];
    const std::size_t row = route >= 0 ? static_cast<std::size_t>(route) : route_count;
    ++by_route[row * kStatusClasses + cls];
    bytes_out.add(bytes);
    const std::size_t bucket = latency_bucket(duration_us);
    if (pool_index >= 0) {
      PoolCounters& p = pool[static_cast<std::size_t>(pool_index)];
      ++p.by_class[cls];
      p.duration.observe(bucket, duration_us);
      if (ttfb_us >= 0) {
        const auto t = static_cast<std::uint64_t>(ttfb_us);
        p.ttfb.observe(latency_bucket(t), t);
      }
    }
    if (server_index >= 0) {
      ServerCounters& s = server[static_cast<std::size_t>(server_index)];
      ++s.by_class[cls];
      s.duration.observe(bucket, duration_us);
    }
  }
};

}  // namespace juggler
