// The seqlock of a resolve slot's address (juggler/resolve.hpp): the writer
// makes the sequence odd, writes the words, makes it even again; a reader
// that saw the same even sequence before and after its reads has a whole
// address. The words are atomics, so a read that overlaps a write is retried,
// never a data race.
#include <cstring>

#include "juggler/resolve.hpp"

namespace juggler {

void SlotAddress::store(const sockaddr_storage& addr) noexcept {
  std::uint64_t w[kWords] = {};
  std::memcpy(w, &addr, sizeof w);
  const std::uint32_t s = seq_.load(std::memory_order_relaxed);
  seq_.store(s + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  for (std::size_t i = 0; i < kWords; ++i) words_[i].store(w[i], std::memory_order_relaxed);
  seq_.store(s + 2, std::memory_order_release);
}

std::uint32_t SlotAddress::load(sockaddr_storage& out) const noexcept {
  std::uint64_t w[kWords];
  for (;;) {
    const std::uint32_t s = seq_.load(std::memory_order_acquire);
    if (s & 1) continue;
    for (std::size_t i = 0; i < kWords; ++i) w[i] = words_[i].load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (seq_.load(std::memory_order_relaxed) != s) continue;
    std::memset(&out, 0, sizeof out);
    std::memcpy(&out, w, sizeof w);
    return s;
  }
}

void SlotAddress::copy_from(const SlotAddress& o) noexcept {
  seq_.store(o.seq_.load(std::memory_order_acquire) & ~1u, std::memory_order_relaxed);
  for (std::size_t i = 0; i < kWords; ++i)
    words_[i].store(o.words_[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
}

}  // namespace juggler
