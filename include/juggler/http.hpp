// HTTP/1.1 message parsing on top of llhttp, for both directions.
//
// A MessageParser is fed the bytes of a connection's read buffer. It stops
// (pauses llhttp) twice per message: once the head is complete and once the
// message is complete, so the caller can route, connect and forward between
// the two. The head is described by pointers into the caller's buffer, which
// must not move until the message is complete; nothing is copied.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "juggler/route.hpp"

namespace juggler {

// The headers the proxy acts on, classified once while parsing.
enum class HeaderKind : std::uint8_t {
  Other,
  Host,
  ContentLength,
  TransferEncoding,
  Connection,        // hop-by-hop, and names more hop-by-hop headers
  HopByHop,          // Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade
  XForwardedFor,
  XForwardedProto,
  XForwardedHost,
  Expect,
};

struct HeaderSpan {
  const char* line;      // first byte of the header line (its name)
  std::uint32_t name_len;
  std::uint32_t value_off;   // value starts at line + value_off
  std::uint32_t value_len;
  HeaderKind kind;
  bool drop;             // not forwarded (hop-by-hop, or replaced by the proxy)
};

enum class ParseEvent : std::uint8_t {
  NeedMore,         // everything given was consumed; feed more
  HeadComplete,     // head() is valid; body bytes (if any) start at the returned position
  MessageComplete,  // the message ended at the returned position
  Error,            // error_status() says which answer to give
  BodyFull,         // collecting body spans: the span array is full; take them, feed the rest
};

// Body bytes of a message as a view into the fed data, framing removed.
struct BodySpan {
  const char* data;
  std::uint32_t len;
};

class MessageParser {
 public:
  // `headers` is caller-owned storage for up to `max_headers` entries; it must
  // outlive the parser's use of it.
  void init(llhttp_type_t type, HeaderSpan* headers, std::uint32_t max_headers) noexcept;

  // Prepare for the next message on the same connection.
  void reset() noexcept;

  // Opt-in, before feeding the body: every feed() then also records the body
  // bytes it parsed, chunk framing removed, as views into the data it was
  // given (valid as long as that data is). At most kMaxBodySpans per call: a
  // call that fills the array stops there with BodyFull (*consumed says how
  // far it got) and the caller feeds the rest once it took the spans. Filters
  // and other protocols need the body without HTTP/1 framing; the relay of an
  // HTTP/1 response as it is never turns this on.
  static constexpr std::uint32_t kMaxBodySpans = 16;
  void collect_body(bool on) noexcept;
  // The spans recorded by the last feed() (reset at the start of each).
  const BodySpan* body_spans() const noexcept { return spans_; }
  std::uint32_t body_span_count() const noexcept { return span_count_; }

  // Opt-in per message, after the head (reset() ends it): the chunked trailer
  // section's fields are copied into [buf, buf+cap) as "name\0value\0" each
  // (the value without OWS around it), for a protocol that sends trailers as
  // fields (HTTP/2); a field that does not fit whole is left out. The bytes
  // stay in the body as well: the relay to HTTP/1 never turns this on.
  void collect_trailers(char* buf, std::uint32_t cap) noexcept {
    trailer_buf_ = buf;
    trailer_cap_ = cap;
    trailer_len_ = 0;
  }
  std::string_view trailers() const noexcept { return {trailer_buf_, trailer_len_}; }

  // Parse [data, data+len). `*consumed` is how many bytes belong to what was
  // reported: for HeadComplete, the head's bytes; for MessageComplete, up to the
  // end of the message; for NeedMore, all of them.
  ParseEvent feed(const char* data, std::size_t len, std::size_t* consumed) noexcept;

  // Tell the parser the peer closed. Returns MessageComplete when the message
  // was delimited by the close (a response without length), Error otherwise.
  ParseEvent finish() noexcept;

  // For responses: the request was HEAD, so the response has no body. Call
  // before feeding the response.
  void expect_no_body() noexcept { no_body_ = true; }

  // --- the head (valid from HeadComplete until reset()) ---
  const char* head_begin() const noexcept { return head_begin_; }
  std::size_t head_len() const noexcept { return static_cast<std::size_t>(head_end_ - head_begin_); }
  // The request line or status line including its CRLF.
  std::string_view first_line() const noexcept;
  std::string_view url() const noexcept { return {url_, url_len_}; }
  HeaderSpan* headers() const noexcept { return headers_; }
  std::uint32_t header_count() const noexcept { return count_; }
  std::string_view header_name(const HeaderSpan& h) const noexcept { return {h.line, h.name_len}; }
  std::string_view header_value(const HeaderSpan& h) const noexcept { return {h.line + h.value_off, h.value_len}; }
  // The whole line of header i, up to and including its CRLF (and any folded lines).
  std::string_view header_line(std::uint32_t i) const noexcept;

  std::uint8_t method() const noexcept { return parser_.method; }
  int status() const noexcept { return parser_.status_code; }
  int http_minor() const noexcept { return parser_.http_minor; }
  int http_major() const noexcept { return parser_.http_major; }
  bool keep_alive() const noexcept { return keep_alive_; }
  // Framing as the head declared it, fixed at the end of the head: llhttp's
  // live flags change while it parses chunked trailers, which may carry any
  // field (even Content-Length) and are relayed as body bytes.
  bool chunked() const noexcept { return chunked_; }
  bool has_content_length() const noexcept { return has_content_length_; }
  std::uint64_t content_length() const noexcept { return content_length_; }
  // Chunked requests: the body size announced by the chunks parsed so far
  // (the sizes, not the framing), for limit.body_bytes while it streams.
  std::uint64_t chunked_body_bytes() const noexcept { return chunked_total_; }
  // A body follows the head (chunked, a non-zero length, or until close).
  bool has_body() const noexcept { return has_body_; }
  bool body_until_close() const noexcept { return until_close_; }
  bool expect_continue() const noexcept { return expect_continue_; }
  bool connection_close() const noexcept { return connection_close_; }
  // The request asks to switch protocols (Connection: upgrade and an Upgrade
  // header), after the head.
  bool upgrade_request() const noexcept {
    return (parser_.flags & F_UPGRADE) != 0 && (parser_.flags & F_CONNECTION_UPGRADE) != 0;
  }
  // Headers were dropped: the head cannot be forwarded as its raw bytes.
  bool has_dropped() const noexcept { return dropped_; }

  // Error answer: 400, 413 (body too large is the caller's), 431, 501...
  int error_status() const noexcept { return error_status_; }
  const char* error_reason() const noexcept { return error_reason_; }

  std::uint64_t max_head_bytes = 16384;

 private:
  static int on_method(llhttp_t*, const char*, std::size_t);
  static int on_url(llhttp_t*, const char*, std::size_t);
  static int on_status(llhttp_t*, const char*, std::size_t);
  static int on_header_field(llhttp_t*, const char*, std::size_t);
  static int on_header_field_complete(llhttp_t*);
  static int on_header_value(llhttp_t*, const char*, std::size_t);
  static int on_header_value_complete(llhttp_t*);
  static int on_headers_complete(llhttp_t*);
  static int on_message_complete(llhttp_t*);
  static int on_body(llhttp_t*, const char*, std::size_t);
  static const llhttp_settings_t kSettings;
  static const llhttp_settings_t kSettingsBody;  // kSettings + on_body (collect_body)

  int fail(int status, const char* reason) noexcept;
  bool lines_clean() const noexcept;
  bool check_chunks(const char* p, std::size_t n) noexcept;
  bool chunk_size_byte(char c) noexcept;
  bool chunk_trailer_byte(char c) noexcept;
  void trailer_append(const char* p, std::size_t n) noexcept;
  void trailer_field_end() noexcept;
  bool validating_chunks() const noexcept { return parser_.type == HTTP_REQUEST && head_end_ && (parser_.flags & F_CHUNKED); }

  enum class ChunkState : std::uint8_t {
    Size, Ext, SizeLf, Data, DataCr, DataLf, TrailerStart, TrailerName, Trailer, TrailerLf, FinalLf, Done
  };
  int classify_header() noexcept;
  int check_head() noexcept;

  llhttp_t parser_{};
  HeaderSpan* headers_ = nullptr;
  std::uint32_t max_headers_ = 0;
  std::uint32_t count_ = 0;
  const char* head_begin_ = nullptr;
  const char* head_end_ = nullptr;
  const char* url_ = nullptr;
  std::uint32_t url_len_ = 0;
  const char* field_end_ = nullptr;  // end of the current header name
  const char* value_begin_ = nullptr;
  const char* value_end_ = nullptr;
  std::uint64_t content_length_ = 0;
  std::uint8_t host_count_ = 0;
  bool in_field_ = false;
  bool no_body_ = false;
  bool has_body_ = false;
  bool until_close_ = false;
  bool expect_continue_ = false;
  bool connection_close_ = false;
  bool dropped_ = false;
  bool head_done_ = false;
  bool chunked_ = false;
  bool keep_alive_ = false;
  bool has_content_length_ = false;
  bool te_chunked_ = false;  // a Transfer-Encoding token says chunked
  bool value_pieces_ = false;  // the current value arrived in more than one piece
  bool method_seen_ = false;
  ChunkState chunk_ = ChunkState::Size;
  std::uint8_t chunk_digits_ = 0;
  std::uint32_t chunk_line_ = 0;
  std::uint64_t chunk_left_ = 0;
  std::uint64_t chunked_total_ = 0;
  int error_status_ = 0;
  const char* error_reason_ = nullptr;
  BodySpan spans_[kMaxBodySpans];
  std::uint32_t span_count_ = 0;
  bool body_full_ = false;  // on_body paused llhttp: the span array is full
  char* trailer_buf_ = nullptr;  // collect_trailers
  std::uint32_t trailer_cap_ = 0;
  std::uint32_t trailer_len_ = 0;
  std::uint32_t trailer_start_ = 0;  // where the field being parsed began
  bool trailer_in_field_ = false;
  bool trailer_skip_ = false;        // the field being parsed did not fit
};

// Optional whitespace (RFC 9110 5.6.3).
constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

constexpr std::string_view trim_ows(std::string_view v) noexcept {
  while (!v.empty() && is_ows(v.front())) v.remove_prefix(1);
  while (!v.empty() && is_ows(v.back())) v.remove_suffix(1);
  return v;
}

// Calls f(token) for each element of a comma-separated list value (RFC 9110
// 5.6.1), whitespace around it removed and empty elements skipped.
template <class F>
void for_each_token(std::string_view v, F&& f) {
  std::size_t i = 0;
  while (i < v.size()) {
    while (i < v.size() && (is_ows(v[i]) || v[i] == ',')) ++i;
    std::size_t b = i;
    while (i < v.size() && v[i] != ',') ++i;
    std::size_t e = i;
    while (e > b && is_ows(v[e - 1])) --e;
    if (e > b) f(v.substr(b, e - b));
  }
}

// Maps llhttp's method numbers onto the methods a route can name.
Method route_method(std::uint8_t llhttp_method) noexcept;

// False when the path has a dot-segment ("." or "..", also written %2e): the
// route would be chosen for one path and the server would resolve another
// (`/public/../admin` matches `/public/*`). Such requests are refused (400);
// clients normalise before sending, so none of theirs is lost.
bool path_is_normal(std::string_view path) noexcept;

// What a request is for, from its target and Host (RFC 9112 3.2): the one
// mapping of routing, of the head sent to the server, and of HTTP/2's :path
// and :authority. Views into `target` and `host`.
struct RequestTarget {
  std::string_view authority;  // host[:port]: the absolute-form's, else `host`
  // The target in origin form, as the server gets it: the path and query
  // ("/x?q"), or "*". Only an absolute-form without a path leaves it empty or
  // starting with '?': the server is then sent "/" before it.
  std::string_view origin;
  // Absolute-form (`GET http://a.example/x`): its authority replaces the
  // client's Host, which a server MUST ignore then (RFC 9112 3.2.2).
  bool absolute = false;
};

// Maps `target` (a request-target as received; llhttp checked its bytes and
// that it is origin-form, "*" or scheme://...) and the Host value `host`.
// Returns nullptr, or why the target is refused (the answer is 400): an
// absolute-form with a scheme other than http or https, userinfo, or an
// authority that is not host[:port] (at most kMaxAuthority bytes).
constexpr std::size_t kMaxAuthority = 255;
// The rest of map_target: neither origin-form nor "*".
const char* map_absolute_target(std::string_view target, RequestTarget& out) noexcept;
inline const char* map_target(std::string_view target, std::string_view host, RequestTarget& out) noexcept {
  out = RequestTarget{host, target, false};
  // Origin-form and "*", nearly every request: inline, a test or two.
  if (target.empty() || target[0] == '/' || target == "*") return nullptr;
  return map_absolute_target(target, out);
}

// Fill `head` (method, target, path, query, host) from a parsed request head.
// `headers` is storage for the Header views routes may inspect.
void describe_request(const MessageParser& p, Header* headers, RequestHead& head) noexcept;

// The request head to forward, as iov slices: the original bytes with dropped
// headers (hop-by-hop, client-sent X-Forwarded-*) cut out, then the lines we
// add, written into `scratch`: X-Forwarded-For (the client's list with
// `client_ip` appended), X-Forwarded-Proto: `proto`, X-Forwarded-Host, Via and
// the final CRLF. An absolute-form target goes in origin form, its authority
// as Host (the client's Host lines cut; map_target). `iov` needs room for
// header_count() + 4 entries. Returns the
// iov count; *scratch_len is what was written to scratch. With `upgrade` (the
// Upgrade value of a switch the proxy will tunnel), `Connection: Upgrade` and
// `Upgrade: <upgrade>` are added.
unsigned edit_request_head(const MessageParser& p, std::string_view client_ip, std::string_view proto,
                           char* scratch, std::size_t scratch_cap, std::size_t* scratch_len, uv_buf_t* iov,
                           std::string_view upgrade = {});

// The response head for the client. Returns 0 when the raw bytes can be sent
// as they are (nothing dropped, `extra` and `constant` empty); else fills `iov`
// with the kept lines, `extra` (whole lines such as "Connection: close\r\n",
// or empty), `constant` (lines that outlive every response, e.g. the instance
// header: a slice of their own, never copied) and the final CRLF, and returns
// the count (at most header_count() + 4).
unsigned edit_response_head(const MessageParser& p, std::string_view extra, uv_buf_t* iov,
                            std::string_view constant = {});

// Canned answers: constant bytes, never formatted per request.
// `close` selects the variant with `Connection: close`.
std::string_view canned_reply(int status, bool close) noexcept;

// The reason phrase of a status code ("Not Found"); "Unknown" when unlisted.
std::string_view status_reason(int status) noexcept;

}  // namespace juggler
