// See session.hpp.
#include "http2/session.hpp"

#include <algorithm>
#include <cstdint>

namespace juggler {

nghttp2_session_callbacks* h2_callbacks_new(const H2Callbacks& cb) noexcept {
  nghttp2_session_callbacks* c = nullptr;
  if (nghttp2_session_callbacks_new(&c) != 0) return nullptr;
  nghttp2_session_callbacks_set_on_begin_headers_callback(c, cb.begin_headers);
  nghttp2_session_callbacks_set_on_header_callback2(c, cb.header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(c, cb.frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c, cb.data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(c, cb.stream_close);
  if (cb.invalid_frame) nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(c, cb.invalid_frame);
  if (cb.begin_frame) nghttp2_session_callbacks_set_on_begin_frame_callback(c, cb.begin_frame);
  return c;
}

namespace {

nghttp2_option* options() {
  static nghttp2_option* opt = [] {
    nghttp2_option* o = nullptr;
    nghttp2_option_new(&o);
    nghttp2_option_set_no_auto_window_update(o, 1);
    return o;
  }();
  return opt;
}

}  // namespace

bool h2_session_start(nghttp2_session** ng, const nghttp2_session_callbacks* cbs, void* user,
                      const H2Limits& l) noexcept {
  if (nghttp2_session_server_new2(ng, cbs, user, options()) != 0) return false;
  const nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, l.max_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, l.window},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, l.header_bytes},
      {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, l.hpack_table},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, l.max_frame},
  };
  if (nghttp2_submit_settings(*ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0) return false;
  const std::uint64_t conn_window = std::min<std::uint64_t>(std::uint64_t{l.max_streams} * l.window, INT32_MAX);
  return nghttp2_session_set_local_window_size(*ng, NGHTTP2_FLAG_NONE, 0, static_cast<std::int32_t>(conn_window)) == 0;
}

}  // namespace juggler
