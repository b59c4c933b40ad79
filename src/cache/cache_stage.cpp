// The cache's store stage (a response filter, route option `cache`): fills
// an entry from what the client is sent and hands it to the CacheStore once
// the body is complete; and the entry a revalidating 304 makes of a stored
// one. The request side is cache.cpp.
#include <charconv>
#include <cstring>
#include <ctime>
#include <new>
#include <string>

#include "cache/cache.hpp"
#include "cache/cache_parts.hpp"
#include "cache/collapse.hpp"
#include "cache/rules.hpp"
#include "cache/store.hpp"
#include "juggler/free_list.hpp"

namespace juggler {

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
thread_local std::string t_key;

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

}  // namespace

// The entry a 304 makes of `old`: its body, its key and variant, its head
// with the fields the 304 sends replaced (*cache_control: the 304 has a
// Cache-Control). Null when the 304 says nothing new but its Date (the body
// is not copied for that: a no-cache entry is revalidated on every use) or
// when out of memory.
CacheEntry* refreshed_entry(const CacheEntry& old, std::string_view key, const MessageParser& r, bool* cache_control) {
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
    const auto new_value = [&](std::string_view name) {
      for (std::uint32_t i = 0; i < r.header_count(); ++i) {
        const HeaderSpan& hs = r.headers()[i];
        if (!hs.drop && same_field_name(r.header_name(hs), name) &&
            updates_stored_field(name, r.header_value(hs), old.etag))
          return true;
      }
      return false;
    };
    std::string head;
    const std::size_t first = old.head.find("\r\n") + 2;
    head.append(old.head.substr(0, first));
    for_each_line(old.head.substr(first), [&](std::string_view n, std::string_view v) {
      if (!new_value(n)) head.append(n).append(": ").append(v).append("\r\n");
    });
    for (std::uint32_t i = 0; i < r.header_count(); ++i) {
      const HeaderSpan& hs = r.headers()[i];
      const std::string_view n = r.header_name(hs), v = r.header_value(hs);
      if (hs.drop || !updates_stored_field(n, v, old.etag)) continue;
      head.append(n).append(": ").append(v).append("\r\n");
      *cache_control = *cache_control || iequals(n, "cache-control");
    }
    e = cache_entry_of(key, old.vary, head, old.body);  // an entry read from Redis holds them in its blob
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
  for_each_line(e->head, [&](std::string_view n, std::string_view v) {
    if (iequals(n, "etag")) e->etag = v;
    else if (iequals(n, "last-modified")) e->last_modified = v;
  });
  e->hash = old.hash;
  e->status = old.status;
  e->revalidate = old.revalidate;
  e->auth_ok = old.auth_ok;
  e->stale_if_error_ms = old.stale_if_error_ms;
  e->stale_while_revalidate_ms = old.stale_while_revalidate_ms;
  return e;
}

namespace {

bool CacheStage::fill(const HeadEdit& edit, const StoreDecision& d) {
  const MessageParser& r = edit.response();
  const bool async = ex->worker->shared.cache->asynchronous();
  std::string_view status_line = r.first_line();
  while (!status_line.empty() && (status_line.back() == '\n' || status_line.back() == '\r')) status_line.remove_suffix(1);
  status_line = trim_ows(status_line.substr(status_line.find(' ') + 1));
  const std::string_view lines = edit.lines();  // what the stages before this one added (Content-Encoding, Vary)
  std::size_t size = 11 + status_line.size() + lines.size();
  for (std::uint32_t i = 0; i < r.header_count(); ++i) size += r.headers()[i].value_off + r.headers()[i].value_len + 2;
  // One allocation: the entry, its key, its head (written in place; the
  // views below stay valid) and a body of announced size.
  // The memory key is written straight into the entry; Redis's (readable,
  // with the Accept-Encoding class) is made first.
  const std::string_view async_store_key = async ? store_key(ex->head, t_key, true) : std::string_view{};
  const std::size_t key_len = async ? async_store_key.size() : memory_key_size(ex->head);
  // Room for the body as the server announced it, when that is what is
  // stored: a stage before this one (compression) that added lines changes
  // the body, and a room sized by the server's Content-Length would hold a
  // gzipped copy in many times its size.
  const bool sized = lines.empty() && r.has_content_length() && r.content_length() < kFileBodyMin;
  CacheEntry* e = entry = cache_entry_new(key_len, size, sized ? r.content_length() : 0);
  char* const k = cache_entry_key_room(e);
  if (async) put(k, async_store_key);
  else put_memory_key(k, ex->head);
  e->key = {k, key_len};
  // The memory key's hash when the lookup made it (0: it did not, or it is 0).
  e->hash = ex->cache_hash && !async ? ex->cache_hash : cache_key_hash(e->key);
  char* const base = cache_entry_head_room(e, key_len);
  char* p = put(put(put(base, "HTTP/1.1 "), status_line), "\r\n");
  // The variants: the fields Vary names (lower case), and Accept-Encoding
  // on a route that compresses.
  std::string names;  // "name," of each Vary'd field so far
  std::string vary;   // "name\0value\0"...
  auto vary_on = [&](const std::string& name) {
    if (name.empty() || names.find(name + ",") != std::string::npos) return;
    names.append(name).append(",");
    char digit = 0;
    vary.append(name).append(1, '\0').append(vary_value(ex->head, name, &digit)).append(1, '\0');
  };
  // One pass: the validators as views into the stored head, the Vary'd names.
  auto field = [&](std::string_view n, std::string_view stored_value) {
    if (n.size() == 13 && iequals(n, "last-modified")) e->last_modified = stored_value;
    if (n.size() != 4) return;
    if (iequals(n, "etag")) e->etag = stored_value;
    else if (iequals(n, "vary"))
      for_each_token(stored_value, [&](std::string_view t) {
        std::string name(trim_ows(t));
        for (char& c : name) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
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
  e->head = {base, static_cast<std::size_t>(p - base)};
  if (ex->route->compress) vary_on("accept-encoding");
  if (!vary.empty()) cache_entry_set_vary(*e, vary);
  e->status = r.status();
  e->revalidate = d.revalidate;
  e->auth_ok = d.auth_ok;
  e->lifetime_ms = d.lifetime_ms;
  e->set_times(ex->worker->now_ms(), d.age_ms, d.lifetime_ms);
  e->stale_if_error_ms = d.stale_if_error_ms;
  e->stale_while_revalidate_ms = d.stale_while_revalidate_ms;
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
    cache_entry_append_body(*entry, in);
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
