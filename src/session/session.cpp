// The request path: a client connection's bytes are parsed, routed by the
// compiled table, and relayed to a server and back.
//
// Ownership: a ClientSession and an UpstreamConn are freed in their handles'
// close callbacks. An Exchange belongs to the worker's pool and is attached to
// one session while a request is in flight. Sessions and exchanges are torn
// down only from libuv callbacks at the top of the stack (never from inside a
// write helper), so no function touches an object after it was released.
//
// Bytes are never copied between the two sides: what is read into one side's
// buffer is written to the other from that buffer (uv_try_write first, uv_write
// for the rest), and that side's reading stops until the write completes.
#include "juggler/session.hpp"

#include <netinet/in.h>

#include <cstdio>
#include <cstring>
#include <new>

#include "juggler/upstream.hpp"

namespace juggler {

namespace {

constexpr std::string_view kConnClose = "Connection: close\r\n";
constexpr std::string_view kConnKeep = "Connection: keep-alive\r\n";
constexpr std::uint64_t kLingerMs = 2000;
constexpr std::uint8_t kMaxInterim = 8;       // 1xx responses before the final one
constexpr std::uint64_t kLargeBody = 128 * 1024;  // bodies from this size stream through bulk buffers

inline uv_stream_t* stream(uv_tcp_t* t) { return reinterpret_cast<uv_stream_t*>(t); }
inline uv_handle_t* handle(void* h) { return static_cast<uv_handle_t*>(h); }
inline std::uint64_t now_us() { return uv_hrtime() / 1000; }
inline const Settings& settings(Worker& w) { return w.shared.config.settings; }

// printf arguments for a server's authority with "%.*s": no string is built
// for a log line (which the level may drop anyway).
#define JUGGLER_SERVER_ARGS(server) static_cast<int>((server).authority.size()), (server).authority.data()

void process_client(ClientSession* s);
void process_upstream(Exchange* ex);
void connect_upstream(Exchange* ex);
void client_abort(ClientSession* s);
void client_finish(ClientSession* s, bool linger);
void finish_exchange(Exchange* ex);
void update_client_reading(ClientSession* s);
void on_client_timer(TimerNode* t);
void on_exchange_timer(TimerNode* t);

// ---------------------------------------------------------------- exchanges

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
  return ex;
}

void exchange_begin(Exchange* ex, ClientSession* s) {
  Worker& w = *s->worker;
  ex->client = s;
  ex->up = nullptr;
  ex->req.init(HTTP_REQUEST, ex->req_headers.get(), settings(w).header_count);
  ex->req.max_head_bytes = settings(w).header_bytes;
  ex->head = RequestHead{};
  ex->route = nullptr;
  ex->tried = Tried{};
  ex->server = -1;
  ex->phase = Phase::Head;
  ex->attempts = 0;
  ex->retries_left = 0;
  ex->head_end = ex->body_end = ex->sent_to = 0;
  ex->head_sent = ex->req_complete = false;
  ex->replayable = true;
  ex->client_close = false;
  ex->is_head = false;
  ex->resp_started = ex->resp_complete = ex->upstream_reusable = false;
  ex->status = 0;
  ex->bytes_out = 0;
  ex->start_us = 0;
  ex->scratch_len = 0;
  ex->resp_extra_len = 0;
  ex->ticket = BalanceTicket{};
  ex->term = Termination{};
  ex->interims = 0;
  ex->log_line_len = ex->log_referer_len = ex->log_agent_len = 0;
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

// ---------------------------------------------------------------- writes

// Writes to the client through its stream; true when it all went out now,
// else on_stream_written follows.
bool write_client(ClientSession* s, uv_buf_t* iov, unsigned n) { return s->stream.write(iov, n); }

// ---------------------------------------------------------------- access log

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
  r.duration_us = ex->start_us ? now_us() - ex->start_us : 0;
  static constexpr char kWho[] = {'-', 'C', 'S', 'P'};
  static constexpr char kWhen[] = {'-', 'R', 'C', 'H', 'D'};
  const char who = kWho[static_cast<int>(ex->term.who)];
  r.term[0] = ex->term.timeout && who != '-' ? static_cast<char>(who - 'A' + 'a') : who;
  r.term[1] = kWhen[static_cast<int>(ex->term.when)];
  w.access_log.record(r);
}

// ---------------------------------------------------------------- local answers

// Answers from the balancer itself (errors, `respond`, 404). A request whose
// body has not been read entirely cannot be followed by another on this
// connection, so the connection closes after the answer.
void reply_local(Exchange* ex, int status, std::string_view keep, std::string_view close) {
  ClientSession* s = ex->client;
  detach_upstream(ex, false);
  TimerWheel::disarm(&ex->timer);
  ex->phase = Phase::Local;
  ex->status = status;
  if (!ex->req_complete && !ex->client_close && ex->client->in) {
    // The body may be in the buffer already: skip it and keep the connection.
    std::size_t used = 0;
    ClientSession* cs = ex->client;
    if (ex->req.feed(cs->in->data + cs->parse_pos, cs->in_len - cs->parse_pos, &used) == ParseEvent::MessageComplete) {
      cs->parse_pos += static_cast<std::uint32_t>(used);
      ex->req_complete = true;
    }
  }
  if (!ex->req_complete) ex->client_close = true;
  std::string_view bytes = ex->client_close ? close : keep;
  ex->bytes_out += bytes.size();
  uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
  if (write_client(s, &b, 1)) finish_exchange(ex);
}

void reply_error(Exchange* ex, int status) {
  const ErrorPages& pages = ex->worker->shared.error_pages;
  if (ex->is_head) reply_local(ex, status, pages.head(status, false), pages.head(status, true));
  else reply_local(ex, status, pages.reply(status, false), pages.reply(status, true));
}

// An error found before an exchange exists or while the head is parsed:
// answer, then close without reading further (lingering, so the answer is not
// lost to a reset).
void reply_and_close(Exchange* ex, int status) {
  if (ex->term.who == Who::None) ex->term = {Who::Client, When::Request, status == 408, 0};  // a bad or slow request
  ex->client_close = true;
  ex->req_complete = false;
  reply_error(ex, status);
}

// ---------------------------------------------------------------- request side

unsigned build_request_head(Exchange* ex) {
  std::size_t len = 0;
  unsigned n = edit_request_head(ex->req, {ex->client->ip, ex->client->ip_len}, ex->client->stream.secure() ? "https" : "http",
                                 ex->scratch.get(),
                                 ex->scratch_cap, &len, ex->iov.get());
  ex->scratch_len = static_cast<std::uint32_t>(len);
  return n;
}

// While a large body streams, the client buffer is reused from its start once
// everything in it went upstream; the request can then no longer be replayed.
void recycle_client_buffer(Exchange* ex) {
  ClientSession* s = ex->client;
  if (ex->req_complete || !s->in || s->in_len < s->in->cap || ex->sent_to < s->in_len) return;
  if (ex->up && ex->up->write_pending) return;  // the write still reads these bytes
  if (ex->worker->access_log.enabled() && ex->log_line_len == 0 && ex->replayable) copy_log_fields(ex);
  s->in_len = s->parse_pos = 0;
  ex->head_end = ex->body_end = ex->sent_to = 0;
  ex->replayable = false;
  s->in = ex->worker->upgrade(s->in);  // a large upload: bigger reads from here on
}

void on_upstream_write(uv_write_t* req, int status);

// Sends what is pending of the request: the head once, then body bytes as
// they arrive. One write at a time; reading the client pauses meanwhile.
void flush_upstream(Exchange* ex) {
  UpstreamConn* c = ex->up;
  if (!c || !c->connected || c->write_pending) return;
  ClientSession* s = ex->client;
  unsigned n = 0;
  if (!ex->head_sent) {
    n = build_request_head(ex);
    ex->head_sent = true;
    ex->sent_to = ex->head_end;
  }
  if (ex->body_end > ex->sent_to) {
    ex->iov[n++] = uv_buf_init(s->in->data + ex->sent_to, ex->body_end - ex->sent_to);
    ex->sent_to = ex->body_end;
  }
  if (n == 0) return;
  c->write_pending = true;
  if (!write_or_queue(c->worker->streams, stream(&c->tcp), c, ex->iov.get(), n, on_upstream_write)) return;
  c->write_pending = false;
  ex->progress_ms = c->worker->now_ms();
  recycle_client_buffer(ex);
  update_client_reading(s);
}

void on_upstream_write(uv_write_t* req, int status) {
  auto* c = static_cast<UpstreamConn*>(req->data);
  c->worker->streams.put_write(req);
  c->write_pending = false;
  Exchange* ex = c->ex;
  if (c->closing || !ex) return;
  if (status < 0) {
    // The server went away while taking the request; the read side will see
    // the reset or EOF and decide between retry and 502.
    log(LogLevel::Debug, "write to %.*s failed: %s", JUGGLER_SERVER_ARGS(ex->worker->shared.config.table->servers[c->server]), uv_strerror(status));
    return;
  }
  ex->progress_ms = c->worker->now_ms();
  recycle_client_buffer(ex);
  flush_upstream(ex);
  update_client_reading(ex->client);
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

void send_request(Exchange* ex) {
  UpstreamConn* c = ex->up;
  Worker& w = *ex->worker;
  w.balancer.sent(ex->ticket, ex->server, now_us());
  ex->resp.init(HTTP_RESPONSE, ex->resp_headers.get(), settings(w).header_count);
  ex->resp.max_head_bytes = w.buffers.size();
  if (ex->is_head) ex->resp.expect_no_body();
  ex->head_sent = false;
  ex->sent_to = ex->head_end;
  if (!c->reading) {
    if (uv_read_start(stream(&c->tcp), upstream_on_alloc, upstream_on_read) == 0) c->reading = true;
  }
  ex->progress_ms = w.now_ms();
  w.wheel.arm(&ex->timer, ex->progress_ms + settings(w).upstream_timeout_ms);
  flush_upstream(ex);
}

// A server's failure counts against it (passive health), but for a
// kept-alive connection it had closed under us: a race, not its fault.
void count_server_failure(Exchange* ex, bool reused, const Termination& t) {
  Worker& w = *ex->worker;
  const PoolDef& pool = w.shared.config.table->pools[static_cast<std::size_t>(ex->route->pool)];
  ServerHealth& h = w.shared.health[static_cast<std::size_t>(ex->server)];
  if (reused || !passive_failure(h, pool, w.now_ms())) return;
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

// `-> redirect POOL CODE`: Location is the picked server with the request's
// target; `-> redirect https CODE`: the same host over https (with the https
// listener's port unless it is 443). Both variants (keep-alive, close) are
// written into the exchange's scratch; nothing is allocated.
void reply_redirect(Exchange* ex) {
  Worker& w = *ex->worker;
  const RouteDef& r = *ex->route;
  std::string_view target = ex->head.target;
  if (target.empty() || target[0] != '/') target = ex->head.path;  // absolute-form: keep the path
  char port_text[8];
  std::string_view scheme, authority, port;
  if (r.action == Action::RedirectHttps) {
    if (ex->head.host.empty()) {
      reply_error(ex, 400);
      return;
    }
    scheme = "https://";
    authority = ex->head.host;
    if (w.shared.https_port != 443) {
      const int n = std::snprintf(port_text, sizeof port_text, ":%u", static_cast<unsigned>(w.shared.https_port));
      port = {port_text, static_cast<std::size_t>(n)};
    }
  } else {
    const PickContext ctx{{ex->client->ip, ex->client->ip_len}, {}, w.now_ms()};
    const int s = w.balancer.pick(static_cast<std::uint16_t>(r.pool), ex->head, ex->tried, ctx);
    if (s < 0) {
      reply_error(ex, 503);
      return;
    }
    ex->server = s;
    scheme = "http://";
    authority = w.shared.config.table->servers[static_cast<std::size_t>(s)].authority;
  }
  const std::string_view reason = status_reason(r.status);
  char status_text[8];
  const int sn = std::snprintf(status_text, sizeof status_text, "%u ", static_cast<unsigned>(r.status));
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
    put(reason);
    put("\r\nLocation: ");
    put(scheme);
    put(authority);
    put(port);
    put(target);
    put(variant == 0 ? "\r\nContent-Length: 0\r\n\r\n" : "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  }
  if (!fits) {
    reply_error(ex, 414);
    return;
  }
  reply_local(ex, r.status, {keep_begin, static_cast<std::size_t>(keep_end - keep_begin)},
              {keep_end, static_cast<std::size_t>(out - keep_end)});
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
  }
}

// Parses and acts on what the client sent. Called after each read and when an
// exchange finishes with pipelined bytes waiting.
void process_client(ClientSession* s) {
  // Once an answer said the connection closes, nothing more is parsed: what
  // follows may be the body of a refused request, not a request.
  while (!s->stream.closing() && !s->lingering && !s->close_after_write && s->in) {
    if (!s->ex) {
      if (s->parse_pos == s->in_len) break;
      s->ex = exchange_get(*s->worker);
      exchange_begin(s->ex, s);
      s->ex->start_us = now_us();
      s->worker->wheel.arm(&s->timer, s->worker->now_ms() + settings(*s->worker).client_header_timeout_ms);
    }
    Exchange* ex = s->ex;
    char* base = s->in->data;
    if (ex->phase == Phase::Head) {
      std::size_t used = 0;
      ParseEvent ev = ex->req.feed(base + s->parse_pos, s->in_len - s->parse_pos, &used);
      if (ev == ParseEvent::NeedMore) {
        s->parse_pos = s->in_len;
        if (s->in_len == s->in->cap) reply_and_close(ex, 431);
        break;
      }
      if (ev == ParseEvent::Error) {
        log(LogLevel::Debug, "bad request from %.*s: %s", s->ip_len, s->ip, ex->req.error_reason());
        reply_and_close(ex, ex->req.error_status());
        break;
      }
      s->parse_pos += static_cast<std::uint32_t>(used);
      ex->head_end = ex->body_end = ex->sent_to = s->parse_pos;
      if (!ex->req.has_body()) {
        ex->req.feed(base + s->parse_pos, 0, &used);  // passes the message's end
        ex->req_complete = true;
      }
      on_request_head(ex);
      continue;  // the exchange may have ended already (a local answer)
    }
    if (ex->req_complete || ex->phase == Phase::Local) break;  // pipelined bytes wait for this exchange
    std::size_t used = 0;
    ParseEvent ev = ex->req.feed(base + s->parse_pos, s->in_len - s->parse_pos, &used);
    if (ev == ParseEvent::Error) {
      if (ex->resp_started || ex->phase == Phase::Local) client_abort(s);
      else reply_and_close(ex, 400);
      break;
    }
    s->parse_pos += static_cast<std::uint32_t>(used);
    ex->body_end = s->parse_pos;
    if (ev == ParseEvent::MessageComplete) ex->req_complete = true;
    // limit.body_bytes for chunked bodies, as they stream (Content-Length was
    // checked at the head): what went upstream is cut off with the request.
    if (ex->req.chunked() && ex->req.chunked_body_bytes() > settings(*s->worker).body_bytes) {
      if (ex->resp_started) client_abort(s);
      else reply_and_close(ex, 413);
      break;
    }
    if (ex->phase == Phase::Upstream) {
      ex->progress_ms = s->worker->now_ms();
      flush_upstream(ex);
      recycle_client_buffer(ex);
    } else if (ex->phase == Phase::Local && ex->req_complete && !s->stream.write_pending()) {
      finish_exchange(ex);
      continue;
    }
    if (!ex->req_complete) break;
  }
  if (!s->stream.closing()) update_client_reading(s);
}

// ---------------------------------------------------------------- response side

// Response head for the client, into `iov`: nothing when the raw bytes can go
// as they are (*raw), else the kept lines plus our Connection header.
unsigned build_response_head(Exchange* ex, uv_buf_t* iov, bool* raw) {
  const bool http10_keep = !ex->client_close && ex->req.http_minor() == 0;
  std::string_view conn = ex->client_close ? kConnClose : http10_keep ? kConnKeep : std::string_view();
  std::string_view extra = conn;
  if (ex->ticket.minted) {
    std::size_t n = ex->worker->balancer.response_lines(ex->ticket, ex->resp_extra, sizeof ex->resp_extra);
    const std::size_t k = std::min(conn.size(), sizeof ex->resp_extra - n);
    if (k) std::memcpy(ex->resp_extra + n, conn.data(), k);
    n += k;
    ex->resp_extra_len = static_cast<std::uint32_t>(n);
    extra = {ex->resp_extra, n};
  }
  unsigned n = edit_response_head(ex->resp, extra, iov);
  *raw = n == 0;
  return n;
}

void after_client_write(Exchange* ex);


void restart_response_parser(Exchange* ex) {
  ex->resp.init(HTTP_RESPONSE, ex->resp_headers.get(), settings(*ex->worker).header_count);
  ex->resp.max_head_bytes = ex->worker->buffers.size();
  if (ex->is_head) ex->resp.expect_no_body();
}

// Relays what the server sent: the head (edited when needed) and the body
// bytes, in one write per read.
void process_upstream(Exchange* ex) {
  UpstreamConn* c = ex->up;
  ClientSession* s = ex->client;
  Worker& w = *ex->worker;
  uv_buf_t* iov = ex->iov.get();
  unsigned n = 0;
  const char* fwd = nullptr;  // raw bytes to relay start here
  char* base = c->in->data;
  for (;;) {
    if (!ex->resp_started) {
      std::size_t used = 0;
      ParseEvent ev = ex->resp.feed(base + c->parse_pos, c->in_len - c->parse_pos, &used);
      if (ev == ParseEvent::NeedMore) {
        c->parse_pos = c->in_len;
        if (c->in_len < c->in->cap) break;
        log(LogLevel::Warn, "response head from %.*s too large", JUGGLER_SERVER_ARGS(w.shared.config.table->servers[c->server]));
        exchange_fail(ex, {Who::Server, When::Head, false, UV_EPROTO});
        return;
      }
      if (ev == ParseEvent::Error) {
        log(LogLevel::Warn, "bad response from %.*s: %s", JUGGLER_SERVER_ARGS(w.shared.config.table->servers[c->server]),
            ex->resp.error_reason());
        exchange_fail(ex, {Who::Server, When::Head, false, UV_EPROTO});
        return;
      }
      c->parse_pos += static_cast<std::uint32_t>(used);
      const int status = ex->resp.status();
      if (status / 100 == 1) {
        // Interim (100 Continue): relay it as it is, then parse the real response.
        if (status == 101 || ++ex->interims > kMaxInterim) {
          // We removed Upgrade: a switch is a broken server; so are endless 1xx.
          exchange_fail(ex, {Who::Server, When::Head, false, UV_EPROTO});
          return;
        }
        std::size_t none = 0;
        ex->resp.feed(base + c->parse_pos, 0, &none);  // passes the bodiless message's end
        iov[n++] = uv_buf_init(const_cast<char*>(ex->resp.head_begin()), static_cast<unsigned>(ex->resp.head_len()));
        restart_response_parser(ex);
        continue;
      }
      ex->status = status;
      ex->resp_started = true;
      {
        ServerHealth& h = w.shared.health[static_cast<std::size_t>(ex->server)];
        passive_success(h);
        w.balancer.response(ex->ticket, now_us(), w.now_ms());
      }
      ex->progress_ms = w.now_ms();
      if (ex->resp.body_until_close()) ex->client_close = true;
      bool raw = false;
      n += build_response_head(ex, iov + n, &raw);
      fwd = raw ? ex->resp.head_begin() : base + c->parse_pos;
      continue;
    }
    const char* start = base + c->parse_pos;
    std::size_t used = 0;
    ParseEvent ev = ex->resp.feed(start, c->in_len - c->parse_pos, &used);
    if (ev == ParseEvent::Error) {
      log(LogLevel::Warn, "bad response body from %.*s: %s", JUGGLER_SERVER_ARGS(w.shared.config.table->servers[c->server]),
          ex->resp.error_reason());
      exchange_fail(ex, {Who::Server, When::Body, false, UV_EPROTO});
      return;
    }
    c->parse_pos += static_cast<std::uint32_t>(used);
    if (!fwd) fwd = start;
    if (ev == ParseEvent::MessageComplete) {
      ex->resp_complete = true;
      ex->upstream_reusable = ex->resp.keep_alive() && c->parse_pos == c->in_len && ex->req_complete;
    }
    break;
  }
  if (fwd) {
    const char* end = base + c->parse_pos;
    if (end > fwd) iov[n++] = uv_buf_init(const_cast<char*>(fwd), static_cast<unsigned>(end - fwd));
  }
  for (unsigned i = 0; i < n; ++i) ex->bytes_out += iov[i].len;
  if (n == 0) {
    if (ex->resp_complete) finish_exchange(ex);
    return;
  }
  if (write_client(s, iov, n)) after_client_write(ex);
}

void after_client_write(Exchange* ex) {
  UpstreamConn* c = ex->up;
  ex->progress_ms = ex->worker->now_ms();
  if (ex->resp_complete) {
    finish_exchange(ex);
    return;
  }
  if (!c) return;
  // Everything read so far went out: the buffer starts over (a bigger one for
  // a large body).
  if (c->parse_pos == c->in_len && ex->resp_started) {
    c->in_len = c->parse_pos = 0;
    const MessageParser& r = ex->resp;
    if (r.body_until_close() || r.chunked() || r.content_length() >= kLargeBody) c->in = ex->worker->upgrade(c->in);
  }
  if (!c->reading && !c->closing) {
    if (uv_read_start(stream(&c->tcp), upstream_on_alloc, upstream_on_read) == 0) c->reading = true;
  }
}

}  // namespace

void ClientSession::on_stream_written(int status) noexcept {
  ClientSession* s = this;
  if (status < 0) {
    client_abort(s);
    return;
  }
  Exchange* ex = s->ex;
  if (!ex) {
    if (s->close_after_write) client_finish(s, s->linger_on_close);
    return;
  }
  if (ex->phase == Phase::Local) {
    if (ex->req_complete || ex->client_close) finish_exchange(ex);
    return;
  }
  after_client_write(ex);
}

namespace {

// ---------------------------------------------------------------- end of an exchange

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
  if (close) {
    client_finish(s, linger);
    return;
  }
  s->stream.trim();
  // Keep-alive: what follows in the buffer is the next (pipelined) request.
  if (s->parse_pos < s->in_len) {
    std::memmove(s->in->data, s->in->data + s->parse_pos, s->in_len - s->parse_pos);
    s->in_len -= s->parse_pos;
    s->parse_pos = 0;
    process_client(s);
    return;
  }
  w.put_buffer(s->in);
  s->in = nullptr;
  s->in_len = s->parse_pos = 0;
  w.wheel.arm(&s->timer, w.now_ms() + settings(w).client_idle_timeout_ms);
  update_client_reading(s);
}

// ---------------------------------------------------------------- client connection

void client_eof(ClientSession* s, int err) {
  s->eof = true;
  s->stream.set_reading(false);
  if (s->lingering || err != UV_EOF || !s->ex) {
    client_abort(s);
    return;
  }
  Exchange* e = s->ex;
  if (e->phase == Phase::Head || !e->req_complete) {
    client_abort(s);
    return;
  }
  e->client_close = true;  // answer what was asked, then close
}

void update_client_reading(ClientSession* s) {
  if (s->stream.closing()) return;
  bool want = !s->eof;
  if (want && s->in && s->in_len >= s->in->cap) want = false;  // full: wait for the exchange
  if (want && s->ex && s->ex->phase == Phase::Upstream && !s->ex->req_complete) {
    UpstreamConn* c = s->ex->up;
    if (c && c->write_pending) want = false;  // backpressure
  }
  if (s->lingering) want = !s->eof;  // discarding
  s->stream.set_reading(want);
}

// Sessions are recycled through a per-worker free list (bounded), so a new
// connection costs no allocation at steady state.
constexpr std::size_t kKeepFreeSessions = 1024;

ClientSession* session_get(Worker& w) {
  ClientSession* s = w.free_sessions;
  if (!s) return new ClientSession();
  w.free_sessions = s->next;
  --w.free_session_count;
  s->~ClientSession();
  return new (s) ClientSession();
}

void close_handles(ClientSession* s) {
  Worker& w = *s->worker;
  if (s->prev) s->prev->next = s->next;
  else w.sessions = s->next;
  if (s->next) s->next->prev = s->prev;
  --w.session_count;
  TimerWheel::disarm(&s->timer);
  s->stream.close();
}

// Closes at once: the exchange (and its server connection) is abandoned.
void client_abort(ClientSession* s) {
  if (s->stream.closing()) return;
  if (Exchange* ex = s->ex) {
    if (ex->term.who == Who::None)  // the client left (or broke the protocol) first
      ex->term = {Who::Client, ex->resp_started ? When::Body : ex->phase == Phase::Upstream ? When::Head : When::Request,
                  false, 0};
    if (ex->status == 0) ex->status = 499;  // nginx's "client closed request"
    log_exchange(ex);
    detach_upstream(ex, false);
    s->ex = nullptr;
    exchange_put(*s->worker, ex);
  }
  close_handles(s);
}

// Closes after the answer was written. With `linger`, the write side is shut
// down first and what the client still sends is read and discarded for a
// moment, so a reset does not destroy the answer in flight.
void client_finish(ClientSession* s, bool linger) {
  if (s->stream.closing()) return;
  // TLS: close_notify before the close, so a body delimited by the close is
  // not mistaken for a truncated one (RFC 8446 6.1).
  if (!s->lingering && !s->stream.close_notify()) return;  // the write failed: aborted
  if (s->stream.write_pending()) {
    s->close_after_write = true;
    s->linger_on_close = linger;
    return;
  }
  if (!linger || s->eof) {
    client_abort(s);
    return;
  }
  s->lingering = true;
  s->stream.discard_input();
  if (s->stream.shutdown_write() != 0) {
    client_abort(s);
    return;
  }
  s->worker->wheel.arm(&s->timer, s->worker->now_ms() + kLingerMs);
  update_client_reading(s);
}

}  // namespace

// ---------------------------------------------------------------- the stream's calls

uv_buf_t ClientSession::on_stream_alloc() noexcept {
  if (!in) {
    in = worker->buffers.get();
    in_len = parse_pos = 0;
  }
  return uv_buf_init(in->data + in_len, in->cap - in_len);
}

void ClientSession::on_stream_read(ssize_t n) noexcept {
  if (n > 0) {
    in_len += static_cast<std::uint32_t>(n);
    process_client(this);
    return;
  }
  if (n == 0) {
    // Nothing arrived (a TLS handshake record): an idle connection holds no buffer.
    if (in && in_len == 0 && !ex) {
      worker->put_buffer(in);
      in = nullptr;
    }
    return;
  }
  if (n == UV_EPROTO && stream.secure())
    log(LogLevel::Debug, "TLS from %.*s: %s", ip_len, ip, stream.tls_error());
  client_eof(this, static_cast<int>(n));
}

void ClientSession::on_stream_closed() noexcept {
  Worker& w = *worker;
  w.put_buffer(in);
  in = nullptr;
  if (w.free_session_count >= kKeepFreeSessions) {
    delete this;
    return;
  }
  next = w.free_sessions;
  w.free_sessions = this;
  ++w.free_session_count;
}

namespace {

// ---------------------------------------------------------------- timeouts

// The client's one timeout means, by state: lingering after an answer is
// over; a head that is not complete in time is 408; an idle keep-alive
// connection (or one that never sent a byte) is closed.
void on_client_timer(TimerNode* t) {
  auto* s = static_cast<ClientSession*>(t->owner);
  if (!s->lingering && s->ex && s->ex->phase == Phase::Head) {
    reply_and_close(s->ex, 408);
    return;
  }
  if (s->ex && !s->lingering) return;  // the exchange's own timer watches it
  if (s->lingering || s->stream.write_pending()) {
    client_abort(s);
  } else {
    // Idle: a graceful close (close_notify over TLS). Should that write stall,
    // the timer fires again and the connection is dropped.
    s->worker->wheel.arm(&s->timer, s->worker->now_ms() + kLingerMs);
    client_finish(s, false);
  }
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

}  // namespace

// ---------------------------------------------------------------- upstream reads

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

// ---------------------------------------------------------------- accept / drain

// limit.connections_per_worker reached: the connection is accepted, told 503
// (best effort, one non-blocking write) and closed, so clients are not left
// waiting in the backlog.
static void refuse_connection(Worker& w, uv_stream_t* server) {
  auto* t = new uv_tcp_t();
  uv_tcp_init(&w.loop, t);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(t)) == 0) {
    std::string_view bytes = w.shared.error_pages.reply(503, true);
    uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
    uv_try_write(reinterpret_cast<uv_stream_t*>(t), &b, 1);
  }
  ++w.refused_connections;
  uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
}

void session_on_connection(uv_stream_t* server, int status) {
  auto* lc = static_cast<ListenerCtx*>(server->data);
  Worker* w = lc->worker;
  if (status < 0) {
    // EMFILE and the like: libuv sheds the pending connections itself; say so
    // at most once a second, not once per connection.
    if (w->now_ms() - w->last_accept_error_ms >= 1000) {
      w->last_accept_error_ms = w->now_ms();
      log(LogLevel::Warn, "accept: %s", uv_strerror(status));
    }
    return;
  }
  const std::uint32_t limit = settings(*w).connections_per_worker;
  if (limit && w->session_count >= limit) {
    refuse_connection(*w, server);
    return;
  }
  auto* s = session_get(*w);
  s->worker = w;
  s->stream.init(w->streams, s);
  s->timer.fire = on_client_timer;
  s->timer.owner = s;
  s->next = w->sessions;
  if (w->sessions) w->sessions->prev = s;
  w->sessions = s;
  ++w->session_count;
  if (s->stream.accept(server, lc->tls ? lc->tls->default_ctx() : nullptr) != 0) {
    close_handles(s);
    return;
  }
  sockaddr_storage peer{};
  int len = sizeof peer;
  if (uv_tcp_getpeername(s->stream.tcp(), reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
    if (peer.ss_family == AF_INET6) {
      const auto* a6 = reinterpret_cast<const sockaddr_in6*>(&peer);
      if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
        sockaddr_in a4{};
        a4.sin_family = AF_INET;
        std::memcpy(&a4.sin_addr, a6->sin6_addr.s6_addr + 12, 4);
        uv_ip4_name(&a4, s->ip, sizeof s->ip);
      } else {
        uv_ip6_name(a6, s->ip, sizeof s->ip);
      }
    } else {
      uv_ip4_name(reinterpret_cast<const sockaddr_in*>(&peer), s->ip, sizeof s->ip);
    }
    s->ip_len = static_cast<std::uint8_t>(std::strlen(s->ip));
  }
  w->wheel.arm(&s->timer, w->now_ms() + settings(*w).client_header_timeout_ms);
  update_client_reading(s);
}

void session_drain(Worker& w) noexcept {
  ClientSession* s = w.sessions;
  while (s) {
    ClientSession* next = s->next;
    if (!s->ex && !s->stream.closing() && !s->lingering) client_finish(s, false);
    else if (s->ex) s->ex->client_close = true;
    s = next;
  }
}

void session_worker_done(Worker& w) noexcept {
  // After the loop ended: every session's close callback has run.
  while (ClientSession* s = w.free_sessions) {
    w.free_sessions = s->next;
    delete s;
  }
  w.free_session_count = 0;
  // The pooled write requests go with the worker's StreamContext, later
  // still: a write still queued when its handle was closed returns its
  // request from the cancel callback, which can run after
  // session_free_exchanges (the last session closed in the same loop turn).
}

void session_free_exchanges(Worker& w) noexcept {
  for (auto& ex : w.exchanges) TimerWheel::disarm(&ex->timer);
  w.exchanges.clear();
  w.free_exchanges = nullptr;
  w.streams.release();
}

}  // namespace juggler
