// What the PROXY protocol and SNI preludes share: a connection's first bytes
// gathered in one pool buffer, no more than the prelude can need (what
// follows waits in the kernel), the buffer given back once it is done.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "juggler/buffer.hpp"
#include "juggler/stream.hpp"

namespace juggler {

class BufferedPrelude : public Prelude {
 public:
  // Gives the buffer back (the owner's close, if the prelude did not finish).
  void release() noexcept {
    if (buf) pool->put(buf);
    buf = nullptr;
    len = 0;
  }
  void prelude_over() noexcept override { release(); }

 protected:
  ~BufferedPrelude() = default;
  // Runs on `s` (accepted, not reading yet), then starts it reading.
  void begin(Stream& s, BufferPool& buffers) noexcept {
    pool = &buffers;
    buf = nullptr;
    len = 0;
    s.set_prelude(this);
    s.set_reading(true);
  }
  // The room for the next bytes: the buffer (taken on first use) up to `max`.
  uv_buf_t room(std::size_t max) noexcept {
    if (!buf) buf = pool->get();
    return uv_buf_init(buf->data + len, limit(max) - len);
  }
  // How much of the buffer a prelude of at most `max` bytes may fill.
  std::uint32_t limit(std::size_t max) const noexcept {
    return static_cast<std::uint32_t>(std::min<std::size_t>(buf->cap, max));
  }

  BufferPool* pool = nullptr;
  Buffer* buf = nullptr;
  std::uint32_t len = 0;
};

}  // namespace juggler
