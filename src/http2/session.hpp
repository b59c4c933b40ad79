// The nghttp2 server session of the HTTP/2 front, set up in one place for
// connection.cpp and the fuzz target (tests/fuzz/fuzz_h2.cpp), so the fuzzer
// runs the session our clients meet: the callbacks registered, the options
// and our SETTINGS. Apart from Worker, as request_head.cpp.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>

namespace juggler {

// The callbacks a front session takes (a null one is not registered).
struct H2Callbacks {
  nghttp2_on_begin_headers_callback begin_headers;
  nghttp2_on_header_callback2 header;
  nghttp2_on_frame_recv_callback frame_recv;
  nghttp2_on_data_chunk_recv_callback data_chunk;
  nghttp2_on_stream_close_callback stream_close;
  nghttp2_on_invalid_frame_recv_callback invalid_frame = nullptr;
  nghttp2_on_begin_frame_callback begin_frame = nullptr;
  nghttp2_send_data_callback send_data = nullptr;
};
nghttp2_session_callbacks* h2_callbacks_new(const H2Callbacks& cb) noexcept;

// What our SETTINGS announce (`set h2.*`, limit.header_bytes, the room of a
// stream's request body).
struct H2Limits {
  std::uint32_t max_streams;
  std::uint32_t window;  // a stream's: the room a request body has (stream.cpp)
  std::uint32_t header_bytes;
  std::uint32_t hpack_table;
  std::uint32_t max_frame;
};

// nghttp2's memory for the sessions of one worker (one thread). A request
// makes nghttp2 allocate a stream, its frames' queue items, a copy of the
// response fields and HPACK entries, and free them again: from malloc, a
// handful of calls per request. Here they come from free lists of blocks in
// power-of-two classes (64 bytes to 1 KB), so a warm worker serves requests
// without a call to malloc. Larger blocks (the session, its HPACK tables,
// stream map and 16 KB frame buffer: once per connection) are not rounded up
// to a class: they come from malloc, and from 4 KB on as pages of their own,
// resident only as far as they are used (session.cpp). Each class keeps at
// most kKeepBytes of free blocks: a burst of connections gives the rest back.
class H2Mem {
 public:
  H2Mem() noexcept;
  ~H2Mem();
  H2Mem(const H2Mem&) = delete;
  H2Mem& operator=(const H2Mem&) = delete;
  nghttp2_mem* mem() noexcept { return &mem_; }

 private:
  static constexpr std::uint32_t kClasses = 5;  // 64 << 4 = 1 KB
  static constexpr std::size_t kKeepBytes = 512 * 1024;
  struct Free {
    Free* next;
  };
  static void* alloc(std::size_t size, void* self) noexcept;
  static void release(void* ptr, void* self) noexcept;
  static void* zalloc(std::size_t n, std::size_t size, void* self) noexcept;
  static void* resize(void* ptr, std::size_t size, void* self) noexcept;

  nghttp2_mem mem_;
  Free* free_[kClasses] = {};
  std::size_t kept_[kClasses] = {};
};

// A server session on `cbs` with our SETTINGS submitted. Request bodies are
// flow-controlled by hand (no automatic WINDOW_UPDATE: by what went
// upstream); the connection's window lets every stream use its own, so one
// that is not read cannot starve the rest. False: nothing to use (`*ng` is
// deleted by the caller if set). `mem`: nghttp2's allocator (null: malloc).
bool h2_session_start(nghttp2_session** ng, const nghttp2_session_callbacks* cbs, void* user, const H2Limits& l,
                      H2Mem* mem = nullptr) noexcept;

}  // namespace juggler
