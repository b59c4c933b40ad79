// Picking a server of a pool. The strategy is the pool's compiled one; state
// that changes per pick (round-robin counters, the PRNGs) is per worker, what
// every worker must see (down, in-flight, latency, slow start) is in the
// process-wide ServerHealth atomics, so no lock is taken anywhere.
//
// The request path sends every strategy the same events and never asks which
// strategy a pool has (see docs/strategies.md for the behaviour):
//
//   balancer.begin(pool, head, ticket);          // once per request (mints a sticky cookie)
//   int s = balancer.pick(pool, head, tried, ticket.pick_context(client_ip, now_ms));
//   balancer.sent(ticket, s);                    // the request goes out to s
//   balancer.response(ticket, now_ms);           // first byte of the response
//   balancer.finish(ticket);                     // the attempt is over, however it ended
//   balancer.response_lines(ticket, out, cap);   // lines for the response head (Set-Cookie)
//
// and the health checker calls mark_down()/mark_up() on transitions.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
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

// Process-wide, per compiled server: what every worker must see. One cache
// line each, so that workers bumping one server's counters do not slow down
// the reads of its neighbours.
struct alignas(64) ServerHealth {
  std::atomic<bool> down{false};
  // A resolve slot (juggler/resolve.hpp) with no address now: out of every
  // pick, like `down`, until the resolver fills it. Written by the resolver.
  std::atomic<bool> unresolved{false};
  std::atomic<std::uint32_t> inflight{0};      // requests between on_start and on_finish, all workers
  std::atomic<std::uint64_t> up_since_ms{0};   // slow start: when it last came up; 0 = not ramping
  std::atomic<std::uint64_t> latency{0};       // least_time: packed peak-EWMA of TTFB; 0 = no sample yet
  // Passive health (see passive_failure): failures in the current window, and
  // an ejection that keeps the server out of every pick until it expires (or
  // the pool's active check ends it: end_ejection).
  std::atomic<std::uint32_t> fails{0};
  std::atomic<std::uint32_t> ejections{0};        // in a row; the back-off doubles with each
  std::atomic<std::uint64_t> fail_window_start_ms{0};
  std::atomic<std::uint64_t> ejected_until_ms{0};  // 0 = not ejected (or ended early)
  std::atomic<std::uint64_t> ejected_at_ms{0};     // when the latest ejection began (never 0 once set)
  std::atomic<bool> ejecting{false};               // held by the one worker making an ejection
  // Runtime control (the admin listener's POST /servers/...): a drained
  // server gets no new request (those in flight finish); a weight other than
  // 0 replaces the compiled one until restart. Written by the admin thread.
  std::atomic<bool> drained{false};
  std::atomic<std::uint16_t> weight{0};
};

// Passive health, called by the request path of any worker. A connection
// refused, reset or timed out (before any response byte) is a failure;
// `max_fails` of them within `fail_window` eject the server for a back-off of
// fail_window, doubling with each ejection in a row (at most 32x). Once the
// ejection expires the next request is the probe: one more failure ejects it
// again, a success (passive_success) clears the record; failures while it is
// ejected (requests sent before) do not count, and workers failing at the
// same moment make one ejection, not one each. In a pool with an
// active health check, `rise` passing checks that began after the ejection end
// it early (end_ejection, called by the checker). Returns true when this
// failure ejected the server (the caller logs it). max_fails=0 turns it off.
bool passive_failure(ServerHealth& h, const PoolDef& pool, std::uint64_t now_ms) noexcept;

// When the ejection in force at `now_ms` began (ejected_at_ms), or 0 when the
// server is not ejected at `now_ms`.
[[nodiscard]] inline std::uint64_t ejection_start(const ServerHealth& h, std::uint64_t now_ms) noexcept {
  // Acquire pairs with passive_failure's release: the start read below is
  // that of this ejection or of a newer one, never of an older one.
  if (h.ejected_until_ms.load(std::memory_order_acquire) <= now_ms) return 0;
  return h.ejected_at_ms.load(std::memory_order_relaxed);
}

// Ends the ejection that began at `ejected_at_ms` (ejection_start) before it
// expires and forgets the failures, so that the back-off starts over: the
// server is back in every pick at once. Lock-free. Returns false, touching
// nothing, when that ejection was already ended or a newer one replaced it; a
// newer ejection racing with this call at worst loses its back-off doubling.
// Called by the active checker (health.hpp).
bool end_ejection(ServerHealth& h, std::uint64_t ejected_at_ms) noexcept;
// A response arrived: forget past failures (a read when there are none).
inline void passive_success(ServerHealth& h) noexcept {
  if (h.fails.load(std::memory_order_relaxed) || h.ejections.load(std::memory_order_relaxed)) {
    h.fails.store(0, std::memory_order_relaxed);
    h.ejections.store(0, std::memory_order_relaxed);
  }
}

// A server's weight now: the admin's (ServerHealth::weight), else the
// compiled one. The picks and the admin pages both read it.
[[nodiscard]] inline std::uint16_t current_weight(const ServerHealth& h, const ServerDef& s) noexcept {
  const std::uint16_t set = h.weight.load(std::memory_order_relaxed);
  return set ? set : s.weight;
}

// Health transitions, called by whoever decides health (active checks, passive
// ejection), from any thread. `now_ms` is a CLOCK_MONOTONIC millisecond clock,
// the same the workers pass to pick() (uv_now() of any loop, or
// uv_hrtime() / 1000000). mark_up() starts the pool's slow-start ramp; call it
// on a down -> up transition only, not for servers that are up at start-up
// (those take their full weight at once).
void mark_down(ServerHealth& h) noexcept;
void mark_up(ServerHealth& h, std::uint64_t now_ms) noexcept;

// The least_time estimate of a server's time to first byte at `now_ms`, in
// microseconds (decayed toward zero while no sample arrives); 0 = no sample
// yet. For /metrics and the stats page.
[[nodiscard]] double ttfb_estimate_us(const ServerHealth& h, std::uint64_t now_ms) noexcept;

// ---------------------------------------------------------------- hashing

// A 64-bit hash of `s` (xxHash64's round and avalanche over a single lane).
// Stable across builds, processes and machines: consistent_hash tables and
// request keys are hashed with it, so two processes (an old and a new binary
// during a reload) send the same key to the same server.
[[nodiscard]] std::uint64_t hash64(std::string_view s, std::uint64_t seed = 0) noexcept;

// What consistent hashing knows a server by: its authority, and for a
// resolve slot its authority and slot ("api.internal:8080#2"), so the slots of
// one name own different keys (a slot keeps its address while the address
// stays in the answer: its keys stay with it).
[[nodiscard]] std::string server_key(const ServerDef& s);

// The value of cookie `name` (case-sensitive, as RFC 6265 says) in the
// request's Cookie header(s): every Cookie header is scanned, pairs are split
// on ';', blanks around names and values are ignored and a value in double
// quotes loses them. Empty when absent or empty.
[[nodiscard]] std::string_view cookie_value(const RequestHead& head, std::string_view name) noexcept;

// The value of parameter `name` in `query` ("a=1&b=2", without '?'), compared
// as raw bytes (no percent-decoding). Empty when absent, without '=' or empty.
[[nodiscard]] std::string_view query_value(std::string_view query, std::string_view name) noexcept;

// The consistent_hash key of `head` for pool `p` (key=ip uses `client_ip`).
// Empty when the pool does not hash or the request carries no such key.
// The view points into `head` (or is `client_ip`).
[[nodiscard]] std::string_view hash_key(const PoolDef& p, const RequestHead& head,
                                        std::string_view client_ip) noexcept;

// A Maglev lookup table (Eisenbud et al., NSDI 2016) over the servers of one
// tier (backup or not) of a pool. Each server owns slots in proportion to its
// weight; its permutation of the slots and the fill order are derived from its
// authority string, not its position, so the same set of servers gives the
// same table whatever the order of their lines. Removing or adding one of N
// servers moves about 1/N of the keys. Built at start-up (allocates); lookups
// do not.
class MaglevTable {
 public:
  // Prime table size used for `servers` servers: 65537 up to 655 servers,
  // else the first prime >= 100 * servers.
  [[nodiscard]] static std::uint32_t size_for(std::size_t servers) noexcept;

  MaglevTable() = default;
  // Over pool_servers[i] with pool_servers[i].backup == backup; entries are
  // positions i within `pool_servers`.
  MaglevTable(std::span<const ServerDef> pool_servers, bool backup);

  [[nodiscard]] bool empty() const noexcept { return slots_.empty(); }
  [[nodiscard]] std::uint32_t size() const noexcept { return static_cast<std::uint32_t>(slots_.size()); }
  // Position (within the pool) that owns hash `h`. Not on an empty table.
  [[nodiscard]] std::uint16_t lookup(std::uint64_t h) const noexcept { return slots_[h % slots_.size()]; }
  [[nodiscard]] const std::vector<std::uint16_t>& slots() const noexcept { return slots_; }

 private:
  std::vector<std::uint16_t> slots_;
};

// ---------------------------------------------------------------- randomness

// The ChaCha20 block function of RFC 8439 (2.3): 64 bytes of key stream.
void chacha20_block(const std::uint32_t key[8], std::uint32_t counter, const std::uint32_t nonce[3],
                    std::uint8_t out[64]) noexcept;

// ---------------------------------------------------------------- the balancer

// What pick() needs besides the pool and the head.
struct PickContext {
  std::string_view client_ip;      // key=ip: the client's address as text ("192.0.2.7", "2001:db8::1")
  std::string_view minted_cookie;  // key=cookie:NAME without that cookie: the value the caller will set
  std::uint64_t now_ms = 0;        // CLOCK_MONOTONIC ms (uv_now): slow start and least_time
};

// Weighted random choice among the servers of one tier of a pool (Vose's alias
// method): O(1) per draw. Internal to the balancer; public for its tests.
class AliasTable {
 public:
  AliasTable() = default;
  AliasTable(std::span<const ServerDef> pool_servers, bool backup);
  [[nodiscard]] bool empty() const noexcept { return self_.empty(); }
  // A position within the pool, drawn with probability weight / total weight,
  // from two uniform 64-bit numbers.
  [[nodiscard]] std::uint16_t sample(std::uint64_t r1, std::uint64_t r2) const noexcept;

 private:
  std::vector<std::uint64_t> keep_;  // per bucket: draws below this keep self_, the rest go to alias_
  std::vector<std::uint16_t> self_;
  std::vector<std::uint16_t> alias_;
  std::uint64_t total_ = 0;          // bucket capacity: the tier's total weight
};

// What the balancer keeps for one request between its events: owned by the
// exchange, reset with it (`= {}`), read by nothing else.
struct BalanceTicket {
  static constexpr std::size_t kCookieChars = 32;  // minted cookie values: 128 bits in lower-case hex
  std::int32_t pool = -1;
  std::int32_t started = -1;  // the server whose in-flight count sent() raised, until finish()
  std::int32_t sent_to = -1;  // the server of the current attempt
  std::uint64_t sent_us = 0;  // when the current attempt went out (least_time's TTFB)
  bool minted = false;        // `cookie` was minted for this request and is set on the response
  char cookie[kCookieChars];

  [[nodiscard]] std::string_view minted_cookie() const noexcept {
    return minted ? std::string_view(cookie, kCookieChars) : std::string_view();
  }
};

class Balancer {
 public:
  static constexpr std::size_t kCookieChars = BalanceTicket::kCookieChars;
  static constexpr double kLatencyDecayMs = 10000;  // least_time: EWMA time constant

  // `health` has one entry per compiled server and outlives the balancer.
  // `offset` (the worker's number) staggers the round-robin start so that N
  // workers do not all send their first request to the same server. Builds
  // the Maglev and alias tables of the pools (allocates; may throw).
  Balancer(const RouteTable& table, ServerHealth* health, std::uint32_t offset = 0);

  // The global index of the server to use for `head` in pool `pool`, skipping
  // servers that are down or in `tried`; backup servers only when no other
  // server is left. -1 when none is left. Allocation-free; O(servers) at most
  // for round_robin/least_conn, O(1) expected for random/least_time/
  // consistent_hash while most servers are up. Worker thread only.
  int pick(std::uint16_t pool, const RequestHead& head, const Tried& tried, const PickContext& ctx = {}) noexcept;

  // True when `pool` hashes on cookie:NAME and `head` carries no (non-empty)
  // NAME cookie: the caller mints a value (mint_cookie), passes it to every
  // pick() of this request as ctx.minted_cookie, and answers with
  // `Set-Cookie: NAME=VALUE; Path=/; HttpOnly` (NAME = pools[pool].key_name).
  [[nodiscard]] bool needs_cookie(std::uint16_t pool, const RequestHead& head) const noexcept;

  // Writes kCookieChars lower-case hex characters (no terminator) of a fresh
  // 128-bit random value into `out`: ChaCha20 keyed from getrandom(), per
  // worker, with the key replaced after every block (fast key erasure).
  void mint_cookie(char (&out)[kCookieChars]) noexcept;

  // ---- the request path's events (the same calls for every strategy)

  // A request for `pool` begins: the ticket is reset, and a sticky cookie is
  // minted when the pool hashes on a cookie the request lacks.
  void begin(std::uint16_t pool, const RequestHead& head, BalanceTicket& t) noexcept {
    finish(t);
    t.pool = pool;
    t.sent_to = -1;
    t.minted = false;
    if (events_[pool] & kMayMint) begin_sticky(pool, head, t);
  }
  // The attempt goes out to `server`: counted in flight where the pool's
  // strategy reads it, and timed (the clock read only then) where it learns
  // from latency. The *_at variants take the clock's reading (tests).
  void sent(BalanceTicket& t, int server) noexcept { sent_at(t, server, learns(t) ? clock_us() : 0); }
  void sent_at(BalanceTicket& t, int server, std::uint64_t now_us) noexcept {
    finish(t);
    t.sent_to = server;
    t.sent_us = now_us;
    if (t.pool >= 0 && (events_[static_cast<std::size_t>(t.pool)] & kCountsInflight)) {
      on_start(server);
      t.started = server;
    }
  }
  // The first byte of the response arrived for the attempt sent().
  void response(BalanceTicket& t, std::uint64_t now_ms) noexcept {
    if (t.sent_to >= 0 && learns(t)) on_response(t.sent_to, clock_us() - t.sent_us, now_ms);
  }
  void response_at(BalanceTicket& t, std::uint64_t now_us, std::uint64_t now_ms) noexcept {
    if (t.sent_to >= 0 && learns(t)) on_response(t.sent_to, now_us - t.sent_us, now_ms);
  }
  // The attempt is over (any outcome); idempotent, harmless without sent().
  void finish(BalanceTicket& t) noexcept {
    if (t.started >= 0) on_finish(t.started);
    t.started = -1;
  }
  // Whole header lines the response to this request must carry (the minted
  // cookie's Set-Cookie), written into [out, out+cap); returns their length
  // (0 when none; cut at `cap`).
  std::size_t response_lines(const BalanceTicket& t, char* out, std::size_t cap) const noexcept;

  // ---- bookkeeping below the events (public for the strategies' tests)
  // Any strategy (least_conn, random and least_time read it). on_start when a request is sent to `server`,
  // on_finish exactly once per on_start when that exchange ends, however it
  // ends. on_response when its first response byte arrives, `ttfb_us` after
  // the request was sent.
  void on_start(int server) noexcept { health_[server].inflight.fetch_add(1, std::memory_order_relaxed); }
  void on_finish(int server) noexcept { health_[server].inflight.fetch_sub(1, std::memory_order_relaxed); }
  void on_response(int server, std::uint64_t ttfb_us, std::uint64_t now_ms) noexcept;

 private:
  struct PoolTables {
    MaglevTable hash[2];   // consistent_hash: [0] the servers, [1] the backups
    AliasTable random[2];  // random, least_time
  };

  // Per pool: the events its strategy acts on (the request path calls them
  // all; these bits keep the calls a pool ignores to a test and a jump).
  static constexpr std::uint8_t kCountsInflight = 1, kLearnsLatency = 2, kMayMint = 4;
  std::vector<std::uint8_t> events_;
  void begin_sticky(std::uint16_t pool, const RequestHead& head, BalanceTicket& t) noexcept;
  bool learns(const BalanceTicket& t) const noexcept {
    return t.pool >= 0 && (events_[static_cast<std::size_t>(t.pool)] & kLearnsLatency);
  }
  static std::uint64_t clock_us() noexcept;  // CLOCK_MONOTONIC, as uv_hrtime() / 1000

  std::uint64_t pick_now_ms_ = 0;  // the current pick's clock, for usable()
  int round_robin(const PoolDef& p, const Tried& tried, bool backup, std::uint64_t now_ms) noexcept;
  int least_conn(const PoolDef& p, const Tried& tried, bool backup, std::uint64_t now_ms) noexcept;
  int two_choices(const PoolDef& p, const AliasTable& a, const Tried& tried, bool backup, bool by_latency,
                  std::uint64_t now_ms) noexcept;
  int draw(const PoolDef& p, const AliasTable& a, const Tried& tried, bool backup, int exclude,
           std::uint64_t now_ms) noexcept;
  int hashed(const PoolDef& p, const MaglevTable& m, std::uint64_t key, const Tried& tried, bool backup,
             std::uint64_t now_ms) const noexcept;
  bool usable(const PoolDef& p, std::uint32_t pos, const Tried& tried) const noexcept;
  std::uint32_t ramp_permille(const PoolDef& p, std::uint32_t server, std::uint64_t now_ms) const noexcept;
  std::uint64_t effective_weight(const PoolDef& p, std::uint32_t server, std::uint64_t now_ms) const noexcept;
  std::uint16_t weight(std::uint32_t server) const noexcept;
  std::uint64_t next_random() noexcept;

  const RouteTable& table_;
  ServerHealth* health_;
  std::vector<std::int64_t> current_;       // smooth WRR state, per server
  std::vector<std::uint64_t> server_hash_;  // hash64(authority), per server
  std::vector<PoolTables> pools_;
  std::uint64_t rng_;                       // splitmix64 state: strategy choices
  std::uint32_t cookie_key_[8];             // ChaCha20 key: minted cookies
  std::uint8_t cookie_buf_[32];             // unused key stream
  std::uint32_t cookie_left_ = 0;           // bytes left at the end of cookie_buf_
};

}  // namespace juggler
