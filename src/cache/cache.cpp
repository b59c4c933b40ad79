// The exchange side of the cache: lookups and hits in state Route (and
// CacheFetch for Redis), revalidation, PURGE; the store stage on the response
// chain is in cache_stage.cpp. What may be stored and for how long is decided
// by src/cache/rules.cpp; where it is kept by the CacheStore.
#include "cache/cache.hpp"

#include <charconv>
#include <cstring>
#include <ctime>
#include <new>

#include "cache/cache_parts.hpp"
#include "cache/collapse.hpp"
#include "cache/redis_store.hpp"
#include "cache/rules.hpp"
#include "cache/store.hpp"
#include "filter/compress.hpp"
#include "juggler/free_list.hpp"
#include "exchange/relay.hpp"
#include "respond/responder.hpp"

namespace juggler {

namespace {

constexpr std::string_view kXCache[] = {"", "X-Cache: MISS\r\n", "X-Cache: BYPASS\r\n", "X-Cache: HIT\r\n",
                                        "X-Cache: STALE\r\n"};
constexpr std::string_view kNotModified = "HTTP/1.1 304 Not Modified\r\n";
constexpr std::string_view kPurgedKeep = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\npurged\n";
constexpr std::string_view kPurgedClose = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\npurged\n";

// The host in lower case, `sep`, the path and the query: its size, and
// written at `p` (room known by the caller; returns the end).
std::size_t key_size(const RequestHead& h, std::string_view sep) noexcept {
  return h.host.size() + sep.size() + h.path.size() + (h.query.empty() ? 0 : 1 + h.query.size());
}

char* put_key(char* p, const RequestHead& h, std::string_view sep) noexcept {
  for (char c : h.host) *p++ = c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c;
  p = put(put(p, sep), h.path);
  if (!h.query.empty()) p = put(put(p, "?"), h.query);
  return p;
}

// The same into `out` (reused: no allocation once it grew), written in
// place (a miss and a hit build it on every request).
std::string_view write_key(const RequestHead& h, std::string& out, std::string_view sep) {
  out.resize(key_size(h, sep));
  put_key(out.data(), h, sep);
  return out;
}

constexpr std::string_view kMemoryKeySep{"\0", 1};

// The primary key into `out`: the host in lower case, '\0', the path and
// the query.
std::string_view build_key(const RequestHead& h, std::string& out) { return write_key(h, out, kMemoryKeySep); }

// The key in an asynchronous store (Redis), readable in redis-cli: the
// host, the request-target (it starts with '/', so the two cannot run into
// each other) and a space; with `ae_class`, then the class of the request's
// Accept-Encoding (one digit), so the store need not hold the variants of
// one URL under one key (redis_store.hpp). A PURGE names every class.
std::string_view async_key(const RequestHead& h, std::string& out, bool ae_class) {
  write_key(h, out, {});
  out.push_back(' ');
  if (ae_class) {
    char digit = 0;
    out.append(vary_value(h, "accept-encoding", &digit));
  }
  return out;
}

}  // namespace

// The request's value of a Vary'd field, normalised: Accept-Encoding as the
// set of codings accepted (one digit of kCompress* bits), others trimmed.
std::string_view vary_value(const RequestHead& h, std::string_view lower_name, char* digit) noexcept {
  if (lower_name != "accept-encoding") return trim_ows(h.header(lower_name));
  std::uint8_t bits = 0;  // every Accept-Encoding line counts, as for compression
  for (std::uint8_t b : {kCompressGzip, kCompressBr, kCompressZstd}) bits |= negotiate_encoding(h.headers, b);
  *digit = static_cast<char>('0' + bits);
  return {digit, 1};
}

// The key `e` is stored under: the memory key, or the asynchronous store's.
std::string_view store_key(const RequestHead& h, std::string& out, bool async) {
  return async ? async_key(h, out, true) : build_key(h, out);
}

std::size_t memory_key_size(const RequestHead& h) noexcept { return key_size(h, kMemoryKeySep); }

char* put_memory_key(char* p, const RequestHead& h) noexcept { return put_key(p, h, kMemoryKeySep); }

namespace {

// The key a purge names: the memory key (every variant is under it), or the
// asynchronous store's without its class (the store drops every class).
std::string_view purge_key(const RequestHead& h, std::string& out, bool async) {
  return async ? async_key(h, out, false) : build_key(h, out);
}

thread_local std::string t_key;

bool vary_matches(const CacheEntry& e, const void* request) {
  const RequestHead& h = *static_cast<const RequestHead*>(request);
  std::string_view rest = e.vary;
  while (!rest.empty()) {
    const std::size_t a = rest.find('\0');
    const std::size_t b = rest.find('\0', a + 1);
    char digit = 0;
    if (vary_value(h, rest.substr(0, a), &digit) != rest.substr(a + 1, b - a - 1)) return false;
    rest.remove_prefix(b + 1);
  }
  return true;
}

// What the request says of the cache (one pass over its fields).
struct RequestFacts {
  bool authorization = false;
  bool no_store = false;
  bool no_cache = false;  // no-cache, max-age=0 or Pragma: no-cache: go to the server (and store)
  bool conditional = false;  // the client's own If-*: its answer (a 304) is its, not ours to refresh with
};

RequestFacts request_facts(const RequestHead& h) noexcept {
  RequestFacts f;
  for (const Header& x : h.headers) {
    if (iequals(x.name, "authorization")) {
      f.authorization = true;
    } else if (iequals(x.name, "cache-control")) {
      CacheControl cc;
      cc.parse(x.value);
      f.no_store = f.no_store || cc.no_store;
      f.no_cache = f.no_cache || cc.no_cache || cc.max_age == 0;
    } else if (iequals(x.name, "pragma") && x.value.find("no-cache") != std::string_view::npos) {
      f.no_cache = true;
    } else if (x.name.size() > 3 && iequals(x.name.substr(0, 3), "if-")) {
      f.conditional = true;
    }
  }
  return f;
}

char* put_number(char* p, std::uint64_t n) noexcept { return std::to_chars(p, p + 20, n).ptr; }

// A stored answer as a local responder: the stored head, the lines of this
// hit (Age, X-Cache, Content-Length, Connection) from the exchange's
// scratch, and the stored body, as three slices of one write (the body
// from its memfd by sendfile on plain HTTP/1, store.hpp); the entry stays
// referenced until the exchange is put back, so its file stays open and
// mapped until the send completed, even once evicted or purged. `conditional`: the
// request has If-* fields, so the client may hold the copy already (a 304:
// the stored head under a 304 status line, no body).
State reply_stored(Exchange* ex, CacheEntry* e, CacheStatus how, bool conditional) {
  detach_upstream(ex, false);
  TimerWheel::disarm(&ex->timer);
  const bool not_modified = conditional && client_has_copy(ex->head, e->status, e->etag, e->last_modified);
  ex->status = not_modified ? 304 : e->status;
  ex->cache_entry = e;
  ex->cache = static_cast<std::uint8_t>(how);
  cache_flight_end(ex);  // a leader answered from the cache (a 304, a stale copy): its waiters look again
  if (!ex->client_close && !ex->body->skip()) ex->client_close = true;
  std::string_view head = e->head;
  const std::string_view body = e->body;
  char* const lines = ex->scratch.get();
  char* p = put(lines, "Age: ");
  p = put_number(p, e->age_now_ms(ex->worker->now_ms()) / 1000);
  p = put(p, "\r\n");
  p = put(p, kXCache[static_cast<unsigned>(how)]);
  p = put(p, settings(*ex->worker).instance_header);  // the instance that answered, not the one that stored
  if (!not_modified && e->status != 204 && e->status != 304) {
    p = put(p, "Content-Length: ");
    p = put_number(p, body.size());
    p = put(p, "\r\n");
  }
  if (ex->client_close) p = put(p, "Connection: close\r\n");
  else if (ex->req.http_minor() == 0) p = put(p, "Connection: keep-alive\r\n");
  p = put(p, "\r\n");
  uv_buf_t* iov = ex->iov.get();
  unsigned n = 0;
  ex->answer_file = -1;
  if (not_modified) {
    iov[n++] = uv_buf_init(const_cast<char*>(kNotModified.data()), static_cast<unsigned>(kNotModified.size()));
    head.remove_prefix(head.find("\r\n") + 2);  // the stored status line
  }
  iov[n++] = uv_buf_init(const_cast<char*>(head.data()), static_cast<unsigned>(head.size()));
  iov[n++] = uv_buf_init(lines, static_cast<unsigned>(p - lines));
  if (!ex->is_head && !not_modified && !body.empty()) {
    iov[n++] = uv_buf_init(const_cast<char*>(body.data()), static_cast<unsigned>(body.size()));
    ex->answer_file = e->file_fd;  // a body in a memfd: sendfile where the connection can
  }
  for (unsigned i = 0; i < n; ++i) ex->bytes_out += iov[i].len;
  ex->answer_slices = static_cast<std::uint8_t>(n);
  return State::Respond;
}

}  // namespace

std::shared_ptr<CacheStore> make_cache_store(const Settings& s) {
  if (s.cache == CacheKind::Redis) return std::make_shared<RedisStore>(s);
  if (s.cache != CacheKind::Memory) return nullptr;
  return std::make_shared<MemoryStore>(s.cache_bytes, s.cache_max_object);
}

namespace {

// The stored entry for the request (a reference for the caller), or null;
// one that may not answer a request with Authorization is none.
CacheEntry* lookup(Exchange* ex, std::string_view key, std::uint64_t hash, bool authorization) {
  bool pending = false;
  CacheEntry* e = ex->worker->shared.cache->find(hash, key, vary_matches, &ex->head, &pending);
  if (e && !e->auth_ok && authorization) {
    cache_entry_release(e);
    return nullptr;
  }
  return e;
}

bool unsafe(Method m) noexcept {
  return m != Method::Get && m != Method::Head && m != Method::Options && m != Method::Trace;
}

State cache_found(Exchange* ex, CacheEntry* e, bool conditional);
State cache_found_again(Exchange* ex, CacheEntry* e, bool conditional);
State cache_fetch(Exchange* ex, CacheOp op);

// A stale entry (or no-cache) is kept to revalidate with its validators,
// and to stand in for an error within its stale-if-error window.
void keep_stale(Exchange* ex, CacheEntry* e, bool client_conditional) {
  if (ex->cache_entry) cache_entry_release(ex->cache_entry);
  ex->cache_entry = e;
  ex->cache_reval = !client_conditional && (!e->etag.empty() || !e->last_modified.empty());
}

}  // namespace

State cache_request(Exchange* ex) {
  CacheStore* store = ex->worker->shared.cache.get();
  const RequestHead& h = ex->head;
  ex->cache = static_cast<std::uint8_t>(CacheStatus::Bypass);
  ex->cache_hash = 0;
  if (!store) return State::Connect;
  if (unsafe(h.method)) {
    // RFC 9111 4.4: what a POST, PUT, DELETE... may change is not answered
    // from the cache afterwards (dropped as the request arrives, before its
    // body may reuse the buffer the key is read from).
    const std::string_view key = purge_key(h, t_key, store->asynchronous());
    store->purge(cache_key_hash(key), key);
    return State::Connect;
  }
  // Only GET is stored (HEAD is answered from it); a GET with a body is
  // nothing a cache can key.
  if ((h.method != Method::Get && h.method != Method::Head) || ex->req.has_body()) return State::Connect;
  const RequestFacts rf = request_facts(h);
  if (rf.no_store) return State::Connect;
  ex->cache = static_cast<std::uint8_t>(CacheStatus::Miss);
  if (h.method == Method::Get) ex->filter_want |= kWantCache;
  if (rf.no_cache) return State::Connect;
  const std::string_view key = build_key(h, t_key);
  ex->cache_hash = cache_key_hash(key);  // the flights' (collapse.hpp) and the store stage's too
  if (store->asynchronous()) return cache_fetch(ex, CacheOp::Lookup);
  return cache_found(ex, lookup(ex, key, ex->cache_hash, rf.authorization), rf.conditional);
}

namespace {

// A lookup's entry (or none) is known: a fresh one answers; else the request
// goes to the server (Connect) with the stale one kept, leading or waiting
// for the misses of its key (Exchange::cache_hash).
State cache_found(Exchange* ex, CacheEntry* e, bool conditional) {
  const std::uint64_t now = ex->worker->now_ms();
  const std::uint64_t hash = ex->cache_hash;
  if (e && e->fresh(now)) return reply_stored(ex, e, CacheStatus::Hit, conditional);
  if (e) keep_stale(ex, e, conditional);
  if (ex->head.method != Method::Get) return State::Connect;
  // stale-while-revalidate: another request is refreshing it; this one need not wait.
  if (e && !e->revalidate && now < e->fresh_until_ms.load(std::memory_order_relaxed) + e->stale_while_revalidate_ms &&
      ex->worker->shared.cache_flights->active(hash))
    return reply_stored(ex, e, CacheStatus::Stale, conditional);
  return cache_lead_or_wait(ex, hash) ? State::Connect : State::CacheWait;
}

// After CacheWait: a fresh entry now answers; else to the server, each.
State cache_found_again(Exchange* ex, CacheEntry* e, bool conditional) {
  if (e && e->fresh(ex->worker->now_ms())) {
    if (ex->cache_entry) cache_entry_release(ex->cache_entry);
    ex->cache_entry = nullptr;
    return reply_stored(ex, e, CacheStatus::Hit, conditional);
  }
  if (e) keep_stale(ex, e, conditional);
  return proxy_begin(ex);  // what the leader got was not stored: to the server, each
}

}  // namespace

// The key's hash is the one the lookup noted (Exchange::cache_hash, that
// the flight was joined with).
State cache_resume(Exchange* ex) {
  if (ex->worker->shared.cache->asynchronous()) {
    const State s = cache_fetch(ex, CacheOp::Resume);
    return s == State::Connect ? proxy_begin(ex) : s;
  }
  const RequestFacts rf = request_facts(ex->head);
  return cache_found_again(ex, lookup(ex, build_key(ex->head, t_key), ex->cache_hash, rf.authorization),
                           rf.conditional);
}

// ---------------------------------------------------------------- asynchronous stores (Redis)

namespace {

// The store is down or behind its deadline: the request goes on uncached.
void bypass(Exchange* ex) noexcept {
  ex->cache = static_cast<std::uint8_t>(CacheStatus::Bypass);
  ex->filter_want &= static_cast<std::uint8_t>(~kWantCache);
}

// The store's report (CacheDone), on this worker's loop: the exchange is
// told unless it stopped waiting (it was cut or refused meanwhile).
void on_fetched(void* owner, CacheEntry* e, int n) {
  auto* ex = static_cast<Exchange*>(owner);
  ex->cache_ticket = 0;
  if (ex->st != State::CacheFetch) {
    if (e) cache_entry_release(e);
    return;
  }
  ex->cache_found = e;
  step(ex, Event::CacheFound, n);
}

void cancel_fetch(Exchange* ex) noexcept {
  if (!ex->cache_ticket) return;
  ex->worker->shared.cache->cancel(ex->cache_ticket);
  ex->cache_ticket = 0;
}

// Sends the lookup to the asynchronous store and returns CacheFetch
// (state_cache_fetch goes on when the store reports, within its deadline),
// or Connect with X-Cache BYPASS when the store cannot ask now.
State cache_fetch(Exchange* ex, CacheOp op) {
  CacheStore* store = ex->worker->shared.cache.get();
  const std::string_view key = store_key(ex->head, t_key, true);
  const std::uint64_t ticket = store->find_async(key, on_fetched, ex);
  if (!ticket) {
    bypass(ex);
    return State::Connect;
  }
  ex->cache_ticket = ticket;
  ex->cache_op = static_cast<std::uint8_t>(op);
  TimerWheel::disarm(&ex->timer);  // the store's deadline bounds the wait
  return State::CacheFetch;
}

}  // namespace

State state_cache_fetch(Exchange* ex, Event ev, int arg) {
  if (ev != Event::CacheFound) {
    const State next = on_other_event(ex, ev, arg, State::CacheFetch);
    if (next != State::CacheFetch) cancel_fetch(ex);
    return next;
  }
  CacheEntry* e = ex->cache_found;
  ex->cache_found = nullptr;
  const auto op = static_cast<CacheOp>(ex->cache_op);
  ex->cache_op = 0;
  if (op == CacheOp::Purge) return arg > 0 ? reply_local(ex, 200, kPurgedKeep, kPurgedClose) : reply_error(ex, arg == 0 ? 404 : 503);
  if (arg < 0) {
    bypass(ex);
    return proxy_begin(ex);
  }
  const RequestFacts rf = request_facts(ex->head);
  if (e && ((!e->auth_ok && rf.authorization) || !vary_matches(*e, &ex->head))) {
    cache_entry_release(e);  // another variant (the store keeps one per key): a miss
    e = nullptr;
  }
  if (op == CacheOp::Resume) return cache_found_again(ex, e, rf.conditional);
  const State s = cache_found(ex, e, rf.conditional);
  return s == State::Connect ? proxy_begin(ex) : s;
}

unsigned cache_conditionals(Exchange* ex, uv_buf_t* iov, unsigned n) {
  const CacheEntry& e = *ex->cache_entry;
  uv_buf_t& last = iov[n - 1];  // edit_request_head's lines in the scratch, ending with the empty line
  const std::size_t need = e.etag.size() + e.last_modified.size() + 48;
  if (last.base != ex->scratch.get() || last.len < 2 || last.len + need > ex->scratch_cap) {
    ex->cache_reval = false;  // no room: an ordinary request, whose 200 replaces the entry
    return n;
  }
  char* p = last.base + last.len - 2;
  if (!e.etag.empty()) p = put(put(put(p, "If-None-Match: "), e.etag), "\r\n");
  if (!e.last_modified.empty()) p = put(put(put(p, "If-Modified-Since: "), e.last_modified), "\r\n");
  p = put(p, "\r\n");
  last.len = static_cast<unsigned>(p - last.base);
  return n;
}

bool cache_takes_over(const Exchange* ex, int status) noexcept {
  if (status == 304) return ex->cache_reval;
  return status >= 500 && cache_stands_in(ex);
}

bool cache_stands_in(const Exchange* ex) noexcept {
  const CacheEntry* e = ex->cache_entry;
  if (!e || e->stale_if_error_ms == 0) return false;
  return ex->worker->now_ms() < e->fresh_until_ms.load(std::memory_order_relaxed) + e->stale_if_error_ms;
}

State cache_reply_stale(Exchange* ex) {
  return reply_stored(ex, ex->cache_entry, CacheStatus::Stale, request_facts(ex->head).conditional);
}

State cache_from_response(Exchange* ex) {
  if (ex->resp.status() != 304) {
    log(LogLevel::Info, "status %d from the server: a stale copy answers", ex->resp.status());
    return cache_reply_stale(ex);
  }
  // 304: the stored copy is fresh again, for the lifetime the 304 gives (or
  // its own), with the 304's fields (a new entry: a stored one is immutable,
  // other workers may be writing it), and answers; the server connection
  // goes on when it can.
  CacheEntry* old = ex->cache_entry;
  CacheStore* store = ex->worker->shared.cache.get();
  ResponseFacts f = response_facts(ex->resp);
  f.status = old->status;
  f.validator = true;
  const bool auth = !ex->head.header("authorization").empty();
  const StoreDecision d = decide_store(f, auth, ex->route->cache_ttl_ms, static_cast<std::int64_t>(std::time(nullptr)));
  const bool named = f.cc.max_age >= 0 || f.cc.s_maxage >= 0 || f.has_expires;
  const std::uint64_t lifetime = named && d.store ? d.lifetime_ms : old->lifetime_ms;
  bool cache_control = false;
  // An entry read from Redis has no key: the one it is stored under.
  const std::string_view key = store->asynchronous() ? store_key(ex->head, t_key, true) : old->key;
  CacheEntry* e = refreshed_entry(*old, key, ex->resp, &cache_control);
  if (e) {
    if (cache_control) {  // its directives replace the stored ones
      e->revalidate = d.revalidate;
      e->stale_if_error_ms = d.stale_if_error_ms;
      e->stale_while_revalidate_ms = d.stale_while_revalidate_ms;
    }
    e->lifetime_ms = lifetime;
    e->set_times(ex->worker->now_ms(), d.age_ms, lifetime);
    cache_entry_ref(e);  // the store's, and this answer's
    store->insert(e);
    cache_entry_release(old);
    ex->cache_entry = nullptr;
  } else {  // nothing new, or out of memory: the stored copy's times only
    e = old;
    e->set_times(ex->worker->now_ms(), d.age_ms, lifetime);
    if (store->asynchronous()) store->update(key, e);  // for every process
  }
  const bool complete = feed_response_body(ex) == ParseEvent::MessageComplete;
  detach_upstream(ex, complete && ex->upstream_reusable && ex->body->complete());
  return reply_stored(ex, e, CacheStatus::Hit, false);
}

// ---------------------------------------------------------------- PURGE


State cache_purge(Exchange* ex) {
  const Settings& st = settings(*ex->worker);
  if (!purge_allowed(ex->down->peer(), st.cache_purge_from)) {
    log(LogLevel::Debug, "PURGE refused for %.*s", static_cast<int>(ex->down->peer().size()), ex->down->peer().data());
    return reply_error(ex, 403);
  }
  CacheStore* store = ex->worker->shared.cache.get();
  const std::string_view key = purge_key(ex->head, t_key, store->asynchronous());
  if (store->asynchronous()) {
    const std::uint64_t ticket = store->purge_async(key, on_fetched, ex);
    if (!ticket) return reply_error(ex, 503);  // the store is down: nothing was purged
    ex->cache_ticket = ticket;
    ex->cache_op = static_cast<std::uint8_t>(CacheOp::Purge);
    return State::CacheFetch;
  }
  const std::size_t n = store->purge(cache_key_hash(key), key);
  return n ? reply_local(ex, 200, kPurgedKeep, kPurgedClose) : reply_error(ex, 404);
}

std::string_view cache_status_line(const Exchange* ex) noexcept { return kXCache[ex->cache]; }

void cache_release(Exchange* ex) noexcept {
  if (ex->cache_tap) cache_stage_put(ex->cache_tap);  // a body that did not end: nothing stored
  ex->cache_tap = nullptr;
  cancel_fetch(ex);
  if (ex->cache_found) cache_entry_release(ex->cache_found);
  ex->cache_found = nullptr;
  cache_collapse_release(ex);
  if (ex->cache_entry) cache_entry_release(ex->cache_entry);
  ex->cache_entry = nullptr;
}

}  // namespace juggler
