// L4 connections (l4.hpp): accept, pick, connect (the next server on
// failure), then the tunnel relays until either side ends it.
#include "listener/l4.hpp"

#include <cstring>
#include <type_traits>

#include "http1/upgrade.hpp"
#include "juggler/upstream.hpp"
#include "stream/client_hello.hpp"
#include "stream/proxy_protocol.hpp"

namespace juggler {

// One client connection of an L4 listener and its tunnel. ~900 bytes while
// idle: the two streams, the balancer's ticket, the tried set.
struct L4Conn final : TunnelOwner {
  Stream streams[2];  // the tunnel's sides: the client's, the server's
  Tunnel tunnel;
  Worker* worker = nullptr;
  WorkerTable* tab = nullptr;  // pinned from accept to close: pool, server and ticket are numbered by it
  BalanceTicket ticket;
  Tried tried;
  int server = -1;  // the server of the current attempt
  std::uint16_t pool = 0;
  std::uint16_t attempts = 0;
  std::uint64_t start_us = 0;  // accepted (the access log's duration)
  std::uint8_t ip_len = 0;
  std::uint8_t preface_len = 0;  // send_proxy pools: the header in `preface`
  bool peek_sni = false;         // an sni listener's (after the PROXY header, if it has one)
  bool carried = false;          // ...whose PROXY header's addresses wait in `preface` for the pool
  char ip[46];
  char preface[kProxyHeaderOut];
  ProxyPrelude proxy;  // proxy_protocol listeners
  SniPrelude sni;      // sni listeners
  L4Conn* prev = nullptr;  // L4Worker::live, or ::free (next only)
  L4Conn* next = nullptr;

  void on_tunnel_connected(Tunnel& t, int status) noexcept override;
  void on_tunnel_closed(Tunnel& t) noexcept override;
};

namespace {

constexpr std::uint32_t kKeepFree = 256;
const RequestHead kNoHead{};  // what an L4 pick sees of "the request": nothing (key=ip uses the address)

const PoolDef& pool_of(const L4Conn* c) { return c->tab->routing.table->pools[c->pool]; }

// Picks the next server not tried yet and connects to it; none left (or too
// many attempts): the client connection is closed.
void connect_next(L4Conn* c) {
  Worker& w = *c->worker;
  const PoolDef& pool = pool_of(c);
  const PickContext ctx{{c->ip, c->ip_len}, {}, w.now_ms()};
  const int s = c->attempts > pool.server_count ? -1 : c->tab->balancer.pick(c->pool, kNoHead, c->tried, ctx);
  if (s < 0 || w.draining) {
    log(LogLevel::Info, "L4: no server of pool %.*s left for %.*s", static_cast<int>(pool.name.size()),
        pool.name.data(), c->ip_len, c->ip);
    c->tunnel.close(Tunnel::End::NoServer);
    return;
  }
  c->server = s;
  ++c->attempts;
  sockaddr_storage copy;  // a resolve slot's address (the connect reads it at once)
  std::uint32_t version;  // a tunnel is not reused: no later check of its address
  c->tunnel.connect(server_sockaddr(c->tab->routing, static_cast<std::size_t>(s), copy, version),
                    settings(w).connect_timeout_ms);
}

// send_proxy pools: the PROXY header every server connection of the tunnel
// starts with, naming the client and the address it connected to (`in`,
// those a PROXY header in carried, else the connection's own).
void set_preface(L4Conn* c, const ProxyAddrs* in) {
  const SendProxy v = pool_of(c).send_proxy;
  if (v == SendProxy::Off) return;
  ProxyAddrs a;
  if (in) a = *in;
  else if (!proxy_addrs_of(c->tunnel.client().tcp(), &a)) a = ProxyAddrs{};  // UNKNOWN / LOCAL
  c->preface_len = static_cast<std::uint8_t>(format_proxy_header(v, a, c->preface));
  c->tunnel.set_preface({c->preface, c->preface_len});
}

// The ClientHello was peeked (`name` empty: none, or not TLS): the compiled
// `route sni` lines choose the pool; none matches: the connection closes.
void on_server_name(void* owner, std::string_view name) {
  auto* c = static_cast<L4Conn*>(owner);
  const int pool = c->tab->table->sni(name);
  if (pool < 0) {
    log(LogLevel::Info, "L4: no route sni for '%.*s' from %.*s", static_cast<int>(name.size()), name.data(),
        c->ip_len, c->ip);
    c->tunnel.close();
    return;
  }
  c->pool = static_cast<std::uint16_t>(pool);
  ProxyAddrs carried;
  if (c->carried) std::memcpy(&carried, c->preface, sizeof carried);
  set_preface(c, c->carried ? &carried : nullptr);
  c->tab->balancer.begin(c->pool, kNoHead, c->ticket);
  connect_next(c);
}

// The PROXY header named the client: now the pool's strategy can pick, or,
// on an sni listener, the ClientHello that follows it is peeked first.
void on_proxy_header(void* owner, const ProxyHeader& h) {
  auto* c = static_cast<L4Conn*>(owner);
  if (c->peek_sni) {
    // Until the pool is known, its send_proxy header too: the addresses wait
    // where the header will be written.
    static_assert(sizeof(ProxyAddrs) <= sizeof c->preface && std::is_trivially_copyable_v<ProxyAddrs>);
    c->carried = !h.local;
    if (c->carried) std::memcpy(c->preface, &h.addrs, sizeof h.addrs);
    c->sni.start(c->tunnel.client(), c->worker->buffers, on_server_name, c);  // reads what followed the header
    return;
  }
  set_preface(c, h.local ? nullptr : &h.addrs);
  c->tab->balancer.begin(c->pool, kNoHead, c->ticket);
  connect_next(c);
}

}  // namespace

L4Worker::L4Worker(Worker& w) noexcept
    : env{&w.streams, &w.buffers, &w.wheel, settings(w).tunnel_idle_timeout_ms} {}

L4Worker::~L4Worker() {
  // After the loop ended: every tunnel's close callbacks have run.
  while (L4Conn* c = free) {
    free = c->next;
    delete c;
  }
}

void l4_accept(Worker& w, uv_stream_t* server, const ListenerDef& def, SSL_CTX* tls) {
  const auto pool = static_cast<std::uint16_t>(def.pool);  // `def` is of w.tab's table
  L4Worker& l4 = l4_worker(w);
  L4Conn* c = l4.free;
  if (c) {
    l4.free = c->next;
    --l4.free_count;
    c->~L4Conn();
    new (c) L4Conn();
  } else {
    c = new L4Conn();
  }
  c->worker = &w;
  c->tab = w.tab;
  ++c->tab->pins;
  c->pool = pool;
  c->start_us = now_us();
  c->next = l4.live;
  if (l4.live) l4.live->prev = c;
  l4.live = c;
  ++w.tunnels_open;
  c->tunnel.init(l4.env, c, c->streams[0], c->streams[1]);
  if (c->tunnel.client().accept(server, tls) != 0) {
    c->tunnel.close();
    return;
  }
  c->ip_len = c->tunnel.client().peer_ip(c->ip);
  c->peek_sni = def.sni;
  if (def.proxy_protocol) {
    c->proxy.start(c->tunnel.client(), w.buffers, c->ip, &c->ip_len, on_proxy_header, c);
    c->tunnel.expire_in(settings(w).client_header_timeout_ms);  // the header (and a ClientHello) come first, and soon
    return;
  }
  if (def.sni) {
    c->sni.start(c->tunnel.client(), w.buffers, on_server_name, c);
    c->tunnel.expire_in(settings(w).client_header_timeout_ms);  // the ClientHello comes first, and soon
    return;
  }
  set_preface(c, nullptr);
  c->tab->balancer.begin(pool, kNoHead, c->ticket);
  connect_next(c);
}

void L4Conn::on_tunnel_connected(Tunnel& t, int status) noexcept {
  Worker& w = *worker;
  ServerHealth& h = tab->routing.health[static_cast<std::size_t>(server)];
  const ServerDef& sd = tab->routing.table->servers[static_cast<std::size_t>(server)];
  if (status == 0) {
    passive_success(h);
    tab->balancer.sent(ticket, server);  // in flight (least_conn) until the tunnel closes
    return;
  }
  const PoolDef& p = pool_of(this);
  log(LogLevel::Info, "L4 connect to %.*s failed: %s", JUGGLER_SERVER_ARGS(sd), uv_strerror(status));
  server_failure(w, *tab, static_cast<std::uint16_t>(server), p, uv_strerror(status));
  tried.add(static_cast<std::uint32_t>(server) - p.first_server);
  if (t.state() == Tunnel::State::Connecting) connect_next(this);
}

void L4Conn::on_tunnel_closed(Tunnel& t) noexcept {
  Worker& w = *worker;
  L4Worker& l4 = *w.l4;
  if (w.access_log.enabled()) {
    const RouteTable& table = *tab->routing.table;  // the table pool and server are numbers of
    AccessRecord r;
    r.kind = "tcp";
    r.tls = t.client().tls_version();  // listen tls: the terminated side's version
    r.client_ip = {ip, ip_len};
    if (pool < table.pools.size()) r.pool = table.pools[pool].name;  // an sni connection may end before its route
    if (server >= 0 && t.end() != Tunnel::End::NoServer)
      r.upstream = table.servers[static_cast<std::size_t>(server)].authority;
    r.bytes_in = t.bytes_from(0);
    r.bytes_out = t.bytes_from(1);
    r.duration_us = now_us() - start_us;
    r.retries = attempts > 1 ? attempts - 1U : 0U;
    Tunnel::end_letters(t.end(), attempts > 0, r.term);
    w.access_log.record(r);
  }
  tab->balancer.finish(ticket);
  --tab->pins;
  tab = nullptr;
  proxy.release();  // closed before the header was complete
  sni.release();    // ...or the ClientHello
  if (prev) prev->next = next;
  else l4.live = next;
  if (next) next->prev = prev;
  --w.tunnels_open;
  if (l4.free_count >= kKeepFree) {
    delete this;
    return;
  }
  next = l4.free;
  l4.free = this;
  ++l4.free_count;
}

void l4_close_all(Worker& w) noexcept {
  if (!w.l4) return;
  for (L4Conn* c = w.l4->live; c; c = c->next) c->tunnel.close();
  upgrades_close_all(w);
}

}  // namespace juggler
