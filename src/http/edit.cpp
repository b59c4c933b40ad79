// Head editing without rebuilding the header block: the original bytes are
// forwarded as slices, with dropped lines cut out and our lines appended.
#include <algorithm>
#include <cstring>

#include "juggler/http.hpp"

namespace juggler {

namespace {

// The end of the last header line: the head minus its final empty line.
const char* last_line_end(const MessageParser& p, const char* floor) {
  const char* end = p.head_begin() + p.head_len();
  if (end > floor && end[-1] == '\n') --end;
  if (end > floor && end[-1] == '\r') --end;
  return end;
}

struct Writer {
  char* out;
  char* end;
  void put(std::string_view v) {
    std::size_t k = std::min<std::size_t>(v.size(), static_cast<std::size_t>(end - out));
    if (k) std::memcpy(out, v.data(), k);
    out += k;
  }
};

// Our lines after the kept ones: the end of X-Forwarded-For (the client's
// list, folded into scratch by the caller, and this client), the Host of an
// absolute-form target, X-Forwarded-Proto/-Host, Via, the Connection of an
// upgrade or of HTTP/1.0, and the empty line.
void put_added_lines(Writer& w, const MessageParser& p, bool had_xff, std::string_view client_ip,
                     std::string_view proto, const RequestTarget& t, std::string_view upgrade) {
  w.put(had_xff ? std::string_view(", ") : std::string_view("X-Forwarded-For: "));
  w.put(client_ip);
  w.put("\r\n");
  if (t.absolute) {
    w.put("Host: ");
    w.put(t.authority);
    w.put("\r\n");
  }
  w.put("X-Forwarded-Proto: ");
  w.put(proto);
  w.put("\r\n");
  if (!t.authority.empty()) {
    w.put("X-Forwarded-Host: ");
    w.put(t.authority);
    w.put("\r\n");
  }
  w.put("Via: 1.1 juggler\r\n");
  // HTTP/1.0 requests ask the server to keep the connection for the next one.
  if (!upgrade.empty()) {
    // The switch we tunnel: its Upgrade line (cut with the hop-by-hop ones) comes back.
    w.put("Connection: Upgrade\r\nUpgrade: ");
    w.put(upgrade);
    w.put("\r\n");
  } else if (p.http_major() == 1 && p.http_minor() == 0) w.put("Connection: keep-alive\r\n");
  w.put("\r\n");
}

}  // namespace

unsigned edit_request_head(const MessageParser& p, std::string_view client_ip, std::string_view proto,
                           char* scratch, std::size_t scratch_cap, std::size_t* scratch_len, uv_buf_t* iov,
                           std::string_view upgrade) {
  unsigned n = 0;
  const char* run = p.head_begin();
  auto cut = [&](const char* at) {
    if (at > run) iov[n++] = uv_buf_init(const_cast<char*>(run), static_cast<unsigned>(at - run));
  };
  RequestTarget t;
  map_target(p.url(), {}, t);  // the parser refused what it refuses
  if (t.absolute) {
    // Origin form: "scheme://authority" cut from the request line; an empty
    // path is sent as "/", the first one of "://" (every slice stays a view
    // of the head or of the scratch).
    const std::string_view url = p.url();
    cut(url.data());
    run = t.origin.data();
    if (!t.origin.starts_with('/')) iov[n++] = uv_buf_init(const_cast<char*>(url.data() + url.find('/')), 1);
  }
  Writer w{scratch, scratch + scratch_cap};
  bool had_xff = false;
  for (std::uint32_t i = 0; i < p.header_count(); ++i) {
    const HeaderSpan& h = p.headers()[i];
    bool skip = h.drop;
    switch (h.kind) {
      case HeaderKind::XForwardedFor:
        // Folded into one X-Forwarded-For that ends with this client.
        w.put(had_xff ? std::string_view(", ") : std::string_view("X-Forwarded-For: "));
        w.put(p.header_value(h));
        had_xff = true;
        skip = true;
        break;
      case HeaderKind::XForwardedProto:
      case HeaderKind::XForwardedHost:
        skip = true;  // a client does not get to say these
        break;
      case HeaderKind::Host:
        if (t.absolute) skip = true;  // the target's authority replaces it
        else t.authority = p.header_value(h);
        break;
      default:
        break;
    }
    if (skip) {
      std::string_view line = p.header_line(i);
      cut(line.data());
      run = line.data() + line.size();
    }
  }
  cut(last_line_end(p, run));
  put_added_lines(w, p, had_xff, client_ip, proto, t, upgrade);
  *scratch_len = static_cast<std::size_t>(w.out - scratch);
  iov[n++] = uv_buf_init(scratch, static_cast<unsigned>(*scratch_len));
  return n;
}

unsigned edit_response_head(const MessageParser& p, std::string_view connection, uv_buf_t* iov,
                            std::string_view constant) {
  if (!p.has_dropped() && connection.empty() && constant.empty()) return 0;
  unsigned n = 0;
  const char* run = p.head_begin();
  for (std::uint32_t i = 0; i < p.header_count(); ++i) {
    if (!p.headers()[i].drop) continue;
    std::string_view line = p.header_line(i);
    if (line.data() > run) iov[n++] = uv_buf_init(const_cast<char*>(run), static_cast<unsigned>(line.data() - run));
    run = line.data() + line.size();
  }
  const char* end = last_line_end(p, run);
  if (end > run) iov[n++] = uv_buf_init(const_cast<char*>(run), static_cast<unsigned>(end - run));
  if (!connection.empty())
    iov[n++] = uv_buf_init(const_cast<char*>(connection.data()), static_cast<unsigned>(connection.size()));
  if (!constant.empty())
    iov[n++] = uv_buf_init(const_cast<char*>(constant.data()), static_cast<unsigned>(constant.size()));
  static constexpr char kCrlf[] = "\r\n";
  iov[n++] = uv_buf_init(const_cast<char*>(kCrlf), 2);
  return n;
}

}  // namespace juggler
