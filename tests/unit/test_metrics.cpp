// The counters' arithmetic (include/juggler/metrics.hpp) and the quantiles the
// stats page shows (src/admin): status classes, bucket bounds, one exchange's
// record, interpolation within a bucket.
#include <catch2/catch.hpp>

#include "admin/admin.hpp"
#include "juggler/metrics.hpp"

using namespace juggler;

TEST_CASE("status classes and duration buckets", "[metrics]") {
  CHECK(status_class(100) == 0);
  CHECK(status_class(204) == 1);
  CHECK(status_class(399) == 2);
  CHECK(status_class(499) == 3);
  CHECK(status_class(503) == 4);
  CHECK(status_class(0) == 4);    // no status: counted as a failure
  CHECK(status_class(600) == 4);
  CHECK(latency_bucket(0) == 0);
  CHECK(latency_bucket(100) == 0);  // le is inclusive
  CHECK(latency_bucket(101) == 1);
  CHECK(latency_bucket(10000000) == kLatencyBuckets - 2);
  CHECK(latency_bucket(10000001) == kLatencyBuckets - 1);  // +Inf
}

TEST_CASE("an exchange is counted once by route, pool and server", "[metrics]") {
  Metrics m(2, 1, 3);
  m.exchange_done(1, 0, 2, 200, 100, 300, 240, false);
  m.exchange_done(-1, -1, -1, 400, 50, 10, -1, true);  // refused before routing
  m.exchange_done(1, 0, -1, 503, 7, 20000, -1, false);  // nobody to send it to
  CHECK(m.by_route[1 * kStatusClasses + 1].get() == 1);
  CHECK(m.by_route[1 * kStatusClasses + 4].get() == 1);
  CHECK(m.by_route[2 * kStatusClasses + 3].get() == 1);  // the row after the routes
  CHECK(m.pool[0].by_class[1].get() == 1);
  CHECK(m.pool[0].by_class[4].get() == 1);
  CHECK(m.server[2].by_class[1].get() == 1);
  CHECK(m.server[0].by_class[4].get() == 0);
  CHECK(m.pool[0].duration.buckets[latency_bucket(300)].get() == 1);
  CHECK(m.pool[0].duration.sum_us.get() == 20300);
  // Time to first byte: only the request a server answered.
  CHECK(m.pool[0].ttfb.buckets[latency_bucket(240)].get() == 1);
  CHECK(m.pool[0].ttfb.sum_us.get() == 240);
  std::uint64_t answered = 0;
  for (const Counter& b : m.pool[0].ttfb.buckets) answered += b.get();
  CHECK(answered == 1);
  CHECK(m.bytes_out.get() == 157);
}

TEST_CASE("a reload that adds rows grows a worker's metrics without losing a count", "[metrics]") {
  Metrics m(1, 1, 1);
  m.exchange_done(0, 0, 0, 200, 10, 300, 100, false);
  ++m.server[0].conn_new;
  const ServerCounters* before = &m.server[0];
  m.grow(4, 3, 5);  // route rows (with "no route"), pools, servers
  CHECK(m.by_route.size() >= 4 * kStatusClasses);
  CHECK(m.pool.size() >= 3);
  CHECK(m.server.size() >= 5);
  CHECK(m.by_route[0 * kStatusClasses + 1].get() == 1);  // copied
  CHECK(m.pool[0].duration.sum_us.get() == 300);
  CHECK(m.server[0].conn_new.get() == 1);
  CHECK(m.server[4].conn_new.get() == 0);  // new rows start at zero
  CHECK(before->conn_new.get() == 1);      // a reader still in the old array reads what it had
  m.exchange_done(2, 2, 4, 500, 1, 1, -1, false);  // a row of the added table
  CHECK(m.server[4].by_class[4].get() == 1);
  const std::size_t size = m.server.size();
  m.grow(1, 1, 2);  // fewer: nothing changes
  CHECK(m.server.size() == size);
  CHECK(m.server[4].by_class[4].get() == 1);
}

TEST_CASE("quantiles interpolate within their bucket", "[metrics]") {
  Snapshot::Requests r;
  CHECK(r.quantile_ms(0.5) == 0);
  r.buckets[latency_bucket(200)] = 100;  // 100 requests in (100 us, 250 us]
  CHECK(r.quantile_ms(0.5) == Approx(0.175));
  CHECK(r.quantile_ms(1.0) == Approx(0.25));
  r.buckets[kLatencyBuckets - 1] = 100;  // and 100 beyond the last bound
  CHECK(r.quantile_ms(0.99) == Approx(10000));
  CHECK(r.count() == 200);
}
