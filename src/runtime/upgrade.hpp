// Binary upgrade (`make upgrade`, `bin/app.out --upgrade`): a new process
// takes the listening sockets over from the one running from the same
// folder, through its control socket, and the old one drains and exits.
//
// Why the sockets are passed (SCM_RIGHTS, HAProxy's `-x` with `expose-fd
// listeners`) and not inherited through exec (nginx's USR2): the new binary
// is started the way the operator starts any balancer (a terminal, a unit
// file), not as a child of the old process, so it keeps its own output and
// its own parent, and a new binary that fails to start leaves the old one
// untouched. It asks for the very sockets the old workers accept on, not
// new ones bound beside them: a connection waiting in an accept queue
// stays in that queue, which the new process accepts from (a socket of
// its own would leave the old queues to be reset when the old process
// closes them, the SO_REUSEPORT pitfall).
//
// The exchange, one connection to the control socket:
//   new -> old  "takeover\n"
//   old -> new  "listeners N\n", N lines "KIND HOST PORT BOUND PROXY SNI COUNT\n",
//               "end\n"; the sockets (COUNT per listener, in that order)
//               ride along as SCM_RIGHTS
//   new -> old  "upgraded PID\n" once its workers accept
//   old -> new  "draining\n": the old process gave up the control socket and
//               drains (stops accepting, finishes its requests, exits 0)
// A new process that goes away before "upgraded" leaves the old one serving.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "juggler/route.hpp"

namespace juggler {

// One listener of the old process, as received.
struct HandedListener {
  ListenKind kind = ListenKind::Http;
  std::string host;
  std::uint16_t port = 0;   // as written, after the command line (its identity)
  std::uint16_t bound = 0;  // the sockets' port
  bool proxy_protocol = false, sni = false;
  std::vector<int> fds;     // one per old worker; empty once taken
};

// The new side, at start-up before anything is bound.
struct Takeover {
  int conn = -1;  // the control connection, kept until finish()
  long old_pid = 0;
  std::vector<HandedListener> listeners;
  ~Takeover();  // closes what was not taken
  // Connects to `control` and receives the old process's sockets. Throws
  // std::runtime_error with the operator's message.
  void receive(const std::string& control);
  // The workers accept: tells the old process, which drains; returns once
  // it gave the control socket up (or after 10 s).
  void finish();
};

// The old side: writes the sockets `fds` (per listener, described by
// `lines`) to the control client `fd`. Returns an error message, or empty.
std::string send_listeners(int fd, const std::vector<std::string>& lines, const std::vector<int>& fds);
// A listener's line of that message.
std::string describe_listener(ListenKind kind, const std::string& host, std::uint16_t port, std::uint16_t bound,
                              bool proxy_protocol, bool sni, std::size_t count);

}  // namespace juggler
