// HTTP/2 request fields to an HTTP/1.1 head (request_head.hpp).
#include "http2/request_head.hpp"

#include <strings.h>

#include <cstring>
#include <initializer_list>
#include <string_view>

#include "juggler/http.hpp"

namespace juggler {

namespace {

constexpr std::string_view kChunked = "Transfer-Encoding: chunked\r\n";

std::string_view view(nghttp2_rcbuf* b) {
  const nghttp2_vec v = nghttp2_rcbuf_get_buf(b);
  return {reinterpret_cast<const char*>(v.base), v.len};
}

void drop(nghttp2_rcbuf*& b) {
  if (b) nghttp2_rcbuf_decref(b);
  b = nullptr;
}

// Appends to the head; false when it would not fit (the room left for the
// end of the head kept).
bool put(H2Head& h, std::initializer_list<std::string_view> parts) {
  std::size_t n = 0;
  for (std::string_view p : parts) n += p.size();
  if (h.len + n + kChunked.size() + 2 > h.cap) return false;
  for (std::string_view p : parts) {
    std::memcpy(h.data + h.len, p.data(), p.size());
    h.len += static_cast<std::uint32_t>(p.size());
  }
  return true;
}

// The request line and Host, once the pseudo-headers are all there (they
// come first). False when :method or :path is missing or :path is not
// origin-form or "*" (RFC 9113 8.3.1; nghttp2 lets any :path by with a
// :scheme other than http(s)); too_large when the line does not fit.
bool write_line(H2Head& h) {
  h.line_written = true;
  if (!h.method || !h.path) return false;
  RequestTarget t;
  if (map_target(view(h.path), h.authority ? view(h.authority) : std::string_view{}, t) || t.absolute ||
      t.origin.empty())
    return false;
  const bool ok = put(h, {view(h.method), " ", t.origin, " HTTP/1.1\r\n"}) &&
                  (t.authority.empty() || put(h, {"Host: ", t.authority, "\r\n"}));
  drop(h.method);
  drop(h.path);
  if (!ok) h.too_large = true;
  return true;
}

// A second cookie field is joined to the first: "; " and the value spliced
// in at the first line's end (the lines after it move).
bool join_cookie(H2Head& h, std::string_view value) {
  const std::size_t add = 2 + value.size();
  if (h.len + add + kChunked.size() + 2 > h.cap) return false;
  char* at = h.data + h.cookie_end;
  std::memmove(at + add, at, h.len - h.cookie_end);
  at[0] = ';';
  at[1] = ' ';
  std::memcpy(at + 2, value.data(), value.size());
  h.len += static_cast<std::uint32_t>(add);
  h.cookie_end += static_cast<std::uint32_t>(add);
  return true;
}

}  // namespace

bool h2_head_field(H2Head& h, nghttp2_rcbuf* name, nghttp2_rcbuf* value) noexcept {
  const std::string_view n = view(name), v = view(value);
  if (h.too_large) return true;
  if (!n.empty() && n[0] == ':') {
    nghttp2_rcbuf** keep = n == ":method" ? &h.method : n == ":path" ? &h.path : n == ":authority" ? &h.authority
                                                                                                    : nullptr;
    if (keep && !*keep) {
      nghttp2_rcbuf_incref(value);
      *keep = value;
    }
    return true;  // :scheme and the rest: nghttp2 checked them
  }
  if (!h.line_written && !write_line(h)) return false;
  bool ok = true;
  if (n == "host") {
    if (h.authority) {
      const std::string_view a = view(h.authority);
      // RFC 9113 8.3.1: they must agree; Host went with the request line.
      return a.size() == v.size() && strncasecmp(a.data(), v.data(), a.size()) == 0;
    }
    ok = put(h, {"Host: ", v, "\r\n"});
  } else if (n == "cookie") {
    if (h.cookie_end) {
      ok = join_cookie(h, v);
    } else {
      ok = put(h, {"Cookie: ", v});
      h.cookie_end = h.len;
      ok = ok && put(h, {"\r\n"});
    }
  } else {
    if (n == "content-length") h.has_length = true;
    if (n == "te") h.te_trailers = true;
    ok = put(h, {n, ": ", v, "\r\n"});
  }
  if (!ok) h.too_large = true;
  return true;
}

bool h2_head_end(H2Head& h, bool end_stream) noexcept {
  if (!h.line_written && !write_line(h)) return false;
  drop(h.authority);
  if (!end_stream && !h.has_length) put(h, {kChunked});
  put(h, {"\r\n"});
  return true;
}

void h2_head_drop(H2Head& h) noexcept {
  drop(h.method);
  drop(h.path);
  drop(h.authority);
}

}  // namespace juggler
