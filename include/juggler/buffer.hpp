// Per-worker pool of fixed-size I/O buffers. A connection holds a buffer only
// while it has bytes in flight; an idle connection holds none.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace juggler {

struct Buffer {
  Buffer* next;
  std::uint32_t cap;
  char data[];  // cap bytes
};

class BufferPool {
 public:
  // `size`: bytes per buffer; `keep`: how many free buffers to hold on to.
  BufferPool(std::uint32_t size, std::size_t keep) noexcept : size_(size), keep_(keep) {}
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
    if (Buffer* b = free_) {
      free_ = b->next;
      --free_count_;
      return b;
    }
    void* m = std::malloc(sizeof(Buffer) + size_);
    if (!m) throw std::bad_alloc();
    Buffer* b = static_cast<Buffer*>(m);
    b->next = nullptr;
    b->cap = size_;
    ++allocated_;
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

  std::uint32_t size() const noexcept { return size_; }
  std::size_t allocated() const noexcept { return allocated_; }

 private:
  Buffer* free_ = nullptr;
  std::uint32_t size_;
  std::size_t keep_;
  std::size_t free_count_ = 0;
  std::size_t allocated_ = 0;
};

}  // namespace juggler
