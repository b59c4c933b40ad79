// The relay: the request head (edited as iov slices) and body bytes go to the
// server as they arrive, the response head (edited when needed) and body go
// to the client, each from the buffer it was read into: nothing is copied.
// One write at a time per side; the other side's reading pauses meanwhile.
#include "exchange/relay.hpp"

#include <cstring>

#include "exchange/exchange.hpp"
#include "upstream/connector.hpp"
#include "juggler/upstream.hpp"

namespace juggler {

namespace {

constexpr std::string_view kConnClose = "Connection: close\r\n";
constexpr std::string_view kConnKeep = "Connection: keep-alive\r\n";

constexpr std::uint8_t kMaxInterim = 8;       // 1xx responses before the final one
constexpr std::uint64_t kLargeBody = 128 * 1024;  // bodies from this size stream through bulk buffers

unsigned build_request_head(Exchange* ex) {
  std::size_t len = 0;
  unsigned n = edit_request_head(ex->req, ex->down->peer(), ex->down->secure() ? "https" : "http", ex->scratch.get(),
                                 ex->scratch_cap, &len, ex->iov.get());
  ex->scratch_len = static_cast<std::uint32_t>(len);
  return n;
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
  ex->body->written();
  flush_upstream(ex);
}

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

void restart_response_parser(Exchange* ex) {
  ex->resp.init(HTTP_RESPONSE, ex->resp_headers.get(), settings(*ex->worker).header_count);
  ex->resp.max_head_bytes = ex->worker->buffers.size();
  if (ex->is_head) ex->resp.expect_no_body();
}

}  // namespace

// Sends what is pending of the request: the head once, then body bytes as
// they arrive. One write at a time; reading the client pauses meanwhile.
void flush_upstream(Exchange* ex) {
  UpstreamConn* c = ex->up;
  if (!c || !c->connected || c->write_pending) return;
  unsigned n = 0;
  if (!ex->head_sent) {
    n = build_request_head(ex);
    ex->head_sent = true;
  }
  const std::string_view body = ex->body->available();
  if (!body.empty()) ex->iov[n++] = uv_buf_init(const_cast<char*>(body.data()), static_cast<unsigned>(body.size()));
  if (n == 0) return;
  ex->body->consume(body.size());
  c->write_pending = true;
  if (!write_or_queue(c->worker->streams, as_stream(&c->tcp), c, ex->iov.get(), n, on_upstream_write)) return;
  c->write_pending = false;
  ex->progress_ms = c->worker->now_ms();
  ex->body->written();
}

namespace {

enum class HeadStep : std::uint8_t { NeedMore, Interim, Final, Failed };

// Parses a response head in the server buffer. An interim response (100
// Continue) is queued into the exchange's iov as it is, and the caller parses
// on; the final one's head is queued (edited when needed) and *fwd says
// where the raw bytes to relay start.
HeadStep response_head(Exchange* ex, unsigned* n, const char** fwd) {
  UpstreamConn* c = ex->up;
  Worker& w = *ex->worker;
  char* base = c->in->data;
  std::size_t used = 0;
  const ParseEvent ev = ex->resp.feed(base + c->parse_pos, c->in_len - c->parse_pos, &used);
  if (ev == ParseEvent::NeedMore) {
    c->parse_pos = c->in_len;
    if (c->in_len < c->in->cap) return HeadStep::NeedMore;
    log(LogLevel::Warn, "response head from %.*s too large", JUGGLER_SERVER_ARGS(w.shared.config.table->servers[c->server]));
    exchange_fail(ex, {Who::Server, When::Head, false, UV_EPROTO});
    return HeadStep::Failed;
  }
  if (ev == ParseEvent::Error) {
    log(LogLevel::Warn, "bad response from %.*s: %s", JUGGLER_SERVER_ARGS(w.shared.config.table->servers[c->server]),
        ex->resp.error_reason());
    exchange_fail(ex, {Who::Server, When::Head, false, UV_EPROTO});
    return HeadStep::Failed;
  }
  c->parse_pos += static_cast<std::uint32_t>(used);
  uv_buf_t* iov = ex->iov.get();
  const int status = ex->resp.status();
  if (status / 100 == 1) {
    if (status == 101 || ++ex->interims > kMaxInterim) {
      // We removed Upgrade: a switch is a broken server; so are endless 1xx.
      exchange_fail(ex, {Who::Server, When::Head, false, UV_EPROTO});
      return HeadStep::Failed;
    }
    std::size_t none = 0;
    ex->resp.feed(base + c->parse_pos, 0, &none);  // passes the bodiless message's end
    iov[(*n)++] = uv_buf_init(const_cast<char*>(ex->resp.head_begin()), static_cast<unsigned>(ex->resp.head_len()));
    restart_response_parser(ex);
    return HeadStep::Interim;
  }
  ex->status = status;
  ex->resp_started = true;
  ex->term = {};  // a response began: failed attempts before it are history
  passive_success(w.shared.health[static_cast<std::size_t>(ex->server)]);
  w.balancer.response(ex->ticket, w.now_ms());
  if (ex->resp.body_until_close()) ex->client_close = true;
  bool raw = false;
  *n += build_response_head(ex, iov + *n, &raw);
  *fwd = raw ? ex->resp.head_begin() : base + c->parse_pos;
  return HeadStep::Final;
}

// Parses the body bytes in the server buffer (they are relayed as they are,
// from *fwd on). False when the body is broken (the exchange failed).
bool response_body(Exchange* ex, const char** fwd) {
  UpstreamConn* c = ex->up;
  const char* start = c->in->data + c->parse_pos;
  std::size_t used = 0;
  const ParseEvent ev = ex->resp.feed(start, c->in_len - c->parse_pos, &used);
  if (ev == ParseEvent::Error) {
    log(LogLevel::Warn, "bad response body from %.*s: %s",
        JUGGLER_SERVER_ARGS(ex->worker->shared.config.table->servers[c->server]), ex->resp.error_reason());
    exchange_fail(ex, {Who::Server, When::Body, false, UV_EPROTO});
    return false;
  }
  c->parse_pos += static_cast<std::uint32_t>(used);
  if (!*fwd) *fwd = start;
  if (ev == ParseEvent::MessageComplete) {
    ex->resp_complete = true;
    ex->upstream_reusable = ex->resp.keep_alive() && c->parse_pos == c->in_len && ex->body->complete();
  }
  return true;
}

}  // namespace

// Relays what the server sent: interim responses, the head (edited when
// needed) and the body bytes, in one client write per read.
void process_upstream(Exchange* ex) {
  UpstreamConn* c = ex->up;
  uv_buf_t* iov = ex->iov.get();
  unsigned n = 0;
  const char* fwd = nullptr;  // raw bytes to relay start here
  HeadStep step = HeadStep::Final;
  while (!ex->resp_started && (step = response_head(ex, &n, &fwd)) == HeadStep::Interim) {
  }
  if (step == HeadStep::Failed) return;
  if (ex->resp_started && !response_body(ex, &fwd)) return;
  if (fwd) {
    const char* end = c->in->data + c->parse_pos;
    if (end > fwd) iov[n++] = uv_buf_init(const_cast<char*>(fwd), static_cast<unsigned>(end - fwd));
  }
  for (unsigned i = 0; i < n; ++i) ex->bytes_out += iov[i].len;
  if (n == 0) {
    if (ex->resp_complete) finish_exchange(ex);
    return;
  }
  if (ex->down->send(iov, n)) after_client_write(ex);
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
    if (uv_read_start(as_stream(&c->tcp), upstream_on_alloc, upstream_on_read) == 0) c->reading = true;
  }
}

}  // namespace juggler
