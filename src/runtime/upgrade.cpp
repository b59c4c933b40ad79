// Binary upgrade: the listening sockets handed from the old process to the
// new one over the control socket (see upgrade.hpp). Both sides run on their
// main thread; the new one before its loop runs, so it may block.
#include "runtime/upgrade.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "juggler/config.hpp"
#include "juggler/log.hpp"

namespace juggler {

namespace {

// SCM_MAX_FD: the most descriptors one message may carry.
constexpr std::size_t kMaxFds = 253;

bool parse_kind(const std::string& s, ListenKind& k) noexcept {
  for (ListenKind c : {ListenKind::Http, ListenKind::Https, ListenKind::Tcp, ListenKind::Tls})
    if (s == listen_kind_name(c)) {
      k = c;
      return true;
    }
  return false;
}

// Reads a line ending in \n into `line` (without it), keeping descriptors
// that come along in `fds`. False on EOF, an error or a timeout.
bool read_line(int conn, std::string& pending, std::string& line, std::vector<int>* fds) {
  for (;;) {
    if (const std::size_t eol = pending.find('\n'); eol != std::string::npos) {
      line = pending.substr(0, eol);
      pending.erase(0, eol + 1);
      return true;
    }
    if (pending.size() > (1u << 20)) return false;
    char buf[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        if (fds) fds->push_back(fd);
        else ::close(fd);
      }
    }
    pending.append(buf, static_cast<std::size_t>(n));
  }
}

}  // namespace

Takeover::~Takeover() {
  for (HandedListener& l : listeners)
    for (int fd : l.fds)
      if (fd >= 0) ::close(fd);
  if (conn >= 0) ::close(conn);
}

void Takeover::receive(const std::string& control) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (control.empty() || control == "off" || control.size() >= sizeof sa.sun_path)
    throw std::runtime_error("--upgrade: no control socket to take the listeners from (--control PATH)");
  std::memcpy(sa.sun_path, control.c_str(), control.size());
  conn = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (conn < 0 || ::connect(conn, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0)
    throw std::runtime_error("--upgrade: no balancer answers on " + control + " (" + std::strerror(errno) +
                             "): start the new binary where the running one was started");
  timeval tv{10, 0};  // the old process answers from its loop at once
  ::setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ucred peer{};
  socklen_t len = sizeof peer;
  if (::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0) old_pid = peer.pid;
  const std::string ask = "takeover\n";
  if (::write(conn, ask.data(), ask.size()) != static_cast<ssize_t>(ask.size()))
    throw std::runtime_error("--upgrade: cannot write to " + control);
  std::string pending, line;
  std::vector<int> fds;
  if (!read_line(conn, pending, line, &fds) || line.rfind("listeners ", 0) != 0) {
    for (int fd : fds) ::close(fd);
    throw std::runtime_error("--upgrade: the balancer on " + control + " did not hand its listeners over" +
                             (line.empty() ? std::string() : ": " + line));
  }
  std::size_t next = 0;
  bool ok = true;
  while ((ok = read_line(conn, pending, line, &fds)) && line != "end") {
    std::istringstream in(line);
    HandedListener l;
    std::string kind;
    unsigned port = 0, bound = 0, proxy = 0, sni = 0;
    std::size_t count = 0;
    if (!(in >> kind >> l.host >> port >> bound >> proxy >> sni >> count) || !parse_kind(kind, l.kind)) {
      ok = false;
      break;
    }
    l.port = static_cast<std::uint16_t>(port);
    l.bound = static_cast<std::uint16_t>(bound);
    l.proxy_protocol = proxy != 0;
    l.sni = sni != 0;
    l.fds.assign(count, -1);
    for (std::size_t i = 0; i < count; ++i) l.fds[i] = next + i < fds.size() ? fds[next + i] : -1;
    next += count;
    listeners.push_back(std::move(l));
  }
  for (std::size_t i = next; i < fds.size(); ++i) ::close(fds[i]);
  if (!ok || next > fds.size())
    throw std::runtime_error("--upgrade: the listeners of the balancer on " + control + " did not all arrive");
}

void Takeover::finish() {
  // Sockets of listeners this table lacks: the old process drains them, and
  // they close with its copies.
  for (HandedListener& l : listeners)
    for (int& fd : l.fds)
      if (fd >= 0) ::close(std::exchange(fd, -1));
  if (conn < 0) return;
  const std::string done = "upgraded " + std::to_string(::getpid()) + "\n";
  std::string pending, line;
  if (::write(conn, done.data(), done.size()) != static_cast<ssize_t>(done.size()) ||
      !read_line(conn, pending, line, nullptr) || line != "draining")
    log(LogLevel::Warn, "upgrade: the old balancer (pid %ld) did not confirm it drains: stop it by hand", old_pid);
  else
    log(LogLevel::Info, "upgrade: the old balancer (pid %ld) stopped accepting and drains", old_pid);
  ::close(conn);
  conn = -1;
}

std::string send_listeners(int fd, const std::vector<std::string>& lines, const std::vector<int>& fds) {
  if (fds.size() > kMaxFds)
    return "refused: " + std::to_string(fds.size()) + " listening sockets, more than one message carries (" +
           std::to_string(kMaxFds) + ")\n";
  std::string text = "listeners " + std::to_string(lines.size()) + "\n";
  for (const std::string& l : lines) text += l + "\n";
  text += "end\n";
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)]{};
  iovec iov{text.data(), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  // A local socket with an empty buffer takes a few kilobytes at once; the
  // descriptors go with the first byte.
  ssize_t n;
  while ((n = ::sendmsg(fd, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(text.size())) return std::string("cannot send the listeners: ") + std::strerror(errno);
  return {};
}

std::string describe_listener(ListenKind kind, const std::string& host, std::uint16_t port, std::uint16_t bound,
                              bool proxy_protocol, bool sni, std::size_t count) {
  return std::string(listen_kind_name(kind)) + " " + host + " " + std::to_string(port) + " " + std::to_string(bound) + " " +
         (proxy_protocol ? "1" : "0") + " " + (sni ? "1" : "0") + " " + std::to_string(count);
}

}  // namespace juggler
