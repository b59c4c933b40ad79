// A per-worker coarse timer wheel: arming or disarming a timeout is a couple
// of pointer writes, not a libuv heap operation (and a connection carries 32
// bytes instead of a uv_timer_t). Timeouts fire within one tick after they are
// due, from the worker's tick callback.
#pragma once

#include <cstdint>

namespace juggler {

struct TimerNode {
  TimerNode* prev = nullptr;  // null while not armed
  TimerNode* next = nullptr;
  std::uint64_t due_ms = 0;
  void (*fire)(TimerNode*) = nullptr;  // called once when due; may re-arm or free the owner
  void* owner = nullptr;               // what `fire` acts on
  bool armed() const noexcept { return prev != nullptr; }
};

class TimerWheel {
 public:
  static constexpr std::uint64_t kTickMs = 100;
  static constexpr std::uint32_t kSlots = 512;  // one turn = 51.2 s; longer timeouts go round again

  explicit TimerWheel(std::uint64_t now_ms) noexcept : cursor_(now_ms / kTickMs) {
    for (TimerNode& s : slots_) s.prev = s.next = &s;
  }
  TimerWheel(const TimerWheel&) = delete;
  TimerWheel& operator=(const TimerWheel&) = delete;

  // (Re-)arms `n` to fire at `due_ms`.
  void arm(TimerNode* n, std::uint64_t due_ms) noexcept {
    disarm(n);
    n->due_ms = due_ms;
    std::uint64_t tick = due_ms / kTickMs;
    if (tick < cursor_) tick = cursor_;
    link(&slots_[tick % kSlots], n);
  }

  static void disarm(TimerNode* n) noexcept {
    if (!n->prev) return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = nullptr;
  }

  // Fires everything due at or before `now_ms`.
  void advance(std::uint64_t now_ms) noexcept {
    const std::uint64_t last = now_ms / kTickMs;
    for (; cursor_ <= last; ++cursor_) {
      TimerNode& slot = slots_[cursor_ % kSlots];
      // Move what is due to a private list first: firing may arm or disarm
      // any node, including ones in this slot.
      TimerNode due;
      due.prev = due.next = &due;
      for (TimerNode* n = slot.next; n != &slot;) {
        TimerNode* next = n->next;
        if (n->due_ms <= now_ms) {
          disarm(n);
          link(&due, n);
        }
        n = next;
      }
      while (due.next != &due) {
        TimerNode* n = due.next;
        disarm(n);
        n->fire(n);
      }
    }
    cursor_ = last;  // the current tick may gain nodes due later in it
  }

 private:
  static void link(TimerNode* head, TimerNode* n) noexcept {
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
  }

  TimerNode slots_[kSlots];
  std::uint64_t cursor_;
};

}  // namespace juggler
