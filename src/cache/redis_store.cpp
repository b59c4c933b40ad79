#include "cache/redis_store.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <sys/socket.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <stdexcept>

#include "cache/redis_codec.hpp"
#include "juggler/log.hpp"
#include "juggler/route.hpp"

namespace juggler {

namespace {

constexpr std::uint64_t kRing = 4096;           // operations in flight per connection (more: bypass)
constexpr std::uint64_t kStallMs = 1000;        // unanswered this long past its deadline: reconnect
constexpr std::uint64_t kConnectTimeoutMs = 1000;
constexpr std::uint64_t kRetryFirstMs = 100, kRetryMaxMs = 1000;  // reconnect backoff
constexpr char kClasses = 8;  // Accept-Encoding classes: one digit of gzip/br/zstd bits (cache.cpp)

std::uint64_t unix_now_ms() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);  // vDSO: no system call
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1000000;
}

void append_number(std::string& out, std::uint64_t n) {
  char digits[20];
  out.append(digits, std::to_chars(digits, digits + sizeof digits, n).ptr);
}

// One RESP bulk string: $LEN\r\nBYTES\r\n (the caller appends the bytes).
void bulk_head(std::string& out, std::size_t len) {
  out.push_back('$');
  append_number(out, len);
  out.append("\r\n");
}

// hiredis's event hooks on a uv_poll_t, as hiredis/adapters/libuv.h does, but
// an error from the poll (libuv reports a refused connect as UV_EBADF and
// stops the handle) is handed to hiredis as the readiness it waited for, so
// it reads the socket's error itself. Debian's hiredis 0.14 adapter drops it,
// and a connect refused while Redis is down would then never complete.
struct RedisPoll {
  uv_poll_t handle{};
  redisAsyncContext* ac = nullptr;
  int events = 0;
};

void on_poll(uv_poll_t* h, int status, int events) {
  auto* p = static_cast<RedisPoll*>(h->data);
  const int ev = status < 0 ? p->events : events;
  if (p->ac && (ev & UV_READABLE)) redisAsyncHandleRead(p->ac);
  if (p->ac && (ev & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);  // p->ac is null once the context went
}

void poll_update(RedisPoll* p, int events) {
  p->events = events;
  if (events) uv_poll_start(&p->handle, events, on_poll);
  else uv_poll_stop(&p->handle);
}

void ev_add_read(void* d) { poll_update(static_cast<RedisPoll*>(d), static_cast<RedisPoll*>(d)->events | UV_READABLE); }
void ev_del_read(void* d) { poll_update(static_cast<RedisPoll*>(d), static_cast<RedisPoll*>(d)->events & ~UV_READABLE); }
void ev_add_write(void* d) { poll_update(static_cast<RedisPoll*>(d), static_cast<RedisPoll*>(d)->events | UV_WRITABLE); }
void ev_del_write(void* d) { poll_update(static_cast<RedisPoll*>(d), static_cast<RedisPoll*>(d)->events & ~UV_WRITABLE); }
void ev_cleanup(void* d) {
  auto* p = static_cast<RedisPoll*>(d);
  p->ac = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&p->handle), [](uv_handle_t* h) { delete static_cast<RedisPoll*>(h->data); });
}

bool attach(redisAsyncContext* ac, uv_loop_t* loop) {
  auto* p = new RedisPoll();
  if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
    delete p;
    return false;
  }
  p->handle.data = p;
  p->ac = ac;
  ac->ev.data = p;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  return true;
}

}  // namespace

class RedisConn;
namespace {
thread_local RedisConn* t_conn = nullptr;  // this worker's
}

// One worker's connection and the operations it waits for, in the order
// they were sent (Redis answers in that order). Lives on its worker's thread.
class RedisConn {
 public:
  RedisConn(RedisStore& store, uv_loop_t* loop);
  // Made before its worker's loop runs (on the thread that prepares the
  // worker): the first turn of the loop makes it this thread's and connects.
  void start();
  uv_loop_t* loop() const noexcept { return loop_; }
  void connect();
  // The worker ends: nothing more is reported; freed once its handles closed.
  void stop() noexcept;

  enum class Kind : std::uint8_t { Find, Purge, Write, Probe };
  // Sends cmd_ (a command built there); its reply goes to `done(owner)`.
  // Returns the ticket, 0 when it could not be sent.
  std::uint64_t send(CacheDone done, void* owner, Kind kind);
  void cancel(std::uint64_t ticket) noexcept;
  // Ready for a request that waits: up, and not behind its deadline.
  bool ready() const noexcept { return ac_ && up_ && expired_ <= front_ && back_ - front_ < kRing; }
  std::string& cmd() noexcept { return cmd_; }
  std::uint64_t loop_now() const noexcept { return uv_now(loop_); }

 private:
  struct Op {
    CacheDone done = nullptr;  // null: nobody waits (a write, or cancelled)
    void* owner = nullptr;
    std::uint64_t deadline = 0;
    Kind kind = Kind::Write;
  };

  static void on_connect(const redisAsyncContext* ac, int status);
  static void on_disconnect(const redisAsyncContext* ac, int status);
  static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);
  static void on_deadline(uv_timer_t* t);
  static void on_retry(uv_timer_t* t);

  void reply(redisReply* r);
  void expire(std::uint64_t now);
  void went_down(const char* why);
  void drop(const char* why);  // gives the connection up (the timer's or a failed send's)
  void arm_deadline();

  RedisStore& store_;
  uv_loop_t* loop_;
  redisAsyncContext* ac_ = nullptr;
  // Connected and answering (a PING answered after the connect: a Redis
  // that accepts but hangs is not up); counted in the store's up count.
  bool up_ = false;
  bool stopping_ = false;
  int open_handles_ = 2;
  std::uint64_t retry_ms_ = kRetryFirstMs;
  uv_timer_t deadline_{};  // the oldest operation's deadline
  uv_timer_t retry_{};     // reconnect, or the connect's timeout while connecting
  // Ring of operations: [front_, back_) sent, not answered; [front_, expired_)
  // answered -1 already (past their deadline, their reply still to come).
  std::uint64_t front_ = 0, expired_ = 0, back_ = 0;
  Op ring_[kRing];
  std::string cmd_;  // the command being built (its capacity kept: no allocation per command)
};

RedisConn::RedisConn(RedisStore& store, uv_loop_t* loop) : store_(store), loop_(loop) {
  uv_timer_init(loop, &deadline_);
  uv_timer_init(loop, &retry_);
  deadline_.data = retry_.data = this;
}

void RedisConn::start() {
  uv_timer_start(&retry_, [](uv_timer_t* t) {
    auto* c = static_cast<RedisConn*>(t->data);
    t_conn = c;
    c->connect();
  }, 0, 0);
}

void RedisConn::connect() {
  redisAsyncContext* ac = redisAsyncConnect(store_.ip().c_str(), store_.port());
  if (!ac) {
    went_down("out of memory");
    return;
  }
  if (ac->err || !attach(ac, loop_)) {
    const std::string why = ac->err ? ac->errstr : "poll";
    redisAsyncFree(ac);
    went_down(why.c_str());
    return;
  }
  ac->data = this;
  ac_ = ac;
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  uv_timer_start(&retry_, on_retry, kConnectTimeoutMs, 0);  // the connect's timeout
}

void RedisConn::on_connect(const redisAsyncContext* ac, int status) {
  auto* c = static_cast<RedisConn*>(ac->data);
  if (c->ac_ != ac) return;
  uv_timer_stop(&c->retry_);
  if (status != REDIS_OK) {
    c->ac_ = nullptr;  // hiredis frees it after this call
    c->went_down(ac->errstr[0] ? ac->errstr : "connect failed");
    return;
  }
  c->cmd_.assign("*1\r\n$4\r\nPING\r\n");
  // Not sent (cannot happen on a fresh connection): given up from the
  // timer, not inside hiredis's callback.
  if (!c->send(nullptr, nullptr, Kind::Probe)) uv_timer_start(&c->retry_, on_retry, 0, 0);
}

void RedisConn::on_disconnect(const redisAsyncContext* ac, int) {
  auto* c = static_cast<RedisConn*>(ac->data);
  if (c->ac_ != ac) return;  // given up by drop() or stop(): handled there
  c->ac_ = nullptr;
  c->went_down(ac->errstr[0] ? ac->errstr : "connection closed");
}

void RedisConn::went_down(const char* why) {
  if (up_) {
    up_ = false;
    store_.note_down(why, true);
  } else {
    store_.note_down(why, false);
  }
  if (stopping_) return;
  uv_timer_start(&retry_, on_retry, retry_ms_, 0);
  retry_ms_ = std::min(retry_ms_ * 2, kRetryMaxMs);
}

void RedisConn::drop(const char* why) {
  redisAsyncContext* ac = ac_;
  if (!ac) return;
  ac_ = nullptr;
  // Every pending operation is answered here (null replies: -1), before
  // the connection is reported down.
  redisAsyncFree(ac);
  uv_timer_stop(&retry_);
  went_down(why);
}

void RedisConn::on_retry(uv_timer_t* t) {
  auto* c = static_cast<RedisConn*>(t->data);
  if (c->ac_) {
    c->drop("no answer to the connect");  // still connecting, or its PING failed
    return;
  }
  c->connect();
}

std::uint64_t RedisConn::send(CacheDone done, void* owner, Kind kind) {
  if (!ac_ || (!up_ && kind != Kind::Probe) || back_ - front_ >= kRing) return 0;
  if (redisAsyncFormattedCommand(ac_, on_reply, this, cmd_.data(), cmd_.size()) != REDIS_OK) return 0;
  Op& op = ring_[back_ % kRing];
  op = {done, owner, uv_now(loop_) + store_.deadline_ms(), kind};
  if (back_++ == expired_) arm_deadline();
  return back_;  // the ticket: the operation's index + 1
}

void RedisConn::cancel(std::uint64_t ticket) noexcept {
  if (ticket > front_ && ticket <= back_) ring_[(ticket - 1) % kRing].done = nullptr;
}

void RedisConn::arm_deadline() {
  if (expired_ >= back_) return;
  const std::uint64_t due = ring_[expired_ % kRing].deadline, now = uv_now(loop_);
  uv_timer_start(&deadline_, on_deadline, due > now ? due - now : 0, 0);
}

void RedisConn::on_deadline(uv_timer_t* t) {
  auto* c = static_cast<RedisConn*>(t->data);
  c->expire(uv_now(c->loop_));
}

// The operations past their deadline are answered -1 (their replies, when
// they come, are dropped); one unanswered past kStallMs gives the
// connection up (Redis hangs: a new connection, or the outage).
void RedisConn::expire(std::uint64_t now) {
  while (expired_ < back_ && ring_[expired_ % kRing].deadline <= now) {
    Op& op = ring_[expired_++ % kRing];
    if (CacheDone done = op.done) {
      op.done = nullptr;
      done(op.owner, nullptr, -1);
    }
  }
  if (front_ < back_ && ring_[front_ % kRing].deadline + kStallMs <= now) {
    drop("no answer in time");
    return;
  }
  if (expired_ < back_) arm_deadline();
  else if (front_ < back_) uv_timer_start(&deadline_, on_deadline, ring_[front_ % kRing].deadline + kStallMs - now, 0);
}

void RedisConn::on_reply(redisAsyncContext*, void* reply, void* privdata) {
  static_cast<RedisConn*>(privdata)->reply(static_cast<redisReply*>(reply));
}

void RedisConn::reply(redisReply* r) {
  if (front_ == back_) return;
  Op op = ring_[front_ % kRing];
  ring_[front_++ % kRing].done = nullptr;
  if (expired_ < front_) expired_ = front_;
  if (op.kind == Kind::Probe && r && r->type == REDIS_REPLY_STATUS && !up_ && ac_) {
    up_ = true;
    retry_ms_ = kRetryFirstMs;
    store_.note_up();
  }
  if (!op.done) return;
  if (!r || r->type == REDIS_REPLY_ERROR) {
    op.done(op.owner, nullptr, -1);
  } else if (op.kind == Kind::Purge) {
    op.done(op.owner, nullptr, r->type == REDIS_REPLY_INTEGER ? static_cast<int>(r->integer) : -1);
  } else if (r->type == REDIS_REPLY_STRING) {
    // The hit is served from the reply's own buffer: taken from the reply
    // (hiredis frees a null str), freed when the entry is.
    CacheEntry* e = cache_entry_for_blob();
    e->blob = r->str;
    r->str = nullptr;
    if (!redis_decode({e->blob, r->len}, uv_now(loop_), unix_now_ms(), *e)) {
      cache_entry_release(e);
      op.done(op.owner, nullptr, 0);  // not a record of ours: a miss, replaced by the next store
      return;
    }
    op.done(op.owner, e, 1);
  } else {
    op.done(op.owner, nullptr, r->type == REDIS_REPLY_NIL ? 0 : -1);
  }
}

void RedisConn::stop() noexcept {
  stopping_ = true;
  for (Op& op : ring_) op.done = nullptr;
  if (redisAsyncContext* ac = ac_) {
    ac_ = nullptr;
    redisAsyncFree(ac);
  }
  if (up_) {
    up_ = false;
    store_.note_down(nullptr, true);
  }
  auto closed = [](uv_handle_t* h) {
    auto* c = static_cast<RedisConn*>(h->data);
    if (--c->open_handles_ == 0) delete c;
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&deadline_), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&retry_), closed);
}

// ---------------------------------------------------------------- the store

RedisStore::RedisStore(const Settings& s)
    : address_(s.cache_address), prefix_(s.cache_redis_prefix), deadline_ms_(s.cache_redis_deadline_ms) {
  const std::size_t colon = address_.rfind(':');
  std::string host = address_.substr(0, colon);
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  port_ = std::atoi(address_.c_str() + colon + 1);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res); rc != 0)
    throw std::runtime_error("set cache redis " + address_ + ": " + gai_strerror(rc));
  char text[NI_MAXHOST];
  const int rc = ::getnameinfo(res->ai_addr, res->ai_addrlen, text, sizeof text, nullptr, 0, NI_NUMERICHOST);
  ::freeaddrinfo(res);
  if (rc != 0) throw std::runtime_error("set cache redis " + address_ + ": " + gai_strerror(rc));
  ip_ = text;
}

RedisStore::~RedisStore() = default;

void RedisStore::worker_start(uv_loop_t* loop) {
  auto* c = new RedisConn(*this, loop);
  {
    std::lock_guard<std::mutex> lock(mu_);
    conns_.push_back(c);
  }
  started_.fetch_add(1, std::memory_order_relaxed);
  c->start();
}

void RedisStore::worker_stop(uv_loop_t* loop) noexcept {
  RedisConn* c = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = conns_.begin(); it != conns_.end(); ++it) {
      if ((*it)->loop() != loop) continue;
      c = *it;
      conns_.erase(it);
      break;
    }
  }
  if (!c) return;
  if (t_conn == c) t_conn = nullptr;
  c->stop();
  started_.fetch_sub(1, std::memory_order_relaxed);
}

void RedisStore::note_down(const char* why, bool was_up) noexcept {
  if (was_up) up_.fetch_sub(1, std::memory_order_relaxed);
  if (why && !outage_.exchange(true))
    log(LogLevel::Warn, "cache: redis %s unavailable (%s): cached routes bypass the cache until it is back",
        address_.c_str(), why);
}

void RedisStore::note_up() noexcept {
  const int up = up_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (up >= started_.load(std::memory_order_relaxed) && outage_.exchange(false))
    log(LogLevel::Warn, "cache: redis %s is back: cached routes use it again", address_.c_str());
}

std::uint64_t RedisStore::find_async(std::string_view key, CacheDone done, void* owner) {
  RedisConn* c = t_conn;
  if (!c || !c->ready()) return 0;
  std::string& cmd = c->cmd();
  cmd.assign("*2\r\n$3\r\nGET\r\n");
  bulk_head(cmd, prefix_.size() + key.size());
  cmd.append(prefix_).append(key).append("\r\n");
  return c->send(done, owner, RedisConn::Kind::Find);
}

namespace {

// DEL of the key's every Accept-Encoding class.
void build_del(std::string& cmd, const std::string& prefix, std::string_view key) {
  cmd.assign("*9\r\n$3\r\nDEL\r\n");
  for (char d = 0; d < kClasses; ++d) {
    bulk_head(cmd, prefix.size() + key.size() + 1);
    cmd.append(prefix).append(key).append(1, static_cast<char>('0' + d)).append("\r\n");
  }
}

}  // namespace

std::uint64_t RedisStore::purge_async(std::string_view key, CacheDone done, void* owner) {
  RedisConn* c = t_conn;
  if (!c || !c->ready()) return 0;
  build_del(c->cmd(), prefix_, key);
  return c->send(done, owner, RedisConn::Kind::Purge);
}

std::size_t RedisStore::purge(std::uint64_t, std::string_view key) {
  if (RedisConn* c = t_conn) {
    build_del(c->cmd(), prefix_, key);
    c->send(nullptr, nullptr, RedisConn::Kind::Write);
  }
  return 0;
}

void RedisStore::cancel(std::uint64_t ticket) noexcept {
  if (t_conn) t_conn->cancel(ticket);
}

namespace {

// SET KEY VALUE PX TTL into `cmd`; false when there is nothing left to keep.
bool build_set(std::string& cmd, const std::string& prefix, std::string_view key, const CacheEntry& e,
               std::uint64_t loop_now) {
  const std::uint64_t ttl = redis_ttl_ms(e, loop_now);
  if (ttl == 0) return false;
  const std::size_t value = kRedisRecordHeader + e.vary.size() + e.head.size() + e.body.size();
  cmd.assign("*5\r\n$3\r\nSET\r\n");
  bulk_head(cmd, prefix.size() + key.size());
  cmd.append(prefix).append(key).append("\r\n");
  bulk_head(cmd, value);
  cmd.reserve(cmd.size() + value + 64);
  redis_encode(e, loop_now, unix_now_ms(), cmd);
  cmd.append("\r\n$2\r\nPX\r\n");
  char digits[20];
  const std::size_t n = static_cast<std::size_t>(std::to_chars(digits, digits + sizeof digits, ttl).ptr - digits);
  bulk_head(cmd, n);
  cmd.append(digits, n).append("\r\n");
  return true;
}

}  // namespace

bool RedisStore::set(std::string_view key, const CacheEntry& e) {
  RedisConn* c = t_conn;
  if (!c || !c->ready() || !build_set(c->cmd(), prefix_, key, e, c->loop_now())) return false;
  const bool sent = c->send(nullptr, nullptr, RedisConn::Kind::Write) != 0;
  if (c->cmd().capacity() > (64u << 10)) std::string().swap(c->cmd());  // a large value's room goes back
  return sent;
}

bool RedisStore::insert(CacheEntry* e) {
  const bool sent = set(e->key, *e);
  cache_entry_release(e);
  return sent;
}

void RedisStore::update(std::string_view key, CacheEntry* e) { set(key, *e); }

}  // namespace juggler
