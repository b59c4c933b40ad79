// Exchanges: one request and its response. Pooled per worker; attached to a
// client connection while a request is in flight. Routing (the compiled
// table, through the worker's pointer) and the action a route names start
// here; the relay, the connector and the responders carry it on.
#include "exchange/exchange.hpp"

#include <cstring>
#include <iterator>

#include "admin/admin.hpp"
#include "cache/cache.hpp"
#include "filter/filtered.hpp"
#include "respond/responder.hpp"
#include "upstream/connector.hpp"
#include "juggler/upstream.hpp"

namespace juggler {

Exchange* exchange_get(Worker& w) {
  Exchange* ex = w.free_exchanges;
  if (ex) {
    w.free_exchanges = ex->next_free;
  } else {
    const Settings& st = settings(w);
    auto owned = std::make_unique<Exchange>();
    ex = owned.get();
    const std::uint32_t hc = st.header_count ? st.header_count : 1;
    ex->worker = &w;
    ex->req_headers = std::make_unique<HeaderSpan[]>(hc);
    ex->resp_headers = std::make_unique<HeaderSpan[]>(hc);
    ex->route_headers = std::make_unique<Header[]>(hc);
    ex->iov_cap = exchange_iov_cap(hc);
    ex->iov = std::make_unique<uv_buf_t[]>(ex->iov_cap);
    ex->scratch_cap = static_cast<std::uint32_t>(st.header_bytes) + 512;
    ex->scratch = std::make_unique<char[]>(ex->scratch_cap);
    ex->timer.fire = on_exchange_timer;
    ex->timer.owner = ex;
    w.exchanges.push_back(std::move(owned));
  }
  ex->next_free = nullptr;
  ++w.active_exchanges;
  w.exchange_water.note(w.active_exchanges);
  return ex;
}

void exchange_begin(Exchange* ex, Downstream* down, RequestBody* body) {
  Worker& w = *ex->worker;
  ex->state() = ExchangeState{};
  ex->down = down;
  ex->body = body;
  ex->req.init(HTTP_REQUEST, ex->req_headers.get(), settings(w).header_count);
  ex->req.max_head_bytes = settings(w).header_bytes;
}

void exchange_put(Worker& w, Exchange* ex) {
  TimerWheel::disarm(&ex->timer);
  if (ex->tab) {
    --ex->tab->pins;
    ex->tab = nullptr;
  }
  if (ex->filters) filters_release(ex);
  if (ex->cache || ex->cache_ticket) cache_release(ex);  // a PURGE may wait for the store
  ex->next_free = w.free_exchanges;
  w.free_exchanges = ex;
  --w.active_exchanges;
}

void detach_upstream(Exchange* ex, bool reuse) {
  if (ex->tab) ex->tab->balancer.finish(ex->ticket);
  Upstream* c = ex->up;
  if (!c) return;
  ex->up = nullptr;
  c->ex = nullptr;
  if (reuse) c->release();
  else c->close();
}

void copy_log_fields(Exchange* ex) {
  std::string_view line = ex->req.first_line();
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  std::string_view ref = ex->head.header("referer");
  std::string_view ua = ex->head.header("user-agent");
  std::size_t room = sizeof ex->log_text;
  std::size_t a = std::min(line.size(), room / 2);
  std::size_t b = std::min(ref.size(), (room - a) / 2);
  std::size_t c = std::min(ua.size(), room - a - b);
  if (a) std::memcpy(ex->log_text, line.data(), a);
  if (b) std::memcpy(ex->log_text + a, ref.data(), b);
  if (c) std::memcpy(ex->log_text + a + b, ua.data(), c);
  ex->log_line_len = static_cast<std::uint16_t>(a);
  ex->log_referer_len = static_cast<std::uint16_t>(b);
  ex->log_agent_len = static_cast<std::uint16_t>(c);
}

void log_exchange(Exchange* ex) {
  Worker& w = *ex->worker;
  const std::uint64_t duration_us = ex->start_us ? now_us() - ex->start_us : 0;
  const int pool = ex->route ? ex->route->pool : -1;
  const std::int64_t ttfb_us =
      ex->first_byte_us && ex->start_us ? static_cast<std::int64_t>(ex->first_byte_us - ex->start_us) : -1;
  const Routing* rt = ex->tab ? &ex->tab->routing : nullptr;  // the table route, pool and server are numbers of
  const auto row = [](const std::vector<std::int32_t>& rows, int i) { return i >= 0 ? rows[static_cast<std::size_t>(i)] : -1; };
  w.metrics.exchange_done(ex->route && rt ? row(rt->metric_route, ex->route->index) : -1,
                          rt ? row(rt->metric_pool, pool) : -1, rt ? row(rt->metric_server, ex->server) : -1,
                          ex->status, ex->bytes_out, duration_us, ttfb_us, ex->down->h2());
  if (ex->cache) ++w.cache_results[ex->cache];
  if (!w.access_log.enabled()) return;
  const RouteTable* t = rt ? rt->table : nullptr;
  AccessRecord r;
  r.client_ip = ex->down->peer();
  r.request_line = {ex->log_text, ex->log_line_len};
  r.referer = {ex->log_text + ex->log_line_len, ex->log_referer_len};
  r.user_agent = {ex->log_text + ex->log_line_len + ex->log_referer_len, ex->log_agent_len};
  r.route = ex->route ? static_cast<int>(ex->route->index) : -1;
  if (pool >= 0 && t) r.pool = t->pools[static_cast<std::size_t>(pool)].name;
  if (ex->server >= 0 && t) r.upstream = t->servers[static_cast<std::size_t>(ex->server)].authority;
  r.status = ex->status;
  r.bytes_in = ex->bytes_in;
  r.bytes_out = ex->bytes_out;
  r.duration_us = duration_us;
  r.ttfb_us = ttfb_us;
  r.retries = ex->attempts > 1 ? ex->attempts - 1U : 0U;
  termination_letters(ex->term, r.term);
  if (ex->down->secure()) r.tls = ex->down->tls_version();
  r.h2 = ex->down->h2();
  w.access_log.record(r);
}

void termination_letters(const Termination& term, char (&out)[2]) noexcept {
  static constexpr char kWho[] = {'-', 'C', 'S', 'P'};
  static constexpr char kWhen[] = {'-', 'R', 'C', 'H', 'D'};
  const char who = kWho[static_cast<int>(term.who)];
  out[0] = term.timeout && who != '-' ? static_cast<char>(who - 'A' + 'a') : who;
  out[1] = kWhen[static_cast<int>(term.when)];
}

namespace {

TunnelHook g_tunnel_hook = nullptr;  // set once at start-up, before any worker runs

bool response_began(State st) { return st == State::Relay || st == State::Finish || st == State::Done; }

// The client left first: the exchange is cut, and the log says when.
State client_gone(Exchange* ex) {
  if (ex->term.who == Who::None) {
    const State s = ex->st;
    const When when = response_began(s) ? When::Body
                      : s == State::Connect || s == State::Send || s == State::AwaitHead ? When::Head
                                                                                          : When::Request;
    ex->term = {Who::Client, when, false, 0};
  }
  return State::Cut;
}

// Done: logs, lets go of the server connection (to its idle list when the
// exchange ended cleanly) and the exchange, and tells the connection.
void finish_exchange(Exchange* ex) {
  Worker& w = *ex->worker;
  log_exchange(ex);
  const bool complete = ex->body->complete();
  detach_upstream(ex, ex->up && ex->upstream_reusable && complete);
  const bool close = ex->client_close || !complete || w.draining;
  Downstream* d = ex->down;
  exchange_put(w, ex);
  // Linger when the client may still be sending (an unread body).
  d->done(close, !complete);
}

// Cut: the answer cannot be completed (or the client left).
void cut_exchange(Exchange* ex) {
  if (ex->status == 0) ex->status = 499;  // nginx's "client closed request"
  log_exchange(ex);
  detach_upstream(ex, false);
  Downstream* d = ex->down;
  exchange_put(*ex->worker, ex);
  d->abort();
}

// Tunnel: both sides go to the hook, which takes them.
void tunnel_exchange(Exchange* ex) {
  g_tunnel_hook(ex);
  log_exchange(ex);
  detach_upstream(ex, false);  // closes the server connection unless the hook took it
  exchange_put(*ex->worker, ex);
}

using Handler = State (*)(Exchange*, Event, int);
constexpr Handler kHandlers[] = {state_head,       state_route, state_respond, state_cache_wait, state_cache_fetch,
                                 state_connect,    state_send,  state_await_head, state_relay, state_finish,
                                 state_failed};
static_assert(std::size(kHandlers) == static_cast<std::size_t>(State::Done));

// The states that act when entered; the others (and the ends) wait for
// their next event, so entering them costs no call.
constexpr unsigned kActsOnEnter = 1U << static_cast<unsigned>(State::Route) | 1U << static_cast<unsigned>(State::Respond) |
                                  1U << static_cast<unsigned>(State::Connect) |
                                  1U << static_cast<unsigned>(State::Send) | 1U << static_cast<unsigned>(State::Failed);
bool acts_on_enter(State s) { return (kActsOnEnter >> static_cast<unsigned>(s) & 1U) != 0; }

}  // namespace

void set_tunnel_hook(TunnelHook hook) noexcept { g_tunnel_hook = hook; }
TunnelHook tunnel_hook() noexcept { return g_tunnel_hook; }

void step(Exchange* ex, Event ev, int arg) {
  if (ex->stepping) {
    ex->deferred = ev;
    return;
  }
  ex->stepping = true;
  State s = ex->st;
  for (;;) {
    State next = kHandlers[static_cast<std::size_t>(s)](ex, ev, arg);
    while (next != s) {
      s = ex->st = next;
      if (!acts_on_enter(s)) break;
      next = kHandlers[static_cast<std::size_t>(s)](ex, Event::Enter, 0);
    }
    if (ex->deferred == Event::Enter) break;
    ev = ex->deferred;
    arg = 0;
    ex->deferred = Event::Enter;
    if (s >= State::Done) {
      // The client broke the connection while the last send was made.
      if (s == State::Done && ev == Event::ClientGone) s = ex->st = client_gone(ex);
      break;
    }
  }
  ex->stepping = false;
  if (s == State::Done) finish_exchange(ex);
  else if (s == State::Cut) cut_exchange(ex);
  else if (s == State::Tunnel) tunnel_exchange(ex);
}

State on_other_event(Exchange* ex, Event ev, int arg, State self) {
  switch (ev) {
    case Event::ClientGone:
      return client_gone(ex);
    case Event::Refuse:
      if (response_began(self)) return client_gone(ex);
      return reply_and_close(ex, arg);
    default:
      return self;
  }
}

State state_head(Exchange* ex, Event ev, int arg) {
  if (ev == Event::HeadParsed) return State::Route;
  return on_other_event(ex, ev, arg, State::Head);
}

namespace {

// The protocols a request asks to switch to (Upgrade: a, b/2, ...), one
// token at a time, trimmed, with any protocol-version.
struct UpgradeTokens {
  std::string_view rest;
  bool next(std::string_view* token) {
    while (!rest.empty()) {
      const std::size_t comma = rest.find(',');
      std::string_view t = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
      while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
      if (t.empty()) continue;
      *token = t;
      return true;
    }
    return false;
  }
};

// A request to switch protocols that is refused whatever the route (400):
// h2c (HTTP/2 is not spoken to servers) and a switch with a body (the bytes
// after the head would be neither body nor tunnel for sure).
bool upgrade_refused(Exchange* ex) {
  UpgradeTokens tokens{ex->head.header("upgrade")};
  for (std::string_view t; tokens.next(&t);)
    if (iequals(t.substr(0, t.find('/')), "h2c")) return true;
  return ex->req.has_body();
}

// The first protocol the client asks for that the route allows
// (`upgrade=`, websocket by default): it goes to the server with its Upgrade
// line, so a 101 becomes a tunnel. None allowed (or no tunnel hook): the
// request goes on as plain HTTP without its Upgrade (a server may ignore
// Upgrade, RFC 9110 7.8), and the client gets the server's ordinary answer.
std::string_view upgrade_token(Exchange* ex) {
  if (tunnel_hook() == nullptr) return {};
  UpgradeTokens tokens{ex->head.header("upgrade")};
  for (std::string_view t; tokens.next(&t);)
    for (std::string_view allowed : ex->route->upgrades)
      if (iequals(t.substr(0, t.find('/')), allowed)) return t;
  return {};
}

}  // namespace

// The head is complete: refuse what breaks the limits, route, and start
// what the route says.
State state_route(Exchange* ex, Event, int) {
  Worker& w = *ex->worker;
  describe_request(ex->req, ex->route_headers.get(), ex->head);
  ex->head.secure = ex->down->secure();
  ex->is_head = ex->head.method == Method::Head;
  const Settings& st = settings(w);
  if (w.access_log.enabled()) copy_log_fields(ex);
  if (ex->req.upgrade_request() && upgrade_refused(ex)) return reply_and_close(ex, 400);
  if (ex->req.has_content_length() && ex->req.content_length() > st.body_bytes) return reply_and_close(ex, 413);
  if (!path_is_normal(ex->head.path)) {
    log(LogLevel::Debug, "refused a path with dot-segments from %.*s", static_cast<int>(ex->down->peer().size()),
        ex->down->peer().data());
    return reply_and_close(ex, 400);
  }
  if (ex->req.url().size() > st.uri_bytes) return reply_and_close(ex, 414);
  // PURGE of a URL is the cache's, whichever route the URL has.
  if (ex->head.method == Method::Other && ex->req.method() == HTTP_PURGE && w.shared.cache) return cache_purge(ex);
  // The exchange keeps the worker's table of this moment to its end (a
  // reload swaps the worker's pointer, never this one).
  WorkerTable& t = *(ex->tab = w.tab);
  ++t.pins;
  ex->route = t.table->distribute(ex->head);
  if (!ex->route) return reply_error(ex, 404);
  switch (ex->route->action) {
    case Action::Proxy:
      if (ex->route->cache_ttl_ms) {
        const State s = cache_request(ex);  // a hit (Respond), a wait for another miss, or Connect
        if (s != State::Connect) return s;
      }
      return proxy_begin(ex);
    case Action::Respond: {
      const Routing::RouteReply& reply = t.routing.route_replies[ex->route->index];
      return reply_local(ex, ex->route->status, reply.keep, reply.close);
    }
    case Action::Redirect:
    case Action::RedirectHttps:
      break;
    case Action::Admin:
      return admin_respond(ex);
  }
  return reply_redirect(ex);
}

// A local answer, prepared by a responder in `answer`: written, then Done.
State state_respond(Exchange* ex, Event ev, int arg) {
  switch (ev) {
    case Event::Enter: {
      if (ex->answer_file >= 0)
        return ex->down->send_file(ex->iov.get(), ex->answer_slices, ex->answer_file, 0) ? State::Done : State::Respond;
      if (ex->answer_slices) return ex->down->send(ex->iov.get(), ex->answer_slices) ? State::Done : State::Respond;
      uv_buf_t b = uv_buf_init(const_cast<char*>(ex->answer.data()), static_cast<unsigned>(ex->answer.size()));
      return ex->down->send(&b, 1) ? State::Done : State::Respond;
    }
    case Event::ClientWritten:
      return State::Done;
    default:
      return on_other_event(ex, ev, arg, State::Respond);
  }
}

State proxy_begin(Exchange* ex) {
  WorkerTable& t = *ex->tab;
  ex->retries_left = ex->route->retries;
  if (ex->req.upgrade_request()) ex->upgrade = upgrade_token(ex);
  std::int32_t& tokens = t.retry_tokens[static_cast<std::size_t>(ex->route->pool)];
  tokens = std::min(tokens + WorkerTable::kRetryEarn, WorkerTable::kRetryCap);
  t.balancer.begin(static_cast<std::uint16_t>(ex->route->pool), ex->head, ex->ticket);
  return State::Connect;
}

bool exchange_wants_body(const Exchange* ex) {
  const State s = ex->st;
  return s == State::Connect || s == State::Send || s == State::AwaitHead || s == State::Relay || s == State::Finish;
}

void session_free_exchanges(Worker& w) noexcept {
  for (auto& ex : w.exchanges) TimerWheel::disarm(&ex->timer);
  w.exchanges.clear();
  w.free_exchanges = nullptr;
  w.streams.release();
}

}  // namespace juggler
