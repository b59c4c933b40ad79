// Slot assignment for resolve lines (see slots.hpp).
#include "resolve/slots.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace juggler {

std::vector<std::optional<SlotAddr>> assign_slots(std::span<const std::optional<SlotAddr>> current,
                                                  std::vector<SlotAddr> records, std::size_t* left_out) {
  std::sort(records.begin(), records.end());
  records.erase(std::unique(records.begin(), records.end()), records.end());
  std::vector<std::optional<SlotAddr>> next(current.size());
  std::vector<bool> placed(records.size(), false);
  for (std::size_t k = 0; k < current.size(); ++k) {
    if (!current[k]) continue;
    const auto it = std::lower_bound(records.begin(), records.end(), *current[k]);
    if (it == records.end() || *it != *current[k]) continue;  // vanished: the slot empties
    const auto i = static_cast<std::size_t>(it - records.begin());
    if (placed[i]) continue;  // two slots held one address (cannot happen from here): keep the first
    placed[i] = true;
    next[k] = *it;
  }
  std::size_t slot = 0, out = 0;
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (placed[i]) continue;
    while (slot < next.size() && next[slot]) ++slot;
    if (slot == next.size()) {
      ++out;
      continue;
    }
    next[slot] = records[i];
  }
  if (left_out) *left_out = out;
  return next;
}

bool slot_addr_from(const sockaddr* sa, SlotAddr& out) noexcept {
  out = {};
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    out.family = 4;
    std::memcpy(out.bytes.data(), &in->sin_addr, 4);
    return true;
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    out.family = 6;
    std::memcpy(out.bytes.data(), &in6->sin6_addr, 16);
    return true;
  }
  return false;
}

sockaddr_storage slot_sockaddr(const SlotAddr& a, std::uint16_t port) noexcept {
  sockaddr_storage ss{};
  if (a.family == 4) {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    std::memcpy(&in->sin_addr, a.bytes.data(), 4);
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    std::memcpy(&in6->sin6_addr, a.bytes.data(), 16);
  }
  return ss;
}

std::string slot_addr_text(const SlotAddr& a) {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(a.family == 4 ? AF_INET : AF_INET6, a.bytes.data(), text, sizeof text);
  return text;
}

}  // namespace juggler
