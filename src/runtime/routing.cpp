// Routing (one loaded table and what its numbers index) and WorkerTable (a
// worker's state numbered by it): built at start-up and by every reload.
#include <stdexcept>
#include <string>

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

namespace {

// The live Routing and its number for the first table's `server`; the first
// table and `server` itself when nothing was reloaded or the server is gone.
std::pair<const Routing*, std::size_t> live_server(const Shared& shared, std::size_t server) noexcept {
  const Routing* live = shared.live.load(std::memory_order_acquire);
  const Routing& first = *shared.first;
  if (!live || live == &first) return {&first, server};
  const ServerDef& s = first.table->servers[server];
  const int j = find_server(*live->table, first.table->pools[s.pool].name, s.authority, s.slot);
  if (j < 0) return {&first, server};
  return {live, static_cast<std::size_t>(j)};
}

}  // namespace

ServerHealth& live_health(const Shared& shared, std::size_t first_server) noexcept {
  const auto [r, i] = live_server(shared, first_server);
  return r->health[i];
}

LastCheck& live_check(const Shared& shared, std::size_t first_server) noexcept {
  const auto [r, i] = live_server(shared, first_server);
  return r->last_check[i];
}

namespace {

int find_pool(const RouteTable& t, std::string_view name) noexcept {
  for (std::size_t i = 0; i < t.pools.size(); ++i)
    if (t.pools[i].name == name) return static_cast<int>(i);
  return -1;
}

int find_route(const RouteTable& t, std::string_view text) noexcept {
  for (std::size_t i = 0; i < t.routes.size(); ++i)
    if (t.routes[i].text == text) return static_cast<int>(i);
  return -1;
}

// A row of the first table, or the sink row past its end.
std::int32_t row(int found, std::size_t sink) noexcept { return found >= 0 ? found : static_cast<std::int32_t>(sink); }

}  // namespace

std::unique_ptr<Routing> make_routing(const RouteTable& table, const RouteTable* first) {
  auto r = std::make_unique<Routing>();
  r->table = &table;
  const RouteTable& f = first ? *first : table;
  r->health = std::make_unique<ServerHealth[]>(table.servers.size());
  r->last_check = std::make_unique<LastCheck[]>(table.servers.size());
  r->slot_addr = std::make_unique<SlotAddress[]>(table.servers.size());
  r->resolve_status = std::make_unique<ResolveStatus[]>(table.resolves.size());
  for (std::size_t i = 0; i < table.servers.size(); ++i) {
    const ServerDef& s = table.servers[i];
    sockaddr_storage ss{};
    // A resolve slot has no address until the resolver gives it one (src/resolve).
    if (s.slot) r->health[i].unresolved.store(true, std::memory_order_relaxed);
    else if (!socket_address(s.host, s.port, ss)) throw std::runtime_error("bad address '" + std::string(s.host) + "'");
    r->server_addrs.push_back(ss);
    r->metric_server.push_back(row(find_server(f, table.pools[s.pool].name, s.authority, s.slot), f.servers.size()));
  }
  for (const PoolDef& p : table.pools) r->metric_pool.push_back(row(find_pool(f, p.name), f.pools.size()));
  for (const RouteDef& rd : table.routes) {
    r->metric_route.push_back(row(find_route(f, rd.text), f.routes.size() + 1));  // routes.size() is "no route"
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
  return r;
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
