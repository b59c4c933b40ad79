#include "cache/store.hpp"

#include <algorithm>
#include <cstdlib>

#include "juggler/free_list.hpp"

namespace juggler {

namespace {

// Entries of Redis hits, per thread (they never leave their worker).
thread_local FreeList<CacheEntry, 256> t_blob_entries;

}  // namespace

CacheEntry* cache_entry_for_blob() {
  CacheEntry* e = t_blob_entries.pop();
  if (!e) e = new CacheEntry();
  e->refs.store(1, std::memory_order_relaxed);
  return e;
}

void cache_entry_release(CacheEntry* e) noexcept {
  if (e->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  if (!e->blob) {
    delete e;
    return;
  }
  std::free(e->blob);  // the reply's buffer, malloc'd by hiredis
  e->blob = nullptr;
  e->blob_vary = e->blob_head = e->blob_body = e->etag = e->last_modified = {};
  t_blob_entries.push(e);
}

std::uint64_t cache_key_hash(std::string_view key) noexcept {
  // FNV-1a, then a finaliser so the top bits (the shard) mix well.
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

MemoryStore::MemoryStore(std::size_t capacity, std::size_t max_object) {
  unsigned n = 1;
  while (n < 16 && capacity / (n * 2) >= 8 * max_object) n *= 2;
  mask_ = n - 1;
  shards_ = std::make_unique<Shard[]>(n);
  for (unsigned i = 0; i < n; ++i) shards_[i].cap = capacity / n;
}

MemoryStore::~MemoryStore() {
  for (unsigned i = 0; i <= mask_; ++i)
    for (auto& kv : shards_[i].map) cache_entry_release(kv.second);
}

void MemoryStore::unlink(Shard& s, CacheEntry* e) noexcept {
  (e->lru_prev ? e->lru_prev->lru_next : s.lru_head) = e->lru_next;
  (e->lru_next ? e->lru_next->lru_prev : s.lru_tail) = e->lru_prev;
  e->lru_prev = e->lru_next = nullptr;
}

void MemoryStore::push_front(Shard& s, CacheEntry* e) noexcept {
  e->lru_prev = nullptr;
  e->lru_next = s.lru_head;
  (s.lru_head ? s.lru_head->lru_prev : s.lru_tail) = e;
  s.lru_head = e;
}

void MemoryStore::remove(Shard& s, std::unordered_multimap<std::uint64_t, CacheEntry*>::iterator it) noexcept {
  CacheEntry* e = it->second;
  unlink(s, e);
  s.bytes -= e->charge;
  s.map.erase(it);
  cache_entry_release(e);
}

CacheEntry* MemoryStore::find(std::uint64_t hash, std::string_view key, VaryMatch match, const void* request,
                              bool* pending) {
  *pending = false;
  Shard& s = shard(hash);
  std::lock_guard<std::mutex> lock(s.mu);
  auto [it, end] = s.map.equal_range(hash);
  for (; it != end; ++it) {
    CacheEntry* e = it->second;
    if (e->key != key || !match(*e, request)) continue;
    if (s.lru_head != e) {
      unlink(s, e);
      push_front(s, e);
    }
    cache_entry_ref(e);
    return e;
  }
  return nullptr;
}

bool MemoryStore::insert(CacheEntry* e) {
  e->charge = sizeof(CacheEntry) + e->key.size() + e->vary.size() + e->head.size() + e->body.size();
  Shard& s = shard(e->hash);
  if (e->charge > s.cap) {
    cache_entry_release(e);
    return false;
  }
  std::lock_guard<std::mutex> lock(s.mu);
  auto [it, end] = s.map.equal_range(e->hash);
  for (; it != end; ++it) {
    if (it->second->key == e->key && it->second->vary == e->vary) {
      remove(s, it);
      break;
    }
  }
  while (s.bytes + e->charge > s.cap && s.lru_tail) {
    CacheEntry* victim = s.lru_tail;
    auto [v, vend] = s.map.equal_range(victim->hash);
    while (v != vend && v->second != victim) ++v;
    remove(s, v);
  }
  s.map.emplace(e->hash, e);
  push_front(s, e);
  s.bytes += e->charge;
  return true;
}

std::size_t MemoryStore::purge(std::uint64_t hash, std::string_view key) {
  Shard& s = shard(hash);
  std::lock_guard<std::mutex> lock(s.mu);
  std::size_t n = 0;
  auto [it, end] = s.map.equal_range(hash);
  while (it != end) {
    auto next = std::next(it);
    if (it->second->key == key) {
      remove(s, it);
      ++n;
    }
    it = next;
  }
  return n;
}

std::size_t MemoryStore::bytes() const {
  std::size_t total = 0;
  for (unsigned i = 0; i <= mask_; ++i) {
    std::lock_guard<std::mutex> lock(shards_[i].mu);
    total += shards_[i].bytes;
  }
  return total;
}

}  // namespace juggler
