// The HTTP/2 connection and its streams, shared by src/http2's two files:
// connection.cpp (the nghttp2 session over the byte stream, output batched
// into one write per loop turn, limits and floods) and stream.cpp (each
// stream as an exchange's Downstream and RequestBody: the request head and
// body handed to the exchange as HTTP/1.1, its HTTP/1.1 answer turned back
// into HEADERS and DATA).
//
// Ownership: an H2Conn is the handler of the stream of the ClientSession it
// adopted; it frees its streams and itself (back to the worker's free lists)
// in on_stream_closed, then gives the session back. An H2Stream lives from
// its first HEADERS until nghttp2 closed it and its exchange let go of it
// (`closed` and `ex == nullptr`), whichever comes last.
#pragma once

#include <nghttp2/nghttp2.h>

#include <memory>

#include "exchange/downstream.hpp"
#include "http2/h2.hpp"
#include "http2/request_head.hpp"
#include "http2/session.hpp"
#include "juggler/http.hpp"
#include "juggler/stream.hpp"
#include "juggler/timer_wheel.hpp"
#include "juggler/worker.hpp"

namespace juggler {

struct H2Conn;
struct H2Stream;

// What a stream knows of its one request: a value, reset as a whole when a
// pooled stream object carries the next one.
struct H2StreamState {
  H2Conn* conn = nullptr;
  Exchange* ex = nullptr;
  std::int32_t id = 0;
  // The request head as HTTP/1.1 text (request_head.hpp) in `head`: the
  // exchange parses it there and keeps views into it to its end.
  Buffer* head = nullptr;
  H2Head req;
  bool bad = false;             // refused (reset): the rest of its frames are ignored
  bool closed = false;          // nghttp2 closed the stream
  // Request body (uploads): DATA bytes at kBodyReserve.. of `body`, the first
  // `body_flight` of them in a write upstream; chunk framing written around
  // them when handed out (available()).
  Buffer* body = nullptr;
  std::uint32_t body_len = 0;
  std::uint32_t body_flight = 0;   // raw bytes in the write under way
  std::uint32_t framed_raw = 0;    // available(): raw bytes in the view handed out
  bool in_flight = false;
  bool body_ended = false;         // END_STREAM came
  bool body_started = false;       // a chunk went before (the next one starts with CRLF)
  bool final_sent = false;         // the end of the body went (chunked: "0\r\n\r\n")
  bool final_framed = false;       // available(): the view includes it
  bool discard = false;            // a local answer: the body is read and dropped
  std::uint64_t body_total = 0;
  // Response: the exchange's bytes (HTTP/1.1) as slices until nghttp2 took
  // them; the head parsed from a copy in `rhead`, the body decoded in place.
  Buffer* rhead = nullptr;
  std::uint32_t rhead_len = 0;
  Buffer* kept = nullptr;  // a small answer's bytes, kept by the stream (response.cpp quick_answer, stash)
  std::uint32_t iov_n = 0, iov_i = 0;
  std::size_t iov_off = 0;
  std::uint32_t span_i = 0, span_n = 0, span_off = 0;
  // The pieces of the DATA frame read_body() chose (NGHTTP2_DATA_FLAG_NO_COPY):
  // written from where they are by the connection's send_data callback.
  static constexpr std::uint32_t kPieces = 8;
  const char* piece[kPieces] = {};
  std::uint32_t piece_len[kPieces] = {};
  std::uint32_t piece_n = 0;
  char status_text[4] = {};
  bool parsing = false;     // the response parser was started
  bool head_sent = false;   // HEADERS submitted
  bool resp_done = false;   // the response's last byte was parsed
  bool deferred = false;    // the data source waits for bytes (resume_data when they come)
  bool held = false;        // send() left bytes: ClientWritten follows once nghttp2 took them
  bool notify = false;      // in the connection's list (ClientWritten, or freed)
  bool gone = false;        // closed in error while its DATA waited for the write: ClientGone from the list
  H2Stream* notify_next = nullptr;
  H2Stream* prev = nullptr;  // the connection's live streams
  H2Stream* next = nullptr;
};

struct H2Stream final : H2StreamState, Downstream, RequestBody {
  H2Stream() noexcept {  // every stream, whichever connection: over TLS (h2 is ALPN's), HTTP/2
    secure_ = true;
    h2_ = true;
  }
  H2StreamState& state() noexcept { return *this; }
  // Kept across requests (sized once from limit.header_count).
  MessageParser resp;
  std::unique_ptr<HeaderSpan[]> resp_headers;
  std::unique_ptr<nghttp2_nv[]> nva;
  std::unique_ptr<uv_buf_t[]> iov;
  std::uint32_t iov_cap = 0, header_cap = 0;
  BodySpan spans[MessageParser::kMaxBodySpans] = {};
  // Armed while a send is held (the client's window shut): a client that
  // takes none of it for timeout.client_idle loses the stream, as an HTTP/1
  // client that reads nothing loses its connection; the server's is released.
  TimerNode send_timer;

  // Downstream
  const char* tls_version() const noexcept override;
  bool send(uv_buf_t* iov, unsigned n) noexcept override;
  bool sending() const noexcept override { return held; }
  void resume() noexcept;  // a deferred data source has bytes again
  void done(bool close, bool linger) noexcept override;
  void abort() noexcept override;
  // RequestBody
  std::string_view available() noexcept override;
  void consume(std::size_t n) noexcept override;
  void written() noexcept override;
  void rewind() noexcept override;
  bool skip() noexcept override;

  using Downstream::ip;
  using Downstream::ip_len;
  using RequestBody::complete_;
  using RequestBody::replayable_;
};

struct H2Conn final : StreamHandler {
  Worker* worker = nullptr;
  ClientSession* session = nullptr;  // owns the Stream's memory
  Stream* stream = nullptr;
  nghttp2_session* ng = nullptr;
  Buffer* in = nullptr;   // the read room
  Buffer* out = nullptr;  // frames (and DATA frame headers) gathered for the next write
  std::uint32_t out_len = 0;
  const std::uint8_t* spill = nullptr;  // a frame that did not fit `out`, nghttp2's memory (next in the write)
  std::size_t spill_len = 0;
  // The next write: slices of `out` and DATA payloads in place (the
  // streams' bytes, valid until the write: TLS encrypts them in write(), and
  // ClientWritten, which may free them, is delivered after it).
  static constexpr unsigned kWv = 64;
  uv_buf_t wv[kWv];
  unsigned wv_n = 0;
  std::size_t wv_bytes = 0;
  bool paused = false;
  bool gathering = false;  // inside gather(): the write list may hold streams' bytes
  TimerNode timer;  // idle: no stream open for timeout.client_idle
  H2Stream* streams = nullptr;
  std::uint32_t stream_count = 0;
  H2Stream* notify_head = nullptr;  // ClientWritten to deliver after nghttp2 took their bytes
  std::uint32_t glitches = 0;       // resets, empty frames, SETTINGS and PINGs counted against the budget
  bool dirty = false;     // in the worker's list: the session may have frames to send
  bool eof = false;
  bool closing = false;
  bool goaway = false;    // a GOAWAY was submitted (drain, or a budget spent)
  bool notice = false;    // drain: the shutdown notice went; the final GOAWAY follows on `timer`
  bool lingering = false; // GOAWAY sent, nothing left: closing gracefully (connection.cpp finish)
  H2Conn* dirty_next = nullptr;
  H2Conn* next_free = nullptr;

  uv_buf_t on_stream_alloc() noexcept override;
  void on_stream_read(ssize_t n) noexcept override;
  void on_stream_written(int status) noexcept override;
  void on_stream_closed() noexcept override;
};

// Per worker: the connections with frames to send (flushed from the loop's
// idle phase, one write per connection per turn) and the free objects.
struct H2Worker {
  H2Mem mem;  // nghttp2's allocations (session.hpp); outlives every session of the worker
  uv_idle_t idle;
  bool idle_ready = false;
  H2Conn* dirty = nullptr;
  H2Conn* free_conns = nullptr;
  H2Stream* free_streams = nullptr;
  std::uint32_t free_stream_count = 0;
};

// connection.cpp
void h2_dirty(H2Conn* c) noexcept;          // frames may be waiting: flushed this loop turn
void h2_close(H2Conn* c) noexcept;          // closes at once (the streams' exchanges are cut)
void h2_glitch(H2Conn* c, std::uint32_t weight = 1) noexcept;  // counts against the budget; GOAWAY when spent
H2Worker& h2_worker(Worker& w);

// stream.cpp
H2Stream* h2_stream_begin(H2Conn* c, std::int32_t id);  // a new request's HEADERS began
int h2_stream_header(H2Stream* s, nghttp2_rcbuf* name, nghttp2_rcbuf* value);  // 0 or an nghttp2 error
void h2_stream_headers_done(H2Stream* s, bool end_stream);  // its head is complete: the exchange starts
int h2_stream_data(H2Stream* s, const std::uint8_t* data, std::size_t len);  // DATA bytes (body)
void h2_stream_end(H2Stream* s);                  // END_STREAM came after the head
void h2_stream_closed(H2Stream* s, std::uint32_t error);  // nghttp2 closed the stream
void h2_stream_free(H2Stream* s) noexcept;        // back to the worker's free list
void h2_stream_reset(H2Stream* s, std::uint32_t error) noexcept;  // RST_STREAM unless closed
void h2_stream_release(H2Stream* s) noexcept;     // freed from the next flush (or now when closing)

}  // namespace juggler
