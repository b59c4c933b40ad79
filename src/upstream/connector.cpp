// The upstream connector: picks a server (through the balancer), reuses an
// idle connection or connects, sends, reads the response for the relay, and
// turns every failure into one Termination value that exchange_fail() acts
// on: retry, 408 / 502 / 504, or a cut.
#include "upstream/connector.hpp"

#include "exchange/exchange.hpp"
#include "exchange/relay.hpp"
#include "http1/connection.hpp"
#include "respond/responder.hpp"
#include "juggler/upstream.hpp"

namespace juggler {

namespace {

bool idempotent(Method m) {
  switch (m) {
    case Method::Get:
    case Method::Head:
    case Method::Options:
    case Method::Put:
    case Method::Delete:
    case Method::Trace:
      return true;
    default:
      return false;
  }
}

// A server's failure counts against it (passive health), but for a
// kept-alive connection it had closed under us: a race, not its fault.
void count_server_failure(Exchange* ex, bool reused, const Termination& t) {
  Worker& w = *ex->worker;
  const PoolDef& pool = w.shared.config.table->pools[static_cast<std::size_t>(ex->route->pool)];
  ServerHealth& h = w.shared.health[static_cast<std::size_t>(ex->server)];
  if (reused || !passive_failure(h, pool, w.now_ms())) return;
  ++w.metrics.server[static_cast<std::size_t>(ex->server)].ejections;
  const ServerDef& sd = w.shared.config.table->servers[static_cast<std::size_t>(ex->server)];
  log(LogLevel::Warn, "server %.*s in pool %.*s ejected for %llu ms: %s", JUGGLER_SERVER_ARGS(sd),
      static_cast<int>(pool.name.size()), pool.name.data(),
      static_cast<unsigned long long>(h.ejected_until_ms.load() - w.now_ms()),
      t.timeout ? "timed out" : uv_strerror(t.err));
}

// Whether the failed attempt goes to another server (or, for a kept-alive
// connection the server had closed, to a fresh one): true when it was sent.
bool retry(Exchange* ex, bool reused) {
  Worker& w = *ex->worker;
  const PoolDef& pool = w.shared.config.table->pools[static_cast<std::size_t>(ex->route->pool)];
  const std::uint32_t pos = static_cast<std::uint32_t>(ex->server) - pool.first_server;
  if (!ex->replayable || ex->attempts >= pool.server_count + 3) return false;
  if (!ex->head_sent && !reused) {
    // Nothing reached the server (refused, unreachable, connect timeout):
    // the next server gets it, at no risk and outside the retry budget.
    ex->tried.add(pos);
    connect_upstream(ex);
    return true;
  }
  // A request that may have reached a server is retried only within the
  // pool's budget, so a sick cluster does not see a retry storm: a kept-alive
  // connection the server had already closed (replayed on a fresh one), or an
  // idempotent request whose server closed or reset before answering (sent
  // to another server).
  const bool wanted = reused || (idempotent(ex->head.method) && ex->retries_left > 0);
  std::int32_t& tokens = w.retry_tokens[static_cast<std::size_t>(ex->route->pool)];
  if (!wanted) return false;
  if (tokens < Worker::kRetryCost) {
    ++w.retries_denied;
    return false;
  }
  tokens -= Worker::kRetryCost;
  ++w.retries;
  if (!reused) {
    --ex->retries_left;
    ex->tried.add(pos);
  }
  connect_upstream(ex);
  return true;
}

void on_upstream_connect(uv_connect_t* req, int status) {
  auto* c = static_cast<UpstreamConn*>(req->data);
  Exchange* ex = c->ex;
  if (c->closing) return;
  if (!ex) {
    upstream_close(c);
    return;
  }
  if (status < 0) {
    exchange_fail(ex, {Who::Server, When::Connect, false, status});
    return;
  }
  c->connected = true;
  uv_tcp_nodelay(&c->tcp, 1);
  send_request(ex);
}

// Whom a proxied exchange is waiting for now, and how long it may: the
// server while it has to read what we sent or to answer (timeout.upstream),
// the client while it has to send its body or to take what we wrote
// (timeout.client_idle). Time the proxy itself paused a side for
// backpressure is the other side's, never the paused one's.
enum class Party : std::uint8_t { Client, Server };

Party waiting_on(const Exchange* ex) {
  const UpstreamConn* c = ex->up;
  if (!ex->resp_started) {
    if (c->write_pending) return Party::Server;     // it is not reading the request
    if (!ex->req_complete) return Party::Client;    // the body is slow to come
    return Party::Server;                           // the answer is slow to come
  }
  return ex->client->stream.write_pending() ? Party::Client : Party::Server;
}

}  // namespace

void send_request(Exchange* ex) {
  UpstreamConn* c = ex->up;
  Worker& w = *ex->worker;
  w.balancer.sent(ex->ticket, ex->server);
  ex->resp.init(HTTP_RESPONSE, ex->resp_headers.get(), settings(w).header_count);
  ex->resp.max_head_bytes = w.buffers.size();
  if (ex->is_head) ex->resp.expect_no_body();
  ex->head_sent = false;
  ex->sent_to = ex->head_end;
  if (!c->reading) {
    if (uv_read_start(as_stream(&c->tcp), upstream_on_alloc, upstream_on_read) == 0) c->reading = true;
  }
  ex->progress_ms = w.now_ms();
  w.wheel.arm(&ex->timer, ex->progress_ms + settings(w).upstream_timeout_ms);
  flush_upstream(ex);
}

// The one place that decides what a failure means, from its value: a client
// that failed loses its connection (408 when it stalled before any answer);
// once a response began it cannot be replaced, so the client connection is
// cut; before that, a server that could not be reached or closed before
// answering is retried where that is safe; otherwise 504 for a server that
// was too slow and 502 for one that broke.
void exchange_fail(Exchange* ex, Termination t) {
  UpstreamConn* c = ex->up;
  const bool reused = c && c->reused;
  Worker& w = *ex->worker;
  ex->term = t;
  if (c && t.who == Who::Server && !t.timeout)
    log(LogLevel::Debug, "server %.*s failed: %s", JUGGLER_SERVER_ARGS(w.shared.config.table->servers[c->server]),
        uv_strerror(t.err));
  detach_upstream(ex, false);
  TimerWheel::disarm(&ex->timer);
  if (t.who == Who::Client) {
    if (!ex->resp_started && t.timeout && t.when == When::Request) reply_and_close(ex, 408);
    else client_abort(ex->client);
    return;
  }
  if (ex->resp_started) {
    client_abort(ex->client);
    return;
  }
  // Transport failures before any answer: the connection could not be made,
  // or the server closed or reset it without answering. A broken answer or a
  // silent server is not retried (it may have acted on the request).
  const bool transport = t.who == Who::Server && (t.when == When::Connect || (!t.timeout && t.err != UV_EPROTO));
  if (transport) {
    count_server_failure(ex, reused, t);
    if (retry(ex, reused)) return;
  }
  reply_error(ex, t.timeout && t.when != When::Connect ? 504 : 502);
}

void connect_upstream(Exchange* ex) {
  Worker& w = *ex->worker;
  const PickContext ctx{{ex->client->ip, ex->client->ip_len}, ex->ticket.minted_cookie(), w.now_ms()};
  const int s = w.balancer.pick(static_cast<std::uint16_t>(ex->route->pool), ex->head, ex->tried, ctx);
  if (s < 0) {
    // Nobody left to try: 503 when nobody was usable at all, else the last
    // attempt's failure stands (502).
    if (ex->attempts == 0) ex->term = {Who::Proxy, When::Connect, false, 0};
    reply_error(ex, ex->attempts == 0 ? 503 : 502);
    return;
  }
  ex->server = s;
  ++ex->attempts;
  const auto server = static_cast<std::uint16_t>(s);
  if (UpstreamConn* c = upstream_take_idle(w, server)) {
    c->ex = ex;
    ex->up = c;
    send_request(ex);
    return;
  }
  UpstreamConn* c = upstream_new(w, server);
  c->ex = ex;
  ex->up = c;
  const auto* addr = reinterpret_cast<const sockaddr*>(&w.shared.server_addrs[server]);
  int rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_upstream_connect);
  if (rc != 0) {
    exchange_fail(ex, {Who::Server, When::Connect, false, rc});
    return;
  }
  w.wheel.arm(&ex->timer, w.now_ms() + settings(w).connect_timeout_ms);
}

// The exchange's timeout: connecting (try another server), or a party that
// made no progress for its timeout: the server (504 before the response head,
// the response cut after it) or the client (408 before the head, dropped
// after it). Re-armed lazily from progress_ms.
void on_exchange_timer(TimerNode* t) {
  auto* ex = static_cast<Exchange*>(t->owner);
  Worker& w = *ex->worker;
  UpstreamConn* c = ex->up;
  if (!c || ex->phase != Phase::Upstream) return;
  const std::string_view server = w.shared.config.table->servers[c->server].authority;
  if (!c->connected) {
    log(LogLevel::Info, "connect to %.*s timed out", static_cast<int>(server.size()), server.data());
    exchange_fail(ex, {Who::Server, When::Connect, true, UV_ETIMEDOUT});
    return;
  }
  const Party party = waiting_on(ex);
  const std::uint32_t limit =
      party == Party::Server ? settings(w).upstream_timeout_ms : settings(w).client_idle_timeout_ms;
  if (w.now_ms() - ex->progress_ms < limit) {
    w.wheel.arm(&ex->timer, ex->progress_ms + limit);
    return;
  }
  const ClientSession* s = ex->client;
  if (party == Party::Client) {
    log(LogLevel::Info, "client %.*s stalled %s for %u ms", s->ip_len, s->ip,
        ex->resp_started ? "reading the response" : "sending the body", limit);
    exchange_fail(ex, {Who::Client, ex->resp_started ? When::Body : When::Request, true, UV_ETIMEDOUT});
    return;
  }
  if (!ex->resp_started)
    log(LogLevel::Info, "server %.*s did not answer within %u ms", static_cast<int>(server.size()), server.data(), limit);
  else
    log(LogLevel::Info, "server %.*s stalled mid-response for %u ms", static_cast<int>(server.size()), server.data(),
        limit);
  exchange_fail(ex, {Who::Server, ex->resp_started ? When::Body : When::Head, true, UV_ETIMEDOUT});
}

void upstream_on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  auto* c = static_cast<UpstreamConn*>(h->data);
  if (!c->in) {
    c->in = c->worker->buffers.get();
    c->in_len = c->parse_pos = 0;
  }
  *buf = uv_buf_init(c->in->data + c->in_len, c->in->cap - c->in_len);
}

void upstream_on_read(uv_stream_t* st, ssize_t n, const uv_buf_t*) {
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
    process_upstream(ex);
    // Backpressure: stop reading the server while the client is behind.
    if (ex == c->ex && ex->client && ex->client->stream.write_pending() && c->reading) {
      uv_read_stop(st);
      c->reading = false;
    }
    return;
  }
  if (n == 0) return;
  // EOF or error from the server.
  if (n == UV_EOF && ex->resp_started && ex->resp.body_until_close()) {
    ex->resp.finish();
    ex->resp_complete = true;
    ex->upstream_reusable = false;
    ex->client_close = true;
    detach_upstream(ex, false);
    if (!ex->client->stream.write_pending()) finish_exchange(ex);
    return;
  }
  exchange_fail(ex, {Who::Server, ex->resp_started ? When::Body : When::Head, false, static_cast<int>(n)});
}

}  // namespace juggler
