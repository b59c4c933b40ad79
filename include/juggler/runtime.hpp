// Start-up and the worker threads: listeners, signals, drain.
#pragma once

#include "juggler/config.hpp"

namespace juggler {

// Binds every listener, starts config.workers threads and serves until
// SIGTERM/SIGINT, then drains. Returns the process exit status. Throws
// std::runtime_error (with a message for the operator) when start-up fails.
int run(const Config& config);

// `bin/app.out --reload FILE.so [--control PATH]`: asks the balancer at
// `control` to load FILE.so (built by make reload) and prints its answer.
// The exit status: 0 reloaded, 1 refused, 2 no balancer answers there.
int reload_client(const std::string& control, const std::string& object);

// A route table object built by make reload (FILE.so), dlopened and checked
// against this build's table ABI: what a reload loads, and --table at
// start-up. Closed with this object unless the handle is taken.
struct TableObject {
  void* handle = nullptr;
  const RouteTable* table = nullptr;
  TableObject() = default;
  TableObject(const TableObject&) = delete;
  TableObject& operator=(const TableObject&) = delete;
  ~TableObject();
};
// Empty when `out` holds the table of `path`; else why not, naming `path`.
std::string load_table(const std::string& path, TableObject& out);

}  // namespace juggler
