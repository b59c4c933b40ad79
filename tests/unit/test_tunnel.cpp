// The tunnel (src/tunnel): a real client and a real server (threads with
// blocking sockets on loopback) joined through a Tunnel on a libuv loop: the
// client side accepted, the server side connected by the tunnel. Bytes both
// ways byte-exact, a FIN passed on while the other direction keeps flowing,
// backpressure (a server that does not read stops the reading of the client,
// one buffer in flight), the idle timeout, a refused connect and a second one.
#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "test_peer.hpp"
#include "tunnel/tunnel.hpp"

using namespace juggler;
using juggler::test::PeerSocket;

namespace {

constexpr std::size_t kMB = 1024 * 1024;

char pattern(std::size_t i, int seed) { return static_cast<char>('A' + (i * 7 + static_cast<std::size_t>(seed)) % 53); }

bool matches(const std::string& got, std::size_t n, int seed) {
  if (got.size() != n) return false;
  for (std::size_t i = 0; i < n; ++i)
    if (got[i] != pattern(i, seed)) return false;
  return true;
}

int dial(const sockaddr_in& a) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return -1;
  timeval tv{20, 0};  // a broken tunnel fails the test, it does not hang it
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return fd;
}

bool send_pattern(int fd, std::size_t n, int seed) {
  std::string data(n, '\0');
  for (std::size_t i = 0; i < n; ++i) data[i] = pattern(i, seed);
  std::size_t off = 0;
  while (off < n) {
    const ssize_t r = ::send(fd, data.data() + off, n - off, MSG_NOSIGNAL);
    if (r <= 0) return false;
    off += static_cast<std::size_t>(r);
  }
  return true;
}

// Everything until the peer's end (or an error: then `ok` is false).
std::string read_to_end(int fd, bool* ok) {
  std::string got;
  char buf[65536];
  for (;;) {
    const ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r == 0) {
      *ok = true;
      return got;
    }
    if (r < 0) {
      *ok = false;
      return got;
    }
    got.append(buf, static_cast<std::size_t>(r));
  }
}

std::uint64_t start_loop(uv_loop_t* loop) {
  uv_loop_init(loop);
  return uv_now(loop);
}

// The loop side: a listener whose one connection becomes side 0 of a tunnel
// that connects side 1 to `target`.
struct Rig final : TunnelOwner {
  uv_loop_t loop;
  StreamContext streams{&loop};
  BufferPool pool{16 * 1024, 64};
  TimerWheel wheel{start_loop(&loop)};
  TunnelEnv env;
  Stream sides[2];
  Tunnel tunnel;
  uv_tcp_t listener;
  uv_timer_t tick;
  sockaddr_in listen_addr{};
  const sockaddr_in* target;
  const sockaddr_in* retry_target = nullptr;  // a refused connect goes here next
  std::atomic<int> connected{1};              // the last status
  int connects = 0, closed = 0;
  std::uint32_t connect_ms = 5000;
  void (*on_tick)(Rig&) = nullptr;            // polled every tick while the tunnel lives

  Rig(const sockaddr_in* to, std::uint32_t idle_ms) : target(to) {
    env = TunnelEnv{&streams, &pool, &wheel, idle_ms};
    tunnel.init(env, this, sides[0], sides[1]);
    uv_tcp_init(&loop, &listener);
    listener.data = this;
    uv_ip4_addr("127.0.0.1", 0, &listen_addr);
    REQUIRE(uv_tcp_bind(&listener, reinterpret_cast<const sockaddr*>(&listen_addr), 0) == 0);
    REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 4, on_connection) == 0);
    int len = sizeof listen_addr;
    uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&listen_addr), &len);
    uv_timer_init(&loop, &tick);
    tick.data = this;
    uv_timer_start(&tick, [](uv_timer_t* h) {
      auto* r = static_cast<Rig*>(h->data);
      r->wheel.advance(uv_now(&r->loop));
      if (r->on_tick && r->closed == 0) r->on_tick(*r);
    }, 10, 10);
  }
  ~Rig() {
    streams.release();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  static void on_connection(uv_stream_t* l, int status) {
    REQUIRE(status == 0);
    auto* r = static_cast<Rig*>(l->data);
    REQUIRE(r->tunnel.client().accept(l, nullptr) == 0);
    r->tunnel.connect(reinterpret_cast<const sockaddr*>(r->target), r->connect_ms);
    uv_close(reinterpret_cast<uv_handle_t*>(l), nullptr);  // one connection
  }
  void on_tunnel_connected(Tunnel& t, int status) noexcept override {
    ++connects;
    connected = status;
    if (status == 0) return;
    if (retry_target) {
      t.connect(reinterpret_cast<const sockaddr*>(retry_target), connect_ms);
      retry_target = nullptr;
      return;
    }
    t.close();
  }
  void on_tunnel_closed(Tunnel&) noexcept override {
    ++closed;
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  }
  void run() { uv_run(&loop, UV_RUN_DEFAULT); }
};

// `first` (0 client, 1 server) sends 1 MB and ends its side; the other reads
// it to the end and only then sends its 1 MB and ends: the direction still
// open after the first FIN has to keep flowing.
void half_close_round_trip(int first) {
  PeerSocket server(true);
  Rig rig(&server.addr, 60000);
  std::string at_server, at_client;
  bool server_ok = false, client_ok = false;
  auto talk = [first](int fd, int me, std::string* got, bool* ok) {
    if (me == first) {
      if (!send_pattern(fd, kMB, me) || ::shutdown(fd, SHUT_WR) != 0) return;
      *got = read_to_end(fd, ok);
    } else {
      *got = read_to_end(fd, ok);
      if (!*ok || !send_pattern(fd, kMB, me) || ::shutdown(fd, SHUT_WR) != 0) *ok = false;
    }
  };
  std::thread server_thread([&] {
    const int c = server.accept_one();
    talk(c, 1, &at_server, &server_ok);
    ::close(c);
  });
  std::thread client_thread([&] {
    const int c = dial(rig.listen_addr);
    if (c >= 0) talk(c, 0, &at_client, &client_ok);
    ::close(c);
  });
  rig.run();
  server_thread.join();
  client_thread.join();
  CHECK(rig.connected == 0);
  CHECK(server_ok);
  CHECK(client_ok);
  CHECK(matches(at_server, kMB, 0));
  CHECK(matches(at_client, kMB, 1));
  CHECK(rig.closed == 1);
  CHECK(rig.pool.free_count() == rig.pool.allocated());  // every buffer came back
}

}  // namespace

TEST_CASE("tunnel: 1 MB each way, the client ends first, the server answers after its FIN", "[tunnel]") {
  half_close_round_trip(0);
}

TEST_CASE("tunnel: 1 MB each way, the server ends first, the client answers after its FIN", "[tunnel]") {
  half_close_round_trip(1);
}

TEST_CASE("tunnel: a server that does not read stops the reading of the client", "[tunnel]") {
  PeerSocket server(true);
  Rig rig(&server.addr, 60000);
  std::atomic<bool> stalled{false}, checked{false};
  std::atomic<std::size_t> sent{0};
  static std::atomic<bool>* s_stalled;
  static std::atomic<bool>* s_checked;
  static bool reading_when_stalled;
  static unsigned held_when_stalled;
  static std::size_t allocated_when_stalled;
  s_stalled = &stalled;
  s_checked = &checked;
  reading_when_stalled = true;
  rig.on_tick = [](Rig& r) {
    if (!s_stalled->load() || s_checked->load()) return;
    reading_when_stalled = r.tunnel.client().reading();
    held_when_stalled = r.tunnel.buffers_held();
    allocated_when_stalled = r.pool.allocated();
    s_checked->store(true);
  };
  std::string at_server;
  bool server_ok = false;
  std::thread server_thread([&] {
    const int c = server.accept_one();
    while (!checked.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // not reading
    at_server = read_to_end(c, &server_ok);
    ::close(c);
  });
  std::thread client_thread([&] {
    const int c = dial(rig.listen_addr);
    if (c < 0) return;
    ::fcntl(c, F_SETFL, O_NONBLOCK);
    // Push until nothing more is taken for 300 ms (or 64 MB: no backpressure).
    constexpr std::size_t kLimit = 64 * kMB;
    std::string chunk(64 * 1024, '\0');
    auto last_progress = std::chrono::steady_clock::now();
    while (sent < kLimit && std::chrono::steady_clock::now() - last_progress < std::chrono::milliseconds(300)) {
      for (std::size_t i = 0; i < chunk.size(); ++i) chunk[i] = pattern(sent + i, 0);
      const ssize_t r = ::send(c, chunk.data(), chunk.size(), MSG_NOSIGNAL);
      if (r > 0) {
        sent += static_cast<std::size_t>(r);
        last_progress = std::chrono::steady_clock::now();
      } else if (errno == EAGAIN) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      } else {
        break;
      }
    }
    stalled = true;
    while (!checked.load()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ::fcntl(c, F_SETFL, 0);
    ::shutdown(c, SHUT_WR);
    char b;
    while (::recv(c, &b, 1, 0) > 0) {
    }
    ::close(c);
  });
  rig.run();
  server_thread.join();
  client_thread.join();
  CHECK(sent < 64 * kMB);               // the client was held back...
  CHECK_FALSE(reading_when_stalled);    // ...because the tunnel stopped reading it
  CHECK(held_when_stalled == 1);        // one buffer in flight, the one being written
  CHECK(allocated_when_stalled <= 2);   // memory bounded
  CHECK(server_ok);
  CHECK(matches(at_server, sent, 0));   // and nothing was lost once the server read
  CHECK(rig.closed == 1);
}

TEST_CASE("tunnel: no byte either way for the idle timeout closes both sides", "[tunnel]") {
  PeerSocket server(true);
  Rig rig(&server.addr, 300);
  bool server_ok = false, client_ok = false;
  std::string at_server, at_client;
  std::chrono::steady_clock::duration quiet{};
  std::thread server_thread([&] {
    const int c = server.accept_one();
    at_server = read_to_end(c, &server_ok);
    ::close(c);
  });
  std::thread client_thread([&] {
    const int c = dial(rig.listen_addr);
    if (c < 0) return;
    ::send(c, "x", 1, MSG_NOSIGNAL);
    const auto t0 = std::chrono::steady_clock::now();
    at_client = read_to_end(c, &client_ok);  // ends when the tunnel closes
    quiet = std::chrono::steady_clock::now() - t0;
    ::close(c);
  });
  rig.run();
  server_thread.join();
  client_thread.join();
  CHECK(client_ok);
  CHECK(server_ok);
  CHECK(at_server == "x");
  CHECK(at_client.empty());
  CHECK(quiet >= std::chrono::milliseconds(290));  // not before the timeout (the wheel's tick is 100 ms)
  CHECK(rig.closed == 1);
}

TEST_CASE("tunnel: a refused connect is reported; a second connect on the same tunnel works", "[tunnel]") {
  PeerSocket refusing(false), server(true);
  Rig rig(&refusing.addr, 60000);
  rig.retry_target = &server.addr;
  std::string at_client;
  bool client_ok = false;
  std::thread server_thread([&] {
    const int c = ::accept(server.fd, nullptr, nullptr);
    ::send(c, "hello", 5, MSG_NOSIGNAL);
    ::close(c);
  });
  std::thread client_thread([&] {
    const int c = dial(rig.listen_addr);
    if (c < 0) return;
    ::shutdown(c, SHUT_WR);
    at_client = read_to_end(c, &client_ok);
    ::close(c);
  });
  rig.run();
  server_thread.join();
  client_thread.join();
  CHECK(rig.connects == 2);
  CHECK(rig.connected == 0);
  CHECK(at_client == "hello");
  CHECK(rig.closed == 1);
}

TEST_CASE("tunnel: a connect that does not complete in time is reported as UV_ETIMEDOUT", "[tunnel]") {
  // A listener whose accept queue is full drops further SYNs: connects hang.
  PeerSocket full(false);
  REQUIRE(::listen(full.fd, 0) == 0);
  std::vector<int> fillers;
  for (int i = 0; i < 8; ++i) {
    const int f = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ::connect(f, reinterpret_cast<const sockaddr*>(&full.addr), sizeof full.addr);
    fillers.push_back(f);
  }
  Rig rig(&full.addr, 60000);
  rig.connect_ms = 300;
  std::chrono::steady_clock::duration took{};
  bool client_ok = false;
  std::thread client_thread([&] {
    const int c = dial(rig.listen_addr);
    if (c < 0) return;
    const auto t0 = std::chrono::steady_clock::now();
    read_to_end(c, &client_ok);  // the owner closes the tunnel on the failure
    took = std::chrono::steady_clock::now() - t0;
    ::close(c);
  });
  rig.run();
  client_thread.join();
  for (int f : fillers) ::close(f);
  CHECK(rig.connected == UV_ETIMEDOUT);
  CHECK(client_ok);
  CHECK(took >= std::chrono::milliseconds(250));
  CHECK(rig.closed == 1);
}

TEST_CASE("tunnel: an idle tunnel is small", "[tunnel]") {
  // Two streams (a uv_tcp_t each), the timer node, a few words; no buffer.
  CHECK(sizeof(Tunnel) < 1024);
}
