// Health checks: the rise/fall state machine, the probe's bytes and response
// reading (pure), then the checker against a tiny in-process HTTP server.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "juggler/health.hpp"

using namespace juggler;
using Change = HealthState::Change;

// ------------------------------------------------------------------ state machine

TEST_CASE("a server starts UP and goes DOWN after `fall` consecutive failures", "[health]") {
  HealthState s(2, 3);
  CHECK(s.up());
  CHECK(s.record(false) == Change::None);
  CHECK(s.record(false) == Change::None);
  CHECK(s.streak() == 2);
  CHECK(s.up());
  CHECK(s.record(false) == Change::WentDown);
  CHECK_FALSE(s.up());
  CHECK(s.streak() == 0);
  // Further failures change nothing.
  for (int i = 0; i < 10; ++i) CHECK(s.record(false) == Change::None);
  CHECK_FALSE(s.up());
}

TEST_CASE("a success while UP clears the failure streak", "[health]") {
  HealthState s(2, 3);
  CHECK(s.record(false) == Change::None);
  CHECK(s.record(false) == Change::None);
  CHECK(s.record(true) == Change::None);
  CHECK(s.streak() == 0);
  CHECK(s.record(false) == Change::None);
  CHECK(s.record(false) == Change::None);
  CHECK(s.up());
  CHECK(s.record(false) == Change::WentDown);
}

TEST_CASE("a DOWN server comes back after `rise` consecutive successes", "[health]") {
  HealthState s(2, 1);
  CHECK(s.record(false) == Change::WentDown);
  CHECK(s.record(true) == Change::None);
  CHECK_FALSE(s.up());
  CHECK(s.record(false) == Change::None);  // clears the success streak
  CHECK(s.streak() == 0);
  CHECK(s.record(true) == Change::None);
  CHECK(s.record(true) == Change::WentUp);
  CHECK(s.up());
  for (int i = 0; i < 10; ++i) CHECK(s.record(true) == Change::None);
}

TEST_CASE("rise and fall of 1 flip on every change of result", "[health]") {
  HealthState s(1, 1);
  CHECK(s.record(true) == Change::None);
  CHECK(s.record(false) == Change::WentDown);
  CHECK(s.record(false) == Change::None);
  CHECK(s.record(true) == Change::WentUp);
  CHECK(s.record(false) == Change::WentDown);
}

TEST_CASE("rise and fall of 0 count as 1", "[health]") {
  HealthState s(0, 0);
  CHECK(s.record(false) == Change::WentDown);
  CHECK(s.record(true) == Change::WentUp);
}

TEST_CASE("a server may start DOWN", "[health]") {
  HealthState s(3, 2, false);
  CHECK_FALSE(s.up());
  CHECK(s.record(true) == Change::None);
  CHECK(s.record(true) == Change::None);
  CHECK(s.record(true) == Change::WentUp);
}

TEST_CASE("large rise and fall", "[health]") {
  HealthState s(255, 255);
  for (int i = 0; i < 254; ++i) REQUIRE(s.record(false) == Change::None);
  CHECK(s.record(false) == Change::WentDown);
  for (int i = 0; i < 254; ++i) REQUIRE(s.record(true) == Change::None);
  CHECK(s.record(true) == Change::WentUp);
}

TEST_CASE("the state machine is usable at compile time", "[health]") {
  constexpr bool down_after_two = [] {
    HealthState s(1, 2);
    s.record(false);
    return s.record(false) == Change::WentDown && !s.up();
  }();
  STATIC_REQUIRE(down_after_two);
}

// ------------------------------------------------------------------ ending a passive ejection

TEST_CASE("an ejection ends after `rise` passes that began after it", "[health][eject]") {
  EjectionWatch w(2);
  // Not ejected: passes count for nothing.
  for (int i = 0; i < 5; ++i) CHECK_FALSE(w.record(true, 100 + static_cast<std::uint64_t>(i), 0));
  CHECK(w.passes() == 0);
  // Ejected at 1000: two passes of checks begun at 1001 and 1301.
  CHECK_FALSE(w.record(true, 1001, 1000));
  CHECK(w.passes() == 1);
  CHECK(w.record(true, 1301, 1000));
  // A failure in between starts the count over.
  CHECK_FALSE(w.record(true, 5001, 5000));
  CHECK_FALSE(w.record(false, 5301, 5000));
  CHECK(w.passes() == 0);
  CHECK_FALSE(w.record(true, 5601, 5000));
  CHECK(w.record(true, 5901, 5000));
  // rise of 0 counts as 1.
  EjectionWatch one(0);
  CHECK(one.record(true, 2, 1));
}

TEST_CASE("a pass of a check that began before the ejection does not count", "[health][eject]") {
  EjectionWatch w(1);
  // Began at 999 (or in the very millisecond of the ejection), passed after it.
  CHECK_FALSE(w.record(true, 999, 1000));
  CHECK_FALSE(w.record(true, 1000, 1000));
  CHECK(w.passes() == 0);
  CHECK(w.record(true, 1001, 1000));

  // Passes counted against one ejection do not carry over to the next one.
  EjectionWatch r(2);
  CHECK_FALSE(r.record(true, 2001, 2000));
  CHECK(r.passes() == 1);
  CHECK_FALSE(r.record(true, 2301, 2200));  // ejected again at 2200: this is the first pass since
  CHECK(r.passes() == 1);
  CHECK(r.record(true, 2601, 2200));
  // Nor to one after the ejection expired (ejected_at 0 in between).
  CHECK_FALSE(r.record(true, 3001, 3000));
  CHECK_FALSE(r.record(true, 3301, 0));
  CHECK_FALSE(r.record(true, 3601, 3000));
  CHECK(r.passes() == 1);
}

TEST_CASE("end_ejection clears the ejection it was asked to, and only that one", "[health][eject]") {
  PoolDef pool{};
  pool.max_fails = 2;
  pool.fail_window_ms = 10000;
  ServerHealth h;
  CHECK(ejection_start(h, 5000) == 0);
  CHECK_FALSE(passive_failure(h, pool, 5000));
  CHECK(passive_failure(h, pool, 5001));
  CHECK(h.ejected_until_ms.load() == 15001);
  CHECK(ejection_start(h, 6000) == 5001);
  CHECK(ejection_start(h, 15001) == 0);  // the window is over
  CHECK_FALSE(end_ejection(h, 4000));    // not this ejection
  CHECK(h.ejected_until_ms.load() == 15001);
  CHECK(end_ejection(h, 5001));
  CHECK(h.ejected_until_ms.load() == 0);
  CHECK(h.ejections.load() == 0);
  CHECK(h.fails.load() == 0);
  CHECK(ejection_start(h, 6000) == 0);
  CHECK_FALSE(end_ejection(h, 5001));  // already over
  // The back-off starts over: it takes max_fails again, and the next ejection is fail_window long.
  CHECK_FALSE(passive_failure(h, pool, 7000));
  CHECK(passive_failure(h, pool, 7001));
  CHECK(h.ejected_until_ms.load() == 17001);
  CHECK(ejection_start(h, 7002) == 7001);
}

TEST_CASE("expected statuses are an inclusive range", "[health]") {
  constexpr HealthDef h{true, Method::Get, "/ping", 1000, 100, 2, 3, 200, 399};
  CHECK_FALSE(status_expected(h, 199));
  CHECK(status_expected(h, 200));
  CHECK(status_expected(h, 302));
  CHECK(status_expected(h, 399));
  CHECK_FALSE(status_expected(h, 400));
  CHECK_FALSE(status_expected(h, 500));
  constexpr HealthDef only204{true, Method::Get, "/ping", 1000, 100, 2, 3, 204, 204};
  CHECK(status_expected(only204, 204));
  CHECK_FALSE(status_expected(only204, 200));
  CHECK_FALSE(status_expected(only204, 205));
}

TEST_CASE("check results are described for the log", "[health]") {
  CHECK(describe_check(CheckResult::ConnectRefused, 0) == "connect refused");
  CHECK(describe_check(CheckResult::Timeout, 0) == "timeout");
  CHECK(describe_check(CheckResult::BadStatus, 500) == "status 500");
  CHECK(describe_check(CheckResult::Reset, 0) == "reset");
  CHECK(describe_check(CheckResult::BadResponse, 0) == "bad response");
  CHECK(describe_check(CheckResult::Closed, 0) == "closed without response");
  CHECK(describe_check(CheckResult::Ok, 200) == "ok");
}

// ------------------------------------------------------------------ the probe's bytes

TEST_CASE("the probe request", "[health]") {
  HealthDef h{true, Method::Get, "/ping", 1000, 100, 2, 3, 200, 399};
  CHECK(health_request(h, "127.0.0.1:6901") ==
        "GET /ping HTTP/1.1\r\nHost: 127.0.0.1:6901\r\nUser-Agent: juggler-health\r\nConnection: close\r\n\r\n");
  h.method = Method::Head;
  h.path = "/health?full=1";
  CHECK(health_request(h, "[::1]:80") ==
        "HEAD /health?full=1 HTTP/1.1\r\nHost: [::1]:80\r\nUser-Agent: juggler-health\r\nConnection: close\r\n\r\n");
  h.method = Method::Post;
  CHECK(health_request(h, "a:1") ==
        "POST /health?full=1 HTTP/1.1\r\nHost: a:1\r\nUser-Agent: juggler-health\r\nConnection: close\r\n"
        "Content-Length: 0\r\n\r\n");
}

// ------------------------------------------------------------------ reading the response

namespace {
using RState = ResponseHeadReader::State;
constexpr std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
}  // namespace

TEST_CASE("a response head in one piece", "[health]") {
  ResponseHeadReader r;
  CHECK(r.feed(kOk.data(), kOk.size()) == RState::Done);
  CHECK(r.status() == 200);
  CHECK(r.bytes() == kOk.size() - 5);  // the body is not read
  CHECK(r.feed("x", 1) == RState::Done);
}

TEST_CASE("a response head byte by byte", "[health]") {
  std::string_view resp = "HTTP/1.0 503 Service Unavailable\r\nRetry-After: 5\r\n\r\n";
  ResponseHeadReader r;
  for (std::size_t i = 0; i + 1 < resp.size(); ++i) REQUIRE(r.feed(resp.data() + i, 1) == RState::NeedMore);
  CHECK(r.feed(resp.data() + resp.size() - 1, 1) == RState::Done);
  CHECK(r.status() == 503);
}

TEST_CASE("a status line alone is not enough", "[health]") {
  ResponseHeadReader r;
  std::string_view part = "HTTP/1.1 200 OK\r\nServer: x\r\n";
  CHECK(r.feed(part.data(), part.size()) == RState::NeedMore);
  CHECK(r.status() == 0);
}

TEST_CASE("interim 1xx responses are skipped", "[health]") {
  std::string_view resp = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
  ResponseHeadReader r;
  CHECK(r.feed(resp.data(), resp.size()) == RState::Done);
  CHECK(r.status() == 204);
}

TEST_CASE("what is not HTTP is a bad response", "[health]") {
  for (std::string_view junk : {std::string_view("SSH-2.0-OpenSSH_9.2\r\n"), std::string_view("HTTP/1.1 2x0 OK\r\n\r\n"),
                                std::string_view("\x16\x03\x01\x02\x00", 5)}) {
    CAPTURE(junk);
    ResponseHeadReader r;
    CHECK(r.feed(junk.data(), junk.size()) == RState::Bad);
    CHECK(r.feed(kOk.data(), kOk.size()) == RState::Bad);
  }
}

TEST_CASE("an endless head is a bad response", "[health]") {
  ResponseHeadReader r;
  std::string start = "HTTP/1.1 200 OK\r\n";
  REQUIRE(r.feed(start.data(), start.size()) == RState::NeedMore);
  std::string line = "X-Filler: " + std::string(1000, 'a') + "\r\n";
  RState s = RState::NeedMore;
  for (int i = 0; i < 100 && s == RState::NeedMore; ++i) s = r.feed(line.data(), line.size());
  CHECK(s == RState::Bad);
}

// ------------------------------------------------------------------ the checker, on loopback

namespace {

using Clock = std::chrono::steady_clock;

// A blocking HTTP server on 127.0.0.1, port 0, on a thread of its own.
class TinyServer {
 public:
  enum Mode { Ok, Fail, CloseAfterRequest, Hang, Gate };
  std::atomic<int> mode{Ok};
  std::atomic<int> gate{0};  // Gate: each request waits for a unit of this (at most 10 s), then gets 200

  TinyServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_, 64) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~TinyServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
    for (int c : held_) ::close(c);
  }
  std::uint16_t port() const { return port_; }
  int requests() {
    std::lock_guard<std::mutex> g(mu_);
    return requests_;
  }
  std::string last_request() {
    std::lock_guard<std::mutex> g(mu_);
    return last_;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 10) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) handle(c);
    }
  }
  void handle(int c) {
    std::string req;
    char buf[1024];
    while (req.find("\r\n\r\n") == std::string::npos) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) break;
      ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      req.append(buf, static_cast<std::size_t>(n));
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      ++requests_;
      last_ = req;
    }
    int m = mode.load();
    if (m == Gate) {
      for (int i = 0; i < 5000 && !stop_; ++i) {
        int g = gate.load();
        if (g > 0 && gate.compare_exchange_strong(g, g - 1)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      m = Ok;
    }
    if (m == Hang) {
      held_.push_back(c);
      return;
    }
    std::string_view resp;
    if (m == Ok) resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    if (m == Fail) resp = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    if (!resp.empty()) ::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
    ::close(c);
  }

  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<int> held_;  // Hang: answered never, closed at the end
  std::mutex mu_;
  int requests_ = 0;
  std::string last_;
};

// A loopback port nobody listens on (bound, then closed).
std::uint16_t closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A route table of one pool "web" over the given ports.
struct Table {
  Settings settings{};
  std::vector<std::string> authorities;
  std::vector<ServerDef> servers;
  std::vector<PoolDef> pools;
  std::unique_ptr<RouteTable> table;

  Table(const std::vector<std::uint16_t>& ports, HealthDef h) {
    authorities.reserve(ports.size());
    for (std::uint16_t p : ports) authorities.push_back("127.0.0.1:" + std::to_string(p));
    for (std::size_t i = 0; i < ports.size(); ++i)
      servers.push_back(ServerDef{"127.0.0.1", ports[i], authorities[i], 1, false, 0, static_cast<std::uint32_t>(i + 2)});
    pools.push_back(PoolDef{"web", Strategy::RoundRobin, HashKey::None, "", 0, static_cast<std::uint16_t>(ports.size()),
                            h, 0, 0, 0, 1});
    table = std::make_unique<RouteTable>(RouteTable{"test", settings, {}, {}, pools, servers, {}, nullptr});
  }
};

// Results seen through the callbacks (called on the checker thread).
struct Seen {
  std::mutex mu;
  std::vector<HealthEvent> events;
  std::vector<std::size_t> checks_at_event;  // checks.size() when each event came
  std::vector<std::pair<CheckResult, Clock::time_point>> checks;
  std::vector<std::uint16_t> check_servers;

  HealthCallbacks callbacks() {
    HealthCallbacks cb;
    cb.on_change = [this](const HealthEvent& e) {
      std::lock_guard<std::mutex> g(mu);
      events.push_back(e);
      checks_at_event.push_back(checks.size());
    };
    cb.on_check = [this](std::uint16_t server, CheckResult r, int) {
      std::lock_guard<std::mutex> g(mu);
      checks.emplace_back(r, Clock::now());
      check_servers.push_back(server);
    };
    return cb;
  }
  std::vector<HealthEvent> event_list() {
    std::lock_guard<std::mutex> g(mu);
    return events;
  }
  std::size_t check_count() {
    std::lock_guard<std::mutex> g(mu);
    return checks.size();
  }
  // How many checks in [from, to) had the outcome `ok`.
  int count(std::size_t from, std::size_t to, bool ok) {
    std::lock_guard<std::mutex> g(mu);
    int n = 0;
    for (std::size_t i = from; i < to && i < checks.size(); ++i) n += (checks[i].first == CheckResult::Ok) == ok;
    return n;
  }
};

// Milliseconds until pred() holds, or -1 after `limit_ms`.
long wait_for(const std::function<bool()>& pred, long limit_ms) {
  auto start = Clock::now();
  for (;;) {
    long ms = static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count());
    if (pred()) return ms;
    if (ms > limit_ms) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// Slack for a loaded CI machine (and sanitizers) on top of the ideal bound.
constexpr long kSlackMs = 1000;

}  // namespace

TEST_CASE("the checker marks a failing server DOWN within interval x fall, and UP within interval x rise",
          "[health][io]") {
  constexpr std::uint32_t interval = 50;
  constexpr std::uint8_t rise = 2, fall = 3;
  TinyServer server;
  Table t({server.port()}, HealthDef{true, Method::Get, "/ping", interval, 500, rise, fall, 200, 399});
  auto health = std::make_unique<ServerHealth[]>(1);
  Seen seen;
  HealthChecker checker(*t.table, health.get(), seen.callbacks());
  REQUIRE(checker.checked_servers() == 1);
  checker.start();

  REQUIRE(wait_for([&] { return seen.check_count() >= 3; }, 2000) >= 0);
  CHECK_FALSE(health[0].down.load());
  CHECK(health[0].up_since_ms.load() == 0);  // up from the start: no slow-start ramp
  CHECK(seen.event_list().empty());
  CHECK(server.last_request() == "GET /ping HTTP/1.1\r\nHost: " + t.authorities[0] +
                                     "\r\nUser-Agent: juggler-health\r\nConnection: close\r\n\r\n");

  server.mode = TinyServer::Fail;
  // The flag is published before the event is recorded: wait for both.
  long down_ms = wait_for([&] { return health[0].down.load() && seen.event_list().size() >= 1; }, 5000);
  INFO("DOWN after " << down_ms << " ms");
  REQUIRE(down_ms >= 0);
  // The first failing check comes at most one interval after the switch.
  CHECK(down_ms <= long(interval) * fall + interval + kSlackMs);
  auto events = seen.event_list();
  REQUIRE(events.size() == 1);
  CHECK_FALSE(events[0].up);
  CHECK(events[0].server == 0);
  CHECK(events[0].pool == 0);
  CHECK(events[0].reason == CheckResult::BadStatus);
  CHECK(events[0].status == 503);
  // Exactly `fall` failed checks, all since the switch.
  const std::size_t at_down = seen.checks_at_event[0];
  CHECK(seen.count(0, at_down, false) == fall);
  CHECK(seen.count(at_down - fall, at_down, false) == fall);

  server.mode = TinyServer::Ok;
  long up_ms = wait_for([&] { return !health[0].down.load() && seen.event_list().size() >= 2; }, 5000);
  INFO("UP after " << up_ms << " ms");
  REQUIRE(up_ms >= 0);
  CHECK(up_ms <= long(interval) * rise + interval + kSlackMs);
  events = seen.event_list();
  REQUIRE(events.size() == 2);
  CHECK(events[1].up);
  CHECK(events[1].reason == CheckResult::Ok);
  CHECK(events[1].status == 200);
  CHECK(health[0].up_since_ms.load() != 0);  // mark_up() started the ramp
  // Exactly `rise` good checks after the DOWN, the last ones before the UP.
  const std::size_t at_up = seen.checks_at_event[1];
  CHECK(seen.count(at_down, at_up, true) == rise);
  CHECK(seen.count(at_up - rise, at_up, true) == rise);

  checker.stop();
  checker.stop();  // idempotent
}

TEST_CASE("a refused connection, a close without answer and a timeout are failures", "[health][io]") {
  SECTION("connect refused") {
    Table t({closed_port()}, HealthDef{true, Method::Get, "/", 30, 500, 1, 2, 200, 399});
    auto health = std::make_unique<ServerHealth[]>(1);
    Seen seen;
    HealthChecker checker(*t.table, health.get(), seen.callbacks());
    checker.start();
    REQUIRE(wait_for([&] { return health[0].down.load() && !seen.event_list().empty(); }, 3000) >= 0);
    auto events = seen.event_list();
    REQUIRE(events.size() == 1);
    CHECK(events[0].reason == CheckResult::ConnectRefused);
  }
  SECTION("closed without response") {
    TinyServer server;
    server.mode = TinyServer::CloseAfterRequest;
    Table t({server.port()}, HealthDef{true, Method::Get, "/", 30, 500, 1, 2, 200, 399});
    auto health = std::make_unique<ServerHealth[]>(1);
    Seen seen;
    HealthChecker checker(*t.table, health.get(), seen.callbacks());
    checker.start();
    REQUIRE(wait_for([&] { return health[0].down.load() && !seen.event_list().empty(); }, 3000) >= 0);
    auto events = seen.event_list();
    REQUIRE(events.size() == 1);
    CHECK(events[0].reason == CheckResult::Closed);
  }
  SECTION("timeout, and stop() while a check hangs") {
    TinyServer server;
    server.mode = TinyServer::Hang;
    Table t({server.port()}, HealthDef{true, Method::Get, "/", 30, 60, 1, 2, 200, 399});
    auto health = std::make_unique<ServerHealth[]>(1);
    Seen seen;
    HealthChecker checker(*t.table, health.get(), seen.callbacks());
    checker.start();
    REQUIRE(wait_for([&] { return health[0].down.load() && !seen.event_list().empty(); }, 3000) >= 0);
    auto events = seen.event_list();
    REQUIRE(events.size() == 1);
    CHECK(events[0].reason == CheckResult::Timeout);
    // Let another check start and hang, then stop in the middle of it.
    std::size_t n = seen.check_count();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    checker.stop();
    CHECK(seen.check_count() <= n + 1);
  }
}

TEST_CASE("without health checks the checker starts no thread and touches nothing", "[health][io]") {
  Table t({closed_port()}, HealthDef{false, Method::Get, "", 0, 0, 0, 0, 0, 0});
  auto health = std::make_unique<ServerHealth[]>(1);
  health[0].down = true;  // e.g. set by someone else
  HealthChecker checker(*t.table, health.get());
  CHECK(checker.checked_servers() == 0);
  checker.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  CHECK(health[0].down.load());
  checker.stop();
}

TEST_CASE("first checks are spread over the interval", "[health][io]") {
  constexpr std::uint32_t interval = 400;
  std::vector<std::uint16_t> ports;
  for (int i = 0; i < 4; ++i) ports.push_back(closed_port());
  Table t(ports, HealthDef{true, Method::Get, "/", interval, 200, 2, 10, 200, 399});
  auto health = std::make_unique<ServerHealth[]>(4);
  Seen seen;
  auto start = Clock::now();
  HealthChecker checker(*t.table, health.get(), seen.callbacks());
  checker.start();
  REQUIRE(wait_for([&] { return seen.check_count() >= 4; }, 3000) >= 0);
  checker.stop();
  std::lock_guard<std::mutex> g(seen.mu);
  // Servers 0..3 are first checked at about 0, 100, 200 and 300 ms.
  for (std::size_t i = 0; i < 4; ++i) CHECK(seen.check_servers[i] == i);
  auto ms = [&](std::size_t i) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(seen.checks[i].second - start).count();
  };
  // (Unstaggered, all four would come within a few ms of each other.)
  CHECK(ms(3) - ms(0) >= 200);
  CHECK(ms(0) < 300);
}

TEST_CASE("stop() right after start() and destruction without stop() are clean", "[health][io]") {
  TinyServer server;
  Table t({server.port(), closed_port()}, HealthDef{true, Method::Get, "/", 10, 100, 1, 1, 200, 399});
  auto health = std::make_unique<ServerHealth[]>(2);
  {
    HealthChecker checker(*t.table, health.get());
    checker.start();
    checker.stop();
  }
  {
    HealthChecker checker(*t.table, health.get());
    checker.start();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }  // the destructor stops it
  SUCCEED();
}

// ------------------------------------------------------------------ ending a passive ejection, on loopback

namespace {

// The workers' clock (balance.hpp): CLOCK_MONOTONIC milliseconds.
std::uint64_t mono_ms() { return uv_hrtime() / 1000000; }

// Ejects `h` now, as max_fails failures of the request path would.
void eject(ServerHealth& h, std::uint32_t fail_window_ms) {
  PoolDef pool{};
  pool.max_fails = 1;
  pool.fail_window_ms = fail_window_ms;
  REQUIRE(passive_failure(h, pool, mono_ms()));
  REQUIRE(h.ejected_until_ms.load() != 0);
}

}  // namespace

TEST_CASE("the checker ends an ejection within interval x rise when the server passes", "[health][io][eject]") {
  constexpr std::uint32_t interval = 50;
  constexpr std::uint8_t rise = 2;
  TinyServer server;
  Table t({server.port()}, HealthDef{true, Method::Get, "/ping", interval, 500, rise, 3, 200, 399});
  auto health = std::make_unique<ServerHealth[]>(1);
  Seen seen;
  HealthChecker checker(*t.table, health.get(), seen.callbacks());
  checker.start();
  REQUIRE(wait_for([&] { return seen.check_count() >= 2; }, 3000) >= 0);
  // Ejected for a whole minute, as after a crash; the server answers its checks again.
  eject(health[0], 60000);
  const std::size_t at_eject = seen.check_count();
  long back_ms = wait_for([&] { return health[0].ejected_until_ms.load() == 0; }, 5000);
  INFO("ejection ended after " << back_ms << " ms");
  REQUIRE(back_ms >= 0);
  CHECK(back_ms <= long(interval) * rise + interval + kSlackMs);
  CHECK(health[0].ejections.load() == 0);
  CHECK(health[0].fails.load() == 0);
  CHECK_FALSE(health[0].down.load());  // it never went down: the active state is untouched
  // At least `rise` checks passed since the ejection (one of them may have begun before it).
  CHECK(seen.count(at_eject, seen.check_count(), true) >= rise);
  checker.stop();
}

TEST_CASE("a check already running when the server is ejected does not end the ejection", "[health][io][eject]") {
  constexpr std::uint32_t interval = 50;
  TinyServer server;
  server.mode = TinyServer::Gate;  // every check waits for the gate
  // rise=1: the late pass alone would end the ejection if it counted.
  Table t({server.port()}, HealthDef{true, Method::Get, "/ping", interval, 5000, 1, 3, 200, 399});
  auto health = std::make_unique<ServerHealth[]>(1);
  Seen seen;
  HealthChecker checker(*t.table, health.get(), seen.callbacks());
  checker.start();
  REQUIRE(wait_for([&] { return server.requests() >= 1; }, 3000) >= 0);  // the check began
  // Eject in a later millisecond than the check began in.
  const std::uint64_t t0 = mono_ms();
  REQUIRE(wait_for([&] { return mono_ms() > t0 + 1; }, 1000) >= 0);
  eject(health[0], 60000);
  const std::uint64_t until = health[0].ejected_until_ms.load();
  server.gate = 1;
  // That check passes; the next one begins (and waits at the gate) after it was fully handled.
  REQUIRE(wait_for([&] { return seen.check_count() >= 1 && server.requests() >= 2; }, 3000) >= 0);
  CHECK(seen.count(0, 1, true) == 1);
  CHECK(health[0].ejected_until_ms.load() == until);  // still ejected
  // The next pass began after the ejection: that one ends it.
  server.gate = 1000;
  REQUIRE(wait_for([&] { return health[0].ejected_until_ms.load() == 0; }, 3000) >= 0);
  CHECK(seen.count(0, seen.check_count(), true) >= 2);
  checker.stop();
}

TEST_CASE("a pool without an active check keeps its ejection until the window ends", "[health][io][eject]") {
  // Pool 0 is checked, pool 1 is not; both servers answer and both are ejected.
  TinyServer checked_server, unchecked_server;
  Settings settings{};
  const std::string a0 = "127.0.0.1:" + std::to_string(checked_server.port());
  const std::string a1 = "127.0.0.1:" + std::to_string(unchecked_server.port());
  std::vector<ServerDef> servers{ServerDef{"127.0.0.1", checked_server.port(), a0, 1, false, 0, 2},
                                 ServerDef{"127.0.0.1", unchecked_server.port(), a1, 1, false, 1, 3}};
  std::vector<PoolDef> pools{
      PoolDef{"checked", Strategy::RoundRobin, HashKey::None, "", 0, 1,
              HealthDef{true, Method::Get, "/ping", 30, 500, 1, 3, 200, 399}, 0, 1, 60000, 1},
      PoolDef{"unchecked", Strategy::RoundRobin, HashKey::None, "", 1, 1,
              HealthDef{false, Method::Get, "", 0, 0, 0, 0, 0, 0}, 0, 1, 60000, 4}};
  RouteTable table{"test", settings, {}, {}, pools, servers, {}, nullptr};
  auto health = std::make_unique<ServerHealth[]>(2);
  Seen seen;
  HealthChecker checker(table, health.get(), seen.callbacks());
  REQUIRE(checker.checked_servers() == 1);
  eject(health[0], 60000);
  eject(health[1], 60000);
  const std::uint64_t until = health[1].ejected_until_ms.load();
  const std::uint64_t at = health[1].ejected_at_ms.load();
  checker.start();
  // The checked server comes back; by then the unchecked one had every chance to.
  REQUIRE(wait_for([&] { return health[0].ejected_until_ms.load() == 0 && seen.check_count() >= 4; }, 5000) >= 0);
  checker.stop();
  CHECK(health[1].ejected_until_ms.load() == until);
  CHECK(health[1].ejections.load() == 1);
  CHECK(ejection_start(health[1], until - 1) == at);
  CHECK(ejection_start(health[1], until) == 0);  // the window alone ends it
  std::lock_guard<std::mutex> g(seen.mu);
  for (std::uint16_t s : seen.check_servers) CHECK(s == 0);
}
