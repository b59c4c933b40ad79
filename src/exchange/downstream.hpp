// What an exchange needs of the connection its request came on (Downstream)
// and of the request's body (RequestBody): the seam between a downstream
// protocol and the exchange. HTTP/1's ClientSession implements both; an
// HTTP/2 stream and (with a body that is complete at once) a tunnel's first
// exchange implement them later. The exchange never sees the protocol's
// buffers or framing rules behind them.
//
// Cost: the hot facts (peer, secure, complete, replayable) are plain members
// read without a call; a proxied GET makes a handful of virtual calls
// (available, consume, written, send, sending, done).
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace juggler {

// The request body as the connection holds it: the bytes after the head, as
// framed on the wire (an HTTP/1 chunked body is relayed as it is), handed
// out in place, never copied.
class RequestBody {
 public:
  // Body bytes that arrived and were not taken yet (empty when none).
  virtual std::string_view available() noexcept = 0;
  // A write of the request starts, carrying the first `n` bytes of
  // available() (n may be 0: the head alone). Until written(), those bytes
  // stay where they are and the connection reads no more of the request
  // (backpressure).
  virtual void consume(std::size_t n) noexcept = 0;
  // The write that carried what was taken completed: its room may be reused
  // and reading the request goes on.
  virtual void written() noexcept = 0;
  // Starts over from the body's first byte, nothing in flight (a retry on
  // another connection). Only while replayable().
  virtual void rewind() noexcept = 0;
  // The exchange will not send the body (a local answer): the part already
  // held is read past. True when that was the whole request.
  virtual bool skip() noexcept = 0;

  // The request was read to its end (no body counts): the connection may
  // carry another request after this one.
  bool complete() const noexcept { return complete_; }
  // Every byte since the head (and the head's own bytes) is still held, so a
  // retry can send the request again.
  bool replayable() const noexcept { return replayable_; }
  // The request will not be read to its end (a refused request): the
  // connection closes after the answer, lingering.
  void abandon() noexcept { complete_ = false; }

 protected:
  RequestBody() = default;
  RequestBody(const RequestBody&) = default;
  RequestBody& operator=(const RequestBody&) = default;
  ~RequestBody() = default;
  bool complete_ = true;
  bool replayable_ = true;
};

// The connection a request came on, as the exchange uses it.
class Downstream {
 public:
  // The client's address as text (X-Forwarded-For, ip_hash, the access log).
  std::string_view peer() const noexcept { return {ip, ip_len}; }
  // The request came over TLS (X-Forwarded-Proto, redirects).
  bool secure() const noexcept { return secure_; }
  // The request came on an HTTP/2 stream (the access log, /metrics: the
  // exchange itself sees an HTTP/1.1 head either way).
  bool h2() const noexcept { return h2_; }

  // The TLS version ("TLSv1.3"), null over plain TCP. For the access log.
  virtual const char* tls_version() const noexcept { return nullptr; }

  // Writes response bytes (they stay valid until the write completes). True
  // when all went out now; else Event::ClientWritten follows once they did,
  // and no other send starts meanwhile.
  virtual bool send(uv_buf_t* iov, unsigned n) noexcept = 0;
  // send() of iov[0..n) whose last slice is also the bytes of file `fd`
  // from `offset` (a cache entry's memfd, its mapping in the slice): a
  // connection that can, sends those with sendfile(2) (the kernel takes page
  // references, no copy); the others write the slice as send() does. The
  // file stays open until the send completed.
  virtual bool send_file(uv_buf_t* iov, unsigned n, int fd, std::uint64_t offset) noexcept {
    (void)fd;
    (void)offset;
    return send(iov, n);
  }
  // A send has not completed yet (the client is behind).
  virtual bool sending() const noexcept = 0;
  // The exchange ended (it was released already): the connection goes on
  // with the next request, or closes (`close`), lingering with `linger` when
  // the client may still be sending.
  virtual void done(bool close, bool linger) noexcept = 0;
  // Cuts the connection at once (the exchange was released already): an
  // answer that cannot be completed, or a client that failed.
  virtual void abort() noexcept = 0;

 protected:
  Downstream() = default;
  Downstream(const Downstream&) = default;
  Downstream& operator=(const Downstream&) = default;
  ~Downstream() = default;
  std::uint8_t ip_len = 0;
  bool secure_ = false;
  bool h2_ = false;
  char ip[46] = {};
};

}  // namespace juggler
