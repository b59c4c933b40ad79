// Active health checks: probes on one loop of their own, verdicts published
// through ServerHealth::down.
//
// Per checked server there is one Probe (its timer lives as long as the
// checker) and, while a check runs, one heap-allocated Check (its TCP handle
// and requests). A Check is detached from its Probe the moment its outcome is
// known (or on stop) and freed in its handle's close callback only, after
// libuv has cancelled whatever was pending on it.
#include "juggler/health.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <new>
#include <stdexcept>

#include "juggler/config.hpp"
#include "juggler/log.hpp"

namespace juggler {

// ------------------------------------------------------------------ pure parts

std::string describe_check(CheckResult r, int status) {
  switch (r) {
    case CheckResult::Ok: return "ok";
    case CheckResult::ConnectRefused: return "connect refused";
    case CheckResult::ConnectError: return "connect failed";
    case CheckResult::Timeout: return "timeout";
    case CheckResult::BadStatus: return "status " + std::to_string(status);
    case CheckResult::Reset: return "reset";
    case CheckResult::Closed: return "closed without response";
    case CheckResult::BadResponse: return "bad response";
  }
  return "unknown";
}

namespace {

std::string_view method_text(Method m) noexcept {
  switch (m) {
    case Method::Get: return "GET";
    case Method::Head: return "HEAD";
    case Method::Post: return "POST";
    case Method::Put: return "PUT";
    case Method::Delete: return "DELETE";
    case Method::Connect: return "CONNECT";
    case Method::Options: return "OPTIONS";
    case Method::Trace: return "TRACE";
    case Method::Patch: return "PATCH";
    case Method::Other: break;
  }
  return "GET";
}

}  // namespace

std::string health_request(const HealthDef& h, std::string_view authority) {
  std::string r;
  r.reserve(96 + h.path.size() + authority.size());
  r.append(method_text(h.method)).append(" ").append(h.path.empty() ? std::string_view("/") : h.path);
  r.append(" HTTP/1.1\r\nHost: ").append(authority);
  r.append("\r\nUser-Agent: juggler-health\r\nConnection: close\r\n");
  // A body is expected with these; say it is empty rather than leave the
  // server waiting for one.
  if (h.method == Method::Post || h.method == Method::Put || h.method == Method::Patch)
    r.append("Content-Length: 0\r\n");
  r.append("\r\n");
  return r;
}

ResponseHeadReader::ResponseHeadReader() noexcept {
  llhttp_settings_init(&settings_);
  settings_.on_headers_complete = &ResponseHeadReader::on_headers_complete;
  llhttp_init(&parser_, HTTP_RESPONSE, &settings_);
  parser_.data = this;
}

int ResponseHeadReader::on_headers_complete(llhttp_t* p) {
  auto* self = static_cast<ResponseHeadReader*>(p->data);
  int s = p->status_code;
  // An interim response (100 Continue, 103 Early Hints) is followed by the
  // real one; 101 would switch protocols, which a probe never asks for.
  if (s >= 100 && s < 200 && s != 101) return 0;
  self->status_ = s;
  return HPE_PAUSED;
}

ResponseHeadReader::State ResponseHeadReader::feed(const char* data, std::size_t len) noexcept {
  if (state_ != State::NeedMore) return state_;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (err == HPE_PAUSED && status_ != 0) {
    bytes_ += static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - data);
    return state_ = State::Done;
  }
  if (err != HPE_OK) return state_ = State::Bad;
  bytes_ += len;
  if (bytes_ > kMaxProbeHead) return state_ = State::Bad;
  return state_;
}

// ------------------------------------------------------------------ the checker

struct HealthChecker::Probe {
  HealthChecker* owner;
  std::uint16_t server;
  const ServerDef* def;
  const PoolDef* pool;
  sockaddr_storage addr{};
  std::string request;
  HealthState state;
  EjectionWatch ejection;
  std::uint64_t first_delay_ms;
  std::uint64_t started_ms = 0;     // of the running (or last) check, on the loop's clock
  std::uint64_t started_mono = 0;   // the same on the workers' clock (uv_hrtime() ms), for `ejection`
  std::uint32_t addr_version = 0;  // a resolve slot: the version of `addr`
  uv_timer_t timer{};            // the next check, or the running check's timeout
  Check* check = nullptr;        // the running check, if any
};

struct HealthChecker::Check {
  uv_tcp_t tcp{};
  uv_connect_t connect{};
  uv_write_t write{};
  Probe* probe = nullptr;  // null once detached: every callback then only unwinds
  ResponseHeadReader reader;
  char buf[2048];
};

HealthChecker::HealthChecker(const RouteTable& table, ServerHealth* health, HealthCallbacks callbacks)
    : table_(table), health_(health), callbacks_(std::move(callbacks)) {
  for (std::size_t i = 0; i < table.servers.size(); ++i) {
    const ServerDef& s = table.servers[i];
    const PoolDef& pool = table.pools[s.pool];
    if (!pool.health.enabled) continue;
    auto p = std::make_unique<Probe>(Probe{this, static_cast<std::uint16_t>(i), &s, &pool, {},
                                           health_request(pool.health, s.authority),
                                           HealthState(pool.health.rise, pool.health.fall,
                                                       !health_[i].down.load(std::memory_order_relaxed)),
                                           EjectionWatch(pool.health.rise), 0});
    if (!s.slot && !socket_address(s.host, s.port, p->addr))
      throw std::runtime_error("health check: bad server address '" + std::string(s.host) + "'");
    probes_.push_back(std::move(p));
  }
  // Spread the first checks over each pool's interval, all pools together, so
  // that a hundred servers are not probed in the same millisecond.
  const std::size_t n = probes_.size();
  for (std::size_t k = 0; k < n; ++k) {
    Probe& p = *probes_[k];
    p.first_delay_ms = static_cast<std::uint64_t>(p.pool->health.interval_ms) * k / n;
  }
}

HealthChecker::~HealthChecker() { stop(); }

void HealthChecker::check_first(std::uint16_t server) noexcept {
  for (auto& p : probes_)
    if (p->server == server) p->first_delay_ms = 0;
}

void HealthChecker::start() {
  if (started_ || probes_.empty()) return;
  stopping_ = false;
  if (int rc = uv_loop_init(&loop_); rc != 0)
    throw std::runtime_error(std::string("health checker: loop: ") + uv_strerror(rc));
  uv_async_init(&loop_, &stop_async_, &HealthChecker::on_stop);
  stop_async_.data = this;
  for (auto& p : probes_) {
    uv_timer_init(&loop_, &p->timer);
    p->timer.data = p.get();
    uv_timer_start(&p->timer, &HealthChecker::on_timer, p->first_delay_ms, 0);
  }
  started_ = true;
  log(LogLevel::Info, "health checks: %zu server%s", probes_.size(), probes_.size() == 1 ? "" : "s");
  thread_ = std::thread([this] { run(); });
}

void HealthChecker::stop() {
  if (!started_) return;
  started_ = false;
  uv_async_send(&stop_async_);
  thread_.join();
}

void HealthChecker::run() noexcept {
  uv_run(&loop_, UV_RUN_DEFAULT);
  if (int rc = uv_loop_close(&loop_); rc != 0)
    log(LogLevel::Error, "health checker: loop not closed: %s", uv_strerror(rc));
}

void HealthChecker::on_stop(uv_async_t* a) { static_cast<HealthChecker*>(a->data)->close_all(); }

void HealthChecker::close_all() noexcept {
  stopping_ = true;
  for (auto& p : probes_) {
    if (Check* c = p->check) {
      c->probe = nullptr;
      p->check = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), &HealthChecker::on_check_closed);
    }
    // The timer's memory is the Probe's, freed after the thread is joined.
    uv_close(reinterpret_cast<uv_handle_t*>(&p->timer), nullptr);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&stop_async_), nullptr);
}

void HealthChecker::on_timer(uv_timer_t* t) {
  Probe& p = *static_cast<Probe*>(t->data);
  if (p.check) p.owner->finish_check(p, CheckResult::Timeout, 0);
  else p.owner->begin_check(p);
}

void HealthChecker::begin_check(Probe& p) noexcept {
  if (stopping_) return;
  if (p.def->slot) {
    // A resolve slot: probe its address now; an empty one waits.
    const std::uint32_t v = callbacks_.slot_address ? callbacks_.slot_address(p.server, p.addr) : 0;
    if (v == 0) {
      uv_timer_start(&p.timer, &HealthChecker::on_timer, p.pool->health.interval_ms, 0);
      return;
    }
    if (v != p.addr_version) p.state = HealthState(p.pool->health.rise, p.pool->health.fall, true);
    p.addr_version = v;
  }
  auto* c = new (std::nothrow) Check;
  if (!c) {  // counts as neither success nor failure: try again next interval
    uv_timer_start(&p.timer, &HealthChecker::on_timer, p.pool->health.interval_ms, 0);
    return;
  }
  c->probe = &p;
  c->tcp.data = c;
  c->connect.data = c;
  c->write.data = c;
  p.check = c;
  p.started_ms = uv_now(&loop_);
  p.started_mono = uv_hrtime() / 1000000;
  int rc = uv_tcp_init(&loop_, &c->tcp);
  if (rc != 0) {  // no handle to close: nothing else refers to c
    p.check = nullptr;
    delete c;
    log(LogLevel::Error, "health checker: socket: %s", uv_strerror(rc));
    uv_timer_start(&p.timer, &HealthChecker::on_timer, p.pool->health.interval_ms, 0);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  rc = uv_tcp_connect(&c->connect, &c->tcp, reinterpret_cast<const sockaddr*>(&p.addr), &HealthChecker::on_connect);
  if (rc != 0) {
    finish_check(p, rc == UV_ECONNREFUSED ? CheckResult::ConnectRefused : CheckResult::ConnectError, 0);
    return;
  }
  uv_timer_start(&p.timer, &HealthChecker::on_timer, p.pool->health.timeout_ms, 0);
}

void HealthChecker::on_connect(uv_connect_t* req, int status) {
  Check* c = static_cast<Check*>(req->data);
  Probe* p = c->probe;
  if (!p) return;
  if (status != 0) {
    if (log_enabled(LogLevel::Debug) && status != UV_ECONNREFUSED)
      log(LogLevel::Debug, "health check of %.*s: connect: %s", static_cast<int>(p->def->authority.size()),
          p->def->authority.data(), uv_strerror(status));
    p->owner->finish_check(*p, status == UV_ECONNREFUSED ? CheckResult::ConnectRefused : CheckResult::ConnectError,
                           0);
    return;
  }
  if (p->pool->health.tcp) {
    p->owner->finish_check(*p, CheckResult::Ok, 0);  // `health tcp`: connected is up
    return;
  }
  auto* stream = reinterpret_cast<uv_stream_t*>(&c->tcp);
  // The bytes are the Probe's, which outlives every Check.
  uv_buf_t b = uv_buf_init(p->request.data(), static_cast<unsigned>(p->request.size()));
  int rc = uv_write(&c->write, stream, &b, 1, &HealthChecker::on_write);
  if (rc == 0) rc = uv_read_start(stream, &HealthChecker::on_alloc, &HealthChecker::on_read);
  if (rc != 0) p->owner->finish_check(*p, CheckResult::Reset, 0);
}

void HealthChecker::on_write(uv_write_t* req, int status) {
  Check* c = static_cast<Check*>(req->data);
  // A server may answer and close before reading everything: only a failed
  // write with no answer yet counts, and the read side usually reports it first.
  if (status == 0 || status == UV_ECANCELED || !c->probe) return;
  c->probe->owner->finish_check(*c->probe, CheckResult::Reset, 0);
}

void HealthChecker::on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  Check* c = static_cast<Check*>(h->data);
  *buf = uv_buf_init(c->buf, sizeof c->buf);
}

void HealthChecker::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  Check* c = static_cast<Check*>(s->data);
  Probe* p = c->probe;
  if (!p || nread == 0) return;
  HealthChecker& self = *p->owner;
  if (nread < 0) {
    if (nread == UV_EOF)
      self.finish_check(*p, c->reader.bytes() == 0 ? CheckResult::Closed : CheckResult::BadResponse, 0);
    else
      self.finish_check(*p, CheckResult::Reset, 0);
    return;
  }
  switch (c->reader.feed(buf->base, static_cast<std::size_t>(nread))) {
    case ResponseHeadReader::State::NeedMore:
      return;
    case ResponseHeadReader::State::Done: {
      int st = c->reader.status();
      self.finish_check(*p, status_expected(p->pool->health, st) ? CheckResult::Ok : CheckResult::BadStatus, st);
      return;
    }
    case ResponseHeadReader::State::Bad:
      self.finish_check(*p, CheckResult::BadResponse, 0);
      return;
  }
}

void HealthChecker::on_check_closed(uv_handle_t* h) { delete static_cast<Check*>(h->data); }

void HealthChecker::finish_check(Probe& p, CheckResult r, int status) noexcept {
  if (Check* c = p.check) {
    c->probe = nullptr;
    p.check = nullptr;
    // The body (if any) is never read: closing may make the kernel send a RST,
    // which is what a Connection: close probe is allowed to do.
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), &HealthChecker::on_check_closed);
  }
  if (callbacks_.on_check) callbacks_.on_check(p.server, r, status);

  const bool ok = r == CheckResult::Ok;
  const std::string_view who = p.def->authority;
  const std::string_view pool = p.pool->name;
  const HealthState::Change change = p.state.record(ok);
  if (!ok && change == HealthState::Change::None && log_enabled(LogLevel::Debug))
    log(LogLevel::Debug, "health check of server %.*s in pool %.*s failed: %s", static_cast<int>(who.size()),
        who.data(), static_cast<int>(pool.size()), pool.data(), describe_check(r, status).c_str());
  // A passive ejection ends after `rise` passes that began after it did: the
  // server answers its checks again, so it need not sit out the whole window.
  ServerHealth& h = health_[p.server];
  const std::uint64_t ejected_at = ejection_start(h, uv_hrtime() / 1000000);
  if (p.ejection.record(ok, p.started_mono, ejected_at) && end_ejection(h, ejected_at)) {
    const unsigned passes = p.pool->health.rise ? p.pool->health.rise : 1;
    log(LogLevel::Info, "server %.*s in pool %.*s back after passing %u check%s while ejected",
        static_cast<int>(who.size()), who.data(), static_cast<int>(pool.size()), pool.data(), passes,
        passes == 1 ? "" : "s");
  }
  if (change != HealthState::Change::None) {
    const bool up = change == HealthState::Change::WentUp;
    // Through balance.hpp's transitions: mark_up() also starts the pool's
    // slow-start ramp, on the workers' clock (CLOCK_MONOTONIC milliseconds).
    if (up) mark_up(h, uv_hrtime() / 1000000);
    else mark_down(h);
    if (up)
      log(LogLevel::Info, "server %.*s in pool %.*s is UP again", static_cast<int>(who.size()), who.data(),
          static_cast<int>(pool.size()), pool.data());
    else
      log(LogLevel::Warn, "server %.*s in pool %.*s is DOWN: %s", static_cast<int>(who.size()), who.data(),
          static_cast<int>(pool.size()), pool.data(), describe_check(r, status).c_str());
    if (callbacks_.on_change) callbacks_.on_change(HealthEvent{p.server, p.def->pool, up, r, status});
  }

  if (stopping_) return;
  // The next check starts one interval after this one started (at once if
  // this one took longer than that).
  const std::uint64_t elapsed = uv_now(&loop_) - p.started_ms;
  const std::uint64_t interval = p.pool->health.interval_ms;
  uv_timer_start(&p.timer, &HealthChecker::on_timer, elapsed < interval ? interval - elapsed : 0, 0);
}

}  // namespace juggler
