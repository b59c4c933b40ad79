// Open addressing with linear probing, shared by the tables of src/cache
// (the flights' fixed table, the memory store's slots): a free slot ends a
// run, so removal cannot just free a slot in the middle of one.
#pragma once

#include <cstddef>

namespace juggler {

// The first free slot of the run that starts at `home` (the table has one).
template <class Slot, class Used>
std::size_t probe_free(const Slot* slots, std::size_t mask, std::size_t home, Used used) noexcept {
  while (used(slots[home])) home = (home + 1) & mask;
  return home;
}

// Frees slot `hole` of `slots` (size mask + 1) by backward shift: each later
// slot of the run moves into the hole unless its home lies (cyclically)
// after the hole, so that every key stays reachable from its home without
// crossing a free slot. used(slot): not free; home(slot): its home index.
template <class Slot, class Used, class Home>
void probe_erase(Slot* slots, std::size_t mask, std::size_t hole, Used used, Home home) noexcept {
  // At most one lap (a table with no free slot left has no end of run).
  for (std::size_t n = 0, j = (hole + 1) & mask; n < mask && used(slots[j]); ++n, j = (j + 1) & mask) {
    if (((j - home(slots[j])) & mask) >= ((j - hole) & mask)) {
      slots[hole] = slots[j];
      hole = j;
    }
  }
  slots[hole] = Slot{};
}

}  // namespace juggler
