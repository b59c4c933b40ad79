// An intrusive free list for objects recycled between requests, so steady
// state allocates nothing: T has a `T* next_free` member. At most Keep
// objects wait; what comes back beyond that is deleted, and so is what the
// list holds when it is destroyed. Not thread-safe (one per worker or thread).
#pragma once

namespace juggler {

template <class T, unsigned Keep>
class FreeList {
 public:
  FreeList() noexcept = default;
  FreeList(const FreeList&) = delete;
  FreeList& operator=(const FreeList&) = delete;
  ~FreeList() {
    while (T* t = pop()) delete t;
  }

  // An idle object, or null when none waits.
  T* pop() noexcept {
    T* t = head_;
    if (t) {
      head_ = t->next_free;
      --count_;
    }
    return t;
  }

  // Takes `t` back (deletes it when Keep already wait).
  void push(T* t) noexcept {
    if (count_ >= Keep) {
      delete t;
      return;
    }
    t->next_free = head_;
    head_ = t;
    ++count_;
  }

 private:
  T* head_ = nullptr;
  unsigned count_ = 0;
};

}  // namespace juggler
