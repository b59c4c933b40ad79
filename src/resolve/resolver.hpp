// The resolver thread of `server NAME:PORT resolve` lines (juggler/resolve.hpp
// says what it publishes). It is not a worker: it blocks in getaddrinfo, the
// system resolver, which follows nsswitch (/etc/hosts, then DNS, search
// domains and ndots as in Kubernetes pods) exactly as every other program on
// the host does. c-ares would not block, but nothing waits on this thread: one
// lookup per name per interval, off the request path, is not worth a second
// resolver configuration and a library; what getaddrinfo lacks is the TTL
// (the interval stands in for it) and a per-lookup timeout (resolv.conf's
// `timeout`/`attempts` bound it; a slow lookup delays the round, never a request).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "resolve/slots.hpp"

namespace juggler {

struct Routing;
struct Shared;

// The A and AAAA records of `name` (getaddrinfo, any order, duplicates
// possible), or false with getaddrinfo's error text.
bool system_lookup(const std::string& name, std::vector<SlotAddr>& out, std::string& error);

// An answer for resolve line `line` of r's table given to its slots
// (assign_slots): a new address is written into its slot before the slot is
// enabled, and starts its pool's slow start when `ramp` (not at start-up: a
// server up at start takes its full weight at once); a vanished one's slot
// is disabled (no new request; requests in flight finish; its idle
// connections close). Logs each change. Resolver thread (or start-up).
void apply_answer(Routing& r, std::size_t line, const std::vector<SlotAddr>& records, std::uint64_t now_ms,
                  bool ramp);

// Start-up: every resolve line looked up once. Throws std::runtime_error
// "routes.def:LINE: ..." when a name does not resolve, unless the line has
// init=none (then its slots stay empty, the pool answers 503 until it does).
void resolve_at_start(Routing& r);

// A reload: the resolve lines kept (same pool and name:port) take over the
// old table's lookup status (times, failures, records); their slots' addresses
// and versions come over with the rest of a kept server's state (reload.cpp
// carry_over). Call before the new table is published.
void resolve_carry_over(const Routing& from, Routing& to);

// Looks every name of the live table up again every `set resolve.interval`.
class Resolver {
 public:
  // Starts the thread (after resolve_at_start; it sleeps while no table has
  // resolve lines: a reload may bring some).
  explicit Resolver(Shared& shared);
  ~Resolver() { stop(); }
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Wakes and joins the thread (a lookup in progress finishes first).
  // Idempotent. Before a reloaded Routing can be freed (the Reloader's end).
  void stop();

 private:
  void run();
  const Routing* round();  // the Routing it looked up for (null: replaced meanwhile)
  Shared& shared_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

}  // namespace juggler
