#include "cache/collapse.hpp"

#include <algorithm>

#include "cache/cache.hpp"
#include "cache/probe.hpp"
#include "cache/store.hpp"

namespace juggler {

unsigned CacheFlights::find(std::uint64_t hash) const noexcept {
  for (unsigned i = 0; i < kProbes && hash; ++i) {
    const unsigned at = static_cast<unsigned>(hash + i) & (kSlots - 1);
    if (slots_[at].hash == hash) return at;
    if (slots_[at].hash == 0) break;
  }
  return kSlots;
}

bool CacheFlights::join(std::uint64_t hash, std::uint32_t worker) {
  std::lock_guard<std::mutex> lock(mu_);
  for (unsigned i = 0; i < kProbes && hash; ++i) {
    Slot& s = slots_[static_cast<unsigned>(hash + i) & (kSlots - 1)];
    if (s.hash == 0) {
      s = Slot{hash, 0};
      return true;
    }
    if (s.hash == hash) {
      s.waiting |= std::uint64_t{1} << std::min<std::uint32_t>(worker, 63);
      return false;
    }
  }
  return true;  // no room: leads untracked
}

void CacheFlights::end(std::uint64_t hash) {
  std::lock_guard<std::mutex> lock(mu_);
  unsigned hole = find(hash);
  if (hole == kSlots) return;
  const std::uint64_t waiting = slots_[hole].waiting;
  probe_erase(slots_.get(), kSlots - 1, hole, [](const Slot& s) { return s.hash != 0; },
              [](const Slot& s) { return static_cast<std::size_t>(s.hash) & (kSlots - 1); });
  for (std::size_t w = 0; waiting && w < wake_.size(); ++w)
    if ((waiting >> std::min<std::size_t>(w, 63)) & 1 && wake_[w]) uv_async_send(wake_[w]);
}

bool CacheFlights::active(std::uint64_t hash) const {
  std::lock_guard<std::mutex> lock(mu_);
  return find(hash) != kSlots;
}

bool CacheFlights::wait_again(std::uint64_t hash, std::uint32_t worker) {
  std::lock_guard<std::mutex> lock(mu_);
  const unsigned at = find(hash);
  if (at == kSlots) return false;
  slots_[at].waiting |= std::uint64_t{1} << std::min<std::uint32_t>(worker, 63);
  return true;
}

void CacheFlights::set_wake(std::uint32_t worker, uv_async_t* async) {
  std::lock_guard<std::mutex> lock(mu_);
  if (wake_.size() <= worker) wake_.resize(worker + 1, nullptr);
  wake_[worker] = async;
}

namespace {

void unlink(CacheWaits& q, Exchange* ex) noexcept {
  (ex->wait_prev ? ex->wait_prev->wait_next : q.head) = ex->wait_next;
  if (ex->wait_next) ex->wait_next->wait_prev = ex->wait_prev;
  ex->wait_next = ex->wait_prev = nullptr;
  ex->cache_waiting = false;
}

// A flight ended somewhere: the waiters whose key is no longer in flight
// look again (taken off the list first: a step may end the exchange). One
// whose key is in flight again (another worker's request led anew before
// this one woke) waits on the new flight, noted there.
void on_wake(uv_async_t* a) {
  Worker& w = *static_cast<Worker*>(a->data);
  CacheWaits& q = *w.cache_waits;
  CacheFlights& flights = *w.shared.cache_flights;
  Exchange* ready = nullptr;
  for (Exchange* ex = q.head; ex;) {
    Exchange* next = ex->wait_next;
    if (!flights.wait_again(ex->cache_hash, w.id)) {
      unlink(q, ex);
      ex->wait_next = ready;
      ready = ex;
    }
    ex = next;
  }
  while (ready) {
    Exchange* ex = ready;
    ready = ex->wait_next;
    ex->wait_next = nullptr;
    step(ex, Event::CacheReady);
  }
}

}  // namespace

void cache_worker_init(Worker& w) {
  if (!w.shared.cache_flights) return;
  w.cache_waits = std::make_unique<CacheWaits>();
  uv_async_init(&w.loop, &w.cache_waits->async, on_wake);
  w.cache_waits->async.data = &w;
  w.shared.cache_flights->set_wake(w.id, &w.cache_waits->async);
  // The admin listener's worker serves no cached route: no Redis connection.
  const auto& traffic = w.shared.workers;
  if (std::find(traffic.begin(), traffic.end(), &w) != traffic.end()) w.shared.cache->worker_start(&w.loop);
}

void cache_worker_done(Worker& w) {
  if (!w.cache_waits) return;
  w.shared.cache->worker_stop(&w.loop);
  w.shared.cache_flights->set_wake(w.id, nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&w.cache_waits->async), nullptr);
}

bool cache_lead_or_wait(Exchange* ex, std::uint64_t hash) {
  Worker& w = *ex->worker;
  if (!w.cache_waits) return true;
  ex->cache_hash = hash;
  if (w.shared.cache_flights->join(hash, w.id)) {
    ex->cache_leader = true;
    return true;
  }
  CacheWaits& q = *w.cache_waits;
  ex->wait_prev = nullptr;
  ex->wait_next = q.head;
  if (q.head) q.head->wait_prev = ex;
  q.head = ex;
  ex->cache_waiting = true;
  // Bounded: as long as the leader may wait for its server's answer.
  w.wheel.arm(&ex->timer, w.now_ms() + settings(w).upstream_timeout_ms);
  return false;
}

void cache_flight_end(Exchange* ex) noexcept {
  if (!ex->cache_leader) return;
  ex->cache_leader = false;
  ex->worker->shared.cache_flights->end(ex->cache_hash);
}

State state_cache_wait(Exchange* ex, Event ev, int arg) {
  switch (ev) {
    case Event::CacheReady:
    case Event::Timer:
      if (ex->cache_waiting) unlink(*ex->worker->cache_waits, ex);
      TimerWheel::disarm(&ex->timer);
      return cache_resume(ex);
    default:
      return on_other_event(ex, ev, arg, State::CacheWait);
  }
}

void cache_collapse_release(Exchange* ex) noexcept {
  if (ex->cache_waiting) unlink(*ex->worker->cache_waits, ex);
  cache_flight_end(ex);
}

}  // namespace juggler
