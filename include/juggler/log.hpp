// Diagnostics (stderr, leveled) and the access log (one line a request,
// buffered per worker, written by that worker's loop).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace juggler {

enum class LogLevel : std::uint8_t { Debug, Info, Warn, Error, Off };

// Parses "debug|info|warn|error|off"; false when unknown.
bool parse_log_level(std::string_view s, LogLevel& out) noexcept;
void set_log_level(LogLevel level) noexcept;
bool log_enabled(LogLevel level) noexcept;
// `set instance NAME`: diagnostics say "juggler[NAME]: " from now on. Call
// before the threads start.
void set_log_instance(std::string_view name) noexcept;
// printf-style; one line to stderr prefixed with "juggler: " (or
// "juggler[NAME]: "). Thread-safe (one write).
void log(LogLevel level, const char* fmt, ...) noexcept __attribute__((format(printf, 2, 3)));

struct AccessRecord {
  std::string_view client_ip;
  std::string_view request_line;  // "GET /x HTTP/1.1"
  int status;
  std::uint64_t bytes;            // body + head bytes sent to the client
  std::string_view referer;
  std::string_view user_agent;
  std::string_view upstream;      // "127.0.0.1:6901" or "-"
  std::uint64_t duration_us;
  char term[2] = {'-', '-'};      // termination state (see Termination in src/exchange/exchange.hpp)
};

// Per worker. Lines are combined-log style with two fields appended:
// 127.0.0.1 - - [23/Nov/2026:11:50:00 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/7.88" upstream=127.0.0.1:6901 rt=0.001 term=--
class AccessLog {
 public:
  // fd: where lines go (-1: off). Not owned.
  explicit AccessLog(int fd) : fd_(fd) { if (fd_ >= 0) buf_.reserve(kFlushAt + 4096); }
  ~AccessLog() { flush(); }
  bool enabled() const noexcept { return fd_ >= 0; }
  void record(const AccessRecord& r) noexcept;
  // Writes what is buffered. The worker calls it from a timer and at exit.
  void flush() noexcept;
  bool pending() const noexcept { return !buf_.empty(); }

 private:
  static constexpr std::size_t kFlushAt = 32 * 1024;
  int fd_;
  std::string buf_;
  std::int64_t cached_second_ = -1;
  char date_[32] = {};
  std::size_t date_len_ = 0;
};

}  // namespace juggler
