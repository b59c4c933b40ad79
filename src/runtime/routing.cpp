// Routing (one loaded table and what its numbers index) and WorkerTable (a
// worker's state numbered by it): built at start-up and by every reload.
#include <map>
#include <stdexcept>
#include <string>

#include "juggler/balance.hpp"
#include "juggler/config.hpp"
#include "juggler/http.hpp"
#include "juggler/worker.hpp"

namespace juggler {

int find_server(const RouteTable& t, std::string_view pool, std::string_view authority, std::uint8_t slot) noexcept {
  for (const PoolDef& p : t.pools) {
    if (p.name != pool) continue;
    for (std::uint16_t k = 0; k < p.server_count; ++k) {
      const ServerDef& s = t.servers[p.first_server + k];
      if (s.authority == authority && s.slot == slot) return p.first_server + k;
    }
  }
  return -1;
}

const Routing& live_routing(const Shared& shared) noexcept {
  const Routing* live = shared.live.load(std::memory_order_acquire);
  return live ? *live : *shared.first;
}

namespace {

// The row of `key` in `rows` (a new one past the others when it has none;
// `own`: the first table's own number, which is its row).
std::int32_t row(std::map<std::string, std::int32_t, std::less<>>* rows, std::string key, std::size_t own,
                 std::size_t& next) {
  if (!rows) return static_cast<std::int32_t>(own);
  const auto [it, added] = rows->try_emplace(std::move(key), static_cast<std::int32_t>(next));
  if (added) ++next;
  return it->second;
}

// A server's identity across tables: its pool and what consistent hashing
// knows it by (authority, and "#slot" for a `resolve` line's slot).
std::string server_row_key(const RouteTable& t, const ServerDef& s) {
  std::string key(t.pools[s.pool].name);
  key += ' ';
  key += server_key(s);
  return key;
}

}  // namespace

std::unique_ptr<Routing> make_routing(const RouteTable& table, MetricRows* rows) {
  auto r = std::make_unique<Routing>();
  r->table = &table;
  r->health = std::make_unique<ServerHealth[]>(table.servers.size());
  r->last_check = std::make_unique<LastCheck[]>(table.servers.size());
  r->slot_addr = std::make_unique<SlotAddress[]>(table.servers.size());
  r->resolve_status = std::make_unique<ResolveStatus[]>(table.resolves.size());
  // Without `rows` the numbers are the rows; the first table fills `rows` in
  // that order (make_metric_rows), so the two agree.
  std::size_t pools = rows ? rows->pool_rows : table.pools.size();
  std::size_t servers = rows ? rows->server_rows : table.servers.size();
  std::size_t routes = rows ? rows->route_rows : table.routes.size() + 1;  // + "no route"
  for (std::size_t i = 0; i < table.servers.size(); ++i) {
    const ServerDef& s = table.servers[i];
    sockaddr_storage ss{};
    // A resolve slot has no address until the resolver gives it one (src/resolve).
    if (s.slot) r->health[i].unresolved.store(true, std::memory_order_relaxed);
    else if (!socket_address(s.host, s.port, ss)) throw std::runtime_error("bad address '" + std::string(s.host) + "'");
    r->server_addrs.push_back(ss);
    r->metric_server.push_back(row(rows ? &rows->servers : nullptr, server_row_key(table, s), i, servers));
  }
  for (std::size_t i = 0; i < table.pools.size(); ++i)
    r->metric_pool.push_back(row(rows ? &rows->pools : nullptr, std::string(table.pools[i].name), i, pools));
  for (const RouteDef& rd : table.routes) {
    r->metric_route.push_back(row(rows ? &rows->routes : nullptr, std::string(rd.text), rd.index, routes));
    if (rd.action != Action::Respond) {
      r->route_replies.emplace_back();
      continue;
    }
    std::string head = "HTTP/1.1 " + std::to_string(rd.status) + " " + std::string(status_reason(rd.status)) +
                       "\r\nContent-Length: 0\r\n";
    Routing::RouteReply reply{head, head};
    reply.keep.append("\r\n");
    reply.close.append("Connection: close\r\n\r\n");
    r->route_replies.push_back(std::move(reply));
  }
  if (rows) {
    rows->route_rows = routes;
    rows->pool_rows = pools;
    rows->server_rows = servers;
  }
  r->route_rows = routes;
  r->pool_rows = pools;
  r->server_rows = servers;
  return r;
}

MetricRows make_metric_rows(const RouteTable& first) {
  MetricRows rows;
  for (std::size_t i = 0; i < first.servers.size(); ++i)
    rows.servers.try_emplace(server_row_key(first, first.servers[i]), static_cast<std::int32_t>(i));
  for (std::size_t i = 0; i < first.pools.size(); ++i)
    rows.pools.try_emplace(std::string(first.pools[i].name), static_cast<std::int32_t>(i));
  for (const RouteDef& rd : first.routes) rows.routes.try_emplace(std::string(rd.text), static_cast<std::int32_t>(rd.index));
  rows.route_rows = first.routes.size() + 1;  // row routes.size(): no route
  rows.pool_rows = first.pools.size();
  rows.server_rows = first.servers.size();
  return rows;
}

WorkerTable::WorkerTable(Routing& r, const RouteTable& dispatch, std::uint32_t worker_id)
    : routing(r),
      table(&dispatch),
      balancer(*r.table, r.health.get(), worker_id),
      idle(r.table->servers.size()),
      retry_tokens(r.table->pools.size(), kRetryCap / 2) {
  routing.users.fetch_add(1, std::memory_order_relaxed);
}

WorkerTable::~WorkerTable() { routing.users.fetch_sub(1, std::memory_order_acq_rel); }

}  // namespace juggler
