// Start-up, worker threads and shutdown.
//
// Sockets are bound in the main thread (so a bind error stops start-up with a
// clear message before any thread runs), one per worker and listener with
// SO_REUSEPORT; each worker then listens on its own and the kernel spreads
// connections across them. SIGTERM/SIGINT drain: workers close their
// listeners, finish what is in flight and exit; a second signal exits at once.
#include "juggler/runtime.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <utility>

#include "juggler/health.hpp"
#include "admin/admin.hpp"
#include "cache/cache.hpp"
#include "cache/collapse.hpp"
#include "exchange/exchange.hpp"
#include "http1/connection.hpp"
#include "http1/upgrade.hpp"
#include "http2/h2.hpp"
#include "listener/l4.hpp"
#include "listener/listener.hpp"
#include "resolve/resolver.hpp"
#include "runtime/descriptors.hpp"
#include "runtime/listeners.hpp"
#include "runtime/reload.hpp"
#include "runtime/upgrade.hpp"
#include "juggler/tls.hpp"
#include "juggler/upstream.hpp"
#include "juggler/worker.hpp"

namespace juggler {

Worker::Worker(Shared& s, std::uint32_t i, int access_log_fd, Routing& routing, const RouteTable& dispatch)
    : shared(s),
      id(i),
      loop(),
      buffers(static_cast<std::uint32_t>(std::max<std::uint64_t>(16384, s.config.settings.header_bytes + 1024)), 4096, 64),
      access_log(access_log_fd, s.config.settings.access_log_format),
      wheel(uv_hrtime() / 1000000),
      metrics(s.first->table->routes.size(), s.first->table->pools.size(), s.first->table->servers.size()) {
  tables.push_back(std::make_unique<WorkerTable>(routing, dispatch, i));
  tab = tables.back().get();
}

Worker::~Worker() = default;

namespace {

constexpr std::uint64_t kTickMs = TimerWheel::kTickMs;
constexpr std::uint32_t kHousekeepingTicks = 5;  // idle sweep and pool trims every 500 ms

// A worker's listening socket: its handle and what the accept callback reads.
struct OpenListener {
  const ListenerSlot* slot = nullptr;  // null: the admin listener
  std::unique_ptr<ListenerCtx> ctx;
  std::unique_ptr<uv_tcp_t> handle;
};

struct WorkerThread {
  std::unique_ptr<Worker> worker;
  int admin_fd = -1;  // the admin worker's socket, until it opens it
  // Open, or closed by a reload (kept to the worker's end: a closed handle's
  // memory goes with its loop).
  std::vector<OpenListener> listeners;
  uv_async_t stop;
  uv_async_t reload;  // a new Routing is in Shared::live
  Reloader* reloader = nullptr;
  uv_timer_t tick;
  std::thread thread;
  std::uint32_t ticks = 0;
  std::uint64_t stop_ms = 0;  // when the drain began
  bool stopping = false;
  bool done = false;
};

// What the admin listener's connections are to the listener code: plain
// HTTP, no PROXY header (it has no listen statement of its own).
constexpr ListenerDef kAdminListenerDef{ListenKind::Http, "", 0, -1, 0, 0, false, 0};

// The access log's descriptor (-1: off, 1: stdout), shared by the workers.
// A pipe or socket on stdout (a pager, the journal) is made non-blocking: a
// reader that stops reading costs dropped lines, never a stalled worker
// (when stderr is the same pipe, a diagnostic line may be dropped as well).
// A file is opened for appending: each worker's write of whole lines lands
// at the end, never over another's.
int open_access_log(const Config& config) {
  if (config.settings.access_log == LogTarget::Off) return -1;
  if (config.settings.access_log == LogTarget::Stdout) {
    struct stat st {};
    if (::fstat(1, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
      ::fcntl(1, F_SETFL, ::fcntl(1, F_GETFL) | O_NONBLOCK);
    return 1;
  }
  const int fd = ::open(config.access_log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("access log " + config.access_log_path + ": " + std::strerror(errno));
  return fd;
}

// SIGUSR1 (logrotate's postrotate): the access log file is opened again by
// its name and put in place of the old descriptor with dup3(), which is
// atomic: a worker's write goes wholly to the old file or wholly to the new
// one, and what the workers hold in their buffers goes to the new one, so no
// line is lost or split. The workers take no part.
void reopen_access_log(const Config& config, int fd) {
  if (config.settings.access_log != LogTarget::File || fd < 0) {
    log(LogLevel::Info, "SIGUSR1: no access log file to reopen");
    return;
  }
  const int fresh = ::open(config.access_log_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fresh < 0) {
    log(LogLevel::Error, "SIGUSR1: cannot reopen the access log %s (%s): writing on to the old file",
        config.access_log_path.c_str(), std::strerror(errno));
    return;
  }
  ::dup3(fresh, fd, O_CLOEXEC);
  ::close(fresh);
  log(LogLevel::Info, "SIGUSR1: access log %s reopened", config.access_log_path.c_str());
}

std::atomic<int> g_workers_left{0};
uv_async_t* g_main_wakeup = nullptr;

void close_listener(OpenListener& l) {
  if (uv_is_closing(reinterpret_cast<uv_handle_t*>(l.handle.get()))) return;
  listener_close(*l.ctx);
  uv_close(reinterpret_cast<uv_handle_t*>(l.handle.get()), nullptr);
}

void close_listeners(WorkerThread* t) {
  for (OpenListener& l : t->listeners) close_listener(l);
}

// Starts accepting on `fd` (a listening socket bound by the main thread) in
// t's loop, which owns it from here.
void open_listener(WorkerThread* t, int fd, const ListenerSlot* slot, const ListenerDef* def) {
  Worker& w = *t->worker;
  OpenListener& l = t->listeners.emplace_back();
  l.slot = slot;
  l.ctx = std::make_unique<ListenerCtx>(ListenerCtx{&w, slot && slot->tls.load() ? &slot->tls : nullptr, def});
  l.handle = std::make_unique<uv_tcp_t>();
  l.ctx->slot = slot;
  uv_tcp_init(&w.loop, l.handle.get());
  l.handle->data = l.ctx.get();
  listener_init(*l.ctx, &w.loop, as_stream(l.handle.get()));
  int rc = uv_tcp_open(l.handle.get(), fd);
  if (rc == 0) rc = uv_listen(as_stream(l.handle.get()), 1024, listener_on_connection);
  if (rc != 0) log(LogLevel::Error, "worker %u: listen: %s", w.id, uv_strerror(rc));
}

// A session that came in through the listener `slot` (its local address).
bool came_through(ClientSession& s, const void* slot) {
  sockaddr_storage local{};
  int len = sizeof local;
  return uv_tcp_getsockname(s.stream.tcp(), reinterpret_cast<sockaddr*>(&local), &len) == 0 &&
         listener_accepted(*static_cast<const ListenerSlot*>(slot), local);
}

// After a swap to `next`: the listeners it lacks stop accepting here (the
// connections they brought finish their request in flight and close, like a
// drain), the ones it adds start (their sockets were bound by the reload).
void swap_listeners(WorkerThread* t, const Routing& next) {
  Worker& w = *t->worker;
  const auto in_next = [&](const ListenerSlot* s) {
    return std::find(next.listeners.begin(), next.listeners.end(), s) != next.listeners.end();
  };
  for (OpenListener& l : t->listeners) {
    if (!l.slot || in_next(l.slot) || uv_is_closing(reinterpret_cast<uv_handle_t*>(l.handle.get()))) continue;
    close_listener(l);
    session_drain(w, came_through, l.slot);
  }
  for (ListenerSlot* s : next.listeners) {
    const bool open = std::any_of(t->listeners.begin(), t->listeners.end(), [&](const OpenListener& l) {
      return l.slot == s && !uv_is_closing(reinterpret_cast<const uv_handle_t*>(l.handle.get()));
    });
    const int fd = std::exchange(s->fds[w.id], -1);
    if (fd < 0 || open) continue;
    if (t->stopping) ::close(fd);
    else open_listener(t, fd, s, &s->def);
  }
}

void finish_worker(WorkerThread* t) {
  if (t->done) return;
  t->done = true;
  Worker& w = *t->worker;
  w.access_log.flush();
  upstream_sweep(w, true);
  session_free_exchanges(w);
  cache_worker_done(w);
  h2_worker_close(w);
  uv_close(reinterpret_cast<uv_handle_t*>(&t->tick), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&t->stop), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&t->reload), nullptr);
}

// ---------------------------------------------------------------- memory returns

// glibc keeps what a worker thread frees in that thread's arena, and gives
// back to the kernel only a free top of the heap: pages freed in the middle
// (buffers between exchanges) stay resident. malloc_trim(0) releases every
// free page of every arena; it takes an arena's lock while it walks it (2-4 ms
// after a burst of 1,000 connections), so it runs only from the housekeeping,
// after a trim freed a lot, and at most once a second per worker.
constexpr std::uint64_t kMallocTrimBytes = 4u << 20;
constexpr std::uint64_t kMallocTrimEveryMs = 1000;

std::size_t exchange_bytes(const Exchange& ex, std::uint32_t header_count) {
  return sizeof(Exchange) + header_count * (2 * sizeof(HeaderSpan) + sizeof(Header)) +
         ex.iov_cap * sizeof(uv_buf_t) + ex.scratch_cap;
}

// Frees the free exchanges beyond what recent load needed.
std::size_t trim_exchanges(Worker& w) {
  const std::size_t free = w.exchanges.size() - w.active_exchanges;
  const std::size_t keep = w.exchange_water.keep(w.active_exchanges);
  if (free <= keep) return 0;
  std::vector<Exchange*> drop;
  drop.reserve(free - keep);
  while (drop.size() < free - keep && w.free_exchanges) {
    drop.push_back(w.free_exchanges);
    w.free_exchanges = w.free_exchanges->next_free;
  }
  std::sort(drop.begin(), drop.end());
  const std::uint32_t hc = std::max<std::uint32_t>(1, w.shared.config.settings.header_count);
  std::size_t bytes = 0;
  std::erase_if(w.exchanges, [&](const std::unique_ptr<Exchange>& ex) {
    if (!std::binary_search(drop.begin(), drop.end(), ex.get())) return false;
    bytes += exchange_bytes(*ex, hc);
    return true;
  });
  return bytes;
}

// Frees the closed sessions kept for reuse beyond what recent load needed.
std::size_t trim_sessions(Worker& w) {
  const std::size_t keep = w.session_water.keep(w.session_count);
  std::size_t bytes = 0;
  while (w.free_session_count > keep && w.free_sessions) {
    ClientSession* s = w.free_sessions;
    w.free_sessions = s->next;
    --w.free_session_count;
    delete s;
    bytes += sizeof(ClientSession);
  }
  return bytes;
}

void trim_pools(Worker& w) {
  const std::size_t freed = w.buffers.trim() + w.bulk.trim() + trim_exchanges(w) + trim_sessions(w);
  w.trimmed_bytes += freed;
#if defined(__GLIBC__)
  const std::uint64_t now = w.now_ms();
  if (w.trimmed_bytes >= kMallocTrimBytes && now - w.malloc_trim_ms >= kMallocTrimEveryMs) {
    const std::uint64_t t0 = uv_hrtime();
    ::malloc_trim(0);
    log(LogLevel::Debug, "worker %u: %llu kB freed by the pools, malloc_trim took %llu us", w.id,
        static_cast<unsigned long long>(w.trimmed_bytes >> 10),
        static_cast<unsigned long long>((uv_hrtime() - t0) / 1000));
    w.trimmed_bytes = 0;
    w.malloc_trim_ms = now;
  }
#endif
}

// Tunnels may go on for hours: a drain lets them run for timeout.drain, less
// a margin, then closes them, so the process ends cleanly before the main
// thread's drain timeout exits it.
std::uint64_t l4_drain_ms(const Worker& w) {
  const std::uint64_t d = settings(w).drain_timeout_ms;
  return d - std::min<std::uint64_t>(d / 2, 500);
}

void on_tick(uv_timer_t* h) {
  auto* t = static_cast<WorkerThread*>(h->data);
  Worker& w = *t->worker;
  w.wheel.advance(w.now_ms());
  // Access log lines wait at most a tick (100 ms); the request path only
  // formats them (or writes when 64 KB are waiting).
  if (w.access_log.pending()) w.access_log.flush();
  if (++t->ticks % kHousekeepingTicks == 0) {
    upstream_sweep(w, false);
    trim_pools(w);
    if (w.tables.size() > 1 && worker_release_tables(w) && t->reloader) t->reloader->released();
  }
  if (t->stopping && l4_count(w) && w.now_ms() - t->stop_ms >= l4_drain_ms(w)) l4_close_all(w);
  if (t->stopping && w.session_count == 0 && l4_count(w) == 0) finish_worker(t);
}

// Runs in the main thread before the worker starts, so a signal can reach the
// worker from its first moment.
void prepare_worker(WorkerThread* t) {
  Worker& w = *t->worker;
  uv_loop_init(&w.loop);
  uv_async_init(&w.loop, &t->stop, [](uv_async_t* a) {
    auto* th = static_cast<WorkerThread*>(a->data);
    if (th->stopping) return;
    th->stopping = true;
    th->worker->draining = true;
    th->stop_ms = th->worker->now_ms();
    close_listeners(th);
    session_drain(*th->worker);
    upstream_sweep(*th->worker, true);
    if (th->worker->session_count == 0 && l4_count(*th->worker) == 0) finish_worker(th);
  });
  t->stop.data = t;
  uv_async_init(&w.loop, &t->reload, [](uv_async_t* a) {
    auto* th = static_cast<WorkerThread*>(a->data);
    Routing* r = th->worker->shared.live.load(std::memory_order_acquire);
    if (!th->done && r && &th->worker->tab->routing != r) {
      worker_swap(*th->worker, *r);
      swap_listeners(th, *r);
    }
    th->reloader->swapped();
  });
  t->reload.data = t;
  uv_timer_init(&w.loop, &t->tick);
  t->tick.data = t;
  cache_worker_init(w);  // a no-op without a cache
  uv_timer_start(&t->tick, on_tick, kTickMs, kTickMs);
}

void worker_main(WorkerThread* t) {
  Worker& w = *t->worker;
  if (t->admin_fd >= 0) open_listener(t, std::exchange(t->admin_fd, -1), nullptr, &kAdminListenerDef);
  else
    for (ListenerSlot* s : w.tab->routing.listeners) open_listener(t, std::exchange(s->fds[w.id], -1), s, &s->def);
  uv_run(&w.loop, UV_RUN_DEFAULT);
  session_worker_done(w);
  w.access_log.flush();
  uv_loop_close(&w.loop);
  g_workers_left.fetch_sub(1);
  if (g_main_wakeup) uv_async_send(g_main_wakeup);  // the last one ends the process, the admin goes last
}

// SIGTERM/SIGINT: /ready turns 503 at once; drain.delay later the traffic
// workers close their listeners and drain; once they are done the admin
// worker (threads[traffic], when there is one) stops too, so /ready answers
// to the end.
struct SignalState {
  std::vector<WorkerThread>* threads;
  Shared* shared;
  Reloader* reloader;
  Listeners* listeners;
  std::uint32_t traffic;  // threads[0, traffic) serve traffic
  int count;
  bool admin_stopped;
  uv_timer_t delay_timer, drain_timer;
  std::uint32_t delay_ms, drain_ms;
};

void start_drain(uv_timer_t* h) {
  auto* st = static_cast<SignalState*>(h->data);
  // The sockets close once the workers close theirs: new connections are refused.
  st->listeners->release();
  for (std::uint32_t i = 0; i < st->traffic; ++i) uv_async_send(&(*st->threads)[i].stop);
  uv_timer_start(&st->drain_timer, [](uv_timer_t*) {
    log(LogLevel::Warn, "drain timeout: exiting with requests still in flight");
    std::_Exit(1);
  }, st->drain_ms, 0);
}

void on_stop_signal(uv_signal_t* h, int signum) {
  auto* st = static_cast<SignalState*>(h->data);
  if (++st->count > 1) {
    log(LogLevel::Warn, "second signal: exiting now");
    std::_Exit(1);
  }
  st->shared->stopping.store(true, std::memory_order_relaxed);
  st->reloader->close();  // no reload while the workers drain
  log(LogLevel::Info, "signal %d: not ready; draining in %u ms (up to %u ms; send it again to exit at once)", signum,
      st->delay_ms, st->drain_ms);
  uv_timer_start(&st->delay_timer, start_drain, st->delay_ms, 0);
}

// A binary upgrade: the new process accepts on our sockets already, so the
// drain starts now (no drain.delay: nothing in front needs to notice).
void on_upgraded(SignalState* st) {
  ++st->count;  // a signal from here on exits at once, as after SIGTERM
  st->shared->stopping.store(true, std::memory_order_relaxed);
  log(LogLevel::Info, "draining (up to %u ms)", st->drain_ms);
  uv_timer_start(&st->delay_timer, start_drain, 0, 0);
}

// A worker ended: the last one ends the main loop; when only the admin
// worker is left, it is told to stop.
void on_worker_done(uv_async_t* a) {
  auto* st = static_cast<SignalState*>(a->data);
  const int left = g_workers_left.load();
  if (left == 0) return uv_stop(a->loop);
  if (st && !st->admin_stopped && st->threads->size() > st->traffic && left == 1) {
    st->admin_stopped = true;
    uv_async_send(&(*st->threads)[st->traffic].stop);
  }
}

}  // namespace

int run(const Config& config) {
  const RouteTable& table = *config.table;
  set_log_instance(config.settings.instance);
  std::signal(SIGPIPE, SIG_IGN);
  raise_descriptor_limit();

  Shared shared;
  shared.config = config;
  shared.first = make_routing(table, nullptr);
  resolve_at_start(*shared.first);  // no start (naming the line) when a `resolve` name does not resolve

  shared.error_pages = ErrorPages::load(config.settings.error_pages);
  shared.cache = make_cache_store(config.settings);
  if (shared.cache) shared.cache_flights = std::make_shared<CacheFlights>();
  if (shared.error_pages.custom_count())
    log(LogLevel::Info, "error pages: %zu from %s", shared.error_pages.custom_count(),
        std::string(config.settings.error_pages).c_str());

  if (config.admin_port >= 0 && !config.settings.admin_token_file.empty())
    shared.admin_token = read_admin_token(std::string(config.settings.admin_token_file));

  const int log_fd = open_access_log(config);

  // Bind everything before starting any thread.
  const std::uint32_t n = config.workers;
  std::vector<WorkerThread> threads(n);
  // The listeners' sockets and certificates: start-up binds the first
  // table's, a reload those it adds (runtime/listeners.hpp).
  // With --upgrade, the sockets of the balancer on the control socket are
  // taken over where the listen statement is the same (runtime/upgrade.hpp).
  Takeover takeover;
  if (config.upgrade) takeover.receive(config.control_path);
  Listeners listeners(config, n);
  listeners.open(table, *shared.first, config.upgrade ? &takeover : nullptr);
  shared.https_port = listeners.https_port();  // `-> redirect https` points here

  // The admin listener: a thread and loop of its own running the same HTTP/1
  // code as the workers, whose one route is the admin responder. Apart from
  // the traffic loops, a flood that keeps every worker busy, or fills their
  // connection limits, leaves it answering; it reads the workers' counters
  // (lock-free atomics) and touches nothing else of theirs.
  const RouteTable admin_routes = admin_table(table);
  std::string admin_announce;
  if (config.admin_port >= 0) {
    threads.emplace_back();
    WorkerThread& a = threads.back();
    a.admin_fd = bind_listener(config.admin_host, static_cast<std::uint16_t>(config.admin_port), "admin listener", 0);
    admin_announce = "admin listening on http://" + join_host_port(config.admin_host, bound_port(a.admin_fd)) +
                     " (/metrics, /stats)";
  }

  uv_loop_t main_loop;
  uv_loop_init(&main_loop);
  uv_async_t wakeup;
  uv_async_init(&main_loop, &wakeup, on_worker_done);
  wakeup.data = nullptr;  // the SignalState, once made
  g_main_wakeup = &wakeup;
  g_workers_left = static_cast<int>(threads.size());
  set_tunnel_hook(http1_upgrade);  // a WebSocket 101 joins the two connections
  // Reloads (reload.hpp) reach the traffic workers through their `reload`
  // handle; the admin worker keeps the first table (its pages are numbered by it).
  Reloader reloader(&main_loop, shared, n, [&threads, &shared, n](Routing& r) {
    shared.live.store(&r, std::memory_order_release);
    for (std::uint32_t i = 0; i < n; ++i) uv_async_send(&threads[i].reload);
  });
  Resolver resolver(shared);  // `resolve` servers looked up again every resolve.interval; stops before `reloader` dies
  // A reload binds the listeners it adds and re-reads the certificates that changed.
  reloader.set_listeners([&listeners](const RouteTable& next, Routing& r) { return listeners.reload(next, r); });
  SignalState sig{&threads, &shared, &reloader, &listeners, n, 0, false, {}, {}, config.settings.drain_delay_ms,
                  config.settings.drain_timeout_ms};
  reloader.set_upgrade([&listeners](int fd) { return listeners.hand_over(fd); }, [&sig] { on_upgraded(&sig); });
  for (std::uint32_t i = 0; i < threads.size(); ++i) {
    const bool admin = i == n;
    threads[i].worker = std::make_unique<Worker>(shared, i, admin ? -1 : log_fd, *shared.first,
                                                 admin ? admin_routes : table);
    threads[i].reloader = &reloader;
    if (!admin) shared.workers.push_back(threads[i].worker.get());
    prepare_worker(&threads[i]);
  }
  for (auto& t : threads) t.thread = std::thread(worker_main, &t);
  // Active health checks: one thread for the whole process, publishing into
  // the live table's ServerHealth. They keep running while the workers
  // drain, so retries still avoid dead servers.
  reloader.start_checks();
  // An upgrade: the old process drains once told we serve, and gives the
  // control socket up first, so this one can take it.
  takeover.finish();
  reloader.listen(config.control_path);

  uv_timer_init(&main_loop, &sig.delay_timer);
  uv_timer_init(&main_loop, &sig.drain_timer);
  sig.delay_timer.data = sig.drain_timer.data = wakeup.data = &sig;
  uv_signal_t sigterm, sigint, sigusr1;
  uv_signal_init(&main_loop, &sigterm);
  uv_signal_init(&main_loop, &sigint);
  sigterm.data = sigint.data = &sig;
  uv_signal_start(&sigterm, on_stop_signal, SIGTERM);
  uv_signal_start(&sigint, on_stop_signal, SIGINT);
  struct ReopenState {
    const Config* config;
    int fd;
  } reopen{&config, log_fd};
  uv_signal_init(&main_loop, &sigusr1);
  sigusr1.data = &reopen;
  uv_signal_start(&sigusr1, [](uv_signal_t* h, int) {
    const auto* r = static_cast<const ReopenState*>(h->data);
    reopen_access_log(*r->config, r->fd);
  }, SIGUSR1);
  // Said only now: tests (and operators' scripts) may connect or signal at once.
  for (const ListenerSlot* l : shared.first->listeners)
    log(LogLevel::Info, "listening on %s (%u worker%s)", l->url().c_str(), n, n == 1 ? "" : "s");
  if (!admin_announce.empty()) log(LogLevel::Info, "%s", admin_announce.c_str());

  // A worker could have finished before the wakeup handle was armed.
  if (g_workers_left.load() > 0) uv_run(&main_loop, UV_RUN_DEFAULT);
  for (auto& t : threads) t.thread.join();
  reloader.stop_checks();
  // The workers' tables go before the Routings they point at.
  for (auto& t : threads) t.worker.reset();
  g_main_wakeup = nullptr;
  reloader.close();
  uv_close(reinterpret_cast<uv_handle_t*>(&wakeup), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigterm), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigint), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sigusr1), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sig.drain_timer), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sig.delay_timer), nullptr);
  uv_run(&main_loop, UV_RUN_DEFAULT);
  uv_loop_close(&main_loop);
  if (log_fd > 2) ::close(log_fd);
  log(LogLevel::Info, "stopped");
  return 0;
}

}  // namespace juggler
