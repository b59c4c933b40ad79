// The tunnel: two byte streams joined, bytes passed both ways untouched. The
// protocol of an L4 listener's connections and of an HTTP/1 connection after
// 101 Switching Protocols (WebSocket, src/http1/upgrade; later CONNECT).
//
// Data flow, per direction: the reading side reads into a buffer of the
// worker's pool, that buffer is written to the other side as it is (no copy);
// when the write completes at once the buffer goes back to the pool, when it
// is left pending the reading side stops reading until it completes
// (backpressure: at most one buffer in flight per direction). An idle tunnel
// holds no buffer. A bulk transfer over plain TCP is spliced (splice.cpp):
// the same flow with a kernel pipe in place of the buffer. An end of input
// (FIN) one way is passed on as a shutdown of the other side's write, once
// what was read before it went out; the other direction keeps flowing. Both
// ends passed on: both streams close. An error on either side, or no byte
// either way for `idle_ms`, closes both.
//
// Side 0 is the accepted (client) stream, side 1 the one the tunnel connects
// (connect()) or that the owner hands over connected.
//
// Ownership: the owner (an L4 connection) holds the Tunnel by value and may
// free it from on_tunnel_closed(), the last call. The tunnel holds no stream
// of its own: the two it joins stay in their owners' memory, which they keep
// until on_tunnel_closed (both closed): the L4 connection's two (init()), or
// an HTTP connection's and its server connection's after it switched
// protocols (adopt()). Worker thread only.
#pragma once

#include <cstdint>
#include <string_view>

#include "juggler/buffer.hpp"
#include "juggler/stream.hpp"
#include "juggler/timer_wheel.hpp"

namespace juggler {

// What the tunnels of one worker share.
struct TunnelEnv {
  StreamContext* streams;
  BufferPool* buffers;
  TimerWheel* wheel;
  std::uint32_t idle_ms;  // timeout.tunnel_idle
};

class Tunnel;

// What the owner of a tunnel implements.
class TunnelOwner {
 public:
  // connect() completed: 0 (bytes flow now) or an error (UV_ECONNREFUSED,
  // UV_ETIMEDOUT for the connect timeout, ...; side 1 is closed again, so the
  // owner may connect() once more or close()).
  virtual void on_tunnel_connected(Tunnel& t, int status) noexcept = 0;
  // Both streams are closed: the last call, the tunnel's memory may go.
  virtual void on_tunnel_closed(Tunnel& t) noexcept = 0;

 protected:
  ~TunnelOwner() = default;
};

class Tunnel {
 public:
  enum class State : std::uint8_t { Idle, Connecting, Open, Closing };
  // Why it ended, for the access log (the first reason given wins):
  // both ends passed on, an error on either side, no byte for idle_ms (or
  // nothing before expire_in's time), closed by the owner (a drain), or no
  // server could be connected.
  enum class End : std::uint8_t { None, Done, ClientError, ServerError, Idle, Proxy, NoServer };
  // Its two letters, as an exchange's term= (src/exchange/exchange.hpp):
  // "--", "CD", "SD", "cD", "PD", "SC"/"PC" (no server: refused / none left).
  static void end_letters(End end, bool tried_server, char (&out)[2]) noexcept;

  Tunnel() = default;
  Tunnel(const Tunnel&) = delete;
  Tunnel& operator=(const Tunnel&) = delete;

  // Initialises `client` (side 0, for the caller to accept() into) and
  // `server` (side 1, for connect()); both must live until on_tunnel_closed.
  void init(TunnelEnv& env, TunnelOwner* owner, Stream& client, Stream& server) noexcept;
  Stream& client() noexcept { return *side_[0].stream; }
  Stream& server() noexcept { return *side_[1].stream; }

  // Connects side 1 to `addr` (read at once: the caller's to keep), within
  // `timeout_ms`. Side 0 is not read meanwhile (its bytes wait in the kernel).
  void connect(const sockaddr* addr, std::uint32_t timeout_ms) noexcept;
  // Both streams connected (accepted or connected by the caller): bytes flow.
  void open() noexcept;
  // What one side read before the tunnel took it over: `len` bytes at the
  // start of `buf` (from env.buffers, or null), sent to the other side first;
  // `eof`: its input already ended.
  struct Held {
    Buffer* buf = nullptr;
    std::uint32_t len = 0;
    bool eof = false;
  };
  // Instead of init(): takes over two connected streams (an HTTP/1 connection
  // and its server connection after 101 Switching Protocols), becoming their
  // handler, and opens. The streams must live until on_tunnel_closed.
  void adopt(TunnelEnv& env, TunnelOwner* owner, Stream& client, Stream& server, const Held& from_client,
             const Held& from_server) noexcept;
  // Before connect() or open(): `bytes` go to side 1 first, ahead of anything
  // side 0 sent (a PROXY protocol header, send_proxy=); they must stay valid
  // until on_tunnel_closed.
  void set_preface(std::string_view bytes) noexcept { preface_ = bytes; }
  // Before connect(): closes the tunnel unless connect() or open() comes
  // within `timeout_ms` (e.g. while a prelude waits for its header).
  void expire_in(std::uint32_t timeout_ms) noexcept;
  // Closes both streams (idempotent); on_tunnel_closed follows. `why`
  // unless a reason was noted already.
  void close(End why = End::Proxy) noexcept;

  State state() const noexcept { return state_; }
  // Buffers held now (at most one per direction), for tests and stats.
  unsigned buffers_held() const noexcept { return (side_[0].buf != nullptr) + (side_[1].buf != nullptr); }
  // Whether side `i` passed its end of input on to the other side.
  bool ended(unsigned i) const noexcept { return side_[i].passed; }
  // Bytes read from side `i` and relayed to the other (held ones included).
  std::uint64_t bytes_from(unsigned i) const noexcept { return side_[i].relayed; }
  End end() const noexcept { return end_; }

 private:
  struct Side final : StreamHandler {
    Stream* stream = nullptr;
    Tunnel* tunnel = nullptr;
    Buffer* buf = nullptr;  // bytes read from this side, written to the other
    std::uint32_t held = 0; // bytes in buf read before the tunnel opened
    std::uint64_t relayed = 0;  // bytes read from this side and written to the other
    bool eof = false;       // this side's input ended
    bool passed = false;    // ...and the other side's write was shut down
    bool open = false;      // the stream is initialised and not yet closed
    // splice(2) (Linux, plain TCP both ways, splice.cpp): after kSpliceAfter
    // reads in a row filled the buffer, this side's bytes go socket -> pipe ->
    // socket without entering user space; `pipe` is made then, and splicing
    // lasts as long as it.
    std::uint8_t full_reads = 0;
    std::uint32_t in_pipe = 0;  // bytes in the pipe not yet written to the other side
    int pipe[2] = {-1, -1};
    bool splicing() const noexcept { return pipe[0] >= 0; }
    uv_buf_t on_stream_alloc() noexcept override;
    void on_stream_read(ssize_t n) noexcept override;
    void on_stream_written(int status) noexcept override;
    void on_stream_closed() noexcept override;
    void on_stream_connected(int status) noexcept override;
  };

  // What init() and adopt() share: `client` and `server` become sides 0 and 1.
  void join(TunnelEnv& env, TunnelOwner* owner, Stream& client, Stream& server) noexcept;
  Side& peer(Side& s) noexcept { return &s == &side_[0] ? side_[1] : side_[0]; }
  // How the tunnel ends when side `s`'s stream fails.
  End error_of(const Side& s) const noexcept { return &s == &side_[0] ? End::ClientError : End::ServerError; }
  void relay(Side& from, std::size_t n) noexcept;
  // splice.cpp: switches `from` to splicing when its reads show a bulk
  // transfer; moves what is readable; empties the pipe through the buffer
  // when the other side's socket is full (its write then waits in libuv);
  // closes the pipe.
  void maybe_splice(Side& from) noexcept;
  void splice_some(Side& from) noexcept;
  void drain_pipe(Side& from) noexcept;
  static void close_pipe(Side& s) noexcept;
  void pass_end(Side& from) noexcept;
  void release(Side& s) noexcept;
  static void on_timer(TimerNode* n);

  Side side_[2];
  TimerNode timer_;  // the connect timeout, then the idle timeout (re-armed lazily)
  TunnelEnv* env_ = nullptr;
  TunnelOwner* owner_ = nullptr;
  std::string_view preface_;        // for side 1 before side 0's bytes (set_preface), until sent
  std::uint64_t active_ms_ = 0;     // the last read either way
  int connect_error_ = 0;           // Connecting: why side 1 is being closed
  State state_ = State::Idle;
  End end_ = End::None;
};

}  // namespace juggler
