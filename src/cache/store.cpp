#include "cache/store.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "juggler/free_list.hpp"
#include "juggler/log.hpp"

namespace juggler {

namespace {

// Entries of Redis hits, per thread (they never leave their worker).
thread_local FreeList<CacheEntry, 256> t_blob_entries;

std::atomic<std::size_t> g_files{0};
std::atomic<bool> g_file_warned{false};

void close_file(CacheEntry& e) noexcept {
  ::munmap(const_cast<char*>(e.file_map), e.file_len);
  ::close(e.file_fd);
  e.file_fd = -1;
  e.file_map = nullptr;
  g_files.fetch_sub(1, std::memory_order_relaxed);
}

// The reason a body stays on the heap, once per process (then every such
// body stays there quietly: the cache works the same, only copies a hit).
void warn_file(const char* what) noexcept {
  if (!g_file_warned.exchange(true, std::memory_order_relaxed))
    log(LogLevel::Warn, "cache: %s (%s): large bodies stay on the heap, hits write them with a copy", what,
        std::strerror(errno));
}

}  // namespace

std::size_t cache_files_open() noexcept { return g_files.load(std::memory_order_relaxed); }

std::size_t cache_files_cap() noexcept {
  static const std::size_t cap = [] {
    rlimit nofile{};
    if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_cur == RLIM_INFINITY) return std::size_t{1024};
    return static_cast<std::size_t>(nofile.rlim_cur / 8);
  }();
  return cap;
}

bool cache_body_to_file(CacheEntry& e) noexcept {
  const std::size_t len = e.body.size();
  if (e.blob || e.file_map || len < kFileBodyMin) return false;
  if (g_files.fetch_add(1, std::memory_order_relaxed) >= cache_files_cap()) {
    g_files.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  const int fd = ::memfd_create("juggler-cache", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    g_files.fetch_sub(1, std::memory_order_relaxed);
    warn_file("memfd_create failed");
    return false;
  }
  std::size_t done = 0;
  while (done < len) {
    const ssize_t n = ::write(fd, e.body.data() + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  // No write, grow or shrink from here on: the pages a send references stay
  // the entry's bytes. Sealed before it is mapped (a shared mapping of a
  // descriptor open for writing would make F_SEAL_WRITE fail with EBUSY).
  const bool sealed =
      done == len && ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) == 0;
  void* map = sealed ? ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
  if (map == MAP_FAILED) {
    ::close(fd);
    g_files.fetch_sub(1, std::memory_order_relaxed);
    warn_file("a memfd could not be filled, sealed or mapped");
    return false;
  }
  e.file_fd = fd;
  e.file_map = static_cast<const char*>(map);
  e.file_len = len;
  std::string().swap(e.body);
  return true;
}

CacheEntry* cache_entry_for_blob() {
  CacheEntry* e = t_blob_entries.pop();
  if (!e) e = new CacheEntry();
  e->refs.store(1, std::memory_order_relaxed);
  return e;
}

void cache_entry_release(CacheEntry* e) noexcept {
  if (e->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  if (!e->blob) {
    if (e->file_map) close_file(*e);
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
  if (max_object >= kFileBodyMin)
    log(LogLevel::Info, "cache: bodies of %zu KB or more in memfds (sendfile on plain HTTP/1), at most %zu descriptors",
        kFileBodyMin / 1024, std::min(cache_files_cap(), capacity / kFileBodyMin));
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
  cache_body_to_file(*e);  // before it is shared: no reader sees the body move
  e->charge = sizeof(CacheEntry) + e->key.size() + e->vary.size() + e->head.size() + e->stored_body().size();
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
