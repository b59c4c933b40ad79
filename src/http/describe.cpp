// What routing sees of a parsed request (RequestHead: method, target, path,
// query, host, headers) and the path check that keeps a route from being
// chosen for one path while the server resolves another.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "juggler/http.hpp"

namespace juggler {

bool path_is_normal(std::string_view path) noexcept {
  std::size_t i = 0;
  while (i < path.size()) {
    // One segment: [i, j)
    std::size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    int dots = 0;
    bool only_dots = j > i;
    for (std::size_t k = i; k < j && only_dots;) {
      if (path[k] == '.') {
        ++dots;
        ++k;
      } else if (path[k] == '%' && k + 2 < j && path[k + 1] == '2' &&
                 (path[k + 2] == 'e' || path[k + 2] == 'E')) {
        ++dots;
        k += 3;
      } else {
        only_dots = false;
      }
    }
    if (only_dots && (dots == 1 || dots == 2)) return false;
    i = j + 1;
  }
  return true;
}

Method route_method(std::uint8_t m) noexcept {
  switch (m) {
    case HTTP_GET: return Method::Get;
    case HTTP_HEAD: return Method::Head;
    case HTTP_POST: return Method::Post;
    case HTTP_PUT: return Method::Put;
    case HTTP_DELETE: return Method::Delete;
    case HTTP_CONNECT: return Method::Connect;
    case HTTP_OPTIONS: return Method::Options;
    case HTTP_TRACE: return Method::Trace;
    case HTTP_PATCH: return Method::Patch;
    default: return Method::Other;
  }
}

namespace {

std::string_view strip_port(std::string_view h) noexcept {
  if (!h.empty() && h[0] == '[') {
    std::size_t e = h.find(']');
    return e == std::string_view::npos ? h : h.substr(0, e + 1);
  }
  std::size_t c = h.find(':');
  return c == std::string_view::npos ? h : h.substr(0, c);
}

// A host of RFC 3986 3.2.2 as far as a Host line can carry it: unreserved,
// pct-encoded and sub-delims (reg-name, IPv4), and ':' inside brackets
// (IP-literal). '@' (userinfo) and everything else are out.
bool host_byte(char c, bool literal) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '-': case '.': case '_': case '~': case '%':
    case '!': case '$': case '&': case '\'': case '(': case ')': case '*': case '+': case ',': case ';': case '=':
      return true;
    case ':':
      return literal;
    default:
      return false;
  }
}

// host [":" port], the host not empty, the port 1 to 5 digits when present.
bool authority_is_valid(std::string_view a) noexcept {
  if (a.empty() || a.size() > kMaxAuthority) return false;
  std::size_t host_end;
  if (a[0] == '[') {
    host_end = a.find(']');
    if (host_end == std::string_view::npos || host_end < 2) return false;
    ++host_end;
    for (std::size_t i = 1; i + 1 < host_end; ++i)
      if (!host_byte(a[i], true)) return false;
  } else {
    host_end = std::min(a.find(':'), a.size());
    if (host_end == 0) return false;
    for (std::size_t i = 0; i < host_end; ++i)
      if (!host_byte(a[i], false)) return false;
  }
  if (host_end == a.size()) return true;
  const std::string_view port = a.substr(host_end);
  if (port[0] != ':' || port.size() < 2 || port.size() > 6) return false;
  for (char c : port.substr(1))
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace

// map_target's other forms: absolute-form is scheme "://" authority [path] ["?" query].
const char* map_absolute_target(std::string_view target, RequestTarget& out) noexcept {
  const std::size_t colon = target.find("://");
  if (colon == std::string_view::npos) return "a request target in no form served here";
  const std::string_view scheme = target.substr(0, colon);
  if (!iequals(scheme, "http") && !iequals(scheme, "https")) return "an absolute-form target not http or https";
  const std::size_t begin = colon + 3;
  const std::size_t end = std::min(target.find_first_of("/?", begin), target.size());
  const std::string_view authority = target.substr(begin, end - begin);
  if (authority.find('@') != std::string_view::npos) return "userinfo in the request target";
  if (!authority_is_valid(authority)) return "an invalid authority in the request target";
  out = RequestTarget{authority, target.substr(end), true};
  return nullptr;
}

void describe_request(const MessageParser& p, Header* headers, RequestHead& head) noexcept {
  head.method = route_method(p.method());
  head.target = p.url();
  std::uint32_t n = p.header_count();
  std::string_view host;
  for (std::uint32_t i = 0; i < n; ++i) {
    const HeaderSpan& h = p.headers()[i];
    headers[i] = Header{p.header_name(h), p.header_value(h)};
    if (h.kind == HeaderKind::Host) host = headers[i].value;
  }
  // The parser refused the targets map_target refuses.
  RequestTarget t;
  map_target(head.target, host, t);
  const std::string_view rest = t.origin;
  std::size_t q = rest.find('?');
  head.path = q == std::string_view::npos ? rest : rest.substr(0, q);
  if (head.path.empty()) head.path = "/";
  head.query = q == std::string_view::npos ? std::string_view{} : rest.substr(q + 1);
  head.host = strip_port(t.authority);
  head.headers = std::span<const Header>(headers, n);
}

}  // namespace juggler
