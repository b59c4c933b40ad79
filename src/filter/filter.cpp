#include "filter/filter.hpp"

#include <cstring>

namespace juggler {

int find_header(const MessageParser& m, std::string_view lower_name) noexcept {
  for (std::uint32_t i = 0; i < m.header_count(); ++i)
    if (iequals(m.header_name(m.headers()[i]), lower_name)) return static_cast<int>(i);
  return -1;
}

bool HeadEdit::add(std::string_view name, std::string_view v1, std::string_view v2, std::string_view v3) noexcept {
  const std::size_t need = name.size() + 2 + v1.size() + v2.size() + v3.size() + 2;
  if (need > room()) return false;
  char* p = buf_ + len_;
  for (std::string_view part : {name, std::string_view(": "), v1, v2, v3, std::string_view("\r\n")}) {
    if (part.empty()) continue;
    std::memcpy(p, part.data(), part.size());
    p += part.size();
  }
  len_ += need;
  return true;
}

bool FilterChain::head(HeadEdit& edit) noexcept {
  unsigned kept = 0;
  for (unsigned i = 0; i < count_; ++i)
    if (stages_[i]->head(edit)) stages_[kept++] = stages_[i];
  count_ = kept;
  return kept > 0;
}

FilterStatus FilterChain::push(std::string_view in, bool last, FilterOut& out, std::size_t* used) noexcept {
  *used = 0;
  out.n = 0;
  if (busy_ || count_ == 0) return FilterStatus::Failed;
  FilterOut a, b;
  const FilterStatus first = stages_[0]->process(in, last, a, used);
  if (first == FilterStatus::Failed) return first;
  // The later stages see the end of the body only once the first one is done.
  const bool rest_last = last && first == FilterStatus::Done;
  FilterOut* from = &a;
  FilterOut* to = &b;
  for (unsigned i = 1; i < count_; ++i) {
    to->n = 0;
    std::size_t took = 0;
    // Every slice of the previous stage's output, in order; `last` goes with
    // the final one (or with an empty call when there was none).
    if (from->n == 0 && stages_[i]->process({}, rest_last, *to, &took) != FilterStatus::Done)
      return FilterStatus::Failed;
    for (unsigned k = 0; k < from->n; ++k) {
      const std::string_view slice(from->slices[k].base, from->slices[k].len);
      if (stages_[i]->process(slice, rest_last && k + 1 == from->n, *to, &took) != FilterStatus::Done ||
          took != slice.size())
        return FilterStatus::Failed;
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
  return first;
}

void FilterChain::written() noexcept {
  for (unsigned i = 0; i < count_; ++i) stages_[i]->written();
  busy_ = false;
}

}  // namespace juggler
