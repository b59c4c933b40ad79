// HTTP/2 streams as exchanges. The exchange speaks HTTP/1.1 to its
// Downstream, so a stream translates at its two ends and nothing in between
// knows: routing, the pool, retries, filters, the cache and the local
// answers run as for HTTP/1.
//
// Request: the pseudo-headers become the request line and Host
// (`:authority`), the fields follow as HTTP/1.1 lines (cookies joined into
// one line, RFC 9113 8.2.3), written into a pooled buffer that the exchange's
// parser reads like any head. A Host that disagrees with :authority is a
// malformed request (PROTOCOL_ERROR reset); nghttp2 already refused
// connection-specific fields and TE other than trailers. A body is relayed
// as it came when the request had content-length, else chunked.
//
// Response: the exchange's bytes (a server's head and body as relayed, or a
// local answer) are parsed again here: the head, copied, becomes HEADERS
// (names in lower case, hop-by-hop fields dropped), the body (its HTTP/1
// framing removed by the parser, in place) DATA. Flow control is the
// backpressure: until nghttp2 took a send's bytes (the stream's window may be
// closed) no ClientWritten comes, so the exchange stops reading its server;
// the other streams go on.
#include <strings.h>

#include <cstdio>
#include <cstring>

#include "exchange/exchange.hpp"
#include "http1/connection.hpp"
#include "http2/internal.hpp"

namespace juggler {

namespace {

constexpr std::uint32_t kBodyReserve = 16;  // room for a chunk's size line before the bytes
constexpr std::uint32_t kBodyTail = 16;     // and for "\r\n0\r\n\r\n" after them (response.cpp frames)
constexpr std::string_view kChunked = "Transfer-Encoding: chunked\r\n";

std::string_view view(nghttp2_rcbuf* b) {
  const nghttp2_vec v = nghttp2_rcbuf_get_buf(b);
  return {reinterpret_cast<const char*>(v.base), v.len};
}

void drop(nghttp2_rcbuf*& b) {
  if (b) nghttp2_rcbuf_decref(b);
  b = nullptr;
}

// Appends to the head; false when it would pass limit.header_bytes (the room
// left for the end of the head kept).
bool put(H2Stream* s, std::initializer_list<std::string_view> parts) {
  std::size_t n = 0;
  for (std::string_view p : parts) n += p.size();
  if (s->head_len + n + kChunked.size() + 2 > s->head->cap) return false;
  for (std::string_view p : parts) {
    std::memcpy(s->head->data + s->head_len, p.data(), p.size());
    s->head_len += static_cast<std::uint32_t>(p.size());
  }
  return true;
}

// The request line and Host, once the pseudo-headers are all there (they
// come first): :path and :authority go through map_target, the mapping of
// HTTP/1's targets. False when :method or :path is missing (CONNECT has no
// path: it is not relayed) or :path is not origin-form or "*" (RFC 9113
// 8.3.1; nghttp2 lets any :path by with a :scheme other than http(s)), else
// true (too_large set when the line does not fit).
bool write_line(H2Stream* s) {
  s->line_written = true;
  if (!s->method || !s->path) return false;
  RequestTarget t;
  if (map_target(view(s->path), s->authority ? view(s->authority) : std::string_view{}, t) || t.absolute ||
      t.origin.empty())
    return false;
  const bool ok = put(s, {view(s->method), " ", t.origin, " HTTP/1.1\r\n"}) &&
                  (t.authority.empty() || put(s, {"Host: ", t.authority, "\r\n"}));
  drop(s->method);
  drop(s->path);
  if (!ok) s->too_large = true;
  return true;
}

// A second cookie field is joined to the first: "; " and the value spliced
// in at the first line's end (the lines after it move).
bool join_cookie(H2Stream* s, std::string_view value) {
  const std::size_t add = 2 + value.size();
  if (s->head_len + add + kChunked.size() + 2 > s->head->cap) return false;
  char* at = s->head->data + s->cookie_end;
  std::memmove(at + add, at, s->head_len - s->cookie_end);
  at[0] = ';';
  at[1] = ' ';
  std::memcpy(at + 2, value.data(), value.size());
  s->head_len += static_cast<std::uint32_t>(add);
  s->cookie_end += static_cast<std::uint32_t>(add);
  return true;
}

void refuse(H2Stream* s, std::uint32_t error) {
  s->bad = true;
  h2_stream_reset(s, error);
}

}  // namespace

H2Stream* h2_stream_begin(H2Conn* c, std::int32_t id) {
  Worker& w = *c->worker;
  H2Worker& hw = *w.h2;
  H2Stream* s = hw.free_streams;
  if (s) {
    hw.free_streams = s->next;
    --hw.free_stream_count;
  } else {
    s = new H2Stream();
  }
  s->state() = {};
  const std::uint32_t hc = settings(w).header_count;
  if (s->header_cap != hc) {
    s->header_cap = hc;
    s->resp_headers = std::make_unique<HeaderSpan[]>(hc);
    s->nva = std::make_unique<nghttp2_nv[]>(hc + 1);
    s->iov_cap = 2 * hc + 8;  // as the exchange's own
    s->iov = std::make_unique<uv_buf_t[]>(s->iov_cap);
  }
  s->conn = c;
  s->id = id;
  const std::string_view peer = c->session->peer();
  std::memcpy(s->ip, peer.data(), peer.size());
  s->ip_len = static_cast<std::uint8_t>(peer.size());
  s->secure_ = true;
  s->h2_ = true;
  s->complete_ = false;
  s->replayable_ = true;
  s->head = w.buffers.get();
  s->next = c->streams;
  if (c->streams) c->streams->prev = s;
  c->streams = s;
  ++c->stream_count;
  if (!c->goaway) TimerWheel::disarm(&c->timer);
  return s;
}

int h2_stream_header(H2Stream* s, nghttp2_rcbuf* name, nghttp2_rcbuf* value) {
  const std::string_view n = view(name), v = view(value);
  if (s->too_large) return 0;
  if (!n.empty() && n[0] == ':') {
    nghttp2_rcbuf** keep = n == ":method" ? &s->method : n == ":path" ? &s->path : n == ":authority" ? &s->authority
                                                                                                    : nullptr;
    if (keep && !*keep) {
      nghttp2_rcbuf_incref(value);
      *keep = value;
    }
    return 0;  // :scheme and the rest: nghttp2 checked them
  }
  if (!s->line_written && !write_line(s)) {
    refuse(s, NGHTTP2_PROTOCOL_ERROR);
    return 0;
  }
  bool ok = true;
  if (n == "host") {
    if (s->authority) {
      const std::string_view a = view(s->authority);
      if (a.size() != v.size() || strncasecmp(a.data(), v.data(), a.size()) != 0) {
        refuse(s, NGHTTP2_PROTOCOL_ERROR);  // RFC 9113 8.3.1: they must agree
        return 0;
      }
      return 0;  // Host went with the request line
    }
    ok = put(s, {"Host: ", v, "\r\n"});
  } else if (n == "cookie") {
    if (s->cookie_end) {
      ok = join_cookie(s, v);
    } else {
      ok = put(s, {"Cookie: ", v});
      s->cookie_end = s->head_len;
      ok = ok && put(s, {"\r\n"});
    }
  } else {
    if (n == "content-length") s->has_length = true;
    ok = put(s, {n, ": ", v, "\r\n"});
  }
  if (!ok) s->too_large = true;
  return 0;
}

// The head is complete: it goes to a new exchange as an HTTP/1.1 head.
void h2_stream_headers_done(H2Stream* s, bool end_stream) {
  if (s->bad) return;
  if (!s->line_written && !write_line(s)) {
    refuse(s, NGHTTP2_PROTOCOL_ERROR);
    return;
  }
  drop(s->authority);
  if (!end_stream && !s->has_length) put(s, {kChunked});
  put(s, {"\r\n"});
  s->body_ended = end_stream;
  s->final_sent = end_stream;  // no body: nothing to frame
  s->complete_ = end_stream;
  Worker& w = *s->conn->worker;
  Exchange* ex = exchange_get(w);
  s->ex = ex;
  exchange_begin(ex, s, s);
  ex->start_us = now_us();
  if (s->too_large) {
    h2_glitch(s->conn);  // an HPACK bomb or a CONTINUATION flood is refused here, and counted
    step(ex, Event::Refuse, 431);
    return;
  }
  std::size_t used = 0;
  const ParseEvent ev = ex->req.feed(s->head->data, s->head_len, &used);
  if (ev != ParseEvent::HeadComplete) {
    step(ex, Event::Refuse, ev == ParseEvent::Error ? ex->req.error_status() : 400);
    return;
  }
  ex->bytes_in = s->head_len;
  if (!ex->req.has_body()) ex->req.feed(s->head->data + used, 0, &used);  // passes the message's end
  ex->client_close = false;
  step(ex, Event::HeadParsed);
}

int h2_stream_data(H2Stream* s, const std::uint8_t* data, std::size_t len) {
  H2Conn* c = s->conn;
  if (s->discard || !s->ex) {
    nghttp2_session_consume(c->ng, s->id, len);
    return 0;
  }
  Worker& w = *c->worker;
  if (!s->body) s->body = w.buffers.get();
  if (kBodyReserve + s->body_len + len + kBodyTail > s->body->cap) {
    refuse(s, NGHTTP2_FLOW_CONTROL_ERROR);  // past the window we gave
    return 0;
  }
  std::memcpy(s->body->data + kBodyReserve + s->body_len, data, len);
  s->body_len += static_cast<std::uint32_t>(len);
  s->body_total += len;
  s->ex->bytes_in += len;
  if (s->body_total > settings(w).body_bytes) {
    s->discard = true;
    step(s->ex, Event::Refuse, 413);
    return 0;
  }
  if (!s->in_flight && exchange_wants_body(s->ex)) step(s->ex, Event::Body);
  return 0;
}

void h2_stream_end(H2Stream* s) {
  if (s->body_ended) return;
  s->body_ended = true;
  s->complete_ = true;
  if (s->ex && !s->in_flight && !s->discard && exchange_wants_body(s->ex)) step(s->ex, Event::Body);
}

// nghttp2 closed the stream (inside mem_recv or mem_send). An exchange still
// running loses its client, but for the normal end: the last DATA went and
// its ClientWritten is on the way.
void h2_stream_closed(H2Stream* s, std::uint32_t error) {
  s->closed = true;
  nghttp2_session_set_stream_user_data(s->conn->ng, s->id, nullptr);
  if (s->ex && (error != NGHTTP2_NO_ERROR || !s->resp_done)) step(s->ex, Event::ClientGone);
  if (!s->ex) h2_stream_release(s);
}

void h2_stream_reset(H2Stream* s, std::uint32_t error) noexcept {
  if (s->closed || s->conn->closing) return;
  nghttp2_submit_rst_stream(s->conn->ng, NGHTTP2_FLAG_NONE, s->id, error);
  h2_dirty(s->conn);
}

// Freed from the connection's next flush (a stream may be in its notify
// list, or inside an nghttp2 callback now).
void h2_stream_release(H2Stream* s) noexcept {
  if (s->notify || s->conn->closing) return;
  s->notify = true;
  s->notify_next = s->conn->notify_head;
  s->conn->notify_head = s;
  h2_dirty(s->conn);
}

void h2_stream_free(H2Stream* s) noexcept {
  H2Conn* c = s->conn;
  Worker& w = *c->worker;
  drop(s->method);
  drop(s->path);
  drop(s->authority);
  w.put_buffer(s->head);
  w.put_buffer(s->body);
  w.put_buffer(s->rhead);
  s->head = s->body = s->rhead = nullptr;
  if (s->prev) s->prev->next = s->next;
  else c->streams = s->next;
  if (s->next) s->next->prev = s->prev;
  if (--c->stream_count == 0 && !c->goaway && !c->closing)
    w.wheel.arm(&c->timer, w.now_ms() + settings(w).client_idle_timeout_ms);
  H2Worker& hw = *w.h2;
  if (hw.free_stream_count >= 1024) {
    delete s;
    return;
  }
  s->next = hw.free_streams;
  hw.free_streams = s;
  ++hw.free_stream_count;
}

const char* H2Stream::tls_version() const noexcept { return conn->stream->tls_version(); }

void H2Stream::done(bool, bool) noexcept {
  ex = nullptr;
  if (!head_sent) {
    h2_stream_reset(this, NGHTTP2_INTERNAL_ERROR);
  } else if (!resp_done) {
    resp_done = true;  // a body delimited by the server's close ended
    if (deferred) {
      deferred = false;
      nghttp2_session_resume_data(conn->ng, id);
      h2_dirty(conn);
    }
  }
  if (closed) h2_stream_release(this);
}

void H2Stream::abort() noexcept {
  ex = nullptr;
  h2_stream_reset(this, NGHTTP2_INTERNAL_ERROR);
  if (closed) h2_stream_release(this);
}

}  // namespace juggler
