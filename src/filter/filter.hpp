// Response filters: stages between a server's response body and the client
// write (compression, the cache store). The relay's zero-copy path has no
// chain at all; with one, the relay feeds it the decoded body
// (MessageParser::collect_body) and writes what comes out, chunk-framed
// (src/filter/filtered.cpp).
//
// Memory: a stage's output lives in the stage's own memory until written()
// says the client write that carried it completed; the relay does not push
// more while that write is pending (the same backpressure rule as the
// zero-copy path: the server is not read while the client is behind), so a
// stage needs one output buffer, not a queue. A stage whose output buffer is
// full takes only part of its input (FilterStatus::Full) and is given the
// rest after the write: memory per stream stays bounded whatever the body.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "juggler/http.hpp"

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

enum class FilterStatus : std::uint8_t {
  Done,    // took all of the input (with `last`: and produced all its output)
  Full,    // its output memory is full: it took *used bytes; call again with
           // the rest (and the same `last`) once written() freed the memory
  Failed,  // the exchange is cut
};

// The first header of `m` named `lower_name` (lower case), or -1.
int find_header(const MessageParser& m, std::string_view lower_name) noexcept;

// The server's response head as a stage may change it before it is sent: the
// lines it cuts (drop) and the lines it adds, in memory the relay owns.
class HeadEdit {
 public:
  HeadEdit(MessageParser& resp, char* buf, std::size_t cap) noexcept : resp_(resp), buf_(buf), cap_(cap) {}
  const MessageParser& response() const noexcept { return resp_; }
  // The first header named `lower_name` (lower case), or -1.
  int find(std::string_view lower_name) const noexcept { return find_header(resp_, lower_name); }
  // Header i's value, without the whitespace around it (the parser's).
  std::string_view value(int i) const noexcept { return resp_.header_value(resp_.headers()[i]); }
  // Header i is not sent.
  void drop(int i) noexcept { resp_.headers()[i].drop = true; }
  // Adds the line "name: value" (value given in up to three parts). False
  // when it did not fit (nothing was added).
  bool add(std::string_view name, std::string_view v1, std::string_view v2 = {}, std::string_view v3 = {}) noexcept;
  std::string_view lines() const noexcept { return {buf_, len_}; }
  std::size_t room() const noexcept { return cap_ - len_; }
  // Makes `n` more bytes of the buffer available (room the relay kept back
  // from the stages for its own lines).
  void grow(std::size_t n) noexcept { cap_ += n; }
  // A stage that changes the body's length sets this: the relay drops
  // Content-Length and frames the body itself (chunked, or until close for
  // an HTTP/1.0 client).
  bool changes_length = false;

 private:
  MessageParser& resp_;
  char* buf_;
  std::size_t cap_;
  std::size_t len_ = 0;
};

class ResponseFilter {
 public:
  virtual ~ResponseFilter() = default;
  // The response head, before it is sent: false steps aside (the body then
  // passes this stage untouched); it may edit the head through `edit`.
  virtual bool head(HeadEdit& edit) noexcept {
    (void)edit;
    return true;
  }
  // Transforms `in` (decoded body bytes; `last`: the body ends with them) and
  // appends what it produced to `out`; *used is how much of `in` it took. It
  // may hold input back and produce it later (a compressor), but must have
  // produced everything once it returned Done for a `last` call.
  virtual FilterStatus process(std::string_view in, bool last, FilterOut& out, std::size_t* used) noexcept = 0;
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
  void clear() noexcept {
    count_ = 0;
    busy_ = false;
  }
  // Output not yet reported written: push() refuses more until written().
  bool busy() const noexcept { return busy_; }

  // Offers the head to every stage; those that step aside leave the chain.
  // Returns whether any stage is left.
  bool head(HeadEdit& edit) noexcept;

  // Runs `in` through every stage; `out` gets the last stage's output and
  // *used how much of `in` the first stage took (Full: call again with the
  // rest after written()). A stage after the first must take all it is
  // given (a later stage that reports Full fails the push): only the first
  // may be one whose output memory runs full. Failed when a stage failed, or
  // when called while busy() (a relay bug: its backpressure must hold the
  // server back until the write completed).
  FilterStatus push(std::string_view in, bool last, FilterOut& out, std::size_t* used) noexcept;

  // The client write that carried the last output completed.
  void written() noexcept;

 private:
  ResponseFilter* stages_[kStages] = {};
  unsigned count_ = 0;
  bool busy_ = false;
};

}  // namespace juggler
