// The traffic listeners: one listening socket per worker and listen
// statement (SO_REUSEPORT: the kernel spreads connections across the
// workers' sockets), bound by the main thread, at start-up and by a reload
// that adds a listen statement.
//
// A listener is identified across reloads by what its sockets are: kind,
// address, port (as written, after --port / --https-port) and the PROXY / SNI
// preludes. A reload keeps the sockets of a listener its new table still has
// (so no connection waiting in an accept queue is lost) and re-reads its
// certificates when their files changed; binds the sockets of a new one
// before it commits (a failure refuses the whole reload, naming the address);
// and lets each worker close its socket of a removed one when it swaps.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "juggler/config.hpp"
#include "juggler/tls.hpp"

namespace juggler {

struct Routing;
struct Takeover;

// One listener, process-wide. Made by the main thread and kept to the
// process's end (a worker's ListenerCtx points into it).
struct ListenerSlot {
  ListenerDef def{};          // the statement (def.host points at `host`; def.pool is the first table's)
  std::string host;
  std::uint16_t port = 0;      // as written, after the command line's overrides: its identity
  std::uint16_t bound = 0;     // the port the sockets have (port 0: the kernel's choice)
  std::vector<int> fds;        // one per traffic worker, until that worker opens it
  std::vector<int> held;       // a copy of each, for a binary upgrade (closed when the listener goes)
  // https and tls listeners: the certificates every accept reads (a reload
  // stores a new context when the files changed); null for plain ones.
  std::atomic<TlsContext*> tls{nullptr};
  std::string stamp;           // the certificate files as loaded (names, inode, size, mtime)
  std::string url() const;     // "https://127.0.0.1:8443", for messages
};

class Listeners {
 public:
  Listeners(const Config& config, std::uint32_t workers) : config_(config), workers_(workers) {}
  ~Listeners();
  Listeners(const Listeners&) = delete;
  Listeners& operator=(const Listeners&) = delete;

  // Start-up: binds every listen statement of `table` (certificates first:
  // a bad one stops start-up before any bind), or takes the sockets of the
  // same listener from `from` (a binary upgrade), and lists them in
  // `r.listeners`. Throws std::runtime_error with the operator's message.
  void open(const RouteTable& table, Routing& r, Takeover* from = nullptr);

  // A reload to `next` (whose Routing is `r`, not live yet): binds the new
  // listen statements and loads the certificates that changed, then commits
  // (r.listeners names its slots; the changed certificates are live for new
  // connections). On a failure nothing changed and the reply says why.
  std::string reload(const RouteTable& next, Routing& r);

  // A binary upgrade asks for the live table's sockets: written to the
  // control client `fd` (runtime/upgrade.hpp). An error message, or empty.
  std::string hand_over(int fd) const;

  // The drain began: the copies kept for an upgrade close (the sockets then
  // close with the workers' own, and new connections are refused).
  void release() noexcept;

  // The first https listener's port (`-> redirect https`), 443 without one.
  std::uint16_t https_port() const noexcept { return https_port_; }

 private:
  std::uint16_t port_of(const RouteTable& table, std::size_t k) const noexcept;
  ListenerSlot* find(const ListenerDef& def, std::uint16_t port) const noexcept;
  std::unique_ptr<ListenerSlot> make_slot(const RouteTable& table, std::size_t k, std::uint16_t port,
                                          std::unique_ptr<TlsContext>& ctx, Takeover* from = nullptr);

  const Config& config_;
  std::uint32_t workers_;
  std::uint16_t https_port_ = 443;
  std::vector<std::unique_ptr<ListenerSlot>> slots_;   // every listener ever opened
  std::vector<std::unique_ptr<TlsContext>> contexts_;  // every context ever loaded (a handshake may be in one)
  std::vector<ListenerSlot*> open_;                    // the live table's
};

// One listening socket of `host:port` with SO_REUSEPORT, listening; throws
// std::runtime_error naming `source:line` and the address when it cannot.
int bind_listener(const std::string& host, std::uint16_t port, std::string_view source, std::uint32_t line);
// The port a socket is bound to.
std::uint16_t bound_port(int fd) noexcept;

// A wildcard host ("0.0.0.0", "::") or the address itself: whether a
// connection whose local end is `local` came in through `slot`.
bool listener_accepted(const ListenerSlot& slot, const sockaddr_storage& local) noexcept;

}  // namespace juggler
