// The admin responder: its route table, the pages it answers, and the
// snapshot of the traffic workers' counters the pages are made from. Runs on
// the admin listener's own worker only (admin.hpp); it may allocate.
#include "admin/admin.hpp"

#include <algorithm>
#include <cstdio>

#include "exchange/exchange.hpp"
#include "juggler/upstream.hpp"
#include "respond/responder.hpp"

namespace juggler {

namespace {

constexpr RouteDef kAdminRoute{.index = 0,
                               .line = 0,
                               .text = "admin",
                               .action = Action::Admin,
                               .pool = -1,
                               .status = 200,
                               .retries = 0,
                               .compress = 0,
                               .cache_ttl_ms = 0};

const RouteDef* admin_distribute(const RequestHead&) noexcept { return &kAdminRoute; }

void add_histogram(Snapshot::Requests& to, const Histogram& from) noexcept {
  for (std::size_t b = 0; b < kLatencyBuckets; ++b) to.buckets[b] += from.buckets[b].get();
  to.sum_us += from.sum_us.get();
}

void add_requests(Snapshot::Requests& to, const RequestCounters& from) noexcept {
  for (std::size_t c = 0; c < kStatusClasses; ++c) to.by_class[c] += from.by_class[c].get();
  add_histogram(to, from.duration);
}

void add_requests(Snapshot::Requests& to, const Snapshot::Requests& from) noexcept {
  for (std::size_t c = 0; c < kStatusClasses; ++c) to.by_class[c] += from.by_class[c];
  for (std::size_t b = 0; b < kLatencyBuckets; ++b) to.buckets[b] += from.buckets[b];
  to.sum_us += from.sum_us;
}

}  // namespace

State admin_answer(Exchange* ex, int status, std::string_view type, std::string_view body, std::string_view extra) {
  // A body in hand is read past (as reply_local does); one still coming closes the connection.
  if (!ex->client_close && !ex->body->skip()) ex->client_close = true;
  std::string& out = ex->local_reply;
  out.clear();
  char line[64];
  const int n = std::snprintf(line, sizeof line, "HTTP/1.1 %d ", status);
  out.append(line, static_cast<std::size_t>(n));
  out.append(status_reason(status));
  out.append("\r\nContent-Type: ").append(type);
  out.append("\r\nCache-Control: no-store\r\nContent-Length: ").append(std::to_string(body.size())).append("\r\n");
  out.append(extra);
  if (ex->client_close) out.append("Connection: close\r\n");
  out.append("\r\n");
  if (!ex->is_head) out.append(body);
  return reply_local(ex, status, out, out);
}

RouteTable admin_table(const RouteTable& t) noexcept {
  return RouteTable{t.source,  t.settings, t.listeners, t.certs, t.pools, t.servers,
                    std::span<const RouteDef>(&kAdminRoute, 1), admin_distribute};
}

std::uint64_t Snapshot::Requests::count() const noexcept {
  std::uint64_t n = 0;
  for (std::uint64_t b : buckets) n += b;
  return n;
}

double Snapshot::Requests::quantile_ms(double q) const noexcept {
  const std::uint64_t total = count();
  if (total == 0) return 0;
  const double rank = q * static_cast<double>(total);
  std::uint64_t below = 0;
  for (std::size_t i = 0; i < kLatencyBuckets; ++i) {
    if (buckets[i] == 0 || static_cast<double>(below + buckets[i]) < rank) {
      below += buckets[i];
      continue;
    }
    const double lo = i == 0 ? 0 : static_cast<double>(kLatencyBoundsUs[i - 1]);
    if (i == kLatencyBuckets - 1) return lo / 1000;  // +Inf: the last finite bound
    const double hi = static_cast<double>(kLatencyBoundsUs[i]);
    const double within = (rank - static_cast<double>(below)) / static_cast<double>(buckets[i]);
    return (lo + (hi - lo) * within) / 1000;
  }
  return static_cast<double>(kLatencyBoundsUs[std::size(kLatencyBoundsUs) - 1]) / 1000;
}

std::uint64_t Snapshot::Server::busy() const noexcept {
  const std::uint64_t open = conn_new > conn_closed ? conn_new - conn_closed : 0;
  return open > idle ? open - idle : 0;
}

Snapshot take_snapshot(const Shared& shared, const Routing& live) {
  Snapshot s;
  s.routes.assign(live.route_rows * kStatusClasses, 0);
  s.pools.resize(live.pool_rows);
  s.pool_ttfb.resize(live.pool_rows);
  s.servers.resize(live.server_rows);
  for (const Worker* w : shared.workers) {
    const Metrics& m = w->metrics;
    // A worker that has not swapped to the live table yet has fewer rows:
    // its count of the new ones is 0.
    const std::size_t routes = std::min(s.routes.size(), m.by_route.size());
    const std::size_t pools = std::min(s.pools.size(), m.pool.size());
    const std::size_t servers = std::min(s.servers.size(), m.server.size());
    for (std::size_t i = 0; i < routes; ++i) s.routes[i] += m.by_route[i].get();
    for (std::size_t p = 0; p < pools; ++p) {
      add_requests(s.pools[p], m.pool[p]);
      add_histogram(s.pool_ttfb[p], m.pool[p].ttfb);
    }
    for (std::size_t i = 0; i < servers; ++i) {
      Snapshot::Server& to = s.servers[i];
      const ServerCounters& from = m.server[i];
      add_requests(to.req, from);
      to.conn_new += from.conn_new.get();
      to.conn_reused += from.conn_reused.get();
      to.conn_closed += from.conn_closed.get();
      to.ejections += from.ejections.get();
      to.idle += from.idle.get();
    }
    s.bytes_in += m.bytes_in.get();
    for (std::size_t k = 0; k < 2; ++k) s.by_protocol[k] += m.by_protocol[k].get();
    s.bytes_out += m.bytes_out.get();
    s.accept_errors += m.accept_errors.get();
    s.refused += w->refused_connections.get();
    s.retries += w->retries.get();
    for (std::size_t i = 0; i < 5; ++i) s.cache[i] += w->cache_results[i].get();
    s.compress_in += w->compress_in.get();
    s.compress_out += w->compress_out.get();
    s.tunnels += w->tunnels_open.get();
    s.retries_denied += w->retries_denied.get();
    s.log_dropped += w->access_log.dropped().get();
    s.tls_full += w->streams.tls_full.get();
    s.tls_resumed += w->streams.tls_resumed.get();
    s.tls_failures += w->streams.tls_failures.get();
    s.sendfile_bytes += w->streams.sendfile_bytes.get();
    s.connections += w->session_count.get();
    s.active += w->active_exchanges.get();
  }
  for (std::size_t p = 0; p < live.table->pools.size(); ++p) add_requests(s.all, s.pools[static_cast<std::size_t>(live.metric_pool[p])]);
  return s;
}

std::string_view server_state(const Routing& live, std::size_t server) noexcept {
  const ServerHealth& h = live.health[server];
  if (h.down.load(std::memory_order_relaxed)) return "down";
  if (ejection_start(h, uv_hrtime() / 1000000) != 0) return "ejected";
  if (h.drained.load(std::memory_order_relaxed)) return "drain";
  return "up";
}

std::uint16_t server_weight(const Routing& live, std::size_t server) noexcept {
  return current_weight(live.health[server], live.table->servers[server]);
}

State admin_respond(Exchange* ex) {
  const Shared& shared = ex->worker->shared;
  const std::lock_guard<std::mutex> hold(shared.reload_lock);  // the live table stays while the page is made
  const std::string_view path = ex->head.path;
  const bool read_only = ex->head.method == Method::Get || ex->head.method == Method::Head;
  enum class Page : std::uint8_t { Metrics, Stats, StatsJson } page;
  if (path == "/ready") {
    // For the health check of an L4 front: 503 from SIGTERM on, while the
    // traffic listeners still accept for drain.delay.
    if (!read_only) return admin_answer(ex, 405, "text/plain; charset=utf-8", "method not allowed\n", "Allow: GET, HEAD\r\n");
    return shared.stopping.load(std::memory_order_relaxed)
               ? admin_answer(ex, 503, "text/plain; charset=utf-8", "draining\n")
               : admin_answer(ex, 200, "text/plain; charset=utf-8", "ready\n");
  }
  if (path == "/metrics") page = Page::Metrics;
  else if (path == "/stats" || path == "/") page = Page::Stats;
  else if (path == "/stats.json") page = Page::StatsJson;
  else if (path.starts_with("/servers/")) return admin_control(ex);
  else
    return admin_answer(ex, 404, "text/plain; charset=utf-8",
                        "not found: the admin listener serves /metrics, /stats, /stats.json, /ready\n");
  if (!read_only) return admin_answer(ex, 405, "text/plain; charset=utf-8", "method not allowed\n", "Allow: GET, HEAD\r\n");
  if (page == Page::Stats) return admin_answer(ex, 200, "text/html; charset=utf-8", stats_page());
  // Built aside, then copied after the head that gives its length.
  thread_local std::string body;
  body.clear();
  const Routing& live = live_routing(shared);
  const Snapshot snap = take_snapshot(shared, live);
  if (page == Page::Metrics) {
    render_metrics(shared, live, snap, body);
    return admin_answer(ex, 200, "text/plain; version=0.0.4; charset=utf-8", body);
  }
  render_stats_json(shared, live, snap, body);
  return admin_answer(ex, 200, "application/json", body);
}

}  // namespace juggler
