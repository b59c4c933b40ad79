// TCP connections to servers (UpstreamConn): the idle lists, connecting, and
// the libuv callbacks, which reach the exchange as step() events.
#include "juggler/upstream.hpp"

#include "exchange/exchange.hpp"

namespace juggler {

namespace {

void unlink_idle(UpstreamConn* c) noexcept {
  IdleList& l = c->worker->idle[c->server];
  if (c->prev) c->prev->next = c->next;
  else if (l.head == c) l.head = c->next;
  else return;  // not on the list
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
  --l.count;
}

void on_closed(uv_handle_t* h) { delete static_cast<UpstreamConn*>(h->data); }

void on_write(uv_write_t* req, int status) {
  auto* c = static_cast<UpstreamConn*>(req->data);
  c->worker->streams.put_write(req);
  c->write_pending = false;
  if (c->closing || !c->ex) return;
  step(c->ex, Event::UpstreamWritten, status);
}

void on_connect(uv_connect_t* req, int status) {
  auto* c = static_cast<UpstreamConn*>(req->data);
  if (c->closing) return;
  if (!c->ex) {
    upstream_close(c);
    return;
  }
  if (status == 0) {
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
  }
  step(c->ex, Event::Connected, status);
}

void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  auto* c = static_cast<UpstreamConn*>(h->data);
  if (!c->in) {
    c->in = c->worker->buffers.get();
    c->in_len = c->parse_pos = 0;
  }
  *buf = uv_buf_init(c->in->data + c->in_len, c->in->cap - c->in_len);
}

void on_read(uv_stream_t* st, ssize_t n, const uv_buf_t*) {
  auto* c = static_cast<UpstreamConn*>(st->data);
  if (c->closing) return;
  Exchange* ex = c->ex;
  if (!ex) {
    // Idle: the server closed it (or sent bytes nobody asked for).
    if (n != 0) upstream_close(c);
    else if (c->in && c->in_len == 0) {
      c->worker->put_buffer(c->in);
      c->in = nullptr;
    }
    return;
  }
  if (n > 0) {
    c->in_len += static_cast<std::uint32_t>(n);
    ex->progress_ms = c->worker->now_ms();
    step(ex, Event::ServerData);
    return;
  }
  if (n != 0) step(ex, Event::ServerEof, static_cast<int>(n));  // EOF or error from the server
}

}  // namespace

bool UpstreamConn::write(uv_buf_t* iov, unsigned n) noexcept {
  write_pending = true;
  if (!write_or_queue(worker->streams, as_stream(&tcp), this, iov, n, on_write)) return false;
  write_pending = false;
  return true;
}

void UpstreamConn::set_reading(bool on) noexcept {
  if (!on) {
    uv_read_stop(as_stream(&tcp));
    reading = false;
  } else if (uv_read_start(as_stream(&tcp), on_alloc, on_read) == 0) {
    reading = true;
  }
}

void UpstreamConn::release() noexcept { upstream_release(this); }
void UpstreamConn::close() noexcept { upstream_close(this); }

Upstream* upstream_connect_tcp(Worker& w, std::uint16_t server, Exchange* ex, int* rc) {
  UpstreamConn* c = upstream_take_idle(w, server);
  if (!c) {
    c = upstream_new(w, server);
    const auto* addr = reinterpret_cast<const sockaddr*>(&w.shared.server_addrs[server]);
    *rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connect);
  }
  c->ex = ex;
  return c;
}

UpstreamConn* upstream_take_idle(Worker& w, std::uint16_t server) noexcept {
  IdleList& l = w.idle[server];
  UpstreamConn* c = l.head;
  if (!c) return nullptr;
  unlink_idle(c);
  c->reused = true;
  ++w.metrics.server[server].conn_reused;
  return c;
}

UpstreamConn* upstream_new(Worker& w, std::uint16_t server) {
  auto* c = new UpstreamConn();
  c->worker = &w;
  c->server = server;
  uv_tcp_init(&w.loop, &c->tcp);
  c->tcp.data = c;
  c->connect_req.data = c;
  ++w.metrics.server[server].conn_new;
  return c;
}

void upstream_release(UpstreamConn* c) noexcept {
  Worker& w = *c->worker;
  c->ex = nullptr;
  c->in_len = c->parse_pos = 0;
  w.put_buffer(c->in);
  c->in = nullptr;
  IdleList& l = w.idle[c->server];
  if (w.draining || l.count >= kMaxIdlePerServer || c->write_pending) {
    upstream_close(c);
    return;
  }
  if (!c->reading) {
    c->set_reading(true);
    if (!c->reading) {
      upstream_close(c);
      return;
    }
  }
  c->idle_since_ms = w.now_ms();
  c->prev = nullptr;
  c->next = l.head;
  if (l.head) l.head->prev = c;
  l.head = c;
  ++l.count;
}

void upstream_close(UpstreamConn* c) noexcept {
  if (c->closing) return;
  c->closing = true;
  ++c->worker->metrics.server[c->server].conn_closed;
  unlink_idle(c);
  if (c->ex) {
    // The exchange forgets the connection; it decides what to do next.
    c->ex = nullptr;
  }
  c->worker->put_buffer(c->in);
  c->in = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_closed);
}

void upstream_sweep(Worker& w, bool all) noexcept {
  const std::uint64_t now = w.now_ms();
  for (IdleList& l : w.idle) {
    // The list is LIFO: the oldest are at the tail, but lists are short; walk it.
    UpstreamConn* c = l.head;
    while (c) {
      UpstreamConn* next = c->next;
      if (all || now - c->idle_since_ms >= kUpstreamIdleTimeoutMs) upstream_close(c);
      c = next;
    }
  }
}

}  // namespace juggler
