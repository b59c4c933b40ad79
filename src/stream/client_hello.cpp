// The ClientHello parser (client_hello.hpp, RFC 8446 4.1.2 and RFC 6066 3):
// pure, so the fuzz target links this file alone. Every length is checked
// against what holds it; anything that does not add up is Invalid, never a
// guess (the connection then goes to the default route).
#include "stream/client_hello.hpp"

namespace juggler {

namespace {

// A cursor over bytes whose every read is bounds-checked: a failed read
// leaves it failed, so a parse checks once at the end of a step.
struct Reader {
  const unsigned char* p;
  std::size_t left;
  bool ok = true;

  std::size_t u8() { return take(1) ? p[-1] : 0; }
  std::size_t u16() { return take(2) ? (static_cast<std::size_t>(p[-2]) << 8) | p[-1] : 0; }
  std::size_t u24() {
    return take(3) ? (static_cast<std::size_t>(p[-3]) << 16) | (static_cast<std::size_t>(p[-2]) << 8) | p[-1] : 0;
  }
  bool take(std::size_t n) {
    if (!ok || n > left) return ok = false;
    p += n;
    left -= n;
    return true;
  }
  // The next `n` bytes as a reader of their own (this one moves past them).
  Reader sub(std::size_t n) {
    const unsigned char* at = p;
    return take(n) ? Reader{at, n} : Reader{p, 0, false};
  }
};

bool plausible_host(std::string_view h) {
  if (h.empty() || h.size() > 255) return false;
  for (char c : h) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// The extensions block: the first host_name of server_name, if any.
bool find_server_name(Reader ext, std::string_view* name) {
  while (ext.ok && ext.left > 0) {
    const std::size_t type = ext.u16();
    Reader body = ext.sub(ext.u16());
    if (!ext.ok) return false;
    if (type != 0) continue;  // not server_name
    Reader list = body.sub(body.u16());
    if (!body.ok || body.left != 0) return false;
    while (list.ok && list.left > 0) {
      const std::size_t kind = list.u8();
      const std::size_t n = list.u16();
      const unsigned char* at = list.p;
      if (!list.take(n)) return false;
      if (kind != 0) continue;  // not host_name
      *name = std::string_view(reinterpret_cast<const char*>(at), n);
      return plausible_host(*name);
    }
    return list.ok;
  }
  return ext.ok;
}

}  // namespace

HelloParse parse_client_hello(std::string_view data, std::string_view* name) noexcept {
  *name = {};
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  // The record header: handshake (22), a TLS 1.x record version, the length.
  if (!data.empty() && p[0] != 22) return HelloParse::Invalid;
  if (data.size() >= 2 && p[1] != 3) return HelloParse::Invalid;
  if (data.size() < 5) return HelloParse::NeedMore;
  const std::size_t record = (static_cast<std::size_t>(p[3]) << 8) | p[4];
  if (record < 4 || record > kMaxClientHello - 5) return HelloParse::Invalid;
  if (data.size() >= 6 && p[5] != 1) return HelloParse::Invalid;  // not a ClientHello
  if (data.size() < 5 + record) return HelloParse::NeedMore;
  Reader r{p + 5, record};
  r.u8();  // msg_type, checked above
  const std::size_t body_len = r.u24();
  if (!r.ok || body_len > r.left) return HelloParse::Invalid;  // a hello over several records
  Reader hello = r.sub(body_len);
  hello.take(2 + 32);          // legacy_version, random
  hello.take(hello.u8());      // legacy_session_id
  hello.take(hello.u16());     // cipher_suites
  hello.take(hello.u8());      // legacy_compression_methods
  if (!hello.ok) return HelloParse::Invalid;
  if (hello.left == 0) return HelloParse::Done;  // no extensions (SSL 3.0 style): no name
  Reader ext = hello.sub(hello.u16());
  if (!hello.ok || hello.left != 0) return HelloParse::Invalid;
  return find_server_name(ext, name) ? HelloParse::Done : HelloParse::Invalid;
}

}  // namespace juggler
