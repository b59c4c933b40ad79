// What a worker counts for /metrics and the stats page (src/admin): requests
// by route, pool and server and status class, request durations, bytes,
// upstream connections. One Metrics per worker, written by that worker only
// (counter.hpp), summed by the admin listener when it answers.
//
// Per request the exchange's end costs one call (exchange_done): a handful of
// plain increments and one bucket search, no allocation, no lock.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <vector>

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

// An array of rows written by one worker and read by the admin thread,
// which the worker may replace by a longer copy (a reload that adds routes,
// pools or servers): the copy is exact, the worker being the only writer. A
// replaced array is kept to the worker's end, since a reader may still be in
// it (lengths at least double, so all of them take less than the live one).
// Indexing costs what indexing a plain array through a pointer does.
template <class T>
class Rows {
 public:
  explicit Rows(std::size_t n) { grow(n); }
  T& operator[](std::size_t i) const noexcept { return ptr_.load(std::memory_order_relaxed)[i]; }
  // The rows a reader may read (a row of a table the worker has not swapped
  // to yet may be past it).
  [[nodiscard]] std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }
  // Writer only: at least `n` rows, the new ones zero.
  void grow(std::size_t n) {
    const std::size_t have = size_.load(std::memory_order_relaxed);
    if (n <= have && !arrays_.empty()) return;
    std::vector<T> next;
    next.reserve(arrays_.empty() ? n : std::max(n, 2 * have));
    for (std::size_t i = 0; i < have; ++i) next.emplace_back((*this)[i]);
    while (next.size() < next.capacity()) next.emplace_back();
    ptr_.store(next.data(), std::memory_order_release);
    size_.store(next.size(), std::memory_order_release);
    arrays_.push_back(std::move(next));
  }

 private:
  std::atomic<T*> ptr_{nullptr};
  std::atomic<std::size_t> size_{0};
  std::vector<std::vector<T>> arrays_;
};

struct Metrics {
  // Rows: one per route, pool and server of the process's metric rows
  // (Routing::metric_*: every table's, by identity); route row `routes` is
  // the requests no route took. A reload that adds rows grows them (grow).
  Metrics(std::size_t routes, std::size_t pools, std::size_t servers)
      : route_count(routes), by_route((routes + 1) * kStatusClasses), pool(pools), server(servers) {}
  // Worker only, when it swaps to a table with more rows.
  void grow(std::size_t route_rows, std::size_t pools, std::size_t servers) {
    by_route.grow(route_rows * kStatusClasses);
    pool.grow(pools);
    server.grow(servers);
  }

  // Per route row, by status class.
  std::size_t route_count;
  Rows<Counter> by_route;
  Rows<PoolCounters> pool;
  Rows<ServerCounters> server;
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
