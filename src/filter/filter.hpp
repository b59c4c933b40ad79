// Response filters: stages between a server's response body and the client
// write (compression, the cache store). The relay's zero-copy path has no
// chain at all; with one, the relay feeds it the decoded body
// (MessageParser::collect_body) and writes what comes out, chunk-framed.
//
// Memory: a stage's output lives in the stage's own memory until written()
// says the client write that carried it completed; the relay does not push
// more while that write is pending (the same backpressure rule as the
// zero-copy path: the server is not read while the client is behind), so a
// stage needs one output buffer, not a queue.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace juggler {

// What a stage produced: slices of its own memory (or of its input, passed on).
struct FilterOut {
  static constexpr unsigned kMax = 8;
  uv_buf_t slices[kMax];
  unsigned n = 0;
  // False when full (the stage must produce less per call).
  bool add(const char* data, std::size_t len) noexcept {
    if (len == 0) return true;
    if (n == kMax) return false;
    slices[n++] = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
    return true;
  }
  std::size_t bytes() const noexcept {
    std::size_t total = 0;
    for (unsigned i = 0; i < n; ++i) total += slices[i].len;
    return total;
  }
};

class ResponseFilter {
 public:
  virtual ~ResponseFilter() = default;
  // Transforms `in` (decoded body bytes; `last`: the body ends with them) and
  // appends what it produced to `out`. It may hold input back and produce it
  // later (a compressor), but must flush everything when `last`. False when
  // it failed (the exchange is cut).
  virtual bool process(std::string_view in, bool last, FilterOut& out) = 0;
  // What it added to `out` so far went out: its memory may be reused.
  virtual void written() noexcept = 0;
};

// Up to kStages filters run in order. Not thread-safe; one per exchange.
class FilterChain {
 public:
  static constexpr unsigned kStages = 4;

  // False when the chain is full.
  bool add(ResponseFilter* f) noexcept {
    if (count_ == kStages) return false;
    stages_[count_++] = f;
    return true;
  }
  bool empty() const noexcept { return count_ == 0; }
  // Output not yet reported written: push() refuses more until written().
  bool busy() const noexcept { return busy_; }

  // Runs `in` through every stage; `out` gets the last stage's output. False
  // when a stage failed, or when called while busy() (a relay bug: its
  // backpressure must hold the server back until the write completed).
  bool push(std::string_view in, bool last, FilterOut& out) noexcept;

  // The client write that carried the last output completed.
  void written() noexcept;

 private:
  ResponseFilter* stages_[kStages] = {};
  unsigned count_ = 0;
  bool busy_ = false;
};

}  // namespace juggler
