// BufferPool's memory returns (issue #11): trim() keeps what recent load needed
// (a decaying high-water mark of buffers in use) and frees the rest; a steady
// load allocates nothing once warm.
#include <catch2/catch.hpp>
#include <vector>

#include "juggler/buffer.hpp"

using namespace juggler;

namespace {
std::vector<Buffer*> take(BufferPool& p, std::size_t n) {
  std::vector<Buffer*> v;
  for (std::size_t i = 0; i < n; ++i) v.push_back(p.get());
  return v;
}
void give(BufferPool& p, std::vector<Buffer*>& v) {
  for (Buffer* b : v) p.put(b);
  v.clear();
}
}  // namespace

TEST_CASE("an ended burst goes back to the allocator in a few trims, down to the floor", "[buffer]") {
  BufferPool pool(64, 4096, 8);
  auto burst = take(pool, 1000);
  give(pool, burst);
  REQUIRE(pool.allocated() == 1000);
  REQUIRE(pool.free_count() == 1000);
  // The burst is remembered for HighWater::kWindows trims (one every 500 ms in a worker)...
  for (std::size_t i = 0; i < HighWater::kWindows; ++i) {
    CHECK(pool.trim() == 0);
    CHECK(pool.free_count() == 1000);
  }
  // ...then the mark halves at every trim.
  std::vector<std::size_t> kept;
  for (int i = 0; i < 12; ++i) {
    const std::size_t before = pool.free_count();
    const std::size_t freed = pool.trim();
    CHECK(freed == (before - pool.free_count()) * (sizeof(Buffer) + 64));
    kept.push_back(pool.free_count());
  }
  CHECK(kept[0] == 500);
  CHECK(kept[1] == 250);
  CHECK(kept[2] == 125);
  for (std::size_t i = 1; i < kept.size(); ++i) CHECK(kept[i] <= kept[i - 1]);
  CHECK(pool.free_count() == 8);  // the floor stays however quiet
  CHECK(pool.allocated() == 8);
}

TEST_CASE("a steady load keeps its buffers: no malloc once warm", "[buffer]") {
  BufferPool pool(64, 4096, 4);
  // Warm-up: a load of up to 300 buffers in use at once, varying within each window.
  auto run_window = [&pool](std::size_t peak) {
    for (std::size_t k = 1; k <= 10; ++k) {
      auto held = take(pool, peak * k / 10);
      give(pool, held);
    }
  };
  for (int w = 0; w < 3; ++w) {
    run_window(300);
    pool.trim();
  }
  const auto mallocs = pool.mallocs();
  for (int w = 0; w < 50; ++w) {
    run_window(300);
    CHECK(pool.trim() == 0);
  }
  CHECK(pool.mallocs() == mallocs);
  CHECK(pool.allocated() == 300);
  // A window whose load dips (and a trim while buffers are in use) keeps enough
  // free ones for the recent peak.
  auto held = take(pool, 100);
  CHECK(pool.trim() == 0);
  CHECK(pool.free_count() + 100 == 300);
  auto more = take(pool, 200);
  CHECK(pool.mallocs() == mallocs);
  give(pool, held);
  give(pool, more);
}

TEST_CASE("a new peak is followed at once, and put() never holds more than `keep`", "[buffer]") {
  BufferPool pool(64, 50, 2);
  auto a = take(pool, 100);
  give(pool, a);
  CHECK(pool.free_count() == 50);  // the other 50 were freed by put()
  CHECK(pool.allocated() == 50);
  CHECK(pool.trim() == 0);         // the 100 just seen are more than the pool may keep
  CHECK(pool.free_count() == 50);
}

TEST_CASE("HighWater: follows a rise at once, holds the recent peak, then halves, never below the floor",
          "[buffer]") {
  HighWater w(3);
  w.note(40);
  CHECK(w.keep(0) == 40);
  CHECK(w.keep(0) == 40);  // the last kWindows windows' peak
  CHECK(w.keep(0) == 40);
  CHECK(w.keep(0) == 40);
  CHECK(w.keep(0) == 20);  // the 40 is older than that: halving
  w.note(12);
  CHECK(w.keep(10) == 3);  // max(12, 20 / 2) - 10 in use = 2: the floor
  CHECK(w.keep(0) == 12);  // the window that saw 12 is recent
  CHECK(w.keep(0) == 12);
  CHECK(w.keep(0) == 12);
  CHECK(w.keep(0) == 10);  // the next one began with 10 in use
  CHECK(w.keep(0) == 5);
  CHECK(w.keep(0) == 3);
  CHECK(w.keep(0) == 3);
  CHECK(w.keep(100) == 3);  // more in use than ever noted: the floor
  CHECK(w.high() == 100);
}
