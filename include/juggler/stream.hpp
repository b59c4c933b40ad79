// The byte stream: one connection, accepted or made (connect()), plain TCP
// or TLS behind the same API (read start/stop, write with completion,
// close_notify, shutdown, close).
// TLS lives below it: OpenSSL over memory BIOs, ciphertext read into a
// per-worker scratch, plaintext delivered into the buffer its handler gives,
// so no code above this layer asks which kind it has.
//
// Ownership: the Stream is a member of its handler's object (a client
// connection, a tunnel); that object may be freed only from on_stream_closed(), the
// last call a stream makes. A handed-over stream (set_handler: an upgraded HTTP
// connection adopted by a tunnel) stays in its first owner's memory, which
// the new handler keeps until that last call. Calls into the handler come from libuv callbacks
// (or from the idle phase for TLS plaintext already decrypted), never from
// inside a Stream method the handler called, but for the one documented case
// of write() below.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "juggler/counter.hpp"
#include "juggler/tls.hpp"

namespace juggler {

class Stream;

// libuv requests come from per-worker free lists, so connections do not each
// carry requests the common case never uses: a 192-byte uv_write_t (a write
// that did not complete at once: uv_try_write took part of it), a
// uv_connect_t (an accepted stream makes none), a uv_shutdown_t.
template <class Req>
struct PooledReq {
  Req req;  // first: a Req* is a PooledReq<Req>*
  PooledReq* next_free = nullptr;
};

template <class Req>
class ReqPool {
 public:
  ReqPool() = default;
  ReqPool(const ReqPool&) = delete;
  ReqPool& operator=(const ReqPool&) = delete;
  // After the loop ended: a request cancelled by a late close comes back
  // from its cancel callback.
  ~ReqPool() {
    while (PooledReq<Req>* r = free_) {
      free_ = r->next_free;
      delete r;
    }
  }

  Req* get() {
    if (PooledReq<Req>* r = free_) {
      free_ = r->next_free;
      return &r->req;
    }
    ++allocated;
    return &(new PooledReq<Req>())->req;
  }
  // Returns a finished request; first thing in its callback.
  void put(Req* req) noexcept {
    auto* r = reinterpret_cast<PooledReq<Req>*>(req);
    r->next_free = free_;
    free_ = r;
  }

  std::size_t allocated = 0;

 private:
  PooledReq<Req>* free_ = nullptr;
};

// What the streams (and the upstream connections) of one worker share. Worker
// thread only.
struct StreamContext {
  explicit StreamContext(uv_loop_t* l) : loop(l) {}
  StreamContext(const StreamContext&) = delete;
  StreamContext& operator=(const StreamContext&) = delete;

  uv_loop_t* loop;
  ReqPool<uv_write_t> writes;
  ReqPool<uv_connect_t> connects;
  ReqPool<uv_shutdown_t> shutdowns;
  std::unique_ptr<char[]> scratch;     // TLS ciphertext and discarded input land here
  uv_idle_t pump_idle;                 // pumps streams whose plaintext waits inside OpenSSL
  bool pump_ready = false;
  Stream* pump_head = nullptr;
  Counter tls_failures;                // handshakes and records that failed
  Counter tls_full, tls_resumed;       // handshakes completed (read by the admin listener)
  Counter sendfile_bytes;              // bytes sent by sendfile(2) (Stream::write_file; /metrics)

  // Closes the idle handle (worker exit, every stream closed or closing).
  void release() noexcept;
};

// Writes iov[0..n) to `st`: as much as the kernel takes now, the rest through
// uv_write with a pooled request whose data is `owner`. Returns true when
// everything went out synchronously (iov is then consumed). Errors are
// reported through `cb` (libuv defers them), never synchronously but for a
// stream that is already closing.
bool write_or_queue(StreamContext& ctx, uv_stream_t* st, void* owner, uv_buf_t* iov, unsigned n, uv_write_cb cb);

// What a stream's user (the protocol on top) implements.
class StreamHandler {
 public:
  // Room for the next plaintext bytes. Called only while reading is wanted.
  // Empty (plain TCP only; never while a prelude's rest is being delivered):
  // the handler takes the bytes from the socket itself (splice(2) through
  // tcp()'s descriptor), told by on_stream_read(UV_ENOBUFS) that it is
  // readable (data or its end), reading staying on.
  virtual uv_buf_t on_stream_alloc() noexcept = 0;
  // n > 0: that many bytes landed at the start of the room last given.
  // n == 0: nothing landed (an empty buffer may be given back).
  // UV_ENOBUFS: the room was empty and the socket is readable (see above).
  // UV_EOF: the peer finished sending (FIN, or TLS close_notify).
  // other n < 0: the connection broke (reset, TLS failure, ...).
  virtual void on_stream_read(ssize_t n) noexcept = 0;
  // The write that write() left pending is complete (status 0), or failed.
  virtual void on_stream_written(int status) noexcept = 0;
  // The last call: the stream's memory may go.
  virtual void on_stream_closed() noexcept = 0;
  // connect() completed: 0, or a libuv error (UV_ECONNREFUSED, ...; the
  // handler then closes the stream). Not called once close() was called.
  virtual void on_stream_connected(int status) noexcept { (void)status; }

 protected:
  ~StreamHandler() = default;
};

// A step that reads the first bytes of an accepted connection before its
// protocol does: a PROXY protocol header, later a TLS ClientHello peeked for
// SNI routing. It reads raw bytes (below TLS) into its own room; once it is
// done, the bytes it read but did not consume reach the protocol as if just
// read, ahead of anything else, so the protocol never knows it ran.
class Prelude {
 public:
  enum class Verdict : std::uint8_t { NeedMore, Done, Reject };
  // Room for the next raw bytes (the prelude's own memory); must not be empty.
  virtual uv_buf_t prelude_room() noexcept = 0;
  // `n` raw bytes landed at the start of the room last given. NeedMore: read
  // on. Done: `*rest` is set to what was read but not consumed (a view into
  // the prelude's memory, read before this call returns; may be empty).
  // Reject: the connection is refused (the handler sees UV_EPROTO).
  virtual Verdict prelude_read(std::size_t n, std::string_view* rest) noexcept = 0;
  // After Done, once the rest was delivered: the prelude's memory may go.
  virtual void prelude_over() noexcept {}

 protected:
  ~Prelude() = default;
};

class Stream {
 public:
  Stream() = default;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { delete tls_; }

  // Initialises the TCP handle on ctx's loop: before accept() or connect(),
  // and again to reuse the stream once on_stream_closed came.
  void init(StreamContext& ctx, StreamHandler* handler) noexcept;
  // Hands the stream to another handler (an HTTP connection becoming a
  // tunnel): every later call goes to it.
  void set_handler(StreamHandler* handler) noexcept { handler_ = handler; }
  // Accepts a pending connection of `server`; with `tls`, the stream
  // terminates TLS with that context. Returns 0 or a libuv error (then close()).
  int accept(uv_stream_t* server, SSL_CTX* tls);
  // Connects (plain TCP) to `addr`, which must stay valid until
  // on_stream_connected. Returns 0 (on_stream_connected follows), or a libuv
  // error now (then close()). Reading and writing wait for the connection.
  int connect(const sockaddr* addr);
  // The peer's address as text ("192.0.2.7", "2001:db8::1"; an IPv4-mapped
  // IPv6 address as IPv4) into `out`; returns its length, 0 when unknown.
  std::uint8_t peer_ip(char (&out)[46]) noexcept;

  // Runs `p` on the first bytes read, before the handler sees any (call
  // after accept(), before reading starts; `p` must live until the handler's
  // first on_stream_read). Or from the Done of the prelude running (a PROXY
  // header, then a ClientHello peeked): `p` then gets that one's rest as its
  // first read (its room must take it) and the rest goes on from `p`'s Done. The rest it hands back is delivered at once
  // through on_stream_alloc/on_stream_read (over TLS: decrypted first), so
  // the handler's room must take up to the prelude's room in those calls.
  void set_prelude(Prelude* p) noexcept { prelude_ = p; }
  bool in_prelude() const noexcept { return prelude_ != nullptr; }

  // Whether the handler wants bytes now. Idempotent; with TLS, plaintext that
  // OpenSSL already holds is delivered from the loop's idle phase.
  void set_reading(bool want) noexcept;
  bool reading() const noexcept { return reading_; }

  // Sends iov[0..n): true when it all went out now; otherwise the stream
  // owns the rest (the bytes must stay valid) and calls on_stream_written.
  // One write at a time: not while write_pending(). A TLS encryption failure
  // is reported by a synchronous on_stream_written(UV_EPROTO).
  bool write(uv_buf_t* iov, unsigned n);
  // write() of iov[0..n) whose last slice is also the bytes of file `fd`
  // from `offset` (its mapping: a cache entry's memfd). Plain TCP sends the
  // slices before it with one sendmsg and the file with sendfile(2), no copy; when the socket is full, the
  // next bytes are written from the slice the usual way (libuv waits for
  // room, as the tunnel's drain_pipe does) and sendfile goes on once that
  // write completed. `fd` and the slice stay valid until then. TLS writes
  // the slice. JUGGLER_NO_SENDFILE in the environment: always the slice (to
  // compare the two).
  bool write_file(uv_buf_t* iov, unsigned n, int fd, std::uint64_t offset);
  bool write_pending() const noexcept { return write_pending_; }

  // From now on input is read and dropped (lingering close); only the end of
  // the input (EOF or an error) still reaches the handler.
  void discard_input() noexcept { discard_ = true; }
  // TLS: queues close_notify and starts sending it. False when the stream
  // closed meanwhile (the write failed). Plain TCP: nothing to do, true.
  bool close_notify();
  // Half-closes the write side once pending writes went out (FIN). Returns 0
  // or a libuv error.
  int shutdown_write();
  // Closes (idempotent); on_stream_closed follows from the close callback.
  void close() noexcept;
  bool closing() const noexcept { return closing_; }

  bool secure() const noexcept { return tls_ != nullptr; }
  // TLS whose handshake chose h2 through ALPN (the listener offered it).
  bool alpn_h2() const noexcept { return tls_ && tls_->alpn_h2(); }
  const char* tls_error() const noexcept { return tls_ ? tls_->last_error() : ""; }
  // "TLSv1.3" and the like once the handshake is done, until the stream is
  // made again (a tunnel logs it after the close); null over plain TCP.
  const char* tls_version() const noexcept { return tls_version_; }
  // Between requests: frees buffers grown by a large body.
  void trim() noexcept;
  uv_tcp_t* tcp() noexcept { return &tcp_; }

 private:
  static void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf);
  static void on_read(uv_stream_t* st, ssize_t n, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_closed(uv_handle_t* h);
  static void on_connect(uv_connect_t* req, int status);
  static void on_pump_idle(uv_idle_t* h);
  void pump();
  void prelude_read(ssize_t n);
  void deliver(std::string_view bytes);
  bool flush_tls();
  void queue_pump();
  void unqueue_pump() noexcept;
  bool send_file_rest();
  bool queue_file_part(uv_buf_t* iov, unsigned n);

  uv_tcp_t tcp_;
  StreamContext* ctx_ = nullptr;
  StreamHandler* handler_ = nullptr;
  TlsStream* tls_ = nullptr;
  Prelude* prelude_ = nullptr;  // runs before the handler reads (set_prelude)
  Stream* pump_prev_ = nullptr;  // ctx_'s list of streams to pump
  Stream* pump_next_ = nullptr;
  bool reading_ = false;
  bool write_pending_ = false;
  bool closing_ = false;
  bool discard_ = false;
  bool pump_queued_ = false;
  // write_file's file while it is being sent (-1: none): what is left of it,
  // from file_off_, whose bytes are also at file_view_.
  int file_fd_ = -1;
  std::uint64_t file_off_ = 0;
  const char* file_view_ = nullptr;
  std::size_t file_left_ = 0;
  const char* tls_version_ = nullptr;  // OpenSSL's static name; set (and counted) when the handshake is done
};

}  // namespace juggler
