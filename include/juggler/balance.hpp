// Picking a server of a pool. The strategy is the pool's compiled one; state
// that changes per pick is per worker, so no lock is taken.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "juggler/route.hpp"

namespace juggler {

// Servers already tried for this request (positions within the pool). Pools
// of more than kMaxTracked servers track only the first kMaxTracked.
struct Tried {
  static constexpr std::uint32_t kMaxTracked = 256;
  std::uint64_t bits[kMaxTracked / 64] = {};
  std::uint32_t count = 0;
  bool has(std::uint32_t i) const noexcept { return i < kMaxTracked && (bits[i / 64] >> (i % 64)) & 1; }
  void add(std::uint32_t i) noexcept {
    if (i < kMaxTracked && !has(i)) bits[i / 64] |= std::uint64_t{1} << (i % 64);
    ++count;
  }
};

// Process-wide, per compiled server: what every worker must see.
struct ServerHealth {
  std::atomic<bool> down{false};
  std::atomic<std::uint32_t> inflight{0};
};

class Balancer {
 public:
  // `health` has one entry per compiled server and outlives the balancer.
  // `offset` (the worker's number) staggers the round-robin start so that N
  // workers do not all send their first request to the same server.
  Balancer(const RouteTable& table, ServerHealth* health, std::uint32_t offset = 0);

  // The global index of the server to use for `head` in pool `pool`, skipping
  // servers that are down or in `tried`; backup servers only when no other
  // server is left. -1 when none is left.
  int pick(std::uint16_t pool, const RequestHead& head, const Tried& tried) noexcept;

 private:
  int round_robin(const PoolDef& p, const Tried& tried, bool backup) noexcept;

  const RouteTable& table_;
  ServerHealth* health_;
  std::vector<std::int32_t> current_;  // smooth WRR state, per server
};

}  // namespace juggler
