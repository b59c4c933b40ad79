// What routing sees of a parsed request (RequestHead: method, target, path,
// query, host, headers) and the path check that keeps a route from being
// chosen for one path while the server resolves another.
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
}  // namespace

void describe_request(const MessageParser& p, Header* headers, RequestHead& head) noexcept {
  head.method = route_method(p.method());
  std::string_view url = p.url();
  head.target = url;
  std::string_view authority;
  std::string_view rest = url;
  if (!url.empty() && url[0] != '/' && url != "*") {
    // absolute-form: scheme://authority/path?query
    std::size_t s = url.find("://");
    if (s != std::string_view::npos) {
      std::size_t a = s + 3;
      std::size_t e = url.find_first_of("/?", a);
      authority = url.substr(a, e == std::string_view::npos ? std::string_view::npos : e - a);
      rest = e == std::string_view::npos ? std::string_view("/") : url.substr(e);
      if (!rest.empty() && rest[0] == '?') rest = url.substr(e);
    }
  }
  std::size_t q = rest.find('?');
  head.path = q == std::string_view::npos ? rest : rest.substr(0, q);
  if (head.path.empty()) head.path = "/";
  head.query = q == std::string_view::npos ? std::string_view{} : rest.substr(q + 1);
  std::uint32_t n = p.header_count();
  std::string_view host;
  for (std::uint32_t i = 0; i < n; ++i) {
    const HeaderSpan& h = p.headers()[i];
    headers[i] = Header{p.header_name(h), p.header_value(h)};
    if (h.kind == HeaderKind::Host) host = headers[i].value;
  }
  head.host = strip_port(authority.empty() ? host : authority);
  head.headers = std::span<const Header>(headers, n);
}

}  // namespace juggler
