#include "cache/store.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "cache/probe.hpp"
#include "juggler/free_list.hpp"
#include "juggler/log.hpp"

namespace juggler {

namespace {

// Entries of Redis hits, per thread (they never leave their worker).
thread_local FreeList<CacheEntry, 256> t_blob_entries;

std::atomic<std::size_t> g_files{0};
std::atomic<bool> g_file_warned{false};

void close_file(CacheEntry& e) noexcept {
  ::munmap(const_cast<char*>(e.file_map), e.body.size());  // body views the whole mapping
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

CacheEntry* cache_entry_new(std::size_t key_len, std::size_t head_room, std::size_t body_room) {
  const std::size_t block = sizeof(CacheEntry) + key_len + head_room + body_room;
  void* m = ::operator new(block);
  auto* e = new (m) CacheEntry();
  e->block = block;
  char* const body = cache_entry_head_room(e, key_len) + head_room;
  e->body = std::string_view(body, body_room).substr(0, 0);  // empty, at the room
  e->body_room = body_room;
  return e;
}

char* cache_entry_head_room(CacheEntry* e, std::size_t key_len) noexcept { return cache_entry_key_room(e) + key_len; }

CacheEntry* cache_entry_of(std::string_view key, std::string_view vary, std::string_view head, std::string_view body) {
  // A body bound for a file stays out of the entry's own room (which a file would leave unused).
  CacheEntry* e = cache_entry_new(key.size(), head.size(), body.size() < kFileBodyMin ? body.size() : 0);
  try {
    char* const k = cache_entry_key_room(e);
    e->key = {k, key.size()};
    if (!key.empty()) std::memcpy(k, key.data(), key.size());
    char* const h = cache_entry_head_room(e, key.size());
    e->head = {h, head.size()};
    if (!head.empty()) std::memcpy(h, head.data(), head.size());
    if (!vary.empty()) cache_entry_set_vary(*e, vary);
    cache_entry_append_body(*e, body);
  } catch (...) {
    cache_entry_release(e);
    throw;
  }
  return e;
}

void cache_entry_append_body(CacheEntry& e, std::string_view in) {
  if (in.empty()) return;
  if (e.body.size() + in.size() <= e.body_room) {
    std::memcpy(const_cast<char*>(e.body.data()) + e.body.size(), in.data(), in.size());
    e.body = {e.body.data(), e.body.size() + in.size()};
    return;
  }
  if (e.body_room) {  // more than announced: the bytes so far move to body_buf
    e.body_buf.assign(e.body);
    e.body_room = 0;
  }
  e.body_buf.append(in);
  e.body = e.body_buf;
}

void cache_entry_set_vary(CacheEntry& e, std::string_view vary) {
  e.vary_buf.assign(vary);
  e.vary = e.vary_buf;
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
  e.body = {e.file_map, len};
  std::string().swap(e.body_buf);  // (the entry's own room only ever holds bodies below kFileBodyMin)
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
    e->~CacheEntry();
    ::operator delete(e);
    return;
  }
  std::free(e->blob);  // the reply's buffer, malloc'd by hiredis
  e->blob = nullptr;
  e->vary = e->head = e->body = e->etag = e->last_modified = {};
  t_blob_entries.push(e);
}

std::uint64_t cache_key_hash(std::string_view key) noexcept {
  // Eight bytes a step (a multiply and a shift each; FNV-1a's byte a step
  // cost 5 instructions per byte of a ~40-byte key), then murmur3's
  // finaliser so the top bits (the shard) and the low bits (the bucket)
  // both mix well. Never stored or sent: only this process compares it.
  std::uint64_t h = 0x9e3779b97f4a7c15ULL ^ key.size();
  const char* p = key.data();
  std::size_t n = key.size();
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdULL;
    h ^= h >> 29;
  }
  std::uint64_t w = 0;
  for (std::size_t i = 0; i < n; ++i) w |= std::uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
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
    for (CacheEntry* e = shards_[i].lru_head; e;) {
      CacheEntry* next = e->lru_next;
      cache_entry_release(e);
      e = next;
    }
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

std::size_t MemoryStore::slot_of(const Shard& s, const CacheEntry* e) noexcept {
  const std::size_t m = s.nslots - 1;
  std::size_t i = e->hash & m;
  while (s.slots[i].e != e) i = (i + 1) & m;
  return i;
}

void MemoryStore::remove(Shard& s, std::size_t at) noexcept {
  CacheEntry* e = s.slots[at].e;
  probe_erase(s.slots.get(), s.nslots - 1, at, used,
              [m = s.nslots - 1](const Slot& x) { return static_cast<std::size_t>(x.hash) & m; });
  unlink(s, e);
  s.bytes -= e->charge;
  --s.count;
  cache_entry_release(e);
}

bool MemoryStore::grow(Shard& s) noexcept {
  const std::size_t n = s.nslots ? s.nslots * 2 : 64;
  auto* fresh = new (std::nothrow) Slot[n]();
  if (!fresh) return false;
  for (std::size_t i = 0; i < s.nslots; ++i)
    if (s.slots[i].e) fresh[probe_free(fresh, n - 1, s.slots[i].hash & (n - 1), used)] = s.slots[i];
  s.slots.reset(fresh);
  s.nslots = n;
  return true;
}

CacheEntry* MemoryStore::find(std::uint64_t hash, std::string_view key, VaryMatch match, const void* request,
                              bool* pending) {
  *pending = false;
  Shard& s = shard(hash);
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.nslots) return nullptr;
  const std::size_t m = s.nslots - 1;
  for (std::size_t i = hash & m; s.slots[i].e; i = (i + 1) & m) {
    CacheEntry* e = s.slots[i].e;
    if (s.slots[i].hash != hash || e->key != key || !match(*e, request)) continue;
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
  // What it holds in memory, rooms and buffers included (a room larger than
  // its bytes is memory all the same).
  e->charge = e->block + e->vary_buf.capacity() + e->body_buf.capacity() + (e->file_map ? e->body.size() : 0);
  Shard& s = shard(e->hash);
  if (e->charge > s.cap) {
    cache_entry_release(e);
    return false;
  }
  std::lock_guard<std::mutex> lock(s.mu);
  // At most half full; a table that cannot grow takes entries while one slot stays free.
  if ((s.count + 1) * 2 > s.nslots && !grow(s) && s.count + 1 >= s.nslots) {
    cache_entry_release(e);
    return false;
  }
  const std::size_t m = s.nslots - 1;
  for (std::size_t i = e->hash & m; s.slots[i].e; i = (i + 1) & m) {
    const CacheEntry* old = s.slots[i].e;
    if (s.slots[i].hash == e->hash && old->key == e->key && old->vary == e->vary) {
      remove(s, i);
      break;
    }
  }
  while (s.bytes + e->charge > s.cap && s.lru_tail) remove(s, slot_of(s, s.lru_tail));
  s.slots[probe_free(s.slots.get(), m, e->hash & m, used)] = Slot{e->hash, e};
  ++s.count;
  push_front(s, e);
  s.bytes += e->charge;
  return true;
}

std::size_t MemoryStore::purge(std::uint64_t hash, std::string_view key) {
  Shard& s = shard(hash);
  std::lock_guard<std::mutex> lock(s.mu);
  std::size_t n = 0;
  if (!s.nslots) return 0;
  const std::size_t m = s.nslots - 1;
  for (std::size_t i = hash & m; s.slots[i].e;) {
    if (s.slots[i].hash == hash && s.slots[i].e->key == key) {
      remove(s, i);  // the run shifted back: slot i holds the next one now
      ++n;
    } else {
      i = (i + 1) & m;
    }
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
