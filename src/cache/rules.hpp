// RFC 9111 as a shared cache, as pure functions of header values: what a
// response's Cache-Control says, whether a response may be stored and for
// how long it is fresh. No I/O, no clock of their own (the caller passes
// the time), so the decisions are unit-tested (tests/unit/test_cache_rules.cpp).
#pragma once

#include <cstdint>
#include <string_view>

namespace juggler {

class MessageParser;
struct HeaderSpan;

struct CidrDef;      // juggler/route.hpp
struct RequestHead;  // juggler/route.hpp

// The directives of one or more Cache-Control fields (parse() merges). A
// delta-seconds of -1 is absent; a malformed one counts as 0 (RFC 9111 1.2.2:
// a cache treats an invalid max-age as stale).
struct CacheControl {
  bool no_store = false;
  bool no_cache = false;  // also no-cache="field": revalidated all the same
  bool is_private = false;
  bool is_public = false;
  bool must_revalidate = false;  // also proxy-revalidate
  std::int64_t max_age = -1;
  std::int64_t s_maxage = -1;
  std::int64_t stale_while_revalidate = -1;  // RFC 5861
  std::int64_t stale_if_error = -1;          // RFC 5861
  void parse(std::string_view value) noexcept;
};

// Seconds since the epoch of an HTTP-date in the preferred format
// (IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"); -1 when it is not one (an
// invalid Expires means "already expired", RFC 9111 5.3).
std::int64_t parse_http_date(std::string_view v) noexcept;

// Writes `t` (seconds since the epoch) as an IMF-fixdate into out[29].
void format_http_date(std::int64_t t, char out[29]) noexcept;

// What the response head says, gathered by the caller.
struct ResponseFacts {
  int status = 0;
  CacheControl cc;
  bool has_expires = false;
  std::int64_t expires = -1;  // parse_http_date of Expires (-1: invalid)
  std::int64_t date = -1;     // of Date (-1: absent or invalid)
  std::int64_t age = 0;       // the Age field, seconds
  bool set_cookie = false;
  bool vary_star = false;     // Vary: * (never matches a later request)
  bool validator = false;     // ETag or Last-Modified: a stale copy can be revalidated
};

// RFC 9110 13.1.2: whether an If-None-Match field value names the entity tag
// `etag` by the weak comparison (W/ ignored on either side); "*" names any
// stored response. A malformed list counts up to its fault.
bool etag_list_matches(std::string_view if_none_match, std::string_view etag) noexcept;

// RFC 9110 13.1.3: a response last modified at `last_modified` has not been
// modified since `if_modified_since` (false unless both are HTTP-dates).
bool not_modified_since(std::string_view if_modified_since, std::string_view last_modified) noexcept;

// The response fields a stored copy does not keep: the framing (a hit sends
// its own Content-Length), the connection's, Age (computed per hit) and
// Set-Cookie (one client's cookie is never handed to another).
bool unstored_field(std::string_view name) noexcept;
// The same for a parsed header line, by the parser's kinds (no string
// compare for framing and hop-by-hop fields).
bool unstored_line(const MessageParser& r, const HeaderSpan& hs) noexcept;
// What a response head says for decide_store (one pass over its fields;
// those marked drop are not the client's and do not count).
ResponseFacts response_facts(const MessageParser& r) noexcept;

// Two field names are the same (ASCII case-insensitive, both sides as sent).
bool same_field_name(std::string_view a, std::string_view b) noexcept;

// Whether a field of a 304 replaces the stored ones of its name when the
// 304 refreshes a stored response (RFC 9111 3.2): not the unstored ones,
// nor Content-Encoding or Content-Range (the stored body's stay), nor an
// ETag naming the stored tag `stored_etag` (a compressed copy's is the weak
// form of the server's: it stays weak).
bool updates_stored_field(std::string_view name, std::string_view value, std::string_view stored_etag) noexcept;

// The client's own If-None-Match (or, without one, If-Modified-Since) says it
// holds a stored 2xx response with these validators already (RFC 9110
// 13.2.2): the answer to it is a 304.
bool client_has_copy(const RequestHead& h, int status, std::string_view etag, std::string_view last_modified) noexcept;

// The statuses whose responses may be stored without explicit freshness
// (RFC 9110 15.1 "heuristically cacheable"), as the issue lists them.
bool heuristically_cacheable(int status) noexcept;

struct StoreDecision {
  bool store = false;
  std::uint64_t lifetime_ms = 0;  // freshness lifetime (0: stale at once, revalidated on use)
  std::uint64_t age_ms = 0;       // the response's age when it arrived (RFC 9111 4.2.3)
  std::uint64_t stale_if_error_ms = 0;   // how long past expiry it may stand in for an error
  std::uint64_t stale_while_revalidate_ms = 0;
  bool revalidate = false;  // no-cache: every use asks the server first
  bool auth_ok = false;     // may answer a request that carries Authorization
};

// Whether a shared cache may store the response to a GET, and its
// freshness: not for no-store, private, Vary: *, a status neither
// heuristically cacheable nor given explicit freshness, Set-Cookie (unless
// public or s-maxage), a request with Authorization (unless public,
// s-maxage or must-revalidate). Lifetime: s-maxage, else max-age, else
// Expires - Date (`now` when there is no Date); else `route_ttl_ms` for a
// heuristically cacheable status (kCacheNoBound: none, so not stored
// unless it can be revalidated). The route's TTL bounds every lifetime. Its
// age: the larger of the Age field and the apparent age, `now` - Date. A
// response not fresh on arrival is stored only with a validator.
StoreDecision decide_store(const ResponseFacts& r, bool request_authorization, std::uint32_t route_ttl_ms,
                           std::int64_t now) noexcept;

// PURGE: whether the client address `peer` (text, as the connection has
// it; an IPv4-mapped IPv6 address counts as IPv4) is in `net`
// (cache.purge_from; family 0: nobody).
bool purge_allowed(std::string_view peer, const CidrDef& net) noexcept;

}  // namespace juggler
