// Listeners: accepting connections (one listening socket per worker and
// listen statement, SO_REUSEPORT; TLS ones at most kAcceptsPerTurn per loop
// iteration), refusing them over limit.connections_per_worker, and handing
// them to an HTTP/1 connection (http, https) or a tunnel (tcp, tls: l4.cpp).
#include "listener/listener.hpp"

#include <algorithm>

#include "http1/connection.hpp"
#include "listener/l4.hpp"

namespace juggler {

namespace {

// limit.connections_per_worker reached: the connection is accepted, told 503
// (best effort, one non-blocking write; an L4 one is told nothing) and closed, so clients are not left
// waiting in the backlog.
void refuse_connection(Worker& w, uv_stream_t* server, bool http) {
  auto* t = new uv_tcp_t();
  uv_tcp_init(&w.loop, t);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(t)) == 0 && http) {
    std::string_view bytes = w.shared.error_pages.reply(503, true);
    uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
    uv_try_write(reinterpret_cast<uv_stream_t*>(t), &b, 1);
  }
  ++w.refused_connections;
  uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
}

// One new TLS connection per loop iteration (nginx's multi_accept off): a TLS
// connection costs a handshake (~200 us of CPU) before it sends anything, and
// accepting every pending one in a single turn put a turn's worth of them
// ahead of each request already in flight (scenario 3b: p50 2.7 ms against
// nginx's 1.1 ms). Paced, the loop goes round once per connection and the
// connections waiting for their turn queue in the kernel's backlog.
constexpr std::uint32_t kAcceptsPerTurn = 1;

void accept_one(ListenerCtx* lc, uv_stream_t* server) {
  Worker* w = lc->worker;
  const std::uint32_t limit = settings(*w).connections_per_worker;
  if (limit && w->session_count + l4_count(*w) >= limit) {
    refuse_connection(*w, server, lc->def->kind == ListenKind::Http || lc->def->kind == ListenKind::Https);
    return;
  }
  if (lc->def->kind == ListenKind::Tcp || lc->def->kind == ListenKind::Tls) {
    // The same listener in the worker's table (which has it: a worker opens
    // and closes listeners as it swaps tables) names the pool by its number.
    const Routing& r = w->tab->routing;
    const auto k = static_cast<std::size_t>(std::find(r.listeners.begin(), r.listeners.end(), lc->slot) - r.listeners.begin());
    if (k == r.listeners.size()) return refuse_connection(*w, server, false);
    l4_accept(*w, server, r.table->listeners[k], lc->tls ? lc->tls->load(std::memory_order_acquire)->default_ctx() : nullptr);
    return;
  }
  client_accept(*w, server, lc->tls ? lc->tls->load(std::memory_order_acquire)->default_ctx() : nullptr, lc->def->proxy_protocol);
}

void on_prepare(uv_prepare_t* h) {
  auto* lc = static_cast<ListenerCtx*>(h->data);
  lc->accepted = 0;
  uv_prepare_stop(h);
  if (!lc->deferred) return;
  lc->deferred = false;
  if (uv_is_closing(reinterpret_cast<uv_handle_t*>(lc->server))) return;
  ++lc->accepted;
  accept_one(lc, lc->server);  // uv_accept starts watching the socket again
}

}  // namespace

void listener_init(ListenerCtx& lc, uv_loop_t* loop, uv_stream_t* server) noexcept {
  lc.server = server;
  uv_prepare_init(loop, &lc.prepare);
  lc.prepare.data = &lc;
}

void listener_close(ListenerCtx& lc) noexcept {
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&lc.prepare)))
    uv_close(reinterpret_cast<uv_handle_t*>(&lc.prepare), nullptr);
}

void listener_on_connection(uv_stream_t* server, int status) {
  auto* lc = static_cast<ListenerCtx*>(server->data);
  Worker* w = lc->worker;
  if (status < 0) {
    ++w->metrics.accept_errors;
    // EMFILE and the like: libuv sheds the pending connections itself; say so
    // at most once a second, not once per connection.
    if (w->now_ms() - w->last_accept_error_ms >= 1000) {
      w->last_accept_error_ms = w->now_ms();
      log(LogLevel::Warn, "accept: %s", uv_strerror(status));
    }
    return;
  }
  if (!lc->tls) {
    // Plain HTTP: a connection costs no handshake before its request, so
    // every pending one is taken now (pacing them cost instructions, no latency).
    accept_one(lc, server);
    return;
  }
  if (lc->accepted >= kAcceptsPerTurn) {
    // Not accepted now: libuv keeps the descriptor and stops watching the
    // socket until uv_accept, from the next prepare phase.
    lc->deferred = true;
    uv_prepare_start(&lc->prepare, on_prepare);
    return;
  }
  ++lc->accepted;
  uv_prepare_start(&lc->prepare, on_prepare);  // resets the count before the next poll
  accept_one(lc, server);
}

}  // namespace juggler
