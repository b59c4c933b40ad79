// The process's descriptor limit (runtime.cpp calls it once at start).
#pragma once

namespace juggler {

// Every connection is a descriptor (two when proxied): raises the soft
// RLIMIT_NOFILE to the hard one (systemd's soft default of 1024 is far too
// low), and logs what it got, the first thing to check when accept fails.
void raise_descriptor_limit() noexcept;

}  // namespace juggler
