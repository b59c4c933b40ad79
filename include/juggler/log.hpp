// Diagnostics (stderr, leveled, timestamped) and the access log (one line a
// request or tunnel, buffered per worker, written by that worker's loop).
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "juggler/counter.hpp"
#include "juggler/route.hpp"

namespace juggler {

enum class LogLevel : std::uint8_t { Debug, Info, Warn, Error, Off };

// Parses "debug|info|warn|error|off"; false when unknown.
bool parse_log_level(std::string_view s, LogLevel& out) noexcept;
void set_log_level(LogLevel level) noexcept;
bool log_enabled(LogLevel level) noexcept;
// `set instance NAME`: diagnostics say "juggler[NAME]" instead of "juggler"
// from now on. Call before the threads start.
void set_log_instance(std::string_view name) noexcept;
// printf-style; one line to stderr: "2026-12-01T23:35:49.123Z juggler info: ...".
// Under systemd (stderr is the journal: JOURNAL_STREAM names it) the line is
// "<6>juggler: ..." instead: the journal keeps its own time and reads the
// level from the sd-daemon prefix. Thread-safe (one write).
void log(LogLevel level, const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

// One access log line. Strings are views valid for the call only.
struct AccessRecord {
  std::string_view kind = "http";  // http, websocket (the tunnel after a 101), tcp (an L4 connection)
  std::string_view client_ip;      // after the PROXY protocol
  std::string_view request_line;   // "GET /x HTTP/1.1"; empty for tcp
  std::string_view referer;
  std::string_view user_agent;
  std::string_view pool;           // empty: none
  std::string_view upstream;       // "127.0.0.1:6901"; empty: none
  int route = -1;                  // index in the route table (-1: none); logged 1-based as --check numbers them
  int status = 0;                  // 0: none (a tcp tunnel)
  std::uint64_t bytes_in = 0;      // from the client (head and body; a tunnel: its bytes)
  std::uint64_t bytes_out = 0;     // to the client (head and body)
  std::uint64_t duration_us = 0;   // first request byte (a tunnel: accept) to the end
  std::int64_t ttfb_us = -1;       // to the server's first response byte; -1: no server answered
  std::uint32_t retries = 0;       // attempts on another server (or connection) after the first
  char term[2] = {'-', '-'};       // termination state (see Termination in src/exchange/exchange.hpp)
  const char* tls = nullptr;       // "TLSv1.3" etc.; null: plain
  bool h2 = false;                 // an HTTP/2 stream: logged as HTTP/2.0 (request_line is the HTTP/1.1 head's)
};

// Per worker, written by its loop only. Lines are formatted into a buffer of
// its own (no allocation per line) and written with one write(2) per flush:
// from the worker's 100 ms tick, or at once when 64 KB are waiting. A write
// that fails (a full disk, a reader that stopped reading a non-blocking pipe)
// drops what was waiting and counts the lines (dropped(), in /metrics): the
// loop never waits for the log. Reopening (SIGUSR1) happens under the
// descriptor, which the main thread dup2()s: the workers notice nothing.
//
// combined: 127.0.0.1 - - [23/Nov/2026:11:50:00 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/7.88" upstream=127.0.0.1:6901 rt=0.001 term=--
// json:     {"time":"2026-11-23T11:50:00.123Z","kind":"http","client":"127.0.0.1","method":"GET",...} (log_json.cpp)
class AccessLog {
 public:
  // fd: where lines go (-1: off). Not owned.
  AccessLog(int fd, AccessLogFormat format);
  ~AccessLog() { flush(); }
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;
  bool enabled() const noexcept { return fd_ >= 0; }
  void record(const AccessRecord& r) noexcept;
  // Writes what is buffered. The worker calls it from its tick and at exit.
  void flush() noexcept;
  bool pending() const noexcept { return len_ != 0; }
  // Lines lost to failed writes (read by the admin thread).
  const Counter& dropped() const noexcept { return dropped_; }

  static constexpr std::size_t kFlushAt = 64 * 1024;
  static constexpr std::size_t kMaxLine = 8 * 1024;  // longer lines are cut (still one line)

 private:
  void stamp() noexcept;

  int fd_;
  AccessLogFormat format_;
  std::unique_ptr<char[]> buf_;  // kFlushAt + kMaxLine
  std::size_t len_ = 0;
  Counter dropped_;
  std::int64_t second_ = -1;      // the second the cached dates are of
  std::uint32_t millis_ = 0;
  char clf_date_[32] = {};        // 23/Nov/2026:11:50:00 +0000
  char iso_date_[24] = {};        // 2026-11-23T11:50:00
  std::int64_t warned_second_ = -1000;  // the last warning about dropped lines
};

// Formats one line into [p, end) (end - p >= 2); returns the end of what it
// wrote, the newline included. A line too long for the room is cut, still
// ending in a newline. `date`: the format's cached date, `millis` for json.
char* format_combined(char* p, char* end, const AccessRecord& r, std::string_view date) noexcept;
char* format_json(char* p, char* end, const AccessRecord& r, std::string_view date, std::uint32_t millis) noexcept;

}  // namespace juggler
