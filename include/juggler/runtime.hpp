// Start-up and the worker threads: listeners, signals, drain.
#pragma once

#include "juggler/config.hpp"

namespace juggler {

// Binds every listener, starts config.workers threads and serves until
// SIGTERM/SIGINT, then drains. Returns the process exit status. Throws
// std::runtime_error (with a message for the operator) when start-up fails.
int run(const Config& config);

}  // namespace juggler
