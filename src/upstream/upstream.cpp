// Connections to servers (UpstreamConn): the idle lists, connecting, and the
// stream's events, which reach the exchange as step() events.
#include "juggler/upstream.hpp"

#include "exchange/exchange.hpp"

namespace juggler {

namespace {

void unlink_idle(UpstreamConn* c) noexcept {
  IdleList& l = c->tab->idle[c->server];
  if (c->prev) c->prev->next = c->next;
  else if (l.head == c) l.head = c->next;
  else return;  // not on the list
  if (c->next) c->next->prev = c->prev;
  c->prev = c->next = nullptr;
  --l.count;
  --c->worker->metrics.server[static_cast<std::size_t>(c->metric)].idle;
}

void link_idle(UpstreamConn* c, IdleList& l) noexcept {
  c->prev = nullptr;
  c->next = l.head;
  if (l.head) l.head->prev = c;
  l.head = c;
  ++l.count;
  ++c->worker->metrics.server[static_cast<std::size_t>(c->metric)].idle;
}

}  // namespace

bool UpstreamConn::write(uv_buf_t* iov, unsigned n) noexcept {
  write_pending = true;
  if (!stream.write(iov, n)) return false;
  write_pending = false;
  return true;
}

void UpstreamConn::set_reading(bool on) noexcept {
  stream.set_reading(on);
  reading = stream.reading();
}

void UpstreamConn::release() noexcept { upstream_release(this); }
void UpstreamConn::close() noexcept { upstream_close(this); }

// ---------------------------------------------------------------- stream events
// None comes once the stream was closed (Stream drops them), so a closed
// connection needs no guard here.

uv_buf_t UpstreamConn::on_stream_alloc() noexcept {
  if (!in) {
    in = worker->buffers.get();
    in_len = parse_pos = 0;
  }
  return uv_buf_init(in->data + in_len, in->cap - in_len);
}

void UpstreamConn::on_stream_read(ssize_t n) noexcept {
  if (n < 0) reading = false;  // the stream stopped reading
  Exchange* e = ex;
  if (!e) {
    // Idle: the server closed it (or sent bytes nobody asked for).
    if (n != 0) upstream_close(this);
    else if (in && in_len == 0) {
      worker->put_buffer(in);
      in = nullptr;
    }
    return;
  }
  if (n > 0) {
    in_len += static_cast<std::uint32_t>(n);
    e->progress_ms = worker->now_ms();
    step(e, Event::ServerData);
    return;
  }
  if (n != 0) step(e, Event::ServerEof, static_cast<int>(n));  // EOF or error from the server
}

void UpstreamConn::on_stream_written(int status) noexcept {
  write_pending = false;
  if (!ex) return;
  step(ex, Event::UpstreamWritten, status);
}

void UpstreamConn::on_stream_connected(int status) noexcept {
  if (!ex) {
    upstream_close(this);
    return;
  }
  step(ex, Event::Connected, status);
}

void UpstreamConn::on_stream_closed() noexcept { delete this; }

void server_failure(Worker& w, WorkerTable& t, std::uint16_t server, const PoolDef& pool, const char* why) noexcept {
  ServerHealth& h = t.routing.health[server];
  if (!passive_failure(h, pool, w.now_ms())) return;
  ++w.metrics.server[static_cast<std::size_t>(t.routing.metric_server[server])].ejections;
  const ServerDef& sd = t.routing.table->servers[server];
  log(LogLevel::Warn, "server %.*s in pool %.*s ejected for %llu ms: %s", JUGGLER_SERVER_ARGS(sd),
      static_cast<int>(pool.name.size()), pool.name.data(),
      static_cast<unsigned long long>(h.ejected_until_ms.load() - w.now_ms()), why);
}

Upstream* upstream_connect_tcp(Worker& w, std::uint16_t server, Exchange* ex, int* rc) {
  WorkerTable& t = *ex->tab;
  UpstreamConn* c = upstream_take_idle(w, t, server);
  if (!c) {
    c = upstream_new(w, t, server);
    sockaddr_storage copy;
    *rc = c->stream.connect(server_sockaddr(t.routing, server, copy, c->addr_version));
  }
  c->ex = ex;
  return c;
}

UpstreamConn* upstream_take_idle(Worker& w, WorkerTable& t, std::uint16_t server) noexcept {
  IdleList& l = t.idle[server];
  UpstreamConn* c = l.head;
  // A resolve slot whose address changed: what is idle goes to the old one.
  while (c && server_moved(t.routing, server, c->addr_version)) {
    upstream_close(c);
    c = l.head;
  }
  if (!c) return nullptr;
  unlink_idle(c);
  c->reused = true;
  ++w.metrics.server[static_cast<std::size_t>(c->metric)].conn_reused;
  return c;
}

UpstreamConn* upstream_new(Worker& w, WorkerTable& t, std::uint16_t server) {
  auto* c = new UpstreamConn();
  c->worker = &w;
  c->server = server;
  c->tab = &t;
  c->metric = t.routing.metric_server[server];
  c->stream.init(w.streams, c);
  ++w.metrics.server[static_cast<std::size_t>(c->metric)].conn_new;
  return c;
}

void upstream_release(UpstreamConn* c) noexcept {
  Worker& w = *c->worker;
  c->ex = nullptr;
  c->in_len = c->parse_pos = 0;
  w.put_buffer(c->in);
  c->in = nullptr;
  IdleList& l = c->tab->idle[c->server];
  if (w.draining || c->tab != w.tab || l.count >= kMaxIdlePerServer || c->write_pending ||
      server_moved(c->tab->routing, c->server, c->addr_version)) {
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
  link_idle(c, l);
}

void upstream_close(UpstreamConn* c) noexcept {
  if (c->stream.closing()) return;
  ++c->worker->metrics.server[static_cast<std::size_t>(c->metric)].conn_closed;
  unlink_idle(c);
  c->ex = nullptr;
  c->worker->put_buffer(c->in);
  c->in = nullptr;
  c->stream.close();
}

void upstream_sweep(Worker& w, bool all) noexcept {
  const std::uint64_t now = w.now_ms();
  const Routing& r = w.tab->routing;
  for (std::size_t i = 0; i < w.tab->idle.size(); ++i) {
    // The list is LIFO: the oldest are at the tail, but lists are short; walk it.
    UpstreamConn* c = w.tab->idle[i].head;
    while (c) {
      UpstreamConn* next = c->next;
      if (all || now - c->idle_since_ms >= kUpstreamIdleTimeoutMs || server_moved(r, i, c->addr_version))
        upstream_close(c);
      c = next;
    }
  }
}

void upstream_move_idle(Worker& w, WorkerTable& from, WorkerTable& to) noexcept {
  const RouteTable& a = *from.routing.table;
  const RouteTable& b = *to.routing.table;
  for (std::size_t i = 0; i < from.idle.size(); ++i) {
    const ServerDef& s = a.servers[i];
    const int j = find_server(b, a.pools[s.pool].name, s.authority, s.slot);
    while (UpstreamConn* c = from.idle[i].head) {
      if (j < 0 || w.draining) {
        upstream_close(c);
        continue;
      }
      unlink_idle(c);
      IdleList& l = to.idle[static_cast<std::size_t>(j)];
      c->tab = &to;
      c->server = static_cast<std::uint16_t>(j);
      c->metric = to.routing.metric_server[static_cast<std::size_t>(j)];
      link_idle(c, l);
    }
  }
}

}  // namespace juggler
