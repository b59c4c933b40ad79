// Helpers shared by the libFuzzer targets (tests/fuzz/fuzz_*.cpp): invariant
// checks that abort() with a message, so a violation is a crash libFuzzer keeps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "juggler/http.hpp"

namespace juggler::fuzz {

[[noreturn]] inline void fail(const char* what, const char* file, int line) {
  std::fprintf(stderr, "INVARIANT VIOLATED at %s:%d: %s\n", file, line, what);
  std::abort();
}

#define FUZZ_CHECK(cond)                                              \
  do {                                                                \
    if (!(cond)) ::juggler::fuzz::fail(#cond, __FILE__, __LINE__);    \
  } while (0)

// [p, p+n) lies inside [lo, lo+cap).
inline bool within(const void* p, std::size_t n, const void* lo, std::size_t cap) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  auto b = reinterpret_cast<std::uintptr_t>(lo);
  return a >= b && n <= cap && a - b <= cap - n;
}

inline bool within(std::string_view v, const void* lo, std::size_t cap) {
  return v.empty() || within(v.data(), v.size(), lo, cap);
}

// Where the split points of an input go: the first bytes of the fuzz input are
// not HTTP but control bytes, so libFuzzer explores the splits too.
struct Splits {
  std::size_t at[2];
  unsigned count;
};

inline Splits make_splits(std::uint8_t ctl, std::uint8_t a, std::uint8_t b, std::size_t size) {
  Splits s{{0, 0}, ctl % 3u};
  if (size == 0) {
    s.count = 0;
    return s;
  }
  std::size_t x = size * a / 256;
  std::size_t y = size * b / 256;
  if (x > y) std::swap(x, y);
  s.at[0] = x;
  s.at[1] = y;
  return s;
}

// The reads the session sees of buf[from..size): the split points after
// `from`, increasing, then the end.
struct Reads {
  std::size_t ends[3];
  unsigned count = 0;
};

inline Reads make_reads(const Splits& s, std::size_t from, std::size_t size) {
  Reads r;
  for (unsigned i = 0; i < s.count; ++i)
    if (s.at[i] > from && (r.count == 0 || s.at[i] > r.ends[r.count - 1])) r.ends[r.count++] = s.at[i];
  r.ends[r.count++] = size;
  return r;
}

// Feeds a head to `p` read by read from `pos`, as the session does, until the
// parser stops asking for more or the reads run out (then pos is the last
// read's end and the result NeedMore). `e` is the current read.
inline ParseEvent feed_head(MessageParser& p, const char* buf, const Reads& r, std::size_t& pos, unsigned& e,
                            std::size_t& used) {
  ParseEvent ev = ParseEvent::NeedMore;
  while (e < r.count) {
    const std::size_t avail = r.ends[e] - pos;
    ev = p.feed(buf + pos, avail, &used);
    FUZZ_CHECK(used <= avail);
    if (ev != ParseEvent::NeedMore) break;
    FUZZ_CHECK(used == avail);
    pos = r.ends[e++];
  }
  return ev;
}

// The checks every parsed head must pass, request or response.
inline void check_head(const MessageParser& p, const char* buf, std::size_t size) {
  FUZZ_CHECK(p.head_begin() != nullptr);
  FUZZ_CHECK(p.head_len() <= size);
  FUZZ_CHECK(p.head_len() <= p.max_head_bytes);
  FUZZ_CHECK(within(p.head_begin(), p.head_len(), buf, size));
  const char* hb = p.head_begin();
  const std::size_t hl = p.head_len();
  // The head ends with its empty line (known bug 4 when it does not:
  // regressions/*/bare_cr_ends_head, llhttp takes CR + any byte as its end).
  FUZZ_CHECK(hl >= 2 && hb[hl - 1] == '\n');
  // No bare CR anywhere in it (RFC 9112 2.2): a server behind may take one as
  // a line end where we did not (CVE-2023-30589 class).
  for (std::size_t i = 0; i + 1 < hl; ++i) FUZZ_CHECK(hb[i] != '\r' || hb[i + 1] == '\n');
  FUZZ_CHECK(within(p.first_line(), hb, hl));
  FUZZ_CHECK(p.header_count() <= 1000);
  const char* prev_end = hb;
  for (std::uint32_t i = 0; i < p.header_count(); ++i) {
    const HeaderSpan& h = p.headers()[i];
    std::string_view name = p.header_name(h);
    std::string_view value = p.header_value(h);
    std::string_view line = p.header_line(i);
    FUZZ_CHECK(!name.empty());
    FUZZ_CHECK(within(name, hb, hl));
    FUZZ_CHECK(within(value, hb, hl));
    FUZZ_CHECK(within(line, hb, hl));
    FUZZ_CHECK(line.data() == name.data());
    FUZZ_CHECK(h.value_off >= h.name_len + 1);
    // Known bug 4 again (regressions/request/bare_cr_*): "Name: \rX" ends the
    // line at CR + any byte, so the next field loses its first byte.
    FUZZ_CHECK(h.value_off + h.value_len <= line.size());
    // Lines are in order and do not overlap.
    FUZZ_CHECK(line.data() >= prev_end);
    prev_end = line.data() + line.size();
    // A name is a token: no whitespace, colon, CR, LF or NUL in it.
    for (char c : name) FUZZ_CHECK(c != ' ' && c != '\t' && c != ':' && c != '\r' && c != '\n' && c != '\0');
    // A value has no CR or LF (obs-fold and bare CR/LF are refused) and no trailing OWS.
    for (char c : value) FUZZ_CHECK(c != '\r' && c != '\n' && c != '\0');
    if (!value.empty()) FUZZ_CHECK(value.back() != ' ' && value.back() != '\t');
  }
  // No two Content-Length headers with different values get through; llhttp
  // refuses any second one, and Content-Length never comes with chunked.
  unsigned cl = 0;
  for (std::uint32_t i = 0; i < p.header_count(); ++i)
    if (p.headers()[i].kind == HeaderKind::ContentLength) ++cl;
  FUZZ_CHECK(cl <= 1);
  FUZZ_CHECK(!(cl == 1 && p.chunked()));
}

// Concatenates iov slices, checking each lies inside one of the allowed regions.
struct Region {
  const void* lo;
  std::size_t cap;
};

inline std::string gather(const uv_buf_t* iov, unsigned n, const Region* regions, unsigned region_count) {
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    FUZZ_CHECK(iov[i].base != nullptr || iov[i].len == 0);
    bool ok = false;
    for (unsigned r = 0; r < region_count && !ok; ++r) ok = within(iov[i].base, iov[i].len, regions[r].lo, regions[r].cap);
    FUZZ_CHECK(ok);
    out.append(iov[i].base, iov[i].len);
  }
  return out;
}

}  // namespace juggler::fuzz
