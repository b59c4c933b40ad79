// HTTP/2 streams as exchanges. The exchange speaks HTTP/1.1 to its
// Downstream, so a stream translates at its two ends and nothing in between
// knows: routing, the pool, retries, filters, the cache and the local
// answers run as for HTTP/1.
//
// Request: the fields become an HTTP/1.1 head (request_head.cpp: the
// pseudo-headers through map_target, as HTTP/1's targets) in a pooled buffer
// that the exchange's parser reads like any head; a malformed request is a
// PROTOCOL_ERROR reset. A body is relayed as it came when the request had
// content-length, else chunked.
//
// Response: the exchange's bytes (a server's head and body as relayed, or a
// local answer) are parsed again here: the head, copied, becomes HEADERS
// (names in lower case, hop-by-hop fields dropped), the body (its HTTP/1
// framing removed by the parser, in place) DATA. Flow control is the
// backpressure: until nghttp2 took a send's bytes (the stream's window may be
// closed) no ClientWritten comes, so the exchange stops reading its server;
// the other streams go on.
#include <cstdio>
#include <cstring>

#include "exchange/exchange.hpp"
#include "http1/connection.hpp"
#include "http2/internal.hpp"

namespace juggler {

namespace {

constexpr std::uint32_t kBodyReserve = 16;  // room for a chunk's size line before the bytes
constexpr std::uint32_t kBodyTail = 16;     // and for "\r\n0\r\n\r\n" after them (response.cpp frames)

void refuse(H2Stream* s, std::uint32_t error) {
  s->bad = true;
  h2_stream_reset(s, error);
}

// A held send the client took nothing of for timeout.client_idle (internal.hpp).
void on_send_timer(TimerNode* t) {
  auto* s = static_cast<H2Stream*>(t->owner);
  h2_stream_reset(s, NGHTTP2_CANCEL);
  if (s->ex) step(s->ex, Event::ClientGone);
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
    s->send_timer.fire = on_send_timer;
    s->send_timer.owner = s;
  }
  s->state() = {};
  const std::uint32_t hc = settings(w).header_count;
  if (s->header_cap != hc) {
    s->header_cap = hc;
    s->resp_headers = std::make_unique<HeaderSpan[]>(hc);
    s->nva = std::make_unique<nghttp2_nv[]>(hc + 1);
    s->iov_cap = exchange_iov_cap(hc);  // the exchange's sends are copied whole
    s->iov = std::make_unique<uv_buf_t[]>(s->iov_cap);
  }
  s->conn = c;
  s->id = id;
  const std::string_view peer = c->session->peer();
  std::memcpy(s->ip, peer.data(), peer.size());
  s->ip_len = static_cast<std::uint8_t>(peer.size());
  s->complete_ = false;
  s->replayable_ = true;
  s->head = w.buffers.get();
  s->req.data = s->head->data;
  s->req.cap = s->head->cap;
  s->next = c->streams;
  if (c->streams) c->streams->prev = s;
  c->streams = s;
  ++c->stream_count;
  if (!c->goaway && !c->notice) TimerWheel::disarm(&c->timer);  // (a drain's timer stays)
  return s;
}

int h2_stream_header(H2Stream* s, nghttp2_rcbuf* name, nghttp2_rcbuf* value) {
  if (!h2_head_field(s->req, name, value)) refuse(s, NGHTTP2_PROTOCOL_ERROR);
  return 0;
}

// The head is complete: it goes to a new exchange as an HTTP/1.1 head.
void h2_stream_headers_done(H2Stream* s, bool end_stream) {
  if (s->bad) return;
  if (!h2_head_end(s->req, end_stream)) {
    refuse(s, NGHTTP2_PROTOCOL_ERROR);
    return;
  }
  s->body_ended = end_stream;
  s->final_sent = end_stream;  // no body: nothing to frame
  s->complete_ = end_stream;
  Worker& w = *s->conn->worker;
  Exchange* ex = exchange_get(w);
  s->ex = ex;
  exchange_begin(ex, s, s);
  ex->start_us = now_us();
  if (s->req.too_large) {
    h2_glitch(s->conn);  // an HPACK bomb or a CONTINUATION flood is refused here, and counted
    step(ex, Event::Refuse, 431);
    return;
  }
  std::size_t used = 0;
  const ParseEvent ev = ex->req.feed(s->req.data, s->req.len, &used);
  if (ev != ParseEvent::HeadComplete) {
    step(ex, Event::Refuse, ev == ParseEvent::Error ? ex->req.error_status() : 400);
    return;
  }
  ex->bytes_in = s->req.len;
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
  if (s->ex && (error != NGHTTP2_NO_ERROR || !s->resp_done)) {
    // Not while the write list may hold its bytes (connection.cpp gather):
    // the exchange would let go of them before TLS took them.
    if (!s->conn->gathering) step(s->ex, Event::ClientGone);
    else s->gone = true;
  }
  if (!s->ex || s->gone) h2_stream_release(s);
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
  h2_head_drop(s->req);
  TimerWheel::disarm(&s->send_timer);
  w.put_buffer(s->head);
  w.put_buffer(s->body);
  w.put_buffer(s->rhead);
  w.put_buffer(s->kept);
  s->head = s->body = s->rhead = s->kept = nullptr;
  if (s->prev) s->prev->next = s->next;
  else c->streams = s->next;
  if (s->next) s->next->prev = s->prev;
  if (--c->stream_count == 0 && !c->goaway && !c->notice && !c->closing)
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
      resume();
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
