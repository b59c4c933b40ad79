// The exchange's state machine driven without sockets: a fake downstream (the
// client connection and its request body) and fake server connections
// (Worker::upstream_connect hands them out), with the route table of
// tests/routes/basic.def (pool `web`, three servers, timeout.upstream 5s).
// Each test feeds the events a connection would (step()) and checks what
// the exchange did on both sides.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "decode.hpp"
#include "exchange/exchange.hpp"
#include "upstream/connector.hpp"
#include "juggler/upstream.hpp"

namespace juggler {
const RouteTable& basic_table() noexcept;
}

using namespace juggler;

namespace {

// The client connection: what the exchange sent it and how it ended it. The
// request has no body (complete at once).
struct FakeDownstream final : Downstream, RequestBody {
  std::string sent;
  int done_calls = 0, abort_calls = 0;
  bool closed = false;
  // A send whose write fails at once (as a TLS stream's can): the connection
  // reports the client gone from inside send().
  Exchange* fail_sends_of = nullptr;
  // Sends that complete only when the test says so (complete_send), reading
  // the slices then, as a pending socket write does.
  bool late = false;
  std::vector<uv_buf_t> pending;

  FakeDownstream() {
    std::memcpy(ip, "192.0.2.7", 9);
    ip_len = 9;
  }
  bool send(uv_buf_t* iov, unsigned n) noexcept override {
    if (fail_sends_of) {
      step(fail_sends_of, Event::ClientGone);
      return false;
    }
    if (late) {
      pending.assign(iov, iov + n);
      return false;
    }
    for (unsigned i = 0; i < n; ++i) sent.append(iov[i].base, iov[i].len);
    return true;
  }
  bool sending() const noexcept override { return !pending.empty(); }
  void complete_send(Exchange* ex) {
    for (const uv_buf_t& b : pending) sent.append(b.base, b.len);
    pending.clear();
    step(ex, Event::ClientWritten);
  }
  void done(bool close, bool) noexcept override {
    ++done_calls;
    closed = close;
  }
  void abort() noexcept override { ++abort_calls; }

  std::string_view available() noexcept override { return {}; }
  void consume(std::size_t) noexcept override {}
  void written() noexcept override {}
  void rewind() noexcept override {}
  bool skip() noexcept override { return complete(); }
};

// A server connection: what the exchange wrote to it, and how it let go.
struct FakeUpstream final : Upstream {
  std::string written;
  bool released = false;
  bool closing = false;  // close() was called

  bool write(uv_buf_t* iov, unsigned n) noexcept override {
    for (unsigned i = 0; i < n; ++i) written.append(iov[i].base, iov[i].len);
    return true;
  }
  void set_reading(bool on) noexcept override { reading = on; }
  void release() noexcept override { released = true; }
  void close() noexcept override { closing = true; }
};

struct Fixture;
Fixture* g_fixture = nullptr;

Upstream* fake_connect(Worker& w, std::uint16_t server, Exchange* ex, int* rc);

// A worker on basic.def whose server connections are fakes. `idle` makes the
// next connection a kept-alive one (connected at once, reused).
struct Fixture {
  Shared shared;
  std::unique_ptr<Worker> worker;
  std::vector<std::unique_ptr<FakeUpstream>> conns;
  std::vector<int> servers;  // the server each connection went to, in order
  bool idle = false;
  FakeDownstream down;
  std::string request;
  Exchange* ex = nullptr;

  Fixture() {
    const RouteTable& t = basic_table();
    shared.config.table = &t;
    shared.config.settings = t.settings;
    shared.first = make_routing(t, nullptr);
    worker = std::make_unique<Worker>(shared, 0, -1, *shared.first, t);
    worker->upstream_connect = fake_connect;
    worker->loop.time = 1000000;
    g_fixture = this;
  }
  ~Fixture() {
    for (auto& c : conns) worker->put_buffer(c->in);
    g_fixture = nullptr;
  }
  Fixture(const Fixture&) = delete;
  Fixture& operator=(const Fixture&) = delete;

  // A new exchange for `head` (a complete request head without a body),
  // parsed as the HTTP/1 connection would, then Event::HeadParsed.
  void begin(std::string head) {
    request = std::move(head);
    ex = exchange_get(*worker);
    exchange_begin(ex, &down, &down);
    std::size_t used = 0;
    REQUIRE(ex->req.feed(request.data(), request.size(), &used) != ParseEvent::Error);
    ex->req.feed(request.data() + used, 0, &used);
    step(ex, Event::HeadParsed);
  }
  FakeUpstream& conn(std::size_t i) { return *conns.at(i); }
  // Bytes from the server on connection i, as its read callback delivers them.
  void server_sends(std::size_t i, std::string_view bytes) {
    FakeUpstream& c = conn(i);
    if (!c.in) c.in = worker->buffers.get();
    std::memcpy(c.in->data + c.in_len, bytes.data(), bytes.size());
    c.in_len += static_cast<std::uint32_t>(bytes.size());
    step(c.ex, Event::ServerData);
  }
};

Upstream* fake_connect(Worker& w, std::uint16_t server, Exchange* ex, int* rc) {
  Fixture& f = *g_fixture;
  auto c = std::make_unique<FakeUpstream>();
  c->worker = &w;
  c->server = server;
  c->ex = ex;
  c->reused = f.idle;
  f.idle = false;
  f.servers.push_back(server);
  f.conns.push_back(std::move(c));
  *rc = 0;
  return f.conns.back().get();
}

constexpr std::string_view kGet = "GET /ping HTTP/1.1\r\nHost: a.test\r\n\r\n";
constexpr std::string_view kPost = "POST /ping HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n\r\n";
constexpr std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

bool starts_with(const std::string& s, std::string_view prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

}  // namespace

TEST_CASE("a refused connection goes to the next server, which answers", "[exchange]") {
  Fixture f;
  f.begin(std::string(kGet));
  REQUIRE(f.conns.size() == 1);
  CHECK(f.ex->st == State::Connect);
  step(f.ex, Event::Connected, UV_ECONNREFUSED);
  REQUIRE(f.conns.size() == 2);
  CHECK(f.servers[1] != f.servers[0]);
  CHECK(f.conn(0).closing);
  CHECK(f.down.sent.empty());
  step(f.ex, Event::Connected, 0);
  CHECK(starts_with(f.conn(1).written, "GET /ping HTTP/1.1\r\n"));
  CHECK(f.ex->st == State::AwaitHead);
  f.server_sends(1, kOk);
  CHECK(f.down.sent == kOk);
  CHECK(f.down.done_calls == 1);
  CHECK_FALSE(f.down.closed);
  CHECK(f.conn(1).released);
}

TEST_CASE("a kept-alive connection closed before answering is replayed on a fresh one", "[exchange]") {
  Fixture f;
  f.idle = true;
  // A POST: the replay is for the stale connection, not the retry budget of
  // idempotent requests.
  f.begin(std::string(kPost));
  REQUIRE(f.conns.size() == 1);
  CHECK(f.conn(0).reused);
  CHECK(starts_with(f.conn(0).written, "POST /ping HTTP/1.1\r\n"));  // sent at once on the idle connection
  step(f.ex, Event::ServerEof, UV_EOF);
  REQUIRE(f.conns.size() == 2);
  CHECK_FALSE(f.conn(1).reused);
  CHECK(f.conn(0).closing);
  CHECK(f.down.sent.empty());
  step(f.ex, Event::Connected, 0);
  CHECK(f.conn(1).written == f.conn(0).written);  // the same request again
  f.server_sends(1, kOk);
  CHECK(f.down.sent == kOk);
  CHECK(f.down.done_calls == 1);
}

TEST_CASE("a server silent past timeout.upstream gets 504, not a retry", "[exchange]") {
  Fixture f;
  f.begin(std::string(kGet));
  step(f.ex, Event::Connected, 0);
  REQUIRE(f.ex->st == State::AwaitHead);
  const std::uint32_t limit = settings(*f.worker).upstream_timeout_ms;
  Exchange* ex = f.ex;
  f.worker->loop.time = ex->progress_ms + limit - 1;  // not yet: the timer re-arms
  on_exchange_timer(&ex->timer);
  CHECK(f.down.sent.empty());
  CHECK(ex->st == State::AwaitHead);
  f.worker->loop.time = ex->progress_ms + limit;
  on_exchange_timer(&ex->timer);
  CHECK(starts_with(f.down.sent, "HTTP/1.1 504 "));
  CHECK(f.conns.size() == 1);
  CHECK(f.conn(0).closing);
  CHECK(f.down.done_calls == 1);
}

TEST_CASE("a reset in the middle of the response head is a 502", "[exchange]") {
  Fixture f;
  // A POST is not retried once it may have reached the server.
  f.begin(std::string(kPost));
  step(f.ex, Event::Connected, 0);
  f.server_sends(0, "HTTP/1.1 200 OK\r\nContent-Le");
  CHECK(f.down.sent.empty());
  CHECK(f.ex->st == State::AwaitHead);
  step(f.ex, Event::ServerEof, UV_ECONNRESET);
  CHECK(starts_with(f.down.sent, "HTTP/1.1 502 "));
  CHECK(f.conns.size() == 1);
  CHECK(f.down.done_calls == 1);
}

TEST_CASE("a client that fails inside a send is cut once, after the handler returned", "[exchange]") {
  Fixture f;
  f.begin(std::string(kGet));
  step(f.ex, Event::Connected, 0);
  Exchange* ex = f.ex;
  f.down.fail_sends_of = ex;
  f.server_sends(0, kOk);
  CHECK(f.down.abort_calls == 1);
  CHECK(f.down.done_calls == 0);
  CHECK(f.conn(0).closing);  // not kept: the exchange did not end cleanly
  CHECK(ex->st == State::Cut);  // the handler's own next state did not overwrite the end
  CHECK(f.worker->active_exchanges == 0);
}

namespace {
Downstream* g_hook_down = nullptr;
Upstream* g_hook_up = nullptr;
int g_hook_calls = 0;
void test_tunnel(Exchange* ex) {
  ++g_hook_calls;
  g_hook_down = ex->down;
  g_hook_up = ex->up;
  ex->up = nullptr;  // taken
}
constexpr std::string_view kUpgrade =
    "GET /ping HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
constexpr std::string_view k101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

// `request` goes to a server, which answers 101.
void switched(Fixture& f, std::string_view request) {
  f.begin(std::string(request));
  step(f.ex, Event::Connected, 0);
  f.server_sends(0, k101);
}
}  // namespace

TEST_CASE("a 101 to a request that asked for the upgrade hands both sides to the tunnel hook", "[exchange]") {
  g_hook_calls = 0;
  set_tunnel_hook(test_tunnel);
  Fixture f;
  switched(f, kUpgrade);
  set_tunnel_hook(nullptr);
  CHECK(g_hook_calls == 1);
  CHECK(g_hook_down == &f.down);
  CHECK(g_hook_up == &f.conn(0));
  CHECK_FALSE(f.conn(0).closing);  // the tunnel owns it now
  CHECK(f.down.sent.empty());
  CHECK(f.down.done_calls + f.down.abort_calls == 0);
}

TEST_CASE("a 101 the client did not ask for, or with no tunnel hook, is a 502", "[exchange]") {
  g_hook_calls = 0;
  SECTION("not asked for") {
    set_tunnel_hook(test_tunnel);
    Fixture f;
    switched(f, kGet);
    set_tunnel_hook(nullptr);
    CHECK(starts_with(f.down.sent, "HTTP/1.1 502 "));
  }
  SECTION("no hook") {
    Fixture f;
    switched(f, kUpgrade);
    CHECK(starts_with(f.down.sent, "HTTP/1.1 502 "));
  }
  CHECK(g_hook_calls == 0);
}

TEST_CASE("a filtered response waits for the client: nothing is pushed and the server is not read while a send is "
          "pending", "[exchange][filter]") {
  Fixture f;
  f.down.late = true;
  f.begin("GET /gz/page HTTP/1.1\r\nHost: a.test\r\nAccept-Encoding: gzip\r\n\r\n");
  step(f.ex, Event::Connected, 0);
  std::string body;  // prose-like: about 3:1, so the encoder's output runs over many sends
  for (unsigned i = 0; body.size() < 300000; ++i) body += std::to_string(i * 2654435761u % 100003) + " lorem ";
  body.resize(300000);
  f.server_sends(0, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 300000\r\n\r\n");
  std::size_t at = 0;
  int waits = 0;
  while (f.down.done_calls == 0 && waits < 10000) {
    FakeUpstream& c = f.conn(0);
    if (f.down.sending()) {
      CHECK_FALSE(c.reading);  // backpressure: the server waits for the client
      ++waits;
      f.down.complete_send(f.ex);
      continue;
    }
    REQUIRE(c.reading);
    REQUIRE(at < body.size());
    const std::size_t k = std::min<std::size_t>({4096, body.size() - at, c.in ? c.in->cap - c.in_len : 4096});
    REQUIRE(k > 0);
    f.server_sends(0, std::string_view(body).substr(at, k));
    at += k;
  }
  CHECK(at == body.size());
  CHECK(waits > 3);
  CHECK(f.down.done_calls == 1);
  CHECK(f.conn(0).released);
  // What the client got, read when each send completed: the head, then the
  // chunks, which inflate to the body (an output overwritten before its send
  // completed would not).
  const std::size_t head_end = f.down.sent.find("\r\n\r\n") + 4;
  const std::string head = f.down.sent.substr(0, head_end);
  CHECK(head.find("Content-Encoding: gzip\r\n") != std::string::npos);
  CHECK(head.find("Transfer-Encoding: chunked\r\n") != std::string::npos);
  CHECK(head.find("Content-Length") == std::string::npos);
  std::string gz;
  for (std::size_t p = head_end;;) {
    const std::size_t eol = f.down.sent.find("\r\n", p);
    REQUIRE(eol != std::string::npos);
    const std::size_t n = std::stoul(f.down.sent.substr(p, eol - p), nullptr, 16);
    if (n == 0) break;
    gz += f.down.sent.substr(eol + 2, n);
    p = eol + 2 + n + 2;
  }
  CHECK(juggler_test::gunzip(gz) == body);
}
