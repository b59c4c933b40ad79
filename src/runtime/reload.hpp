// Routes reload (`make reload`): a table built as a shared object is loaded
// into the running process and swapped in per worker; the control socket
// that asks for it; and the client side (`bin/app.out --reload FILE.so`).
//
// Main thread: Reloader checks the object (table ABI, settings, listeners),
// builds its Routing, carries the health state over by identity (server
// address + pool name), restarts the health checks on it and announces it to
// the workers. Each worker swaps its table pointer between two callbacks
// (worker_swap): exchanges in flight keep the table they pinned. A replaced
// table is freed by its worker once unpinned, and its Routing (and the shared
// object) by the main thread once no worker holds it.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "juggler/health.hpp"
#include "juggler/worker.hpp"

namespace juggler {

// Worker side, on its loop: `next` becomes the worker's table; its idle
// server connections move over where the server is kept.
void worker_swap(Worker& w, Routing& next);
// Worker side, from housekeeping: frees the replaced tables nothing pins.
// True when it freed one (the main thread may unload a Routing).
bool worker_release_tables(Worker& w);

class Reloader {
 public:
  // `announce` hands a new Routing to every traffic worker (their
  // worker_swap); each calls swapped() from its thread when done, and
  // released() when worker_release_tables freed something.
  Reloader(uv_loop_t* loop, Shared& shared, std::uint32_t workers, std::function<void(Routing&)> announce);
  ~Reloader();
  Reloader(const Reloader&) = delete;
  Reloader& operator=(const Reloader&) = delete;

  // The active health checks of the live table (a thread of their own),
  // starting from its ServerHealth (a server DOWN stays DOWN until `rise`
  // passes); `fresh` servers are probed at once.
  void start_checks(const std::vector<std::uint16_t>& fresh = {});
  void stop_checks();
  // Listens for `reload PATH` on the Unix socket `path` (unless another live
  // balancer holds it: then logged, and this process takes no reloads).
  void listen(const std::string& path);
  void close();  // before the loop ends: the socket goes (and its file)

  // Called by a reload once the new table passed its checks, the last step
  // before the commit: binds the listeners it adds and re-reads the
  // certificates whose files changed (runtime/listeners.hpp); an error
  // (the reply) refuses the reload.
  void set_listeners(std::function<std::string(const RouteTable&, Routing&)> open) { open_listeners_ = std::move(open); }

  // A binary upgrade (runtime/upgrade.hpp): `hand_over` writes the
  // listening sockets to a control client's descriptor (an error message,
  // or empty); `upgraded` runs once the new process serves on them (this
  // one then drains).
  void set_upgrade(std::function<std::string(int)> hand_over, std::function<void()> upgraded) {
    hand_over_ = std::move(hand_over);
    upgraded_ = std::move(upgraded);
  }

  // Any thread.
  void swapped() noexcept;
  void released() noexcept;

  struct Client;

 private:
  friend struct Client;
  std::string reload(const std::string& path, bool& ok);  // starts it; the reply when refused
  void on_command(Client* c, const std::string& line);  // a line from a control client
  void on_event();       // main loop: swaps completed, tables released
  void collect();        // unloads the Routings nobody holds

  uv_loop_t* loop_;
  Shared& shared_;
  std::uint32_t workers_;
  std::function<void(Routing&)> announce_;
  std::function<std::string(const RouteTable&, Routing&)> open_listeners_;
  std::function<std::string(int)> hand_over_;
  std::function<void()> upgraded_;
  Routing* live_;
  MetricRows rows_;  // every table's metric rows (make_routing)
  std::vector<std::unique_ptr<Routing>> loaded_;  // every reloaded Routing still held (the live one too)
  std::unique_ptr<HealthChecker> checker_;
  uv_async_t event_{};
  std::atomic<std::uint32_t> swaps_{0};
  std::atomic<bool> released_{false};
  Client* waiting_ = nullptr;  // the control client of the reload in progress
  std::string pending_reply_;
  std::uint64_t started_ns_ = 0;
  uv_pipe_t pipe_{};
  bool listening_ = false;
  bool closed_ = false;
  std::string path_;
};

}  // namespace juggler
