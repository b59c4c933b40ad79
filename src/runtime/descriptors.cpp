#include "runtime/descriptors.hpp"

#include <sys/resource.h>

#include "juggler/log.hpp"

namespace juggler {

void raise_descriptor_limit() noexcept {
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0) return;
  const rlim_t was = nofile.rlim_cur;
  if (was < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &nofile) != 0) nofile.rlim_cur = was;  // e.g. over fs.nr_open
  }
  log(LogLevel::Info, "open files: limit %llu (soft limit was %llu, hard %llu)",
      static_cast<unsigned long long>(nofile.rlim_cur), static_cast<unsigned long long>(was),
      static_cast<unsigned long long>(nofile.rlim_max));
}

}  // namespace juggler
