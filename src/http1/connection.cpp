// HTTP/1 client connections: the byte stream below (TCP or TLS), parsing and
// pipelining, keep-alive and lingering close above, one exchange at a time.
//
// Ownership: a ClientSession is freed (or kept for reuse) in its stream's
// close callback (on_stream_closed). Sessions are torn down only from libuv
// callbacks at the top of the stack, so no function touches one after it was
// released.
#include "http1/connection.hpp"

#include <netinet/in.h>

#include <cstring>
#include <new>

#include "exchange/exchange.hpp"
#include "http2/h2.hpp"

namespace juggler {

namespace {

constexpr std::uint64_t kLingerMs = 2000;
// Drain: how long a connection accepted just before may take to send its
// first request (it was on its way: one round trip, on a loaded machine).
constexpr std::uint64_t kFirstRequestGraceMs = 1000;

void client_eof(ClientSession* s, int err) {
  s->eof = true;
  s->stream.set_reading(false);
  if (s->lingering || err != UV_EOF || !s->ex) {
    client_abort(s);
    return;
  }
  if (s->reading_head || !s->complete()) {
    client_abort(s);
    return;
  }
  s->ex->client_close = true;  // answer what was asked, then close
}

// Sessions are recycled through a per-worker free list (bounded), so a new
// connection costs no allocation at steady state.
constexpr std::size_t kKeepFreeSessions = 1024;

void close_handles(ClientSession* s) {
  session_unlink(s);
  TimerWheel::disarm(&s->timer);
  s->stream.close();
}

ClientSession* session_get(Worker& w) {
  ClientSession* s = w.free_sessions;
  if (!s) return new ClientSession();
  w.free_sessions = s->next;
  --w.free_session_count;
  s->~ClientSession();
  return new (s) ClientSession();
}

}  // namespace

void session_unlink(ClientSession* s) noexcept {
  Worker& w = *s->worker;
  if (s->prev) s->prev->next = s->next;
  else w.sessions = s->next;
  if (s->next) s->next->prev = s->prev;
  s->prev = s->next = nullptr;
  --w.session_count;
}

void update_client_reading(ClientSession* s) {
  if (s->stream.closing()) return;
  bool want = !s->eof;
  if (want && s->in && s->in_len >= s->in->cap) want = false;  // full: wait for the exchange
  if (want && s->ex && s->in_flight && !s->complete()) want = false;  // backpressure: a write of the request is under way
  if (s->lingering) want = !s->eof;  // discarding
  s->stream.set_reading(want);
}

// Closes at once: the exchange (and its server connection) is abandoned; it
// releases itself and calls abort() back.
void client_abort(ClientSession* s) {
  if (s->stream.closing()) return;
  if (s->ex) {
    step(s->ex, Event::ClientGone);
    return;
  }
  close_handles(s);
}

void ClientSession::abort() noexcept {
  ex = nullptr;
  if (!stream.closing()) close_handles(this);
}

// Closes after the answer was written. With `linger`, the write side is shut
// down first and what the client still sends is read and discarded for a
// moment, so a reset does not destroy the answer in flight.
void client_finish(ClientSession* s, bool linger) {
  if (s->stream.closing()) return;
  // TLS: close_notify before the close, so a body delimited by the close is
  // not mistaken for a truncated one (RFC 8446 6.1).
  if (!s->lingering && !s->stream.close_notify()) return;  // the write failed: aborted
  if (s->stream.write_pending()) {
    s->close_after_write = true;
    s->linger_on_close = linger;
    return;
  }
  if (!linger || s->eof) {
    client_abort(s);
    return;
  }
  s->lingering = true;
  s->stream.discard_input();
  if (s->stream.shutdown_write() != 0) {
    client_abort(s);
    return;
  }
  s->worker->wheel.arm(&s->timer, s->worker->now_ms() + kLingerMs);
  update_client_reading(s);
}

namespace {

// The request head in the buffer: parsed, then handed to the exchange (Event::HeadParsed).
// False when parsing must wait for more bytes or the connection is done.
bool request_head(ClientSession* s, Exchange* ex) {
  char* base = s->in->data;
  std::size_t used = 0;
  const ParseEvent ev = ex->req.feed(base + s->parse_pos, s->in_len - s->parse_pos, &used);
  if (ev == ParseEvent::NeedMore) {
    s->parse_pos = s->in_len;
    if (s->in_len == s->in->cap) step(ex, Event::Refuse, 431);
    return false;
  }
  if (ev == ParseEvent::Error) {
    log(LogLevel::Debug, "bad request from %.*s: %s", s->ip_len, s->ip, ex->req.error_reason());
    step(ex, Event::Refuse, ex->req.error_status());
    return false;
  }
  s->parse_pos += static_cast<std::uint32_t>(used);
  ex->bytes_in = ex->req.head_len();
  s->head_end = s->body_end = s->sent_to = s->parse_pos;
  s->reading_head = false;
  if (!ex->req.has_body()) {
    ex->req.feed(base + s->parse_pos, 0, &used);  // passes the message's end
    s->complete_ = true;
  }
  Worker& w = *s->worker;
  TimerWheel::disarm(&s->timer);
  ++s->requests;
  const Settings& st = settings(w);
  ex->client_close = !ex->req.keep_alive() || w.draining || s->drained ||
                     (st.requests_per_connection && s->requests >= st.requests_per_connection);
  step(ex, Event::HeadParsed);
  return true;  // the exchange may have ended already (a local answer)
}

// Request body bytes in the buffer: parsed (framing checked, chunked bodies
// held to limit.body_bytes as they stream) and sent on. False when parsing
// must wait.
bool request_body(ClientSession* s, Exchange* ex) {
  std::size_t used = 0;
  const ParseEvent ev = ex->req.feed(s->in->data + s->parse_pos, s->in_len - s->parse_pos, &used);
  if (ev == ParseEvent::Error) {
    step(ex, Event::Refuse, 400);
    return false;
  }
  s->parse_pos += static_cast<std::uint32_t>(used);
  ex->bytes_in += used;
  s->body_end = s->parse_pos;
  if (ev == ParseEvent::MessageComplete) s->complete_ = true;
  // Content-Length was checked at the head: what went upstream is cut off
  // with the request.
  if (ex->req.chunked() && ex->req.chunked_body_bytes() > settings(*s->worker).body_bytes) {
    step(ex, Event::Refuse, 413);
    return false;
  }
  const bool complete = s->complete();
  step(ex, Event::Body);
  return complete;
}

}  // namespace

// The write that carried the request's bytes completed. While a large body
// streams, the buffer starts over once everything in it went upstream (then
// the request can no longer be replayed), a bigger one from here on.
void ClientSession::written() noexcept {
  in_flight = false;
  if (!complete() && in && in_len >= in->cap && sent_to >= in_len) {
    in_len = parse_pos = 0;
    head_end = body_end = sent_to = 0;
    replayable_ = false;
    in = worker->upgrade(in);
  }
  update_client_reading(this);
}

// A local answer to a request whose body is still arriving: the part of the
// body in the buffer is read past, so the connection can be kept.
bool ClientSession::skip() noexcept {
  if (complete() || !in || !ex) return complete();
  std::size_t used = 0;
  if (ex->req.feed(in->data + parse_pos, in_len - parse_pos, &used) == ParseEvent::MessageComplete) {
    parse_pos += static_cast<std::uint32_t>(used);
    complete_ = true;
  }
  return complete();
}

// Parses and acts on what the client sent. Called after each read and when an
// exchange finishes with pipelined bytes waiting.
void process_client(ClientSession* s) {
  // Once an answer said the connection closes, nothing more is parsed: what
  // follows may be the body of a refused request, not a request.
  while (!s->stream.closing() && !s->lingering && !s->close_after_write && s->in) {
    if (!s->ex) {
      if (s->parse_pos == s->in_len) break;
      s->ex = exchange_get(*s->worker);
      exchange_begin(s->ex, s, s);
      s->ex->start_us = now_us();
      s->head_end = s->body_end = s->sent_to = 0;
      s->in_flight = false;
      s->reading_head = true;
      s->complete_ = false;
      s->replayable_ = true;
      s->worker->wheel.arm(&s->timer, s->worker->now_ms() + settings(*s->worker).client_header_timeout_ms);
    }
    Exchange* ex = s->ex;
    if (s->reading_head) {
      if (!request_head(s, ex)) break;
      continue;
    }
    // Pipelined bytes wait for this exchange to end.
    if (s->complete() || !exchange_wants_body(ex) || !request_body(s, ex)) break;
  }
  if (!s->stream.closing()) update_client_reading(s);
}

uv_buf_t ClientSession::on_stream_alloc() noexcept {
  if (!in) {
    in = worker->buffers.get();
    in_len = parse_pos = 0;
  }
  return uv_buf_init(in->data + in_len, in->cap - in_len);
}

void ClientSession::on_stream_read(ssize_t n) noexcept {
  if (n > 0) {
    in_len += static_cast<std::uint32_t>(n);
    worker->metrics.bytes_in.add(static_cast<std::uint64_t>(n));
    if (alpn_check) [[unlikely]] {
      alpn_check = false;
      if (stream.alpn_h2()) {
        h2_adopt(this);  // the stream is HTTP/2's from here on
        return;
      }
    }
    process_client(this);
    return;
  }
  if (n == 0) {
    // Nothing arrived (a TLS handshake record): an idle connection holds no buffer.
    if (in && in_len == 0 && !ex) {
      worker->put_buffer(in);
      in = nullptr;
    }
    return;
  }
  if (n == UV_EPROTO && stream.secure())
    log(LogLevel::Debug, "TLS from %.*s: %s", ip_len, ip, stream.tls_error());
  client_eof(this, static_cast<int>(n));
}

void ClientSession::on_stream_written(int status) noexcept {
  if (status < 0) {
    client_abort(this);
    return;
  }
  if (!ex) {
    if (close_after_write) client_finish(this, linger_on_close);
    return;
  }
  step(ex, Event::ClientWritten);
}

void ClientSession::on_stream_closed() noexcept {
  Worker& w = *worker;
  w.put_buffer(in);
  in = nullptr;
  proxy.release();  // closed before its PROXY header was complete
  if (w.free_session_count >= kKeepFreeSessions) {
    delete this;
    return;
  }
  next = w.free_sessions;
  w.free_sessions = this;
  ++w.free_session_count;
}

// The exchange ended: the connection closes (lingering when the client may
// still be sending: an unread body, or pipelined requests we will not
// answer; closing with unread input would reset the connection and could
// destroy the answer in flight), or goes on with the next request.
void ClientSession::done(bool close, bool linger) noexcept {
  ClientSession* s = this;
  ex = nullptr;
  close = close || eof;
  linger = linger || parse_pos < in_len;
  Worker& w = *s->worker;
  if (close) {
    client_finish(s, linger);
    return;
  }
  s->stream.trim();
  // Keep-alive: what follows in the buffer is the next (pipelined) request.
  if (s->parse_pos < s->in_len) {
    std::memmove(s->in->data, s->in->data + s->parse_pos, s->in_len - s->parse_pos);
    s->in_len -= s->parse_pos;
    s->parse_pos = 0;
    process_client(s);
    return;
  }
  w.put_buffer(s->in);
  s->in = nullptr;
  s->in_len = s->parse_pos = 0;
  w.wheel.arm(&s->timer, w.now_ms() + settings(w).client_idle_timeout_ms);
  update_client_reading(s);
}

// The client's one timeout means, by state: lingering after an answer is
// over; a head that is not complete in time is 408; an idle keep-alive
// connection (or one that never sent a byte) is closed.
void on_client_timer(TimerNode* t) {
  auto* s = static_cast<ClientSession*>(t->owner);
  if (!s->lingering && s->ex && s->reading_head) {
    step(s->ex, Event::Refuse, 408);
    return;
  }
  if (s->ex && !s->lingering) return;  // the exchange's own timer watches it
  if (s->lingering || s->stream.write_pending()) {
    client_abort(s);
  } else {
    // Idle: a graceful close (close_notify over TLS). Should that write stall,
    // the timer fires again and the connection is dropped.
    s->worker->wheel.arm(&s->timer, s->worker->now_ms() + kLingerMs);
    client_finish(s, false);
  }
}

// Accepts a pending connection of `server` into a new session (TLS with
// `tls`), and starts reading its first request.
void client_accept(Worker& w, uv_stream_t* server, SSL_CTX* tls, bool proxy_protocol) {
  auto* s = session_get(w);
  s->worker = &w;
  s->stream.init(w.streams, s);
  s->timer.fire = on_client_timer;
  s->timer.owner = s;
  s->next = w.sessions;
  if (w.sessions) w.sessions->prev = s;
  w.sessions = s;
  ++w.session_count;
  w.session_water.note(w.session_count);
  if (s->stream.accept(server, tls) != 0) {
    close_handles(s);
    return;
  }
  s->ip_len = s->stream.peer_ip(s->ip);
  s->secure_ = s->stream.secure();
  s->alpn_check = s->secure_;
  if (proxy_protocol) s->proxy.start(s->stream, w.buffers, s->ip, &s->ip_len, nullptr, nullptr);
  w.wheel.arm(&s->timer, w.now_ms() + settings(w).client_header_timeout_ms);
  update_client_reading(s);
}

void session_drain(Worker& w, bool (*which)(ClientSession&, const void*), const void* arg) noexcept {
  ClientSession* s = w.sessions;
  while (s) {
    ClientSession* next = s->next;
    if (which && !which(*s, arg)) {
      s = next;
      continue;
    }
    if (s->h2) h2_drain(s->h2);
    else if (s->ex) s->ex->client_close = true;
    else if (s->stream.closing() || s->lingering) {
      // on its way out already
    }
    // Accepted, no request yet: closing it would reset the request the client
    // may be sending (a failed request on a fresh connection, which a client
    // does not retry). Its first request is answered with Connection: close;
    // one that has not begun within a moment is closed as idle.
    else if (s->requests == 0) {
      s->drained = true;
      const std::uint64_t grace = w.now_ms() + kFirstRequestGraceMs;
      if (s->timer.armed() && s->timer.due_ms > grace) w.wheel.arm(&s->timer, grace);
    }
    else client_finish(s, false);
    s = next;
  }
}

void session_worker_done(Worker& w) noexcept {
  // After the loop ended: every session's close callback has run.
  while (ClientSession* s = w.free_sessions) {
    w.free_sessions = s->next;
    delete s;
  }
  w.free_session_count = 0;
  h2_worker_done(w);
  // The pooled write requests go with the worker's StreamContext, later
  // still: a write still queued when its handle was closed returns its
  // request from the cancel callback, which can run after
  // session_free_exchanges (the last session closed in the same loop turn).
}

}  // namespace juggler
