// Counters and gauges of one worker that another thread reads (the admin
// listener's scrape): written only by the worker that owns them, read by
// anyone at any time.
//
// Each is a relaxed atomic written with a load and a store, not a
// read-modify-write: with one writer no update can be lost, the request path
// pays what a plain increment costs (no lock prefix, no cache line taken from
// another core), and a reader sees a value that was true a moment ago. The
// scrape sums the workers' values; nothing is shared between workers.
#pragma once

#include <atomic>
#include <cstdint>

namespace juggler {

// A monotonic count (Prometheus counter). Writer: the owning worker only.
class Counter {
 public:
  Counter() noexcept = default;
  Counter(const Counter& o) noexcept : v_(o.get()) {}
  Counter& operator=(const Counter&) = delete;

  Counter& operator++() noexcept {
    add(1);
    return *this;
  }
  void add(std::uint64_t n) noexcept { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t get() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

// A level that goes up and down (Prometheus gauge), used like the integer it
// stands for (++, --, comparisons, conversions). Writer: the owning worker only.
template <class T>
class Gauge {
 public:
  Gauge() noexcept = default;
  Gauge(const Gauge& o) noexcept : v_(o.get()) {}
  Gauge& operator=(const Gauge&) = delete;
  Gauge& operator=(T v) noexcept {
    v_.store(v, std::memory_order_relaxed);
    return *this;
  }

  Gauge& operator++() noexcept { return *this = static_cast<T>(get() + 1); }
  Gauge& operator--() noexcept { return *this = static_cast<T>(get() - 1); }
  operator T() const noexcept { return get(); }  // NOLINT(google-explicit-constructor): reads as the integer
  [[nodiscard]] T get() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<T> v_{0};
};

}  // namespace juggler
