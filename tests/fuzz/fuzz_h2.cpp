// libFuzzer target: the HTTP/2 front, frames from a client into the nghttp2
// server session src/http2/connection.cpp starts (src/http2/session.cpp, at
// the default limits), each request's fields mapped to an HTTP/1.1 head by
// src/http2/request_head.cpp as stream.cpp maps them, and that head parsed
// by MessageParser as the exchange parses it.
//
// Input: 1 control byte (the size of the reads the input is cut into), then
// the bytes after the client connection preface (which is sent first, so the
// fuzzer spends its time on frames). Checked with abort():
//   - the head stays within its room; a head too large is flagged, not cut;
//   - a head that fits parses as exactly one request head ending where it
//     was written: its method is :method, its target :path in origin form
//     or "*" (an absolute-form :path is refused, not routed), its one Host :authority (or the client's host field), no
//     Transfer-Encoding but the chunked we add for a body without
//     content-length;
//   - nghttp2 never hands a header to a stream we do not know.
#include <nghttp2/nghttp2.h>

#include <sys/types.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "http2/request_head.hpp"
#include "http2/session.hpp"
#include "juggler/http.hpp"

using namespace juggler;

namespace {

constexpr std::uint32_t kMaxHeaders = 100;    // limit.header_count
constexpr std::uint32_t kHeaderBytes = 16384;  // limit.header_bytes
constexpr std::uint32_t kRoom = kHeaderBytes + 1024;  // the worker's buffers

std::string_view view(nghttp2_rcbuf* b) {
  const nghttp2_vec v = nghttp2_rcbuf_get_buf(b);
  return {reinterpret_cast<const char*>(v.base), v.len};
}

struct Stream {
  H2Head head;
  std::unique_ptr<char[]> room = std::make_unique<char[]>(kRoom);
  std::string method, path, authority, host;  // what the client sent, to check the head against
  bool bad = false;
};

struct Conn {
  nghttp2_session* ng = nullptr;
  std::map<std::int32_t, std::unique_ptr<Stream>> streams;
};

Stream* find(Conn* c, std::int32_t id) {
  auto it = c->streams.find(id);
  return it == c->streams.end() ? nullptr : it->second.get();
}

void check_head(const Stream& s, bool end_stream) {
  const H2Head& h = s.head;
  FUZZ_CHECK(h.len <= h.cap);
  if (h.too_large) return;  // answered 431
  HeaderSpan spans[kMaxHeaders + 8];
  MessageParser p;
  p.init(HTTP_REQUEST, spans, kMaxHeaders + 8);
  p.max_head_bytes = kRoom;
  std::size_t used = 0;
  const ParseEvent ev = p.feed(h.data, h.len, &used);
  if (ev != ParseEvent::HeadComplete) return;  // refused as a bad head would be (400): nothing relayed
  FUZZ_CHECK(used == h.len);
  FUZZ_CHECK(std::string_view(h.data, h.len).starts_with(s.method + " "));
  FUZZ_CHECK(p.url() == s.path);
  FUZZ_CHECK(p.url() == "*" || p.url().starts_with('/'));  // never an absolute-form routed by its own authority
  std::uint32_t hosts = 0, te = 0;
  std::string_view host;
  for (std::uint32_t i = 0; i < p.header_count(); ++i) {
    const HeaderSpan& sp = p.headers()[i];
    if (sp.kind == HeaderKind::Host) {
      ++hosts;
      host = p.header_value(sp);
    }
    if (sp.kind == HeaderKind::TransferEncoding) ++te;
  }
  const std::string& want = s.authority.empty() ? s.host : s.authority;
  FUZZ_CHECK(hosts == (want.empty() ? 0U : 1U));
  FUZZ_CHECK(host == want);
  FUZZ_CHECK(te <= 1);
  if (te) FUZZ_CHECK(!end_stream && p.chunked());
}

int on_begin_headers(nghttp2_session* ng, const nghttp2_frame* f, void* user) {
  auto* c = static_cast<Conn*>(user);
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto s = std::make_unique<Stream>();
  s->head.data = s->room.get();
  s->head.cap = kRoom;
  nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, s.get());
  c->streams[f->hd.stream_id] = std::move(s);
  return 0;
}

int on_header(nghttp2_session* ng, const nghttp2_frame* f, nghttp2_rcbuf* name, nghttp2_rcbuf* value, std::uint8_t,
              void* user) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  Stream* s = find(static_cast<Conn*>(user), f->hd.stream_id);
  FUZZ_CHECK(s != nullptr);
  FUZZ_CHECK(nghttp2_session_get_stream_user_data(ng, f->hd.stream_id) == s);
  if (s->bad) return 0;
  const std::string_view n = view(name), v = view(value);
  if (n == ":method" && s->method.empty()) s->method = v;
  else if (n == ":path" && s->path.empty()) s->path = v;
  else if (n == ":authority" && s->authority.empty()) s->authority = v;
  else if (n == "host" && s->host.empty()) s->host = v;
  if (!h2_head_field(s->head, name, value)) {
    s->bad = true;
    nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_PROTOCOL_ERROR);
  }
  return 0;
}

int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* user) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  Stream* s = find(static_cast<Conn*>(user), f->hd.stream_id);
  if (!s || s->bad) return 0;
  const bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (!h2_head_end(s->head, end)) {
    s->bad = true;
    return 0;
  }
  check_head(*s, end);
  return 0;
}

int on_data_chunk(nghttp2_session* ng, std::uint8_t, std::int32_t id, const std::uint8_t*, std::size_t len, void*) {
  nghttp2_session_consume(ng, id, len);  // the windows stay open: the fuzzer may send more
  return 0;
}

int on_stream_close(nghttp2_session* ng, std::int32_t id, std::uint32_t, void* user) {
  auto* c = static_cast<Conn*>(user);
  if (Stream* s = find(c, id)) {
    h2_head_drop(s->head);
    nghttp2_session_set_stream_user_data(ng, id, nullptr);
    c->streams.erase(id);
  }
  return 0;
}

void drain(nghttp2_session* ng) {
  const std::uint8_t* out = nullptr;
  for (int i = 0; i < 64 && nghttp2_session_mem_send(ng, &out) > 0; ++i) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t piece = 1 + data[0] * 16U;  // 1 .. 4081 bytes a read
  ++data;
  --size;
  Conn c;
  // The session connection.cpp starts, at the default limits.
  static nghttp2_session_callbacks* const cbs =
      h2_callbacks_new({on_begin_headers, on_header, on_frame_recv, on_data_chunk, on_stream_close});
  static H2Mem mem;  // the worker's allocator, kept across inputs as a worker keeps it across connections
  FUZZ_CHECK(h2_session_start(&c.ng, cbs, &c, {100, kRoom - 64, kHeaderBytes, 4096, 16384}, &mem));
  drain(c.ng);
  constexpr std::string_view kPreface = NGHTTP2_CLIENT_MAGIC;
  bool ok = nghttp2_session_mem_recv(c.ng, reinterpret_cast<const std::uint8_t*>(kPreface.data()),
                                     kPreface.size()) == static_cast<ssize_t>(kPreface.size());
  FUZZ_CHECK(ok);
  for (std::size_t at = 0; ok && at < size; at += piece) {
    const std::size_t n = std::min(piece, size - at);
    const auto r = nghttp2_session_mem_recv(c.ng, data + at, n);
    ok = r >= 0;
    if (ok) FUZZ_CHECK(static_cast<std::size_t>(r) == n);
    drain(c.ng);
  }
  for (auto& [id, s] : c.streams) h2_head_drop(s->head);
  nghttp2_session_del(c.ng);
  return 0;
}
