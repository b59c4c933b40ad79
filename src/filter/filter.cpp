#include "filter/filter.hpp"

namespace juggler {

bool FilterChain::push(std::string_view in, bool last, FilterOut& out) noexcept {
  if (busy_) return false;
  out.n = 0;
  FilterOut a, b;
  FilterOut* from = &a;
  FilterOut* to = &b;
  from->add(in.data(), in.size());
  for (unsigned i = 0; i < count_; ++i) {
    to->n = 0;
    // Every slice of the previous stage's output, in order; `last` goes with
    // the final one (or with an empty call when there was none).
    if (from->n == 0) {
      if (!stages_[i]->process({}, last, *to)) return false;
    }
    for (unsigned k = 0; k < from->n; ++k) {
      const std::string_view slice(from->slices[k].base, from->slices[k].len);
      if (!stages_[i]->process(slice, last && k + 1 == from->n, *to)) return false;
    }
    FilterOut* t = from;
    from = to;
    to = t;
  }
  out = *from;
  busy_ = out.n > 0;
  // Nothing to write: no stage's memory is referenced any more (a later stage
  // took a copy of what an earlier one made).
  if (!busy_) written();
  return true;
}

void FilterChain::written() noexcept {
  for (unsigned i = 0; i < count_; ++i) stages_[i]->written();
  busy_ = false;
}

}  // namespace juggler
