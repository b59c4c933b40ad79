// Cached bodies in memfds (src/cache/store: cache_body_to_file, called by
// MemoryStore::insert): which bodies move, that the file is sealed and its
// mapping holds the bytes, that the store counts them, and that a refused
// memfd_create (EMFILE) leaves the body on the heap. The sendfile side is
// tested end to end (tests/e2e/test_cache_sendfile.py).
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <string>

#include "cache/store.hpp"

using namespace juggler;

namespace {

std::string bytes(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}

CacheEntry* entry(const std::string& key, const std::string& body) {
  CacheEntry* e = cache_entry_of(key, {}, "HTTP/1.1 200 OK\r\n", body);
  e->hash = cache_key_hash(key);
  return e;
}

bool any(const CacheEntry&, const void*) { return true; }

CacheEntry* find(MemoryStore& s, const std::string& key) {
  bool pending = true;
  return s.find(cache_key_hash(key), key, any, nullptr, &pending);
}

}  // namespace

TEST_CASE("cache files: a body from the threshold on moves to a sealed memfd", "[cache]") {
  MemoryStore store(16 << 20, 1 << 20);
  const std::size_t open = cache_files_open();
  const std::string large = bytes(kFileBodyMin), small = bytes(kFileBodyMin - 1);
  REQUIRE(store.insert(entry("large", large)));
  REQUIRE(store.insert(entry("small", small)));
  CHECK(cache_files_open() == open + 1);
  CHECK(store.bytes() >= large.size() + small.size());  // the memfd's pages count as the heap's did

  CacheEntry* e = find(store, "large");
  REQUIRE(e);
  CHECK(e->file_fd >= 0);
  CHECK(e->body_buf.empty());  // the heap copy is gone
  CHECK(e->body.data() == e->file_map);
  CHECK(e->body == large);
  CHECK((::fcntl(e->file_fd, F_GET_SEALS) & (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)) ==
        (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW));
  CHECK(::pwrite(e->file_fd, "x", 1, 0) == -1);  // sealed: a send in flight never sees other bytes
  CHECK((::fcntl(e->file_fd, F_GETFD) & FD_CLOEXEC) != 0);

  CacheEntry* s = find(store, "small");
  REQUIRE(s);
  CHECK(s->file_fd == -1);
  CHECK(s->body == small);
  cache_entry_release(s);

  // Purged while a reader holds it: the file stays until that reference goes.
  CHECK(store.purge(cache_key_hash("large"), "large") == 1);
  CHECK(cache_files_open() == open + 1);
  CHECK(e->body == large);
  cache_entry_release(e);
  CHECK(cache_files_open() == open);
}

TEST_CASE("cache files: memfd_create refused (EMFILE) keeps the body on the heap", "[cache]") {
  MemoryStore store(16 << 20, 1 << 20);
  const std::size_t open = cache_files_open();
  const std::string large = bytes(100 * 1024);
  rlimit was{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &was) == 0);
  const int lowest_free = ::dup(0);  // the number the next descriptor would get
  REQUIRE(lowest_free >= 0);
  ::close(lowest_free);
  rlimit tight = was;
  tight.rlim_cur = static_cast<rlim_t>(lowest_free);  // no new descriptor from here on
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &tight) == 0);
  const bool stored = store.insert(entry("refused", large));
  ::setrlimit(RLIMIT_NOFILE, &was);
  REQUIRE(stored);
  CHECK(cache_files_open() == open);
  CacheEntry* e = find(store, "refused");
  REQUIRE(e);
  CHECK(e->file_fd == -1);
  CHECK(e->body == large);
  cache_entry_release(e);
}
