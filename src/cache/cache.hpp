// The response cache on the exchange's seams (route option `cache`): the
// request side runs in state Route and answers a hit as a local responder
// (state Respond, written from the stored entry without a copy); a miss
// goes to the server, and the response filter made here stores what the
// client is sent (after compression, so a hit needs no encoder). Storage is
// a CacheStore (src/cache/store.hpp) in Shared. A route without `cache`
// never reaches this file: state_route tests RouteDef::cache_ttl_ms.
//
// Key: the host (lower case), the path and the query; variants by the
// request fields the response's Vary names. Accept-Encoding is normalised to
// the set of codings the client accepts among gzip, br and zstd (q > 0), so
// "gzip, br" and "br;q=1, gzip" share an entry and a compressed and an
// identity copy are separate entries; a route that compresses varies on it
// always (its identity answer to one client is not the gzip one of another).
#pragma once

#include <string_view>

#include "exchange/exchange.hpp"
#include "filter/filter.hpp"

namespace juggler {

// Exchange::cache: what the cache did with the request (the X-Cache line).
enum class CacheStatus : std::uint8_t { None, Miss, Bypass, Hit, Stale };

// Exchange::cache_op: what an exchange in CacheFetch waits for.
enum class CacheOp : std::uint8_t { None, Lookup, Resume, Purge };

// Exchange::filter_want: the response may be stored (beside the encoding bits).
inline constexpr std::uint8_t kWantCache = 0x80;

// The store a route with `cache` uses (made at start-up from the settings).
std::shared_ptr<CacheStore> make_cache_store(const Settings& s);

// Route, for a proxy route with `cache`: a fresh stored answer is sent
// (returns State::Respond); else the exchange goes to the server (returns
// State::Connect) with Exchange::cache saying MISS or BYPASS and, when the
// response may be stored, kWantCache in filter_want.
State cache_request(Exchange* ex);
// CacheWait is over (the leader ended, or the wait's bound): a hit now, else
// the request goes to the server (State::Connect, through proxy_begin).
State cache_resume(Exchange* ex);

// A PURGE request (before routing): 403 unless the client's address is in
// cache.purge_from; else every variant of the URL is dropped (200, or 404
// when none was stored).
State cache_purge(Exchange* ex);

// The X-Cache line (with its CRLF) of a relayed response on a cached route.
std::string_view cache_status_line(const Exchange* ex) noexcept;

// The store stage of a response chain (filters_begin), for an exchange with
// kWantCache; release with cache_stage_put. Its head() steps aside when
// the response may not be stored or is larger than the store's max_object.
ResponseFilter* cache_stage_get(Exchange* ex);
void cache_stage_put(ResponseFilter* f) noexcept;
// The same stage without a chain, for a response with Content-Length that
// no other stage changes: sets Exchange::cache_tap when the response may be
// stored; the relay then calls cache_tap with the body bytes of each read
// (`last`: the body ended with them). Released by cache_release.
void cache_tap_begin(Exchange* ex);
void cache_tap(Exchange* ex, std::string_view body, bool last) noexcept;

// Revalidation and stale answers, for an exchange that went to the server
// with a stale entry (Exchange::cache_entry):
// The request head's iov (n slices, from edit_request_head) with
// If-None-Match / If-Modified-Since of the entry (Exchange::cache_reval);
// returns the new count.
unsigned cache_conditionals(Exchange* ex, uv_buf_t* iov, unsigned n);
// The final response head `status` is the cache's to answer: the 304 to its
// revalidation, or a 5xx while the entry may stand in for an error.
bool cache_takes_over(const Exchange* ex, int status) noexcept;
// ... then answers: the refreshed entry (HIT) or the stale one (STALE), with
// the server connection let go (kept after a complete 304). Returns Respond.
State cache_from_response(Exchange* ex);
// The entry may answer instead of a 502/503/504 (its stale-if-error window).
bool cache_stands_in(const Exchange* ex) noexcept;
State cache_reply_stale(Exchange* ex);

// Drops the entry a hit was written from, the exchange's place among the
// waiters and the flight it led (exchange_put, for an exchange with `cache` set).
void cache_release(Exchange* ex) noexcept;

}  // namespace juggler
