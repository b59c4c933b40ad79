#include "cache/redis_codec.hpp"

#include <algorithm>
#include <cstring>

namespace juggler {

namespace {

// Layout (little-endian, as the machines that share a Redis are):
//   0 magic "JRC1"   4 status u16   6 flags u8 (1 revalidate, 2 auth_ok)   7 pad
//   8 stored (unix ms) u64   16 age u64   24 lifetime u64   32 stale-if-error u64
//   40 stale-while-revalidate u64   48 vary len u32   52 head len u32   56 body len u32
//   60 etag offset in head u16, len u16   64 last-modified offset u16, len u16   68 pad u32
constexpr char kMagic[4] = {'J', 'R', 'C', '1'};
constexpr std::uint8_t kRevalidate = 1, kAuthOk = 2;

template <class T>
void put_at(char* p, T v) noexcept {
  std::memcpy(p, &v, sizeof v);
}
template <class T>
T get_at(const char* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Where a view into `head` starts (both empty: 0, 0). Views longer than the
// field can say are not kept (the entry just has no such validator).
void put_view(char* p, std::string_view head, std::string_view v) noexcept {
  std::uint16_t off = 0, len = 0;
  if (!v.empty() && v.data() >= head.data() && v.data() + v.size() <= head.data() + head.size()) {
    const std::size_t o = static_cast<std::size_t>(v.data() - head.data());
    if (o <= 0xFFFF && v.size() <= 0xFFFF) off = static_cast<std::uint16_t>(o), len = static_cast<std::uint16_t>(v.size());
  }
  put_at(p, off);
  put_at(p + 2, len);
}

}  // namespace

void redis_encode(const CacheEntry& e, std::uint64_t loop_now, std::uint64_t unix_now, std::string& out) {
  const std::string_view vary = e.vary, head = e.head, body = e.body;
  char h[kRedisRecordHeader] = {};
  std::memcpy(h, kMagic, 4);
  put_at(h + 4, static_cast<std::uint16_t>(e.status));
  put_at(h + 6, static_cast<std::uint8_t>((e.revalidate ? kRevalidate : 0) | (e.auth_ok ? kAuthOk : 0)));
  const std::uint64_t stored = e.stored_ms.load(std::memory_order_relaxed);
  const std::uint64_t since = loop_now > stored ? loop_now - stored : 0;
  put_at(h + 8, unix_now > since ? unix_now - since : 0);
  put_at(h + 16, e.age_ms.load(std::memory_order_relaxed));
  // The lifetime as it stands now: a 304 may have moved fresh_until.
  const std::uint64_t until = e.fresh_until_ms.load(std::memory_order_relaxed);
  const std::uint64_t age = e.age_ms.load(std::memory_order_relaxed);
  put_at(h + 24, until > stored ? until - stored + age : age);
  put_at(h + 32, e.stale_if_error_ms);
  put_at(h + 40, e.stale_while_revalidate_ms);
  put_at(h + 48, static_cast<std::uint32_t>(vary.size()));
  put_at(h + 52, static_cast<std::uint32_t>(head.size()));
  put_at(h + 56, static_cast<std::uint32_t>(body.size()));
  put_view(h + 60, head, e.etag);
  put_view(h + 64, head, e.last_modified);
  out.append(h, sizeof h).append(vary).append(head).append(body);
}

bool redis_decode(std::string_view bytes, std::uint64_t loop_now, std::uint64_t unix_now, CacheEntry& e) {
  if (bytes.size() < kRedisRecordHeader || std::memcmp(bytes.data(), kMagic, 4) != 0) return false;
  const char* h = bytes.data();
  const std::uint64_t vary_len = get_at<std::uint32_t>(h + 48), head_len = get_at<std::uint32_t>(h + 52),
                      body_len = get_at<std::uint32_t>(h + 56);
  if (kRedisRecordHeader + vary_len + head_len + body_len != bytes.size()) return false;
  const int status = get_at<std::uint16_t>(h + 4);
  if (status < 100 || status > 999) return false;
  const std::string_view vary = bytes.substr(kRedisRecordHeader, vary_len);
  const std::string_view head = bytes.substr(kRedisRecordHeader + vary_len, head_len);
  auto view = [&](const char* p) -> std::string_view {
    const std::uint16_t off = get_at<std::uint16_t>(p), len = get_at<std::uint16_t>(p + 2);
    if (len == 0 || static_cast<std::size_t>(off) + len > head.size()) return {};
    return head.substr(off, len);
  };
  e.status = status;
  const auto flags = get_at<std::uint8_t>(h + 6);
  e.revalidate = (flags & kRevalidate) != 0;
  e.auth_ok = (flags & kAuthOk) != 0;
  // Its arrival on this loop's clock: as long ago as the wall clocks say
  // (never in the future: a clock that stepped back makes it just stored).
  const std::uint64_t stored_unix = get_at<std::uint64_t>(h + 8);
  const std::uint64_t ago = unix_now > stored_unix ? unix_now - stored_unix : 0;
  const std::uint64_t stored = loop_now > ago ? loop_now - ago : 0;
  const std::uint64_t age = get_at<std::uint64_t>(h + 16), lifetime = get_at<std::uint64_t>(h + 24);
  e.lifetime_ms = lifetime;
  e.set_times(stored, age, lifetime);
  e.stale_if_error_ms = get_at<std::uint64_t>(h + 32);
  e.stale_while_revalidate_ms = get_at<std::uint64_t>(h + 40);
  e.vary = vary;
  e.head = head;
  e.body = bytes.substr(kRedisRecordHeader + vary_len + head_len, body_len);
  e.etag = view(h + 60);
  e.last_modified = view(h + 64);
  return true;
}

std::uint64_t redis_ttl_ms(const CacheEntry& e, std::uint64_t loop_now) {
  const std::uint64_t until = e.fresh_until_ms.load(std::memory_order_relaxed);
  const std::uint64_t fresh = e.revalidate || until <= loop_now ? 0 : until - loop_now;
  std::uint64_t keep = fresh + std::max(e.stale_if_error_ms, e.stale_while_revalidate_ms);
  const bool validator = !e.etag.empty() || !e.last_modified.empty();
  if (keep == 0 && e.revalidate && validator) keep = kRedisRevalidateKeepMs;
  return keep;
}

}  // namespace juggler
