// /stats.json (the snapshot as the stats page reads it) and /stats (the page:
// one self-contained HTML document, inline CSS and script, no external
// asset, that polls /stats.json every second and draws its charts on canvas).
#include <cstdio>

#include "admin/admin.hpp"
#include "juggler/health.hpp"
#include "juggler/worker.hpp"

namespace juggler {

namespace {

void json_string(std::string& out, std::string_view v) {
  out += '"';
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += esc;
    } else {
      out += c;
    }
  }
  out += '"';
}

void json_number(std::string& out, double v) {
  char text[32];
  const int n = std::snprintf(text, sizeof text, "%.3f", v);
  out.append(text, static_cast<std::size_t>(n));
}

// "requests", "errors", "p50_ms", "p99_ms" of `r`, each followed by a comma.
void json_requests(std::string& out, const Snapshot::Requests& r) {
  out += "\"requests\":" + std::to_string(r.count()) + ",\"errors\":" + std::to_string(r.errors()) + ",\"p50_ms\":";
  json_number(out, r.quantile_ms(0.5));
  out += ",\"p99_ms\":";
  json_number(out, r.quantile_ms(0.99));
  out += ',';
}

void json_server(std::string& out, const LiveRows& rows, std::size_t i, std::uint64_t now) {
  const Routing& live = rows.live;
  const ServerDef& d = live.table->servers[i];
  const Snapshot::Server& row = rows.server(i);
  out += "{\"address\":";
  json_string(out, d.authority);
  out += ",\"state\":";
  json_string(out, server_state(live, i));
  out += ",\"weight\":" + std::to_string(server_weight(live, i)) + ",\"backup\":" + (d.backup ? "true" : "false");
  out += ",\"inflight\":" + std::to_string(row.busy()) + ',';
  json_requests(out, row.req);
  const LastCheck& c = live.last_check[i];
  const std::uint64_t at = c.at_ms.load(std::memory_order_relaxed);
  out += "\"last_check\":";
  if (at == 0) {
    out += "null}";
    return;
  }
  const auto result = static_cast<CheckResult>(c.result.load(std::memory_order_relaxed));
  out += std::string("{\"ok\":") + (result == CheckResult::Ok ? "true" : "false") + ",\"result\":";
  json_string(out, describe_check(result, c.status.load(std::memory_order_relaxed)));
  out += ",\"ago_ms\":" + std::to_string(now > at ? now - at : 0) + "}}";
}

}  // namespace

void render_stats_json(const Shared& shared, const Routing& live, const Snapshot& s, std::string& out) {
  const RouteTable& t = *live.table;
  const LiveRows rows{live, s};
  const std::uint64_t now = wall_clock_ms();
  std::uint64_t requests = 0, errors = 0;
  for (std::size_t i = 0; i < s.routes.size(); ++i) {
    requests += s.routes[i];
    if (i % kStatusClasses == 4) errors += s.routes[i];
  }
  out += "{\"now_ms\":" + std::to_string(now) + ",\"workers\":" + std::to_string(shared.workers.size());
  out += ",\"requests\":" + std::to_string(requests) + ",\"errors\":" + std::to_string(errors);
  out += ",\"connections\":" + std::to_string(s.connections) + ",\"active\":" + std::to_string(s.active);
  out += ",\"bytes_in\":" + std::to_string(s.bytes_in) + ",\"bytes_out\":" + std::to_string(s.bytes_out);
  out += ",\"bounds_us\":[";
  for (std::size_t b = 0; b < std::size(kLatencyBoundsUs); ++b) {
    if (b) out += ',';
    out += std::to_string(kLatencyBoundsUs[b]);
  }
  out += "],\"buckets\":[";
  for (std::size_t b = 0; b < kLatencyBuckets; ++b) {
    if (b) out += ',';
    out += std::to_string(s.all.buckets[b]);
  }
  out += "],\"pools\":[";
  for (std::size_t p = 0; p < t.pools.size(); ++p) {
    const PoolDef& pd = t.pools[p];
    out += p ? ",{\"name\":" : "{\"name\":";
    json_string(out, pd.name);
    out += ',';
    json_requests(out, rows.pool(p));
    out += "\"servers\":[";
    for (std::uint16_t k = 0; k < pd.server_count; ++k) {
      if (k) out += ',';
      json_server(out, rows, pd.first_server + k, now);
    }
    out += "]}";
  }
  out += "]}\n";
}

std::string_view stats_page() noexcept {
  static constexpr std::string_view kPage = R"HTML(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Juggler stats</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#1f2328;background:#f6f8fa}
h1{font-size:20px;margin:0 0 4px}#status{color:#57606a;margin-bottom:12px}
.charts{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:16px}
.chart{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px}
.chart h2{font-size:13px;margin:0 0 4px;color:#57606a}
table{border-collapse:collapse;background:#fff;border:1px solid #d0d7de;margin-bottom:16px;min-width:760px}
th,td{padding:4px 10px;border-bottom:1px solid #eaeef2;text-align:right}th{background:#f6f8fa}
td:first-child,th:first-child{text-align:left}.pool td{background:#eef2f6;font-weight:600}
.state{font-weight:700;text-transform:uppercase}.up .state{color:#1a7f37}
tr.down td{background:#ffd7d5;color:#82071e}tr.ejected td{background:#fff1c2}tr.drain td{background:#ddf4ff}
</style></head><body>
<h1>Juggler</h1><div id="status">loading&hellip;</div>
<div class="charts">
<div class="chart"><h2>requests per second</h2><canvas id="rps" width="460" height="160"></canvas></div>
<div class="chart"><h2>latency, ms (p50 blue, p99 orange)</h2><canvas id="lat" width="460" height="160"></canvas></div>
</div>
<table id="servers"><thead><tr><th>pool / server</th><th>state</th><th>weight</th><th>in flight</th>
<th>requests</th><th>5xx</th><th>p50 ms</th><th>p99 ms</th><th>last check</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
const N = 60, rps = [], p50 = [], p99 = [];
let prev = null;
window.juggler = {updates: 0, draws: 0, failures: 0};
function quantile(bounds, buckets, q) {
  let total = 0; for (const b of buckets) total += b;
  if (!total) return 0;
  const rank = q * total; let below = 0;
  for (let i = 0; i < buckets.length; i++) {
    if (!buckets[i] || below + buckets[i] < rank) { below += buckets[i]; continue; }
    const lo = i ? bounds[i - 1] : 0;
    if (i >= bounds.length) return lo / 1000;
    return (lo + (bounds[i] - lo) * (rank - below) / buckets[i]) / 1000;
  }
  return bounds[bounds.length - 1] / 1000;
}
function draw(id, series, colors) {
  const c = document.getElementById(id), g = c.getContext("2d"), w = c.width, h = c.height;
  g.clearRect(0, 0, w, h);
  let max = 1; for (const s of series) for (const v of s) max = Math.max(max, v);
  g.strokeStyle = "#d0d7de"; g.fillStyle = "#57606a"; g.font = "11px sans-serif"; g.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const y = h - 14 - (h - 24) * k / 4;
    g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
    g.fillText((max * k / 4).toFixed(max < 10 ? 2 : 0), 2, y - 2);
  }
  series.forEach((s, j) => {
    g.strokeStyle = colors[j]; g.lineWidth = 2; g.beginPath();
    s.forEach((v, i) => {
      const x = w - (s.length - 1 - i) * w / (N - 1), y = h - 14 - (h - 24) * v / max;
      if (i) g.lineTo(x, y); else g.moveTo(x, y);
    });
    g.stroke();
  });
  window.juggler.draws++;
}
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
function render(s) {
  const body = document.querySelector("#servers tbody"), rows = [];
  for (const p of s.pools) {
    const tr = document.createElement("tr"); tr.className = "pool";
    for (const v of [p.name, "", "", "", p.requests, p.errors, p.p50_ms.toFixed(2), p.p99_ms.toFixed(2), ""]) tr.appendChild(cell(v));
    rows.push(tr);
    for (const v of p.servers) {
      const r = document.createElement("tr"); r.className = v.state; r.dataset.server = v.address;
      const check = v.last_check ? v.last_check.result + ", " + (v.last_check.ago_ms / 1000).toFixed(1) + " s ago" : "-";
      for (const x of ["\u00a0\u00a0" + v.address + (v.backup ? " (backup)" : ""), v.state, v.weight, v.inflight,
                       v.requests, v.errors, v.p50_ms.toFixed(2), v.p99_ms.toFixed(2), check]) r.appendChild(cell(x));
      r.children[1].className = "state";
      rows.push(r);
    }
  }
  body.replaceChildren(...rows);
}
async function poll() {
  try {
    const r = await fetch("stats.json", {cache: "no-store"});
    const s = await r.json();
    if (prev) {
      const dt = Math.max(0.001, (s.now_ms - prev.now_ms) / 1000);
      rps.push(Math.max(0, s.requests - prev.requests) / dt);
      const d = s.buckets.map((b, i) => Math.max(0, b - prev.buckets[i]));
      p50.push(quantile(s.bounds_us, d, 0.5)); p99.push(quantile(s.bounds_us, d, 0.99));
      for (const a of [rps, p50, p99]) while (a.length > N) a.shift();
    }
    prev = s;
    render(s);
    draw("rps", [rps], ["#0969da"]);
    draw("lat", [p50, p99], ["#0969da", "#bc4c00"]);
    document.getElementById("status").textContent = s.workers + " workers, " + s.connections + " client connections, " +
      s.requests + " requests, updated " + new Date(s.now_ms).toLocaleTimeString();
    window.juggler.updates++;
  } catch (e) {
    window.juggler.failures++;
    document.getElementById("status").textContent = "no answer from the balancer: " + e.message;
  }
  setTimeout(poll, 1000);
}
poll();
</script></body></html>
)HTML";
  return kPage;
}

}  // namespace juggler
