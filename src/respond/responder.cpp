// Responders: answers the balancer gives itself (`respond`, redirects, error
// pages, 404), written through the same client writer as relayed responses.
#include "respond/responder.hpp"

#include <cstdio>
#include <cstring>
#include <initializer_list>

#include "exchange/exchange.hpp"

namespace juggler {

// Answers from the balancer itself (errors, `respond`, 404). A request whose
// body has not been read entirely cannot be followed by another on this
// connection, so the connection closes after the answer.
State reply_local(Exchange* ex, int status, std::string_view keep, std::string_view close) {
  detach_upstream(ex, false);
  TimerWheel::disarm(&ex->timer);
  ex->status = status;
  // The body may be in hand already: read past it and keep the connection.
  if (!ex->client_close && !ex->body->skip()) ex->client_close = true;
  ex->answer = ex->client_close ? close : keep;
  ex->bytes_out += ex->answer.size();
  return State::Respond;
}

State reply_error(Exchange* ex, int status) {
  const ErrorPages& pages = ex->worker->shared.error_pages;
  if (ex->is_head) return reply_local(ex, status, pages.head(status, false), pages.head(status, true));
  return reply_local(ex, status, pages.reply(status, false), pages.reply(status, true));
}

// An error found before an exchange exists or while the head is parsed:
// answer, then close without reading further (lingering, so the answer is not
// lost to a reset).
State reply_and_close(Exchange* ex, int status) {
  if (ex->term.who == Who::None) ex->term = {Who::Client, When::Request, status == 408, 0};  // a bad or slow request
  ex->client_close = true;
  ex->body->abandon();
  return reply_error(ex, status);
}

namespace {

// Writes the two variants (keep-alive, then Connection: close) of a redirect
// to `location` (its parts, concatenated) into the exchange's scratch, then
// answers with them; 414 when they do not fit.
State send_redirect(Exchange* ex, std::initializer_list<std::string_view> location) {
  const std::uint16_t code = ex->route->status;
  char status_text[8];
  const int sn = std::snprintf(status_text, sizeof status_text, "%u ", static_cast<unsigned>(code));
  char* out = ex->scratch.get();
  char* const end = out + ex->scratch_cap;
  bool fits = true;
  auto put = [&](std::string_view v) {
    if (static_cast<std::size_t>(end - out) < v.size()) {
      fits = false;
      return;
    }
    if (!v.empty()) std::memcpy(out, v.data(), v.size());
    out += v.size();
  };
  char* const keep_begin = out;
  char* keep_end = out;
  for (int variant = 0; variant < 2; ++variant) {
    if (variant == 1) keep_end = out;
    put("HTTP/1.1 ");
    put({status_text, static_cast<std::size_t>(sn)});
    put(status_reason(code));
    put("\r\nLocation: ");
    for (std::string_view part : location) put(part);
    put(variant == 0 ? "\r\nContent-Length: 0\r\n\r\n" : "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  }
  if (!fits) return reply_error(ex, 414);
  return reply_local(ex, code, {keep_begin, static_cast<std::size_t>(keep_end - keep_begin)},
              {keep_end, static_cast<std::size_t>(out - keep_end)});
}

}  // namespace

// `-> redirect POOL CODE`: Location is the picked server with the request's
// target; `-> redirect https CODE`: the same host over https (with the https
// listener's port unless it is 443). Both variants (keep-alive, close) are
// written into the exchange's scratch; nothing is allocated.
State reply_redirect(Exchange* ex) {
  Worker& w = *ex->worker;
  const RouteDef& r = *ex->route;
  std::string_view target = ex->head.target;
  if (target.empty() || target[0] != '/') target = ex->head.path;  // absolute-form: keep the path
  if (r.action == Action::RedirectHttps) {
    if (ex->head.host.empty()) return reply_error(ex, 400);
    char port_text[8];
    std::string_view port;
    if (w.shared.https_port != 443) {
      const int n = std::snprintf(port_text, sizeof port_text, ":%u", static_cast<unsigned>(w.shared.https_port));
      port = {port_text, static_cast<std::size_t>(n)};
    }
    return send_redirect(ex, {"https://", ex->head.host, port, target});
  }
  const PickContext ctx{ex->down->peer(), {}, w.now_ms()};
  const int s = ex->tab->balancer.pick(static_cast<std::uint16_t>(r.pool), ex->head, ex->tried, ctx);
  if (s < 0) return reply_error(ex, 503);
  ex->server = s;
  return send_redirect(ex, {"http://", ex->tab->routing.table->servers[static_cast<std::size_t>(s)].authority, target});
}

}  // namespace juggler
