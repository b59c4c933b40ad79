// The tunnel (tunnel.hpp): the relay both ways, half-close, the connect and
// idle timeouts. Every call into the owner comes from a libuv callback (or the
// timer wheel), at the top of the stack.
#include "tunnel/tunnel.hpp"

namespace juggler {

void Tunnel::join(TunnelEnv& env, TunnelOwner* owner, Stream& client, Stream& server) noexcept {
  env_ = &env;
  owner_ = owner;
  preface_ = {};
  state_ = State::Idle;
  end_ = End::None;
  connect_error_ = 0;
  timer_.fire = on_timer;
  timer_.owner = this;
  Stream* streams[2] = {&client, &server};
  for (unsigned i = 0; i < 2; ++i) {
    Side& s = side_[i];
    s.tunnel = this;
    s.stream = streams[i];
    s.buf = nullptr;
    s.held = 0;
    s.relayed = 0;
    s.eof = s.passed = false;
    s.open = true;
    close_pipe(s);
  }
}

void Tunnel::init(TunnelEnv& env, TunnelOwner* owner, Stream& client, Stream& server) noexcept {
  join(env, owner, client, server);
  for (Side& s : side_) s.stream->init(*env.streams, &s);
}

void Tunnel::adopt(TunnelEnv& env, TunnelOwner* owner, Stream& client, Stream& server, const Held& from_client,
                   const Held& from_server) noexcept {
  join(env, owner, client, server);
  const Held* held[2] = {&from_client, &from_server};
  for (unsigned i = 0; i < 2; ++i) {
    Side& s = side_[i];
    s.stream->set_handler(&s);
    s.buf = held[i]->buf;
    s.held = held[i]->len;
    s.eof = held[i]->eof;
  }
  open();
}

// ---------------------------------------------------------------- connecting

void Tunnel::connect(const sockaddr* addr, std::uint32_t timeout_ms) noexcept {
  state_ = State::Connecting;
  connect_error_ = 0;
  env_->wheel->arm(&timer_, uv_now(env_->streams->loop) + timeout_ms);
  Side& s = side_[1];
  if (!s.open) {
    // A failed attempt closed it: the same Stream, initialised again.
    s.stream->init(*env_->streams, &s);
    s.open = true;
  }
  const int rc = s.stream->connect(addr);
  if (rc != 0) {
    // Reported from the close callback, like a connect that failed later.
    connect_error_ = rc;
    s.stream->close();
  }
}

void Tunnel::Side::on_stream_connected(int status) noexcept {
  Tunnel& t = *tunnel;
  if (t.state_ != State::Connecting) return;
  if (status != 0) {
    t.connect_error_ = status;
    stream->close();  // on_stream_closed tells the owner
    return;
  }
  t.open();
  t.owner_->on_tunnel_connected(t, 0);
}

// ---------------------------------------------------------------- relaying

void Tunnel::open() noexcept {
  state_ = State::Open;
  active_ms_ = uv_now(env_->streams->loop);
  env_->wheel->arm(&timer_, active_ms_ + env_->idle_ms);
  for (Side& s : side_) {
    if (s.held || (&s == &side_[0] && !preface_.empty())) {
      // Read before the tunnel opened (what followed a prelude): sent first,
      // behind the preface.
      const std::uint32_t n = s.held;
      s.held = 0;
      relay(s, n);
      if (peer(s).stream->write_pending()) continue;  // on_stream_written resumes reading
    }
    if (s.eof) pass_end(s);  // it ended before the tunnel opened
    else s.stream->set_reading(true);
  }
}

void Tunnel::expire_in(std::uint32_t timeout_ms) noexcept {
  env_->wheel->arm(&timer_, uv_now(env_->streams->loop) + timeout_ms);
}

uv_buf_t Tunnel::Side::on_stream_alloc() noexcept {
  if (splicing()) return uv_buf_init(nullptr, 0);  // on_stream_read(UV_ENOBUFS): splice_some takes the bytes
  if (!buf) buf = tunnel->env_->buffers->get();
  return uv_buf_init(buf->data, buf->cap);
}

void Tunnel::Side::on_stream_read(ssize_t n) noexcept {
  Tunnel& t = *tunnel;
  if (n > 0 && t.state_ == State::Open) {
    t.active_ms_ = uv_now(t.env_->streams->loop);
    full_reads = static_cast<std::size_t>(n) < buf->cap ? 0 : static_cast<std::uint8_t>(full_reads + (full_reads < 255));
    t.relay(*this, static_cast<std::size_t>(n));
    return;
  }
  if (n == UV_ENOBUFS) {
    t.splice_some(*this);
    return;
  }
  if (n > 0 && (t.state_ == State::Idle || t.state_ == State::Connecting)) {
    held = static_cast<std::uint32_t>(n);  // kept until open()
    stream->set_reading(false);
    return;
  }
  t.release(*this);  // nothing landed, or nothing more will
  if (n == 0) return;
  if (n == UV_EOF && (t.state_ == State::Idle || t.state_ == State::Connecting)) {
    eof = true;  // passed on by open()
    return;
  }
  if (n == UV_EOF && t.state_ == State::Open) {
    eof = true;
    t.pass_end(*this);
    return;
  }
  t.close(t.error_of(*this));
}

// Writes what `from` read to the other side (side 0's first write behind the
// preface): the buffer goes back at once when the write completed, else
// `from` stops reading until it does.
void Tunnel::relay(Side& from, std::size_t n) noexcept {
  Side& to = peer(from);
  from.relayed += n;  // the preface is ours, not the client's
  uv_buf_t b[2];
  unsigned count = 0;
  if (&from == &side_[0] && !preface_.empty()) {
    b[count++] = uv_buf_init(const_cast<char*>(preface_.data()), static_cast<unsigned>(preface_.size()));
    preface_ = {};
  }
  if (n) b[count++] = uv_buf_init(from.buf->data, static_cast<unsigned>(n));
  if (to.stream->write(b, count)) {
    release(from);
    maybe_splice(from);
    return;
  }
  from.stream->set_reading(false);
}

void Tunnel::Side::on_stream_written(int status) noexcept {
  Tunnel& t = *tunnel;
  if (status < 0) {
    t.close(t.error_of(*this));
    return;
  }
  Side& from = t.peer(*this);
  t.release(from);
  if (from.in_pipe > 0) return t.drain_pipe(from);
  t.maybe_splice(from);
  if (from.eof) t.pass_end(from);
  else from.stream->set_reading(true);
}

// `from`'s input ended: once its last bytes went out, the other side's write
// is shut down (its peer sees the FIN); the other direction goes on. When
// both ends were passed on, the tunnel is over.
void Tunnel::pass_end(Side& from) noexcept {
  Side& to = peer(from);
  if (from.passed || to.stream->write_pending()) return;  // on_stream_written comes back here
  from.passed = true;
  if (!to.stream->close_notify() || to.stream->shutdown_write() != 0) {
    close(error_of(to));
    return;
  }
  if (to.passed) close(End::Done);
}

void Tunnel::release(Side& s) noexcept {
  if (s.buf && !s.held && !peer(s).stream->write_pending()) {
    env_->buffers->put(s.buf);
    s.buf = nullptr;
  }
}

// ---------------------------------------------------------------- ending

void Tunnel::close(End why) noexcept {
  if (end_ == End::None) end_ = why;
  state_ = State::Closing;
  TimerWheel::disarm(&timer_);
  for (Side& s : side_)
    if (s.open) s.stream->close();
}

void Tunnel::Side::on_stream_closed() noexcept {
  Tunnel& t = *tunnel;
  open = false;
  close_pipe(*this);  // bytes still in it go with the tunnel, as a buffer's would
  if (buf) {
    t.env_->buffers->put(buf);  // a write of it, if any, was cancelled with the stream
    buf = nullptr;
  }
  if (t.state_ == State::Connecting && this == &t.side_[1]) {
    TimerWheel::disarm(&t.timer_);
    t.owner_->on_tunnel_connected(t, t.connect_error_);
    return;
  }
  if (!t.side_[0].open && !t.side_[1].open) t.owner_->on_tunnel_closed(t);
}

// The connect timeout while connecting; afterwards the idle timeout, re-armed
// from the last read (a read costs a store, not a timer operation).
void Tunnel::on_timer(TimerNode* n) {
  auto* t = static_cast<Tunnel*>(n->owner);
  if (t->state_ == State::Connecting) {
    t->connect_error_ = UV_ETIMEDOUT;
    t->side_[1].stream->close();
    return;
  }
  if (t->state_ == State::Idle) {
    t->close(End::Idle);  // expire_in()
    return;
  }
  if (t->state_ != State::Open) return;
  const std::uint64_t due = t->active_ms_ + t->env_->idle_ms;
  if (uv_now(t->env_->streams->loop) < due) {
    t->env_->wheel->arm(&t->timer_, due);
    return;
  }
  t->close(End::Idle);
}

void Tunnel::end_letters(End end, bool tried_server, char (&out)[2]) noexcept {
  static constexpr char kLetters[][2] = {{'-', '-'}, {'-', '-'}, {'C', 'D'}, {'S', 'D'}, {'c', 'D'}, {'P', 'D'}, {'P', 'C'}};
  const auto i = static_cast<std::size_t>(end);
  out[0] = end == End::NoServer && tried_server ? 'S' : kLetters[i][0];
  out[1] = kLetters[i][1];
}

}  // namespace juggler
