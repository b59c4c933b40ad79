// Routes reload: see reload.hpp. The request path never takes a lock for it:
// a worker swaps its own pointer on its own loop, an exchange pins the table
// it was routed with (a plain counter of that worker), and only the main
// thread loads and unloads shared objects.
#include "runtime/reload.hpp"

#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <cstdio>
#include <stdexcept>

#include "juggler/config.hpp"
#include "juggler/runtime.hpp"
#include "resolve/resolver.hpp"
#include "admin/admin.hpp"
#include "juggler/upstream.hpp"

#ifndef JUGGLER_TABLE_ABI
#error "JUGGLER_TABLE_ABI (the hash of juggler/route.hpp) comes from CMakeLists.txt"
#endif

namespace juggler {

// ---------------------------------------------------------------- worker side

void worker_swap(Worker& w, Routing& next) {
  WorkerTable* old = w.tab;
  w.metrics.grow(next.route_rows, next.pool_rows, next.server_rows);  // before anything counts on it
  w.tables.push_back(std::make_unique<WorkerTable>(next, *next.table, w.id));
  w.tab = w.tables.back().get();
  upstream_move_idle(w, *old, *w.tab);
}

bool worker_release_tables(Worker& w) {
  return std::erase_if(w.tables, [&](const std::unique_ptr<WorkerTable>& t) {
           return t.get() != w.tab && t->pins == 0;
         }) > 0;
}

// ---------------------------------------------------------------- loading

TableObject::~TableObject() {
  if (handle) ::dlclose(handle);
}

std::string load_table(const std::string& path, TableObject& out) {
  out.handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!out.handle) {
    const char* why = ::dlerror();
    return std::string("cannot load: ") + (why ? why : path.c_str());
  }
  const auto* abi = static_cast<const char*>(::dlsym(out.handle, "juggler_table_abi"));
  if (!abi) return path + " is not a route table built by make reload (no juggler_table_abi)";
  if (std::strcmp(abi, JUGGLER_TABLE_ABI) != 0)
    return path + " was built against table ABI " + abi + ", this balancer has " + JUGGLER_TABLE_ABI +
           ": the route table's types changed (juggler/route.hpp); rebuild with make all and restart";
  using Entry = const RouteTable* (*)() noexcept;
  auto entry = reinterpret_cast<Entry>(::dlsym(out.handle, "juggler_reload_table"));
  if (!entry) return path + ": no juggler_reload_table";
  out.table = entry();
  if (!out.table) return path + ": juggler_reload_table gave no table";
  return {};
}

namespace {

// ---------------------------------------------------------------- checks

// The first setting that differs, by its routes.def name; empty when none.
// Settings are read by every worker without a lock, so none changes live.
std::string settings_change(const Settings& a, const Settings& b) {
  struct Field {
    const char* name;
    bool same;
  };
  const Field fields[] = {
      {"workers", a.workers == b.workers},
      {"access_log", a.access_log == b.access_log && a.access_log_path == b.access_log_path},
      {"error_pages", a.error_pages == b.error_pages},
      {"timeout.connect", a.connect_timeout_ms == b.connect_timeout_ms},
      {"timeout.client_header", a.client_header_timeout_ms == b.client_header_timeout_ms},
      {"timeout.client_idle", a.client_idle_timeout_ms == b.client_idle_timeout_ms},
      {"timeout.upstream", a.upstream_timeout_ms == b.upstream_timeout_ms},
      {"timeout.drain", a.drain_timeout_ms == b.drain_timeout_ms},
      {"timeout.tunnel_idle", a.tunnel_idle_timeout_ms == b.tunnel_idle_timeout_ms},
      {"drain.delay", a.drain_delay_ms == b.drain_delay_ms},
      {"instance", a.instance == b.instance},
      {"instance.header", a.instance_header == b.instance_header},
      {"resolve.interval", a.resolve_interval_ms == b.resolve_interval_ms},
      {"limit.header_bytes", a.header_bytes == b.header_bytes},
      {"limit.header_count", a.header_count == b.header_count},
      {"limit.uri_bytes", a.uri_bytes == b.uri_bytes},
      {"limit.body_bytes", a.body_bytes == b.body_bytes},
      {"limit.requests_per_connection", a.requests_per_connection == b.requests_per_connection},
      {"limit.connections_per_worker", a.connections_per_worker == b.connections_per_worker},
      {"cache", a.cache == b.cache && a.cache_bytes == b.cache_bytes && a.cache_address == b.cache_address &&
                    a.cache_redis_prefix == b.cache_redis_prefix &&
                    a.cache_redis_deadline_ms == b.cache_redis_deadline_ms},
      {"admin", a.admin_address == b.admin_address},
      {"admin_token_file", a.admin_token_file == b.admin_token_file},
      {"compress.level.gzip", a.compress_level_gzip == b.compress_level_gzip},
      {"compress.level.br", a.compress_level_br == b.compress_level_br},
      {"compress.level.zstd", a.compress_level_zstd == b.compress_level_zstd},
      {"h2.max_streams", a.h2_max_streams == b.h2_max_streams},
      {"h2.glitches", a.h2_glitches == b.h2_glitches},
      {"h2.hpack_table", a.h2_hpack_table == b.h2_hpack_table},
      {"h2.max_frame", a.h2_max_frame == b.h2_max_frame},
  };
  for (const Field& f : fields)
    if (!f.same) return f.name;
  return {};
}

std::uint64_t mono_ms() noexcept { return uv_hrtime() / 1000000; }

// State by identity (pool name + address): what a kept server was, it stays.
// A new server starts its slow-start ramp (when its pool has one) and is
// probed at once. In-flight counts start at zero on the new table: requests
// still running on the old one count down on the old one's.
// Returns the new servers.
std::vector<std::uint16_t> carry_over(const Routing& from, Routing& to) {
  std::vector<std::uint16_t> fresh;
  const RouteTable& a = *from.table;
  const RouteTable& b = *to.table;
  const std::uint64_t now = mono_ms();
  for (std::size_t j = 0; j < b.servers.size(); ++j) {
    const ServerDef& s = b.servers[j];
    const int i = find_server(a, b.pools[s.pool].name, s.authority, s.slot);
    ServerHealth& h = to.health[j];
    if (i < 0) {
      if (b.pools[s.pool].slow_start_ms) mark_up(h, now);
      fresh.push_back(static_cast<std::uint16_t>(j));
      continue;
    }
    const ServerHealth& o = from.health[static_cast<std::size_t>(i)];
    constexpr auto r = std::memory_order_relaxed;
    h.down.store(o.down.load(r), r);
    h.up_since_ms.store(o.up_since_ms.load(r), r);
    h.latency.store(o.latency.load(r), r);
    h.fails.store(o.fails.load(r), r);
    h.ejections.store(o.ejections.load(r), r);
    h.fail_window_start_ms.store(o.fail_window_start_ms.load(r), r);
    h.ejected_at_ms.store(o.ejected_at_ms.load(r), r);
    h.ejected_until_ms.store(o.ejected_until_ms.load(r), r);
    h.drained.store(o.drained.load(r), r);
    h.weight.store(o.weight.load(r), r);
    h.unresolved.store(o.unresolved.load(r), r);
    // A kept resolve slot: its address and version, so the idle connections
    // that move to the new table stay usable (src/resolve).
    if (s.slot) to.slot_addr[j].copy_from(from.slot_addr[static_cast<std::size_t>(i)]);
    const LastCheck& lo = from.last_check[static_cast<std::size_t>(i)];
    to.last_check[j].at_ms.store(lo.at_ms.load(r), r);
    to.last_check[j].result.store(lo.result.load(r), r);
    to.last_check[j].status.store(lo.status.load(r), r);
  }
  resolve_carry_over(from, to);  // kept resolve lines: their lookups' status (src/resolve)
  return fresh;
}

void reply_and_close(uv_stream_t* s, std::string text);

}  // namespace

// ---------------------------------------------------------------- main side

struct Reloader::Client {
  uv_pipe_t pipe{};
  Reloader* owner = nullptr;
  std::string in;
  bool takeover = false;  // its sockets were handed over: "upgraded PID" comes next
};

namespace {

void on_client_closed(uv_handle_t* h) { delete static_cast<Reloader::Client*>(h->data); }

void reply_and_close(uv_stream_t* s, std::string text) {
  // A short answer to a local socket: it fits the socket buffer at once.
  uv_buf_t b = uv_buf_init(text.data(), static_cast<unsigned>(text.size()));
  uv_try_write(s, &b, 1);
  uv_close(reinterpret_cast<uv_handle_t*>(s), on_client_closed);
}

}  // namespace

Reloader::Reloader(uv_loop_t* loop, Shared& shared, std::uint32_t workers, std::function<void(Routing&)> announce)
    : loop_(loop), shared_(shared), workers_(workers), announce_(std::move(announce)), live_(shared.first.get()), rows_(make_metric_rows(*shared.first->table)) {
  uv_async_init(loop_, &event_, [](uv_async_t* a) { static_cast<Reloader*>(a->data)->on_event(); });
  event_.data = this;
}

Reloader::~Reloader() {
  stop_checks();
  // The workers are gone: every WorkerTable with them.
  loaded_.clear();
}

void Reloader::start_checks(const std::vector<std::uint16_t>& fresh) {
  HealthCallbacks cb;
  Routing* r = live_;
  cb.on_check = [r](std::uint16_t server, CheckResult result, int status) {
    LastCheck& c = r->last_check[server];
    c.result.store(static_cast<std::uint8_t>(result), std::memory_order_relaxed);
    c.status.store(static_cast<std::uint16_t>(status), std::memory_order_relaxed);
    c.at_ms.store(wall_clock_ms(), std::memory_order_relaxed);
  };
  cb.slot_address = [r](std::uint16_t server, sockaddr_storage& addr) -> std::uint32_t {
    return r->health[server].unresolved.load(std::memory_order_acquire) ? 0 : r->slot_addr[server].load(addr);
  };
  checker_ = std::make_unique<HealthChecker>(*r->table, r->health.get(), std::move(cb));
  for (std::uint16_t s : fresh) checker_->check_first(s);
  checker_->start();
}

void Reloader::stop_checks() {
  if (checker_) checker_->stop();
}

std::string Reloader::reload(const std::string& path, bool& ok) {
  ok = false;
  if (waiting_) return "refused: a reload is in progress\n";
  TableObject obj;
  if (std::string err = load_table(path, obj); !err.empty()) return "refused: " + err + "\n";
  // load_table's empty answer means a table; said again for the analyzer,
  // which cannot see through the dlsym'd pointer.
  if (!obj.table) return "refused: " + path + ": no route table in it\n";
  const RouteTable& old = *live_->table;
  const RouteTable& next = *obj.table;
  if (std::string s = settings_change(old.settings, next.settings); !s.empty())
    return "refused: `set " + s + "` differs from the running table's (" + std::string(old.source) +
           "); it cannot change without a restart. The old table keeps serving.\n";
  if (std::string missing = unsupported_features(next); !missing.empty())
    return "refused: not available in this build:\n" + missing;
  std::unique_ptr<Routing> r;
  try {
    r = make_routing(next, &rows_);
  } catch (const std::exception& e) {
    return std::string("refused: ") + e.what() + "\n";
  }
  if (open_listeners_)
    if (std::string err = open_listeners_(next, *r); !err.empty())
      return "refused: " + err + ". The old table keeps serving.\n";
  r->object = obj.handle;
  obj.handle = nullptr;
  started_ns_ = uv_hrtime();
  // The checks stop while the state moves over, so that no verdict falls
  // between the copy and the new checker.
  checker_.reset();
  Routing* from = live_;
  live_ = r.get();
  loaded_.push_back(std::move(r));
  start_checks(carry_over(*from, *live_));
  pending_reply_ = "reloaded " + std::string(old.source) + " " + std::string(old.source_hash) + " -> " +
                   std::string(next.source) + " " + std::string(next.source_hash);
  swaps_.store(0);
  shared_.reloads.fetch_add(1, std::memory_order_relaxed);
  ok = true;
  announce_(*live_);
  return {};
}

void Reloader::swapped() noexcept {
  swaps_.fetch_add(1);
  uv_async_send(&event_);
}

void Reloader::released() noexcept {
  released_.store(true);
  uv_async_send(&event_);
}

void Reloader::on_event() {
  if (waiting_ && swaps_.load() >= workers_) {
    const double ms = static_cast<double>(uv_hrtime() - started_ns_) / 1e6;
    log(LogLevel::Info, "%s (%u worker%s swapped in %.1f ms)", pending_reply_.c_str(), workers_,
        workers_ == 1 ? "" : "s", ms);
    Client* c = waiting_;
    waiting_ = nullptr;
    reply_and_close(reinterpret_cast<uv_stream_t*>(&c->pipe), pending_reply_ + "\n");
  }
  if (released_.exchange(false)) collect();
}

void Reloader::collect() {
  const std::lock_guard<std::mutex> hold(shared_.reload_lock);  // the admin may be reading one
  std::erase_if(loaded_, [&](std::unique_ptr<Routing>& r) {
    if (r.get() == live_ || r->users.load(std::memory_order_acquire) != 0) return false;
    void* object = r->object;
    log(LogLevel::Info, "route table %s %.*s unloaded", std::string(r->table->source).c_str(),
        static_cast<int>(r->table->source_hash.size()), r->table->source_hash.data());
    r.reset();
    if (object) ::dlclose(object);
    return true;
  });
}

// ---------------------------------------------------------------- the control socket

void Reloader::listen(const std::string& path) {
  if (path.empty() || path == "off") return;
  sockaddr_un sa{};
  if (path.size() >= sizeof sa.sun_path) {
    log(LogLevel::Warn, "control socket %s: path too long; reloads are off", path.c_str());
    return;
  }
  // A live balancer there keeps it; a file left by one that died is replaced.
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size());
  const int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const bool held = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  if (probe >= 0) ::close(probe);
  if (held) {
    log(LogLevel::Info, "control socket %s belongs to another running balancer: this one takes no reloads",
        path.c_str());
    return;
  }
  ::unlink(path.c_str());
  uv_pipe_init(loop_, &pipe_, 0);
  pipe_.data = this;
  int rc = uv_pipe_bind(&pipe_, path.c_str());
  if (rc == 0)
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&pipe_), 8, [](uv_stream_t* server, int status) {
      if (status < 0) return;
      auto* self = static_cast<Reloader*>(server->data);
      auto* c = new Client();
      c->owner = self;
      uv_pipe_init(self->loop_, &c->pipe, 0);
      c->pipe.data = c;
      if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->pipe)) != 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), on_client_closed);
        return;
      }
      uv_read_start(
          reinterpret_cast<uv_stream_t*>(&c->pipe),
          [](uv_handle_t* h, std::size_t, uv_buf_t* b) {
            static char room[4096];  // the main loop's only reader
            (void)h;
            *b = uv_buf_init(room, sizeof room);
          },
          [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
            auto* cl = static_cast<Client*>(s->data);
            if (n < 0 || cl->in.size() > 4096) {
              if (cl->takeover)
                log(LogLevel::Warn, "upgrade: the new process went away before it served; this one goes on");
              uv_close(reinterpret_cast<uv_handle_t*>(s), on_client_closed);
              return;
            }
            cl->in.append(b->base, static_cast<std::size_t>(n));
            const std::size_t eol = cl->in.find('\n');
            if (eol == std::string::npos) return;
            const std::string line = cl->in.substr(0, eol);
            cl->in.erase(0, eol + 1);
            cl->owner->on_command(cl, line);
          });
    });
  if (rc != 0) {
    log(LogLevel::Warn, "control socket %s: %s; reloads are off", path.c_str(), uv_strerror(rc));
    uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), nullptr);
    return;
  }
  ::chmod(path.c_str(), 0600);  // whoever started the balancer (sudo: root) reloads it
  listening_ = true;
  path_ = path;
  log(LogLevel::Info, "control socket %s (make reload)", path.c_str());
}

void Reloader::on_command(Client* cl, const std::string& line) {
  auto* s = reinterpret_cast<uv_stream_t*>(&cl->pipe);
  if (line == "takeover" && !cl->takeover) {
    // A binary upgrade: the sockets go to the new process, which answers
    // "upgraded PID" once it accepts on them (this connection stays open).
    uv_os_fd_t fd = -1;
    uv_fileno(reinterpret_cast<uv_handle_t*>(&cl->pipe), &fd);
    const std::string err = hand_over_ ? hand_over_(fd) : "refused: no listeners\n";
    if (!err.empty()) {
      log(LogLevel::Warn, "upgrade: %s", err.c_str());
      return reply_and_close(s, err);
    }
    log(LogLevel::Info, "upgrade: listening sockets handed to a new process");
    cl->takeover = true;
    return;
  }
  if (cl->takeover && line.rfind("upgraded ", 0) == 0) {
    log(LogLevel::Info, "upgrade: process %s serves; this one stops accepting and drains", line.c_str() + 9);
    cl->takeover = false;
    close();  // the control socket is the new process's from now on
    reply_and_close(s, "draining\n");
    if (upgraded_) upgraded_();
    return;
  }
  uv_read_stop(s);
  if (line.rfind("reload ", 0) != 0)
    return reply_and_close(s, "refused: unknown command (expected: reload /path/to/routes.so)\n");
  bool ok = false;
  const std::string refused = reload(line.substr(7), ok);
  if (!ok) {
    log(LogLevel::Warn, "reload %s %s", line.substr(7).c_str(), refused.c_str());
    return reply_and_close(s, refused);
  }
  waiting_ = cl;  // answered when every worker swapped
}

void Reloader::close() {
  if (closed_) return;
  closed_ = true;
  if (waiting_) {
    reply_and_close(reinterpret_cast<uv_stream_t*>(&waiting_->pipe), "refused: the balancer is stopping\n");
    waiting_ = nullptr;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&event_), nullptr);
  if (!listening_) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), nullptr);
  ::unlink(path_.c_str());
  listening_ = false;
}

// ---------------------------------------------------------------- the client

int reload_client(const std::string& control, const std::string& object) {
  char real[4096];
  if (!::realpath(object.c_str(), real)) {
    std::fprintf(stderr, "juggler: %s: %s\n", object.c_str(), std::strerror(errno));
    return 1;
  }
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (control.size() >= sizeof sa.sun_path) {
    std::fprintf(stderr, "juggler: control socket path too long: %s\n", control.c_str());
    return 2;
  }
  std::memcpy(sa.sun_path, control.c_str(), control.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    const int e = errno;
    std::fprintf(stderr, "juggler: no balancer answers on %s (%s)%s\n", control.c_str(), std::strerror(e),
                 e == EACCES ? ": it runs as another user (sudo make reload)" : ": start one from this folder first");
    if (fd >= 0) ::close(fd);
    return 2;
  }
  const std::string line = std::string("reload ") + real + "\n";
  if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    ::close(fd);
    return 2;
  }
  std::string answer;
  char buf[1024];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) answer.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  std::fputs(answer.empty() ? "juggler: the balancer closed the control socket without an answer\n" : answer.c_str(),
             answer.rfind("reloaded", 0) == 0 ? stdout : stderr);
  return answer.rfind("reloaded", 0) == 0 ? 0 : 1;
}

}  // namespace juggler
