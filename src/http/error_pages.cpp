// Error pages: built-in ones from the reason phrases of http.hpp, the
// operator's NNN.html files over them. Read once at start-up.
#include "juggler/error_pages.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>

#include "juggler/http.hpp"

namespace juggler {

namespace {

std::string builtin_page(int code, std::string_view reason) {
  std::string t = std::to_string(code) + " " + std::string(reason);
  return "<html><head><title>" + t + "</title></head><body><h1>" + t + "</h1><hr><p>juggler</p></body></html>\n";
}

[[noreturn]] void fail(std::string_view what, const std::string& reason) {
  throw std::runtime_error("set error_pages: cannot read " + std::string(what) + ": " + reason);
}

// The status of a file called NNN.html with NNN in 400..599; 0 otherwise.
int page_status(std::string_view name) noexcept {
  if (name.size() != 8 || name.substr(3) != ".html") return 0;
  int code = 0;
  for (int i = 0; i < 3; ++i) {
    char c = name[static_cast<std::size_t>(i)];
    if (c < '0' || c > '9') return 0;
    code = code * 10 + (c - '0');
  }
  return code >= ErrorPages::kFirst && code <= ErrorPages::kLast ? code : 0;
}

std::string read_page(const std::string& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(file, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(file, std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(file, "not a regular file");
  }
  if (static_cast<std::uint64_t>(st.st_size) > ErrorPages::kMaxPageBytes) {
    ::close(fd);
    throw std::runtime_error("set error_pages: " + file + " is " + std::to_string(st.st_size) +
                             " bytes, more than the " + std::to_string(ErrorPages::kMaxPageBytes) +
                             " an error page may have");
  }
  std::string body(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < body.size()) {
    ssize_t n = ::read(fd, body.data() + got, body.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      fail(file, std::strerror(e));
    }
    if (n == 0) break;  // shrank while we read: serve what is there
    got += static_cast<std::size_t>(n);
  }
  ::close(fd);
  body.resize(got);
  return body;
}

}  // namespace

ErrorPages::ErrorPages() {
  for (int code = kFirst; code <= kLast; ++code) {
    std::string_view reason = status_reason(code);
    if (reason == "Unknown") continue;
    set(code, builtin_page(code, reason), false);
  }
}

void ErrorPages::set(int status, std::string_view body, bool custom) {
  std::string_view reason = status_reason(status);
  // A status without a registered phrase gets an empty one (RFC 9112 allows it).
  if (reason == "Unknown") reason = {};
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason) +
                     "\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\n";
  Page& p = pages_[static_cast<std::size_t>(status - kFirst)];
  p.keep = head + "\r\n";
  p.keep_head = static_cast<std::uint32_t>(p.keep.size());
  p.keep.append(body);
  p.close = head + "Connection: close\r\n\r\n";
  p.close_head = static_cast<std::uint32_t>(p.close.size());
  p.close.append(body);
  if (custom && !p.custom) ++custom_count_;
  p.custom = custom;
}

ErrorPages ErrorPages::load(std::string_view dir) {
  ErrorPages pages;
  if (dir.empty()) return pages;
  namespace fs = std::filesystem;
  const fs::path root{std::string(dir)};
  std::error_code ec;
  fs::directory_iterator it(root, ec);
  if (ec) fail(dir, ec.message());
  for (const fs::directory_iterator end{}; it != end; it.increment(ec)) {
    if (ec) break;
    const std::string name = it->path().filename().string();
    int status = page_status(name);
    if (status == 0) continue;
    pages.set(status, read_page((root / name).string()), true);
  }
  if (ec) fail(dir, ec.message());
  return pages;
}

const ErrorPages::Page& ErrorPages::page(int status) const noexcept {
  if (status >= kFirst && status <= kLast) {
    const Page& p = pages_[static_cast<std::size_t>(status - kFirst)];
    if (!p.keep.empty()) return p;
  }
  return pages_[500 - kFirst];
}

std::string_view ErrorPages::reply(int status, bool close) const noexcept {
  const Page& p = page(status);
  return close ? std::string_view(p.close) : std::string_view(p.keep);
}

std::string_view ErrorPages::head(int status, bool close) const noexcept {
  const Page& p = page(status);
  return close ? std::string_view(p.close).substr(0, p.close_head) : std::string_view(p.keep).substr(0, p.keep_head);
}

bool ErrorPages::custom(int status) const noexcept {
  return status >= kFirst && status <= kLast && pages_[static_cast<std::size_t>(status - kFirst)].custom;
}

}  // namespace juggler
