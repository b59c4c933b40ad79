// The consistent_hash keys of a request: ip, header, cookie, path, query.
#include "juggler/balance.hpp"

namespace juggler {

namespace {

constexpr bool blank(char c) noexcept { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && blank(s.back())) s.remove_suffix(1);
  return s;
}

// `name` in one Cookie header value: "a=1; b=2". Found with an empty value
// counts as absent, so the next Cookie header may still have it.
std::string_view cookie_in(std::string_view line, std::string_view name) noexcept {
  while (!line.empty()) {
    const std::size_t end = line.find(';');
    std::string_view pair = line.substr(0, end);
    line = end == std::string_view::npos ? std::string_view{} : line.substr(end + 1);
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos || trim(pair.substr(0, eq)) != name) continue;
    std::string_view value = trim(pair.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    if (!value.empty()) return value;
  }
  return {};
}

}  // namespace

std::string_view cookie_value(const RequestHead& head, std::string_view name) noexcept {
  if (name.empty()) return {};
  for (const Header& h : head.headers) {
    if (!iequals(h.name, "cookie")) continue;
    if (std::string_view v = cookie_in(h.value, name); !v.empty()) return v;
  }
  return {};
}

std::string_view query_value(std::string_view query, std::string_view name) noexcept {
  if (name.empty()) return {};
  while (!query.empty()) {
    const std::size_t end = query.find('&');
    const std::string_view pair = query.substr(0, end);
    query = end == std::string_view::npos ? std::string_view{} : query.substr(end + 1);
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos || pair.substr(0, eq) != name) continue;
    if (eq + 1 < pair.size()) return pair.substr(eq + 1);
  }
  return {};
}

std::string_view hash_key(const PoolDef& p, const RequestHead& head, std::string_view client_ip) noexcept {
  switch (p.key) {
    case HashKey::Ip: return client_ip;
    case HashKey::Header: return trim(head.header(p.key_name));
    case HashKey::Cookie: return cookie_value(head, p.key_name);
    case HashKey::Path: return head.path;
    case HashKey::Query: return query_value(head.query, p.key_name);
    case HashKey::None: break;
  }
  return {};
}

}  // namespace juggler
