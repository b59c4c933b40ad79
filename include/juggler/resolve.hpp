// Servers by name (`server NAME:PORT resolve [slots=N] [init=none]`): what
// the resolver thread (src/resolve) publishes and the workers read.
//
// A resolve line compiles to N fixed slots, ordinary servers of the pool
// (ServerDef::slot 1..N). The resolver looks the name up off the request path
// and gives each address one slot: it writes the slot's address (SlotAddress,
// a seqlock: workers copy it without a lock when they connect) and enables or
// disables the slot through its ServerHealth (`unresolved`, read by the
// balancer's picks like `down`). A connection keeps the address it connected
// to; its version (SlotAddress::version) tells the idle lists that the slot
// has moved on, so a connection to a vanished address is not reused.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>

namespace juggler {

// One slot's current address, written by one thread (the resolver) and read
// by any: a seqlock over atomic words, so a reader never blocks the writer
// nor sees half of an address, and nothing is a data race.
class SlotAddress {
 public:
  // sockaddr_in6 (28 bytes) fits; sockaddr_in too.
  static constexpr std::size_t kWords = 4;

  // Publishes `addr` (IPv4 or IPv6 with its port). Resolver thread only.
  void store(const sockaddr_storage& addr) noexcept;

  // Copies the address into `out` and returns its version (even, never 0
  // once stored; 0: never stored). Any thread, lock-free; retries only while
  // a store runs at that moment. Out of line: called once per new connection.
  std::uint32_t load(sockaddr_storage& out) const noexcept;

  // Takes `o`'s address and version (a reload's carry-over), before any
  // reader sees this one.
  void copy_from(const SlotAddress& o) noexcept;

  // The version of the address now (odd while a store runs): a connection
  // made at another version is to an address the slot no longer has.
  [[nodiscard]] std::uint32_t version() const noexcept { return seq_.load(std::memory_order_acquire); }

 private:
  std::atomic<std::uint32_t> seq_{0};
  std::atomic<std::uint64_t> words_[kWords] = {};
};

// Per resolve line: what /metrics shows of its lookups. Written by the
// resolver thread.
struct ResolveStatus {
  std::atomic<std::uint64_t> last_ok_ms{0};    // wall clock of the last lookup that answered; 0 = never
  std::atomic<std::uint64_t> last_try_ms{0};   // wall clock of the last lookup
  std::atomic<std::uint32_t> failing{0};       // lookups failed in a row (0: the last one answered)
  std::atomic<std::uint32_t> records{0};       // addresses in the last answer (more than slots: some left out)
};

}  // namespace juggler
