// Exchanges: one request and its response. Pooled per worker.
#pragma once

#include <memory>
#include <string>

#include "juggler/balance.hpp"
#include "juggler/http.hpp"
#include "juggler/timer_wheel.hpp"
#include "juggler/worker.hpp"

namespace juggler {

enum class Phase : std::uint8_t { Head, Upstream, Local };

// How an exchange ended, as data (HAProxy's termination state): who ended it
// and while waiting for what. One function (exchange_fail) decides retry, 5xx
// or close from it, and the access log writes it as two letters: who (`C`
// client, `S` server, `P` proxy, lower case when it was a timeout, `-` nobody)
// and when (`R` the request, `C` connecting, `H` the response head, `D` the
// response body, `-` it ended normally): term=sH is a server that did not
// answer in time (504), term=SC one that refused the connection, term=CD a
// client that left during the response.
enum class Who : std::uint8_t { None, Client, Server, Proxy };
enum class When : std::uint8_t { Done, Request, Connect, Head, Body };
struct Termination {
  Who who = Who::None;
  When when = When::Done;
  bool timeout = false;
  int err = 0;  // libuv error (UV_EPROTO: the peer broke the protocol)
};

// Everything an exchange knows of the one request it carries: a value, reset
// as a whole (`ex->state() = {}`) when the next request begins, so no field
// can keep a previous request's value.
struct ExchangeState {
  ClientSession* client = nullptr;
  UpstreamConn* up = nullptr;
  Termination term;  // how it ended (set by exchange_fail / client_abort)
  RequestHead head;
  const RouteDef* route = nullptr;
  Tried tried;
  int server = -1;
  Phase phase = Phase::Head;
  std::uint8_t attempts = 0;
  std::uint8_t retries_left = 0;
  // request side (offsets into client->in)
  std::uint32_t head_end = 0;    // end of the head in client->in
  std::uint32_t body_end = 0;    // end of the body bytes parsed so far
  std::uint32_t sent_to = 0;     // bytes of client->in already written upstream (head counts from head_end)
  bool head_sent = false;
  bool req_complete = false;
  bool replayable = true;        // the whole request is still in client->in
  bool client_close = false;     // close the client connection after this exchange
  bool is_head = false;
  // response side
  bool resp_started = false;     // a byte of the final response went to the client
  std::uint8_t interims = 0;     // 1xx responses relayed (bounded: a server may not send endless ones)
  bool resp_complete = false;
  bool upstream_reusable = false;
  int status = 0;
  std::uint64_t bytes_out = 0;
  std::uint64_t start_us = 0;
  // The last time the exchange moved (a byte read from or written to either
  // side): its timer re-arms lazily from this, so a flowing exchange costs no
  // timer operation per read or write.
  std::uint64_t progress_ms = 0;
  std::uint32_t scratch_len = 0;     // bytes of `scratch` in use
  std::uint32_t resp_extra_len = 0;  // bytes of `resp_extra` in use
  BalanceTicket ticket;  // the balancer's own state for this request (sticky cookie, in-flight)
  std::uint16_t log_line_len = 0, log_referer_len = 0, log_agent_len = 0;  // parts of `log_text`
};

// One request/response in flight: its per-request value, and beside it what
// is kept across requests (the pooled arrays, sized once from
// limit.header_count, the parsers and the timer). Pooled per worker.
struct Exchange : ExchangeState {
  ExchangeState& state() noexcept { return *this; }

  Worker* worker = nullptr;
  TimerNode timer;   // connect timeout, then whichever party the exchange waits for
  MessageParser req;
  MessageParser resp;
  std::unique_ptr<HeaderSpan[]> req_headers;
  std::unique_ptr<HeaderSpan[]> resp_headers;
  std::unique_ptr<Header[]> route_headers;
  std::unique_ptr<uv_buf_t[]> iov;
  std::uint32_t iov_cap = 0;
  // What the proxy adds to the request head: X-Forwarded-*, Via, the final CRLF.
  std::unique_ptr<char[]> scratch;
  std::uint32_t scratch_cap = 0;
  // Lines added to the response head: Set-Cookie (a minted sticky cookie)
  // and Connection.
  char resp_extra[256];
  // For the access log: the request line, Referer and User-Agent, copied at
  // head time because a streamed body may reuse the buffer the head was in.
  char log_text[512];
  // A responder's answer built at run time (the admin pages): written from
  // here, so it stays until the exchange is reused.
  std::string local_reply;
  Exchange* next_free = nullptr;
};


// An exchange from the worker's pool (arrays sized from limit.header_count).
Exchange* exchange_get(Worker& w);
// Resets it for a new request on `s`.
void exchange_begin(Exchange* ex, ClientSession* s);
// Back to the pool.
void exchange_put(Worker& w, Exchange* ex);

// The request head is complete: route it and start what the route says.
void on_request_head(Exchange* ex);

// Ends the balancer's events for the attempt and lets go of the server
// connection: back to its idle list with `reuse`, else closed.
void detach_upstream(Exchange* ex, bool reuse);

// Copies the request line, Referer and User-Agent for the access log, before
// a streamed body may reuse the buffer the head was in.
void copy_log_fields(Exchange* ex);

// The exchange's record, once it ended: its counters (metrics.hpp) and its
// access log line (when the log is on).
void log_exchange(Exchange* ex);

// The answer is complete (or given up): logs, releases the server connection
// and the exchange, and tells the client connection what comes next.
void finish_exchange(Exchange* ex);

// Releases the exchange pool and the streams' idle handle (at worker exit,
// after every session closed).
void session_free_exchanges(Worker& w) noexcept;

}  // namespace juggler
