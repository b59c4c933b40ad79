// The traffic listeners' sockets and certificates: see listeners.hpp.
#include "runtime/listeners.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "juggler/log.hpp"
#include "juggler/worker.hpp"
#include "runtime/upgrade.hpp"

namespace juggler {

int bind_listener(const std::string& host, std::uint16_t port, std::string_view source, std::uint32_t line) {
  sockaddr_storage ss{};
  if (!socket_address(host, port, ss)) throw std::runtime_error("bad address '" + host + "'");
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (ss.ss_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  socklen_t len = ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    int e = errno;
    ::close(fd);
    std::string where(source);
    if (line) where.append(":").append(std::to_string(line));
    where += ": cannot listen on " + join_host_port(host, port) + ": " + std::strerror(e);
    if (e == EACCES) where += " (ports below 1024 need root: run with sudo, or pick another port with --port)";
    if (e == EADDRINUSE) where += " (another process holds it; stop it or pick another port with --port)";
    throw std::runtime_error(where);
  }
  // Listening already here: connections queue from the moment we say so.
  if (::listen(fd, 1024) != 0) {
    int e = errno;
    ::close(fd);
    throw std::runtime_error("listen on " + join_host_port(host, port) + ": " + std::strerror(e));
  }
  return fd;
}

std::uint16_t bound_port(int fd) noexcept {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

namespace {

// What a certificate reload compares: the files' names, identity, size and
// modification time (a renewal writes a new file or rewrites one).
std::string files_stamp(const RouteTable& t, const ListenerDef& l) {
  std::string stamp;
  for (std::uint16_t i = 0; i < l.cert_count; ++i) {
    for (std::string_view f : {t.certs[l.first_cert + i].cert_file, t.certs[l.first_cert + i].key_file}) {
      stamp.append(f).append("=");
      struct stat st {};
      if (::stat(std::string(f).c_str(), &st) != 0) {
        stamp += "missing;";
        continue;
      }
      stamp += std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
               std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + ";";
    }
  }
  return stamp;
}

bool has_tls(const ListenerDef& l) noexcept { return l.kind == ListenKind::Https || l.kind == ListenKind::Tls; }

void close_fds(ListenerSlot& s) noexcept {
  for (auto* v : {&s.fds, &s.held})
    for (int& fd : *v)
      if (fd >= 0) ::close(std::exchange(fd, -1));
}

// A listener's identity (listeners.hpp): whether `s` has the sockets of a
// listener of `kind` on `host:port` (as written) with these preludes.
bool same_sockets(const ListenerSlot& s, ListenKind kind, std::string_view host, std::uint16_t port,
                  bool proxy_protocol, bool sni) noexcept {
  return s.def.kind == kind && s.host == host && s.port == port && s.def.proxy_protocol == proxy_protocol &&
         s.def.sni == sni;
}

// The sockets of the same listener in what the old process handed over
// (taken from it), or empty.
std::vector<int> take(Takeover* from, const ListenerSlot& s, std::uint32_t workers) {
  if (!from) return {};
  for (HandedListener& h : from->listeners) {
    if (h.fds.empty() || !same_sockets(s, h.kind, h.host, h.port, h.proxy_protocol, h.sni)) continue;
    // One socket per worker, each accepted from by the worker of its number:
    // fewer workers would leave queues nobody accepts from.
    if (h.fds.size() != workers)
      throw std::runtime_error("--upgrade: the running balancer has " + std::to_string(h.fds.size()) +
                               " workers, this one " + std::to_string(workers) + ": start it with --workers " +
                               std::to_string(h.fds.size()));
    std::vector<int> fds;
    fds.swap(h.fds);
    return fds;
  }
  return {};
}

}  // namespace

std::string ListenerSlot::url() const {
  return std::string(listen_kind_name(def.kind)) + "://" + join_host_port(host, bound);
}

bool listener_accepted(const ListenerSlot& slot, const sockaddr_storage& local) noexcept {
  sockaddr_storage own{};
  if (!socket_address(slot.host, slot.bound, own) || own.ss_family != local.ss_family) return false;
  if (own.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(own);
    const auto& b = reinterpret_cast<const sockaddr_in6&>(local);
    return a.sin6_port == b.sin6_port &&
           (IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr) || std::memcmp(&a.sin6_addr, &b.sin6_addr, sizeof a.sin6_addr) == 0);
  }
  const auto& a = reinterpret_cast<const sockaddr_in&>(own);
  const auto& b = reinterpret_cast<const sockaddr_in&>(local);
  return a.sin_port == b.sin_port && (a.sin_addr.s_addr == INADDR_ANY || a.sin_addr.s_addr == b.sin_addr.s_addr);
}

Listeners::~Listeners() {
  // Sockets no worker took (it was stopping when a reload added them).
  for (auto& s : slots_) close_fds(*s);
}

// --port and --https-port move the first http and https listener (tcp and
// tls listeners keep their compiled port), in every table alike, so the same
// line of the next table is the same listener.
std::uint16_t Listeners::port_of(const RouteTable& table, std::size_t k) const noexcept {
  const ListenerDef& l = table.listeners[k];
  if (l.kind != ListenKind::Http && l.kind != ListenKind::Https) return l.port;
  const int over = l.kind == ListenKind::Http ? config_.port_override : config_.https_port_override;
  if (over < 0) return l.port;
  for (std::size_t i = 0; i < k; ++i)
    if (table.listeners[i].kind == l.kind) return l.port;
  return static_cast<std::uint16_t>(over);
}

ListenerSlot* Listeners::find(const ListenerDef& d, std::uint16_t port) const noexcept {
  for (ListenerSlot* s : open_)
    if (same_sockets(*s, d.kind, d.host, port, d.proxy_protocol, d.sni) &&
        s->def.h2 == d.h2)  // h2= is in the TLS context's ALPN: another listener
      return s;
  return nullptr;
}

// Binds one socket per worker (all or none). `ctx`: its certificates, taken.
std::unique_ptr<ListenerSlot> Listeners::make_slot(const RouteTable& table, std::size_t k, std::uint16_t port,
                                                   std::unique_ptr<TlsContext>& ctx, Takeover* from) {
  const ListenerDef& l = table.listeners[k];
  auto s = std::make_unique<ListenerSlot>();
  s->def = l;
  s->host = std::string(l.host);
  s->def.host = s->host;
  s->port = port;
  s->bound = port;
  try {
    s->fds = take(from, *s, workers_);
    const bool taken = !s->fds.empty();
    if (taken) s->bound = bound_port(s->fds[0]);
    for (std::uint32_t i = 0; !taken && i < workers_; ++i) {
      s->fds.push_back(bind_listener(s->host, s->bound, table.source, l.line));
      if (s->bound == 0) s->bound = bound_port(s->fds.back());  // the others join the port the kernel chose
    }
    for (int fd : s->fds) {
      s->held.push_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
      if (s->held.back() < 0) throw std::runtime_error(std::string("dup: ") + std::strerror(errno));
    }
  } catch (...) {
    close_fds(*s);
    throw;
  }
  if (ctx) {
    s->stamp = files_stamp(table, l);
    s->tls.store(ctx.get(), std::memory_order_release);
    contexts_.push_back(std::move(ctx));
  }
  return s;
}

void Listeners::open(const RouteTable& table, Routing& r, Takeover* from) {
  // TLS contexts first: a bad certificate stops start-up before any bind.
  std::vector<std::unique_ptr<TlsContext>> ctx(table.listeners.size());
  for (std::size_t k = 0; k < table.listeners.size(); ++k)
    if (has_tls(table.listeners[k])) ctx[k] = std::make_unique<TlsContext>(table, table.listeners[k]);
  const ListenerSlot* first_https = nullptr;
  for (std::size_t k = 0; k < table.listeners.size(); ++k) {
    slots_.push_back(make_slot(table, k, port_of(table, k), ctx[k], from));
    ListenerSlot* s = slots_.back().get();
    if (s->def.kind == ListenKind::Https && !first_https) first_https = s;
    open_.push_back(s);
    r.listeners.push_back(s);
  }
  if (first_https) https_port_ = first_https->bound;
}

std::string Listeners::reload(const RouteTable& next, Routing& r) {
  // What can fail first, the commit after: new sockets and changed certificates.
  struct Change {
    std::size_t k;
    ListenerSlot* kept;                 // null: a new listener
    std::unique_ptr<TlsContext> ctx;    // certificates to load (new listener, or changed files)
    std::unique_ptr<ListenerSlot> made;
  };
  std::vector<Change> changes;
  std::vector<ListenerSlot*> slots(next.listeners.size(), nullptr);
  try {
    for (std::size_t k = 0; k < next.listeners.size(); ++k) {
      const ListenerDef& l = next.listeners[k];
      ListenerSlot* kept = find(l, port_of(next, k));
      if (std::find(slots.begin(), slots.end(), kept) != slots.end()) kept = nullptr;  // the same line twice
      slots[k] = kept;
      std::unique_ptr<TlsContext> ctx;
      if (has_tls(l) && (!kept || files_stamp(next, l) != kept->stamp)) ctx = std::make_unique<TlsContext>(next, l);
      if (kept && !ctx) continue;
      changes.push_back({k, kept, std::move(ctx), nullptr});
    }
    for (Change& c : changes)
      if (!c.kept) c.made = make_slot(next, c.k, port_of(next, c.k), c.ctx);
  } catch (const std::exception& e) {
    for (Change& c : changes)
      if (c.made) close_fds(*c.made);
    return e.what();
  }
  // Commit: nothing below fails.
  for (Change& c : changes) {
    const ListenerDef& l = next.listeners[c.k];
    if (c.kept) {
      c.kept->stamp = files_stamp(next, l);
      c.kept->tls.store(c.ctx.get(), std::memory_order_release);
      contexts_.push_back(std::move(c.ctx));
      log(LogLevel::Info, "%s:%u: %s: certificates re-read", std::string(next.source).c_str(), l.line,
          l.kind == ListenKind::Https ? "listen https" : "listen tls");
      continue;
    }
    slots[c.k] = c.made.get();
    log(LogLevel::Info, "%s:%u: listening on %s (%u worker%s)", std::string(next.source).c_str(), l.line,
        c.made->url().c_str(), workers_, workers_ == 1 ? "" : "s");
    slots_.push_back(std::move(c.made));
  }
  for (ListenerSlot* s : open_) {
    if (std::find(slots.begin(), slots.end(), s) != slots.end()) continue;
    log(LogLevel::Info, "%s: no longer listening on %s (its open connections finish)", std::string(next.source).c_str(),
        s->url().c_str());
    // The copies kept for an upgrade; the workers close theirs when they swap.
    for (int fd : s->held) ::close(fd);
    s->held.clear();
  }
  open_ = slots;
  r.listeners = std::move(slots);
  return {};
}

void Listeners::release() noexcept {
  for (auto& s : slots_) {
    for (int fd : s->held)
      if (fd >= 0) ::close(fd);
    s->held.clear();
  }
}

std::string Listeners::hand_over(int fd) const {
  std::vector<std::string> lines;
  std::vector<int> fds;
  for (const ListenerSlot* s : open_) {
    lines.push_back(describe_listener(s->def.kind, s->host, s->port, s->bound, s->def.proxy_protocol, s->def.sni,
                                      s->held.size()));
    fds.insert(fds.end(), s->held.begin(), s->held.end());
  }
  return send_listeners(fd, lines, fds);
}

}  // namespace juggler
