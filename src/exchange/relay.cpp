// The relay: the request head (edited as iov slices) and body bytes go to the
// server as they arrive, the response head (edited when needed) and body go
// to the client, each from the buffer it was read into: nothing is copied.
// One write at a time per side; the other side's reading pauses meanwhile.
// The states Send, AwaitHead, Relay and Finish live here.
#include "exchange/relay.hpp"

#include <strings.h>

#include <cstring>

#include "cache/cache.hpp"
#include "exchange/exchange.hpp"
#include "filter/filtered.hpp"
#include "upstream/connector.hpp"
#include "juggler/upstream.hpp"

namespace juggler {

namespace {

constexpr std::string_view kConnClose = "Connection: close\r\n";
constexpr std::string_view kConnKeep = "Connection: keep-alive\r\n";

constexpr std::uint64_t kLargeBody = 128 * 1024;  // bodies from this size stream through bulk buffers

unsigned build_request_head(Exchange* ex) {
  if (ex->route->compress) filters_note_request(ex);
  std::size_t len = 0;
  const unsigned n = edit_request_head(ex->req, ex->down->peer(), ex->down->secure() ? "https" : "http",
                                       ex->scratch.get(), ex->scratch_cap, &len, ex->iov.get(), ex->upgrade);
  return ex->cache_reval ? cache_conditionals(ex, ex->iov.get(), n) : n;
}

void restart_response_parser(Exchange* ex) {
  ex->resp.init(HTTP_RESPONSE, ex->resp_headers.get(), settings(*ex->worker).header_count);
  ex->resp.max_head_bytes = ex->worker->buffers.size();
  if (ex->is_head) ex->resp.expect_no_body();
}

// Sends what is pending of the request: the head first (`with_head`), then
// body bytes as they arrive. One write at a time; reading the client pauses
// meanwhile (RequestBody::consume). True when the whole request went out.
bool flush_upstream(Exchange* ex, bool with_head) {
  Upstream* c = ex->up;
  if (!c || c->write_pending) return false;
  unsigned n = with_head ? build_request_head(ex) : 0;
  const std::string_view body = ex->body->available();
  if (!body.empty()) ex->iov[n++] = uv_buf_init(const_cast<char*>(body.data()), static_cast<unsigned>(body.size()));
  const bool complete = ex->body->complete();
  if (n == 0) return complete;
  // The head of a request without more body holds nothing of the source.
  const bool holds = !body.empty() || !complete;
  if (holds) ex->body->consume(body.size());
  if (!c->write(ex->iov.get(), n)) return false;
  ex->progress_ms = ex->worker->now_ms();
  if (holds) ex->body->written();
  return complete;
}

// Send, entered: the connection is ready; the response parser and the timer
// start, the request goes out. True when all of it went.
bool send_request(Exchange* ex) {
  Upstream* c = ex->up;
  Worker& w = *ex->worker;
  ex->tab->balancer.sent(ex->ticket, ex->server);
  restart_response_parser(ex);
  ex->first_byte_us = 0;  // TTFB is the answering attempt's
  if (ex->attempts > 1) ex->body->rewind();  // a retry sends it all again
  if (!c->reading) c->set_reading(true);
  ex->progress_ms = w.now_ms();
  w.wheel.arm(&ex->timer, ex->progress_ms + settings(w).upstream_timeout_ms);
  return flush_upstream(ex, true);
}

// More request body arrived: sent on when the server takes it.
bool body_arrived(Exchange* ex) {
  ex->progress_ms = ex->worker->now_ms();
  return flush_upstream(ex, false);
}

// A write to the server completed: the bytes it carried are released and
// what arrived meanwhile goes. True when the whole request went out.
bool upstream_written(Exchange* ex, int status) {
  if (status < 0) {
    // The server went away while taking the request; the read side will see
    // the reset or EOF and decide between retry and 502.
    log(LogLevel::Debug, "write to %.*s failed: %s",
        JUGGLER_SERVER_ARGS(ex->tab->routing.table->servers[ex->up->server]), uv_strerror(status));
    return false;
  }
  ex->progress_ms = ex->worker->now_ms();
  ex->body->written();
  return flush_upstream(ex, false);
}

// Response head for the client, into `iov`: nothing when the raw bytes can go
// as they are (*raw), else the kept lines plus our Connection header.
unsigned build_response_head(Exchange* ex, uv_buf_t* iov, bool* raw) {
  if (ex->filter_want) filters_begin(ex);  // may make it close-delimited
  const bool http10_keep = !ex->client_close && ex->req.http_minor() == 0;
  std::string_view conn = ex->client_close ? kConnClose : http10_keep ? kConnKeep : std::string_view();
  std::string_view extra = conn;
  if (ex->ticket.minted || ex->cache) {
    std::size_t n = 0;
    if (ex->ticket.minted) n = ex->tab->balancer.response_lines(ex->ticket, ex->resp_extra, sizeof ex->resp_extra);
    for (std::string_view line : {ex->cache ? cache_status_line(ex) : std::string_view(), conn}) {
      const std::size_t k = std::min(line.size(), sizeof ex->resp_extra - n);
      if (k) std::memcpy(ex->resp_extra + n, line.data(), k);
      n += k;
    }
    extra = {ex->resp_extra, n};
  }
  if (ex->filters) extra = filters_head_lines(ex, extra);
  unsigned n = edit_response_head(ex->resp, extra, iov, settings(*ex->worker).instance_header);
  *raw = n == 0;
  return n;
}

// A 101 answer whose Upgrade the client asked for, with a tunnel to take it.
bool upgrade_asked(const Exchange* ex) {
  const std::string_view asked = ex->upgrade;  // set only while a tunnel hook is there
  if (asked.empty()) return false;
  for (std::uint32_t i = 0; i < ex->resp.header_count(); ++i) {
    const HeaderSpan& h = ex->resp.headers()[i];
    std::string_view name = ex->resp.header_name(h);
    if (name.size() != 7 || strncasecmp(name.data(), "upgrade", 7) != 0) continue;
    const std::string_view offered = ex->resp.header_value(h);
    if (offered.empty() || offered.size() > asked.size()) return false;
    for (std::size_t at = 0; at + offered.size() <= asked.size(); ++at)
      if (strncasecmp(asked.data() + at, offered.data(), offered.size()) == 0) return true;
    return false;
  }
  return false;
}

enum class HeadStep : std::uint8_t { NeedMore, Interim, Final, Failed, Tunnel, Cached };

HeadStep broken_head(Exchange* ex) {
  ex->term = {Who::Server, When::Head, false, UV_EPROTO};
  return HeadStep::Failed;
}

// Parses a response head in the server buffer. An interim response (100
// Continue) is queued into the exchange's iov as it is, and the caller parses
// on; the final one's head is queued (edited when needed) and *fwd says
// where the raw bytes to relay start.
HeadStep response_head(Exchange* ex, unsigned* n, const char** fwd) {
  Upstream* c = ex->up;
  Worker& w = *ex->worker;
  char* base = c->in->data;
  std::size_t used = 0;
  const ParseEvent ev = ex->resp.feed(base + c->parse_pos, c->in_len - c->parse_pos, &used);
  if (ev == ParseEvent::NeedMore) {
    c->parse_pos = c->in_len;
    if (c->in_len < c->in->cap) return HeadStep::NeedMore;
    log(LogLevel::Warn, "response head from %.*s too large", JUGGLER_SERVER_ARGS(ex->tab->routing.table->servers[c->server]));
    return broken_head(ex);
  }
  if (ev == ParseEvent::Error) {
    log(LogLevel::Warn, "bad response from %.*s: %s", JUGGLER_SERVER_ARGS(ex->tab->routing.table->servers[c->server]),
        ex->resp.error_reason());
    return broken_head(ex);
  }
  c->parse_pos += static_cast<std::uint32_t>(used);
  uv_buf_t* iov = ex->iov.get();
  const int status = ex->resp.status();
  if (status == 101 && upgrade_asked(ex)) {
    ex->status = status;
    ex->term = {};
    return HeadStep::Tunnel;
  }
  if (status / 100 == 1) {
    // Upgrade went without the client's ask: a switch is a broken server;
    // so are endless 1xx.
    if (status == 101 || ++ex->interims > kMaxInterim) return broken_head(ex);
    std::size_t none = 0;
    ex->resp.feed(base + c->parse_pos, 0, &none);  // passes the bodiless message's end
    iov[(*n)++] = uv_buf_init(const_cast<char*>(ex->resp.head_begin()), static_cast<unsigned>(ex->resp.head_len()));
    restart_response_parser(ex);
    return HeadStep::Interim;
  }
  ex->status = status;
  ex->term = {};  // a response began: failed attempts before it are history
  passive_success(ex->tab->routing.health[static_cast<std::size_t>(ex->server)]);
  ex->tab->balancer.response(ex->ticket, w.now_ms());
  if (ex->cache_entry && cache_takes_over(ex, status)) return HeadStep::Cached;
  if (ex->resp.body_until_close()) ex->client_close = true;
  bool raw = false;
  *n += build_response_head(ex, iov + *n, &raw);
  *fwd = raw ? ex->resp.head_begin() : base + c->parse_pos;
  return HeadStep::Final;
}

// Parses the body bytes in the server buffer (they are relayed as they are,
// from *fwd on): Relay while more follows, Finish once complete, Failed when
// the body is broken.
State response_body(Exchange* ex, const char** fwd) {
  const char* start = ex->up->in->data + ex->up->parse_pos;
  const ParseEvent ev = feed_response_body(ex);
  if (ev == ParseEvent::Error) return State::Failed;
  if (!*fwd) *fwd = start;
  return ev == ParseEvent::MessageComplete ? State::Finish : State::Relay;
}

// A client write of the response completed (or went out at once): Done after
// the last one; else the server buffer starts over when all of it went (a
// bigger one for a large body) and the server is read again.
State after_client_write(Exchange* ex, State s) {
  if (ex->filters) return filtered_written(ex, s);
  ex->progress_ms = ex->worker->now_ms();
  if (s == State::Finish) return State::Done;
  if (s == State::Relay) read_upstream_on(ex);
  else if (ex->up && !ex->up->reading) ex->up->set_reading(true);
  return s;
}

// Relays what the server sent: interim responses, the head (edited when
// needed) and the body bytes, in one client write per read. `s` is the
// state the bytes arrived in; returns the next one.
State process_upstream(Exchange* ex, State s) {
  Upstream* c = ex->up;
  uv_buf_t* iov = ex->iov.get();
  unsigned n = 0;
  const char* fwd = nullptr;  // raw bytes to relay start here
  if (s != State::Relay) {
    HeadStep step = HeadStep::Interim;
    while ((step = response_head(ex, &n, &fwd)) == HeadStep::Interim) {
    }
    if (step == HeadStep::Failed) return State::Failed;
    if (step == HeadStep::Tunnel) return State::Tunnel;
    if (step == HeadStep::Cached) return cache_from_response(ex);
    if (step == HeadStep::Final) s = State::Relay;
  }
  if (s == State::Relay && ex->filters) return filtered_relay(ex, n);
  const char* const body = c->in->data + c->parse_pos;  // this read's body bytes start here
  if (s == State::Relay && (s = response_body(ex, &fwd)) == State::Failed) return s;
  if (ex->cache_tap && (s == State::Relay || s == State::Finish))
    cache_tap(ex, {body, static_cast<std::size_t>(c->in->data + c->parse_pos - body)}, s == State::Finish);
  if (fwd) {
    const char* end = c->in->data + c->parse_pos;
    if (end > fwd) iov[n++] = uv_buf_init(const_cast<char*>(fwd), static_cast<unsigned>(end - fwd));
  }
  for (unsigned i = 0; i < n; ++i) ex->bytes_out += iov[i].len;
  if (n == 0) return s == State::Finish ? State::Done : s;
  if (ex->down->send(iov, n)) return after_client_write(ex, s);
  if (c->reading) c->set_reading(false);  // backpressure: the server waits while the client is behind
  return s;
}

// The server closed: the end of a body delimited by the close, else a
// failure (a response began: the client connection is cut).
State server_closed(Exchange* ex, int err) {
  if (err == UV_EOF && ex->resp.body_until_close()) {
    ex->resp.finish();
    ex->upstream_reusable = false;
    ex->client_close = true;
    detach_upstream(ex, false);
    return ex->down->sending() ? State::Finish : State::Done;
  }
  ex->term = {Who::Server, When::Body, false, err};
  return State::Failed;
}

// Send and AwaitHead: the response head is awaited.
State awaiting_head(Exchange* ex, Event ev, int arg, State self) {
  switch (ev) {
    case Event::ServerData:
      if (!ex->first_byte_us) ex->first_byte_us = now_us();
      return process_upstream(ex, self);
    case Event::ServerEof:
      ex->term = {Who::Server, When::Head, false, arg};
      return State::Failed;
    case Event::ClientWritten:  // an interim response went out
      return after_client_write(ex, self);
    case Event::Timer:
      return exchange_timer(ex, self);
    default:
      return on_other_event(ex, ev, arg, self);
  }
}

}  // namespace

ParseEvent feed_response_body(Exchange* ex) {
  Upstream* c = ex->up;
  std::size_t used = 0;
  const ParseEvent ev = ex->resp.feed(c->in->data + c->parse_pos, c->in_len - c->parse_pos, &used);
  if (ev == ParseEvent::Error) {
    log(LogLevel::Warn, "bad response body from %.*s: %s",
        JUGGLER_SERVER_ARGS(ex->tab->routing.table->servers[c->server]), ex->resp.error_reason());
    ex->term = {Who::Server, When::Body, false, UV_EPROTO};
    return ev;
  }
  c->parse_pos += static_cast<std::uint32_t>(used);
  if (ev == ParseEvent::MessageComplete)
    ex->upstream_reusable = ex->resp.keep_alive() && c->parse_pos == c->in_len && ex->body->complete();
  return ev;
}

void read_upstream_on(Exchange* ex) {
  Upstream* c = ex->up;
  if (!c) return;
  if (c->parse_pos == c->in_len) {
    c->in_len = c->parse_pos = 0;
    const MessageParser& r = ex->resp;
    if (r.body_until_close() || r.chunked() || r.content_length() >= kLargeBody) c->in = ex->worker->upgrade(c->in);
  }
  if (!c->reading) c->set_reading(true);
}

State state_send(Exchange* ex, Event ev, int arg) {
  switch (ev) {
    case Event::Enter:
      return send_request(ex) ? State::AwaitHead : State::Send;
    case Event::Body:
      return body_arrived(ex) ? State::AwaitHead : State::Send;
    case Event::UpstreamWritten:
      return upstream_written(ex, arg) ? State::AwaitHead : State::Send;
    default:
      return awaiting_head(ex, ev, arg, State::Send);
  }
}

State state_await_head(Exchange* ex, Event ev, int arg) { return awaiting_head(ex, ev, arg, State::AwaitHead); }

// Relay and Finish: the response flows to the client; the request may still
// be streaming to the server (it answered early).
State state_relay(Exchange* ex, Event ev, int arg) {
  switch (ev) {
    case Event::ServerData:
      return process_upstream(ex, State::Relay);
    case Event::ServerEof:
      return server_closed(ex, arg);
    case Event::ClientWritten:
      return after_client_write(ex, State::Relay);
    case Event::Body:
      body_arrived(ex);
      return State::Relay;
    case Event::UpstreamWritten:
      upstream_written(ex, arg);
      return State::Relay;
    case Event::Timer:
      return exchange_timer(ex, State::Relay);
    default:
      return on_other_event(ex, ev, arg, State::Relay);
  }
}

State state_finish(Exchange* ex, Event ev, int arg) {
  switch (ev) {
    case Event::ClientWritten:
      return State::Done;
    case Event::ServerData:
    case Event::ServerEof:  // after a complete response: the connection is not kept
      ex->upstream_reusable = false;
      return State::Finish;
    case Event::Body:
      body_arrived(ex);
      return State::Finish;
    case Event::UpstreamWritten:
      upstream_written(ex, arg);
      return State::Finish;
    case Event::Timer:
      return exchange_timer(ex, State::Finish);
    default:
      return on_other_event(ex, ev, arg, State::Finish);
  }
}

}  // namespace juggler
