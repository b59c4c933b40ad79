#include "juggler/log.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdarg>
#include <cstdio>
#include <ctime>

namespace juggler {

namespace {
std::atomic<LogLevel> g_level{LogLevel::Info};
constexpr const char* kNames[] = {"debug", "info", "warn", "error", "off"};
char g_prefix[80] = "juggler: ";

void write_all(int fd, const char* p, std::size_t n) noexcept {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void append_num(std::string& s, std::uint64_t v) {
  char tmp[24];
  auto r = std::to_chars(tmp, tmp + sizeof tmp, v);
  s.append(tmp, r.ptr);
}

void append_quoted(std::string& s, std::string_view v) {
  s.push_back('"');
  if (v.empty()) s.push_back('-');
  for (char c : v) {
    if (c == '"' || c == '\\') s.push_back('\\');
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    s.push_back(c);
  }
  s.push_back('"');
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
  std::snprintf(g_prefix, sizeof g_prefix, "juggler[%.*s]: ", static_cast<int>(std::min<std::size_t>(name.size(), 64)),
                name.data());
}

bool log_enabled(LogLevel level) noexcept { return level >= g_level.load(std::memory_order_relaxed) && level != LogLevel::Off; }

void log(LogLevel level, const char* fmt, ...) noexcept {
  if (!log_enabled(level)) return;
  char line[1024];
  int n = std::snprintf(line, sizeof line, "%s%s", g_prefix,
                        level == LogLevel::Error ? "error: " : level == LogLevel::Warn ? "warning: " : "");
  va_list ap;
  va_start(ap, fmt);
  // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is right above (analyzer false positive)
  int m = std::vsnprintf(line + n, sizeof line - static_cast<std::size_t>(n) - 1, fmt, ap);
  va_end(ap);
  std::size_t len = static_cast<std::size_t>(n) + (m < 0 ? 0 : static_cast<std::size_t>(m));
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  write_all(2, line, len);
}

void AccessLog::record(const AccessRecord& r) noexcept {
  if (fd_ < 0) return;
  std::time_t now = std::time(nullptr);
  if (now != cached_second_) {
    cached_second_ = now;
    std::tm tm;
    gmtime_r(&now, &tm);
    date_len_ = std::strftime(date_, sizeof date_, "%d/%b/%Y:%H:%M:%S +0000", &tm);
  }
  std::string& s = buf_;
  s.append(r.client_ip);
  s.append(" - - [");
  s.append(date_, date_len_);
  s.append("] ");
  append_quoted(s, r.request_line);
  s.push_back(' ');
  append_num(s, static_cast<std::uint64_t>(r.status));
  s.push_back(' ');
  append_num(s, r.bytes);
  s.push_back(' ');
  append_quoted(s, r.referer);
  s.push_back(' ');
  append_quoted(s, r.user_agent);
  s.append(" upstream=");
  s.append(r.upstream.empty() ? std::string_view("-") : r.upstream);
  s.append(" rt=");
  append_num(s, r.duration_us / 1000000);
  s.push_back('.');
  char frac[8];
  std::snprintf(frac, sizeof frac, "%03u", static_cast<unsigned>((r.duration_us / 1000) % 1000));
  s.append(frac);
  s.append(" term=");
  s.append(r.term, 2);
  s.push_back('\n');
  if (s.size() >= kFlushAt) flush();
}

void AccessLog::flush() noexcept {
  if (fd_ < 0 || buf_.empty()) return;
  write_all(fd_, buf_.data(), buf_.size());
  buf_.clear();
}

}  // namespace juggler
