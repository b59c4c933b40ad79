// Smooth weighted round-robin, backup servers, the tried set and health.
#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "juggler/balance.hpp"

using namespace juggler;

namespace {

constexpr Settings kSettings{};
constexpr HealthDef kNoHealth{false, Method::Get, "", 0, 0, 0, 0, 0, 0};

// Pool 0: a(5) b(1) c(1); pool 1: x(1) y(1) z backup.
constexpr ServerDef kServers[] = {
    {"127.0.0.1", 1, "a", 5, false, 0, 1}, {"127.0.0.1", 2, "b", 1, false, 0, 2},
    {"127.0.0.1", 3, "c", 1, false, 0, 3}, {"127.0.0.1", 4, "x", 1, false, 1, 4},
    {"127.0.0.1", 5, "y", 1, false, 1, 5}, {"127.0.0.1", 6, "z", 1, true, 1, 6},
};
constexpr PoolDef kPools[] = {
    {"weighted", Strategy::RoundRobin, HashKey::None, "", 0, 3, kNoHealth, 0, 3, 10000, 1},
    {"backup", Strategy::RoundRobin, HashKey::None, "", 3, 3, kNoHealth, 0, 3, 10000, 4},
};
const RouteTable kTable{"test", kSettings, {}, {}, kPools, kServers, {}, nullptr};

std::string sequence(Balancer& b, std::uint16_t pool, int n, const Tried& tried = Tried{}) {
  std::string out;
  RequestHead head;
  for (int i = 0; i < n; ++i) {
    int s = b.pick(pool, head, tried);
    out += s < 0 ? std::string("-") : std::string(kServers[s].authority);
  }
  return out;
}

// Pool 0 with passive health on: `max_fails` failures within 1 s eject.
PoolDef passive_pool(std::uint16_t max_fails) {
  PoolDef p = kPools[0];
  p.max_fails = max_fails;
  p.fail_window_ms = 1000;
  return p;
}

}  // namespace

TEST_CASE("smooth weighted round-robin interleaves by weight", "[balance]") {
  auto health = std::make_unique<ServerHealth[]>(6);
  Balancer b(kTable, health.get());
  // nginx's smooth sequence for 5,1,1: never five a's in a row.
  CHECK(sequence(b, 0, 7) == "aabacaa");
  CHECK(sequence(b, 0, 7) == "aabacaa");
  std::map<char, int> counts;
  for (char c : sequence(b, 0, 700)) ++counts[c];
  CHECK(counts['a'] == 500);
  CHECK(counts['b'] == 100);
  CHECK(counts['c'] == 100);
}

TEST_CASE("equal weights rotate", "[balance]") {
  auto health = std::make_unique<ServerHealth[]>(6);
  Balancer b(kTable, health.get());
  CHECK(sequence(b, 1, 6) == "xyxyxy");
}

TEST_CASE("worker offset staggers the start", "[balance]") {
  auto health = std::make_unique<ServerHealth[]>(6);
  Balancer w0(kTable, health.get(), 0);
  Balancer w1(kTable, health.get(), 1);
  CHECK(sequence(w0, 1, 1) != sequence(w1, 1, 1));
}

TEST_CASE("servers that are down or tried are skipped; backup only when no other is left", "[balance]") {
  auto health = std::make_unique<ServerHealth[]>(6);
  Balancer b(kTable, health.get());
  health[3].down = true;
  CHECK(sequence(b, 1, 4) == "yyyy");
  Tried tried;
  tried.add(1);  // y, by its position in the pool
  CHECK(sequence(b, 1, 3, tried) == "zzz");
  health[3].down = false;
  CHECK(sequence(b, 1, 2, tried) == "xx");
  tried.add(0);
  tried.add(2);
  CHECK(sequence(b, 1, 1, tried) == "-");
}

TEST_CASE("down servers leave the weighted sequence fair among the rest", "[balance]") {
  auto health = std::make_unique<ServerHealth[]>(6);
  Balancer b(kTable, health.get());
  health[0].down = true;
  std::map<char, int> counts;
  for (char c : sequence(b, 0, 100)) ++counts[c];
  CHECK(counts['b'] == 50);
  CHECK(counts['c'] == 50);
  CHECK(counts.count('a') == 0);
}

TEST_CASE("passive health ejects after max_fails in the window, doubling on repeat", "[balance]") {
  PoolDef p = passive_pool(3);
  ServerHealth h;
  CHECK_FALSE(passive_failure(h, p, 10000));
  CHECK_FALSE(passive_failure(h, p, 10100));
  CHECK(passive_failure(h, p, 10200));  // third in the window: ejected for fail_window
  CHECK(h.ejected_until_ms.load() == 11200);
  // After the ejection expires the next request probes: one failure ejects again, twice as long.
  CHECK(passive_failure(h, p, 11300));
  CHECK(h.ejected_until_ms.load() == 11300 + 2000);
  CHECK(passive_failure(h, p, 13400));
  CHECK(h.ejected_until_ms.load() == 13400 + 4000);
  // A success clears the record: it takes max_fails again.
  passive_success(h);
  CHECK_FALSE(passive_failure(h, p, 20000));
  CHECK_FALSE(passive_failure(h, p, 20001));
  CHECK(passive_failure(h, p, 20002));
  CHECK(h.ejected_until_ms.load() == 21002);
}

TEST_CASE("failures while ejected do not eject again", "[balance]") {
  PoolDef p = passive_pool(2);
  ServerHealth h;
  CHECK_FALSE(passive_failure(h, p, 10000));
  CHECK(passive_failure(h, p, 10001));
  // Requests sent before the ejection fail after it: the first back-off stands.
  for (std::uint64_t t = 10002; t < 10010; ++t) CHECK_FALSE(passive_failure(h, p, t));
  CHECK(h.ejected_until_ms.load() == 11001);
  CHECK(h.ejections.load() == 1);
}

TEST_CASE("workers failing at the same moment make one ejection", "[balance]") {
  PoolDef p = passive_pool(1);
  // Two threads released together fail the same server once each, many times
  // over: the ejection is made once and is one fail_window long.
  int doubled = 0;
  for (int round = 0; round < 5000 && doubled == 0; ++round) {
    ServerHealth h;
    std::atomic<int> ready{0};
    std::atomic<int> ejected{0};
    auto fail = [&] {
      ready.fetch_add(1);
      while (ready.load() < 2) {
      }
      ejected += passive_failure(h, p, 5000) ? 1 : 0;
    };
    std::thread a(fail);
    std::thread b(fail);
    a.join();
    b.join();
    if (ejected.load() != 1 || h.ejected_until_ms.load() != 6000) ++doubled;
  }
  CHECK(doubled == 0);
}

TEST_CASE("failures spread over more than the window do not eject", "[balance]") {
  PoolDef p = passive_pool(2);
  ServerHealth h;
  CHECK_FALSE(passive_failure(h, p, 5000));
  CHECK_FALSE(passive_failure(h, p, 6500));
  CHECK_FALSE(passive_failure(h, p, 8000));
  p.max_fails = 0;  // off
  for (int i = 0; i < 10; ++i) CHECK_FALSE(passive_failure(h, p, 8001 + static_cast<std::uint64_t>(i)));
}

TEST_CASE("ejected servers are skipped until the ejection expires", "[balance]") {
  auto health = std::make_unique<ServerHealth[]>(6);
  Balancer b(kTable, health.get());
  health[3].ejected_until_ms = 5000;
  RequestHead head;
  for (int i = 0; i < 4; ++i) CHECK(b.pick(1, head, Tried{}, {{}, {}, 4999}) == 4);
  std::map<int, int> counts;
  for (int i = 0; i < 4; ++i) ++counts[b.pick(1, head, Tried{}, {{}, {}, 5000})];
  CHECK(counts[3] == 2);
}
