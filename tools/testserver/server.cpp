#include "server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <llhttp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http_util.hpp"

namespace juggler::testserver {

namespace {

// Response bytes handed to libuv but not yet written, per connection. Streams produce the
// next piece only below this, and no further pipelined request is parsed above it, so a
// client that does not read costs at most about this much memory.
constexpr std::size_t kHighWater = 1 << 20;
// Unparsed input kept while a response is in progress; reading pauses above it.
constexpr std::size_t kMaxBufferedInput = 1 << 20;
constexpr std::size_t kMaxHead = 64u << 10;            // request line + headers
constexpr std::uint64_t kMaxEchoBody = 1ull << 30;    // /echo buffers the whole body
constexpr std::uint64_t kMaxBytes = 1ull << 50;       // /bytes?n=
constexpr std::uint64_t kMaxDelayMs = 24ull * 3600 * 1000;
constexpr std::uint64_t kMaxInterims = 10000;  // /interim?n=
constexpr std::uint64_t kNoPause = UINT64_MAX;
constexpr std::uint64_t kLingerMs = 2000;  // wait for the peer's FIN after our own
constexpr std::size_t kReadBuffer = 256u << 10;
constexpr int kBacklog = 4096;

enum class Route : std::uint8_t { Ping, Echo, Headers, Delay, Status, Interim, Bytes, Close, Reset, Hang, Static };

Route classify(std::string_view path) {
  if (path == "/ping") return Route::Ping;
  if (path == "/echo") return Route::Echo;
  if (path == "/headers") return Route::Headers;
  if (path == "/delay") return Route::Delay;
  if (path.starts_with("/status/")) return Route::Status;
  if (path == "/interim") return Route::Interim;
  if (path == "/bytes") return Route::Bytes;
  if (path == "/close") return Route::Close;
  if (path == "/reset") return Route::Reset;
  if (path == "/hang") return Route::Hang;
  return Route::Static;
}

// One parsed request. Lives in its Conn and is reset when the next message begins.
struct Request {
  std::string method;
  std::string target;
  std::string_view path;   // into target, without the query
  std::string_view query;  // into target, after '?'
  int http_major = 1;
  int http_minor = 1;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // kept for /echo only
  Route route = Route::Static;
  bool head = false;        // HEAD: headers only
  bool keep_alive = true;
  bool upgrade = false;

  const std::string* header(std::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (iequals(key, name)) return &value;
    }
    return nullptr;
  }
};

// A response body produced piece by piece as the socket drains.
struct BodyStream {
  enum class Kind : std::uint8_t { None, Pattern, File };
  Kind kind = Kind::None;
  bool chunked = false;
  std::uint64_t offset = 0;
  std::uint64_t remaining = 0;
  int fd = -1;
  std::uint64_t pause_at = kNoPause;  // /bytes?pause=K: body offset where the stream stops for a while
  std::uint64_t pause_ms = 0;
  std::uint64_t pause_every = 0;      // K: the next pause comes K bytes later...
  std::uint64_t pauses_left = 0;      // ...while pauses are left (pauses=P)
  std::string trailer;                // /bytes?chunked=1&trailer=...: trailer lines after the last chunk
};

class Conn;

// One uv_write and the memory its buffers point into, freed in its callback.
struct WriteReq {
  uv_write_t req;
  Conn* conn = nullptr;
  std::size_t bytes = 0;
  std::string head;                // owned bytes, written first
  std::string body;                // owned bytes (an /echo body, moved in)
  std::unique_ptr<char[]> block;   // a file piece
};

class Server;

// A client connection. Requests are parsed one at a time: llhttp pauses at the end of each
// message, the response is produced (possibly asynchronously), and only then is the rest of
// the input parsed, so pipelined answers stay in order and a 100 Continue never lands in the
// middle of an earlier response. Deleted only once its tcp and timer handles have closed.
class Conn {
 public:
  Conn(Server& server, std::uint64_t serial);

  // Returns false if the connection could not be set up (it is then closing itself).
  bool start(uv_stream_t* listener);
  // Closes both handles (cancelling pending writes); `reset` sends a TCP RST.
  void close(bool reset = false);

  Conn* prev = nullptr;
  Conn* next = nullptr;

 private:
  static void on_alloc(uv_handle_t* handle, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_shutdown(uv_shutdown_t* req, int status);
  static void on_timer(uv_timer_t* timer);
  static void on_closed(uv_handle_t* handle);

  static int on_message_begin(llhttp_t* parser);
  static int on_url(llhttp_t* parser, const char* at, std::size_t len);
  static int on_header_field(llhttp_t* parser, const char* at, std::size_t len);
  static int on_header_field_complete(llhttp_t* parser);
  static int on_header_value(llhttp_t* parser, const char* at, std::size_t len);
  static int on_headers_complete(llhttp_t* parser);
  static int on_body(llhttp_t* parser, const char* at, std::size_t len);
  static int on_message_complete(llhttp_t* parser);
  static const llhttp_settings_t& parser_settings();

  void on_input(const char* data, std::size_t len);
  void on_eof();
  std::size_t parse(const char* data, std::size_t len);
  void parse_buffered();
  void check_eof();
  bool can_parse() const {
    return !busy_ && !draining_ && !closing_ && queued_ < kHighWater;
  }
  int count_head_bytes(std::size_t len);

  void dispatch();
  void serve_echo();
  void serve_headers();
  void serve_delay();
  void serve_status();
  void serve_interim();
  void serve_bytes();
  void serve_static();
  void serve_reset();

  std::string response_head(int status, std::string_view content_type, std::uint64_t content_length,
                            std::string_view extra = {}, bool chunked = false) const;
  void send_simple(int status, std::string_view body, std::string_view extra = {},
                   std::string_view content_type = "text/plain; charset=utf-8");
  void fail(int status);
  void write_owned(std::string head, std::string body = {});
  void submit(std::unique_ptr<WriteReq> write, const uv_buf_t* bufs, unsigned count);
  void after_write();
  void pump();
  void end_stream();
  void finish_response();
  void begin_drain();
  void finish_drain();
  void log(std::string_view status) const;

  Server& server_;
  const std::uint64_t serial_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};  // /delay, then the linger after a closing response
  uv_shutdown_t shutdown_req_{};
  int open_handles_ = 0;

  llhttp_t parser_{};
  Request req_;
  bool field_complete_ = true;  // the next header-field bytes start a new header
  bool headers_done_ = false;   // later fields are trailers, ignored
  std::size_t head_bytes_ = 0;
  int error_status_ = 0;        // set by a callback that fails the parse
  std::uint64_t delay_ms_ = 0;
  bool predelayed_ = false;        // --delay-ms: this request waited already
  bool predelay_waiting_ = false;  // --delay-ms: the timer runs for it
  bool pausing_ = false;           // /bytes?pause=K: the timer runs, the body waits
  std::uint64_t dispatched_ = 0;   // requests dispatched on this connection (--drop-after)

  std::string input_;  // unparsed bytes, while a response is in progress
  BodyStream stream_;
  std::size_t queued_ = 0;  // bytes in unfinished writes
  int writes_ = 0;          // unfinished writes

  bool reading_ = false;
  bool busy_ = false;        // a request was dispatched and its response is not fully queued
  bool in_parse_ = false;    // inside parse(): nothing may re-enter it or modify input_
  bool hanging_ = false;
  bool reset_pending_ = false;
  bool draining_ = false;    // no more requests: close once the writes are done
  bool shutdown_sent_ = false;
  bool peer_eof_ = false;
  bool closing_ = false;
};

class Server {
 public:
  explicit Server(const Options& options) : options_(options), read_buffer_(new char[kReadBuffer]) {}

  int run();

  const Options& options() const { return options_; }
  int port() const { return port_; }
  char* read_buffer() { return read_buffer_.get(); }
  void add(Conn* conn);
  void remove(Conn* conn);

 private:
  static void on_connection(uv_stream_t* listener, int status);
  static void on_signal(uv_signal_t* handle, int signum);
  void stop();

  Options options_;
  std::unique_ptr<char[]> read_buffer_;  // shared: each read is consumed before the next
  uv_loop_t* loop_ = nullptr;
  uv_tcp_t listener_{};
  uv_signal_t sigint_{};
  uv_signal_t sigterm_{};
  int port_ = 0;
  std::uint64_t next_serial_ = 1;
  Conn* conns_ = nullptr;
  bool stopping_ = false;
};

// ------------------------------------------------------------------ connection setup

Conn::Conn(Server& server, std::uint64_t serial) : server_(server), serial_(serial) {
  llhttp_init(&parser_, HTTP_REQUEST, &parser_settings());
  parser_.data = this;
}

bool Conn::start(uv_stream_t* listener) {
  uv_loop_t* loop = listener->loop;
  uv_tcp_init(loop, &tcp_);
  uv_timer_init(loop, &timer_);
  tcp_.data = this;
  timer_.data = this;
  open_handles_ = 2;
  server_.add(this);
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0 ||
      uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read) != 0) {
    close();
    return false;
  }
  uv_tcp_nodelay(&tcp_, 1);
  reading_ = true;
  return true;
}

void Conn::close(bool reset) {
  if (closing_) return;
  closing_ = true;
  end_stream();
  server_.remove(this);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_closed);
  if (!reset || uv_tcp_close_reset(&tcp_, on_closed) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_closed);
  }
}

void Conn::on_closed(uv_handle_t* handle) {
  auto* conn = static_cast<Conn*>(handle->data);
  if (--conn->open_handles_ == 0) delete conn;
}

// ------------------------------------------------------------------ reading and parsing

void Conn::on_alloc(uv_handle_t* handle, std::size_t, uv_buf_t* buf) {
  auto* conn = static_cast<Conn*>(handle->data);
  *buf = uv_buf_init(conn->server_.read_buffer(), kReadBuffer);
}

void Conn::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* conn = static_cast<Conn*>(stream->data);
  if (conn->closing_) return;
  if (nread > 0) {
    conn->on_input(buf->base, static_cast<std::size_t>(nread));
  } else if (nread == UV_EOF) {
    conn->on_eof();
  } else if (nread < 0) {
    conn->close();
  }
}

void Conn::on_input(const char* data, std::size_t len) {
  if (draining_) return;  // after a closing response: read only to see the peer's FIN
  if (input_.empty() && can_parse()) {
    const std::size_t used = parse(data, len);
    if (closing_ || draining_) return;
    input_.append(data + used, len - used);
  } else {
    input_.append(data, len);
  }
  if (input_.size() > kMaxBufferedInput && reading_) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    reading_ = false;
  }
}

void Conn::on_eof() {
  peer_eof_ = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
  if (hanging_ || (draining_ && writes_ == 0)) {
    close();
    return;
  }
  if (!draining_) check_eof();
}

// Feeds bytes to llhttp, answering each complete request before parsing on. Returns how
// many bytes were consumed; it stops early when a response is in progress or the write
// queue is full, and the caller keeps the rest in input_.
std::size_t Conn::parse(const char* data, std::size_t len) {
  in_parse_ = true;
  std::size_t off = 0;
  while (off < len && can_parse()) {
    const llhttp_errno_t err = llhttp_execute(&parser_, data + off, len - off);
    if (err == HPE_OK) {
      off = len;
    } else if (err == HPE_PAUSED) {
      off = static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - data);
      llhttp_resume(&parser_);
      dispatch();
    } else if (err == HPE_PAUSED_UPGRADE) {
      // Only reached if an upgrade request's answer did not close; never switch protocols.
      begin_drain();
    } else {
      fail(error_status_ != 0 ? error_status_ : 400);
      off = len;
    }
  }
  in_parse_ = false;
  return off;
}

void Conn::parse_buffered() {
  if (!input_.empty() && can_parse()) {
    const std::size_t used = parse(input_.data(), input_.size());
    if (closing_) return;
    input_.erase(0, used);
  }
  if (draining_) input_.clear();
  if (!reading_ && !peer_eof_ && !draining_ && input_.size() <= kMaxBufferedInput / 2) {
    reading_ = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read) == 0;
  }
  check_eof();
}

// After the peer's FIN: once everything it sent has been answered, close.
void Conn::check_eof() {
  if (peer_eof_ && !busy_ && !draining_ && !closing_ && (input_.empty() || can_parse())) {
    begin_drain();
  }
}

const llhttp_settings_t& Conn::parser_settings() {
  static const llhttp_settings_t settings = [] {
    llhttp_settings_t s;
    llhttp_settings_init(&s);
    s.on_message_begin = on_message_begin;
    s.on_url = on_url;
    s.on_header_field = on_header_field;
    s.on_header_field_complete = on_header_field_complete;
    s.on_header_value = on_header_value;
    s.on_headers_complete = on_headers_complete;
    s.on_body = on_body;
    s.on_message_complete = on_message_complete;
    return s;
  }();
  return settings;
}

int Conn::on_message_begin(llhttp_t* parser) {
  auto* conn = static_cast<Conn*>(parser->data);
  Request& req = conn->req_;
  req.method.clear();
  req.target.clear();
  req.path = {};
  req.query = {};
  req.headers.clear();
  req.body.clear();
  req.route = Route::Static;
  req.head = false;
  req.keep_alive = true;
  req.upgrade = false;
  conn->field_complete_ = true;
  conn->headers_done_ = false;
  conn->head_bytes_ = 0;
  conn->error_status_ = 0;
  return 0;
}

int Conn::count_head_bytes(std::size_t len) {
  head_bytes_ += len;
  if (head_bytes_ <= kMaxHead) return 0;
  error_status_ = req_.headers.empty() ? 414 : 431;
  return -1;
}

int Conn::on_url(llhttp_t* parser, const char* at, std::size_t len) {
  auto* conn = static_cast<Conn*>(parser->data);
  conn->req_.target.append(at, len);
  return conn->count_head_bytes(len);
}

int Conn::on_header_field(llhttp_t* parser, const char* at, std::size_t len) {
  auto* conn = static_cast<Conn*>(parser->data);
  if (conn->headers_done_) return 0;
  if (conn->field_complete_) {
    conn->req_.headers.emplace_back();
    conn->field_complete_ = false;
  }
  conn->req_.headers.back().first.append(at, len);
  return conn->count_head_bytes(len);
}

int Conn::on_header_field_complete(llhttp_t* parser) {
  static_cast<Conn*>(parser->data)->field_complete_ = true;
  return 0;
}

int Conn::on_header_value(llhttp_t* parser, const char* at, std::size_t len) {
  auto* conn = static_cast<Conn*>(parser->data);
  if (conn->headers_done_ || conn->req_.headers.empty()) return 0;
  conn->req_.headers.back().second.append(at, len);
  return conn->count_head_bytes(len);
}

int Conn::on_headers_complete(llhttp_t* parser) {
  auto* conn = static_cast<Conn*>(parser->data);
  Request& req = conn->req_;
  conn->headers_done_ = true;
  req.method = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(parser)));
  req.http_major = llhttp_get_http_major(parser);
  req.http_minor = llhttp_get_http_minor(parser);
  req.head = req.method == "HEAD";
  req.upgrade = llhttp_get_upgrade(parser) != 0;

  std::string_view target = req.target;
  if (target.starts_with("http://") || target.starts_with("https://")) {
    // absolute-form: route on the path part
    const auto authority = target.find("//") + 2;
    const auto slash = target.find('/', authority);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  const auto question = target.find('?');
  req.path = target.substr(0, question);
  req.query = question == std::string_view::npos ? std::string_view{} : target.substr(question + 1);
  req.route = classify(req.path);

  const bool chunked = (parser->flags & F_CHUNKED) != 0;
  const bool has_body = chunked || parser->content_length > 0;
  if (req.route == Route::Echo && !chunked) {
    if (parser->content_length > kMaxEchoBody) {
      conn->error_status_ = 413;
      return -1;
    }
    // A client may announce more than it sends: reserve at most 256 MB up front.
    req.body.reserve(std::min<std::uint64_t>(parser->content_length, 256ull << 20));
  }
  const std::string* expect = req.header("Expect");
  if (has_body && expect != nullptr && iequals(*expect, "100-continue") &&
      (req.http_major > 1 || req.http_minor >= 1)) {
    conn->write_owned(conn->response_head(100, {}, 0));  // with X-Server and X-Conn, like every response
  }
  return 0;
}

int Conn::on_body(llhttp_t* parser, const char* at, std::size_t len) {
  auto* conn = static_cast<Conn*>(parser->data);
  Request& req = conn->req_;
  if (req.route != Route::Echo) return 0;
  if (req.body.size() + len > kMaxEchoBody) {
    conn->error_status_ = 413;
    return -1;
  }
  req.body.append(at, len);
  return 0;
}

int Conn::on_message_complete(llhttp_t* parser) {
  auto* conn = static_cast<Conn*>(parser->data);
  conn->req_.keep_alive = llhttp_should_keep_alive(parser) != 0 && !conn->req_.upgrade;
  return HPE_PAUSED;
}

// ------------------------------------------------------------------ endpoints

void Conn::dispatch() {
  busy_ = true;
  if (server_.options().drop_after >= 0 && !predelayed_ &&
      dispatched_ >= static_cast<std::uint64_t>(server_.options().drop_after)) {
    // --drop-after N: a kept-alive connection the server gives up on just as the next
    // request arrives. The request was read; the close is a FIN, no answer.
    log("drop");
    close();
    return;
  }
  if (server_.options().delay_ms > 0 && !predelayed_) {
    predelayed_ = predelay_waiting_ = true;
    uv_timer_start(&timer_, on_timer, server_.options().delay_ms, 0);
    return;
  }
  predelayed_ = false;
  ++dispatched_;
  if (server_.options().reset_all) {
    serve_reset();
    return;
  }
  switch (req_.route) {
    case Route::Ping: send_simple(200, "pong\n"); break;
    case Route::Echo: serve_echo(); break;
    case Route::Headers: serve_headers(); break;
    case Route::Delay: serve_delay(); break;
    case Route::Status: serve_status(); break;
    case Route::Interim: serve_interim(); break;
    case Route::Bytes: serve_bytes(); break;
    case Route::Close:
      req_.keep_alive = false;
      send_simple(200, "closing\n");
      break;
    case Route::Reset: serve_reset(); break;
    case Route::Hang:
      log("hang");
      hanging_ = true;  // busy_ stays set: nothing after this request is answered
      break;
    case Route::Static: serve_static(); break;
  }
}

void Conn::serve_echo() {
  const std::string* type = req_.header("Content-Type");
  std::string extra = "X-Echo-Method: " + req_.method + "\r\nX-Echo-Target: " + req_.target +
                      "\r\nX-Echo-Body-Length: " + std::to_string(req_.body.size()) + "\r\n";
  std::string head = response_head(200, type != nullptr ? std::string_view(*type) : "application/octet-stream",
                                   req_.body.size(), extra);
  log("200");
  if (req_.head) {
    write_owned(std::move(head));
  } else {
    write_owned(std::move(head), std::move(req_.body));
  }
  req_.body = std::string();  // releases the capacity too
  finish_response();
}

namespace {

// Every `header=NAME:VALUE` (or `key`=) of the query (percent-decoded) as
// head lines into `out`; false when one is malformed.
bool header_params(std::string_view query, std::string& out, std::string_view key = "header=") {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    if (pair.starts_with(key)) {
      const auto decoded = percent_decode(pair.substr(key.size()));
      const std::size_t colon = decoded ? decoded->find(':') : std::string::npos;
      if (colon == std::string::npos || colon == 0 || decoded->find_first_of("\r\n") != std::string::npos) return false;
      out += decoded->substr(0, colon) + ": " + decoded->substr(colon + 1) + "\r\n";
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return true;
}

}  // namespace

void Conn::serve_headers() {
  std::string extra;
  if (!header_params(req_.query, extra)) {
    send_simple(400, "usage: /headers[?header=NAME:VALUE...]\n");
    return;
  }
  std::string body = req_.method + " " + req_.target + " HTTP/" + std::to_string(req_.http_major) + "." +
                     std::to_string(req_.http_minor) + "\n";
  for (const auto& [name, value] : req_.headers) {
    body += name;
    body += ": ";
    body += value;
    body += '\n';
  }
  send_simple(200, body, extra);
}

void Conn::serve_delay() {
  const auto value = query_param(req_.query, "ms");
  const auto ms = value ? parse_uint(*value, kMaxDelayMs) : std::nullopt;
  if (!ms) {
    send_simple(400, "usage: /delay?ms=N (0 <= N <= 86400000)\n");
    return;
  }
  delay_ms_ = *ms;
  log("wait");  // on arrival: tests can see a request is in progress (the answer logs 200)
  uv_timer_start(&timer_, on_timer, *ms, 0);
}

void Conn::serve_status() {
  const auto code = parse_uint(req_.path.substr(std::string_view("/status/").size()), 999);
  if (!code || *code <= 100 || *code >= 600) {
    send_simple(400, "usage: /status/N (100 < N < 600)\n");
    return;
  }
  const int status = static_cast<int>(*code);
  // A 1xx answer is interim for the client; what follows would be misread, so close.
  if (status < 200) req_.keep_alive = false;
  std::string body = std::to_string(status) + " " + std::string(reason_phrase(status)) + "\n";
  send_simple(status, body);
}

// /interim?n=N[&code=C]: N interim responses of status C (default 100), then 200. Writes
// them all at once, as one burst. A 101 carries Upgrade headers though nobody asked for
// an upgrade: a broken server, which the balancer must not relay.
void Conn::serve_interim() {
  const auto n_param = query_param(req_.query, "n");
  const auto n = n_param ? parse_uint(*n_param, kMaxInterims) : std::nullopt;
  const auto code_param = query_param(req_.query, "code");
  const auto code = code_param ? parse_uint(*code_param, 199) : std::optional<std::uint64_t>(100);
  if (!n || !code || *code < 100) {
    send_simple(400, "usage: /interim?n=N[&code=C] (N <= 10000, 100 <= C <= 199)\n");
    return;
  }
  const int status = static_cast<int>(*code);
  const std::string_view extra = status == 101 ? "Connection: Upgrade\r\nUpgrade: testserver\r\n" : "";
  const std::string one = response_head(status, {}, 0, extra);
  const std::string body = "interim " + std::to_string(*n) + "\n";
  std::string out;
  out.reserve(one.size() * *n + 256 + body.size());
  for (std::uint64_t i = 0; i < *n; ++i) out += one;
  out += response_head(200, "text/plain; charset=utf-8", body.size());
  if (!req_.head) out += body;
  log("200");
  write_owned(std::move(out));
  finish_response();
}

void Conn::serve_bytes() {
  const auto n_param = query_param(req_.query, "n");
  const auto n = n_param ? parse_uint(*n_param, kMaxBytes) : std::nullopt;
  if (!n) {
    send_simple(400, "usage: /bytes?n=N[&chunked=1][&cut=K][&pause=K&pause_ms=M&pauses=P]\n");
    return;
  }
  // HTTP/1.0 has no chunked encoding; such a client gets Content-Length.
  const bool chunked = query_param(req_.query, "chunked") == std::string_view("1") &&
                       (req_.http_major > 1 || req_.http_minor >= 1);
  // cut=K: announce N bytes, send K < N, then close (a server dying mid-body).
  const auto cut_param = query_param(req_.query, "cut");
  const std::uint64_t cut = cut_param ? parse_uint(*cut_param, kMaxBytes).value_or(*n) : *n;
  // pause=K&pause_ms=M: after K body bytes, nothing for M ms (default 1000), then the rest.
  // pauses=P: P pauses, K bytes apart (default 1).
  std::uint64_t pause_at = kNoPause;
  std::uint64_t pause_ms = 1000;
  std::uint64_t pauses = 1;
  bool bad = false;
  auto param = [&](std::string_view key, std::uint64_t max, std::uint64_t& out) {
    if (const auto text = query_param(req_.query, key)) {
      const auto value = parse_uint(*text, max);
      if (value) out = *value;
      else bad = true;
    }
  };
  param("pause", kMaxBytes, pause_at);
  param("pause_ms", kMaxDelayMs, pause_ms);
  param("pauses", 1000, pauses);
  if (bad || pauses == 0 || (pause_at == 0 && pauses > 1)) {
    send_simple(400, "usage: /bytes?n=N[&chunked=1][&cut=K][&pause=K&pause_ms=M&pauses=P]\n");
    return;
  }
  // type=T: the Content-Type; header=NAME:VALUE: one more header line (both
  // percent-decoded), for the compression tests.
  std::string type = "application/octet-stream", extra;
  if (const auto t = query_param(req_.query, "type")) {
    const auto decoded = percent_decode(*t);
    if (!decoded || decoded->find_first_of("\r\n") != std::string::npos) bad = true;
    else type = *decoded;
  }
  if (!header_params(req_.query, extra)) bad = true;
  // trailer=NAME:VALUE (chunked only): a trailer field after the last chunk.
  std::string trailer;
  if (!header_params(req_.query, trailer, "trailer=") || (!trailer.empty() && !chunked)) bad = true;
  // etag=V: `ETag: "V"`, and 304 to a request whose If-None-Match names it.
  const auto etag = query_param(req_.query, "etag");
  if (etag && (etag->empty() || etag->find_first_of("\"\r\n") != std::string_view::npos)) bad = true;
  if (bad) {
    send_simple(400, "usage: /bytes?n=N[&chunked=1][&cut=K][&pause=K&pause_ms=M&pauses=P][&type=T][&header=NAME:VALUE...][&trailer=NAME:VALUE...][&etag=V]\n");
    return;
  }
  if (etag) {
    const std::string quoted = "\"" + std::string(*etag) + "\"";
    extra += "ETag: " + quoted + "\r\n";
    for (const auto& [name, value] : req_.headers) {
      if (iequals(name, "if-none-match") && value.find(quoted) != std::string::npos) {
        send_simple(304, {}, extra);
        return;
      }
    }
  }
  std::string head = response_head(200, type, *n, extra, chunked);
  log("200");
  if (cut < *n && !req_.head && !chunked) {
    req_.keep_alive = false;
    if (cut == 0) {
      write_owned(std::move(head));
      finish_response();
      return;
    }
    write_owned(std::move(head));
    stream_ = BodyStream{BodyStream::Kind::Pattern, false, 0, cut, -1, pause_at, pause_ms, pause_at, pauses, {}};
    pump();
    return;
  }
  if (req_.head || *n == 0) {
    if (chunked && !req_.head) head += "0\r\n" + trailer + "\r\n";
    write_owned(std::move(head));
    finish_response();
    return;
  }
  write_owned(std::move(head));
  stream_ = BodyStream{BodyStream::Kind::Pattern, chunked, 0, *n, -1, pause_at, pause_ms, pause_at, pauses,
                       std::move(trailer)};
  pump();
}

void Conn::serve_static() {
  const std::string& root = server_.options().root;
  if (root.empty()) {
    send_simple(404, "not found\n");
    return;
  }
  if (req_.method != "GET" && req_.method != "HEAD") {
    send_simple(405, "method not allowed\n", "Allow: GET, HEAD\r\n");
    return;
  }
  const auto decoded = percent_decode(req_.path);
  if (!decoded) {
    send_simple(400, "bad path\n");
    return;
  }
  if (!is_safe_path(*decoded)) {
    send_simple(403, "forbidden\n");
    return;
  }
  std::string file = root + *decoded;
  if (file.back() == '/') file += "index.html";
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  struct stat st {};
  if (fd >= 0 && ::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    ::close(fd);
    file += "/index.html";
    fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  }
  const int open_errno = errno;
  if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (fd >= 0) ::close(fd);
    if (fd < 0 && open_errno == EACCES) {
      send_simple(403, "forbidden\n");
    } else {
      send_simple(404, "not found\n");
    }
    return;
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  log("200");
  write_owned(response_head(200, content_type_for(file), size));
  if (req_.head || size == 0) {
    ::close(fd);
    finish_response();
    return;
  }
  stream_ = BodyStream{BodyStream::Kind::File, false, 0, size, fd, kNoPause, 0, 0, 0, {}};
  pump();
}

void Conn::serve_reset() {
  log("RST");
  // Let earlier pipelined answers reach the socket first; the RST discards unsent data.
  if (writes_ == 0) {
    close(true);
  } else {
    reset_pending_ = true;
  }
}

void Conn::on_timer(uv_timer_t* timer) {
  auto* conn = static_cast<Conn*>(timer->data);
  if (conn->closing_) return;
  if (conn->draining_) {  // the linger after our FIN expired
    conn->close();
    return;
  }
  if (conn->pausing_) {  // /bytes?pause=K: the rest of the body now
    conn->pausing_ = false;
    conn->pump();
    return;
  }
  if (conn->predelay_waiting_) {  // --delay-ms is over: answer now
    conn->predelay_waiting_ = false;
    conn->dispatch();
    return;
  }
  conn->send_simple(200, "delayed " + std::to_string(conn->delay_ms_) + "\n");
}

// ------------------------------------------------------------------ writing

std::string Conn::response_head(int status, std::string_view content_type, std::uint64_t content_length,
                                std::string_view extra, bool chunked) const {
  std::string head;
  head.reserve(256 + extra.size());
  head += "HTTP/1.1 ";
  head += std::to_string(status);
  head += ' ';
  head += reason_phrase(status);
  head += "\r\nX-Server: ";
  head += std::to_string(server_.port());
  head += "\r\nX-Conn: ";
  head += std::to_string(serial_);
  head += "\r\n";
  head += extra;
  // 1xx, 204 and 304 carry no body and no length.
  const bool bodyless = status < 200 || status == 204 || status == 304;
  if (!bodyless) {
    if (!content_type.empty()) {
      head += "Content-Type: ";
      head += content_type;
      head += "\r\n";
    }
    if (chunked) {
      head += "Transfer-Encoding: chunked\r\n";
    } else {
      head += "Content-Length: ";
      head += std::to_string(content_length);
      head += "\r\n";
    }
  }
  if (!req_.keep_alive) {
    head += "Connection: close\r\n";
  } else if (req_.http_major == 1 && req_.http_minor == 0) {
    head += "Connection: keep-alive\r\n";
  }
  head += "\r\n";
  return head;
}

void Conn::send_simple(int status, std::string_view body, std::string_view extra, std::string_view content_type) {
  std::string head = response_head(status, content_type, body.size(), extra);
  const bool bodyless = status < 200 || status == 204 || status == 304;
  if (!req_.head && !bodyless) head += body;
  log(std::to_string(status));
  write_owned(std::move(head));
  finish_response();
}

// A request that cannot be parsed: answer with a canned status and close.
void Conn::fail(int status) {
  req_.keep_alive = false;
  busy_ = true;
  send_simple(status, std::string(reason_phrase(status)) + "\n");
}

void Conn::write_owned(std::string head, std::string body) {
  auto write = std::make_unique<WriteReq>();
  write->head = std::move(head);
  write->body = std::move(body);
  uv_buf_t bufs[2];
  unsigned count = 0;
  bufs[count++] = uv_buf_init(write->head.data(), static_cast<unsigned>(write->head.size()));
  // uv_buf_t lengths are unsigned int here: pass a body of up to kMaxEchoBody (1 GiB) as one buffer.
  if (!write->body.empty()) {
    bufs[count++] = uv_buf_init(write->body.data(), static_cast<unsigned>(write->body.size()));
  }
  submit(std::move(write), bufs, count);
}

void Conn::submit(std::unique_ptr<WriteReq> write, const uv_buf_t* bufs, unsigned count) {
  if (closing_) return;
  std::size_t bytes = 0;
  for (unsigned i = 0; i < count; ++i) bytes += bufs[i].len;
  write->conn = this;
  write->bytes = bytes;
  write->req.data = write.get();
  const int rc = uv_write(&write->req, reinterpret_cast<uv_stream_t*>(&tcp_), bufs, count, on_write);
  if (rc != 0) {
    close();
    return;
  }
  queued_ += bytes;
  ++writes_;
  static_cast<void>(write.release());  // owned by libuv until on_write
}

void Conn::on_write(uv_write_t* req, int status) {
  std::unique_ptr<WriteReq> write(static_cast<WriteReq*>(req->data));
  Conn* conn = write->conn;
  conn->queued_ -= write->bytes;
  --conn->writes_;
  if (conn->closing_) return;
  if (status < 0) {
    conn->close();
    return;
  }
  conn->after_write();
}

void Conn::after_write() {
  if (writes_ == 0) {
    if (reset_pending_) {
      close(true);
      return;
    }
    if (draining_) {
      finish_drain();
      return;
    }
  }
  if (stream_.kind != BodyStream::Kind::None) {
    pump();
  } else if (!busy_ && !draining_ && queued_ < kHighWater) {
    parse_buffered();
  }
}

// Queues body pieces until the write queue reaches the high-water mark; on_write calls
// it again as the socket drains. Finishes the response after the last piece.
void Conn::pump() {
  static constexpr char kCrlf[] = "\r\n";
  static constexpr char kLastChunk[] = "\r\n0\r\n\r\n";
  while (stream_.kind != BodyStream::Kind::None && queued_ < kHighWater && !closing_ && !pausing_) {
    if (stream_.offset == stream_.pause_at) {
      stream_.pause_at = --stream_.pauses_left > 0 ? stream_.pause_at + stream_.pause_every : kNoPause;
      pausing_ = true;
      uv_timer_start(&timer_, on_timer, stream_.pause_ms, 0);
      return;
    }
    std::uint64_t piece = std::min<std::uint64_t>(stream_.remaining, kPatternBlock);
    if (stream_.pause_at > stream_.offset) piece = std::min(piece, stream_.pause_at - stream_.offset);
    const std::size_t n = static_cast<std::size_t>(piece);
    const bool last = n == stream_.remaining;
    auto write = std::make_unique<WriteReq>();
    uv_buf_t bufs[3];
    unsigned count = 0;
    if (stream_.chunked) {
      char size_line[24];
      const int len = std::snprintf(size_line, sizeof size_line, "%zx\r\n", n);
      write->head.assign(size_line, static_cast<std::size_t>(len));
      bufs[count++] = uv_buf_init(write->head.data(), static_cast<unsigned>(write->head.size()));
    }
    if (stream_.kind == BodyStream::Kind::Pattern) {
      // The pattern block is immutable and static: written in place, never copied.
      const char* piece = pattern_block() + stream_.offset % kPattern.size();
      bufs[count++] = uv_buf_init(const_cast<char*>(piece), static_cast<unsigned>(n));
    } else {
      write->block.reset(new char[n]);
      const ssize_t got = ::pread(stream_.fd, write->block.get(), n, static_cast<off_t>(stream_.offset));
      if (got != static_cast<ssize_t>(n)) {  // a read error or a file that shrank: cannot finish
        close();
        return;
      }
      bufs[count++] = uv_buf_init(write->block.get(), static_cast<unsigned>(n));
    }
    if (stream_.chunked && last && !stream_.trailer.empty()) {
      write->body = "\r\n0\r\n" + stream_.trailer + "\r\n";
      bufs[count++] = uv_buf_init(write->body.data(), static_cast<unsigned>(write->body.size()));
    } else if (stream_.chunked) {
      const char* tail = last ? kLastChunk : kCrlf;
      bufs[count++] = uv_buf_init(const_cast<char*>(tail), static_cast<unsigned>(std::char_traits<char>::length(tail)));
    }
    stream_.offset += n;
    stream_.remaining -= n;
    submit(std::move(write), bufs, count);
    if (last && !closing_) {
      end_stream();
      finish_response();
      return;
    }
  }
}

void Conn::end_stream() {
  if (stream_.fd >= 0) ::close(stream_.fd);
  stream_ = BodyStream{};
}

// The current response is fully queued: go on with the next request, or close.
void Conn::finish_response() {
  busy_ = false;
  if (closing_) return;
  if (!req_.keep_alive) {
    begin_drain();
    return;
  }
  if (!in_parse_) parse_buffered();
}

void Conn::begin_drain() {
  if (draining_) return;
  draining_ = true;
  if (!in_parse_) input_.clear();
  if (writes_ == 0) finish_drain();
}

// Everything is written: send our FIN, then wait (briefly) for the peer's, so unread
// request bytes in our receive buffer cannot turn the close into an RST that destroys the
// response before the client read it.
void Conn::finish_drain() {
  if (shutdown_sent_ || closing_) return;
  if (peer_eof_) {
    close();
    return;
  }
  shutdown_sent_ = true;
  if (uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&tcp_), on_shutdown) != 0) {
    close();
    return;
  }
  if (!reading_) {
    reading_ = uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc, on_read) == 0;
  }
  uv_timer_start(&timer_, on_timer, kLingerMs, 0);
}

void Conn::on_shutdown(uv_shutdown_t* req, int status) {
  auto* conn = static_cast<Conn*>(req->handle->data);
  if (status < 0 && !conn->closing_) conn->close();
}

void Conn::log(std::string_view status) const {
  if (server_.options().quiet) return;
  std::printf("%s %s %.*s\n", req_.method.empty() ? "-" : req_.method.c_str(),
              req_.target.empty() ? "-" : req_.target.c_str(), static_cast<int>(status.size()),
              status.data());
}

// ------------------------------------------------------------------ server

void Server::add(Conn* conn) {
  conn->next = conns_;
  if (conns_ != nullptr) conns_->prev = conn;
  conns_ = conn;
}

void Server::remove(Conn* conn) {
  if (conn->prev != nullptr) conn->prev->next = conn->next;
  if (conn->next != nullptr) conn->next->prev = conn->prev;
  if (conns_ == conn) conns_ = conn->next;
  conn->prev = conn->next = nullptr;
}

void Server::on_connection(uv_stream_t* listener, int status) {
  auto* server = static_cast<Server*>(listener->data);
  if (status < 0) {
    std::fprintf(stderr, "testserver: accept: %s\n", uv_strerror(status));
    return;
  }
  if (server->stopping_) return;
  auto* conn = new Conn(*server, server->next_serial_++);
  conn->start(listener);
}

void Server::on_signal(uv_signal_t* handle, int) { static_cast<Server*>(handle->data)->stop(); }

void Server::stop() {
  if (stopping_) return;
  stopping_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
  while (conns_ != nullptr) conns_->close();  // close() unlinks it
}

int Server::run() {
  // Thousands of connections need thousands of descriptors.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  std::signal(SIGPIPE, SIG_IGN);
  // One line per request, visible at once to whoever reads the pipe.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  loop_ = uv_default_loop();
  sockaddr_storage addr{};
  if (uv_ip4_addr(options_.host.c_str(), options_.port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(options_.host.c_str(), options_.port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    std::fprintf(stderr, "testserver: --host %s is not an IPv4 or IPv6 address\n", options_.host.c_str());
    return 1;
  }
  uv_tcp_init(loop_, &listener_);
  listener_.data = this;
  int rc = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), kBacklog, on_connection);
  if (rc != 0) {
    std::fprintf(stderr, "testserver: cannot listen on %s:%d: %s\n", options_.host.c_str(), options_.port,
                 uv_strerror(rc));
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    uv_run(loop_, UV_RUN_DEFAULT);
    uv_loop_close(loop_);
    return 1;
  }
  sockaddr_storage bound{};
  int bound_len = sizeof bound;
  uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &bound_len);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);

  uv_signal_init(loop_, &sigint_);
  uv_signal_init(loop_, &sigterm_);
  sigint_.data = sigterm_.data = this;
  uv_signal_start(&sigint_, on_signal, SIGINT);
  uv_signal_start(&sigterm_, on_signal, SIGTERM);

  std::printf("testserver listening on %s:%d\n", options_.host.c_str(), port_);
  std::fflush(stdout);

  uv_run(loop_, UV_RUN_DEFAULT);
  uv_loop_close(loop_);
  return 0;
}

}  // namespace

int run(const Options& options) {
  Server server(options);
  return server.run();
}

}  // namespace juggler::testserver
