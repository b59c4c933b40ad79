// The byte stream layer (include/juggler/stream.hpp): the same handler code
// over plain TCP and over TLS, against a real client on loopback (a thread
// with a blocking socket; OpenSSL over it for TLS). Reads land in the
// handler's room, a large write completes through on_stream_written,
// discard_input() drops what follows, the peer's end arrives as UV_EOF
// (FIN, or close_notify), and on_stream_closed is the last call.
#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "test_cert.hpp"
#include "test_peer.hpp"
#include "juggler/stream.hpp"

using namespace juggler;
using juggler::test::PeerSocket;

namespace {

constexpr std::size_t kBig = 16 * 1024 * 1024;  // more than the socket buffers take at once

SSL_CTX* make_server_ctx() { return juggler::test::self_signed_server_ctx(); }

char pattern(std::size_t i) { return static_cast<char>('a' + i % 26); }

// The server side: what a protocol on top of a stream does, recorded.
struct Handler final : StreamHandler {
  Stream stream;
  char room[4096];
  std::string got;           // every byte delivered
  std::string big;           // the large answer (kept alive while the write is pending)
  int eofs = 0, errors = 0, written = 0, pending_writes = 0, closed = 0;
  bool answered = false, acked = false, secure = false;

  uv_buf_t on_stream_alloc() noexcept override { return uv_buf_init(room, sizeof room); }

  void on_stream_read(ssize_t n) noexcept override {
    if (n > 0) {
      secure = stream.secure();
      got.append(room, static_cast<std::size_t>(n));
      if (!answered && got.size() >= 4) {
        // "ping": answer with more than the kernel takes at once.
        answered = true;
        big.resize(kBig);
        for (std::size_t i = 0; i < kBig; ++i) big[i] = pattern(i);
        uv_buf_t b = uv_buf_init(big.data(), static_cast<unsigned>(big.size()));
        if (!stream.write(&b, 1)) ++pending_writes;
      }
      if (!acked && got.size() >= 7) {
        // "bye": ack it, then drop whatever else comes.
        acked = true;
        static char k = 'k';
        uv_buf_t b = uv_buf_init(&k, 1);
        if (!stream.write(&b, 1)) ++pending_writes;
        stream.discard_input();
      }
      return;
    }
    if (n == 0) return;
    if (n == UV_EOF) ++eofs;
    else ++errors;
    stream.close();
  }
  void on_stream_written(int status) noexcept override {
    CHECK(status == 0);
    ++written;
  }
  void on_stream_closed() noexcept override { ++closed; }
};

// Inits `loop` and a listener on 127.0.0.1 (its data `owner`); returns its port.
int listen_loopback(uv_loop_t* loop, uv_tcp_t* listener, void* owner, uv_connection_cb cb) {
  uv_loop_init(loop);
  uv_tcp_init(loop, listener);
  listener->data = owner;
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", 0, &addr);
  REQUIRE(uv_tcp_bind(listener, reinterpret_cast<const sockaddr*>(&addr), 0) == 0);
  REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(listener), 8, cb) == 0);
  sockaddr_in bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(listener, reinterpret_cast<sockaddr*>(&bound), &len);
  return ntohs(bound.sin_port);
}

struct Server {
  uv_loop_t loop;
  uv_tcp_t listener;
  StreamContext ctx{&loop};
  Handler handler;
  SSL_CTX* tls = nullptr;
  int port = 0;

  explicit Server(bool with_tls) {
    port = listen_loopback(&loop, &listener, this, on_connection);
    if (with_tls) tls = make_server_ctx();
  }
  ~Server() {
    ctx.release();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (tls) SSL_CTX_free(tls);
  }
  static void on_connection(uv_stream_t* l, int status) {
    REQUIRE(status == 0);
    auto* s = static_cast<Server*>(l->data);
    s->handler.stream.init(s->ctx, &s->handler);
    REQUIRE(s->handler.stream.accept(l, s->tls) == 0);
    s->handler.stream.set_reading(true);
    uv_close(reinterpret_cast<uv_handle_t*>(&s->listener), nullptr);  // one connection
  }
};

// The client, in its own thread: "ping", read kBig bytes, "bye", wait for the
// ack, "junk" (to be discarded), then end (close_notify first over TLS).
struct ClientResult {
  std::string answer;
  bool acked = false;
  bool ok = false;
};

void run_client(int port, bool with_tls, ClientResult* out) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  const int small = 64 * 1024;  // a small window: the server's big write has to wait for us
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return;
  SSL_CTX* cctx = nullptr;
  SSL* ssl = nullptr;
  if (with_tls) {
    cctx = SSL_CTX_new(TLS_client_method());
    ssl = SSL_new(cctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) return;
  }
  auto send = [&](const char* p, int n) {
    return with_tls ? SSL_write(ssl, p, n) == n : ::send(fd, p, static_cast<std::size_t>(n), 0) == n;
  };
  auto recv = [&](char* p, int n) {
    return with_tls ? SSL_read(ssl, p, n) : static_cast<int>(::recv(fd, p, static_cast<std::size_t>(n), 0));
  };
  char buf[65536];
  if (send("ping", 4)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the server's write fill the pipe
    while (out->answer.size() < kBig) {
      const int n = recv(buf, static_cast<int>(std::min(sizeof buf, kBig - out->answer.size())));
      if (n <= 0) break;
      out->answer.append(buf, static_cast<std::size_t>(n));
    }
    if (send("bye", 3) && recv(buf, 1) == 1 && buf[0] == 'k') {
      out->acked = true;
      out->ok = send("junk", 4);
    }
  }
  if (ssl) {
    SSL_shutdown(ssl);
    SSL_free(ssl);
    SSL_CTX_free(cctx);
  }
  ::close(fd);
}

void exercise(bool with_tls) {
  Server server(with_tls);
  ClientResult result;
  std::thread client(run_client, server.port, with_tls, &result);
  uv_run(&server.loop, UV_RUN_DEFAULT);  // ends once the stream and the listener closed
  client.join();

  const Handler& h = server.handler;
  CHECK(h.secure == with_tls);
  CHECK(h.got == "pingbye");  // "junk" came after discard_input()
  REQUIRE(result.answer.size() == kBig);
  bool same = true;
  for (std::size_t i = 0; i < kBig && same; ++i) same = result.answer[i] == pattern(i);
  CHECK(same);
  CHECK(result.acked);
  CHECK(result.ok);
  CHECK(h.pending_writes >= 1);  // the big answer did not go out at once...
  CHECK(h.written == h.pending_writes);  // ...and each pending write completed once
  CHECK(h.eofs == 1);
  CHECK(h.errors == 0);
  CHECK(h.closed == 1);
}

}  // namespace

TEST_CASE("stream: plain TCP reads, a pending write, discard, EOF, close", "[stream]") { exercise(false); }

TEST_CASE("stream: TLS behind the same API (close_notify is the EOF)", "[stream]") { exercise(true); }

// ---------------------------------------------------------------- outbound streams

namespace {

// Connects, says "ping", reads until the peer's end, then closes.
struct Dialer final : StreamHandler {
  Stream stream;
  char room[256];
  std::string got;
  int connected = 1, connects = 0, eofs = 0, closed = 0;  // connected: the last status
  bool close_on_connect = false;
  sockaddr_in to{};  // valid until on_stream_connected, as connect() wants

  // (Re)initialises the stream on `ctx` and starts connecting it to `peer`.
  void dial(StreamContext& ctx, const PeerSocket& peer) {
    stream.init(ctx, this);
    to = peer.addr;
    REQUIRE(stream.connect(reinterpret_cast<const sockaddr*>(&to)) == 0);
  }

  uv_buf_t on_stream_alloc() noexcept override { return uv_buf_init(room, sizeof room); }
  void on_stream_connected(int status) noexcept override {
    ++connects;
    connected = status;
    if (status != 0 || close_on_connect) {
      stream.close();
      return;
    }
    static char ping[] = "ping";
    uv_buf_t b = uv_buf_init(ping, 4);
    CHECK(stream.write(&b, 1));
    stream.set_reading(true);
  }
  void on_stream_read(ssize_t n) noexcept override {
    if (n > 0) got.append(room, static_cast<std::size_t>(n));
    if (n < 0) {
      eofs += n == UV_EOF;
      stream.close();
    }
  }
  void on_stream_written(int) noexcept override {}
  void on_stream_closed() noexcept override { ++closed; }
};

struct DialLoop {
  uv_loop_t loop;
  StreamContext ctx{&loop};
  DialLoop() { uv_loop_init(&loop); }
  ~DialLoop() {
    ctx.release();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
};

}  // namespace

TEST_CASE("stream: connect, write, read the answer, EOF", "[stream]") {
  PeerSocket peer(true);
  std::string heard;
  std::thread server([&] {
    const int c = ::accept(peer.fd, nullptr, nullptr);
    char buf[4];
    const ssize_t n = ::recv(c, buf, sizeof buf, MSG_WAITALL);
    if (n > 0) heard.assign(buf, static_cast<std::size_t>(n));
    ::send(c, "pong", 4, 0);
    ::close(c);
  });
  DialLoop d;
  Dialer dialer;
  dialer.dial(d.ctx, peer);
  uv_run(&d.loop, UV_RUN_DEFAULT);
  server.join();
  CHECK(heard == "ping");
  CHECK(dialer.got == "pong");
  CHECK(dialer.eofs == 1);
  CHECK(dialer.closed == 1);
  CHECK(d.ctx.connects.allocated == 1);
}

TEST_CASE("stream: a refused connect reports its error; the stream is reusable after close", "[stream]") {
  PeerSocket refusing(false);
  DialLoop d;
  Dialer dialer;
  dialer.dial(d.ctx, refusing);
  uv_run(&d.loop, UV_RUN_DEFAULT);
  CHECK(dialer.connected == UV_ECONNREFUSED);
  CHECK(dialer.closed == 1);

  // Again on the same Stream, this time to a listener, closing at once.
  PeerSocket peer(true);
  dialer.close_on_connect = true;
  dialer.dial(d.ctx, peer);
  uv_run(&d.loop, UV_RUN_DEFAULT);
  CHECK(dialer.connected == 0);
  CHECK(dialer.connects == 2);
  CHECK(dialer.closed == 2);
  CHECK(d.ctx.connects.allocated == 1);  // the pooled request was reused
}

TEST_CASE("stream: close() while connecting: no on_stream_connected, on_stream_closed last", "[stream]") {
  PeerSocket peer(true);
  DialLoop d;
  Dialer dialer;
  dialer.dial(d.ctx, peer);
  dialer.stream.close();
  uv_run(&d.loop, UV_RUN_DEFAULT);
  CHECK(dialer.connects == 0);
  CHECK(dialer.closed == 1);
}

// ---------------------------------------------------------------- the prelude

namespace {

// Consumes one line ("PRE:...\n"), five bytes a read at most (so it spans
// reads and its last read brings bytes past the line); "BAD" is refused.
struct LinePrelude final : Prelude {
  char acc[64];
  std::size_t len = 0;
  std::string line;
  uv_buf_t prelude_room() noexcept override {
    return uv_buf_init(acc + len, static_cast<unsigned>(std::min<std::size_t>(5, sizeof acc - len)));
  }
  Verdict prelude_read(std::size_t n, std::string_view* rest) noexcept override {
    len += n;
    const std::string_view seen(acc, len);
    if (seen.starts_with("BAD")) return Verdict::Reject;
    const std::size_t nl = seen.find('\n');
    if (nl == std::string_view::npos) return len == sizeof acc ? Verdict::Reject : Verdict::NeedMore;
    line.assign(acc, nl);
    *rest = seen.substr(nl + 1);
    return Verdict::Done;
  }
};

// Records what the protocol sees once the prelude is done.
struct After final : StreamHandler {
  Stream stream;
  char room[4096];
  std::string got;
  int eofs = 0, errors = 0, closed = 0;
  uv_buf_t on_stream_alloc() noexcept override { return uv_buf_init(room, sizeof room); }
  void on_stream_read(ssize_t n) noexcept override {
    if (n > 0) got.append(room, static_cast<std::size_t>(n));
    if (n >= 0) return;
    (n == UV_EOF ? eofs : errors)++;
    stream.close();
  }
  void on_stream_written(int) noexcept override {}
  void on_stream_closed() noexcept override { ++closed; }
};

struct PreludeServer {
  uv_loop_t loop;
  uv_tcp_t listener;
  StreamContext ctx{&loop};
  After after;
  LinePrelude prelude;
  SSL_CTX* tls = nullptr;
  int port = 0;
  explicit PreludeServer(bool with_tls) {
    port = listen_loopback(&loop, &listener, this, [](uv_stream_t* l, int) {
      auto* s = static_cast<PreludeServer*>(l->data);
      s->after.stream.init(s->ctx, &s->after);
      REQUIRE(s->after.stream.accept(l, s->tls) == 0);
      s->after.stream.set_prelude(&s->prelude);
      s->after.stream.set_reading(true);
      uv_close(reinterpret_cast<uv_handle_t*>(&s->listener), nullptr);
    });
    if (with_tls) tls = make_server_ctx();
  }
  ~PreludeServer() {
    ctx.release();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (tls) SSL_CTX_free(tls);
  }
};

// Sends `raw` in the clear, then `data` (over TLS when `with_tls`), then ends.
void prelude_client(int port, std::string raw, std::string data, bool with_tls) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return;
  if (!with_tls) {
    raw += data;
    ::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
  } else {
    ::send(fd, raw.data(), raw.size(), MSG_NOSIGNAL);
    SSL_CTX* cctx = SSL_CTX_new(TLS_client_method());
    SSL* ssl = SSL_new(cctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) == 1) {
      SSL_write(ssl, data.data(), static_cast<int>(data.size()));
      SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    SSL_CTX_free(cctx);
  }
  char b[256];
  while (::recv(fd, b, sizeof b, 0) > 0) {
  }
  ::close(fd);
}

}  // namespace

TEST_CASE("stream: a prelude reads first; the bytes it did not consume reach the protocol", "[stream]") {
  const bool with_tls = GENERATE(false, true);
  PreludeServer server(with_tls);
  std::thread client(prelude_client, server.port, "PRE:abc\n", "hello world", with_tls);
  uv_run(&server.loop, UV_RUN_DEFAULT);
  client.join();
  CHECK(server.prelude.line == "PRE:abc");
  CHECK(server.after.got == "hello world");
  CHECK(server.after.eofs == 1);
  CHECK(server.after.errors == 0);
  CHECK(server.after.closed == 1);
}

TEST_CASE("stream: a prelude that rejects breaks the connection before the protocol sees a byte", "[stream]") {
  PreludeServer server(false);
  std::thread client(prelude_client, server.port, "BAD\n", "hello", false);
  uv_run(&server.loop, UV_RUN_DEFAULT);
  client.join();
  CHECK(server.after.got.empty());
  CHECK(server.after.errors == 1);
  CHECK(server.after.closed == 1);
}
