#include <catch2/catch.hpp>
#include <vector>

#include "juggler/timer_wheel.hpp"

using namespace juggler;

namespace {
struct Probe {
  TimerNode node;
  std::vector<int>* log;
  int id;
};
void record(TimerNode* n) {
  auto* p = static_cast<Probe*>(n->owner);
  p->log->push_back(p->id);
}
Probe make(std::vector<int>& log, int id) {
  Probe p{{}, &log, id};
  p.node.fire = record;
  return p;
}
}  // namespace

TEST_CASE("timers fire once, when due, in due order across ticks", "[timer]") {
  std::vector<int> log;
  TimerWheel w(1000);
  Probe a = make(log, 1), b = make(log, 2), c = make(log, 3);
  a.node.owner = &a;
  b.node.owner = &b;
  c.node.owner = &c;
  w.arm(&a.node, 1250);
  w.arm(&b.node, 1100);
  w.arm(&c.node, 1000 + 60000);  // beyond one turn of the wheel
  w.advance(1099);
  CHECK(log.empty());
  w.advance(1100);
  CHECK(log == std::vector<int>{2});
  w.advance(1300);
  CHECK(log == std::vector<int>{2, 1});
  w.advance(1000 + 51200 + 100);  // c's slot comes round before it is due
  CHECK(log == std::vector<int>{2, 1});
  w.advance(1000 + 60000);
  CHECK(log == std::vector<int>{2, 1, 3});
  CHECK_FALSE(a.node.armed());
  w.advance(200000);
  CHECK(log.size() == 3);
}

TEST_CASE("re-arming moves a timer and disarming cancels it", "[timer]") {
  std::vector<int> log;
  TimerWheel w(0);
  Probe a = make(log, 1), b = make(log, 2);
  a.node.owner = &a;
  b.node.owner = &b;
  w.arm(&a.node, 500);
  w.arm(&b.node, 500);
  w.arm(&a.node, 5000);
  TimerWheel::disarm(&b.node);
  CHECK_FALSE(b.node.armed());
  w.advance(1000);
  CHECK(log.empty());
  w.advance(5000);
  CHECK(log == std::vector<int>{1});
}

TEST_CASE("a firing timer may disarm another one due at the same time", "[timer]") {
  TimerWheel w(0);
  struct Pair {
    TimerNode first, second;
    int fired = 0;
  } p;
  p.first.owner = p.second.owner = &p;
  p.first.fire = [](TimerNode* n) {
    auto* q = static_cast<Pair*>(n->owner);
    ++q->fired;
    TimerWheel::disarm(&q->second);
  };
  p.second.fire = [](TimerNode* n) { ++static_cast<Pair*>(n->owner)->fired; };
  w.arm(&p.first, 100);
  w.arm(&p.second, 100);
  w.advance(100);
  CHECK(p.fired == 1);
}
