// The cache's Redis storage (`set cache redis HOST:PORT [prefix=]
// [max_object=] [deadline=]`): a CacheStore whose lookups are asynchronous.
//
// One hiredis connection per worker, on the worker's loop (so no lock and no
// thread hop), pipelined: every command of a loop turn goes out in one write
// and replies come back in order, which is how a reply finds its request (a
// ring of pending operations per connection, no allocation per command of
// ours). A lookup that has no answer within the deadline is told -1 (the
// request bypasses the cache); while a connection is down or behind its
// deadline, lookups are refused at once. Lost connections come back in the
// background with backoff; the outage is logged once for the process when
// the first worker loses Redis, and once when every worker has it again.
//
// Keys: prefix + the memory store's key, readable (host, path and query) +
// ' ' + the class of the client's Accept-Encoding (one digit, cache.cpp), so
// a compressed and an identity copy are separate keys
// ("jg:example.com/a?b=1 3": gzip and br accepted). Other Vary'd
// fields are kept in the value and compared on a hit: one variant per key
// (a mismatch is a miss, and the new answer replaces it). Values:
// redis_codec.hpp. TTL: PX of redis_ttl_ms.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cache/store.hpp"

namespace juggler {

struct Settings;
class RedisConn;  // redis_store.cpp: one worker's connection

class RedisStore final : public CacheStore {
 public:
  // Resolves the address once (a host name is not looked up again on the
  // workers' loops); throws std::runtime_error when it cannot.
  explicit RedisStore(const Settings& s);
  ~RedisStore() override;
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  CacheEntry* find(std::uint64_t, std::string_view, VaryMatch, const void*, bool* pending) override {
    *pending = false;
    return nullptr;
  }
  // A SET (PX) of the encoded entry, pipelined; false when this worker has
  // no connection up (the entry is released either way).
  bool insert(CacheEntry* e) override;
  // DEL of every Accept-Encoding class of `key` (the key without its
  // class digit), pipelined; returns 0 (the count comes with purge_async).
  std::size_t purge(std::uint64_t hash, std::string_view key) override;
  std::size_t bytes() const override { return 0; }

  bool asynchronous() const noexcept override { return true; }
  std::uint64_t find_async(std::string_view key, CacheDone done, void* owner) override;
  std::uint64_t purge_async(std::string_view key, CacheDone done, void* owner) override;
  void cancel(std::uint64_t ticket) noexcept override;
  void update(std::string_view key, CacheEntry* e) override;
  void worker_start(uv_loop_t* loop) override;
  void worker_stop(uv_loop_t* loop) noexcept override;

  // Workers whose connection is up, of those started (/metrics).
  int connections_up() const noexcept override { return up_.load(std::memory_order_relaxed); }

  // The process-wide view of the connections, for the log (RedisConn): a
  // connection failed (`was_up`: it had been counted up; `why` null: a
  // worker's end, nothing to log), or came up.
  void note_down(const char* why, bool was_up) noexcept;
  void note_up() noexcept;

  const std::string& ip() const noexcept { return ip_; }
  int port() const noexcept { return port_; }
  std::uint32_t deadline_ms() const noexcept { return deadline_ms_; }

 private:
  // A pipelined SET of `e` under `key` on this worker's connection; false
  // when it was not sent (no connection up, nothing left to keep).
  bool set(std::string_view key, const CacheEntry& e);

  std::string address_;  // as written (the log)
  std::string ip_;
  int port_ = 0;
  std::string prefix_;
  std::uint32_t deadline_ms_ = 50;
  std::atomic<int> started_{0};
  std::atomic<int> up_{0};
  std::atomic<bool> outage_{false};  // logged as down, not yet as back
  std::mutex mu_;                      // conns_, at a worker's start and end only
  std::vector<RedisConn*> conns_;
};

}  // namespace juggler
