// Exchanges: one request and its response. Pooled per worker.
#pragma once

#include <memory>
#include <string>

#include "exchange/downstream.hpp"
#include "juggler/balance.hpp"
#include "juggler/http.hpp"
#include "juggler/timer_wheel.hpp"
#include "juggler/worker.hpp"

namespace juggler {

// 1xx responses relayed before the final one; more is a broken server.
constexpr std::uint8_t kMaxInterim = 8;

// The slices of one client write (the exchange's iov, and an HTTP/2
// stream's copy of them): up to kMaxInterim 1xx heads (relay.cpp) read
// together, then the final head (header_count + 5 slices with the instance
// line) and the body; 2 * header_count + 8 alone is short of that when
// limit.header_count is under 6.
constexpr std::uint32_t exchange_iov_cap(std::uint32_t header_count) noexcept {
  return 2 * header_count + 8 + kMaxInterim;
}

// The states of an exchange. Each has one handler, which step() calls with
// the event and which returns the next state; a state just entered is called
// with Event::Enter first. Done, Cut and Tunnel end the exchange: step()
// tears it down after the handlers returned, never inside one.
//
//   Head ─▶ Route ─┬─▶ Respond ──────────────────────────────────────▶ Done
//                  └─▶ Connect ─▶ Send ─▶ AwaitHead ─▶ Relay ─▶ Finish ─▶ Done
//   (Connect, Send, AwaitHead, Relay, Finish) ─▶ Failed ─▶ Connect (retry)
//                                                      ├─▶ Respond (408/502/504)
//                                                      └─▶ Cut
//   (Send, AwaitHead) ─▶ Tunnel (a 101 the client asked for)
enum class State : std::uint8_t {
  Head,       // the connection reads the request head
  Route,      // the head is complete: routing picks the action (passed through)
  Respond,    // a local answer (respond, redirect, error page) is being written
  CacheWait,  // a miss waits for another request of the same key to fill the cache
  CacheFetch, // an asynchronous store (Redis) is asked (within its deadline)
  Connect,    // picking a server and connecting (the connect timeout runs)
  Send,       // connected: the request head and body go out
  AwaitHead,  // the whole request went out: the response head is awaited
  Relay,      // the final response head went to the client: the body follows
  Finish,     // the response is complete: its last bytes are being written
  Failed,     // passed through: exchange_fail decides from `term`
  Done,       // ended: the connection goes on with the next request, or closes
  Cut,        // ended: the client connection is cut
  Tunnel,     // ended: both connections went to the tunnel hook
};

// What happens to an exchange: step(ex, event, arg).
enum class Event : std::uint8_t {
  Enter,            // the state was just entered
  HeadParsed,       // the connection parsed the request head
  Body,             // more of the request body arrived (or the rest of it)
  Refuse,           // the connection refuses the request (arg: the status)
  ClientWritten,    // a send to the client completed
  ClientGone,       // the client left or broke the connection
  Connected,        // the server connection is up (arg: 0, or the libuv error)
  ServerData,       // bytes from the server in its connection's buffer
  ServerEof,        // the server closed or broke the connection (arg: UV_EOF or the error)
  UpstreamWritten,  // a write to the server completed (arg: its status)
  Timer,            // the exchange's timer fired
  CacheReady,       // the request this one waited for (CacheWait) ended
  CacheFound,       // the store answered (CacheFetch; arg: 1 found, 0 not, -1 failed or late)
};

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

struct FilteredResponse;  // src/filter/filtered.hpp
class ResponseFilter;    // src/filter/filter.hpp
struct CacheEntry;        // src/cache/store.hpp
struct Exchange;

// Everything an exchange knows of the one request it carries: a value, reset
// as a whole (`ex->state() = {}`) when the next request begins, so no field
// can keep a previous request's value.
struct ExchangeState {
  Downstream* down = nullptr;  // the connection the request came on
  RequestBody* body = nullptr;  // its body (never null; complete at once when there is none)
  Upstream* up = nullptr;
  Termination term;  // how it ended (set where the failure is seen; state Failed decides from it)
  RequestHead head;
  const RouteDef* route = nullptr;
  Tried tried;
  int server = -1;
  State st = State::Head;
  Event deferred = Event::Enter;  // an event raised while a handler ran (Enter: none)
  bool stepping = false;          // a handler runs: events wait in `deferred`
  std::uint8_t attempts = 0;
  std::uint8_t retries_left = 0;
  bool client_close = false;     // close the client connection after this exchange
  bool is_head = false;
  std::string_view upgrade;      // the Upgrade token forwarded (the route allows it): a 101 becomes a tunnel
  // response side
  std::uint8_t interims = 0;     // 1xx responses relayed (bounded: a server may not send endless ones)
  bool upstream_reusable = false;  // the response ended cleanly and the server keeps the connection
  std::string_view answer;       // Respond: the bytes of the local answer
  std::uint8_t answer_slices = 0;  // Respond: the answer is ex->iov[0, n) instead (a cache hit)
  int answer_file = -1;  // ... whose last slice is also this file's bytes (Downstream::send_file)
  int status = 0;
  std::uint64_t bytes_out = 0;
  std::uint64_t bytes_in = 0;      // the request's, head and body as framed (the access log)
  std::uint64_t start_us = 0;
  std::uint64_t first_byte_us = 0;  // the answering attempt's first response byte (TTFB); 0: none yet
  // The last time the exchange moved (a byte read from or written to either
  // side): its timer re-arms lazily from this, so a flowing exchange costs no
  // timer operation per read or write.
  std::uint64_t progress_ms = 0;
  BalanceTicket ticket;  // the balancer's own state for this request (sticky cookie, in-flight)
  // Response filters: what the request lets them do (the encoding the client
  // accepts, from the route's list), and the chain running on this response
  // (null: the zero-copy relay). Released by exchange_put.
  std::uint8_t filter_want = 0;
  FilteredResponse* filters = nullptr;
  // The cache's store stage when it is the only one on a Content-Length
  // body: the zero-copy relay runs and hands it the body bytes it relays
  // (cache_tap). Released by cache_release.
  ResponseFilter* cache_tap = nullptr;
  // The cache (routes with `cache`, src/cache): what it did (CacheStatus,
  // 0 on other routes) and the stored entry a hit is written from (released
  // by exchange_put).
  std::uint8_t cache = 0;
  bool cache_reval = false;  // the request asks the server to revalidate cache_entry (If-None-Match...)
  bool cache_leader = false;   // its miss leads: others wait for it (src/cache/collapse)
  bool cache_waiting = false;  // in its worker's waiting list (CacheWait)
  std::uint64_t cache_hash = 0;  // the key's hash, noted by the lookup (0: none)
  Exchange* wait_next = nullptr;
  Exchange* wait_prev = nullptr;
  CacheEntry* cache_entry = nullptr;
  std::uint64_t cache_ticket = 0;     // CacheFetch: the store's operation (cancelled if the exchange ends first)
  CacheEntry* cache_found = nullptr;  // CacheFetch: what the store found, handed to state_cache_fetch
  std::uint8_t cache_op = 0;          // CacheFetch: CacheOp (src/cache/cache.hpp)
  std::uint16_t log_line_len = 0, log_referer_len = 0, log_agent_len = 0;  // parts of `log_text`
};

// One request/response in flight: its per-request value, and beside it what
// is kept across requests (the pooled arrays, sized once from
// limit.header_count, the parsers and the timer). Pooled per worker.
struct Exchange : ExchangeState {
  ExchangeState& state() noexcept { return *this; }

  Worker* worker = nullptr;
  // The worker's table when the request was routed (pinned until exchange_put):
  // ex->route, ex->server and the balancer ticket are numbered by it.
  WorkerTable* tab = nullptr;
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
// Resets it for a new request arriving on `down`, its body from `body`.
void exchange_begin(Exchange* ex, Downstream* down, RequestBody* body);
// Back to the pool.
void exchange_put(Worker& w, Exchange* ex);

// Everything that happens to an exchange comes here: the handler of its
// current state acts and names the next state, until one waits for the next
// event. When the exchange ends (Done, Cut, Tunnel) it is torn down here, as
// the last thing: `ex` must not be used after a call that may end it. An
// event raised while a handler runs (a send that failed at once) is handled
// after it returns.
void step(Exchange* ex, Event ev, int arg = 0);

// A proxy route's request goes to the server: the retry budget and the
// balancer's begin, then Connect (state Route, and a cache miss that waited).
State proxy_begin(Exchange* ex);

// Whether the exchange takes request body bytes now (it is proxying).
bool exchange_wants_body(const Exchange* ex);

// A 101 answer to a request whose client asked for that Upgrade ends the
// exchange in Tunnel: the hook is called (at the top, once) with both sides
// still attached: ex->down, and ex->up with the 101 head parsed in ex->resp
// and whatever followed it in ex->up->in from parse_pos. The hook takes both:
// it sets ex->up to null (else the connection is closed) and owns the client
// connection from then on (telling its protocol that the exchange ended);
// then the exchange is logged and goes back to the pool. Null (the default):
// a 101 is a broken answer, 502, as the request went without its Upgrade.
using TunnelHook = void (*)(Exchange* ex);
void set_tunnel_hook(TunnelHook hook) noexcept;
TunnelHook tunnel_hook() noexcept;

// The state handlers (step() calls them; each returns the next state).
State state_head(Exchange* ex, Event ev, int arg);     // exchange.cpp
State state_route(Exchange* ex, Event ev, int arg);
State state_respond(Exchange* ex, Event ev, int arg);
State state_cache_wait(Exchange* ex, Event ev, int arg);  // cache/collapse.cpp
State state_cache_fetch(Exchange* ex, Event ev, int arg);  // cache/cache.cpp
State state_connect(Exchange* ex, Event ev, int arg);  // upstream/connector.cpp
State state_failed(Exchange* ex, Event ev, int arg);
State state_send(Exchange* ex, Event ev, int arg);     // exchange/relay.cpp
State state_await_head(Exchange* ex, Event ev, int arg);
State state_relay(Exchange* ex, Event ev, int arg);
State state_finish(Exchange* ex, Event ev, int arg);

// What every state does with the events it has no use of: the client left
// (Cut), a refused request (the error page before a response began, else
// Cut); others leave the state as it is (`self`).
State on_other_event(Exchange* ex, Event ev, int arg, State self);

// Ends the balancer's events for the attempt and lets go of the server
// connection: back to its idle list with `reuse`, else closed.
void detach_upstream(Exchange* ex, bool reuse);

// Copies the request line, Referer and User-Agent for the access log, before
// a streamed body may reuse the buffer the head was in.
void copy_log_fields(Exchange* ex);

// The two letters of the access log's term= for `term` (see Termination).
void termination_letters(const Termination& term, char (&out)[2]) noexcept;

// The exchange's record, once it ended: its counters (metrics.hpp) and its
// access log line (when the log is on).
void log_exchange(Exchange* ex);

// Releases the exchange pool and the streams' idle handle (at worker exit,
// after every session closed).
void session_free_exchanges(Worker& w) noexcept;

}  // namespace juggler
