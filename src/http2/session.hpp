// The nghttp2 server session of the HTTP/2 front, set up in one place for
// connection.cpp and the fuzz target (tests/fuzz/fuzz_h2.cpp), so the fuzzer
// runs the session our clients meet: the callbacks registered, the options
// and our SETTINGS. Apart from Worker, as request_head.cpp.
#pragma once

#include <nghttp2/nghttp2.h>

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

// A server session on `cbs` with our SETTINGS submitted. Request bodies are
// flow-controlled by hand (no automatic WINDOW_UPDATE: by what went
// upstream); the connection's window lets every stream use its own, so one
// that is not read cannot starve the rest. False: nothing to use (`*ng` is
// deleted by the caller if set).
bool h2_session_start(nghttp2_session** ng, const nghttp2_session_callbacks* cbs, void* user,
                      const H2Limits& l) noexcept;

}  // namespace juggler
