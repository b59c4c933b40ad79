// The exchange side of the cache: lookups and hits in state Route, the
// store stage on the response chain, PURGE. What may be stored and for how
// long is decided by src/cache/rules.cpp; where it is kept by the CacheStore.
#include "cache/cache.hpp"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>
#include <ctime>
#include <new>

#include "cache/collapse.hpp"
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

char* put(char* p, std::string_view s) noexcept {
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

// The primary key into `out` (reused: no allocation once it grew): the host
// in lower case, '\0', the path and the query, written in place (a miss and
// a hit build it on every request).
std::string_view build_key(const RequestHead& h, std::string& out) {
  out.resize(h.host.size() + 1 + h.path.size() + (h.query.empty() ? 0 : 1 + h.query.size()));
  char* p = out.data();
  for (char c : h.host) *p++ = lower(c);
  *p++ = '\0';
  p = put(p, h.path);
  if (!h.query.empty()) put(put(p, "?"), h.query);
  return out;
}

thread_local std::string t_key;

// The request's value of a Vary'd field, normalised: Accept-Encoding as the
// set of codings accepted (one digit of kCompress* bits), others trimmed.
std::string_view vary_value(const RequestHead& h, std::string_view lower_name, char* digit) noexcept {
  if (lower_name != "accept-encoding") return trim_ows(h.header(lower_name));
  std::uint8_t bits = 0;  // every Accept-Encoding line counts, as for compression
  for (std::uint8_t b : {kCompressGzip, kCompressBr, kCompressZstd}) bits |= negotiate_encoding(h.headers, b);
  *digit = static_cast<char>('0' + bits);
  return {digit, 1};
}

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

CacheEntry* refreshed_entry(const CacheEntry& old, const MessageParser& r, bool* cache_control);

char* put_number(char* p, std::uint64_t n) noexcept { return std::to_chars(p, p + 20, n).ptr; }

// A stored answer as a local responder: the stored head, the lines of this
// hit (Age, X-Cache, Content-Length, Connection) from the exchange's
// scratch, and the stored body, as three slices of one write; the entry
// stays referenced until the exchange is put back. `conditional`: the
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
  char* const lines = ex->scratch.get();
  char* p = put(lines, "Age: ");
  p = put_number(p, e->age_now_ms(ex->worker->now_ms()) / 1000);
  p = put(p, "\r\n");
  p = put(p, kXCache[static_cast<unsigned>(how)]);
  if (!not_modified && e->status != 204 && e->status != 304) {
    p = put(p, "Content-Length: ");
    p = put_number(p, e->body.size());
    p = put(p, "\r\n");
  }
  if (ex->client_close) p = put(p, "Connection: close\r\n");
  else if (ex->req.http_minor() == 0) p = put(p, "Connection: keep-alive\r\n");
  p = put(p, "\r\n");
  uv_buf_t* iov = ex->iov.get();
  unsigned n = 0;
  std::string_view head = e->head;
  if (not_modified) {
    iov[n++] = uv_buf_init(const_cast<char*>(kNotModified.data()), static_cast<unsigned>(kNotModified.size()));
    head.remove_prefix(head.find("\r\n") + 2);  // the stored status line
  }
  iov[n++] = uv_buf_init(const_cast<char*>(head.data()), static_cast<unsigned>(head.size()));
  iov[n++] = uv_buf_init(lines, static_cast<unsigned>(p - lines));
  if (!ex->is_head && !not_modified && !e->body.empty())
    iov[n++] = uv_buf_init(e->body.data(), static_cast<unsigned>(e->body.size()));
  for (unsigned i = 0; i < n; ++i) ex->bytes_out += iov[i].len;
  ex->answer_slices = static_cast<std::uint8_t>(n);
  return State::Respond;
}

}  // namespace

std::shared_ptr<CacheStore> make_cache_store(const Settings& s) {
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
    const std::string_view key = build_key(h, t_key);
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
  const std::uint64_t hash = ex->cache_hash = cache_key_hash(key);  // the store stage's too
  CacheEntry* e = lookup(ex, key, hash, rf.authorization);
  const std::uint64_t now = ex->worker->now_ms();
  if (e && e->fresh(now)) return reply_stored(ex, e, CacheStatus::Hit, rf.conditional);
  if (e) keep_stale(ex, e, rf.conditional);
  if (h.method != Method::Get) return State::Connect;
  // stale-while-revalidate: another request is refreshing it; this one need not wait.
  if (e && !e->revalidate && now < e->fresh_until_ms.load(std::memory_order_relaxed) + e->stale_while_revalidate_ms &&
      ex->worker->shared.cache_flights->active(hash))
    return reply_stored(ex, e, CacheStatus::Stale, rf.conditional);
  return cache_lead_or_wait(ex, hash) ? State::Connect : State::CacheWait;
}

State cache_resume(Exchange* ex) {
  const std::string_view key = build_key(ex->head, t_key);
  const RequestFacts rf = request_facts(ex->head);
  CacheEntry* e = lookup(ex, key, cache_key_hash(key), rf.authorization);
  if (e && e->fresh(ex->worker->now_ms())) {
    if (ex->cache_entry) cache_entry_release(ex->cache_entry);
    ex->cache_entry = nullptr;
    return reply_stored(ex, e, CacheStatus::Hit, rf.conditional);
  }
  if (e) keep_stale(ex, e, rf.conditional);
  return proxy_begin(ex);  // what the leader got was not stored: to the server, each
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
  ResponseFacts f = response_facts(ex->resp);
  f.status = old->status;
  f.validator = true;
  const bool auth = !ex->head.header("authorization").empty();
  const StoreDecision d = decide_store(f, auth, ex->route->cache_ttl_ms, static_cast<std::int64_t>(std::time(nullptr)));
  const bool named = f.cc.max_age >= 0 || f.cc.s_maxage >= 0 || f.has_expires;
  const std::uint64_t lifetime = named && d.store ? d.lifetime_ms : old->lifetime_ms;
  bool cache_control = false;
  CacheEntry* e = refreshed_entry(*old, ex->resp, &cache_control);
  if (e) {
    if (cache_control) {  // its directives replace the stored ones
      e->revalidate = d.revalidate;
      e->stale_if_error_ms = d.stale_if_error_ms;
      e->stale_while_revalidate_ms = d.stale_while_revalidate_ms;
    }
    e->lifetime_ms = lifetime;
    e->set_times(ex->worker->now_ms(), d.age_ms, lifetime);
    cache_entry_ref(e);  // the store's, and this answer's
    ex->worker->shared.cache->insert(e);
    cache_entry_release(old);
    ex->cache_entry = nullptr;
  } else {  // nothing new, or out of memory: the stored copy's times only
    e = old;
    e->set_times(ex->worker->now_ms(), d.age_ms, lifetime);
  }
  const bool complete = feed_response_body(ex) == ParseEvent::MessageComplete;
  detach_upstream(ex, complete && ex->upstream_reusable && ex->body->complete());
  return reply_stored(ex, e, CacheStatus::Hit, false);
}

// ---------------------------------------------------------------- PURGE

namespace {

bool peer_allowed(std::string_view peer, const CidrDef& net) noexcept {
  if (net.family == 0 || peer.size() >= INET6_ADDRSTRLEN) return false;
  char text[INET6_ADDRSTRLEN];
  std::memcpy(text, peer.data(), peer.size());
  text[peer.size()] = '\0';
  unsigned char addr[16];
  const unsigned char* a = addr;
  if (inet_pton(AF_INET, text, addr) == 1) {
    if (net.family != 4) return false;
  } else if (inet_pton(AF_INET6, text, addr) == 1) {
    static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const bool mapped = std::memcmp(addr, kMapped, 12) == 0;
    if (mapped) a = addr + 12;  // ::ffff:a.b.c.d is an IPv4 client
    if ((net.family == 4) != mapped) return false;
  } else {
    return false;
  }
  const unsigned full = net.bits / 8, rest = net.bits % 8;
  if (std::memcmp(a, net.addr, full) != 0) return false;
  if (rest == 0) return true;
  const unsigned mask = (0xFFu << (8 - rest)) & 0xFFu;
  return (a[full] & mask) == (net.addr[full] & mask);
}

}  // namespace

State cache_purge(Exchange* ex) {
  const Settings& st = settings(*ex->worker);
  if (!peer_allowed(ex->down->peer(), st.cache_purge_from)) {
    log(LogLevel::Debug, "PURGE refused for %.*s", static_cast<int>(ex->down->peer().size()), ex->down->peer().data());
    return reply_error(ex, 403);
  }
  const std::string_view key = build_key(ex->head, t_key);
  const std::size_t n = ex->worker->shared.cache->purge(cache_key_hash(key), key);
  return n ? reply_local(ex, 200, kPurgedKeep, kPurgedClose) : reply_error(ex, 404);
}

std::string_view cache_status_line(const Exchange* ex) noexcept { return kXCache[ex->cache]; }

void cache_release(Exchange* ex) noexcept {
  if (ex->cache_tap) cache_stage_put(ex->cache_tap);  // a body that did not end: nothing stored
  ex->cache_tap = nullptr;
  cache_collapse_release(ex);
  if (ex->cache_entry) cache_entry_release(ex->cache_entry);
  ex->cache_entry = nullptr;
}

// ---------------------------------------------------------------- the store stage

namespace {

// Fills an entry from the response the client is sent (after the stages
// before it: the compressed body) and stores it once the body is complete.
// Passes every byte on untouched; a body over the limit drops the copy.
class CacheStage final : public ResponseFilter {
 public:
  Exchange* ex = nullptr;
  CacheEntry* entry = nullptr;  // being filled; null: nothing to store
  CacheStage* next_free = nullptr;

  bool head(HeadEdit& edit) noexcept override;
  FilterStatus process(std::string_view in, bool last, FilterOut& out, std::size_t* used) noexcept override;
  void written() noexcept override {}
  // Copies body bytes into the entry; stores it after the last ones.
  void take(std::string_view in, bool last) noexcept;
  void drop() noexcept {
    if (entry) cache_entry_release(entry);
    entry = nullptr;
  }

 private:
  bool fill(const HeadEdit& edit, const StoreDecision& d);
};

thread_local FreeList<CacheStage, 64> t_stages;

// Calls f(name, value) for each "Name: value\r\n" line of `lines`.
template <class F>
void for_each_line(std::string_view lines, F&& f) {
  while (!lines.empty()) {
    const std::size_t end = lines.find("\r\n");
    const std::string_view line = lines.substr(0, end);
    const std::size_t colon = line.find(':');
    if (colon != std::string_view::npos) f(line.substr(0, colon), trim_ows(line.substr(colon + 1)));
    if (end == std::string_view::npos) break;
    lines.remove_prefix(end + 2);
  }
}

// The entry a 304 makes of `old`: its body, its key and variant, its head
// with the fields the 304 sends replaced (*cache_control: the 304 has a
// Cache-Control). Null when the 304 says nothing new but its Date (the body
// is not copied for that: a no-cache entry is revalidated on every use) or
// when out of memory.
CacheEntry* refreshed_entry(const CacheEntry& old, const MessageParser& r, bool* cache_control) {
  bool news = false;
  for (std::uint32_t i = 0; i < r.header_count() && !news; ++i) {
    const HeaderSpan& hs = r.headers()[i];
    const std::string_view n = r.header_name(hs), v = r.header_value(hs);
    if (hs.drop || iequals(n, "date") || !updates_stored_field(n, v, old.etag)) continue;
    news = true;  // unless the stored head has the same line
    for_each_line(old.head, [&](std::string_view sn, std::string_view sv) {
      news = news && !(same_field_name(sn, n) && sv == v);
    });
  }
  if (!news) return nullptr;
  CacheEntry* e = nullptr;
  try {
    e = new CacheEntry();
    e->hash = old.hash;
    e->key = old.key;
    e->vary = old.vary;
    e->body = old.body;
    const auto new_value = [&](std::string_view name) {
      for (std::uint32_t i = 0; i < r.header_count(); ++i) {
        const HeaderSpan& hs = r.headers()[i];
        if (!hs.drop && same_field_name(r.header_name(hs), name) &&
            updates_stored_field(name, r.header_value(hs), old.etag))
          return true;
      }
      return false;
    };
    const std::size_t first = old.head.find("\r\n") + 2;
    e->head.append(old.head, 0, first);
    for_each_line(std::string_view(old.head).substr(first), [&](std::string_view n, std::string_view v) {
      if (!new_value(n)) e->head.append(n).append(": ").append(v).append("\r\n");
    });
    for (std::uint32_t i = 0; i < r.header_count(); ++i) {
      const HeaderSpan& hs = r.headers()[i];
      const std::string_view n = r.header_name(hs), v = r.header_value(hs);
      if (hs.drop || !updates_stored_field(n, v, old.etag)) continue;
      e->head.append(n).append(": ").append(v).append("\r\n");
      *cache_control = *cache_control || iequals(n, "cache-control");
    }
  } catch (const std::bad_alloc&) {
    delete e;
    return nullptr;
  }
  for_each_line(e->head, [&](std::string_view n, std::string_view v) {
    if (iequals(n, "etag")) e->etag = v;
    else if (iequals(n, "last-modified")) e->last_modified = v;
  });
  e->status = old.status;
  e->revalidate = old.revalidate;
  e->auth_ok = old.auth_ok;
  e->stale_if_error_ms = old.stale_if_error_ms;
  e->stale_while_revalidate_ms = old.stale_while_revalidate_ms;
  return e;
}

bool CacheStage::fill(const HeadEdit& edit, const StoreDecision& d) {
  const MessageParser& r = edit.response();
  CacheEntry* e = entry = new CacheEntry();
  build_key(ex->head, e->key);
  // The route's hash when it looked the key up (0: it did not, or it is 0).
  e->hash = ex->cache_hash ? ex->cache_hash : cache_key_hash(e->key);
  std::string_view status_line = r.first_line();
  while (!status_line.empty() && (status_line.back() == '\n' || status_line.back() == '\r')) status_line.remove_suffix(1);
  status_line = trim_ows(status_line.substr(status_line.find(' ') + 1));
  const std::string_view lines = edit.lines();  // what the stages before this one added (Content-Encoding, Vary)
  std::size_t size = 11 + status_line.size() + lines.size();
  for (std::uint32_t i = 0; i < r.header_count(); ++i) size += r.headers()[i].value_off + r.headers()[i].value_len + 2;
  e->head.resize(size);  // one allocation, written in place; the views below stay valid
  char* const base = e->head.data();
  char* p = put(put(put(base, "HTTP/1.1 "), status_line), "\r\n");
  // The variants: the fields Vary names (lower case), and Accept-Encoding
  // on a route that compresses.
  std::string names;  // "name," of each Vary'd field so far
  auto vary_on = [&](const std::string& name) {
    if (name.empty() || names.find(name + ",") != std::string::npos) return;
    names.append(name).append(",");
    char digit = 0;
    e->vary.append(name).append(1, '\0').append(vary_value(ex->head, name, &digit)).append(1, '\0');
  };
  // One pass: the validators as views into the stored head, the Vary'd names.
  auto field = [&](std::string_view n, std::string_view stored_value) {
    if (n.size() == 13 && iequals(n, "last-modified")) e->last_modified = stored_value;
    if (n.size() != 4) return;
    if (iequals(n, "etag")) e->etag = stored_value;
    else if (iequals(n, "vary"))
      for_each_token(stored_value, [&](std::string_view t) {
        std::string name(trim_ows(t));
        for (char& c : name) c = lower(c);
        vary_on(name);
      });
  };
  // Each stored line as the server sent it up to the end of its value.
  for (std::uint32_t i = 0; i < r.header_count(); ++i) {
    const HeaderSpan& hs = r.headers()[i];
    if (hs.drop || unstored_line(r, hs)) continue;
    std::memcpy(p, hs.line, hs.value_off + hs.value_len);
    field(r.header_name(hs), {p + hs.value_off, hs.value_len});
    p = put(p + hs.value_off + hs.value_len, "\r\n");
  }
  const char* const at = p;
  p = put(p, lines);
  for_each_line(lines, [&](std::string_view n, std::string_view v) { field(n, {at + (v.data() - lines.data()), v.size()}); });
  e->head.resize(static_cast<std::size_t>(p - base));
  if (ex->route->compress) vary_on("accept-encoding");
  e->status = r.status();
  e->revalidate = d.revalidate;
  e->auth_ok = d.auth_ok;
  e->lifetime_ms = d.lifetime_ms;
  e->set_times(ex->worker->now_ms(), d.age_ms, d.lifetime_ms);
  e->stale_if_error_ms = d.stale_if_error_ms;
  e->stale_while_revalidate_ms = d.stale_while_revalidate_ms;
  if (r.has_content_length()) e->body.reserve(r.content_length());
  return true;
}

bool CacheStage::head(HeadEdit& edit) noexcept {
  const MessageParser& r = edit.response();
  const std::uint32_t limit = settings(*ex->worker).cache_max_object;
  if (r.has_content_length() && r.content_length() > limit) return false;
  const ResponseFacts f = response_facts(r);
  const bool auth = !ex->head.header("authorization").empty();
  const StoreDecision d = decide_store(f, auth, ex->route->cache_ttl_ms, static_cast<std::int64_t>(std::time(nullptr)));
  if (!d.store) {
    cache_flight_end(ex);  // nothing to share: the waiters go to the server
    return false;
  }
  try {
    return fill(edit, d);
  } catch (const std::bad_alloc&) {
    drop();
    return false;
  }
}

FilterStatus CacheStage::process(std::string_view in, bool last, FilterOut& out, std::size_t* used) noexcept {
  *used = in.size();
  if (!out.add(in.data(), in.size())) return FilterStatus::Failed;
  take(in, last);
  return FilterStatus::Done;
}

void CacheStage::take(std::string_view in, bool last) noexcept {
  if (!entry) return;
  if (entry->body.size() + in.size() > settings(*ex->worker).cache_max_object) {
    drop();  // over the limit: streams on, uncached
    return;
  }
  try {
    entry->body.append(in);
  } catch (const std::bad_alloc&) {
    drop();
    return;
  }
  if (last) {
    ex->worker->shared.cache->insert(entry);
    entry = nullptr;
    cache_flight_end(ex);  // the waiters find it now
  }
}

}  // namespace

ResponseFilter* cache_stage_get(Exchange* ex) {
  CacheStage* s = t_stages.pop();
  if (!s) s = new CacheStage();
  s->ex = ex;
  s->entry = nullptr;
  return s;
}

void cache_stage_put(ResponseFilter* f) noexcept {
  auto* s = static_cast<CacheStage*>(f);
  s->drop();
  t_stages.push(s);
}

void cache_tap_begin(Exchange* ex) {
  ResponseFilter* s = cache_stage_get(ex);
  HeadEdit edit(ex->resp, nullptr, 0);  // it adds no line: the relay's head is the server's
  if (s->head(edit)) ex->cache_tap = s;
  else cache_stage_put(s);
}

void cache_tap(Exchange* ex, std::string_view body, bool last) noexcept {
  static_cast<CacheStage*>(ex->cache_tap)->take(body, last);
}

}  // namespace juggler
