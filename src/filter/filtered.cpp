// The relay of a filtered response. The server's body is parsed with
// collect_body (framing removed), each decoded span goes through the chain,
// and what comes out is framed as chunks (or until close for an HTTP/1.0
// client) and written to the client. The relay's backpressure rule holds:
// while a client write is pending nothing is pushed and the server is not
// read (upstream_on_read stops it), so the chain's output memory and the
// spans still to push (views into the server buffer) stay valid until the
// write completed; the server buffer starts over only once every span of it
// went through.
#include "filter/filtered.hpp"

#include <cstring>

#include "cache/cache.hpp"
#include "exchange/downstream.hpp"
#include "exchange/relay.hpp"
#include "filter/compress.hpp"
#include "filter/filter.hpp"
#include "juggler/free_list.hpp"
#include "juggler/upstream.hpp"

namespace juggler {

struct FilteredResponse {
  FilterChain chain;
  ResponseFilter* compressor = nullptr;
  ResponseFilter* store = nullptr;  // the cache's (src/cache), after the compressor: it keeps what the client gets
  BodySpan spans[MessageParser::kMaxBodySpans];  // decoded body not yet pushed
  std::uint32_t span_count = 0, span_at = 0, span_off = 0;
  bool body_done = false;  // the parser reached the end of the message
  bool chunked = false;    // our framing: chunks (else the body ends with the connection)
  // The head lines the chain adds, then the relay's (at most resp_extra).
  static constexpr std::size_t kRelayLines = sizeof(Exchange::resp_extra);
  char head[768 + kRelayLines];
  std::size_t head_len = 0;
  char size_line[20];  // "<hex>\r\n" of the chunk being written
  FilteredResponse* next_free = nullptr;
};

namespace {

// The slices a filtered write may need beside the head's: chunk size, the
// chain's output, CRLF, the last chunk.
constexpr std::uint32_t kBodySlices = FilterOut::kMax + 3;
// The head's slices at most: every header line, the added lines, the final
// CRLF, and the interim responses relayed before it.
constexpr std::uint32_t kHeadSlices = 3 + 8;
// Room kept back from the stages for the framing line.
constexpr std::string_view kFramingLine = "Transfer-Encoding: chunked\r\n";

// Idle FilteredResponses of this thread (a worker): no allocation per
// response in steady state.
thread_local FreeList<FilteredResponse, 256> t_pool;

FilteredResponse* pool_get() {
  FilteredResponse* f = t_pool.pop();
  if (!f) return new FilteredResponse();
  f->chain.clear();
  f->compressor = nullptr;
  f->store = nullptr;
  f->span_count = f->span_at = f->span_off = 0;
  f->body_done = f->chunked = false;
  f->head_len = 0;
  return f;
}

void release(FilteredResponse* f) noexcept {
  if (f->compressor) compressor_put(f->compressor);
  if (f->store) cache_stage_put(f->store);
  t_pool.push(f);
}

// The server's framing can be replaced by ours: chunked, or a length. A
// transfer coding besides chunked would stay in the decoded spans.
bool framable(const MessageParser& r) {
  for (std::uint32_t i = 0; i < r.header_count(); ++i) {
    const HeaderSpan& h = r.headers()[i];
    if (h.kind == HeaderKind::TransferEncoding && !iequals(r.header_value(h), "chunked")) return false;
  }
  return true;
}

// The chain's framing of the body (the server's is gone with collect_body):
// chunked, or until close for an HTTP/1.0 client, when a stage changes the
// length or the server sent chunks; else the server's Content-Length stands.
void take_framing(Exchange* ex, FilteredResponse* f, HeadEdit& edit) {
  const MessageParser& r = ex->resp;
  const bool ours = edit.changes_length || r.chunked();
  for (std::uint32_t i = 0; i < r.header_count(); ++i) {
    const HeaderKind k = r.headers()[i].kind;
    if (k == HeaderKind::TransferEncoding || (ours && k == HeaderKind::ContentLength)) edit.drop(static_cast<int>(i));
  }
  if (!ours) return;
  f->chunked = ex->req.http_minor() >= 1;
  edit.grow(kFramingLine.size());
  if (f->chunked) edit.add("Transfer-Encoding", "chunked");
  else ex->client_close = true;  // HTTP/1.0: the body ends with the connection
}

void hex_line(FilteredResponse& f, std::size_t n, uv_buf_t* iov) {
  char tmp[16];
  unsigned k = 0;
  do {
    tmp[k++] = "0123456789abcdef"[n & 15];
    n >>= 4;
  } while (n);
  for (unsigned i = 0; i < k; ++i) f.size_line[i] = tmp[k - 1 - i];
  f.size_line[k] = '\r';
  f.size_line[k + 1] = '\n';
  *iov = uv_buf_init(f.size_line, k + 2);
}

// Appends the chain's output (and, when `finished`, the end of the body) to
// iov[n...] in our framing; returns the new count.
unsigned frame(FilteredResponse& f, uv_buf_t* iov, unsigned n, const FilterOut& out, bool finished) {
  static constexpr char kCrlf[] = "\r\n";
  static constexpr char kLastChunk[] = "0\r\n\r\n";
  const std::size_t bytes = out.bytes();
  if (bytes && f.chunked) hex_line(f, bytes, &iov[n++]);
  for (unsigned i = 0; i < out.n; ++i) iov[n++] = out.slices[i];
  if (bytes && f.chunked) iov[n++] = uv_buf_init(const_cast<char*>(kCrlf), 2);
  if (finished && f.chunked) iov[n++] = uv_buf_init(const_cast<char*>(kLastChunk), 5);
  return n;
}

// Parses what the server buffer holds beyond parse_pos into decoded spans.
// False when the body is broken (Exchange::term says so).
bool parse_more(Exchange* ex, FilteredResponse& f) {
  f.span_count = f.span_at = f.span_off = 0;
  if (!ex->up || !ex->up->in) return true;
  const ParseEvent ev = feed_response_body(ex);
  if (ev == ParseEvent::Error) return false;
  f.span_count = ex->resp.body_span_count();
  std::memcpy(f.spans, ex->resp.body_spans(), f.span_count * sizeof(BodySpan));
  f.body_done = ev == ParseEvent::MessageComplete;
  return true;
}

// Writes iov[0, n) to the client: true when it all went out now; else the
// server waits (backpressure) until the write completed.
bool send(Exchange* ex, unsigned n) {
  uv_buf_t* iov = ex->iov.get();
  for (unsigned i = 0; i < n; ++i) ex->bytes_out += iov[i].len;
  if (ex->down->send(iov, n)) return true;
  if (ex->up && ex->up->reading) ex->up->set_reading(false);
  return false;
}

// Pushes decoded body through the chain and writes what comes out, until a
// write is pending (filtered_written goes on), the server owes more bytes
// (reading resumes) or the response is complete. iov[0, n) holds the head
// when this is the first read. Returns the exchange's next state.
State pump(Exchange* ex, unsigned n) {
  FilteredResponse& f = *ex->filters;
  uv_buf_t* iov = ex->iov.get();
  for (;;) {
    if (f.span_at == f.span_count && !f.body_done) {
      if (!parse_more(ex, f)) return State::Failed;
      if (f.span_count == 0 && !f.body_done) break;  // the server owes more
    }
    std::string_view in;
    bool last = f.body_done;
    if (f.span_at < f.span_count) {
      in = {f.spans[f.span_at].data + f.span_off, f.spans[f.span_at].len - f.span_off};
      last = last && f.span_at + 1 == f.span_count;
    }
    FilterOut out;
    std::size_t used = 0;
    const FilterStatus st = f.chain.push(in, last, out, &used);
    if (st == FilterStatus::Failed || (st == FilterStatus::Full && used == 0 && out.n == 0)) {
      log(LogLevel::Warn, "response filter failed");
      ex->term = {Who::Proxy, When::Body, false, UV_EPROTO};
      return State::Failed;
    }
    if (f.compressor) {
      ex->worker->compress_in.add(used);
      ex->worker->compress_out.add(out.bytes());
    }
    if (f.span_at < f.span_count && (f.span_off += static_cast<std::uint32_t>(used)) == f.spans[f.span_at].len) {
      ++f.span_at;
      f.span_off = 0;
    }
    const bool finished = last && st == FilterStatus::Done;
    n = frame(f, iov, n, out, finished);
    if (n == 0) {
      if (finished) return State::Done;  // close-delimited: nothing more to say
      continue;
    }
    const bool now = send(ex, n);
    n = 0;
    if (!now) return finished ? State::Finish : State::Relay;  // filtered_written goes on
    f.chain.written();
    ex->progress_ms = ex->worker->now_ms();
    if (finished) return State::Done;
  }
  // The head goes out now even when the chain holds all the body so far.
  if (n && !send(ex, n)) return State::Relay;
  read_upstream_on(ex);
  return State::Relay;
}

}  // namespace

void filters_note_request(Exchange* ex) {
  ex->filter_want &= kWantCache;  // the cache's, noted at the route (a retry notes again)
  // Ranges of a representation are left alone (RFC 9110 14: the parts of
  // an encoded body are not those of the identity one).
  if (ex->is_head || !ex->head.header("range").empty()) return;
  ex->filter_want |= negotiate_encoding(ex->head.headers, ex->route->compress);
}

void filters_begin(Exchange* ex) {
  const MessageParser& r = ex->resp;
  const Settings& st = settings(*ex->worker);
  // Nothing to filter in a bodiless answer (HEAD, 204, 304) or a part of
  // one (206). A body delimited by the server's close is relayed as it is:
  // its end comes as an EOF the zero-copy relay handles.
  if (!r.has_body() || r.status() == 206 || r.body_until_close() || !framable(r)) return;
  if (ex->iov_cap < st.header_count + kHeadSlices + kBodySlices) return;
  const std::uint8_t encoding = ex->filter_want & static_cast<std::uint8_t>(~kWantCache);
  const bool compress = encoding && compress_worth(r);
  if (!compress && !(ex->filter_want & kWantCache)) return;
  // The cache alone on a body of known length: no chain, the zero-copy
  // relay hands it the bytes as they pass (the bytes it relays are the body).
  if (!compress && r.has_content_length()) return cache_tap_begin(ex);
  FilteredResponse* f = pool_get();
  if (compress && (f->compressor = compressor_get(encoding, st))) f->chain.add(f->compressor);
  if (ex->filter_want & kWantCache) f->chain.add(f->store = cache_stage_get(ex));
  HeadEdit edit(ex->resp, f->head, sizeof f->head - FilteredResponse::kRelayLines - kFramingLine.size());
  // A stage that steps aside has not edited the head, so the zero-copy
  // relay can send it as it would have.
  if (f->chain.empty() || !f->chain.head(edit)) {
    release(f);
    return;
  }
  take_framing(ex, f, edit);
  f->head_len = edit.lines().size();
  ex->resp.collect_body(true);
  ex->filters = f;
}

std::string_view filters_head_lines(Exchange* ex, std::string_view extra) {
  FilteredResponse& f = *ex->filters;
  const std::size_t k = std::min(extra.size(), sizeof f.head - f.head_len);
  if (k) std::memcpy(f.head + f.head_len, extra.data(), k);
  return {f.head, f.head_len + k};
}

State filtered_relay(Exchange* ex, unsigned n) {
  // Bytes that came while a write is pending wait for its completion.
  if (ex->down->sending()) return State::Relay;
  return pump(ex, n);
}

State filtered_written(Exchange* ex, State s) {
  ex->progress_ms = ex->worker->now_ms();
  ex->filters->chain.written();
  if (s == State::Finish) return State::Done;
  return pump(ex, 0);
}

void filters_release(Exchange* ex) noexcept {
  release(ex->filters);
  ex->filters = nullptr;
}

}  // namespace juggler
