// Servers by name: slot assignment (appear, vanish, reorder, more records than
// slots), the seqlock'd slot address, and an answer applied to a Routing as
// the balancer and the idle lists see it.
#include <arpa/inet.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <map>
#include <string>
#include <thread>

#include "juggler/balance.hpp"
#include "juggler/worker.hpp"
#include "resolve/resolver.hpp"
#include "resolve/slots.hpp"

using namespace juggler;

namespace {

SlotAddr v4(std::uint8_t last) {
  SlotAddr a;
  a.family = 4;
  a.bytes[0] = 127;
  a.bytes[1] = 0;
  a.bytes[2] = 195;
  a.bytes[3] = last;
  return a;
}

using Slots = std::vector<std::optional<SlotAddr>>;

// "1 2 - 3": the last byte of each slot's address, - for an empty one.
std::string show(const Slots& s) {
  std::string out;
  for (const auto& a : s) out += (out.empty() ? "" : " ") + (a ? std::to_string(a->bytes[3]) : std::string("-"));
  return out;
}

Slots assign(const Slots& cur, std::vector<SlotAddr> records, std::size_t* left_out = nullptr) {
  return assign_slots(cur, std::move(records), left_out);
}

constexpr Settings kSettings{};
constexpr HealthDef kNoHealth{false, Method::Get, "", 0, 0, 0, 0, 0, 0};
// Pool 0 (round robin): one numeric server, then 3 slots of api.test:80.
// Pool 1 (consistent_hash on a header): 4 slots of hash.test:80.
constexpr ServerDef kServers[] = {
    {"127.0.0.1", 1, "127.0.0.1:1", 1, false, 0, 1},
    {"api.test", 80, "api.test:80", 1, false, 0, 2, 1},
    {"api.test", 80, "api.test:80", 1, false, 0, 2, 2},
    {"api.test", 80, "api.test:80", 1, false, 0, 2, 3},
    {"hash.test", 80, "hash.test:80", 1, false, 1, 4, 1},
    {"hash.test", 80, "hash.test:80", 1, false, 1, 4, 2},
    {"hash.test", 80, "hash.test:80", 1, false, 1, 4, 3},
    {"hash.test", 80, "hash.test:80", 1, false, 1, 4, 4},
    {"ramp.test", 80, "ramp.test:80", 1, false, 2, 5, 1},
    {"ramp.test", 80, "ramp.test:80", 1, false, 2, 5, 2},
};
constexpr PoolDef kPools[] = {
    {"web", Strategy::RoundRobin, HashKey::None, "", 0, 4, kNoHealth, 0, 3, 10000, 1},
    {"hashed", Strategy::ConsistentHash, HashKey::Header, "x-user", 4, 4, kNoHealth, 0, 3, 10000, 3},
    {"ramped", Strategy::RoundRobin, HashKey::None, "", 8, 2, kNoHealth, 5000, 3, 10000, 5},
};
constexpr ResolveDef kResolves[] = {
    {"api.test", 80, 0, 1, 3, false, 2},
    {"hash.test", 80, 1, 4, 4, false, 4},
    {"ramp.test", 80, 2, 8, 2, false, 6},
};
const RouteTable kTable{"resolve-unit.def", kSettings, {}, {}, kPools, kServers, {}, nullptr, nullptr, "",
                        kResolves};

std::string slot_text(const Routing& r, std::size_t server) {
  if (r.health[server].unresolved.load()) return "-";
  sockaddr_storage ss;
  r.slot_addr[server].load(ss);
  SlotAddr a;
  REQUIRE(slot_addr_from(reinterpret_cast<const sockaddr*>(&ss), a));
  return slot_addr_text(a);
}

}  // namespace

TEST_CASE("resolve slots: addresses fill the empty slots in address order", "[resolve]") {
  const Slots empty(4);
  CHECK(show(assign(empty, {v4(2), v4(1)})) == "1 2 - -");
  std::size_t out = 9;
  CHECK(show(assign(empty, {v4(1), v4(1), v4(2)}, &out)) == "1 2 - -");  // duplicates count once
  CHECK(out == 0);
  CHECK(show(assign(empty, {})) == "- - - -");
}

TEST_CASE("resolve slots: a record that appears takes a free slot; the others stay put", "[resolve]") {
  const Slots cur = assign(Slots(4), {v4(1), v4(5)});
  REQUIRE(show(cur) == "1 5 - -");
  CHECK(show(assign(cur, {v4(5), v4(3), v4(1)})) == "1 5 3 -");
}

TEST_CASE("resolve slots: a record that vanishes empties its slot only", "[resolve]") {
  const Slots cur = assign(Slots(4), {v4(1), v4(2), v4(3)});
  const Slots next = assign(cur, {v4(3), v4(1)});
  CHECK(show(next) == "1 - 3 -");
  // A new record later fills the hole, not a slot that kept its address.
  CHECK(show(assign(next, {v4(1), v4(3), v4(9)})) == "1 9 3 -");
}

TEST_CASE("resolve slots: a record list that only reorders changes nothing", "[resolve]") {
  const Slots cur = assign(Slots(4), {v4(7), v4(1), v4(4)});
  REQUIRE(show(cur) == "1 4 7 -");
  CHECK(assign(cur, {v4(4), v4(7), v4(1)}) == cur);
  CHECK(assign(cur, {v4(1), v4(4), v4(7), v4(4)}) == cur);
}

TEST_CASE("resolve slots: more records than slots: placed ones stay, the lowest new ones fill in", "[resolve]") {
  std::size_t out = 0;
  const Slots cur = assign(Slots(2), {v4(9), v4(3), v4(5)}, &out);
  CHECK(show(cur) == "3 5");
  CHECK(out == 1);
  // 3 vanishes: 9 takes its slot (5 stays where it was).
  CHECK(show(assign(cur, {v4(9), v4(5)}, &out)) == "9 5");
  CHECK(out == 0);
  // A lower new address does not push out one that is placed.
  CHECK(show(assign(cur, {v4(1), v4(3), v4(5)}, &out)) == "3 5");
  CHECK(out == 1);
}

TEST_CASE("resolve slots: IPv6 and IPv4 records, text and sockaddr round trip", "[resolve]") {
  SlotAddr six;
  six.family = 6;
  six.bytes[15] = 1;
  const Slots s = assign(Slots(2), {six, v4(1)});
  CHECK(slot_addr_text(*s[0]) == "127.0.195.1");
  CHECK(slot_addr_text(*s[1]) == "::1");
  const sockaddr_storage ss = slot_sockaddr(six, 8080);
  SlotAddr back;
  REQUIRE(slot_addr_from(reinterpret_cast<const sockaddr*>(&ss), back));
  CHECK(back == six);
  CHECK(ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port) == 8080);
}

TEST_CASE("slot address: a reader sees a whole address and its version, never a mix", "[resolve]") {
  SlotAddress slot;
  sockaddr_storage out;
  CHECK(slot.load(out) == 0);
  // IPv6: the address spans three of the seqlock's words, so a torn read would show.
  SlotAddr x, y;
  x.family = y.family = 6;
  x.bytes.fill(0x11);
  y.bytes.fill(0x22);
  const sockaddr_storage a = slot_sockaddr(x, 80), b = slot_sockaddr(y, 80);
  slot.store(a);
  const std::uint32_t v1 = slot.load(out);
  CHECK(v1 != 0);
  CHECK(v1 % 2 == 0);
  CHECK(std::memcmp(&out, &a, sizeof(sockaddr_in6)) == 0);
  slot.store(b);
  CHECK(slot.version() != v1);
  // A writer flipping between the two while a reader reads; the reader must
  // only ever see one of them.
  std::atomic<bool> stop{false};
  std::atomic<long> writes{0};
  std::thread writer([&] {
    for (long i = 0; !stop.load(std::memory_order_relaxed); ++i) {
      slot.store(i % 2 ? a : b);
      writes.store(i + 1, std::memory_order_relaxed);
    }
  });
  while (writes.load() < 1000) std::this_thread::yield();
  int torn = 0;
  for (int i = 0; i < 300000; ++i) {
    slot.load(out);
    if (std::memcmp(&out, &a, sizeof(sockaddr_in6)) != 0 && std::memcmp(&out, &b, sizeof(sockaddr_in6)) != 0) ++torn;
  }
  stop = true;
  writer.join();
  CHECK(writes.load() > 1000);
  CHECK(torn == 0);
}

TEST_CASE("resolve: an answer applied to a Routing enables, moves and empties slots", "[resolve]") {
  auto r = make_routing(kTable, nullptr);
  // Slots start empty: out of every pick.
  for (std::size_t s = 1; s <= 3; ++s) CHECK(r->health[s].unresolved.load());
  Balancer b(kTable, r->health.get());
  RequestHead head;
  for (int i = 0; i < 4; ++i) CHECK(b.pick(0, head, Tried{}) == 0);

  apply_answer(*r, 0, {v4(2), v4(1)}, 1000, false);
  CHECK(slot_text(*r, 1) == "127.0.195.1");
  CHECK(slot_text(*r, 2) == "127.0.195.2");
  CHECK(slot_text(*r, 3) == "-");
  CHECK(r->health[1].up_since_ms.load() == 0);  // at start-up: full weight at once
  std::map<int, int> picks;
  for (int i = 0; i < 30; ++i) ++picks[b.pick(0, head, Tried{})];
  CHECK(picks == std::map<int, int>{{0, 10}, {1, 10}, {2, 10}});

  // A connection made to slot 1's address now stays usable while the address does.
  sockaddr_storage copy;
  std::uint32_t version = 0;
  server_sockaddr(*r, 1, copy, version);
  CHECK_FALSE(server_moved(*r, 1, version));
  CHECK_FALSE(server_moved(*r, 0, 0));  // a numeric server never moves

  // A reorder changes nothing; a new record starts the ramp (ramp = true).
  apply_answer(*r, 0, {v4(1), v4(2)}, 2000, true);
  CHECK_FALSE(server_moved(*r, 1, version));
  apply_answer(*r, 0, {v4(3), v4(2)}, 3000, true);
  CHECK(slot_text(*r, 1) == "127.0.195.3");  // 1 vanished, 3 took its slot
  CHECK(server_moved(*r, 1, version));        // what was idle to .1 is not reused
  CHECK(r->health[1].up_since_ms.load() == 0);  // the pool has no slow start
  apply_answer(*r, 0, {v4(2)}, 4000, true);
  CHECK(slot_text(*r, 1) == "-");
  picks.clear();
  for (int i = 0; i < 20; ++i) ++picks[b.pick(0, head, Tried{})];
  CHECK(picks == std::map<int, int>{{0, 10}, {2, 10}});
}

TEST_CASE("resolve: consistent hashing keeps keys on their addresses through reorders and additions", "[resolve]") {
  auto r = make_routing(kTable, nullptr);
  Balancer b(kTable, r->health.get());
  apply_answer(*r, 1, {v4(1), v4(2), v4(3)}, 1000, false);
  auto owners = [&] {
    std::map<std::string, std::string> out;
    for (int k = 0; k < 300; ++k) {
      const std::string user = "user" + std::to_string(k);
      const Header h{"X-User", user};
      RequestHead head;
      head.headers = {&h, 1};
      const int s = b.pick(1, head, Tried{});
      REQUIRE(s >= 4);
      out[user] = slot_text(*r, static_cast<std::size_t>(s));
    }
    return out;
  };
  const auto before = owners();
  std::map<std::string, int> spread;
  for (const auto& [k, a] : before) ++spread[a];
  CHECK(spread.size() == 3);  // every address owns keys (the slots hash apart)
  apply_answer(*r, 1, {v4(3), v4(1), v4(2)}, 2000, true);
  CHECK(owners() == before);
  apply_answer(*r, 1, {v4(3), v4(1), v4(2), v4(4)}, 3000, true);
  const auto after = owners();
  int moved = 0;
  for (const auto& [k, a] : before)
    if (after.at(k) != a) {
      ++moved;
      CHECK(after.at(k) == "127.0.195.4");  // keys move only to the new address
    }
  CHECK(moved > 0);
  CHECK(moved < 150);
}

TEST_CASE("resolve: a record that appears later ramps up over the pool's slow start", "[resolve]") {
  auto r = make_routing(kTable, nullptr);
  apply_answer(*r, 2, {v4(1)}, 1000, false);  // start-up: full weight at once
  CHECK(r->health[8].up_since_ms.load() == 0);
  r->health[8].fails.store(3);
  apply_answer(*r, 2, {v4(1), v4(2)}, 7000, true);  // a lookup later: the new one ramps
  CHECK(r->health[8].up_since_ms.load() == 0);
  CHECK(r->health[8].fails.load() == 3);  // the kept address keeps its record
  CHECK(r->health[9].up_since_ms.load() == 7000);
  Balancer b(kTable, r->health.get());
  RequestHead head;
  std::map<int, int> picks;
  for (int i = 0; i < 110; ++i) ++picks[b.pick(2, head, Tried{}, {{}, {}, 7000})];
  CHECK(picks[9] == 10);  // 10% of its weight at the start of the ramp
  picks.clear();
  for (int i = 0; i < 100; ++i) ++picks[b.pick(2, head, Tried{}, {{}, {}, 12000})];
  CHECK(picks[9] == 50);  // ramp over: an equal share
}
