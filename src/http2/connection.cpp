// HTTP/2 connections: an nghttp2 server session over the client's byte stream
// (TLS, h2 chosen by ALPN). Input goes to nghttp2_session_mem_recv as it is
// read; output is pulled with nghttp2_session_mem_send into one write list
// and written once per loop turn (the worker's idle phase), one write at a
// time: frames copied into one buffer, DATA payloads left where they are
// (NGHTTP2_DATA_FLAG_NO_COPY and on_send_data), so a body's bytes are copied
// only by TLS, which encrypts them inside write().
// nghttp2 does the framing, HPACK, flow control and the protocol's own
// checks (connection-specific headers, TE, pseudo-headers, content-length
// against DATA); this file adds the limits and the flood budget, and
// stream.cpp turns each stream into an exchange.
//
// The budget: every client RST_STREAM, stream closed in error (a reset the
// client provoked: "MadeYouReset"), empty DATA, SETTINGS, PING, invalid
// frame and HEADERS on a stream id already passed counts one "glitch"; past `set h2.glitches` the connection gets GOAWAY
// ENHANCE_YOUR_CALM and closes (Rapid Reset, CVE-2023-44487, and the floods
// after it). CONTINUATION floods end at nghttp2's limit of CONTINUATION
// frames per header block and at the header list limit (stream.cpp).
#include <cstdint>
#include <cstring>
#include <new>

#include "exchange/exchange.hpp"
#include "http1/connection.hpp"
#include "http2/internal.hpp"
#include "http2/session.hpp"

namespace juggler {

namespace {

constexpr std::uint64_t kCloseMs = 2000;  // a graceful close (GOAWAY, close_notify) that stalls is cut
// A drain's shutdown notice to its final GOAWAY: the requests the client sent
// before it read the notice arrive within this (a round trip, on a loaded machine).
constexpr std::uint64_t kNoticeMs = 1000;

void on_idle(uv_idle_t* h);

H2Conn* conn_get(H2Worker& hw) {
  H2Conn* c = hw.free_conns;
  if (!c) return new H2Conn();
  hw.free_conns = c->next_free;
  c->~H2Conn();
  return new (c) H2Conn();
}

H2Stream* stream_of(nghttp2_session* ng, std::int32_t id) {
  return static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(ng, id));
}

int on_begin_headers(nghttp2_session* ng, const nghttp2_frame* f, void* user) {
  auto* c = static_cast<H2Conn*>(user);
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  H2Stream* s = h2_stream_begin(c, f->hd.stream_id);
  nghttp2_session_set_stream_user_data(ng, f->hd.stream_id, s);
  return 0;
}

int on_header(nghttp2_session* ng, const nghttp2_frame* f, nghttp2_rcbuf* name, nghttp2_rcbuf* value, std::uint8_t,
              void*) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // trailers: dropped
  H2Stream* s = stream_of(ng, f->hd.stream_id);
  if (!s || s->bad) return 0;
  return h2_stream_header(s, name, value);
}

int on_frame_recv(nghttp2_session* ng, const nghttp2_frame* f, void* user) {
  auto* c = static_cast<H2Conn*>(user);
  const bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (f->hd.type) {
    case NGHTTP2_HEADERS: {
      H2Stream* s = stream_of(ng, f->hd.stream_id);
      if (!s) return 0;
      if (f->headers.cat == NGHTTP2_HCAT_REQUEST) h2_stream_headers_done(s, end);
      else if (end) h2_stream_end(s);  // trailers end the body
      return 0;
    }
    case NGHTTP2_DATA: {
      if (f->hd.length == 0 && !end) h2_glitch(c);
      H2Stream* s = stream_of(ng, f->hd.stream_id);
      if (s && end) h2_stream_end(s);
      return 0;
    }
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:  // the client's own, not the ACKs of ours
      if (!(f->hd.flags & NGHTTP2_FLAG_ACK)) h2_glitch(c);
      return 0;
    default:
      return 0;
  }
}

int on_data_chunk(nghttp2_session* ng, std::uint8_t, std::int32_t id, const std::uint8_t* data, std::size_t len,
                  void*) {
  H2Stream* s = stream_of(ng, id);
  if (!s || s->bad) {
    nghttp2_session_consume(ng, id, len);  // the connection's window stays open
    return 0;
  }
  return h2_stream_data(s, data, len);
}

int on_stream_close(nghttp2_session* ng, std::int32_t id, std::uint32_t error, void* user) {
  auto* c = static_cast<H2Conn*>(user);
  H2Stream* s = stream_of(ng, id);
  // A stream that ended in error: the client's reset, or ours that its
  // frames provoked. Our own INTERNAL_ERROR (a server that failed) is not
  // the client's doing; a stream already counted when its frame was
  // refused (s->bad: on_invalid_frame, a refused header block) counts once.
  if (error != NGHTTP2_NO_ERROR && error != NGHTTP2_INTERNAL_ERROR && !(s && s->bad)) h2_glitch(c);
  if (s) h2_stream_closed(s, error);
  return 0;
}

// A frame nghttp2 refused. A stream error resets the stream (a connection
// error ends them all) when the RST_STREAM (GOAWAY) goes out, after this
// read; the stream's exchange is cut now, so that a request whose stream the
// client's frames made us reset (MadeYouReset) is not passed on to a server
// meanwhile.
int on_invalid_frame(nghttp2_session* ng, const nghttp2_frame* f, int, void* user) {
  H2Stream* s = f->hd.stream_id ? stream_of(ng, f->hd.stream_id) : nullptr;
  if (s && s->bad) return 0;  // counted already (nghttp2 may report one bad HEADERS twice)
  h2_glitch(static_cast<H2Conn*>(user));
  if (s) {
    s->bad = true;  // the rest of its frames are ignored
    if (s->ex) step(s->ex, Event::ClientGone);
  }
  return 0;
}

// HEADERS opening no stream: an id below one already used that is not open
// (a decreasing id, or a stream that ended). nghttp2 ignores the block when
// it cannot be sure the client is wrong (a client's trailers may cross our
// RST_STREAM) -- it still decodes it (HPACK), so each counts one glitch:
// forwarded never, flooded at most the budget.
int on_begin_frame(nghttp2_session* ng, const nghttp2_frame_hd* hd, void* user) {
  if (hd->type == NGHTTP2_HEADERS && (hd->stream_id & 1) != 0 &&
      hd->stream_id <= nghttp2_session_get_last_proc_stream_id(ng) && !nghttp2_session_find_stream(ng, hd->stream_id))
    h2_glitch(static_cast<H2Conn*>(user));
  return 0;
}

// The next write's bytes: copied into `out`, as the tail of the last slice
// when it is `out`'s.
void put_out(H2Conn* c, const void* p, std::size_t k) {
  char* at = c->out->data + c->out_len;
  std::memcpy(at, p, k);
  c->out_len += static_cast<std::uint32_t>(k);
  c->wv_bytes += k;
  if (c->wv_n && c->wv[c->wv_n - 1].base + c->wv[c->wv_n - 1].len == at) c->wv[c->wv_n - 1].len += k;
  else c->wv[c->wv_n++] = uv_buf_init(at, static_cast<unsigned>(k));
}

// Room for one more frame of any kind (a DATA frame: header, padding, pieces).
bool write_full(const H2Conn* c) {
  return c->wv_n + H2StreamState::kPieces + 3 > H2Conn::kWv || c->out->cap - c->out_len < 512 ||
         c->wv_bytes >= c->out->cap;
}

// A DATA frame read_body() sized without copying: its header (and padding)
// into `out`, the payload as slices of the stream's own bytes, valid until
// the write below (deliver_written runs after it).
int on_send_data(nghttp2_session*, nghttp2_frame* f, const std::uint8_t* hd, std::size_t length,
                 nghttp2_data_source* src, void* user) {
  auto* c = static_cast<H2Conn*>(user);
  auto* s = static_cast<H2Stream*>(src->ptr);
  put_out(c, hd, 9);
  const std::size_t pad = f->data.padlen;
  if (pad > 0) {
    const auto p = static_cast<std::uint8_t>(pad - 1);
    put_out(c, &p, 1);
  }
  std::size_t sum = 0;
  for (std::uint32_t i = 0; i < s->piece_n; ++i) {
    c->wv[c->wv_n++] = uv_buf_init(const_cast<char*>(s->piece[i]), s->piece_len[i]);
    c->wv_bytes += s->piece_len[i];
    sum += s->piece_len[i];
  }
  s->piece_n = 0;
  if (sum != length) return NGHTTP2_ERR_CALLBACK_FAILURE;
  if (pad > 1) {
    static const std::uint8_t zeros[256] = {};
    put_out(c, zeros, pad - 1);
  }
  if (!write_full(c)) return 0;
  c->paused = true;
  return NGHTTP2_ERR_PAUSE;
}

// Our SETTINGS (session.hpp): a stream's window is the room a request body
// has (stream.cpp holds a stream's unsent body in one buffer).
bool start_session(H2Conn* c) {
  static nghttp2_session_callbacks* const cbs = h2_callbacks_new(
      {on_begin_headers, on_header, on_frame_recv, on_data_chunk, on_stream_close, on_invalid_frame, on_begin_frame,
       on_send_data});
  const Settings& st = settings(*c->worker);
  return h2_session_start(&c->ng, cbs, c,
                          {st.h2_max_streams, c->worker->buffers.size() - 64, static_cast<std::uint32_t>(st.header_bytes),
                           st.h2_hpack_table, st.h2_max_frame},
                          &c->worker->h2->mem);
}

// Idle (no stream open for timeout.client_idle): GOAWAY, and closed once it
// went out. A graceful close (GOAWAY sent) that did not finish in time: cut.
void on_conn_timer(TimerNode* t) {
  auto* c = static_cast<H2Conn*>(t->owner);
  if (c->closing) return;
  if (c->notice && !c->goaway) {  // a drain's second step
    nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ng),
                          NGHTTP2_NO_ERROR, nullptr, 0);
    c->goaway = true;
    if (c->stream_count == 0) c->worker->wheel.arm(&c->timer, c->worker->now_ms() + kCloseMs);
    h2_dirty(c);
    return;
  }
  if (c->goaway || c->lingering) {
    h2_close(c);
    return;
  }
  if (c->stream_count > 0) return;  // the exchanges' own timers watch them
  nghttp2_session_terminate_session(c->ng, NGHTTP2_NO_ERROR);
  c->goaway = true;
  c->worker->wheel.arm(&c->timer, c->worker->now_ms() + kCloseMs);
  h2_dirty(c);
}

// Delivers ClientWritten to the streams whose sent bytes nghttp2 took.
// True when one was delivered (the exchange may have sent more).
bool deliver_written(H2Conn* c) {
  H2Stream* s = c->notify_head;
  if (!s) return false;
  c->notify_head = nullptr;
  while (s) {
    H2Stream* next = s->notify_next;
    s->notify = false;
    s->notify_next = nullptr;
    if (s->ex) step(s->ex, s->gone ? Event::ClientGone : Event::ClientWritten);
    else if (s->closed) h2_stream_free(s);
    s = next;
  }
  return true;
}

// Pulls frames from nghttp2 into `out` (a frame that does not fit waits in
// nghttp2's memory as `spill`) and writes them in one write. Also closes the
// connection once nghttp2 wants nothing more (GOAWAY sent, no stream left).
// The graceful end, once the GOAWAY went: close_notify, then the write side
// shut and what the client still sends read and dropped for a moment, so a
// client still writing (a flood cut short) is not answered with a reset that
// would destroy the GOAWAY before it reads it.
void finish(H2Conn* c) {
  if (!c->lingering) {
    c->lingering = true;
    c->worker->wheel.arm(&c->timer, c->worker->now_ms() + kCloseMs);
    if (!c->stream->close_notify()) return;  // the write failed: closed
  }
  if (c->stream->write_pending()) return;  // on_stream_written comes back here
  c->stream->discard_input();
  if (c->stream->shutdown_write() != 0) {
    h2_close(c);
    return;
  }
  c->stream->set_reading(true);
}

bool gather(H2Conn* c) {
  Worker& w = *c->worker;
  if (!c->out) c->out = w.buffers.get();
  c->gathering = true;
  while (!c->spill && !write_full(c)) {
    c->paused = false;
    const std::uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(c->ng, &data);
    if (n < 0) {
      c->gathering = false;
      h2_close(c);
      return false;
    }
    if (n == 0) {
      if (c->paused) continue;
      break;
    }
    const auto k = static_cast<std::size_t>(n);
    if (k <= c->out->cap - c->out_len) {
      put_out(c, data, k);
    } else {
      c->spill = data;  // valid until the next mem_send, after the write
      c->spill_len = k;
      c->wv[c->wv_n++] = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(data)), static_cast<unsigned>(k));
      c->wv_bytes += k;
    }
  }
  c->gathering = false;
  return !c->closing;
}

void flush(H2Conn* c) {
  if (c->closing || c->lingering || c->stream->write_pending()) return;  // on_stream_written flushes again
  // Each round fills the write list; TLS encrypts it in write(), so the
  // streams' bytes are free after it, and ClientWritten goes out then.
  for (;;) {
    if (!gather(c)) return;
    const bool any = c->wv_n != 0;
    bool ok = true;
    if (any) ok = c->stream->write(c->wv, c->wv_n);
    if (c->closing) return;
    c->wv_n = 0;
    c->wv_bytes = 0;
    c->out_len = 0;
    c->spill = nullptr;
    c->spill_len = 0;
    const bool delivered = deliver_written(c);
    if (c->closing || !ok) return;  // on_stream_written
    if (!any && !delivered) break;
  }
  c->worker->put_buffer(c->out);
  c->out = nullptr;
  if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng)) {
    finish(c);  // GOAWAY went and no stream is left
    return;
  }
  c->stream->set_reading(!c->eof);
}

void on_idle(uv_idle_t* h) {
  auto* hw = static_cast<H2Worker*>(h->data);
  while (H2Conn* c = hw->dirty) {
    hw->dirty = c->dirty_next;
    c->dirty_next = nullptr;
    c->dirty = false;
    flush(c);
  }
  uv_idle_stop(h);
}

}  // namespace

H2Worker& h2_worker(Worker& w) {
  if (!w.h2) w.h2 = new H2Worker();
  H2Worker& hw = *w.h2;
  if (!hw.idle_ready) {
    uv_idle_init(&w.loop, &hw.idle);
    hw.idle.data = &hw;
    hw.idle_ready = true;
  }
  return hw;
}

void h2_dirty(H2Conn* c) noexcept {
  if (c->dirty || c->closing) return;
  H2Worker& hw = *c->worker->h2;
  c->dirty = true;
  c->dirty_next = hw.dirty;
  hw.dirty = c;
  uv_idle_start(&hw.idle, on_idle);
}

void h2_glitch(H2Conn* c, std::uint32_t weight) noexcept {
  c->glitches += weight;
  if (c->glitches <= settings(*c->worker).h2_glitches || c->goaway) return;
  log(LogLevel::Info, "h2 client %.*s: over its budget of resets and control frames, GOAWAY",
      static_cast<int>(c->session->peer().size()), c->session->peer().data());
  nghttp2_session_terminate_session(c->ng, NGHTTP2_ENHANCE_YOUR_CALM);
  c->goaway = true;
  c->worker->wheel.arm(&c->timer, c->worker->now_ms() + kCloseMs);
  h2_dirty(c);
}

void h2_adopt(ClientSession* s) {
  Worker& w = *s->worker;
  H2Worker& hw = h2_worker(w);
  H2Conn* c = conn_get(hw);
  c->worker = &w;
  c->session = s;
  c->stream = &s->stream;
  c->timer.fire = on_conn_timer;
  c->timer.owner = c;
  s->h2 = c;
  TimerWheel::disarm(&s->timer);
  s->stream.set_handler(c);
  if (!start_session(c)) {
    h2_close(c);
    return;
  }
  // The client preface (and maybe more) already read into the session's buffer.
  Buffer* first = s->in;
  const std::uint32_t len = s->in_len;
  s->in = nullptr;
  s->in_len = s->parse_pos = 0;
  const ssize_t rc = nghttp2_session_mem_recv(c->ng, reinterpret_cast<const std::uint8_t*>(first->data), len);
  w.put_buffer(first);
  if (rc < 0) {
    h2_close(c);
    return;
  }
  w.wheel.arm(&c->timer, w.now_ms() + settings(w).client_idle_timeout_ms);
  if (s->drained) h2_drain(c);  // drained before ALPN told: served as any connection in a drain
  h2_dirty(c);
}

uv_buf_t H2Conn::on_stream_alloc() noexcept {
  if (!in) in = worker->buffers.get();
  return uv_buf_init(in->data, in->cap);
}

void H2Conn::on_stream_read(ssize_t n) noexcept {
  if (lingering && n >= 0) return;  // discarded below us
  if (n > 0) {
    worker->metrics.bytes_in.add(static_cast<std::uint64_t>(n));
    const ssize_t rc = nghttp2_session_mem_recv(ng, reinterpret_cast<const std::uint8_t*>(in->data),
                                                static_cast<std::size_t>(n));
    worker->put_buffer(in);  // nghttp2 copied what it keeps: an idle connection holds no buffer
    in = nullptr;
    if (rc < 0) {
      log(LogLevel::Debug, "h2 client %.*s: %s", static_cast<int>(session->peer().size()), session->peer().data(),
          nghttp2_strerror(static_cast<int>(rc)));
      h2_close(this);
      return;
    }
    h2_dirty(this);
    return;
  }
  if (n == 0) {
    worker->put_buffer(in);
    in = nullptr;
    return;
  }
  eof = true;
  h2_close(this);  // EOF or an error: the streams go with the connection
}

void H2Conn::on_stream_written(int status) noexcept {
  if (status < 0) {
    h2_close(this);
    return;
  }
  if (closing) return;
  out_len = 0;
  spill = nullptr;
  spill_len = 0;
  if (lingering) {
    finish(this);
    return;
  }
  flush(this);
}

void H2Conn::on_stream_closed() noexcept {
  Worker& w = *worker;
  w.put_buffer(in);
  w.put_buffer(out);
  in = out = nullptr;
  ClientSession* s = session;
  s->h2 = nullptr;
  H2Worker& hw = *w.h2;
  next_free = hw.free_conns;
  hw.free_conns = this;
  s->on_stream_closed();  // the session back to its free list
}

// Closes at once: every stream's exchange is cut (it calls abort() back),
// the session goes, then the stream.
void h2_close(H2Conn* c) noexcept {
  if (c->closing) return;
  c->closing = true;
  while (H2Stream* s = c->streams) {
    s->closed = true;
    if (s->ex) step(s->ex, Event::ClientGone);
    if (s->ex) {  // cannot happen: a cut exchange lets go at once
      s->ex->down = nullptr;
      s->ex = nullptr;
    }
    h2_stream_free(s);
  }
  c->notify_head = nullptr;
  nghttp2_session_del(c->ng);
  c->ng = nullptr;
  TimerWheel::disarm(&c->timer);
  session_unlink(c->session);
  c->stream->close();
}

// In two steps (RFC 9113 6.8): a GOAWAY naming stream 2^31-1 first, so what
// the client sends before it reads that is still served, then, kNoticeMs
// later (on_conn_timer), the final one naming the last stream read. One
// GOAWAY at once would refuse requests already on their way: safe to retry,
// but a retry all the same.
void h2_drain(H2Conn* c) noexcept {
  if (c->goaway || c->notice || c->closing) return;
  nghttp2_submit_shutdown_notice(c->ng);
  c->notice = true;
  c->worker->wheel.arm(&c->timer, c->worker->now_ms() + kNoticeMs);
  h2_dirty(c);
}

void h2_worker_close(Worker& w) noexcept {
  if (w.h2 && w.h2->idle_ready) {
    uv_close(reinterpret_cast<uv_handle_t*>(&w.h2->idle), nullptr);
    w.h2->idle_ready = false;
  }
}

void h2_worker_done(Worker& w) noexcept {
  H2Worker* hw = w.h2;
  if (!hw) return;
  while (H2Conn* c = hw->free_conns) {
    hw->free_conns = c->next_free;
    delete c;
  }
  while (H2Stream* s = hw->free_streams) {
    hw->free_streams = s->next;
    delete s;
  }
  delete hw;
  w.h2 = nullptr;
}

}  // namespace juggler
