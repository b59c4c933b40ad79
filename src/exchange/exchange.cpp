// Exchanges: one request and its response. Pooled per worker; attached to a
// client connection while a request is in flight. Routing (the compiled
// table, through the worker's pointer) and the action a route names start
// here; the relay, the connector and the responders carry it on.
#include "exchange/exchange.hpp"

#include <cstring>

#include "admin/admin.hpp"
#include "exchange/relay.hpp"
#include "http1/connection.hpp"
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
    ex->iov_cap = 2 * hc + 8;
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

void exchange_begin(Exchange* ex, ClientSession* s) {
  Worker& w = *s->worker;
  ex->state() = ExchangeState{};
  ex->client = s;
  ex->req.init(HTTP_REQUEST, ex->req_headers.get(), settings(w).header_count);
  ex->req.max_head_bytes = settings(w).header_bytes;
}

void exchange_put(Worker& w, Exchange* ex) {
  TimerWheel::disarm(&ex->timer);
  ex->client = nullptr;
  ex->up = nullptr;
  ex->next_free = w.free_exchanges;
  w.free_exchanges = ex;
  --w.active_exchanges;
}

void detach_upstream(Exchange* ex, bool reuse) {
  ex->worker->balancer.finish(ex->ticket);
  UpstreamConn* c = ex->up;
  if (!c) return;
  ex->up = nullptr;
  c->ex = nullptr;
  if (reuse) upstream_release(c);
  else upstream_close(c);
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
  w.metrics.exchange_done(ex->route ? ex->route->index : -1, ex->route ? ex->route->pool : -1, ex->server,
                          ex->status, ex->bytes_out, duration_us);
  if (!w.access_log.enabled()) return;
  if (ex->log_line_len == 0 && ex->req.head_begin() && ex->replayable && ex->head_end) copy_log_fields(ex);
  AccessRecord r;
  r.client_ip = {ex->client->ip, ex->client->ip_len};
  r.request_line = {ex->log_text, ex->log_line_len};
  r.referer = {ex->log_text + ex->log_line_len, ex->log_referer_len};
  r.user_agent = {ex->log_text + ex->log_line_len + ex->log_referer_len, ex->log_agent_len};
  r.status = ex->status;
  r.bytes = ex->bytes_out;
  r.upstream = ex->server >= 0 ? w.shared.config.table->servers[static_cast<std::size_t>(ex->server)].authority
                               : std::string_view("-");
  r.duration_us = duration_us;
  static constexpr char kWho[] = {'-', 'C', 'S', 'P'};
  static constexpr char kWhen[] = {'-', 'R', 'C', 'H', 'D'};
  const char who = kWho[static_cast<int>(ex->term.who)];
  r.term[0] = ex->term.timeout && who != '-' ? static_cast<char>(who - 'A' + 'a') : who;
  r.term[1] = kWhen[static_cast<int>(ex->term.when)];
  w.access_log.record(r);
}

void on_request_head(Exchange* ex) {
  ClientSession* s = ex->client;
  Worker& w = *s->worker;
  TimerWheel::disarm(&s->timer);
  describe_request(ex->req, ex->route_headers.get(), ex->head);
  ex->head.secure = s->stream.secure();
  ex->is_head = ex->head.method == Method::Head;
  ++s->requests;
  const Settings& st = settings(w);
  ex->client_close = !ex->req.keep_alive() || w.draining ||
                     (st.requests_per_connection && s->requests >= st.requests_per_connection);
  if (w.access_log.enabled()) copy_log_fields(ex);
  if (ex->req.has_content_length() && ex->req.content_length() > st.body_bytes) {
    reply_and_close(ex, 413);
    return;
  }
  if (!path_is_normal(ex->head.path)) {
    log(LogLevel::Debug, "refused a path with dot-segments from %.*s", s->ip_len, s->ip);
    reply_and_close(ex, 400);
    return;
  }
  if (ex->req.url().size() > st.uri_bytes) {
    reply_and_close(ex, 414);
    return;
  }
  ex->route = w.table->distribute(ex->head);
  if (!ex->route) {
    reply_error(ex, 404);
    return;
  }
  switch (ex->route->action) {
    case Action::Proxy: {
      ex->phase = Phase::Upstream;
      ex->retries_left = ex->route->retries;
      std::int32_t& tokens = w.retry_tokens[static_cast<std::size_t>(ex->route->pool)];
      tokens = std::min(tokens + Worker::kRetryEarn, Worker::kRetryCap);
      w.balancer.begin(static_cast<std::uint16_t>(ex->route->pool), ex->head, ex->ticket);
      connect_upstream(ex);
      return;
    }
    case Action::Respond: {
      const Shared::RouteReply& reply = w.shared.route_replies[ex->route->index];
      reply_local(ex, ex->route->status, reply.keep, reply.close);
      return;
    }
    case Action::Redirect:
    case Action::RedirectHttps:
      reply_redirect(ex);
      return;
    case Action::Admin:
      admin_respond(ex);
      return;
  }
}

void finish_exchange(Exchange* ex) {
  ClientSession* s = ex->client;
  Worker& w = *s->worker;
  log_exchange(ex);
  UpstreamConn* c = ex->up;
  detach_upstream(ex, c && ex->upstream_reusable && ex->req_complete && ex->resp_complete);
  const bool close = ex->client_close || !ex->req_complete || s->eof || w.draining;
  // Linger only when the client may still be sending (an unread body, or
  // pipelined requests we will not answer): closing with unread input would
  // reset the connection and could destroy the answer in flight.
  const bool linger = !ex->req_complete || s->parse_pos < s->in_len;
  s->ex = nullptr;
  exchange_put(w, ex);
  client_next(s, close, linger);
}

void session_free_exchanges(Worker& w) noexcept {
  for (auto& ex : w.exchanges) TimerWheel::disarm(&ex->timer);
  w.exchanges.clear();
  w.free_exchanges = nullptr;
  w.streams.release();
}

}  // namespace juggler
