// HTTP/1 client connections: the protocol above a byte stream. What the
// exchange and the listener call.
#pragma once

#include "exchange/downstream.hpp"
#include "juggler/stream.hpp"
#include "juggler/timer_wheel.hpp"
#include "juggler/worker.hpp"
#include "stream/proxy_protocol.hpp"


namespace juggler {

struct H2Conn;  // src/http2

// A client connection speaking HTTP/1: its byte stream (TCP or TLS) below,
// the exchanges above. It is the Downstream of its exchanges and the source
// of their request bodies: the body is the bytes after the head in `in`.
struct ClientSession final : StreamHandler, Downstream, RequestBody {
  Stream stream;
  TimerNode timer;    // header timeout while a head arrives, idle timeout between requests, linger
  Worker* worker;
  Exchange* ex = nullptr;
  Buffer* in = nullptr;         // plaintext (the stream decrypts below)
  std::uint32_t in_len = 0;     // bytes in `in`
  std::uint32_t parse_pos = 0;  // bytes of `in` given to the parser
  std::uint32_t requests = 0;
  // The request body of the exchange, as offsets into `in`.
  std::uint32_t head_end = 0;   // end of the head
  std::uint32_t body_end = 0;   // end of the body bytes parsed so far
  std::uint32_t sent_to = 0;    // end of what was taken (consume)
  bool in_flight = false;       // a write of the request is under way
  bool reading_head = false;    // the exchange's head is not complete yet
  bool eof = false;
  bool close_after_write = false;
  bool linger_on_close = false;  // with close_after_write: linger (see client_finish)
  bool lingering = false;       // answered and shut down: reading only to discard
  bool alpn_check = false;      // TLS: the first read tells whether ALPN chose h2 (then HTTP/2 takes the stream)
  bool drained = false;         // a drain came before its first request: that one is answered, then it closes
  H2Conn* h2 = nullptr;         // the HTTP/2 connection holding this session's stream (src/http2)
  ProxyPrelude proxy;  // proxy_protocol listeners: fills `ip` before the first request
  ClientSession* prev = nullptr;  // worker's list of live sessions (drain)
  ClientSession* next = nullptr;

  uv_buf_t on_stream_alloc() noexcept override;
  void on_stream_read(ssize_t n) noexcept override;
  void on_stream_written(int status) noexcept override;
  void on_stream_closed() noexcept override;

  bool send(uv_buf_t* iov, unsigned n) noexcept override { return stream.write(iov, n); }
  bool send_file(uv_buf_t* iov, unsigned n, int fd, std::uint64_t offset) noexcept override {
    return stream.write_file(iov, n, fd, offset);
  }
  bool sending() const noexcept override { return stream.write_pending(); }
  void done(bool close, bool linger) noexcept override;
  void abort() noexcept override;
  const char* tls_version() const noexcept override { return stream.tls_version(); }

  std::string_view available() noexcept override {
    return {in ? in->data + sent_to : nullptr, body_end - sent_to};
  }
  void consume(std::size_t n) noexcept override {
    sent_to += static_cast<std::uint32_t>(n);
    in_flight = true;
  }
  void written() noexcept override;
  void rewind() noexcept override {
    sent_to = head_end;
    in_flight = false;
  }
  bool skip() noexcept override;

  using Downstream::ip;
  using Downstream::ip_len;
  using Downstream::secure_;
  using RequestBody::complete_;
  using RequestBody::replayable_;
};


// Accepts a pending connection of `server` into a new session (terminating
// TLS with `tls` when not null; reading a PROXY header first with
// `proxy_protocol`) and starts reading its first request.
void client_accept(Worker& w, uv_stream_t* server, SSL_CTX* tls, bool proxy_protocol = false);

// Parses and acts on what the client sent: called after each read and when
// an exchange finished with pipelined bytes waiting.
void process_client(ClientSession* s);

// Starts or stops reading the client as the buffer, the exchange and
// backpressure allow.
void update_client_reading(ClientSession* s);

// Closes at once: the exchange (and its server connection) is abandoned.
void client_abort(ClientSession* s);

// Closes after the answer was written; with `linger`, the write side is shut
// down first and what the client still sends is discarded for a moment.
void client_finish(ClientSession* s, bool linger);

// Takes the session off the worker's live sessions (closing, or handed to a
// tunnel).
void session_unlink(ClientSession* s) noexcept;

// The client's timer: 408 for a slow head, idle close, end of lingering.
void on_client_timer(TimerNode* t);

// Drain: sessions between requests close now; the others close once their
// current response is sent, and one that has not sent its first request yet
// (just accepted: the request may be on its way) once that one is answered.
// With `which`: only the sessions it picks (those of a listener a reload
// removed).
void session_drain(Worker& w, bool (*which)(ClientSession&, const void*) = nullptr, const void* arg = nullptr) noexcept;

// Frees what the worker kept for reuse; call once its loop has ended.
void session_worker_done(Worker& w) noexcept;

}  // namespace juggler
