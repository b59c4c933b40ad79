// hash64 and the Maglev table of consistent_hash pools.
#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "juggler/balance.hpp"

namespace juggler {

namespace {

constexpr std::uint64_t kP1 = 0x9E3779B185EBCA87ULL;
constexpr std::uint64_t kP2 = 0xC2B2AE3D27D4EB4FULL;
constexpr std::uint64_t kP3 = 0x165667B19E3779F9ULL;
constexpr std::uint64_t kP4 = 0x85EBCA77C2B2AE63ULL;
constexpr std::uint64_t kP5 = 0x27D4EB2F165667C5ULL;

constexpr std::uint64_t rotl(std::uint64_t x, int r) noexcept { return (x << r) | (x >> (64 - r)); }

// Little-endian loads spelled out, so the hash is the same on any host.
std::uint64_t load64(const unsigned char* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::uint32_t load32(const unsigned char* p) noexcept {
  return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24;
}

// Seeds of the two hashes that place a server's permutation of the slots.
constexpr std::uint64_t kOffsetSeed = 0x6d61676c65762d6fULL;  // "maglev-o"
constexpr std::uint64_t kSkipSeed = 0x6d61676c65762d73ULL;    // "maglev-s"

bool is_prime(std::uint32_t n) noexcept {
  if (n < 2) return false;
  for (std::uint32_t d = 2; d * d <= n; ++d)
    if (n % d == 0) return false;
  return true;
}

}  // namespace

// xxHash64's short-input path (8-, 4- and 1-byte steps, then the avalanche),
// used for any length: keys and authorities are short, and one lane keeps it
// small. Equals XXH64 for inputs under 32 bytes.
std::uint64_t hash64(std::string_view s, std::uint64_t seed) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  std::size_t n = s.size();
  std::uint64_t h = seed + kP5 + n;
  for (; n >= 8; n -= 8, p += 8) {
    h ^= rotl(load64(p) * kP2, 31) * kP1;
    h = rotl(h, 27) * kP1 + kP4;
  }
  if (n >= 4) {
    h ^= std::uint64_t{load32(p)} * kP1;
    h = rotl(h, 23) * kP2 + kP3;
    n -= 4;
    p += 4;
  }
  for (; n > 0; --n, ++p) {
    h ^= *p * kP5;
    h = rotl(h, 11) * kP1;
  }
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

std::uint32_t MaglevTable::size_for(std::size_t servers) noexcept {
  if (servers <= 655) return 65537;
  auto m = static_cast<std::uint32_t>(servers * 100);
  while (!is_prime(m)) ++m;
  return m;
}

std::string server_key(const ServerDef& s) {
  std::string k(s.authority);
  if (s.slot) {
    k += '#';  // two appends: GCC 12 -O3 sees a false -Wrestrict in "#" + std::string
    k += std::to_string(s.slot);
  }
  return k;
}

// Maglev's population loop with weighted turns: every round each server earns
// its weight in credit and claims its next free preferred slot per `max
// weight` of credit, so slots end up in proportion to weight. Servers take
// their turns in the order of their server_key's hash (ties: the key), so
// the table depends on the set of servers, not the order of their lines.
MaglevTable::MaglevTable(std::span<const ServerDef> pool_servers, bool backup) {
  std::vector<std::uint16_t> members;
  for (std::size_t i = 0; i < pool_servers.size(); ++i)
    if (pool_servers[i].backup == backup) members.push_back(static_cast<std::uint16_t>(i));
  if (members.empty()) return;
  if (pool_servers.size() > 65535) throw std::length_error("consistent_hash: more than 65535 servers in a pool");
  std::vector<std::string> keys(pool_servers.size());
  for (std::uint16_t i : members) keys[i] = server_key(pool_servers[i]);
  std::sort(members.begin(), members.end(), [&](std::uint16_t a, std::uint16_t b) {
    const std::string_view x = keys[a], y = keys[b];
    const std::uint64_t hx = hash64(x), hy = hash64(y);
    if (hx != hy) return hx < hy;
    if (x != y) return x < y;
    return a < b;
  });

  const std::uint32_t m = size_for(members.size());
  const std::size_t n = members.size();
  std::vector<std::uint32_t> next(n), skip(n), credit(n, 0);
  std::uint32_t max_weight = 1;
  for (std::size_t k = 0; k < n; ++k) {
    const ServerDef& s = pool_servers[members[k]];
    const std::string& key = keys[members[k]];
    next[k] = static_cast<std::uint32_t>(hash64(key, kOffsetSeed) % m);
    skip[k] = static_cast<std::uint32_t>(hash64(key, kSkipSeed) % (m - 1)) + 1;
    max_weight = std::max<std::uint32_t>(max_weight, s.weight);
  }

  constexpr std::uint16_t kEmpty = 0xffff;
  slots_.assign(m, kEmpty);
  std::uint32_t filled = 0;
  while (filled < m) {
    for (std::size_t k = 0; k < n && filled < m; ++k) {
      credit[k] += std::max<std::uint32_t>(pool_servers[members[k]].weight, 1);
      while (credit[k] >= max_weight && filled < m) {
        credit[k] -= max_weight;
        while (slots_[next[k]] != kEmpty) next[k] = (next[k] + skip[k]) % m;
        slots_[next[k]] = members[k];
        next[k] = (next[k] + skip[k]) % m;
        ++filled;
      }
    }
  }
}

}  // namespace juggler
