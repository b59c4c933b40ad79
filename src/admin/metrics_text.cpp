// /metrics: the snapshot in the Prometheus text exposition format, version
// 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/). Every
// family has its HELP and TYPE lines; every series of a family is written
// together; the set of series depends on the routes file only (a server with
// no traffic shows zeros), so dashboards do not see series come and go.
#include <cstdio>

#include "admin/admin.hpp"
#include "cache/store.hpp"
#include "juggler/worker.hpp"
#include "resolve/slots.hpp"

namespace juggler {

namespace {

constexpr const char* kClassNames[kStatusClasses] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

// A label value with \, " and newline escaped.
void append_escaped(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

struct Writer {
  std::string& out;

  void family(const char* name, const char* type, const char* help) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n# TYPE ");
    out.append(name).append(" ").append(type).append("\n");
  }
  // A family of one sample without labels.
  void single(const char* name, const char* type, const char* help, std::uint64_t v) {
    family(name, type, help);
    sample(name, "", v);
  }
  // name{labels} value; `labels` already formatted (`a="x",b="y"`), may be empty.
  void sample(std::string_view name, std::string_view labels, std::uint64_t v) {
    head(name, labels);
    out.append(std::to_string(v)).append("\n");
  }
  void sample(std::string_view name, std::string_view labels, double v) {
    head(name, labels);
    char text[32];
    const int n = std::snprintf(text, sizeof text, "%.9g", v);
    out.append(text, static_cast<std::size_t>(n)).append("\n");
  }
  void head(std::string_view name, std::string_view labels) {
    out.append(name);
    if (!labels.empty()) out.append("{").append(labels).append("}");
    out.append(" ");
  }
  void histogram(const char* name, const std::string& labels, const Snapshot::Requests& r) {
    const std::string bucket = std::string(name) + "_bucket";
    std::uint64_t cumulative = 0;
    for (std::size_t b = 0; b < kLatencyBuckets; ++b) {
      cumulative += r.buckets[b];
      char le[32];
      if (b + 1 < kLatencyBuckets)
        std::snprintf(le, sizeof le, "le=\"%g\"", static_cast<double>(kLatencyBoundsUs[b]) / 1e6);
      else
        std::snprintf(le, sizeof le, "le=\"+Inf\"");
      sample(bucket, labels.empty() ? std::string(le) : labels + "," + le, cumulative);
    }
    sample(std::string(name) + "_sum", labels, static_cast<double>(r.sum_us) / 1e6);
    sample(std::string(name) + "_count", labels, cumulative);
  }
};

std::string pool_label(const PoolDef& p) {
  std::string l = "pool=\"";
  append_escaped(l, p.name);
  return l + "\"";
}

std::string server_label(const RouteTable& t, std::size_t i) {
  const ServerDef& s = t.servers[i];
  std::string l = pool_label(t.pools[s.pool]) + ",server=\"";
  append_escaped(l, s.authority);
  // The slots of a resolve line share its name: the slot tells them apart.
  return l + (s.slot ? "\",slot=\"" + std::to_string(s.slot) + "\"" : "\"");
}

// `server NAME:PORT resolve` lines of the table serving now: each slot with
// its address, the lookups' times and outcome.
void render_resolve(Writer& w, const Routing& r) {
  const RouteTable& t = *r.table;
  if (t.resolves.empty()) return;
  w.family("juggler_server_slot_enabled", "gauge",
           "1 while a slot of a `server NAME:PORT resolve` line holds an address (label address) and takes "
           "traffic; 0 while it is empty.");
  for (const ResolveDef& rd : t.resolves)
    for (std::size_t k = 0; k < rd.slots; ++k) {
      const std::size_t i = rd.first_server + k;
      const bool on = !r.health[i].unresolved.load(std::memory_order_acquire);
      std::string addr;
      if (on) {
        sockaddr_storage ss;
        r.slot_addr[i].load(ss);
        SlotAddr a;
        if (slot_addr_from(reinterpret_cast<const sockaddr*>(&ss), a)) addr = slot_addr_text(a);
      }
      w.sample("juggler_server_slot_enabled", server_label(t, i) + ",address=\"" + addr + "\"", std::uint64_t{on});
    }
  auto per_line = [&](const char* name, const char* type, const char* help, auto value) {
    w.family(name, type, help);
    for (std::size_t k = 0; k < t.resolves.size(); ++k) {
      const ResolveDef& rd = t.resolves[k];
      std::string l = pool_label(t.pools[rd.pool]) + ",server=\"";
      append_escaped(l, t.servers[rd.first_server].authority);
      w.sample(name, l + "\"", value(r.resolve_status[k]));
    }
  };
  constexpr auto rx = std::memory_order_relaxed;
  per_line("juggler_resolve_last_success_timestamp_seconds", "gauge",
           "When a resolve line's name last resolved (Unix time; 0: never).",
           [&](const ResolveStatus& st) { return static_cast<double>(st.last_ok_ms.load(rx)) / 1000; });
  per_line("juggler_resolve_last_lookup_timestamp_seconds", "gauge",
           "When a resolve line's name was last looked up (Unix time).",
           [&](const ResolveStatus& st) { return static_cast<double>(st.last_try_ms.load(rx)) / 1000; });
  per_line("juggler_resolve_failing_lookups", "gauge",
           "Lookups of a resolve line's name failed in a row (its slots keep the last answer meanwhile).",
           [&](const ResolveStatus& st) { return std::uint64_t{st.failing.load(rx)}; });
  per_line("juggler_resolve_records", "gauge",
           "Addresses in a resolve line's last answer (more than its slots: the rest are left out).",
           [&](const ResolveStatus& st) { return std::uint64_t{st.records.load(rx)}; });
}

std::string with_class(const std::string& labels, std::size_t c) {
  return labels + ",class=\"" + kClassNames[c] + "\"";
}

void render_requests(Writer& w, const LiveRows& rows, std::size_t none_row) {
  const RouteTable& t = *rows.live.table;
  w.family("juggler_route_requests_total", "counter",
           "Requests answered, by route (its number in file order, as --check shows; none: no route took it) and "
           "status class.");
  for (std::size_t r = 0; r <= t.routes.size(); ++r) {
    const bool none = r == t.routes.size();
    const std::string route = !none ? "route=\"" + std::to_string(r + 1) + "\",line=\"" +
                                          std::to_string(t.routes[r].line) + "\""
                                    : std::string("route=\"none\",line=\"0\"");
    const std::size_t row = none ? none_row : static_cast<std::size_t>(rows.live.metric_route[r]);
    for (std::size_t c = 0; c < kStatusClasses; ++c)
      w.sample("juggler_route_requests_total", with_class(route, c), rows.s.routes[row * kStatusClasses + c]);
  }
  w.family("juggler_pool_requests_total", "counter", "Requests a pool's route took, by status class.");
  for (std::size_t p = 0; p < t.pools.size(); ++p)
    for (std::size_t c = 0; c < kStatusClasses; ++c)
      w.sample("juggler_pool_requests_total", with_class(pool_label(t.pools[p]), c), rows.pool(p).by_class[c]);
  w.family("juggler_server_requests_total", "counter",
           "Requests whose last attempt went to a server (or a redirect named it), by status class.");
  for (std::size_t i = 0; i < t.servers.size(); ++i)
    for (std::size_t c = 0; c < kStatusClasses; ++c)
      w.sample("juggler_server_requests_total", with_class(server_label(t, i), c), rows.server(i).req.by_class[c]);
  w.family("juggler_pool_request_duration_seconds", "histogram",
           "Time from a request's first byte to the end of its answer, per pool.");
  for (std::size_t p = 0; p < t.pools.size(); ++p)
    w.histogram("juggler_pool_request_duration_seconds", pool_label(t.pools[p]), rows.pool(p));
  w.family("juggler_pool_ttfb_seconds", "histogram",
           "Time from a request's first byte to the first byte of the answering server's response, per pool "
           "(proxied requests a server answered).");
  for (std::size_t p = 0; p < t.pools.size(); ++p)
    w.histogram("juggler_pool_ttfb_seconds", pool_label(t.pools[p]), rows.ttfb(p));
  w.family("juggler_server_request_duration_seconds", "histogram",
           "Time from a request's first byte to the end of its answer, per server.");
  for (std::size_t i = 0; i < t.servers.size(); ++i)
    w.histogram("juggler_server_request_duration_seconds", server_label(t, i), rows.server(i).req);
}

void render_servers(Writer& w, const LiveRows& rows) {
  const Routing& live = rows.live;
  const RouteTable& t = *live.table;
  // One family with a sample per server (of the pools with active checks only, when `checked`).
  auto per_server = [&](const char* name, const char* type, const char* help, auto sample_value, bool checked = false) {
    w.family(name, type, help);
    for (std::size_t i = 0; i < t.servers.size(); ++i)
      if (!checked || t.pools[t.servers[i].pool].health.enabled) w.sample(name, server_label(t, i), sample_value(i));
  };
  w.family("juggler_upstream_connections", "gauge", "Connections to a server: busy (a request on it) or idle.");
  for (std::size_t i = 0; i < t.servers.size(); ++i) {
    const std::string l = server_label(t, i);
    w.sample("juggler_upstream_connections", l + ",state=\"busy\"", rows.server(i).busy());
    w.sample("juggler_upstream_connections", l + ",state=\"idle\"", rows.server(i).idle);
  }
  per_server("juggler_upstream_connections_opened_total", "counter", "Connections opened to a server.",
             [&](std::size_t i) { return rows.server(i).conn_new; });
  per_server("juggler_upstream_connections_reused_total", "counter",
             "Requests sent on a kept-alive connection instead of a new one.",
             [&](std::size_t i) { return rows.server(i).conn_reused; });
  per_server("juggler_server_up", "gauge", "1 while active health checks say a server is up (always 1 unchecked).",
             [&](std::size_t i) { return std::uint64_t{server_state(live, i) != "down"}; });
  per_server("juggler_server_ejected", "gauge", "1 while passive health keeps a server out of the picks.",
             [&](std::size_t i) { return std::uint64_t{server_state(live, i) == "ejected"}; });
  per_server("juggler_server_ejections_total", "counter", "Passive ejections of a server (max_fails reached).",
             [&](std::size_t i) { return rows.server(i).ejections; });
  per_server("juggler_server_drained", "gauge", "1 while the admin keeps a server drained (no new requests).",
             [&](std::size_t i) { return std::uint64_t{live.health[i].drained.load(std::memory_order_relaxed)}; });
  per_server("juggler_server_weight", "gauge", "A server's weight (the admin's, else the compiled one).",
             [&](std::size_t i) { return std::uint64_t{server_weight(live, i)}; });
  per_server(
      "juggler_server_last_check_timestamp_seconds", "gauge",
      "When a server's latest active check ended (Unix time; 0 before the first).",
      [&](std::size_t i) { return static_cast<double>(live.last_check[i].at_ms.load(std::memory_order_relaxed)) / 1000; },
      true);
  per_server(
      "juggler_server_last_check_success", "gauge", "1 when a server's latest active check passed.",
      [&](std::size_t i) {
        const LastCheck& c = live.last_check[i];
        return std::uint64_t{c.at_ms.load(std::memory_order_relaxed) != 0 && c.result.load(std::memory_order_relaxed) == 0};
      },
      true);
}

void render_process(Writer& w, const Shared& shared, const Routing& live, const Snapshot& s) {
  // Beside the per-route rows (whose names dashboards know), the client's protocol.
  w.family("juggler_requests_total", "counter", "Requests answered, by the client's protocol.");
  w.sample("juggler_requests_total", "protocol=\"HTTP/1\"", s.by_protocol[0]);
  w.sample("juggler_requests_total", "protocol=\"HTTP/2\"", s.by_protocol[1]);
  w.single("juggler_client_bytes_received_total", "counter", "Bytes read from clients (TLS: decrypted).", s.bytes_in);
  w.single("juggler_client_bytes_sent_total", "counter", "Bytes of answers to clients (heads and bodies).",
           s.bytes_out);
  w.family("juggler_client_connections", "gauge", "Client connections: active (a request in flight) or idle.");
  w.sample("juggler_client_connections", "state=\"active\"", s.active);
  w.sample("juggler_client_connections", "state=\"idle\"", s.connections > s.active ? s.connections - s.active : 0);
  w.single("juggler_retries_total", "counter", "Requests sent again to a server after a failed attempt.", s.retries);
  w.single("juggler_retries_denied_total", "counter", "Retries the retry budget refused.", s.retries_denied);
  w.family("juggler_tls_handshakes_total", "counter", "TLS handshakes completed with clients.");
  w.sample("juggler_tls_handshakes_total", "kind=\"full\"", s.tls_full);
  w.sample("juggler_tls_handshakes_total", "kind=\"resumed\"", s.tls_resumed);
  w.single("juggler_tls_failures_total", "counter", "TLS handshakes and records that failed.", s.tls_failures);
  w.single("juggler_accept_refused_total", "counter",
           "Connections refused with 503 over limit.connections_per_worker.", s.refused);
  w.single("juggler_accept_errors_total", "counter", "accept() failures (EMFILE and the like).", s.accept_errors);
  w.single("juggler_access_log_dropped_lines_total", "counter",
           "Access log lines dropped because their write failed (a full disk, a pipe nobody reads).", s.log_dropped);
  w.single("juggler_workers", "gauge", "Worker threads serving traffic.", std::uint64_t{shared.workers.size()});
  w.family("juggler_cache_requests_total", "counter", "Answers of routes with `cache`, by their X-Cache.");
  static constexpr const char* kCacheLabels[] = {"", "result=\"miss\"", "result=\"bypass\"", "result=\"hit\"",
                                                 "result=\"stale\""};
  for (std::size_t i = 1; i < 5; ++i) w.sample("juggler_cache_requests_total", kCacheLabels[i], s.cache[i]);
  if (const int up = shared.cache ? shared.cache->connections_up() : -1; up >= 0)
    w.single("juggler_cache_redis_connections_up", "gauge",
             "Workers whose Redis connection answers (set cache redis); fewer than juggler_workers: an outage.",
             static_cast<std::uint64_t>(up));
  if (shared.cache && !shared.cache->asynchronous()) {
    w.single("juggler_cache_files", "gauge",
             "Cached bodies held in memfds (one descriptor each; at most an eighth of the descriptor limit).",
             std::uint64_t{cache_files_open()});
    w.single("juggler_cache_sendfile_bytes_total", "counter",
             "Bytes of cached bodies sent to plain HTTP/1 clients by sendfile(2), without a copy.", s.sendfile_bytes);
  }
  w.family("juggler_compress_bytes_total", "counter", "Body bytes into the compressors and out of them.");
  w.sample("juggler_compress_bytes_total", "direction=\"in\"", s.compress_in);
  w.sample("juggler_compress_bytes_total", "direction=\"out\"", s.compress_out);
  w.single("juggler_tunnels_open", "gauge", "L4 connections and WebSocket tunnels open.", s.tunnels);
  w.single("juggler_reloads_total", "counter", "Route tables swapped in by make reload.",
           shared.reloads.load(std::memory_order_relaxed));
  w.single("juggler_ready", "gauge", "1 while serving, 0 from SIGTERM on (what /ready says).",
           std::uint64_t{!shared.stopping.load(std::memory_order_relaxed)});
  w.family("juggler_build_info", "gauge", "The version, the routes file compiled in and `set instance`.");
  std::string labels = "version=\"" JUGGLER_VERSION "\",routes=\"";
  append_escaped(labels, shared.first->table->source);
  labels += "\",instance=\"";
  append_escaped(labels, shared.config.settings.instance);
  w.sample("juggler_build_info", labels + "\"", std::uint64_t{1});
  // The table serving now (the admin page holds reload_lock: it stays loaded).
  const RouteTable& t = *live.table;
  w.family("juggler_table_info", "gauge", "The route table serving: its routes file and the hash of that file.");
  labels = "routes=\"";
  append_escaped(labels, t.source);
  labels += "\",hash=\"";
  append_escaped(labels, t.source_hash);
  w.sample("juggler_table_info", labels + "\"", std::uint64_t{1});
}

}  // namespace

const Snapshot::Requests& LiveRows::pool(std::size_t p) const noexcept {
  return s.pools[static_cast<std::size_t>(live.metric_pool[p])];
}
const Snapshot::Requests& LiveRows::ttfb(std::size_t p) const noexcept {
  return s.pool_ttfb[static_cast<std::size_t>(live.metric_pool[p])];
}
const Snapshot::Server& LiveRows::server(std::size_t i) const noexcept {
  return s.servers[static_cast<std::size_t>(live.metric_server[i])];
}

void render_metrics(const Shared& shared, const Routing& live, const Snapshot& snap, std::string& out) {
  Writer w{out};
  const LiveRows rows{live, snap};
  render_requests(w, rows, shared.first->table->routes.size());  // the first table's row count is "no route"
  render_servers(w, rows);
  render_resolve(w, live);
  render_process(w, shared, live, snap);
}

}  // namespace juggler
