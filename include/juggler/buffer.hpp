// Per-worker pool of fixed-size I/O buffers. A connection holds a buffer only
// while it has bytes in flight; an idle connection holds none.
//
// Memory returns: a pool keeps the free buffers recent load needed, no more.
// get() notes how many buffers are in use (one compare); the worker's
// housekeeping calls trim() every 500 ms, which frees what lies beyond a
// high-water mark of that use (HighWater: the recent peak, then decaying). A
// steady load keeps its buffers (no malloc per request once warm); an ended
// burst gives its memory back within a few seconds.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace juggler {

// How many pooled items recent load needed. The request path notes the count
// in use (one compare); the housekeeping calls keep() every 500 ms, which
// closes a window. The mark is the peak of the last kWindows windows (2 s: a
// load that dips for a moment keeps its items), and once a burst is older than
// that, it halves at each keep() down to the recent peak, so an ended burst of
// 1,000 is returned over ~2 s more, a part at a time.
class HighWater {
 public:
  static constexpr std::size_t kWindows = 4;

  // `floor`: free items kept however quiet it is (the low-water mark).
  explicit HighWater(std::size_t floor) noexcept : floor_(floor) {}

  // The request path: `in_use` items are in use now.
  void note(std::size_t in_use) noexcept {
    if (in_use > peak_) peak_ = in_use;
  }

  // Housekeeping: how many free items to keep, `in_use` being in use now.
  std::size_t keep(std::size_t in_use) noexcept {
    windows_[next_] = std::max(peak_, in_use);
    next_ = (next_ + 1) % kWindows;
    peak_ = in_use;  // the next window starts from what is in use now
    std::size_t recent = 0;
    for (std::size_t p : windows_) recent = std::max(recent, p);
    high_ = std::max(recent, high_ / 2);
    return std::max(floor_, high_ - in_use);  // high_ >= recent >= in_use
  }

  std::size_t high() const noexcept { return high_; }

 private:
  std::size_t floor_;
  std::size_t peak_ = 0;  // in use, at most, since the last keep()
  std::size_t windows_[kWindows] = {};
  std::size_t next_ = 0;
  std::size_t high_ = 0;
};

struct Buffer {
  Buffer* next;
  std::uint32_t cap;
  char data[];  // cap bytes
};

class BufferPool {
 public:
  // `size`: bytes per buffer; `keep`: how many free buffers to hold on to at
  // most; `floor`: how many trim() leaves however quiet it is.
  BufferPool(std::uint32_t size, std::size_t keep, std::size_t floor = 0) noexcept
      : size_(size), keep_(keep), water_(std::min(floor, keep)) {}
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  ~BufferPool() {
    while (free_) {
      Buffer* b = free_;
      free_ = b->next;
      std::free(b);
    }
  }

  // A buffer of size() bytes; never null (aborts when memory is exhausted).
  Buffer* get() {
    Buffer* b = free_;
    if (b) {
      free_ = b->next;
      --free_count_;
    } else {
      void* m = std::malloc(sizeof(Buffer) + size_);
      if (!m) throw std::bad_alloc();
      b = static_cast<Buffer*>(m);
      b->next = nullptr;
      b->cap = size_;
      ++allocated_;
      ++mallocs_;
    }
    water_.note(allocated_ - free_count_);
    return b;
  }

  void put(Buffer* b) noexcept {
    if (!b) return;
    if (free_count_ >= keep_) {
      std::free(b);
      --allocated_;
      return;
    }
    b->next = free_;
    free_ = b;
    ++free_count_;
  }

  // Housekeeping (never the request path): frees the free buffers beyond what
  // recent load needed. Returns how many bytes went back to the allocator.
  std::size_t trim() noexcept {
    const std::size_t keep = std::min(keep_, water_.keep(allocated_ - free_count_));
    std::size_t freed = 0;
    while (free_count_ > keep) {
      Buffer* b = free_;
      free_ = b->next;
      --free_count_;
      --allocated_;
      std::free(b);
      freed += sizeof(Buffer) + size_;
    }
    return freed;
  }

  std::uint32_t size() const noexcept { return size_; }
  std::size_t allocated() const noexcept { return allocated_; }       // in use + free
  std::size_t free_count() const noexcept { return free_count_; }
  std::uint64_t mallocs() const noexcept { return mallocs_; }         // ever
  const HighWater& water() const noexcept { return water_; }

 private:
  Buffer* free_ = nullptr;
  std::uint32_t size_;
  std::size_t keep_;
  HighWater water_;
  std::size_t free_count_ = 0;
  std::size_t allocated_ = 0;
  std::uint64_t mallocs_ = 0;
};

}  // namespace juggler
