// The response side of an HTTP/2 stream (see stream.cpp for the whole
// picture): the exchange's HTTP/1.1 bytes back into HEADERS and DATA, and the
// request body handed to the exchange (RequestBody).
#include <cstdio>
#include <cstring>

#include "exchange/exchange.hpp"
#include "http2/internal.hpp"

namespace juggler {

namespace {

constexpr std::uint32_t kBodyReserve = 16;  // as stream.cpp: a chunk's size line fits before the bytes

// Fields of HTTP/1 that HTTP/2 forbids (RFC 9113 8.2.2); `name` in lower case.
bool hop_by_hop(std::string_view name) {
  return name == "connection" || name == "keep-alive" || name == "proxy-connection" || name == "transfer-encoding" ||
         name == "upgrade" || name == "te";
}

ssize_t read_body(nghttp2_session*, std::int32_t, std::uint8_t*, std::size_t len, std::uint32_t* flags,
                  nghttp2_data_source* src, void*);

// :status first in the HEADERS being built (nva[0]).
void status_field(H2Stream* s, unsigned status) {
  status %= 1000;  // three digits
  s->status_text[0] = static_cast<char>('0' + status / 100);
  s->status_text[1] = static_cast<char>('0' + status / 10 % 10);
  s->status_text[2] = static_cast<char>('0' + status % 10);
  s->nva[0] = {reinterpret_cast<std::uint8_t*>(const_cast<char*>(":status")),
               reinterpret_cast<std::uint8_t*>(s->status_text), 7, 3, NGHTTP2_NV_FLAG_NONE};
}

// One field into the HEADERS being built (nva[*n]): its name lowered in
// place (the head is our copy), the fields HTTP/2 forbids dropped. Returns
// the name as lowered.
std::string_view add_field(H2Stream* s, std::size_t* n, std::string_view name, std::string_view value) {
  char* lower = const_cast<char*>(name.data());
  for (std::size_t k = 0; k < name.size(); ++k)
    if (lower[k] >= 'A' && lower[k] <= 'Z') lower[k] = static_cast<char>(lower[k] + 32);
  if (*n < s->header_cap + 1 && !hop_by_hop(name))
    s->nva[(*n)++] = {reinterpret_cast<std::uint8_t*>(lower),
                      reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
                      NGHTTP2_NV_FLAG_NONE};
  return name;
}

// The parsed head's fields for HEADERS, :status first; the count.
std::size_t head_fields(H2Stream* s) {
  const MessageParser& r = s->resp;
  status_field(s, static_cast<unsigned>(r.status()));
  std::size_t n = 1;
  for (std::uint32_t i = 0; i < r.header_count(); ++i)
    add_field(s, &n, r.header_name(r.headers()[i]), r.header_value(r.headers()[i]));
  return n;
}

// HEADERS for the final answer (nva[0, n)), with a data source unless it has no body.
bool submit(H2Stream* s, std::size_t n, bool bodyless) {
  nghttp2_data_provider prd;
  prd.source.ptr = s;
  prd.read_callback = read_body;
  return nghttp2_submit_response(s->conn->ng, s->id, s->nva.get(), n, bodyless ? nullptr : &prd) == 0;
}

bool submit_head(H2Stream* s, bool bodyless) { return submit(s, head_fields(s), bodyless); }

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// The whole answer in one send, delimited by content-length (a small
// proxied response, a local answer): copied into the stream's own buffer
// (`kept`), its head split into lines here instead of parsed again (the
// exchange parsed the server's head, or wrote it), its body one span, and
// the send complete at once: the exchange ends this turn and its server
// connection goes back to the pool still reading, instead of being paused
// until nghttp2 took the bytes (a read stop and start, two epoll_ctl, and a
// loop turn per small response). Bounded as a held send: one buffer per
// stream, the send timer armed until the body went. False: not that case
// (interim answers, no body, chunked, too large...); nothing changed but the
// bytes in `kept`, and parse_head() starts from the slices.
bool quick_answer(H2Stream* s, const uv_buf_t* v, unsigned n) {
  Worker& w = *s->conn->worker;
  std::size_t total = 0;
  for (unsigned i = 0; i < n; ++i) total += v[i].len;
  if (total > w.buffers.size() || (s->ex && s->ex->is_head)) return false;
  if (!s->kept) s->kept = w.buffers.get();
  char* const data = s->kept->data;
  for (unsigned i = 0, at = 0; i < n; at += static_cast<unsigned>(v[i].len), ++i) std::memcpy(data + at, v[i].base, v[i].len);
  const std::string_view all(data, total);
  const std::size_t end = all.find("\r\n\r\n");
  if (end == std::string_view::npos || end < 12 || all.substr(0, 7) != "HTTP/1." || all[8] != ' ') return false;
  unsigned status = 0;
  for (std::size_t i = 9; i < 12; ++i) {
    if (all[i] < '0' || all[i] > '9') return false;
    status = status * 10 + static_cast<unsigned>(all[i] - '0');
  }
  if (status < 200 || status == 204 || status == 304) return false;  // interim, or no body: parse_head()
  std::uint64_t length = UINT64_MAX;
  std::size_t fields = 1;
  for (std::size_t at = all.find("\r\n") + 2; at < end + 2;) {
    const std::size_t eol = all.find("\r\n", at);
    const std::string_view line = all.substr(at, eol - at);
    at = eol + 2;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    const std::string_view value = trim(line.substr(colon + 1));
    const std::string_view name = add_field(s, &fields, line.substr(0, colon), value);
    if (name == "transfer-encoding" || (name == "content-length" && length != UINT64_MAX)) return false;
    if (name == "content-length") {
      if (value.empty() || value.size() > 15) return false;
      length = 0;
      for (const char c : value) {
        if (c < '0' || c > '9') return false;
        length = length * 10 + static_cast<std::uint64_t>(c - '0');
      }
    }
  }
  const std::size_t body = total - end - 4;
  status_field(s, status);
  if (length != body || !submit(s, fields, body == 0)) return false;
  s->head_sent = true;
  s->resp_done = true;
  if (body) {
    s->spans[0] = {data + end + 4, static_cast<std::uint32_t>(body)};
    s->span_n = 1;
    w.wheel.arm(&s->send_timer, w.now_ms() + settings(w).client_idle_timeout_ms);
  }
  return true;
}

// The trailer section the parser kept ("name\0value\0" each: collect_trailers)
// as trailing HEADERS, names lowered; fields HTTP/2 forbids or that frame the
// message are left out. False: none to send (the last DATA ends the stream).
bool submit_trailers(H2Stream* s) {
  const std::string_view t = s->resp.trailers();
  char* p = const_cast<char*>(t.data());
  char* const end = p + t.size();
  nghttp2_nv* nv = s->nva.get();
  std::size_t n = 0;
  while (p < end && n < s->header_cap) {
    const std::size_t nlen = std::strlen(p);
    char* value = p + nlen + 1;
    const std::size_t vlen = std::strlen(value);
    for (std::size_t k = 0; k < nlen; ++k)
      if (p[k] >= 'A' && p[k] <= 'Z') p[k] = static_cast<char>(p[k] + 32);
    const std::string_view name{p, nlen};
    if (!hop_by_hop(name) && name != "content-length" && name != "host" && name != "trailer")
      nv[n++] = {reinterpret_cast<std::uint8_t*>(p), reinterpret_cast<std::uint8_t*>(value), nlen, vlen,
                 NGHTTP2_NV_FLAG_NONE};
    p = value + vlen + 1;
  }
  return n && nghttp2_submit_trailer(s->conn->ng, s->id, nv, n) == 0;
}

// Parses the response head from the slices send() left, copied into `rhead`
// (a head may come in pieces and must be contiguous for the parser):
// interim answers (1xx) go as HEADERS of their own; the final one's HEADERS
// submitted (with a chunked answer to a client that sent `te: trailers`,
// `rhead` then keeps the trailer fields: read_body sends them). The
// slices' cursor ends after the head. False: broken (the stream is reset).
bool parse_head(H2Stream* s) {
  Worker& w = *s->conn->worker;
  while (s->iov_i < s->iov_n && !s->head_sent) {
    const uv_buf_t& b = s->iov[s->iov_i];
    if (s->iov_off == b.len) {
      ++s->iov_i;
      s->iov_off = 0;
      continue;
    }
    if (!s->rhead) {
      s->rhead = w.buffers.get();
      s->rhead_len = 0;
    }
    const std::size_t k = std::min<std::size_t>(b.len - s->iov_off, s->rhead->cap - s->rhead_len);
    if (k == 0) return false;  // a head larger than a buffer
    char* at = s->rhead->data + s->rhead_len;
    std::memcpy(at, b.base + s->iov_off, k);
    std::size_t used = 0;
    const ParseEvent ev = s->resp.feed(at, k, &used);
    if (ev == ParseEvent::Error) return false;
    if (ev == ParseEvent::NeedMore) {
      s->rhead_len += static_cast<std::uint32_t>(k);
      s->iov_off += k;
      continue;
    }
    s->iov_off += used;  // the rest of the slice is body
    if (s->resp.status() / 100 == 1) {
      // Interim (103 Early Hints, 100 Continue): HEADERS without END_STREAM,
      // as HTTP/1 relays them (relay.cpp lets through kMaxInterim of them and
      // never a 101, which HTTP/2 forbids).
      if (s->resp.status() != 101 &&
          nghttp2_submit_headers(s->conn->ng, NGHTTP2_FLAG_NONE, s->id, nullptr, s->nva.get(), head_fields(s),
                                 nullptr) < 0)
        return false;
      s->resp.init(HTTP_RESPONSE, s->resp_headers.get(), s->header_cap);
      s->resp.collect_body(true);
      s->rhead_len = 0;
      continue;
    }
    std::size_t none = 0;
    const bool bodyless = s->resp.feed(at + used, 0, &none) == ParseEvent::MessageComplete;
    if (!submit_head(s, bodyless)) return false;
    s->head_sent = true;
    s->resp_done = bodyless;
  }
  if (s->head_sent && s->req.te_trailers && s->resp.chunked() && !s->resp_done) {
    // nghttp2 copied the fields: the buffer keeps the trailers now.
    const auto cap = std::min<std::uint32_t>(s->rhead->cap, static_cast<std::uint32_t>(settings(w).header_bytes));
    s->resp.collect_trailers(s->rhead->data, cap);
  } else if (s->head_sent) {
    w.put_buffer(s->rhead);  // nghttp2 copied the fields
    s->rhead = nullptr;
  }
  return true;
}

bool slices_left(const H2Stream* s) {
  for (std::uint32_t i = s->iov_i; i < s->iov_n; ++i)
    if (s->iov[i].len > (i == s->iov_i ? s->iov_off : 0)) return true;
  return false;
}

// The rest of an answer whose head came in an earlier send (a server that
// wrote its head and its body apart): when this send holds its whole body
// (content-length), the body is copied into `kept` and the send completes at
// once, as quick_answer() does for a whole answer.
bool stash(H2Stream* s) {
  if (!s->resp.has_content_length() || s->resp.chunked()) return false;
  std::size_t left = 0;
  for (std::uint32_t i = s->iov_i; i < s->iov_n; ++i) left += s->iov[i].len - (i == s->iov_i ? s->iov_off : 0);
  Worker& w = *s->conn->worker;
  if (left != s->resp.content_length() || left > w.buffers.size()) return false;
  if (!s->kept) s->kept = w.buffers.get();
  char* at = s->kept->data;
  for (std::uint32_t i = s->iov_i; i < s->iov_n; ++i) {
    const std::size_t off = i == s->iov_i ? s->iov_off : 0;
    std::memcpy(at, s->iov[i].base + off, s->iov[i].len - off);
    at += s->iov[i].len - off;
  }
  s->spans[0] = {s->kept->data, static_cast<std::uint32_t>(left)};
  s->span_n = 1;
  s->span_i = s->span_off = 0;
  s->iov_i = s->iov_n;
  s->resp_done = true;
  w.wheel.arm(&s->send_timer, w.now_ms() + settings(w).client_idle_timeout_ms);
  return true;
}

// The stream's bytes were all taken: ClientWritten from the next flush.
void taken(H2Stream* s) {
  s->held = false;
  TimerWheel::disarm(&s->send_timer);
  h2_stream_release(s);  // with an exchange: its ClientWritten (see deliver_written)
}

// The next piece of the body after what the frames took: the rest of a
// decoded span, else the server's next bytes decoded in place (chunked: a
// span per chunk). Its length, 0 when there is none now, -1 when the server's
// bytes do not parse.
ssize_t next_piece(H2Stream* s, std::size_t max, const char** at) {
  for (;;) {
    if (s->span_i < s->span_n) {
      const BodySpan& sp = s->spans[s->span_i];
      const std::size_t k = std::min<std::size_t>(sp.len - s->span_off, max);
      *at = sp.data + s->span_off;
      s->span_off += static_cast<std::uint32_t>(k);
      if (s->span_off == sp.len) {
        ++s->span_i;
        s->span_off = 0;
      }
      return static_cast<ssize_t>(k);
    }
    if (s->resp_done || s->iov_i >= s->iov_n) return 0;
    const uv_buf_t& b = s->iov[s->iov_i];
    if (s->iov_off == b.len) {
      ++s->iov_i;
      s->iov_off = 0;
      continue;
    }
    std::size_t used = 0;
    const ParseEvent ev = s->resp.feed(b.base + s->iov_off, b.len - s->iov_off, &used);
    if (ev == ParseEvent::Error) return -1;
    s->span_n = s->resp.body_span_count();
    std::memcpy(s->spans, s->resp.body_spans(), s->span_n * sizeof(BodySpan));
    s->span_i = s->span_off = 0;
    s->iov_off += used;
    if (ev == ParseEvent::MessageComplete) s->resp_done = true;
  }
}

// A frame whose 8 pieces carry less than this is copied into nghttp2's buffer
// instead: a server's tiny chunks in one read would otherwise go as frames
// of a few dozen bytes, a 9-byte header each.
constexpr std::size_t kCopyBelow = 1024;

// The next DATA frame's payload, not copied: its pieces (`piece`) are
// written by the connection's on_send_data, which nghttp2 calls right after
// this in the same mem_send. Tiny pieces are copied into `buf` (kCopyBelow).
ssize_t read_body(nghttp2_session*, std::int32_t, std::uint8_t* buf, std::size_t len, std::uint32_t* flags,
                  nghttp2_data_source* src, void*) {
  auto* s = static_cast<H2Stream*>(src->ptr);
  std::size_t copied = 0;
  bool copy = false;
  s->piece_n = 0;
  while (copied < len) {
    if (!copy && s->piece_n == H2StreamState::kPieces) {
      if (copied >= kCopyBelow) break;
      for (std::size_t i = 0, at = 0; i < s->piece_n; at += s->piece_len[i], ++i)
        std::memcpy(buf + at, s->piece[i], s->piece_len[i]);
      s->piece_n = 0;
      copy = true;
    }
    const char* at = nullptr;
    const ssize_t k = next_piece(s, len - copied, &at);
    if (k < 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // the stream is reset
    if (k == 0) break;
    if (copy) {
      std::memcpy(buf + copied, at, static_cast<std::size_t>(k));
    } else {
      s->piece[s->piece_n] = at;
      s->piece_len[s->piece_n++] = static_cast<std::uint32_t>(k);
    }
    copied += static_cast<std::size_t>(k);
  }
  const std::uint32_t no_copy = copy ? 0 : NGHTTP2_DATA_FLAG_NO_COPY;
  const bool drained = s->span_i == s->span_n && (s->resp_done || !slices_left(s));
  if (drained && s->held) taken(s);
  else if (drained && s->resp_done) TimerWheel::disarm(&s->send_timer);  // quick_answer()'s or stash()'s body went
  if (drained && s->resp_done) {
    *flags |= NGHTTP2_DATA_FLAG_EOF | no_copy;
    if (s->rhead && submit_trailers(s)) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    return static_cast<ssize_t>(copied);
  }
  if (copied == 0) {
    s->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  *flags |= no_copy;
  return static_cast<ssize_t>(copied);
}

}  // namespace

// The exchange's answer bytes (HTTP/1.1): the slices are kept (the bytes stay
// valid until ClientWritten), the head goes to HEADERS now, the body as
// nghttp2 asks for it (the stream's window open).
bool H2Stream::send(uv_buf_t* v, unsigned n) noexcept {
  if (closed || conn->closing) return true;  // the client is gone; ClientGone comes or came
  if (n > iov_cap) {
    h2_stream_reset(this, NGHTTP2_INTERNAL_ERROR);
    return true;
  }
  if (!parsing && !head_sent && quick_answer(this, v, n)) {
    h2_dirty(conn);
    return true;
  }
  std::memcpy(iov.get(), v, n * sizeof(uv_buf_t));
  iov_n = n;
  iov_i = 0;
  iov_off = 0;
  if (!parsing) {
    parsing = true;
    resp.init(HTTP_RESPONSE, resp_headers.get(), header_cap);
    resp.max_head_bytes = conn->worker->buffers.size();
    resp.collect_body(true);
    if (ex && ex->is_head) resp.expect_no_body();
  }
  if (!head_sent && !parse_head(this)) {
    h2_stream_reset(this, NGHTTP2_INTERNAL_ERROR);
    return true;
  }
  h2_dirty(conn);
  if (!head_sent || resp_done || !slices_left(this)) return true;  // all taken now (a head, or its pieces)
  if (stash(this)) {
    resume();
    return true;
  }
  held = true;
  Worker& w = *conn->worker;
  w.wheel.arm(&send_timer, w.now_ms() + settings(w).client_idle_timeout_ms);
  resume();
  return false;
}

// The data source said it waits for bytes (read_body): they came.
void H2Stream::resume() noexcept {
  if (!deferred) return;
  deferred = false;
  nghttp2_session_resume_data(conn->ng, id);
}

// ---------------------------------------------------------------- request body

// The held body bytes, framed: as they are with content-length, else one
// chunk (the CRLF ending the previous one first) and, once END_STREAM came,
// the last chunk. The framing goes in the room kept around the bytes.
std::string_view H2Stream::available() noexcept {
  if (in_flight || final_sent) return {};
  const std::uint32_t len = body_len;
  if (len == 0 && !body_ended) return {};
  if (!body) body = conn->worker->buffers.get();
  char* data = body->data + kBodyReserve;
  framed_raw = len;
  final_framed = body_ended;
  if (req.has_length) return {data, len};
  char pre[kBodyReserve];
  std::size_t p = 0;
  if (body_started) {
    pre[p++] = '\r';
    pre[p++] = '\n';
  }
  if (len) p += static_cast<std::size_t>(std::snprintf(pre + p, sizeof pre - p, "%x\r\n", len));
  std::memcpy(data - p, pre, p);
  std::size_t tail = 0;
  if (body_ended) {
    static constexpr std::string_view kLast = "0\r\n\r\n";
    if (len) {
      data[len] = '\r';  // the data chunk's end
      data[len + 1] = '\n';
      tail = 2;
    }
    std::memcpy(data + len + tail, kLast.data(), kLast.size());
    tail += kLast.size();
  }
  return {data - p, p + len + tail};
}

void H2Stream::consume(std::size_t) noexcept {
  body_flight = framed_raw;
  in_flight = true;
  if (framed_raw) body_started = true;
  if (final_framed) final_sent = true;
}

// The write upstream carried the bytes: they go, the client may send as many
// again (WINDOW_UPDATE), and the request can no longer be replayed.
void H2Stream::written() noexcept {
  in_flight = false;
  const std::uint32_t raw = body_flight;
  body_flight = 0;
  if (raw == 0) return;
  char* data = body->data + kBodyReserve;
  std::memmove(data, data + raw, body_len - raw);
  body_len -= raw;
  replayable_ = false;
  if (!closed && !conn->closing) {
    nghttp2_session_consume(conn->ng, id, raw);
    h2_dirty(conn);
  }
}

void H2Stream::rewind() noexcept {
  in_flight = false;
  body_flight = 0;
  body_started = false;
  final_sent = false;
}

// A local answer: what is held and what still comes is dropped (its window
// given back, so the client can finish sending).
bool H2Stream::skip() noexcept {
  discard = true;
  const std::uint32_t held = body_len - body_flight;
  if (held && !closed && !conn->closing) {
    nghttp2_session_consume(conn->ng, id, held);
    h2_dirty(conn);
  }
  body_len = body_flight;
  return complete_;
}

}  // namespace juggler
