// Diagnostics on stderr, and the access log's buffer and writes (log.hpp).
// The lines themselves are formatted in access_format.cpp.
#include "juggler/log.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace juggler {

namespace {
std::atomic<LogLevel> g_level{LogLevel::Info};
constexpr const char* kNames[] = {"debug", "info", "warn", "error", "off"};
constexpr const char* kJournalPrefix[] = {"<7>", "<6>", "<4>", "<3>", ""};
char g_name[80] = "juggler";  // "juggler[NAME]" with `set instance NAME`

// stderr is the journal's stream: systemd sets JOURNAL_STREAM to its
// "device:inode" (sd_journal_stream_fd); the journal then timestamps lines.
bool stderr_is_journal() noexcept {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (!js || !*js) return false;
  struct stat st {};
  if (::fstat(2, &st) != 0) return false;
  unsigned long long dev = 0, ino = 0;
  return std::sscanf(js, "%llu:%llu", &dev, &ino) == 2 && dev == st.st_dev && ino == st.st_ino;
}

const bool g_journal = stderr_is_journal();

// Writes it all, or gives up at the first error: n left (0 = all written).
std::size_t write_all(int fd, const char* p, std::size_t n) noexcept {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return n;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return 0;
}
}  // namespace

bool parse_log_level(std::string_view s, LogLevel& out) noexcept {
  for (int i = 0; i < 5; ++i)
    if (s == kNames[i]) {
      out = static_cast<LogLevel>(i);
      return true;
    }
  return false;
}

void set_log_level(LogLevel level) noexcept { g_level.store(level, std::memory_order_relaxed); }

void set_log_instance(std::string_view name) noexcept {
  if (name.empty()) return;
  std::snprintf(g_name, sizeof g_name, "juggler[%.*s]", static_cast<int>(std::min<std::size_t>(name.size(), 64)),
                name.data());
}

bool log_enabled(LogLevel level) noexcept { return level >= g_level.load(std::memory_order_relaxed) && level != LogLevel::Off; }

void log(LogLevel level, const char* fmt, ...) noexcept {
  if (!log_enabled(level)) return;
  char line[1024];
  int n = 0;
  const auto lv = static_cast<std::size_t>(level);
  if (g_journal) {
    n = std::snprintf(line, sizeof line, "%s%s: ", kJournalPrefix[lv], g_name);
  } else {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    std::tm tm{};
    gmtime_r(&ts.tv_sec, &tm);
    char date[24];
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    n = std::snprintf(line, sizeof line, "%s.%03ldZ %s %s: ", date, ts.tv_nsec / 1000000, g_name, kNames[lv]);
  }
  va_list ap;
  va_start(ap, fmt);
  // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is right above (analyzer false positive)
  const int m = std::vsnprintf(line + n, sizeof line - static_cast<std::size_t>(n) - 1, fmt, ap);
  va_end(ap);
  std::size_t len = static_cast<std::size_t>(n) + (m < 0 ? 0 : static_cast<std::size_t>(m));
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  write_all(2, line, len);
}

AccessLog::AccessLog(int fd, AccessLogFormat format) : fd_(fd), format_(format) {
  if (fd_ >= 0) buf_ = std::make_unique<char[]>(kFlushAt + kMaxLine);
}

// The dates of the current second, formatted once a second.
void AccessLog::stamp() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  millis_ = static_cast<std::uint32_t>(ts.tv_nsec / 1000000);
  if (ts.tv_sec == second_) return;
  second_ = ts.tv_sec;
  std::tm tm{};
  gmtime_r(&ts.tv_sec, &tm);
  std::strftime(clf_date_, sizeof clf_date_, "%d/%b/%Y:%H:%M:%S +0000", &tm);
  std::strftime(iso_date_, sizeof iso_date_, "%Y-%m-%dT%H:%M:%S", &tm);
}

void AccessLog::record(const AccessRecord& r) noexcept {
  if (fd_ < 0) return;
  stamp();
  // len_ < kFlushAt here (a record that reaches it flushes), so kMaxLine fits.
  char* p = buf_.get() + len_;
  char* end = p + kMaxLine;
  p = format_ == AccessLogFormat::Json ? format_json(p, end, r, iso_date_, millis_) : format_combined(p, end, r, clf_date_);
  len_ = static_cast<std::size_t>(p - buf_.get());
  if (len_ >= kFlushAt) flush();
}

void AccessLog::flush() noexcept {
  if (fd_ < 0 || len_ == 0) return;
  const std::size_t left = write_all(fd_, buf_.get(), len_);
  if (left) {
    const int err = errno;
    const char* from = buf_.get() + len_ - left;
    const auto lines = static_cast<std::uint64_t>(std::count(from, static_cast<const char*>(buf_.get() + len_), '\n'));
    dropped_.add(lines);
    // Said at most every 10 s per worker: the error log may be on the same full disk.
    if (second_ - warned_second_ >= 10) {
      warned_second_ = second_;
      log(LogLevel::Warn, "access log: write failed (%s): %llu lines dropped (%llu so far)", std::strerror(err),
          static_cast<unsigned long long>(lines), static_cast<unsigned long long>(dropped_.get()));
    }
  }
  len_ = 0;
}

}  // namespace juggler
