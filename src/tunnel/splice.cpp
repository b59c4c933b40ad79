// The tunnel's splice(2) path (tunnel.hpp), Linux only: a direction whose
// reads keep filling the buffer (a bulk transfer) moves its bytes socket ->
// pipe -> socket, so they never enter user space: no copy in, no copy out.
//
// Reading: the side's on_stream_alloc gives an empty room, so libuv only says
// the socket is readable (UV_ENOBUFS) and splice_some() takes the bytes. The
// pipe is emptied into the other socket before more is taken from this one
// (one pipe's worth in flight, as one buffer is in the copying path). When the
// other socket is full, what is left in the pipe is read into a pool buffer
// and written the usual way: libuv waits for room, this side stops reading
// until that write completes (backpressure), then splicing goes on. An end of
// input seen by splice (0) is passed on as in the copying path.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include "tunnel/tunnel.hpp"

namespace juggler {

namespace {

#ifdef __linux__
constexpr std::uint8_t kSpliceAfter = 4;    // reads in a row that filled the buffer: 64 KB at 16 KB
constexpr int kPipeBytes = 256 * 1024;      // asked of F_SETPIPE_SZ (the default 64 KB stays if refused)
constexpr std::size_t kSpliceMax = 1 << 20;  // per splice call: the pipe bounds it
constexpr unsigned kRounds = 4;              // pipe loads per readable event, then the loop's other work

int fd_of(Stream& s) {
  uv_os_fd_t fd = -1;
  uv_fileno(reinterpret_cast<const uv_handle_t*>(s.tcp()), &fd);
  return fd;
}
#endif

}  // namespace

void Tunnel::maybe_splice(Side& from) noexcept {
#ifdef __linux__
  // JUGGLER_NO_SPLICE in the environment keeps the copying path (HAProxy's
  // `nosplice`): for comparing the two, and a way out should a kernel misbehave.
  static const bool off = std::getenv("JUGGLER_NO_SPLICE") != nullptr;
  Side& to = peer(from);
  if (off || from.splicing() || from.eof || from.full_reads < kSpliceAfter || from.buf || from.stream->secure() ||
      to.stream->secure())
    return;
  if (::pipe2(from.pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
    from.full_reads = 0;  // out of descriptors: copying works as well, try again later
    return;
  }
  ::fcntl(from.pipe[1], F_SETPIPE_SZ, kPipeBytes);  // splicing now: the next on_stream_alloc gives the empty room
#else
  (void)from;
#endif
}

void Tunnel::splice_some(Side& from) noexcept {
#ifdef __linux__
  Side& to = peer(from);
  if (state_ != State::Open || !from.splicing() || to.stream->write_pending()) return;
  const int in = fd_of(*from.stream), out = fd_of(*to.stream);
  for (unsigned round = 0; round < kRounds; ++round) {
    if (from.in_pipe == 0) {
      const ssize_t n = ::splice(in, nullptr, from.pipe[1], nullptr, kSpliceMax, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0 && errno == EAGAIN) return;  // all taken: the next readable event
      if (n < 0) return close(error_of(from));
      if (n == 0) {  // the end of its input
        from.stream->set_reading(false);
        from.eof = true;
        pass_end(from);
        return;
      }
      from.in_pipe = static_cast<std::uint32_t>(n);
      from.relayed += static_cast<std::uint64_t>(n);
      active_ms_ = uv_now(env_->streams->loop);
    }
    const ssize_t m = ::splice(from.pipe[0], nullptr, out, nullptr, from.in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (m < 0 && errno != EAGAIN) return close(error_of(to));
    if (m > 0) from.in_pipe -= static_cast<std::uint32_t>(m);
    if (from.in_pipe > 0) return drain_pipe(from);  // its socket is full
  }
#else
  (void)from;
#endif
}

void Tunnel::drain_pipe(Side& from) noexcept {
  Side& to = peer(from);
  from.stream->set_reading(false);
  while (from.in_pipe > 0) {
    if (!from.buf) from.buf = env_->buffers->get();
    const ssize_t k = ::read(from.pipe[0], from.buf->data, std::min<std::size_t>(from.buf->cap, from.in_pipe));
    if (k <= 0) return close(error_of(from));  // not for a pipe that holds bytes
    from.in_pipe -= static_cast<std::uint32_t>(k);
    uv_buf_t b = uv_buf_init(from.buf->data, static_cast<unsigned>(k));
    if (!to.stream->write(&b, 1)) return;  // on_stream_written comes back here, then reads on
    release(from);
  }
  if (from.eof) pass_end(from);
  else from.stream->set_reading(true);
}

void Tunnel::close_pipe(Side& s) noexcept {
  if (s.pipe[0] >= 0) {
    ::close(s.pipe[0]);
    ::close(s.pipe[1]);
  }
  s.pipe[0] = s.pipe[1] = -1;
  s.in_pipe = 0;
  s.full_reads = 0;
}

}  // namespace juggler
