// Which address goes into which slot of a `server NAME:PORT resolve` line.
// Pure: no clock, no I/O, so it is unit-tested alone (tests/unit/test_resolve.cpp).
#pragma once

#include <sys/socket.h>

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace juggler {

// One A or AAAA record: the family and the address bytes (4 used for IPv4).
struct SlotAddr {
  std::uint8_t family = 0;  // 4 or 6
  std::array<std::uint8_t, 16> bytes{};
  auto operator<=>(const SlotAddr&) const = default;
};

// The slots' contents after an answer. An address that is still in `records`
// keeps its slot (a record list that only reorders changes nothing, and the
// keys consistent hashing sent to a slot stay with its address); an address
// no longer in it leaves its slot empty; new addresses fill the empty slots,
// lowest address into the lowest slot. With more addresses than slots, the
// ones already placed stay and the lowest new ones take what is free; the
// rest are left out (`left_out` counts them). `records` may hold duplicates
// and come in any order. Returns one entry per slot of `current`.
std::vector<std::optional<SlotAddr>> assign_slots(std::span<const std::optional<SlotAddr>> current,
                                                  std::vector<SlotAddr> records, std::size_t* left_out = nullptr);

// sockaddr_storage <-> SlotAddr (with `port`). From: false for a family
// other than IPv4 and IPv6.
bool slot_addr_from(const sockaddr* sa, SlotAddr& out) noexcept;
sockaddr_storage slot_sockaddr(const SlotAddr& a, std::uint16_t port) noexcept;
// "192.0.2.7" or "2001:db8::1" (metrics, logs).
std::string slot_addr_text(const SlotAddr& a);

}  // namespace juggler
