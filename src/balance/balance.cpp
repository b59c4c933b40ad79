// The strategies: smooth weighted round-robin, least connections, power of two
// choices (random, least_time), Maglev consistent hashing; slow start and the
// health and latency bookkeeping they read.
#include <sys/random.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <system_error>

#include "juggler/balance.hpp"

namespace juggler {

namespace {

constexpr std::uint32_t kFullPermille = 1000;
constexpr std::uint32_t kRampStartPermille = 100;  // a server coming up starts at 10% of its weight
constexpr int kDraws = 16;       // weighted draws before a random pick scans the pool
constexpr int kProbes = 8;       // Maglev look-ups before a hashed pick scans the pool
constexpr double kUnknownPenaltyUs = 1e12;  // least_time: a server without a sample, already busy

// splitmix64's finalizer: a bijective 64-bit mix.
constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::uint64_t below(std::uint64_t r, std::uint64_t n) noexcept {
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(r) * n) >> 64);
}

// ServerHealth::latency packs the peak-EWMA in one word so that workers update
// it with a CAS and no lock: the high 32 bits are the ms clock of the last
// sample (mod 2^32), the low 32 the estimate in µs as a float (24 bits of
// mantissa keep the small steps of a 10 s time constant). 0 = no sample.
constexpr std::uint64_t pack_latency(float us, std::uint64_t now_ms) noexcept {
  return static_cast<std::uint64_t>(static_cast<std::uint32_t>(now_ms)) << 32 | std::bit_cast<std::uint32_t>(us);
}
constexpr float latency_value(std::uint64_t word) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(word));
}

// Milliseconds from the stamp of `word` to `now_ms`. Workers' clocks are read
// at different moments, so a stamp may be a little ahead of `now_ms`: up to a
// minute ahead counts as no time at all.
double since_ms(std::uint64_t word, std::uint64_t now_ms) noexcept {
  const std::uint32_t d = static_cast<std::uint32_t>(now_ms) - static_cast<std::uint32_t>(word >> 32);
  return d > 0xFFFFFFFFu - 60000u ? 0.0 : static_cast<double>(d);
}

void fill_random(void* out, std::size_t n) {
  auto* p = static_cast<unsigned char*>(out);
  while (n > 0) {
    const ssize_t got = getrandom(p, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "getrandom");
    }
    p += got;
    n -= static_cast<std::size_t>(got);
  }
}

}  // namespace

// ---------------------------------------------------------------- health hooks

void mark_down(ServerHealth& h) noexcept { h.down.store(true, std::memory_order_release); }

void mark_up(ServerHealth& h, std::uint64_t now_ms) noexcept {
  h.up_since_ms.store(now_ms ? now_ms : 1, std::memory_order_relaxed);
  h.down.store(false, std::memory_order_release);
}

double ttfb_estimate_us(const ServerHealth& h, std::uint64_t now_ms) noexcept {
  const std::uint64_t word = h.latency.load(std::memory_order_relaxed);
  if (word == 0) return 0;
  return latency_value(word) * std::exp(-since_ms(word, now_ms) / Balancer::kLatencyDecayMs);
}

// Peak-EWMA (Finagle's): a slower sample replaces the estimate at once, a
// faster one pulls it down with weight 1 - e^(-elapsed/τ); reads decay it
// toward zero (ttfb_estimate_us), so a server that lost its traffic for being
// slow is tried again after a while and its next sample says whether it
// recovered.
void Balancer::on_response(int server, std::uint64_t ttfb_us, std::uint64_t now_ms) noexcept {
  std::atomic<std::uint64_t>& a = health_[server].latency;
  const double rtt = ttfb_us ? static_cast<double>(ttfb_us) : 1.0;
  std::uint64_t old = a.load(std::memory_order_relaxed);
  std::uint64_t word;
  do {
    double next = rtt;
    if (old != 0) {
      const double cost = latency_value(old);
      const double w = std::exp(-since_ms(old, now_ms) / kLatencyDecayMs);
      if (rtt <= cost) next = cost * w + rtt * (1 - w);
    }
    word = pack_latency(static_cast<float>(std::max(next, 1.0)), now_ms);
  } while (!a.compare_exchange_weak(old, word, std::memory_order_relaxed));
}

// ---------------------------------------------------------------- construction

Balancer::Balancer(const RouteTable& table, ServerHealth* health, std::uint32_t offset)
    : table_(table), health_(health), current_(table.servers.size(), 0) {
  server_hash_.reserve(table.servers.size());
  for (const ServerDef& s : table.servers) server_hash_.push_back(hash64(server_key(s)));
  pools_.resize(table.pools.size());
  events_.resize(table.pools.size());
  for (std::size_t i = 0; i < table.pools.size(); ++i) {
    const PoolDef& p = table.pools[i];
    // Which events this pool's strategy acts on.
    const bool inflight = p.strategy == Strategy::LeastConn || p.strategy == Strategy::Random ||
                          p.strategy == Strategy::LeastTime;
    events_[i] = static_cast<std::uint8_t>((inflight ? kCountsInflight : 0) |
                                           (p.strategy == Strategy::LeastTime ? kLearnsLatency : 0) |
                                           (p.key == HashKey::Cookie ? kMayMint : 0));
    const auto servers = table.servers.subspan(p.first_server, p.server_count);
    for (int tier = 0; tier < 2; ++tier) {
      if (p.strategy == Strategy::ConsistentHash) pools_[i].hash[tier] = MaglevTable(servers, tier == 1);
      if (p.strategy == Strategy::Random || p.strategy == Strategy::LeastTime)
        pools_[i].random[tier] = AliasTable(servers, tier == 1);
    }
  }

  std::uint64_t seed;
  fill_random(&seed, sizeof seed);
  rng_ = seed ^ mix64(offset + 1);
  fill_random(cookie_key_, sizeof cookie_key_);

  const Tried none;
  for (const PoolDef& p : table.pools)
    for (std::uint32_t i = 0; i < offset % (p.server_count ? p.server_count : 1); ++i) round_robin(p, none, false, 0);
}

// ---------------------------------------------------------------- helpers

std::uint64_t Balancer::next_random() noexcept {
  rng_ += 0x9E3779B97F4A7C15ULL;
  return mix64(rng_);
}

bool Balancer::usable(const PoolDef& p, std::uint32_t pos, const Tried& tried) const noexcept {
  const ServerHealth& h = health_[p.first_server + pos];
  return !tried.has(pos) && !h.down.load(std::memory_order_relaxed) && !h.unresolved.load(std::memory_order_relaxed) &&
         !h.drained.load(std::memory_order_relaxed) && h.ejected_until_ms.load(std::memory_order_relaxed) <= pick_now_ms_;
}

bool passive_failure(ServerHealth& h, const PoolDef& pool, std::uint64_t now_ms) noexcept {
  if (pool.max_fails == 0) return false;
  // Requests sent before the ejection that fail while it stands say nothing
  // new: counted, they would eject it again at twice the back-off.
  if (h.ejected_until_ms.load(std::memory_order_acquire) > now_ms) return false;
  std::uint32_t n;
  if (now_ms - h.fail_window_start_ms.load(std::memory_order_relaxed) > pool.fail_window_ms) {
    h.fail_window_start_ms.store(now_ms, std::memory_order_relaxed);
    h.fails.store(1, std::memory_order_relaxed);
    n = 1;
  } else {
    n = h.fails.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  const bool probe_failed = h.ejections.load(std::memory_order_relaxed) > 0 &&
                            now_ms >= h.ejected_until_ms.load(std::memory_order_relaxed);
  if (n < pool.max_fails && !probe_failed) return false;
  // One ejection per crossing: workers that cross the threshold at the same
  // moment would each double the back-off. The loser of the flag, or whoever
  // finds the ejection already made, leaves it alone.
  if (h.ejecting.exchange(true, std::memory_order_acquire)) return false;
  if (h.ejected_until_ms.load(std::memory_order_relaxed) > now_ms) {
    h.ejecting.store(false, std::memory_order_release);
    return false;
  }
  const std::uint32_t e = std::min<std::uint32_t>(h.ejections.fetch_add(1, std::memory_order_relaxed) + 1, 6);
  const std::uint64_t backoff = static_cast<std::uint64_t>(pool.fail_window_ms) << (e - 1);
  // The start first, published by the release: whoever sees this ejection
  // (ejection_start) sees its start too.
  h.ejected_at_ms.store(now_ms ? now_ms : 1, std::memory_order_relaxed);
  h.ejected_until_ms.store(now_ms + backoff, std::memory_order_release);
  h.fails.store(0, std::memory_order_relaxed);
  h.fail_window_start_ms.store(now_ms, std::memory_order_relaxed);
  h.ejecting.store(false, std::memory_order_release);
  return true;
}

bool end_ejection(ServerHealth& h, std::uint64_t ejected_at_ms) noexcept {
  std::uint64_t until = h.ejected_until_ms.load(std::memory_order_acquire);
  if (until == 0 || h.ejected_at_ms.load(std::memory_order_relaxed) != ejected_at_ms) return false;
  // A worker that ejects it again meanwhile moves ejected_until_ms: then the
  // exchange fails and the new ejection stands.
  if (!h.ejected_until_ms.compare_exchange_strong(until, 0, std::memory_order_relaxed)) return false;
  h.fails.store(0, std::memory_order_relaxed);
  h.ejections.store(0, std::memory_order_relaxed);
  return true;
}

// Slow start: the share of its weight a server that came up `elapsed` ago
// gets, rising linearly from 10% to 100% over the pool's slow_start.
std::uint32_t Balancer::ramp_permille(const PoolDef& p, std::uint32_t server, std::uint64_t now_ms) const noexcept {
  if (p.slow_start_ms == 0) return kFullPermille;
  const std::uint64_t up = health_[server].up_since_ms.load(std::memory_order_relaxed);
  if (up == 0) return kFullPermille;
  if (now_ms <= up) return kRampStartPermille;
  const std::uint64_t elapsed = now_ms - up;
  if (elapsed >= p.slow_start_ms) return kFullPermille;
  return kRampStartPermille +
         static_cast<std::uint32_t>((kFullPermille - kRampStartPermille) * elapsed / p.slow_start_ms);
}

// The weight (the admin's, else the compiled one), never 0. Inline (both):
// round_robin calls them for every server of every pick, and a call each cost
// more than the rest of the admin's weight control.
inline std::uint16_t Balancer::weight(std::uint32_t server) const noexcept {
  return std::max<std::uint16_t>(current_weight(health_[server], table_.servers[server]), 1);
}

// The weight in thousandths: weight × ramp. Never 0.
inline std::uint64_t Balancer::effective_weight(const PoolDef& p, std::uint32_t server, std::uint64_t now_ms) const noexcept {
  return std::uint64_t{weight(server)} * ramp_permille(p, server, now_ms);
}

// ---------------------------------------------------------------- strategies

// Smooth weighted round-robin (nginx's): every eligible server gains its
// weight, the richest is picked and pays the total. Weights 5,1,1 give
// a a b a c a a, not a a a a a b c.
int Balancer::round_robin(const PoolDef& p, const Tried& tried, bool backup, std::uint64_t now_ms) noexcept {
  int best = -1;
  std::int64_t total = 0;
  for (std::uint32_t i = 0; i < p.server_count; ++i) {
    const std::uint32_t s = p.first_server + i;
    if (table_.servers[s].backup != backup || !usable(p, i, tried)) continue;
    const auto w = static_cast<std::int64_t>(effective_weight(p, s, now_ms));
    current_[s] += w;
    total += w;
    if (best < 0 || current_[s] > current_[best]) best = static_cast<int>(s);
  }
  if (best >= 0) current_[best] -= total;
  return best;
}

// Fewest in-flight requests per unit of weight (all workers' requests); the
// servers tied for fewest share by smooth weighted round-robin, so sequential
// traffic (nothing in flight) still follows the weights.
int Balancer::least_conn(const PoolDef& p, const Tried& tried, bool backup, std::uint64_t now_ms) noexcept {
  int best = -1;
  std::uint64_t best_load = 0, best_weight = 1;
  for (std::uint32_t i = 0; i < p.server_count; ++i) {
    const std::uint32_t s = p.first_server + i;
    if (table_.servers[s].backup != backup || !usable(p, i, tried)) continue;
    const std::uint64_t load = health_[s].inflight.load(std::memory_order_relaxed);
    const std::uint64_t w = effective_weight(p, s, now_ms);
    if (best < 0 || load * best_weight < best_load * w) {
      best = static_cast<int>(s);
      best_load = load;
      best_weight = w;
    }
  }
  if (best < 0) return -1;
  // Second pass: round-robin among the servers at the lowest ratio. Counters
  // move under us; one that rose since is left out, and if all did, `best`.
  int pick = -1;
  std::int64_t total = 0;
  for (std::uint32_t i = 0; i < p.server_count; ++i) {
    const std::uint32_t s = p.first_server + i;
    if (table_.servers[s].backup != backup || !usable(p, i, tried)) continue;
    const std::uint64_t load = health_[s].inflight.load(std::memory_order_relaxed);
    const std::uint64_t w = effective_weight(p, s, now_ms);
    if (load * best_weight > best_load * w) continue;
    current_[s] += static_cast<std::int64_t>(w);
    total += static_cast<std::int64_t>(w);
    if (pick < 0 || current_[s] > current_[pick]) pick = static_cast<int>(s);
  }
  if (pick < 0) return best;
  current_[pick] -= total;
  return pick;
}

// One eligible server of the tier, drawn with probability proportional to its
// effective weight, other than `exclude`: rejection sampling from the static
// weights (slow start by accepting with probability ramp), which is O(1) while
// most servers are eligible, then a weighted scan.
int Balancer::draw(const PoolDef& p, const AliasTable& a, const Tried& tried, bool backup, int exclude,
                   std::uint64_t now_ms) noexcept {
  for (int k = 0; k < kDraws; ++k) {
    const std::uint32_t pos = a.sample(next_random(), next_random());
    const std::uint32_t s = p.first_server + pos;
    if (static_cast<int>(s) == exclude || !usable(p, pos, tried)) continue;
    const std::uint32_t ramp = ramp_permille(p, s, now_ms);
    if (ramp < kFullPermille && below(next_random(), kFullPermille) >= ramp) continue;
    return static_cast<int>(s);
  }
  std::uint64_t total = 0;
  for (std::uint32_t i = 0; i < p.server_count; ++i) {
    const std::uint32_t s = p.first_server + i;
    if (table_.servers[s].backup == backup && static_cast<int>(s) != exclude && usable(p, i, tried))
      total += effective_weight(p, s, now_ms);
  }
  if (total == 0) return -1;
  std::uint64_t r = below(next_random(), total);
  for (std::uint32_t i = 0; i < p.server_count; ++i) {
    const std::uint32_t s = p.first_server + i;
    if (table_.servers[s].backup != backup || static_cast<int>(s) == exclude || !usable(p, i, tried)) continue;
    const std::uint64_t w = effective_weight(p, s, now_ms);
    if (r < w) return static_cast<int>(s);
    r -= w;
  }
  return -1;  // counters moved between the passes: the caller treats it as none left
}

// Power of two choices: two distinct servers drawn by weight, the less loaded
// wins. random: load = in-flight / weight. least_time: load = TTFB estimate ×
// (in-flight + 1) / weight, where a server with no sample yet costs nothing
// while idle (so it gets probed) and a prohibitive amount while busy (so it
// gets one request at a time until it answers).
int Balancer::two_choices(const PoolDef& p, const AliasTable& a, const Tried& tried, bool backup, bool by_latency,
                          std::uint64_t now_ms) noexcept {
  if (a.empty()) return -1;
  const int x = draw(p, a, tried, backup, -1, now_ms);
  if (x < 0) return -1;
  const int y = draw(p, a, tried, backup, x, now_ms);
  if (y < 0) return x;
  const auto sx = static_cast<std::uint32_t>(x), sy = static_cast<std::uint32_t>(y);
  const std::uint64_t ix = health_[sx].inflight.load(std::memory_order_relaxed);
  const std::uint64_t iy = health_[sy].inflight.load(std::memory_order_relaxed);
  const std::uint64_t wx = effective_weight(p, sx, now_ms), wy = effective_weight(p, sy, now_ms);
  if (!by_latency) return iy * wx < ix * wy ? y : x;
  auto cost = [&](std::uint32_t s, std::uint64_t inflight, std::uint64_t w) {
    double t = ttfb_estimate_us(health_[s], now_ms);
    if (t == 0) t = inflight ? kUnknownPenaltyUs : 0;
    return t * static_cast<double>(inflight + 1) / static_cast<double>(w);
  };
  return cost(sy, iy, wy) < cost(sx, ix, wx) ? y : x;
}

// Maglev look-up of `key` in the tier's table. A server that is down or tried
// (or, in slow start, not yet admitting this key) sends the key to the server
// of a second look-up with a re-mixed hash, then a third, ...: keys of healthy
// servers never move, the keys of a failed one spread over the others by
// weight, and come back when it recovers. After kProbes misses (most servers
// unusable), weighted rendezvous hashing over what is left.
int Balancer::hashed(const PoolDef& p, const MaglevTable& m, std::uint64_t key, const Tried& tried, bool backup,
                     std::uint64_t now_ms) const noexcept {
  if (m.empty()) return -1;
  std::uint64_t h = key;
  for (int i = 0; i < kProbes; ++i) {
    const std::uint32_t pos = m.lookup(h);
    const std::uint32_t s = p.first_server + pos;
    if (usable(p, pos, tried)) {
      // A ramping server takes the keys whose own draw falls under its ramp:
      // the same keys, more of them as the ramp rises, none lost on the way.
      const std::uint32_t ramp = ramp_permille(p, s, now_ms);
      if (ramp >= kFullPermille || mix64(key ^ server_hash_[s]) % kFullPermille < ramp) return static_cast<int>(s);
    }
    h = mix64(key + 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(i + 1));
  }
  int best = -1;
  double best_score = 0;
  for (std::uint32_t i = 0; i < p.server_count; ++i) {
    const std::uint32_t s = p.first_server + i;
    if (table_.servers[s].backup != backup || !usable(p, i, tried)) continue;
    const double u = (static_cast<double>(mix64(key ^ server_hash_[s]) >> 11) + 0.5) * 0x1p-53;
    const double score = static_cast<double>(std::max<std::uint16_t>(table_.servers[s].weight, 1)) / -std::log(u);
    if (best < 0 || score > best_score) {
      best = static_cast<int>(s);
      best_score = score;
    }
  }
  return best;
}

// ---------------------------------------------------------------- the request path

int Balancer::pick(std::uint16_t pool, const RequestHead& head, const Tried& tried, const PickContext& ctx) noexcept {
  const PoolDef& p = table_.pools[pool];
  pick_now_ms_ = ctx.now_ms;
  const PoolTables& t = pools_[pool];
  std::uint64_t key = 0;
  bool keyed = false;
  if (p.strategy == Strategy::ConsistentHash) {
    std::string_view k = hash_key(p, head, ctx.client_ip);
    if (k.empty() && p.key == HashKey::Cookie) k = ctx.minted_cookie;
    if (!k.empty()) {
      key = hash64(k);
      keyed = true;
    }
  }
  for (int tier = 0; tier < 2; ++tier) {
    const bool backup = tier == 1;
    int s = -1;
    switch (p.strategy) {
      case Strategy::RoundRobin: s = round_robin(p, tried, backup, ctx.now_ms); break;
      case Strategy::LeastConn: s = least_conn(p, tried, backup, ctx.now_ms); break;
      case Strategy::Random: s = two_choices(p, t.random[tier], tried, backup, false, ctx.now_ms); break;
      case Strategy::LeastTime: s = two_choices(p, t.random[tier], tried, backup, true, ctx.now_ms); break;
      case Strategy::ConsistentHash:
        s = keyed ? hashed(p, t.hash[tier], key, tried, backup, ctx.now_ms) : round_robin(p, tried, backup, ctx.now_ms);
        break;
    }
    if (s >= 0) return s;
  }
  return -1;
}

void Balancer::begin_sticky(std::uint16_t pool, const RequestHead& head, BalanceTicket& t) noexcept {
  t.minted = needs_cookie(pool, head);
  if (t.minted) mint_cookie(t.cookie);
}

std::uint64_t Balancer::clock_us() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000u + static_cast<std::uint64_t>(ts.tv_nsec) / 1000u;
}

std::size_t Balancer::response_lines(const BalanceTicket& t, char* out, std::size_t cap) const noexcept {
  if (!t.minted || t.pool < 0) return 0;
  // Sticky from the first request: the cookie the pick hashed on.
  const std::string_view name = table_.pools[static_cast<std::size_t>(t.pool)].key_name;
  std::size_t n = 0;
  auto put = [&](std::string_view v) {
    const std::size_t k = std::min(v.size(), cap - n);
    if (k) std::memcpy(out + n, v.data(), k);
    n += k;
  };
  put("Set-Cookie: ");
  put(name);
  put("=");
  put(t.minted_cookie());
  put("; Path=/; HttpOnly\r\n");
  return n;
}

bool Balancer::needs_cookie(std::uint16_t pool, const RequestHead& head) const noexcept {
  const PoolDef& p = table_.pools[pool];
  return p.strategy == Strategy::ConsistentHash && p.key == HashKey::Cookie && cookie_value(head, p.key_name).empty();
}

// Fast key erasure: each ChaCha20 block gives the next key (its first half)
// and two cookie values (its second half), so a value already handed out
// cannot be recomputed from the generator's state.
void Balancer::mint_cookie(char (&out)[kCookieChars]) noexcept {
  constexpr std::size_t kBytes = kCookieChars / 2;
  if (cookie_left_ < kBytes) {
    static constexpr std::uint32_t kNonce[3] = {0, 0, 0};
    std::uint8_t block[64];
    chacha20_block(cookie_key_, 0, kNonce, block);
    for (int i = 0; i < 8; ++i)
      cookie_key_[i] = std::uint32_t{block[4 * i]} | std::uint32_t{block[4 * i + 1]} << 8 |
                       std::uint32_t{block[4 * i + 2]} << 16 | std::uint32_t{block[4 * i + 3]} << 24;
    std::memcpy(cookie_buf_, block + 32, 32);
    std::memset(block, 0, sizeof block);
    cookie_left_ = 32;
  }
  std::uint8_t* bytes = cookie_buf_ + (sizeof cookie_buf_ - cookie_left_);
  static constexpr char kHex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < kBytes; ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 15];
  }
  std::memset(bytes, 0, kBytes);
  cookie_left_ -= kBytes;
}

}  // namespace juggler
