// Active health checks: one loop on its own thread probes every server of
// every pool that has a `health` statement and publishes the verdict through
// mark_down() / mark_up() (balance.hpp) into the per-server ServerHealth
// atomics, which every worker's Balancer reads. Nothing here is on
// the request path.
//
// The pure parts (the rise/fall state machine, the probe request, reading a
// response head) are separate from the I/O so that they can be tested alone.
#pragma once

#include <llhttp.h>
#include <sys/socket.h>
#include <uv.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "juggler/balance.hpp"
#include "juggler/route.hpp"

namespace juggler {

// Why one check failed (or Ok).
enum class CheckResult : std::uint8_t {
  Ok,
  ConnectRefused,  // ECONNREFUSED
  ConnectError,    // any other connect error (unreachable, ...)
  Timeout,         // no complete response head within timeout_ms
  BadStatus,       // a response, but its status is outside expect_lo..expect_hi
  Reset,           // ECONNRESET / EPIPE while talking to it
  Closed,          // the server closed the connection before any response byte
  BadResponse,     // not HTTP, or a head larger than kMaxProbeHead
};

// "connect refused", "timeout", "status 500", "reset", "bad response"...
// `status` is used by BadStatus only.
std::string describe_check(CheckResult r, int status);

// Whether `status` is in the pool's accepted range (inclusive).
[[nodiscard]] constexpr bool status_expected(const HealthDef& h, int status) noexcept {
  return status >= h.expect_lo && status <= h.expect_hi;
}

// The rise/fall counter of one server. Pure: no clock, no I/O.
// A server starts UP (assumed healthy until proven otherwise, as HAProxy's
// default): it goes DOWN after `fall` consecutive failures, and UP again after
// `rise` consecutive successes. A success while UP (a failure while DOWN)
// clears the opposite streak. rise/fall of 0 count as 1.
class HealthState {
 public:
  enum class Change : std::uint8_t { None, WentDown, WentUp };

  constexpr HealthState(std::uint8_t rise, std::uint8_t fall, bool up = true) noexcept
      : rise_(rise ? rise : 1), fall_(fall ? fall : 1), up_(up) {}

  // Records one check's outcome; says whether the state flipped because of it.
  constexpr Change record(bool success) noexcept {
    if (up_) {
      if (success) {
        streak_ = 0;
        return Change::None;
      }
      if (++streak_ < fall_) return Change::None;
      up_ = false;
      streak_ = 0;
      return Change::WentDown;
    }
    if (!success) {
      streak_ = 0;
      return Change::None;
    }
    if (++streak_ < rise_) return Change::None;
    up_ = true;
    streak_ = 0;
    return Change::WentUp;
  }

  constexpr bool up() const noexcept { return up_; }
  // Consecutive results against the current state: failures while UP,
  // successes while DOWN.
  constexpr std::uint8_t streak() const noexcept { return streak_; }

 private:
  std::uint8_t rise_;
  std::uint8_t fall_;
  std::uint8_t streak_ = 0;
  bool up_;
};

// Ends a passive ejection early (as Envoy's active-check uneject): counts, per
// server, the consecutive passing checks that BEGAN after the server's current
// ejection began. A check that was already running when the server was ejected
// says nothing about it since (it may have been answered just before the
// crash), so it is not counted, passing or not; a failure starts the count
// over, and so does a new ejection. Pure: the caller passes the clocks.
class EjectionWatch {
 public:
  constexpr explicit EjectionWatch(std::uint8_t rise) noexcept : rise_(rise ? rise : 1) {}

  // Records one check's outcome. `started_ms`: when the check began;
  // `ejected_at_ms`: when the server's current ejection began, 0 when it is
  // not ejected (ejection_start() of balance.hpp), both on the same clock.
  // True when this is the `rise`-th such pass: the caller ends the ejection.
  constexpr bool record(bool success, std::uint64_t started_ms, std::uint64_t ejected_at_ms) noexcept {
    if (ejected_at_ms != ejection_) {
      ejection_ = ejected_at_ms;
      passes_ = 0;
    }
    if (ejected_at_ms == 0) return false;
    if (!success) {
      passes_ = 0;
      return false;
    }
    if (started_ms <= ejected_at_ms) return false;  // began before (or as) the ejection did
    if (++passes_ < rise_) return false;
    passes_ = 0;
    return true;
  }

  // Passes counted against the current ejection.
  constexpr std::uint8_t passes() const noexcept { return passes_; }

 private:
  std::uint8_t rise_;
  std::uint8_t passes_ = 0;
  std::uint64_t ejection_ = 0;  // the ejected_at_ms the passes count against
};

// The bytes of one probe:
// "METHOD PATH HTTP/1.1\r\nHost: AUTHORITY\r\nUser-Agent: juggler-health\r\nConnection: close\r\n\r\n"
// (plus "Content-Length: 0" for POST, PUT and PATCH).
std::string health_request(const HealthDef& h, std::string_view authority);

// Reads a response head incrementally (any split of the bytes) with llhttp and
// stops at the end of the head: the body is never read.
class ResponseHeadReader {
 public:
  enum class State : std::uint8_t { NeedMore, Done, Bad };
  static constexpr std::size_t kMaxProbeHead = 64 * 1024;

  ResponseHeadReader() noexcept;
  ResponseHeadReader(const ResponseHeadReader&) = delete;
  ResponseHeadReader& operator=(const ResponseHeadReader&) = delete;

  // Feeds more bytes. Once Done or Bad, further calls return the same.
  State feed(const char* data, std::size_t len) noexcept;
  // Done: the status code of the response (1xx interim responses are skipped).
  int status() const noexcept { return status_; }
  std::size_t bytes() const noexcept { return bytes_; }

 private:
  static int on_headers_complete(llhttp_t* p);
  llhttp_t parser_{};
  llhttp_settings_t settings_{};
  State state_ = State::NeedMore;
  int status_ = 0;
  std::size_t bytes_ = 0;
};

// A server's state changed. Delivered on the checker's thread, after
// mark_down() / mark_up() was called.
struct HealthEvent {
  std::uint16_t server;  // global index into RouteTable::servers
  std::uint16_t pool;
  bool up;               // the new state
  CheckResult reason;    // of the check that flipped it (Ok for WentUp)
  int status;            // the response status, when there was one (else 0)
};

struct HealthCallbacks {
  // Optional. Runs on the checker thread; must not block for long (it delays
  // the other checks) and must not call stop().
  std::function<void(const HealthEvent&)> on_change;
  // Optional. Every check's outcome, on the checker thread (for counters, tests).
  std::function<void(std::uint16_t server, CheckResult result, int status)> on_check;
  // Resolve slots (ServerDef::slot): the address to probe now, written into
  // `addr`, and its version (0: the slot is empty, no check this interval).
  // A new version starts the slot's rise/fall count over (a new server). Needed
  // when the table has resolve slots in checked pools; on the checker thread.
  std::function<std::uint32_t(std::uint16_t server, sockaddr_storage& addr)> slot_address;
};

// Runs the checks of every pool with health.enabled on a thread and loop of
// its own. Not copyable or movable.
class HealthChecker {
 public:
  // `health` has one entry per compiled server (table.servers.size()) and must
  // outlive the checker. Servers start as `health` says (UP, but after a
  // reload that carried a DOWN over); health is only written on a
  // transition, through mark_down() / mark_up() of balance.hpp (so a server
  // never checked is never touched, and slow start begins on a down -> up
  // transition only). Allocates the per-server state but starts nothing.
  HealthChecker(const RouteTable& table, ServerHealth* health, HealthCallbacks callbacks = {});
  // Calls stop().
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Probes `server` at once when started, not at its staggered time (a
  // server a reload added). Before start().
  void check_first(std::uint16_t server) noexcept;

  // Number of servers that will be checked (servers of pools with health.enabled).
  std::size_t checked_servers() const noexcept { return probes_.size(); }

  // Spawns the checker thread and its loop. The first check of each server is
  // staggered over its pool's interval. Does nothing when no server is checked
  // (no thread). Call from the thread that will call stop(). Throws
  // std::runtime_error when the loop cannot be set up.
  void start();

  // Asks the checker's loop to close every handle (timers, in-flight
  // connections), then joins the thread. Blocks for at most the time it takes
  // libuv to run the close callbacks. Idempotent; a no-op if start() did not
  // spawn a thread. Must not be called from the checker thread (callbacks).
  // start() may be called again afterwards; the rise/fall state is kept.
  void stop();

  struct Probe;  // per checked server; public for the .cpp's callbacks only
  struct Check;  // one connection attempt

 private:
  void run() noexcept;
  void close_all() noexcept;
  void begin_check(Probe& p) noexcept;
  void finish_check(Probe& p, CheckResult r, int status) noexcept;
  static void on_stop(uv_async_t* a);
  static void on_timer(uv_timer_t* t);
  static void on_connect(uv_connect_t* req, int status);
  static void on_alloc(uv_handle_t* h, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_check_closed(uv_handle_t* h);
  static void on_probe_timer_closed(uv_handle_t* h);

  const RouteTable& table_;
  ServerHealth* health_;
  HealthCallbacks callbacks_;
  std::vector<std::unique_ptr<Probe>> probes_;
  uv_loop_t loop_{};
  uv_async_t stop_async_{};
  std::thread thread_;
  bool started_ = false;
  bool stopping_ = false;  // checker thread only
};

}  // namespace juggler
