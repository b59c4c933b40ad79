// Randomness of the balancer: the alias tables of weighted random choice and
// the ChaCha20 block function behind minted cookies.
#include <algorithm>
#include <stdexcept>

#include "juggler/balance.hpp"

namespace juggler {

namespace {

constexpr std::uint32_t rotl32(std::uint32_t x, int r) noexcept { return (x << r) | (x >> (32 - r)); }

constexpr void quarter_round(std::uint32_t* x, int a, int b, int c, int d) noexcept {
  x[a] += x[b]; x[d] = rotl32(x[d] ^ x[a], 16);
  x[c] += x[d]; x[b] = rotl32(x[b] ^ x[c], 12);
  x[a] += x[b]; x[d] = rotl32(x[d] ^ x[a], 8);
  x[c] += x[d]; x[b] = rotl32(x[b] ^ x[c], 7);
}

// A uniform number below `n` from 64 random bits (Lemire's multiply-shift;
// the bias, n / 2^64, is far below anything observable here).
std::uint64_t below(std::uint64_t r, std::uint64_t n) noexcept {
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(r) * n) >> 64);
}

}  // namespace

void chacha20_block(const std::uint32_t key[8], std::uint32_t counter, const std::uint32_t nonce[3],
                    std::uint8_t out[64]) noexcept {
  std::uint32_t in[16] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574};
  for (int i = 0; i < 8; ++i) in[4 + i] = key[i];
  in[12] = counter;
  for (int i = 0; i < 3; ++i) in[13 + i] = nonce[i];
  std::uint32_t x[16];
  for (int i = 0; i < 16; ++i) x[i] = in[i];
  for (int round = 0; round < 10; ++round) {
    quarter_round(x, 0, 4, 8, 12);
    quarter_round(x, 1, 5, 9, 13);
    quarter_round(x, 2, 6, 10, 14);
    quarter_round(x, 3, 7, 11, 15);
    quarter_round(x, 0, 5, 10, 15);
    quarter_round(x, 1, 6, 11, 12);
    quarter_round(x, 2, 7, 8, 13);
    quarter_round(x, 3, 4, 9, 14);
  }
  for (int i = 0; i < 16; ++i) {
    const std::uint32_t v = x[i] + in[i];
    for (int b = 0; b < 4; ++b) out[4 * i + b] = static_cast<std::uint8_t>(v >> (8 * b));
  }
}

// Vose's alias method in integers: n buckets of capacity W (the total
// weight), server i bringing w_i * n; every bucket ends up holding its own
// server up to `keep` and one other server (its alias) above.
AliasTable::AliasTable(std::span<const ServerDef> pool_servers, bool backup) {
  std::vector<std::uint64_t> mass;
  for (std::size_t i = 0; i < pool_servers.size(); ++i) {
    if (pool_servers[i].backup != backup) continue;
    self_.push_back(static_cast<std::uint16_t>(i));
    total_ += std::max<std::uint16_t>(pool_servers[i].weight, 1);
  }
  const std::size_t n = self_.size();
  if (n == 0) return;
  if (pool_servers.size() > 65535) throw std::length_error("pool of more than 65535 servers");
  keep_.assign(n, total_);
  alias_ = self_;
  std::vector<std::size_t> small, large;
  for (std::size_t j = 0; j < n; ++j) {
    mass.push_back(std::uint64_t{std::max<std::uint16_t>(pool_servers[self_[j]].weight, 1)} * n);
    (mass[j] < total_ ? small : large).push_back(j);
  }
  while (!small.empty() && !large.empty()) {
    const std::size_t s = small.back(), l = large.back();
    small.pop_back();
    keep_[s] = mass[s];
    alias_[s] = self_[l];
    mass[l] -= total_ - mass[s];
    if (mass[l] < total_) {
      large.pop_back();
      small.push_back(l);
    }
  }
}

std::uint16_t AliasTable::sample(std::uint64_t r1, std::uint64_t r2) const noexcept {
  const std::size_t j = below(r1, self_.size());
  return below(r2, total_) < keep_[j] ? self_[j] : alias_[j];
}

}  // namespace juggler
