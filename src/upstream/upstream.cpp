#include "juggler/upstream.hpp"

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

}  // namespace

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
    if (uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), upstream_on_alloc, upstream_on_read) != 0) {
      upstream_close(c);
      return;
    }
    c->reading = true;
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
