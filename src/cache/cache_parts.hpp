// What the cache's two halves share (internal to src/cache): the request
// side (cache.cpp) and the store stage (cache_stage.cpp).
#pragma once

#include <cstring>
#include <string>
#include <string_view>

#include "cache/rules.hpp"
#include "cache/store.hpp"
#include "juggler/http.hpp"

namespace juggler {

// Writes `s` at `p` (room known by the caller); returns the end. An empty
// view writes nothing (its data() may be null: no memcpy from it).
inline char* put(char* p, std::string_view s) noexcept {
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

// The key an entry is stored under: the memory key, or the asynchronous
// store's (Redis: readable, with the Accept-Encoding class).
std::string_view store_key(const RequestHead& h, std::string& out, bool async);
// The memory key's size, and the key written at `p` (room known by the
// caller; returns the end): what store_key makes for the memory store,
// written straight into an entry.
std::size_t memory_key_size(const RequestHead& h) noexcept;
char* put_memory_key(char* p, const RequestHead& h) noexcept;
// The request's value of a Vary'd field (`lower_name`), normalised:
// Accept-Encoding as one digit (written to *digit) of the codings accepted.
std::string_view vary_value(const RequestHead& h, std::string_view lower_name, char* digit) noexcept;

// The entry a 304 makes of `old`, stored under `key` (see cache_stage.cpp);
// null: nothing new.
CacheEntry* refreshed_entry(const CacheEntry& old, std::string_view key, const MessageParser& r, bool* cache_control);

}  // namespace juggler
