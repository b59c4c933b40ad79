// Cache storage: stored responses (CacheEntry) and where they are kept
// (CacheStore). The exchange side (src/cache/cache.cpp) decides what to
// store and serves hits; a store only keeps entries, finds them by key and
// evicts. MemoryStore is the in-process one; RedisStore (redis_store.hpp)
// the second, asynchronous one (see CacheStore).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <uv.h>

namespace juggler {

// A stored response. Immutable once inserted but for its times, which a 304
// refreshes (relaxed atomics: a reader that sees a mix of old and new ones
// is off by the time since the refresh): every worker reads it without a lock. Shared by reference
// count: the store holds one, each hit being written holds one, and the last
// release frees it, on whichever thread.
//
// What it stores is four views (key, vary, head, body); where their bytes
// live depends on how the entry was made:
// - cache_entry_new: in the entry's own allocation, after the struct (one
//   allocation for the entry, its key, its head and a body of known size:
//   what a miss stores). A Vary'd entry's values, and a body whose size was
//   not known (chunked) or that goes to a file, are in `vary_buf` /
//   `body_buf` (cache_entry_set_vary, cache_entry_append_body).
// - a memory entry's body of kFileBodyMin bytes or more lives in a memfd
//   (MemoryStore::insert moves it there): a plain HTTP/1 hit sends it with
//   sendfile(2), the kernel taking page references instead of a copy per
//   hit; every other reader (TLS, HTTP/2, HEAD, a 304's new entry) reads
//   the read-only mapping `body` views. Sealed, so its pages never change
//   under a send in flight; unmapped and closed with the entry's last
//   reference (a hit being sent holds one).
// - an entry read from Redis (cache_entry_for_blob) keeps its bytes where
//   hiredis put them: `blob` is the reply's buffer (malloc'd by hiredis,
//   taken from the reply, freed with the entry), and vary, head and body
//   point into it; its key is empty. Such an entry is one worker's (never
//   shared between threads) and goes back to that thread's pool when
//   released.
struct CacheEntry {
  std::atomic<std::uint32_t> refs{1};
  std::uint64_t hash = 0;
  std::string_view key;   // the primary key: host (lower case), '\0', the request-target (or the Redis key)
  std::string_view vary;  // the request's values of the fields the response varies on: "name\0value\0"...
  std::string_view head;  // status line and stored header lines (no framing, Age or Connection), no final CRLF
  std::string_view body;
  std::string_view etag, last_modified;  // views into `head` (empty: none)
  int status = 0;
  bool revalidate = false;  // no-cache: every use asks the server first
  bool auth_ok = false;     // may answer a request with Authorization
  std::uint64_t lifetime_ms = 0;  // its freshness lifetime (a 304 without one keeps it)
  std::atomic<std::uint64_t> stored_ms{0};  // loop clock (uv_now, the same on every worker) when it arrived
  std::atomic<std::uint64_t> age_ms{0};     // its age then
  std::atomic<std::uint64_t> fresh_until_ms{0};  // loop clock
  std::uint64_t stale_if_error_ms = 0;
  std::uint64_t stale_while_revalidate_ms = 0;
  // The store's: its LRU links and the bytes it counts.
  CacheEntry* lru_prev = nullptr;
  CacheEntry* lru_next = nullptr;
  std::size_t charge = 0;
  // Where the bytes are (above).
  std::size_t block = 0;      // the entry's own allocation: the struct, key, head and body rooms
  std::size_t body_room = 0;  // room for the body in the entry's own allocation (0: body_buf)
  std::string vary_buf, body_buf;
  int file_fd = -1;
  const char* file_map = nullptr;
  char* blob = nullptr;
  CacheEntry* next_free = nullptr;  // the pool of Redis entries

  std::uint64_t age_now_ms(std::uint64_t now_ms) const noexcept {
    const std::uint64_t at = stored_ms.load(std::memory_order_relaxed);
    return age_ms.load(std::memory_order_relaxed) + (now_ms > at ? now_ms - at : 0);
  }
  // Arrived (or was revalidated) at `now_ms` with age `age`, fresh for `lifetime`.
  void set_times(std::uint64_t now_ms, std::uint64_t age, std::uint64_t lifetime) noexcept {
    stored_ms.store(now_ms, std::memory_order_relaxed);
    age_ms.store(age, std::memory_order_relaxed);
    fresh_until_ms.store(now_ms + (lifetime > age ? lifetime - age : 0), std::memory_order_relaxed);
  }
  bool fresh(std::uint64_t now_ms) const noexcept {
    return !revalidate && now_ms < fresh_until_ms.load(std::memory_order_relaxed);
  }
};

// A new memory entry with room, in its own allocation, for a key of
// `key_len` bytes, a head of up to `head_room` and a body of up to
// `body_room` (0: a body of unknown size, or one of kFileBodyMin bytes or
// more, bound for a file: kept in body_buf). The key and
// head are written by the caller at cache_entry_key_room / head_room and
// set as views; the body is appended. Throws std::bad_alloc.
CacheEntry* cache_entry_new(std::size_t key_len, std::size_t head_room, std::size_t body_room);
inline char* cache_entry_key_room(CacheEntry* e) noexcept { return reinterpret_cast<char*>(e + 1); }
// Where the head goes: after the key (its length as cache_entry_new got it).
char* cache_entry_head_room(CacheEntry* e, std::size_t key_len) noexcept;
// A memory entry made of whole pieces (a 304's refreshed entry, tests):
// key, vary, head and body copied in. Throws std::bad_alloc.
CacheEntry* cache_entry_of(std::string_view key, std::string_view vary, std::string_view head, std::string_view body);
// Appends body bytes: into the entry's own room while they fit, else into
// body_buf (the bytes so far move there once). Throws std::bad_alloc.
void cache_entry_append_body(CacheEntry& e, std::string_view in);
// The Vary'd values (kept in vary_buf). Throws std::bad_alloc.
void cache_entry_set_vary(CacheEntry& e, std::string_view vary);

// Bodies this large or larger go to a memfd (CacheEntry::file_fd): where
// sendfile(2) started to beat writev(2) of the bytes on loopback (see
// docs/BENCHMARKS.md, "The cache against Varnish and nginx proxy_cache").
inline constexpr std::size_t kFileBodyMin = 96 * 1024;

// Memfds the cache holds open (one per entry with a file body), and the
// most it may: an eighth of the descriptor limit, so the cache never takes
// the descriptors connections need (beyond it, bodies stay on the heap).
std::size_t cache_files_open() noexcept;
std::size_t cache_files_cap() noexcept;

// Moves `e`'s heap body into a sealed, read-only mapped memfd. False (the
// body stays on the heap, the entry works as before) when the cap is
// reached or the kernel refuses (EMFILE, ENOMEM): never an error.
bool cache_body_to_file(CacheEntry& e) noexcept;

// An entry for bytes read from Redis (blob set by the caller), from this
// thread's pool: no allocation per hit once the pool holds some.
CacheEntry* cache_entry_for_blob();

// Takes a reference (the caller has one already).
inline void cache_entry_ref(CacheEntry* e) noexcept { e->refs.fetch_add(1, std::memory_order_relaxed); }
// Drops a reference; the last one frees the entry.
void cache_entry_release(CacheEntry* e) noexcept;

// Whether a stored variant answers this request (its Vary'd fields match).
using VaryMatch = bool (*)(const CacheEntry& e, const void* request);

// What an asynchronous store reports: `owner`'s lookup (or purge) ended
// with `e` (a lookup's entry, a reference for the owner; else null) and `n`:
// 1 found, 0 not (a purge: how many it removed), -1 the store failed or did
// not answer within its deadline (the request bypasses the cache).
using CacheDone = void (*)(void* owner, CacheEntry* e, int n);

// Where entries are kept. Thread-safe: every worker calls it.
//
// An asynchronous store (Redis) cannot answer find at once: the exchange
// calls find_async, waits (state CacheFetch) and is told through CacheDone,
// on its own thread, within the store's deadline. insert, update and purge
// are then pipelined writes whose outcome nobody waits for (purge_async
// waits for the count, for a PURGE request). The memory store answers find.
class CacheStore {
 public:
  virtual ~CacheStore() = default;
  // The entry stored under `key` (hash: cache_key_hash) that `match` takes,
  // with a reference for the caller (cache_entry_release); null when none.
  virtual CacheEntry* find(std::uint64_t hash, std::string_view key, VaryMatch match, const void* request,
                           bool* pending) = 0;
  // Stores `e` (the caller's reference passes to the store), replacing the
  // entry with the same key and Vary'd values; evicts the least recently
  // used beyond the size. False (and `e` released) when it cannot fit.
  virtual bool insert(CacheEntry* e) = 0;
  // Removes every variant stored under `key`; returns how many.
  virtual std::size_t purge(std::uint64_t hash, std::string_view key) = 0;
  // Bytes held (for tests and /metrics).
  virtual std::size_t bytes() const = 0;

  // Asynchronous stores only (the defaults are the memory store's).
  virtual bool asynchronous() const noexcept { return false; }
  // Sends the lookup of `key` (the whole key: cache.cpp adds what the store
  // keys on beyond the memory key); `done(owner, ...)` is called once, later,
  // on this thread, unless cancel(ticket) came first. Returns the ticket; 0
  // when the store cannot ask now (down, overloaded): bypass, done never comes.
  virtual std::uint64_t find_async(std::string_view /*key*/, CacheDone /*done*/, void* /*owner*/) { return 0; }
  // Removes every variant of `key` (the memory key) and reports how many.
  virtual std::uint64_t purge_async(std::string_view /*key*/, CacheDone /*done*/, void* /*owner*/) { return 0; }
  virtual void cancel(std::uint64_t /*ticket*/) noexcept {}
  // `e`, read from this store under `key`, has new times (a 304 refreshed
  // it): store it again. The memory store's entries are updated in place.
  virtual void update(std::string_view /*key*/, CacheEntry* /*e*/) {}
  // A worker is prepared (before its loop runs, on the thread that starts
  // it) and ends (on its own thread, before its loop closes): a Redis store
  // connects on that loop, and disconnects.
  virtual void worker_start(uv_loop_t* /*loop*/) {}
  virtual void worker_stop(uv_loop_t* /*loop*/) noexcept {}
  // A networked store's workers whose connection is up (/metrics); -1: none.
  virtual int connections_up() const noexcept { return -1; }
};

std::uint64_t cache_key_hash(std::string_view key) noexcept;

// Entries in memory: an LRU bounded by bytes, in shards by key hash, each
// with its own lock (held for a lookup and a list splice, never for I/O),
// so workers never wait on one global lock. Each shard gets an equal part
// of `capacity`; an entry larger than a shard's part is not stored.
class MemoryStore final : public CacheStore {
 public:
  // `max_object` sizes the shards: as many as keep each at least 8 objects
  // large (at most 16).
  MemoryStore(std::size_t capacity, std::size_t max_object);
  ~MemoryStore() override;
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  CacheEntry* find(std::uint64_t hash, std::string_view key, VaryMatch match, const void* request,
                   bool* pending) override;
  bool insert(CacheEntry* e) override;
  std::size_t purge(std::uint64_t hash, std::string_view key) override;
  std::size_t bytes() const override;
  unsigned shards() const noexcept { return mask_ + 1; }

 private:
  // Each shard's entries in a table of (hash, entry) slots, open
  // addressing with linear probing, at most half full (it doubles): a
  // lookup that misses reads the slots of one run and no entry, an entry is
  // read only when its whole hash matches, and an eviction finds its slot
  // from its hash without walking a chain. Removal shifts the run back (no
  // tombstones). Storing an entry allocates nothing beyond the entry.
  struct Slot {
    std::uint64_t hash = 0;
    CacheEntry* e = nullptr;  // null: free
  };
  static bool used(const Slot& x) noexcept { return x.e != nullptr; }
  struct alignas(64) Shard {
    mutable std::mutex mu;
    std::unique_ptr<Slot[]> slots;
    std::size_t nslots = 0;  // a power of two (0 until the first insert)
    std::size_t count = 0;
    CacheEntry* lru_head = nullptr;  // most recently used
    CacheEntry* lru_tail = nullptr;
    std::size_t bytes = 0;
    std::size_t cap = 0;
  };
  Shard& shard(std::uint64_t hash) noexcept { return shards_[(hash >> 48) & mask_]; }
  static void unlink(Shard& s, CacheEntry* e) noexcept;
  static void push_front(Shard& s, CacheEntry* e) noexcept;
  // The slot holding `e` (e is in the shard).
  static std::size_t slot_of(const Shard& s, const CacheEntry* e) noexcept;
  // Takes the entry at slot `at` out (the run after it shifts back) and
  // drops the store's reference.
  static void remove(Shard& s, std::size_t at) noexcept;
  // Doubles the slots (false: out of memory).
  static bool grow(Shard& s) noexcept;

  std::unique_ptr<Shard[]> shards_;
  unsigned mask_ = 0;
};

}  // namespace juggler
