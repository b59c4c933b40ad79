// The cache's RFC 9111 decisions (src/cache/rules) and its memory store
// (src/cache/store): Cache-Control, HTTP dates, storability and freshness
// lifetime; the LRU bounded by bytes, variants and purge.
#include <catch2/catch.hpp>
#include <uv.h>

#include <cstring>
#include <string>
#include <vector>

#include "cache/collapse.hpp"
#include "cache/rules.hpp"
#include "cache/store.hpp"
#include "juggler/route.hpp"

using namespace juggler;

namespace {

constexpr std::int64_t kNow = 1'700'000'000;

ResponseFacts ok(std::string_view cache_control = {}) {
  ResponseFacts f;
  f.status = 200;
  f.cc.parse(cache_control);
  return f;
}

CacheEntry* entry(const std::string& key, const std::string& vary, std::size_t body) {
  CacheEntry* e = cache_entry_of(key, vary, "HTTP/1.1 200 OK\r\n", std::string(body, 'x'));
  e->hash = cache_key_hash(key);
  return e;
}

bool any(const CacheEntry&, const void*) { return true; }
bool vary_is(const CacheEntry& e, const void* want) { return e.vary == *static_cast<const std::string*>(want); }

CacheEntry* find(MemoryStore& s, const std::string& key) {
  bool pending = true;
  CacheEntry* e = s.find(cache_key_hash(key), key, any, nullptr, &pending);
  CHECK_FALSE(pending);
  return e;
}

}  // namespace

TEST_CASE("cache: Cache-Control directives, merged across fields", "[cache]") {
  CacheControl cc;
  cc.parse("public, max-age=60, s-maxage=\"30\"");
  cc.parse("Stale-If-Error=10, stale-while-revalidate=5, proxy-revalidate");
  CHECK(cc.is_public);
  CHECK(cc.max_age == 60);
  CHECK(cc.s_maxage == 30);
  CHECK(cc.stale_if_error == 10);
  CHECK(cc.stale_while_revalidate == 5);
  CHECK(cc.must_revalidate);
  CHECK_FALSE(cc.no_store);
  CacheControl bad;
  bad.parse("max-age=ten, no-cache=\"Set-Cookie\", private");
  CHECK(bad.max_age == 0);  // invalid: stale at once
  CHECK(bad.no_cache);
  CHECK(bad.is_private);
}

TEST_CASE("cache: HTTP dates (IMF-fixdate) both ways", "[cache]") {
  CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777);
  CHECK(parse_http_date(" Sun, 06 Nov 1994 08:49:37 GMT ") == 784111777);
  CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == -1);
  CHECK(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT") == -1);
  CHECK(parse_http_date("0") == -1);
  char out[30] = {};
  format_http_date(784111777, out);
  CHECK(std::string(out) == "Sun, 06 Nov 1994 08:49:37 GMT");
}

TEST_CASE("cache: freshness lifetime: s-maxage, max-age, Expires - Date, the route's TTL", "[cache]") {
  CHECK(decide_store(ok("max-age=60"), false, kCacheNoBound, kNow).lifetime_ms == 60'000);
  CHECK(decide_store(ok("max-age=60, s-maxage=5"), false, kCacheNoBound, kNow).lifetime_ms == 5'000);
  // The route's TTL is an upper bound ...
  CHECK(decide_store(ok("max-age=600"), false, 30'000, kNow).lifetime_ms == 30'000);
  CHECK(decide_store(ok("max-age=10"), false, 30'000, kNow).lifetime_ms == 10'000);
  // ... and the lifetime of a response that names none (a heuristic status).
  CHECK(decide_store(ok(), false, 30'000, kNow).lifetime_ms == 30'000);
  CHECK_FALSE(decide_store(ok(), false, kCacheNoBound, kNow).store);
  ResponseFacts e = ok();
  e.has_expires = true;
  e.date = kNow - 100;
  e.expires = kNow + 20;  // 120 s after the server's Date
  CHECK(decide_store(e, false, kCacheNoBound, kNow).lifetime_ms == 120'000);
  e.date = -1;  // no Date: from now
  CHECK(decide_store(e, false, kCacheNoBound, kNow).lifetime_ms == 20'000);
  e.expires = -1;  // invalid Expires: already expired, so not worth storing without a validator
  CHECK_FALSE(decide_store(e, false, kCacheNoBound, kNow).store);
  ResponseFacts aged = ok("max-age=60");
  aged.age = 15;
  const StoreDecision d = decide_store(aged, false, kCacheNoBound, kNow);
  CHECK(d.store);
  CHECK(d.age_ms == 15'000);
  aged.age = 60;  // arrived stale, nothing to revalidate with
  CHECK_FALSE(decide_store(aged, false, kCacheNoBound, kNow).store);
}

TEST_CASE("cache: what a shared cache never stores", "[cache]") {
  CHECK(decide_store(ok("max-age=60"), false, kCacheNoBound, kNow).store);
  CHECK_FALSE(decide_store(ok("no-store, max-age=60"), false, kCacheNoBound, kNow).store);
  CHECK_FALSE(decide_store(ok("private, max-age=60"), false, kCacheNoBound, kNow).store);
  ResponseFacts cookie = ok("max-age=60");
  cookie.set_cookie = true;
  CHECK_FALSE(decide_store(cookie, false, kCacheNoBound, kNow).store);
  cookie.cc.parse("public");
  CHECK(decide_store(cookie, false, kCacheNoBound, kNow).store);
  // Authorization: only what the server marks as shared.
  CHECK_FALSE(decide_store(ok("max-age=60"), true, kCacheNoBound, kNow).store);
  CHECK(decide_store(ok("s-maxage=60"), true, kCacheNoBound, kNow).store);
  CHECK(decide_store(ok("max-age=60, public"), true, kCacheNoBound, kNow).auth_ok);
  ResponseFacts star = ok("max-age=60");
  star.vary_star = true;
  CHECK_FALSE(decide_store(star, false, kCacheNoBound, kNow).store);
}

TEST_CASE("cache: statuses: heuristic ones, others only with explicit freshness", "[cache]") {
  for (int s : {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}) {
    ResponseFacts f = ok();
    f.status = s;
    CHECK(decide_store(f, false, 10'000, kNow).store);
  }
  for (int s : {302, 307, 403, 500, 502, 503, 206}) {
    ResponseFacts f = ok();
    f.status = s;
    CHECK_FALSE(decide_store(f, false, 10'000, kNow).store);
  }
  ResponseFacts found = ok("max-age=60");
  found.status = 302;
  CHECK(decide_store(found, false, kCacheNoBound, kNow).store);
  found.status = 503;  // never stands in for the good copy
  CHECK_FALSE(decide_store(found, false, kCacheNoBound, kNow).store);
}

TEST_CASE("cache: no-cache and max-age=0 are stored only to be revalidated", "[cache]") {
  ResponseFacts f = ok("no-cache, max-age=60");
  CHECK_FALSE(decide_store(f, false, kCacheNoBound, kNow).store);  // no validator
  f.validator = true;
  const StoreDecision d = decide_store(f, false, kCacheNoBound, kNow);
  CHECK(d.store);
  CHECK(d.revalidate);
  ResponseFacts zero = ok("max-age=0");
  zero.validator = true;
  CHECK(decide_store(zero, false, kCacheNoBound, kNow).store);
}

TEST_CASE("cache: stale-if-error and stale-while-revalidate windows, not with must-revalidate", "[cache]") {
  const StoreDecision d = decide_store(ok("max-age=1, stale-if-error=30, stale-while-revalidate=5"), false,
                                       kCacheNoBound, kNow);
  CHECK(d.stale_if_error_ms == 30'000);
  CHECK(d.stale_while_revalidate_ms == 5'000);
  CHECK(decide_store(ok("max-age=1, stale-if-error=30, must-revalidate"), false, kCacheNoBound, kNow)
            .stale_if_error_ms == 0);
  CHECK(decide_store(ok("s-maxage=1, stale-if-error=30"), false, kCacheNoBound, kNow).stale_if_error_ms == 0);
}

TEST_CASE("cache: memory store: LRU bounded by bytes, hits refresh recency", "[cache]") {
  MemoryStore s(4 * (sizeof(CacheEntry) + 1100), 1024);
  REQUIRE(s.shards() == 1);
  for (char c : std::string("abc")) REQUIRE(s.insert(entry(std::string(1, c), "", 1000)));
  CacheEntry* a = find(s, "a");  // a is now the most recent; b the least
  REQUIRE(a);
  cache_entry_release(a);
  REQUIRE(s.insert(entry("d", "", 1000)));
  REQUIRE(s.insert(entry("e", "", 1000)));  // over 4: b goes
  CHECK(find(s, "b") == nullptr);
  for (const char* k : {"a", "d", "e"}) {
    CacheEntry* e = find(s, k);
    CHECK(e != nullptr);
    if (e) cache_entry_release(e);
  }
  CHECK(s.bytes() <= 4 * (sizeof(CacheEntry) + 1100));
  CHECK_FALSE(s.insert(entry("huge", "", 10'000)));  // larger than the store: not kept
}

TEST_CASE("cache: memory store: an entry outlives its eviction while a hit holds it", "[cache]") {
  MemoryStore s(sizeof(CacheEntry) + 1100, 1024);
  REQUIRE(s.insert(entry("a", "", 1000)));
  CacheEntry* held = find(s, "a");
  REQUIRE(held);
  REQUIRE(s.insert(entry("b", "", 1000)));  // evicts a
  CHECK(find(s, "a") == nullptr);
  CHECK(held->body.size() == 1000);  // still readable (ASan would see a use after free)
  cache_entry_release(held);
}

TEST_CASE("cache: memory store: variants by Vary'd values, replaced in place, purged together", "[cache]") {
  MemoryStore s(1 << 20, 1024);
  REQUIRE(s.insert(entry("k", std::string("accept-encoding\0") + "1" + '\0', 10)));
  REQUIRE(s.insert(entry("k", std::string("accept-encoding\0") + "0" + '\0', 20)));
  REQUIRE(s.insert(entry("k", std::string("accept-encoding\0") + "1" + '\0', 30)));  // replaces the first
  const std::string gzip = std::string("accept-encoding\0") + "1" + '\0';
  bool pending = false;
  CacheEntry* e = s.find(cache_key_hash("k"), "k", vary_is, &gzip, &pending);
  REQUIRE(e);
  CHECK(e->body.size() == 30);
  cache_entry_release(e);
  CHECK(s.purge(cache_key_hash("k"), "k") == 2);
  CHECK(s.purge(cache_key_hash("k"), "k") == 0);
  CHECK(s.bytes() == 0);
}

TEST_CASE("cache: memory store: thousands of keys in one shard, found, replaced and purged", "[cache]") {
  MemoryStore s(64u << 20, 1024);  // 16 shards; the buckets of each grow from 64
  constexpr int kKeys = 5000;
  for (int i = 0; i < kKeys; ++i) REQUIRE(s.insert(entry("k" + std::to_string(i), "", 10 + i % 7)));
  for (int i = 0; i < kKeys; ++i) {
    CacheEntry* e = find(s, "k" + std::to_string(i));
    REQUIRE(e);
    CHECK(e->key == "k" + std::to_string(i));
    CHECK(e->body.size() == static_cast<std::size_t>(10 + i % 7));
    cache_entry_release(e);
  }
  CHECK(find(s, "k5000") == nullptr);
  REQUIRE(s.insert(entry("k42", "", 500)));  // replaces: one entry under the key
  CacheEntry* e = find(s, "k42");
  REQUIRE(e);
  CHECK(e->body.size() == 500);
  cache_entry_release(e);
  for (int i = 0; i < kKeys; i += 2) CHECK(s.purge(cache_key_hash("k" + std::to_string(i)), "k" + std::to_string(i)) == 1);
  for (int i = 0; i < kKeys; ++i) {
    CacheEntry* f = find(s, "k" + std::to_string(i));
    CHECK((f != nullptr) == (i % 2 == 1));
    if (f) cache_entry_release(f);
  }
}

TEST_CASE("cache: memory store: colliding hashes in one run that wraps the table, removed from its middle", "[cache]") {
  MemoryStore s(1u << 20, 1u << 20);  // one shard, 64 slots (24 entries: no growth)
  REQUIRE(s.shards() == 1);
  // Homes 62, 63, 0 and 1: one run of 24 across the end of the table, six
  // keys per hash (the keys tell them apart).
  auto hash_of = [](int i) { return std::uint64_t{62} + static_cast<std::uint64_t>(i % 4); };
  auto key_of = [](int i) { return "c" + std::to_string(i); };
  auto put = [&](int i) {
    CacheEntry* e = cache_entry_of(key_of(i), "", "HTTP/1.1 200 OK\r\n", std::string(10 + i, 'x'));
    e->hash = hash_of(i);
    return s.insert(e);
  };
  auto found = [&](int i) {
    bool pending = false;
    CacheEntry* e = s.find(hash_of(i), key_of(i), any, nullptr, &pending);
    const bool ok = e && e->key == key_of(i) && e->body.size() == static_cast<std::size_t>(10 + i);
    if (e) cache_entry_release(e);
    return ok;
  };
  for (int i = 0; i < 24; ++i) REQUIRE(put(i));
  for (int i = 0; i < 24; ++i) CHECK(found(i));
  for (int i = 0; i < 24; i += 3) CHECK(s.purge(hash_of(i), key_of(i)) == 1);
  for (int i = 0; i < 24; ++i) CHECK(found(i) == (i % 3 != 0));
  for (int i = 0; i < 24; i += 3) REQUIRE(put(i));
  for (int i = 0; i < 24; ++i) CHECK(found(i));
}

TEST_CASE("cache: an entry's body: in its own room as announced, else in its buffer", "[cache]") {
  CacheEntry* e = cache_entry_new(3, 0, 8);
  e->key = {cache_entry_key_room(e), 3};
  std::memcpy(cache_entry_key_room(e), "key", 3);
  const char* const room = e->body.data();
  cache_entry_append_body(*e, "abcd");
  cache_entry_append_body(*e, "efgh");
  CHECK(e->body == "abcdefgh");
  CHECK(e->body.data() == room);  // no allocation for a body of the announced size
  CHECK(e->body_buf.empty());
  cache_entry_append_body(*e, "ij");  // more than announced: the bytes move
  CHECK(e->body == "abcdefghij");
  CHECK(e->body.data() == e->body_buf.data());
  CHECK(e->key == "key");
  cache_entry_release(e);
  CacheEntry* chunked = cache_entry_new(0, 0, 0);
  cache_entry_append_body(*chunked, "xyz");
  cache_entry_append_body(*chunked, "");
  CHECK(chunked->body == "xyz");
  cache_entry_release(chunked);
}

TEST_CASE("cache: memory store: shards sized from the largest object", "[cache]") {
  CHECK(MemoryStore(64u << 20, 1u << 20).shards() == 8);
  CHECK(MemoryStore(256u << 20, 1u << 20).shards() == 16);
  CHECK(MemoryStore(1u << 20, 1u << 20).shards() == 1);
}

TEST_CASE("cache: the age on arrival: the Age field or the apparent age from Date, the larger", "[cache]") {
  ResponseFacts r = ok("max-age=60");
  r.date = kNow - 30;  // sent 30 s ago by the server's clock
  CHECK(decide_store(r, false, kCacheNoBound, kNow).age_ms == 29'000);  // counted from the end of its second
  r.age = 40;
  CHECK(decide_store(r, false, kCacheNoBound, kNow).age_ms == 40'000);
  r.age = 0;
  r.date = kNow;  // this second, or the one before (clock ticks): not aged
  CHECK(decide_store(r, false, kCacheNoBound, kNow).age_ms == 0);
  r.date = kNow - 1;
  CHECK(decide_store(r, false, kCacheNoBound, kNow).age_ms == 0);
  r.date = kNow + 300;  // a server clock ahead of ours: no negative age
  CHECK(decide_store(r, false, kCacheNoBound, kNow).age_ms == 0);
  r.date = kNow - 100;  // older than its max-age: stale on arrival, nothing to revalidate with
  CHECK_FALSE(decide_store(r, false, kCacheNoBound, kNow).store);
  r.validator = true;
  CHECK(decide_store(r, false, kCacheNoBound, kNow).store);
}

TEST_CASE("cache: If-None-Match lists against a stored ETag, weak comparison", "[cache]") {
  CHECK(etag_list_matches("\"v1\"", "\"v1\""));
  CHECK(etag_list_matches("W/\"v1\"", "\"v1\""));
  CHECK(etag_list_matches("\"v1\"", "W/\"v1\""));
  CHECK(etag_list_matches("\"a\", \"b,c\" ,W/\"v1\"", "\"v1\""));
  CHECK(etag_list_matches("\"b,c\"", "\"b,c\""));  // a comma inside a tag is part of it
  CHECK(etag_list_matches(" * ", ""));            // any stored response
  CHECK_FALSE(etag_list_matches("\"v2\"", "\"v1\""));
  CHECK_FALSE(etag_list_matches("\"v1\"", ""));  // nothing stored to compare with
  CHECK_FALSE(etag_list_matches("v1", "v1"));    // not an entity-tag
  CHECK_FALSE(etag_list_matches("\"v1", "\"v1\""));
  CHECK_FALSE(etag_list_matches("\"x\", junk, \"v1\"", "\"v1\""));  // counted up to the fault
}

TEST_CASE("cache: If-Modified-Since against a stored Last-Modified", "[cache]") {
  constexpr std::string_view lm = "Tue, 01 Dec 2026 10:00:00 GMT";
  CHECK(not_modified_since(lm, lm));
  CHECK(not_modified_since("Tue, 01 Dec 2026 10:00:01 GMT", lm));
  CHECK_FALSE(not_modified_since("Tue, 01 Dec 2026 09:59:59 GMT", lm));
  CHECK_FALSE(not_modified_since("yesterday", lm));
  CHECK_FALSE(not_modified_since(lm, ""));
}

TEST_CASE("cache: the fields of a 304 that replace the stored ones", "[cache]") {
  CHECK(same_field_name("X-Version", "x-VERSION"));
  CHECK_FALSE(same_field_name("X-Version", "X-Versions"));
  CHECK_FALSE(same_field_name("a^b", "a~b"));
  CHECK(updates_stored_field("Cache-Control", "max-age=60", "\"v1\""));
  CHECK(updates_stored_field("Expires", "Tue, 01 Dec 2026 10:00:00 GMT", "\"v1\""));
  CHECK(updates_stored_field("Date", "Tue, 01 Dec 2026 10:00:00 GMT", "\"v1\""));
  CHECK(updates_stored_field("X-Anything", "2", "\"v1\""));
  CHECK(updates_stored_field("ETag", "\"v2\"", "\"v1\""));
  CHECK(updates_stored_field("ETag", "\"v1\"", ""));
  CHECK_FALSE(updates_stored_field("ETag", "\"v1\"", "W/\"v1\""));  // a compressed copy's stays weak
  for (std::string_view f : {"Content-Length", "Transfer-Encoding", "Connection", "Set-Cookie", "Age",
                             "Content-Encoding", "Content-Range"})
    CHECK_FALSE(updates_stored_field(f, "x", "\"v1\""));
}

TEST_CASE("cache: the client holds the stored copy: If-None-Match, else If-Modified-Since", "[cache]") {
  constexpr std::string_view etag = "\"v4\"", lm = "Tue, 01 Dec 2026 10:00:00 GMT";
  const auto has = [&](std::initializer_list<Header> fields, int status = 200) {
    const std::vector<Header> v(fields);
    RequestHead h;
    h.headers = v;
    return client_has_copy(h, status, etag, lm);
  };
  CHECK(has({{"If-None-Match", "\"v4\""}}));
  CHECK(has({{"if-none-match", "\"x\""}, {"If-None-Match", "W/\"v4\""}}));  // any of the lines
  CHECK(has({{"If-Modified-Since", lm}}));
  CHECK_FALSE(has({}));
  CHECK_FALSE(has({{"If-None-Match", "\"v5\""}}));
  CHECK_FALSE(has({{"If-None-Match", "\"v5\""}, {"If-Modified-Since", lm}}));  // If-None-Match decides alone
  CHECK_FALSE(has({{"If-Modified-Since", "Tue, 01 Dec 2026 09:59:59 GMT"}}));
  CHECK_FALSE(has({{"If-None-Match", "\"v4\""}}, 404));  // preconditions hold for a 2xx only
}

TEST_CASE("cache: a waiter that finds its key led anew is woken by the new flight's end", "[cache]") {
  // Two workers' wake-ups on one loop: what each flight's end wakes.
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  int woke[2] = {0, 0};
  uv_async_t wake[2];
  for (int i = 0; i < 2; ++i) {
    uv_async_init(&loop, &wake[i], [](uv_async_t* a) { ++*static_cast<int*>(a->data); });
    wake[i].data = &woke[i];
  }
  CacheFlights f;
  f.set_wake(0, &wake[0]);
  f.set_wake(1, &wake[1]);
  const std::uint64_t h = 77;
  CHECK(f.join(h, 0));        // worker 0 leads
  CHECK_FALSE(f.join(h, 1));  // worker 1 waits
  f.end(h);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(woke[1] == 1);
  CHECK(f.join(h, 0));        // before worker 1 looked again, worker 0 leads anew (the answer was not storable)
  CHECK(f.wait_again(h, 1));  // worker 1's waiter waits on, on the new flight
  f.end(h);
  uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(woke[1] == 2);  // not left to its timeout
  CHECK(woke[0] == 0);
  CHECK_FALSE(f.wait_again(h, 1));  // nothing in flight: it goes on
  f.set_wake(0, nullptr);
  f.set_wake(1, nullptr);
  for (auto& a : wake) uv_close(reinterpret_cast<uv_handle_t*>(&a), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("cache: collapsed misses in a fixed table: colliding keys, removal, a full neighbourhood", "[cache]") {
  CacheFlights f;
  constexpr std::uint64_t n = CacheFlights::kSlots;
  // Three keys with one place, one with the next: a run of four slots.
  const std::uint64_t a = 5, b = 5 + n, c = 5 + 2 * n, d = 6;
  CHECK(f.join(a, 0));
  CHECK(f.join(b, 0));
  CHECK(f.join(d, 0));
  CHECK(f.join(c, 0));
  CHECK_FALSE(f.join(c, 1));  // led already: waits
  CHECK_FALSE(f.join(a, 70));  // a worker beyond 63 waits too
  f.end(a);                    // the others shift back and stay reachable
  CHECK_FALSE(f.active(a));
  CHECK(f.active(b));
  CHECK(f.active(c));
  CHECK(f.active(d));
  f.end(b);
  f.end(d);
  CHECK(f.active(c));
  CHECK_FALSE(f.join(c, 2));
  f.end(c);
  CHECK_FALSE(f.active(c));
  CHECK(f.join(a, 0));  // free again
  f.end(a);
  // kProbes keys on one place fill its neighbourhood: one more leads untracked.
  for (std::uint64_t i = 0; i < CacheFlights::kProbes; ++i) CHECK(f.join(9 + i * n, 0));
  const std::uint64_t extra = 9 + CacheFlights::kProbes * n;
  CHECK(f.join(extra, 0));
  CHECK(f.join(extra, 1));  // not tracked: each leads
  CHECK_FALSE(f.active(extra));
  for (std::uint64_t i = 0; i < CacheFlights::kProbes; ++i) f.end(9 + i * n);
  CHECK(f.join(extra, 0));
  CHECK_FALSE(f.join(extra, 1));
  CHECK(f.join(0, 0));  // a key hashing to 0 is never tracked
  CHECK(f.join(0, 1));
  CHECK_FALSE(f.active(0));
}
