#include "juggler/balance.hpp"

namespace juggler {

Balancer::Balancer(const RouteTable& table, ServerHealth* health, std::uint32_t offset)
    : table_(table), health_(health), current_(table.servers.size(), 0) {
  const Tried none;
  for (const PoolDef& p : table.pools)
    for (std::uint32_t i = 0; i < offset % (p.server_count ? p.server_count : 1); ++i) round_robin(p, none, false);
}

// Smooth weighted round-robin (nginx's): every eligible server gains its
// weight, the richest is picked and pays the total. Weights 5,1,1 give
// a a b a c a a, not a a a a a b c.
int Balancer::round_robin(const PoolDef& p, const Tried& tried, bool backup) noexcept {
  int best = -1;
  std::int32_t total = 0;
  for (std::uint32_t i = 0; i < p.server_count; ++i) {
    const std::uint32_t s = p.first_server + i;
    const ServerDef& def = table_.servers[s];
    if (def.backup != backup || tried.has(i) || health_[s].down.load(std::memory_order_relaxed)) continue;
    current_[s] += def.weight;
    total += def.weight;
    if (best < 0 || current_[s] > current_[best]) best = static_cast<int>(s);
  }
  if (best >= 0) current_[best] -= total;
  return best;
}

int Balancer::pick(std::uint16_t pool, const RequestHead&, const Tried& tried) noexcept {
  const PoolDef& p = table_.pools[pool];
  int s = round_robin(p, tried, false);
  if (s < 0) s = round_robin(p, tried, true);
  return s;
}

}  // namespace juggler
