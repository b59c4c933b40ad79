// The cache's Redis record (src/cache/redis_codec): what one process writes
// another reads back with the same facts, times moved onto its own loop
// clock; a value that is not a record is refused, never trusted; the PX TTL.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <string>

#include "cache/redis_codec.hpp"
#include "cache/store.hpp"

using namespace juggler;

namespace {

constexpr std::uint64_t kUnix = 1'700'000'000'000;  // wall clock, ms

// A memory-style entry as the store stage fills it, arrived at loop time `at`.
CacheEntry* stored(std::uint64_t at) {
  CacheEntry* e = cache_entry_of("", std::string("accept-encoding\0001\0", 18),
                                 "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
                                 "Cache-Control: max-age=60\r\n",
                                 "hello, redis");
  e->etag = e->head.substr(e->head.find('"'), 4);
  const std::size_t lm = e->head.find("Tue");
  e->last_modified = e->head.substr(lm, 29);
  e->status = 200;
  e->auth_ok = true;
  e->lifetime_ms = 60'000;
  e->set_times(at, 5'000, 60'000);  // 5 s old on arrival: fresh until at + 55 s
  e->stale_if_error_ms = 30'000;
  e->stale_while_revalidate_ms = 10'000;
  return e;
}

// The value as hiredis would hand it over: a malloc'd copy.
char* blob_of(const std::string& value) {
  char* b = static_cast<char*>(std::malloc(value.size() + 1));
  std::memcpy(b, value.data(), value.size());
  return b;
}

}  // namespace

TEST_CASE("redis record: another process reads the same entry, on its own clock", "[cache][redis]") {
  CacheEntry* e = stored(1'000);
  std::string value;
  redis_encode(*e, 3'000, kUnix, value);  // written 2 s after it arrived
  REQUIRE(value.size() == kRedisRecordHeader + e->vary.size() + e->head.size() + e->body.size());

  // Read 4 s of wall time later by a process whose loop clock reads 500'000.
  CacheEntry* r = cache_entry_for_blob();
  r->blob = blob_of(value);
  REQUIRE(redis_decode({r->blob, value.size()}, 500'000, kUnix + 4'000, *r));
  CHECK(r->head == e->head);
  CHECK(r->body == e->body);
  CHECK(r->vary == e->vary);
  CHECK(r->etag == "\"v1\"");
  CHECK(r->last_modified == "Tue, 14 Nov 2023 22:13:20 GMT");
  CHECK(r->status == 200);
  CHECK(r->auth_ok);
  CHECK_FALSE(r->revalidate);
  CHECK(r->stale_if_error_ms == 30'000);
  CHECK(r->stale_while_revalidate_ms == 10'000);
  // Arrived 6 s ago (2 s before the write, 4 s since), 5 s old then: 11 s now.
  CHECK(r->age_now_ms(500'000) == 11'000);
  CHECK(r->fresh(500'000 + 48'999));
  CHECK_FALSE(r->fresh(500'000 + 49'000));
  // It re-encodes (a 304's update) to the same bytes but for the times.
  std::string again;
  redis_encode(*r, 500'000, kUnix + 4'000, again);
  CHECK(again.size() == value.size());
  CHECK(again.substr(kRedisRecordHeader) == value.substr(kRedisRecordHeader));
  cache_entry_release(r);  // frees the blob; the entry goes back to the pool
  cache_entry_release(e);
}

TEST_CASE("redis record: a value that is not one of ours is a miss", "[cache][redis]") {
  CacheEntry* e = stored(0);
  std::string value;
  redis_encode(*e, 0, kUnix, value);
  cache_entry_release(e);
  CacheEntry r;
  CHECK_FALSE(redis_decode("", 0, kUnix, r));
  CHECK_FALSE(redis_decode("hello", 0, kUnix, r));
  CHECK_FALSE(redis_decode(std::string_view(value).substr(0, value.size() - 1), 0, kUnix, r));  // cut short
  CHECK_FALSE(redis_decode(value + "x", 0, kUnix, r));
  std::string bad = value;
  bad[0] = 'X';  // another writer's, or another version's
  CHECK_FALSE(redis_decode(bad, 0, kUnix, r));
  bad = value;
  bad[52] = '\xff';  // a head length past the end
  CHECK_FALSE(redis_decode(bad, 0, kUnix, r));
  bad = value;
  bad[62] = '\x7f';  // an ETag past the head: dropped, not read out of bounds
  REQUIRE(redis_decode(bad, 0, kUnix, r));
  CHECK(r.etag.empty());
  // A writer's clock ahead of ours: just stored, not from the future.
  REQUIRE(redis_decode(value, 10'000, kUnix - 60'000, r));
  CHECK(r.stored_ms.load() == 10'000);
}

TEST_CASE("redis record: PX is the rest of its freshness plus the longer stale window", "[cache][redis]") {
  CacheEntry* e = stored(1'000);  // fresh until 56'000
  CHECK(redis_ttl_ms(*e, 6'000) == 50'000 + 30'000);
  e->stale_if_error_ms = 0;
  CHECK(redis_ttl_ms(*e, 6'000) == 50'000 + 10'000);
  e->stale_while_revalidate_ms = 0;
  CHECK(redis_ttl_ms(*e, 6'000) == 50'000);
  CHECK(redis_ttl_ms(*e, 56'000) == 0);  // nothing left to keep
  e->revalidate = true;  // no-cache: kept to be revalidated, having validators
  CHECK(redis_ttl_ms(*e, 6'000) == kRedisRevalidateKeepMs);
  e->etag = e->last_modified = {};
  CHECK(redis_ttl_ms(*e, 6'000) == 0);
  cache_entry_release(e);
}
