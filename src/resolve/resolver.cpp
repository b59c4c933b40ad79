// The resolver thread and what it does to the slots (resolver.hpp).
#include "resolve/resolver.hpp"

#include <netdb.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "juggler/log.hpp"
#include "juggler/worker.hpp"

namespace juggler {

namespace {

std::uint64_t mono_ms() noexcept { return uv_hrtime() / 1000000; }

std::uint64_t wall_ms() noexcept {
  using namespace std::chrono;
  return static_cast<std::uint64_t>(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

// The slots of line `rd` as the workers see them now.
std::vector<std::optional<SlotAddr>> current_slots(const Routing& r, const ResolveDef& rd) {
  std::vector<std::optional<SlotAddr>> cur(rd.slots);
  for (std::size_t k = 0; k < rd.slots; ++k) {
    const std::size_t s = rd.first_server + k;
    if (r.health[s].unresolved.load(std::memory_order_relaxed)) continue;
    sockaddr_storage ss;
    r.slot_addr[s].load(ss);
    SlotAddr a;
    if (slot_addr_from(reinterpret_cast<const sockaddr*>(&ss), a)) cur[k] = a;
  }
  return cur;
}

// A lookup's outcome recorded; a failure logged once per outage.
void record(Routing& r, std::size_t line, bool ok, std::size_t records, const std::string& error) {
  const ResolveDef& rd = r.table->resolves[line];
  ResolveStatus& st = r.resolve_status[line];
  const std::uint64_t now = wall_ms();
  st.last_try_ms.store(now, std::memory_order_relaxed);
  const std::uint32_t failing = st.failing.load(std::memory_order_relaxed);
  if (ok) {
    st.last_ok_ms.store(now, std::memory_order_relaxed);
    st.records.store(static_cast<std::uint32_t>(records), std::memory_order_relaxed);
    st.failing.store(0, std::memory_order_relaxed);
    if (failing)
      log(LogLevel::Info, "%s:%u: %.*s resolves again (%u lookup%s failed)", std::string(r.table->source).c_str(),
          rd.line, static_cast<int>(rd.name.size()), rd.name.data(), failing, failing == 1 ? "" : "s");
    return;
  }
  st.failing.store(failing + 1, std::memory_order_relaxed);
  if (failing == 0)
    log(LogLevel::Warn, "%s:%u: lookup of %.*s failed: %s; keeping its last answer until it resolves again",
        std::string(r.table->source).c_str(), rd.line, static_cast<int>(rd.name.size()), rd.name.data(),
        error.c_str());
}

}  // namespace

bool system_lookup(const std::string& name, std::vector<SlotAddr>& out, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(name.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    error = gai_strerror(rc);
    return false;
  }
  out.clear();
  for (const addrinfo* ai = res; ai; ai = ai->ai_next) {
    SlotAddr a;
    if (ai->ai_addr && slot_addr_from(ai->ai_addr, a)) out.push_back(a);
  }
  freeaddrinfo(res);
  if (out.empty()) {
    error = "no IPv4 or IPv6 address";
    return false;
  }
  return true;
}

void apply_answer(Routing& r, std::size_t line, const std::vector<SlotAddr>& records, std::uint64_t now_ms,
                  bool ramp) {
  const ResolveDef& rd = r.table->resolves[line];
  const PoolDef& pool = r.table->pools[rd.pool];
  const auto cur = current_slots(r, rd);
  std::size_t left_out = 0;
  const auto next = assign_slots(cur, records, &left_out);
  const std::string where = std::string(r.table->source) + ":" + std::to_string(rd.line) + ": " +
                            std::string(rd.name) + ":" + std::to_string(rd.port);
  for (std::size_t k = 0; k < next.size(); ++k) {
    if (next[k] == cur[k]) continue;
    const std::size_t s = rd.first_server + k;
    ServerHealth& h = r.health[s];
    if (!next[k]) {
      // Out of the picks from now on; the connections to it close as they
      // come back idle (server_moved).
      h.unresolved.store(true, std::memory_order_release);
      log(LogLevel::Info, "%s: slot %zu: %s gone", where.c_str(), k + 1, slot_addr_text(*cur[k]).c_str());
      continue;
    }
    // A new address is a new server: nothing of the old one's record counts.
    constexpr auto rx = std::memory_order_relaxed;
    h.latency.store(0, rx);
    h.fails.store(0, rx);
    h.ejections.store(0, rx);
    h.ejected_until_ms.store(0, rx);
    h.down.store(false, rx);
    h.up_since_ms.store(ramp && pool.slow_start_ms ? (now_ms ? now_ms : 1) : 0, rx);
    r.slot_addr[s].store(slot_sockaddr(*next[k], rd.port));
    h.unresolved.store(false, std::memory_order_release);
    log(LogLevel::Info, "%s: slot %zu: %s%s", where.c_str(), k + 1, slot_addr_text(*next[k]).c_str(),
        cur[k] ? (" (was " + slot_addr_text(*cur[k]) + ")").c_str() : "");
  }
  if (left_out)
    log(LogLevel::Warn, "%s: %zu address%s left out: more records than its %u slots (slots=N)", where.c_str(),
        left_out, left_out == 1 ? "" : "es", rd.slots);
}

void resolve_at_start(Routing& r) {
  const RouteTable& t = *r.table;
  for (std::size_t i = 0; i < t.resolves.size(); ++i) {
    const ResolveDef& rd = t.resolves[i];
    std::vector<SlotAddr> found;
    std::string error;
    const bool ok = system_lookup(std::string(rd.name), found, error);
    if (!ok && !rd.init_none)
      throw std::runtime_error(std::string(t.source) + ":" + std::to_string(rd.line) + ": server " +
                               std::string(rd.name) + ":" + std::to_string(rd.port) + " resolve: " +
                               std::string(rd.name) + " does not resolve (" + error +
                               "); add init=none to start without it");
    record(r, i, ok, found.size(), error);
    if (ok) apply_answer(r, i, found, mono_ms(), false);
  }
}

void resolve_carry_over(const Routing& from, Routing& to) {
  const RouteTable& a = *from.table;
  const RouteTable& b = *to.table;
  for (std::size_t j = 0; j < b.resolves.size(); ++j)
    for (std::size_t i = 0; i < a.resolves.size(); ++i) {
      const ResolveDef &x = a.resolves[i], &y = b.resolves[j];
      if (x.name != y.name || x.port != y.port || a.pools[x.pool].name != b.pools[y.pool].name) continue;
      constexpr auto rx = std::memory_order_relaxed;
      const ResolveStatus& o = from.resolve_status[i];
      ResolveStatus& n = to.resolve_status[j];
      n.last_ok_ms.store(o.last_ok_ms.load(rx), rx);
      n.last_try_ms.store(o.last_try_ms.load(rx), rx);
      n.failing.store(o.failing.load(rx), rx);
      n.records.store(o.records.load(rx), rx);
    }
}

// ---------------------------------------------------------------- the thread

Resolver::Resolver(Shared& shared) : shared_(shared) { thread_ = std::thread([this] { run(); }); }

void Resolver::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Resolver::run() {
  // `set resolve.interval` cannot change by a reload (a setting): the first table's.
  const auto interval = std::chrono::milliseconds(shared_.first->table->settings.resolve_interval_ms);
  // A reloaded table is looked up within a tick of its swap (its new lines'
  // slots are empty until then), not an interval later.
  const auto tick = std::min(interval, std::chrono::milliseconds(1000));
  auto next = std::chrono::steady_clock::now() + interval;
  const Routing* seen = shared_.first.get();
  std::unique_lock<std::mutex> g(mu_);
  while (!cv_.wait_for(g, tick, [this] { return stop_; })) {
    const Routing* live = shared_.live.load(std::memory_order_acquire);
    if (!live) live = shared_.first.get();
    if (live == seen && std::chrono::steady_clock::now() < next) continue;
    g.unlock();
    seen = round();
    g.lock();
    next = std::chrono::steady_clock::now() + interval;
  }
}

const Routing* Resolver::round() {
  struct Line {
    std::string name;
    bool ok = false;
    std::vector<SlotAddr> found;
    std::string error;
  };
  // The names are copied under the lock (a reloaded table's strings live in
  // its shared object); the lookups run without it (the admin pages take it).
  Routing* r;
  std::vector<Line> lines;
  {
    std::lock_guard<std::mutex> g(shared_.reload_lock);
    Routing* live = shared_.live.load(std::memory_order_acquire);
    r = live ? live : shared_.first.get();
    for (const ResolveDef& rd : r->table->resolves) lines.push_back({std::string(rd.name), false, {}, {}});
  }
  for (Line& l : lines) l.ok = system_lookup(l.name, l.found, l.error);
  std::lock_guard<std::mutex> g(shared_.reload_lock);
  Routing* live = shared_.live.load(std::memory_order_acquire);
  if ((live ? live : shared_.first.get()) != r) return nullptr;  // reloaded meanwhile: looked up at the next tick
  const std::uint64_t now = mono_ms();
  for (std::size_t i = 0; i < lines.size(); ++i) {
    record(*r, i, lines[i].ok, lines[i].found.size(), lines[i].error);
    if (lines[i].ok) apply_answer(*r, i, lines[i].found, now, true);
  }
  return r;
}

}  // namespace juggler
