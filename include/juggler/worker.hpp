// The per-worker state and the connection types of the request path. Types
// only (plus tiny inline helpers): session, upstream and runtime all include it,
// so the three never include each other.
#pragma once

#include <netinet/in.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "juggler/balance.hpp"
#include "juggler/buffer.hpp"
#include "juggler/config.hpp"
#include "juggler/error_pages.hpp"
#include "juggler/http.hpp"
#include "juggler/log.hpp"
#include "juggler/route.hpp"
#include "juggler/stream.hpp"
#include "juggler/timer_wheel.hpp"
#include "juggler/tls.hpp"

namespace juggler {

struct Worker;
struct Exchange;

// Process-wide, read-only after start-up (but for the atomics).
struct Shared {
  Config config;
  std::vector<sockaddr_storage> server_addrs;        // per compiled server
  std::unique_ptr<ServerHealth[]> health;            // per compiled server
  struct RouteReply {
    std::string keep, close;  // `-> respond CODE`: keep-alive and Connection: close variants
  };
  std::vector<RouteReply> route_replies;             // per route (empty unless Respond)
  std::uint16_t https_port = 443;                    // redirect https: the first https listener's port
  ErrorPages error_pages;                            // set error_pages, or the built-in pages
};

// A client connection speaking HTTP/1: its byte stream (TCP or TLS) below,
// the exchanges above. Its handler methods are defined in session.
struct ClientSession final : StreamHandler {
  Stream stream;
  TimerNode timer;    // header timeout while a head arrives, idle timeout between requests, linger
  Worker* worker;
  Exchange* ex = nullptr;
  Buffer* in = nullptr;         // plaintext (the stream decrypts below)
  std::uint32_t in_len = 0;     // bytes in `in`
  std::uint32_t parse_pos = 0;  // bytes of `in` given to the parser
  std::uint32_t requests = 0;
  bool eof = false;
  bool close_after_write = false;
  bool linger_on_close = false;  // with close_after_write: linger (see client_finish)
  bool lingering = false;       // answered and shut down: reading only to discard
  std::uint8_t ip_len = 0;
  char ip[46];
  ClientSession* prev = nullptr;  // worker's list of live sessions (drain)
  ClientSession* next = nullptr;

  uv_buf_t on_stream_alloc() noexcept override;
  void on_stream_read(ssize_t n) noexcept override;
  void on_stream_written(int status) noexcept override;
  void on_stream_closed() noexcept override;
};

struct UpstreamConn {
  uv_tcp_t tcp;
  uv_connect_t connect_req;
  Worker* worker;
  Exchange* ex = nullptr;  // the exchange using it; null while idle
  Buffer* in = nullptr;
  std::uint32_t in_len = 0;
  std::uint32_t parse_pos = 0;
  std::uint16_t server = 0;
  bool connected = false;
  bool reused = false;
  bool closing = false;
  bool write_pending = false;
  bool reading = false;
  std::uint64_t idle_since_ms = 0;
  UpstreamConn* prev = nullptr;  // idle list of its server
  UpstreamConn* next = nullptr;
};

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
  Exchange* next_free = nullptr;
};

struct IdleList {
  UpstreamConn* head = nullptr;
  std::uint32_t count = 0;
};

struct Worker {
  Worker(Shared& shared, std::uint32_t id, int access_log_fd);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  Shared& shared;
  std::uint32_t id;
  // The route table this worker dispatches with: reached through this pointer
  // (not a link-time call), so a new table can be swapped in per worker.
  const RouteTable* table;
  uv_loop_t loop;
  BufferPool buffers;  // heads and small bodies (16 KB, or limit.header_bytes + 1 KB)
  // Large bodies (downloads, uploads) move to bigger buffers once their head
  // went through: a quarter of the syscalls and copies per byte. Bounded per
  // worker; past the bound they stay on small buffers.
  // The pools' free lists hold what recent load needed (housekeeping trims
  // the rest, see HighWater), so bulk may keep all kMaxBulk when they are used.
  static constexpr std::uint32_t kBulkSize = 256 * 1024, kMaxBulk = 64;
  BufferPool bulk{kBulkSize, kMaxBulk, 2};
  std::uint32_t bulk_in_use = 0;
  Balancer balancer;
  AccessLog access_log;
  TimerWheel wheel;
  std::vector<IdleList> idle;  // per compiled server
  // Retry budget, per pool: a request earns kRetryEarn tokens, a retry costs
  // kRetryCost (so retries stay near 20% of requests), capped at kRetryCap.
  static constexpr std::int32_t kRetryEarn = 1, kRetryCost = 5, kRetryCap = 100;
  std::vector<std::int32_t> retry_tokens;  // per pool
  std::uint64_t retries = 0, retries_denied = 0;
  Exchange* free_exchanges = nullptr;
  ClientSession* free_sessions = nullptr;  // closed sessions kept for reuse
  std::size_t free_session_count = 0;
  std::vector<std::unique_ptr<Exchange>> exchanges;  // all ever made (owned)
  ClientSession* sessions = nullptr;                 // live client sessions
  std::uint32_t session_count = 0;
  std::uint32_t active_exchanges = 0;
  // Exchanges and closed sessions in use at most lately: housekeeping frees
  // the free ones beyond that (exchange_get and accept note the counts).
  HighWater exchange_water{64};
  HighWater session_water{64};
  std::uint64_t trimmed_bytes = 0;    // freed by housekeeping since the last malloc_trim
  std::uint64_t malloc_trim_ms = 0;   // when this worker last called it
  bool draining = false;
  StreamContext streams{&loop};  // write requests, TLS scratch and pumping, shared by this worker's streams
  std::uint64_t refused_connections = 0;  // over limit.connections_per_worker
  std::uint64_t last_accept_error_ms = 0;
  std::uint64_t now_ms() const noexcept { return uv_now(const_cast<uv_loop_t*>(&loop)); }

  // Returns a buffer of either size to its pool (null is fine).
  void put_buffer(Buffer* b) noexcept {
    if (!b) return;
    if (b->cap == kBulkSize && buffers.size() != kBulkSize) {
      bulk.put(b);
      --bulk_in_use;
    } else {
      buffers.put(b);
    }
  }
  // A bulk buffer in place of the empty small buffer `b`, when one may be had.
  Buffer* upgrade(Buffer* b) {
    if (!b || b->cap == kBulkSize || buffers.size() >= kBulkSize || bulk_in_use >= kMaxBulk) return b;
    buffers.put(b);
    ++bulk_in_use;
    return bulk.get();
  }
};

// Small helpers of the request path's modules.
inline const Settings& settings(const Worker& w) noexcept { return w.shared.config.settings; }
inline std::uint64_t now_us() noexcept { return uv_hrtime() / 1000; }
inline uv_stream_t* as_stream(uv_tcp_t* t) noexcept { return reinterpret_cast<uv_stream_t*>(t); }

// printf arguments for a server's authority with "%.*s": no string is built
// for a log line (which the level may drop anyway).
#define JUGGLER_SERVER_ARGS(server) static_cast<int>((server).authority.size()), (server).authority.data()

}  // namespace juggler
