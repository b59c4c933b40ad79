// The test backend: a single-threaded libuv HTTP/1.1 server with endpoints that let the
// end-to-end tests observe what the balancer forwards (see tools/testserver/README.md).
#pragma once

#include <string>

namespace juggler::testserver {

struct Options {
  std::string host = "127.0.0.1";
  int port = -1;     // 0 picks a free port; the listening line names the real one
  std::string root;  // static files; empty serves no files (404)
  bool quiet = false;
  bool reset_all = false;  // answer every request with a TCP reset (failover tests)
  unsigned delay_ms = 0;   // wait this long before answering any request (slow-server tests)
  int drop_after = -1;     // >= 0: on each connection, answer that many requests, then close
                           // upon the next one without answering (stale keep-alive tests)
};

// Listens, prints "testserver listening on HOST:PORT" to stdout, and serves until SIGINT or
// SIGTERM. Returns the process exit code: 0 after a signal, 1 if it could not listen.
// Call once per process: it installs the signal handlers.
int run(const Options& options);

}  // namespace juggler::testserver
