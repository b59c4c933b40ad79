// Concurrent misses for one key collapsed into one server request. The
// first miss leads (its request goes to the server, its response is stored);
// the others wait in state CacheWait, bounded by timeout.upstream, and look
// again once the leader ended: a hit then, else they go to the server each
// (the response was not storable: nothing to share). Leaders and waiters
// may be on different workers: the flights are process-wide (one mutex, held
// for a map operation), and a worker with waiters is woken by its uv_async.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "exchange/exchange.hpp"

namespace juggler {

// The keys whose leader is at the server, and who waits for each: a fixed
// table (open addressing, linear probing, deletion by backward shift), so a
// miss allocates nothing here. A key that finds no free slot within
// kProbes of its place leads untracked: its concurrent misses go to the
// server each (not collapsed) until the table has room again.
class CacheFlights {
 public:
  // Lead when nobody leads `hash` (true); else `worker` is noted as waiting
  // on it (false).
  bool join(std::uint64_t hash, std::uint32_t worker);
  // The leader ended: the waiting workers are woken.
  void end(std::uint64_t hash);
  // A woken waiter of `worker` looks again: true when `hash` is in flight
  // (again: a new leader may have come first), and then `worker` is noted as
  // waiting on that flight, whose end must wake it too; false when the waiter
  // goes on (the cache, or the server).
  bool wait_again(std::uint64_t hash, std::uint32_t worker);
  // Whether `hash` is in flight (stale-while-revalidate: someone refreshes it).
  bool active(std::uint64_t hash) const;
  // A worker's wake-up (null: it is gone), by worker id.
  void set_wake(std::uint32_t worker, uv_async_t* async);

  static constexpr unsigned kSlots = 4096;  // a power of two
  static constexpr unsigned kProbes = 32;

 private:
  struct Slot {
    std::uint64_t hash = 0;     // 0: free (a key hashing to 0 is never tracked)
    std::uint64_t waiting = 0;  // bit w: worker w waits; bit 63: some worker >= 63
  };
  // The slot holding `hash`, or kSlots.
  unsigned find(std::uint64_t hash) const noexcept;

  mutable std::mutex mu_;
  std::unique_ptr<Slot[]> slots_ = std::make_unique<Slot[]>(kSlots);
  std::vector<uv_async_t*> wake_;
};

// A worker's waiting exchanges and its wake-up (Worker::cache_waits).
struct CacheWaits {
  uv_async_t async{};
  Exchange* head = nullptr;  // linked through Exchange::wait_next / wait_prev
};

// At worker start (its loop's thread, before it runs) and end (before the
// loop closes): the wake-up handle.
void cache_worker_init(Worker& w);
void cache_worker_done(Worker& w);

// Route, on a miss of a GET: true when the exchange leads (goes to the
// server), false when it waits (the caller returns State::CacheWait).
bool cache_lead_or_wait(Exchange* ex, std::uint64_t hash);
// The leader's response was stored, or will not be, or it ended: waiters
// look again. Idempotent; a no-op for an exchange that does not lead.
void cache_flight_end(Exchange* ex) noexcept;
// exchange_put: out of the waiting list, and the end of a flight it led.
void cache_collapse_release(Exchange* ex) noexcept;

}  // namespace juggler
