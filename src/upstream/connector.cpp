// The upstream connector: picks a server (through the balancer), reuses an
// idle connection or connects (state Connect), watches the parties' silence
// (the exchange's timer), and decides from the one Termination value every
// failure leaves what happens next (state Failed): retry, 408 / 502 / 504,
// or a cut.
#include "upstream/connector.hpp"

#include "cache/cache.hpp"
#include "exchange/exchange.hpp"
#include "respond/responder.hpp"
#include "juggler/upstream.hpp"

namespace juggler {

namespace {

// The answer when no server answered: a stale cached copy within its
// stale-if-error window (routes with `cache`), else the error page.
State reply_failure(Exchange* ex, int status) {
  if (ex->cache_entry && cache_stands_in(ex)) return cache_reply_stale(ex);
  return reply_error(ex, status);
}

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
  if (reused) return;
  const PoolDef& pool = ex->tab->routing.table->pools[static_cast<std::size_t>(ex->route->pool)];
  server_failure(*ex->worker, *ex->tab, static_cast<std::uint16_t>(ex->server), pool, t.timeout ? "timed out" : uv_strerror(t.err));
}

// Whether the failed attempt goes to another server (or, for a kept-alive
// connection the server had closed, to a fresh one): true when it will.
bool retry(Exchange* ex, bool reused) {
  Worker& w = *ex->worker;
  WorkerTable& tab = *ex->tab;
  const PoolDef& pool = tab.routing.table->pools[static_cast<std::size_t>(ex->route->pool)];
  const std::uint32_t pos = static_cast<std::uint32_t>(ex->server) - pool.first_server;
  if (!ex->body->replayable() || ex->attempts >= pool.server_count + 3) return false;
  if (ex->term.when == When::Connect) {
    // Nothing reached the server (refused, unreachable, connect timeout):
    // the next server gets it, at no risk and outside the retry budget.
    ex->tried.add(pos);
    return true;
  }
  // A request that may have reached a server is retried only within the
  // pool's budget, so a sick cluster does not see a retry storm: a kept-alive
  // connection the server had already closed (replayed on a fresh one), or an
  // idempotent request whose server closed or reset before answering (sent
  // to another server).
  const bool wanted = reused || (idempotent(ex->head.method) && ex->retries_left > 0);
  std::int32_t& tokens = tab.retry_tokens[static_cast<std::size_t>(ex->route->pool)];
  if (!wanted) return false;
  if (tokens < WorkerTable::kRetryCost) {
    ++w.retries_denied;
    return false;
  }
  tokens -= WorkerTable::kRetryCost;
  ++w.retries;
  if (!reused) {
    --ex->retries_left;
    ex->tried.add(pos);
  }
  return true;
}

// Whom a proxied exchange is waiting for now, and how long it may: the
// server while it has to read what we sent or to answer (timeout.upstream),
// the client while it has to send its body or to take what we wrote
// (timeout.client_idle). Time the proxy itself paused a side for
// backpressure is the other side's, never the paused one's.
enum class Party : std::uint8_t { Client, Server };

Party waiting_on(const Exchange* ex, bool began) {
  if (!began) {
    if (ex->up->write_pending) return Party::Server;  // it is not reading the request
    if (!ex->body->complete()) return Party::Client;  // the body is slow to come
    return Party::Server;                             // the answer is slow to come
  }
  return ex->down->sending() ? Party::Client : Party::Server;
}

State fail(Exchange* ex, Termination t) {
  ex->term = t;
  return State::Failed;
}

// Connect, entered: pick a server (skipping those tried) and take an idle
// connection to it, or connect; 503 when nobody is usable.
State connect_upstream(Exchange* ex) {
  Worker& w = *ex->worker;
  const PickContext ctx{ex->down->peer(), ex->ticket.minted_cookie(), w.now_ms()};
  const int s = ex->tab->balancer.pick(static_cast<std::uint16_t>(ex->route->pool), ex->head, ex->tried, ctx);
  if (s < 0) {
    // Nobody left to try: 503 when nobody was usable at all, else the last
    // attempt's failure stands (502).
    if (ex->attempts == 0) ex->term = {Who::Proxy, When::Connect, false, 0};
    return reply_failure(ex, ex->attempts == 0 ? 503 : 502);
  }
  ex->server = s;
  ++ex->attempts;
  int rc = 0;
  ex->up = w.upstream_connect(w, static_cast<std::uint16_t>(s), ex, &rc);
  if (rc != 0) return fail(ex, {Who::Server, When::Connect, false, rc});
  if (ex->up->reused) return State::Send;
  w.wheel.arm(&ex->timer, w.now_ms() + settings(w).connect_timeout_ms);
  return State::Connect;
}

}  // namespace

State state_connect(Exchange* ex, Event ev, int arg) {
  switch (ev) {
    case Event::Enter:
      return connect_upstream(ex);
    case Event::Connected:
      return arg < 0 ? fail(ex, {Who::Server, When::Connect, false, arg}) : State::Send;
    case Event::Timer: {
      const std::string_view server = ex->tab->routing.table->servers[ex->up->server].authority;
      log(LogLevel::Info, "connect to %.*s timed out", static_cast<int>(server.size()), server.data());
      return fail(ex, {Who::Server, When::Connect, true, UV_ETIMEDOUT});
    }
    default:
      return on_other_event(ex, ev, arg, State::Connect);
  }
}

// The one place that decides what a failure means, from its value: a client
// that failed loses its connection (408 when it stalled before any answer);
// once a response began it cannot be replaced, so the client connection is
// cut; before that, a server that could not be reached or closed before
// answering is retried where that is safe; otherwise 504 for a server that
// was too slow and 502 for one that broke.
State exchange_fail(Exchange* ex) {
  const Termination t = ex->term;
  const Upstream* c = ex->up;
  const bool reused = c && c->reused;
  if (c && t.who == Who::Server && !t.timeout)
    log(LogLevel::Debug, "server %.*s failed: %s", JUGGLER_SERVER_ARGS(ex->tab->routing.table->servers[c->server]),
        uv_strerror(t.err));
  detach_upstream(ex, false);
  TimerWheel::disarm(&ex->timer);
  if (t.who == Who::Client) return t.timeout && t.when == When::Request ? reply_and_close(ex, 408) : State::Cut;
  if (t.when == When::Body) return State::Cut;
  // Transport failures before any answer: the connection could not be made,
  // or the server closed or reset it without answering. A broken answer or a
  // silent server is not retried (it may have acted on the request).
  const bool transport = t.who == Who::Server && (t.when == When::Connect || (!t.timeout && t.err != UV_EPROTO));
  if (transport) {
    count_server_failure(ex, reused, t);
    if (retry(ex, reused)) return State::Connect;
  }
  return reply_failure(ex, t.timeout && t.when != When::Connect ? 504 : 502);
}

State state_failed(Exchange* ex, Event, int) { return exchange_fail(ex); }

// The exchange's timeout once connected: a party that made no progress for
// its timeout: the server (504 before the response head, the response cut
// after it) or the client (408 before the head, dropped after it). Re-armed
// lazily from progress_ms.
State exchange_timer(Exchange* ex, State self) {
  Worker& w = *ex->worker;
  const Upstream* c = ex->up;
  if (!c) return self;
  const std::string_view server = ex->tab->routing.table->servers[c->server].authority;
  const bool began = self == State::Relay || self == State::Finish;
  const Party party = waiting_on(ex, began);
  const std::uint32_t limit =
      party == Party::Server ? settings(w).upstream_timeout_ms : settings(w).client_idle_timeout_ms;
  if (w.now_ms() - ex->progress_ms < limit) {
    w.wheel.arm(&ex->timer, ex->progress_ms + limit);
    return self;
  }
  if (party == Party::Client) {
    const std::string_view peer = ex->down->peer();
    log(LogLevel::Info, "client %.*s stalled %s for %u ms", static_cast<int>(peer.size()), peer.data(),
        began ? "reading the response" : "sending the body", limit);
    return fail(ex, {Who::Client, began ? When::Body : When::Request, true, UV_ETIMEDOUT});
  }
  if (!began)
    log(LogLevel::Info, "server %.*s did not answer within %u ms", static_cast<int>(server.size()), server.data(), limit);
  else
    log(LogLevel::Info, "server %.*s stalled mid-response for %u ms", static_cast<int>(server.size()), server.data(),
        limit);
  return fail(ex, {Who::Server, began ? When::Body : When::Head, true, UV_ETIMEDOUT});
}

void on_exchange_timer(TimerNode* t) { step(static_cast<Exchange*>(t->owner), Event::Timer); }

}  // namespace juggler
