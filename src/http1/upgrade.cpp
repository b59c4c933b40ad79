// HTTP/1 connections that switched protocols (upgrade.hpp).
//
// Data flow: the 101 head and whatever the server sent after it (already in
// the server connection's buffer) become the tunnel's held bytes for the
// client, so the head goes out first and nothing is lost; the bytes the client
// sent after its request head (a request with a body is refused, so they are
// the new protocol's) become the held bytes for the server. From then on the
// Tunnel relays both ways (half-close, timeout.tunnel_idle).
//
// Ownership: a Stream cannot move (libuv holds its handle's address), so the
// tunnel adopts the two streams where they are: the ClientSession and the
// UpstreamConn stay allocated, idle, owning their stream's memory, until the
// tunnel reports both closed; then the session goes back to the worker's free
// list (as its own close callback would have sent it) and the server
// connection is freed. Neither is on any list meanwhile (the session left the
// worker's sessions: drain and the session count no longer see it; the
// tunnel is counted with the L4 connections, which a drain lets run for
// timeout.drain and then closes).
#include "http1/upgrade.hpp"

#include <cstring>

#include "exchange/exchange.hpp"
#include "http1/connection.hpp"
#include "juggler/upstream.hpp"
#include "listener/l4.hpp"

namespace juggler {

struct UpgradeTunnel final : TunnelOwner {
  Tunnel tunnel;
  Worker* worker = nullptr;
  WorkerTable* tab = nullptr;  // pinned to the end: route, pool and server are numbers of its table
  ClientSession* session = nullptr;
  UpstreamConn* server = nullptr;
  // The exchange's in-flight count on its server (least_conn, random and
  // least_time read it), moved here at the 101: an open WebSocket is a busy
  // connection of its server until the tunnel closes, as an L4 tunnel is.
  BalanceTicket ticket;
  UpgradeTunnel* prev = nullptr;  // the worker's upgraded connections (L4Worker::upgraded)
  UpgradeTunnel* next = nullptr;
  // For the access log's line when the tunnel ends (the exchange, logged at
  // the 101, is back in its pool by then): its request line, Referer and
  // User-Agent (ExchangeState's log_* lengths), route and server.
  std::uint64_t start_us = 0;
  int route = -1, pool = -1;
  std::uint16_t line_len = 0, referer_len = 0, agent_len = 0;
  char log_text[sizeof Exchange::log_text];

  void on_tunnel_connected(Tunnel&, int) noexcept override {}
  void on_tunnel_closed(Tunnel& t) noexcept override;
};

namespace {

// `len` bytes from `from` moved to the start of `b`, or the buffer given back
// when there are none. Both connections' buffers are small ones here (a
// bodyless request, a response head), from the pool the tunnel returns to.
Tunnel::Held hold(Worker& w, Buffer* b, const char* from, std::size_t len) {
  if (!b) return {};
  if (len == 0) {
    w.put_buffer(b);
    return {};
  }
  std::memmove(b->data, from, len);
  return {b, static_cast<std::uint32_t>(len), false};
}

}  // namespace

void http1_upgrade(Exchange* ex) {
  Worker& w = *ex->worker;
  // HTTP/1 is the one protocol that sends an Upgrade, and upstream_connect_tcp
  // the one server transport outside the unit tests (which set their own hook).
  auto* s = static_cast<ClientSession*>(ex->down);
  auto* c = static_cast<UpstreamConn*>(ex->up);
  if (s->stream.write_pending() || s->stream.closing()) {
    s->abort();  // cannot switch cleanly: both connections close
    return;
  }
  L4Worker& l4 = l4_worker(w);
  auto* u = new UpgradeTunnel();
  u->worker = &w;
  u->tab = ex->tab;
  ++u->tab->pins;
  u->session = s;
  u->server = c;
  u->ticket = ex->ticket;
  ex->ticket.started = -1;  // the exchange's finish no longer ends it: the tunnel's does
  if (w.access_log.enabled()) {
    u->start_us = now_us();
    u->route = ex->route ? static_cast<int>(ex->route->index) : -1;
    u->pool = ex->route ? ex->route->pool : -1;
    u->line_len = ex->log_line_len;
    u->referer_len = ex->log_referer_len;
    u->agent_len = ex->log_agent_len;
    std::memcpy(u->log_text, ex->log_text, sizeof u->log_text);
  }

  // The server connection: out of the exchange's hands (nobody reuses it).
  const char* head = ex->resp.head_begin();
  const std::size_t to_client = static_cast<std::size_t>(c->in->data + c->in_len - head);
  const Tunnel::Held from_server = hold(w, c->in, head, to_client);
  c->in = nullptr;
  c->in_len = c->parse_pos = 0;
  c->ex = nullptr;
  ex->up = nullptr;

  // The client session: out of the worker's sessions, its exchange over.
  Tunnel::Held from_client = hold(w, s->in, s->in ? s->in->data + s->parse_pos : nullptr, s->in_len - s->parse_pos);
  from_client.eof = s->eof;
  s->in = nullptr;
  s->in_len = s->parse_pos = 0;
  s->ex = nullptr;
  TimerWheel::disarm(&s->timer);
  session_unlink(s);

  u->next = l4.upgraded;
  if (l4.upgraded) l4.upgraded->prev = u;
  l4.upgraded = u;
  ++w.tunnels_open;
  u->tunnel.adopt(l4.env, u, s->stream, c->stream, from_client, from_server);
}

void UpgradeTunnel::on_tunnel_closed(Tunnel& t) noexcept {
  Worker& w = *worker;
  L4Worker& l4 = *w.l4;
  if (w.access_log.enabled()) {
    const RouteTable& table = *tab->routing.table;
    AccessRecord r;
    r.kind = "websocket";
    r.client_ip = session->peer();
    r.request_line = {log_text, line_len};
    r.referer = {log_text + line_len, referer_len};
    r.user_agent = {log_text + line_len + referer_len, agent_len};
    r.route = route;
    if (pool >= 0) r.pool = table.pools[static_cast<std::size_t>(pool)].name;
    r.upstream = table.servers[server->server].authority;
    r.status = 101;
    r.bytes_in = t.bytes_from(0);
    r.bytes_out = t.bytes_from(1);
    r.duration_us = now_us() - start_us;
    Tunnel::end_letters(t.end(), true, r.term);
    if (session->secure()) r.tls = session->tls_version();
    w.access_log.record(r);
  }
  if (prev) prev->next = next;
  else l4.upgraded = next;
  if (next) next->prev = prev;
  --w.tunnels_open;
  ++w.metrics.server[static_cast<std::size_t>(server->metric)].conn_closed;
  delete server;
  session->on_stream_closed();  // back to the free list
  tab->balancer.finish(ticket);
  --tab->pins;
  delete this;
}

void upgrades_close_all(Worker& w) noexcept {
  if (!w.l4) return;
  for (UpgradeTunnel* u = w.l4->upgraded; u; u = u->next) u->tunnel.close();
}

}  // namespace juggler
