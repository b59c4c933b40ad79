#include "juggler/stream.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#ifdef __linux__
#include <sys/sendfile.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace juggler {

namespace {

constexpr unsigned kScratchSize = 17 * 1024;  // one TLS record and its overhead
// write_file: the bytes written from the file's mapping when the socket is
// full (a copy, then sendfile again once libuv saw room for them).
constexpr std::size_t kFileChunk = 16 * 1024;

inline uv_stream_t* as_stream(uv_tcp_t* t) { return reinterpret_cast<uv_stream_t*>(t); }
inline uv_handle_t* as_handle(uv_tcp_t* t) { return reinterpret_cast<uv_handle_t*>(t); }

}  // namespace

// ---------------------------------------------------------------- context

void StreamContext::release() noexcept {
  if (pump_ready) {
    pump_ready = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&pump_idle), nullptr);
  }
}

bool write_or_queue(StreamContext& ctx, uv_stream_t* st, void* owner, uv_buf_t* iov, unsigned n, uv_write_cb cb) {
  int r = uv_try_write(st, iov, n);
  if (r > 0) {
    std::size_t left = static_cast<std::size_t>(r);
    while (n > 0 && left >= iov->len) {
      left -= iov->len;
      ++iov;
      --n;
    }
    if (n == 0) return true;
    iov->base += left;
    iov->len -= left;
  }
  uv_write_t* req = ctx.writes.get();
  req->data = owner;
  if (uv_write(req, st, iov, n, cb) != 0) {
    // The stream is closing or broken: report it like a failed write.
    req->handle = st;
    cb(req, UV_EPIPE);
  }
  return false;
}

// ---------------------------------------------------------------- set-up and reading

void Stream::init(StreamContext& ctx, StreamHandler* handler) noexcept {
  ctx_ = &ctx;
  handler_ = handler;
  reading_ = write_pending_ = closing_ = discard_ = false;
  file_fd_ = -1;
  prelude_ = nullptr;
  tls_version_ = nullptr;  // per connection: a pooled L4Conn reuses its Streams without remaking them
  uv_tcp_init(ctx.loop, &tcp_);
  tcp_.data = this;
}

int Stream::accept(uv_stream_t* server, SSL_CTX* tls) {
  const int rc = uv_accept(server, as_stream(&tcp_));
  if (rc != 0) return rc;
  uv_tcp_nodelay(&tcp_, 1);
  if (tls) tls_ = new TlsStream(tls);
  return 0;
}

int Stream::connect(const sockaddr* addr) {
  uv_connect_t* req = ctx_->connects.get();
  req->data = this;
  const int rc = uv_tcp_connect(req, &tcp_, addr, on_connect);
  if (rc != 0) ctx_->connects.put(req);
  return rc;
}

void Stream::on_connect(uv_connect_t* req, int status) {
  auto* s = static_cast<Stream*>(req->data);
  s->ctx_->connects.put(req);
  // A close() cancels the connect (UV_ECANCELED): the handler asked for it.
  if (s->closing_) return;
  if (status == 0) uv_tcp_nodelay(&s->tcp_, 1);
  s->handler_->on_stream_connected(status);
}

std::uint8_t Stream::peer_ip(char (&out)[46]) noexcept {
  sockaddr_storage peer{};
  int len = sizeof peer;
  out[0] = '\0';
  if (uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return 0;
  if (peer.ss_family == AF_INET6) {
    const auto* a6 = reinterpret_cast<const sockaddr_in6*>(&peer);
    if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
      sockaddr_in a4{};
      a4.sin_family = AF_INET;
      std::memcpy(&a4.sin_addr, a6->sin6_addr.s6_addr + 12, 4);
      uv_ip4_name(&a4, out, sizeof out);
    } else {
      uv_ip6_name(a6, out, sizeof out);
    }
  } else {
    uv_ip4_name(reinterpret_cast<const sockaddr_in*>(&peer), out, sizeof out);
  }
  return static_cast<std::uint8_t>(std::strlen(out));
}

void Stream::set_reading(bool want) noexcept {
  if (closing_ || want == reading_) return;
  // Plaintext OpenSSL holds from before reading stopped would wake no socket.
  // (While reading, pump() queued itself when it left some.)
  if (want && tls_ && !discard_ && tls_->buffered()) queue_pump();
  // Starting fails once the peer's EOF came (or before a connection): then
  // reading() stays false.
  if (want && uv_read_start(as_stream(&tcp_), on_alloc, on_read) != 0) return;
  if (!want) uv_read_stop(as_stream(&tcp_));
  reading_ = want;
}

void Stream::on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  auto* s = static_cast<Stream*>(h->data);
  if (s->prelude_) {
    *buf = s->prelude_->prelude_room();
    return;
  }
  if (s->tls_ || s->discard_) {
    if (!s->ctx_->scratch) s->ctx_->scratch = std::make_unique<char[]>(kScratchSize);
    *buf = uv_buf_init(s->ctx_->scratch.get(), kScratchSize);
    return;
  }
  *buf = s->handler_->on_stream_alloc();
}

void Stream::on_read(uv_stream_t* st, ssize_t n, const uv_buf_t* buf) {
  auto* s = static_cast<Stream*>(st->data);
  if (s->closing_) return;
  if (n > 0 && s->prelude_) {
    s->prelude_read(n);
    return;
  }
  if (n > 0 && s->discard_) return;
  if (n > 0 && s->tls_) {
    s->tls_->feed(buf->base, static_cast<std::size_t>(n));
    s->pump();
    return;
  }
  if (n < 0 && s->reading_ && n != UV_ENOBUFS) {
    // Nothing more will come: reading is over either way.
    uv_read_stop(st);
    s->reading_ = false;
  }
  s->handler_->on_stream_read(n);
}

// The prelude's bytes: on Done, what it did not consume goes where a read
// would have put it (OpenSSL, or the handler's room), or, when its Done set
// another prelude (a PROXY header, then a ClientHello peeked), to that one as
// its first read (its room takes it: a PROXY header's rest is under 1 KB).
void Stream::prelude_read(ssize_t n) {
  std::string_view rest;
  Prelude* const running = prelude_;
  const Prelude::Verdict v = running->prelude_read(static_cast<std::size_t>(n), &rest);
  if (v == Prelude::Verdict::NeedMore) return;
  if (v == Prelude::Verdict::Done && prelude_ != running) {
    const uv_buf_t room = prelude_->prelude_room();
    const std::size_t k = std::min<std::size_t>(room.len, rest.size());
    std::memcpy(room.base, rest.data(), k);
    running->prelude_over();
    if (k > 0) prelude_read(static_cast<ssize_t>(k));
    return;
  }
  if (v == Prelude::Verdict::Reject) {
    prelude_ = nullptr;
    if (reading_) uv_read_stop(as_stream(&tcp_));
    reading_ = false;
    handler_->on_stream_read(UV_EPROTO);
    return;
  }
  Prelude* p = prelude_;
  prelude_ = nullptr;
  if (tls_) {
    tls_->feed(rest.data(), rest.size());  // OpenSSL copies it
    p->prelude_over();
    pump();
    return;
  }
  deliver(rest);  // copied into the handler's room
  p->prelude_over();
}

void Stream::deliver(std::string_view bytes) {
  while (!bytes.empty() && !closing_ && reading_ && !discard_) {
    const uv_buf_t room = handler_->on_stream_alloc();
    const std::size_t k = std::min<std::size_t>(room.len, bytes.size());
    std::memcpy(room.base, bytes.data(), k);
    bytes.remove_prefix(k);
    handler_->on_stream_read(static_cast<ssize_t>(k));
  }
}

// TLS: decrypts what OpenSSL holds into the handler's room, sends what the
// handshake wants sent, and reports the plaintext in one call.
void Stream::pump() {
  std::size_t got = 0;
  bool peer_closed = false;
  bool full = false;  // the room filled: OpenSSL may hold more
  if (reading_ && !discard_) {
    const uv_buf_t room = handler_->on_stream_alloc();
    while (got < room.len) {
      std::size_t n = 0;
      const TlsStream::Read r = tls_->read(room.base + got, room.len - got, &n);
      if (r == TlsStream::Read::Data) {
        got += n;
        continue;
      }
      if (r == TlsStream::Read::NeedMore) break;
      if (r == TlsStream::Read::Error) {
        ++ctx_->tls_failures;
        flush_tls();  // the alert, if any
        if (closing_) return;
        if (reading_) uv_read_stop(as_stream(&tcp_));
        reading_ = false;
        handler_->on_stream_read(UV_EPROTO);
        return;
      }
      peer_closed = true;  // close_notify
      break;
    }
    full = got == room.len;
  }
  if (!tls_version_ && tls_->handshake_done()) {
    tls_version_ = tls_->version();
    ++(tls_->session_reused() ? ctx_->tls_resumed : ctx_->tls_full);
  }
  if (tls_->has_output()) {
    flush_tls();
    if (closing_) return;
  }
  if (got > 0 || !peer_closed) {
    handler_->on_stream_read(static_cast<ssize_t>(got));
    if (closing_) return;
    // The room filled with plaintext left in OpenSSL: no socket event will
    // bring it (a handler that keeps reading never calls set_reading again).
    if (full && reading_ && !discard_ && tls_->buffered()) queue_pump();
  }
  if (peer_closed) {
    if (reading_) uv_read_stop(as_stream(&tcp_));
    reading_ = false;
    handler_->on_stream_read(UV_EOF);
  }
}

void Stream::on_pump_idle(uv_idle_t* h) {
  auto* ctx = static_cast<StreamContext*>(h->data);
  while (Stream* s = ctx->pump_head) {
    ctx->pump_head = s->pump_next_;
    if (s->pump_next_) s->pump_next_->pump_prev_ = nullptr;
    s->pump_next_ = s->pump_prev_ = nullptr;
    s->pump_queued_ = false;
    if (!s->closing_) s->pump();
  }
  uv_idle_stop(h);
}

// Plaintext that OpenSSL already decrypted would not wake the socket: the
// stream is pumped from the loop's idle phase instead.
void Stream::queue_pump() {
  if (pump_queued_) return;
  StreamContext& c = *ctx_;
  if (!c.pump_ready) {
    uv_idle_init(c.loop, &c.pump_idle);
    c.pump_idle.data = &c;
    c.pump_ready = true;
  }
  pump_queued_ = true;
  pump_prev_ = nullptr;
  pump_next_ = c.pump_head;
  if (c.pump_head) c.pump_head->pump_prev_ = this;
  c.pump_head = this;
  uv_idle_start(&c.pump_idle, on_pump_idle);
}

void Stream::unqueue_pump() noexcept {
  if (!pump_queued_) return;
  if (pump_prev_) pump_prev_->pump_next_ = pump_next_;
  else ctx_->pump_head = pump_next_;
  if (pump_next_) pump_next_->pump_prev_ = pump_prev_;
  pump_next_ = pump_prev_ = nullptr;
  pump_queued_ = false;
}

// ---------------------------------------------------------------- writing

// TLS: sends the ciphertext OpenSSL produced (handshake, alerts, records).
// Returns true when nothing is left to send.
bool Stream::flush_tls() {
  if (write_pending_) return false;  // on_write flushes the rest
  if (tls_->take_output() == 0) return true;
  uv_buf_t b = uv_buf_init(tls_->out.data(), static_cast<unsigned>(tls_->out.size()));
  write_pending_ = true;
  if (write_or_queue(*ctx_, as_stream(&tcp_), this, &b, 1, on_write)) {
    write_pending_ = false;
    return true;
  }
  return false;
}

bool Stream::write(uv_buf_t* iov, unsigned n) {
  if (tls_) {
    if (!tls_->write(iov, n)) {
      // The one synchronous on_stream_written (see write()): no request to fake.
      if (!closing_) handler_->on_stream_written(UV_EPROTO);
      return false;
    }
    return flush_tls();
  }
  write_pending_ = true;
  if (write_or_queue(*ctx_, as_stream(&tcp_), this, iov, n, on_write)) {
    write_pending_ = false;
    return true;
  }
  return false;
}

bool Stream::write_file(uv_buf_t* iov, unsigned n, int fd, std::uint64_t offset) {
#ifdef __linux__
  static const bool off = std::getenv("JUGGLER_NO_SENDFILE") != nullptr;
  if (tls_ || fd < 0 || off) return write(iov, n);
  int sock = -1;
  uv_fileno(as_handle(&tcp_), &sock);
  const uv_buf_t body = iov[n - 1];
  file_fd_ = fd;
  file_off_ = offset;
  file_view_ = body.base;
  file_left_ = body.len;
  write_pending_ = true;
  std::size_t head = 0;
  for (unsigned i = 0; i + 1 < n; ++i) head += iov[i].len;
  // The head on its own, not corked: MSG_MORE (one segment with the file's
  // first bytes) cost a 100 KB hit 1.6x the CPU on loopback (Linux 6.18; see
  // docs/BENCHMARKS.md), as nginx, which writev()s its head before the
  // sendfile, does not. uv_buf_t is laid out as an iovec on Unix (libuv's
  // promise, for writev).
  msghdr m{};
  m.msg_iov = reinterpret_cast<iovec*>(iov);
  m.msg_iovlen = n - 1;
  const ssize_t r = head ? ::sendmsg(sock, &m, MSG_NOSIGNAL | MSG_DONTWAIT) : 0;
  if (r < 0 || static_cast<std::size_t>(r) < head) {
    // Full (or broken) already: the head's rest goes the usual way, with the file's first bytes.
    std::size_t left = r > 0 ? static_cast<std::size_t>(r) : 0;
    while (left >= iov->len) {
      left -= iov->len;
      ++iov;
      --n;
    }
    iov->base += left;
    iov->len -= left;
    if (!queue_file_part(iov, n)) return false;
  }
  if (!send_file_rest()) return false;
  write_pending_ = false;
  return true;
#else
  (void)fd;
  (void)offset;
  return write(iov, n);
#endif
}

// iov[0..n), whose last slice is the file's rest: written the usual way
// with at most kFileChunk of the file (the rest follows by sendfile). True
// when that went out now; else on_write goes on with the file.
bool Stream::queue_file_part(uv_buf_t* iov, unsigned n) {
  const std::size_t k = std::min(file_left_, kFileChunk);
  iov[n - 1] = uv_buf_init(const_cast<char*>(file_view_), static_cast<unsigned>(k));
  file_view_ += k;
  file_off_ += k;
  file_left_ -= k;
  write_pending_ = true;
  return write_or_queue(*ctx_, as_stream(&tcp_), this, iov, n, on_write);
}

// The file's rest by sendfile(2). True when it all went out now (the file
// is done with); false when a part was queued (on_write comes back here).
bool Stream::send_file_rest() {
#ifdef __linux__
  int sock = -1;
  uv_fileno(as_handle(&tcp_), &sock);
  while (file_left_ > 0) {
    auto at = static_cast<off_t>(file_off_);
    const ssize_t k = ::sendfile(sock, file_fd_, &at, file_left_);
    if (k > 0) {
      file_view_ += k;
      file_off_ += static_cast<std::uint64_t>(k);
      file_left_ -= static_cast<std::size_t>(k);
      ctx_->sendfile_bytes.add(static_cast<std::uint64_t>(k));
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    // The socket is full (EAGAIN), or broken: libuv waits for room (or reports the error).
    uv_buf_t b{};
    if (!queue_file_part(&b, 1)) return false;
  }
#endif
  file_fd_ = -1;
  return true;
}

void Stream::on_write(uv_write_t* req, int status) {
  auto* s = static_cast<Stream*>(req->data);
  s->ctx_->writes.put(req);
  s->write_pending_ = false;
  if (s->closing_) return;
  if (status < 0) {
    s->file_fd_ = -1;
    s->handler_->on_stream_written(status);
    return;
  }
  if (s->file_fd_ >= 0) {
    if (!s->send_file_rest()) return;  // another part queued
    s->write_pending_ = false;
  }
  if (s->tls_ && !s->flush_tls()) return;  // more ciphertext queued meanwhile
  s->handler_->on_stream_written(0);
}

// ---------------------------------------------------------------- ending

bool Stream::close_notify() {
  if (!tls_ || discard_ || !tls_->shutdown()) return true;
  flush_tls();
  return !closing_;
}

int Stream::shutdown_write() {
  uv_shutdown_t* req = ctx_->shutdowns.get();
  req->data = ctx_;  // outlives the stream, whose close may cancel the request
  const int rc = uv_shutdown(req, as_stream(&tcp_), [](uv_shutdown_t* r, int) {
    static_cast<StreamContext*>(r->data)->shutdowns.put(r);
  });
  if (rc != 0) ctx_->shutdowns.put(req);
  return rc;
}

void Stream::close() noexcept {
  if (closing_) return;
  closing_ = true;
  unqueue_pump();
  uv_close(as_handle(&tcp_), on_closed);
}

void Stream::on_closed(uv_handle_t* h) {
  auto* s = static_cast<Stream*>(h->data);
  delete s->tls_;
  s->tls_ = nullptr;
  s->handler_->on_stream_closed();
}

void Stream::trim() noexcept {
  // A large body grew the ciphertext buffer: an idle connection keeps at
  // most what a few TLS records of a small answer need.
  constexpr std::size_t kIdleCiphertextKeep = 64 * 1024;
  if (tls_ && !write_pending_) tls_->trim(kIdleCiphertextKeep);
}

}  // namespace juggler
