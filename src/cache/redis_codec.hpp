// How a stored response is kept in Redis: one value per key, a fixed header
// (the times and facts the cache rules need) followed by the Vary'd request
// values, the stored head and the body, so a hit is one GET and is served
// straight from the reply's bytes. Pure functions: unit-tested without Redis.
//
// Times travel as wall-clock milliseconds (every balancer process has its own
// loop clock) and are turned into the reading process's loop clock.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "cache/store.hpp"

namespace juggler {

// The record's header size: the value of an entry is this plus its vary,
// head and body.
inline constexpr std::size_t kRedisRecordHeader = 72;

// Appends the value of `e` (its views, so an entry read from Redis
// re-encodes as well) to `out`. `loop_now`/`unix_now`: the same instant on
// the loop clock and the wall clock, in ms.
void redis_encode(const CacheEntry& e, std::uint64_t loop_now, std::uint64_t unix_now, std::string& out);

// Fills `e` from a value: its vary, head, body, etag and last_modified views point into
// `bytes`, which must outlive it. False (e untouched but for those views)
// when `bytes` is not a record this version wrote: a miss, never a crash.
bool redis_decode(std::string_view bytes, std::uint64_t loop_now, std::uint64_t unix_now, CacheEntry& e);

// How long Redis keeps the entry (SET ... PX): the rest of its freshness
// plus the longer of its stale windows (what stale-while-revalidate and
// stale-if-error may still serve); an entry that must be revalidated every
// time (no-cache) and has a validator is kept kRedisRevalidateKeepMs. 0:
// nothing left to keep (not stored).
inline constexpr std::uint64_t kRedisRevalidateKeepMs = 60'000;
std::uint64_t redis_ttl_ms(const CacheEntry& e, std::uint64_t loop_now);

}  // namespace juggler
