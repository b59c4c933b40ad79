// The error answers the proxy itself gives (400 ... 504): the operator's
// pages from `set error_pages DIR`, built-in small HTML pages otherwise.
// Everything is built once at start-up into complete responses, so serving one
// is an index into a table and one write of constant bytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace juggler {

class ErrorPages {
 public:
  static constexpr int kFirst = 400;
  static constexpr int kLast = 599;
  static constexpr std::size_t kMaxPageBytes = 1024 * 1024;

  // Built-in pages only.
  ErrorPages();

  // Built-in pages, overridden by DIR/NNN.html for every NNN in 400..599
  // present in `dir` (other files are ignored; a status with a file but no
  // built-in page gets one). An empty `dir` means built-ins only. A relative
  // dir is relative to the working directory. Call at start-up: throws
  // std::runtime_error("set error_pages: cannot read DIR: reason") when the
  // directory or one of its NNN.html files cannot be read, and refuses a page
  // larger than kMaxPageBytes or that is not a regular file, naming the file.
  static ErrorPages load(std::string_view dir);

  // The complete response for `status` (head and body): status line,
  // Content-Type: text/html; charset=utf-8, Content-Length, and with `close`
  // also Connection: close. A status without a page (outside 400..599, or
  // one with neither a built-in page nor a file) gets the 500 page.
  // O(1), no allocation; the bytes live as long as this object (and move
  // with it: take views only from the object that will stay). Thread-safe
  // (the object is immutable after load()).
  std::string_view reply(int status, bool close) const noexcept;

  // The head only (the prefix of reply() up to its empty line): the answer
  // to a HEAD request, which must not carry the body.
  std::string_view head(int status, bool close) const noexcept;

  // Whether `status` is served from a file of the directory.
  bool custom(int status) const noexcept;
  // How many pages came from the directory.
  std::size_t custom_count() const noexcept { return custom_count_; }

 private:
  static constexpr std::size_t kCount = kLast - kFirst + 1;
  struct Page {
    std::string keep;   // empty: no page for this status
    std::string close;
    std::uint32_t keep_head = 0;   // bytes of the head in keep
    std::uint32_t close_head = 0;  // bytes of the head in close
    bool custom = false;
  };
  const Page& page(int status) const noexcept;
  void set(int status, std::string_view body, bool custom);

  std::array<Page, kCount> pages_;
  std::size_t custom_count_ = 0;
};

}  // namespace juggler
