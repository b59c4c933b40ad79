// The ClientHello parser (client_hello.hpp, RFC 8446 4.1.2 and 5.1, RFC 6066
// 3): pure, so the fuzz target links this file alone. Every length is checked
// against what holds it; anything that does not add up is Invalid, never a
// guess (the connection then goes to the default route).
#include "stream/client_hello.hpp"

namespace juggler {

namespace {

constexpr std::size_t kRecordHeader = 5;
constexpr std::size_t kMaxFragment = 16384;  // RFC 8446 5.1

std::size_t be16(const unsigned char* p) { return (static_cast<std::size_t>(p[0]) << 8) | p[1]; }

// A cursor over the handshake bytes, which lie in the fragments of
// consecutive records: crossing the end of one fragment steps over the next
// record's header. Every read is bounds-checked against `left` (what this
// reader may read); a failed read leaves it failed, so a parse checks once at
// the end of a step. Only records that are complete, non-empty handshake
// records (checked by complete_records) are ever stepped into: `left` never
// reaches past them.
struct Reader {
  const unsigned char* p;  // the next byte, or the next record's header when frag == 0
  std::size_t frag;        // bytes of the current fragment at p
  std::size_t left;
  bool ok = true;

  void step() {
    if (frag != 0) return;
    frag = be16(p + 3);
    p += kRecordHeader;
  }
  std::size_t uint(std::size_t n) {
    if (!ok || n > left) {
      ok = false;
      return 0;
    }
    std::size_t v = 0;
    for (left -= n; n > 0; --n, --frag) {
      step();
      v = (v << 8) | *p++;
    }
    return v;
  }
  std::size_t u8() { return uint(1); }
  std::size_t u16() { return uint(2); }
  std::size_t u24() { return uint(3); }
  bool take(std::size_t n) {
    if (!ok || n > left) return ok = false;
    for (left -= n; n > 0;) {
      step();
      const std::size_t k = n < frag ? n : frag;
      p += k;
      frag -= k;
      n -= k;
    }
    return true;
  }
  // The next `n` bytes as a reader of their own (this one moves past them).
  Reader sub(std::size_t n) {
    const Reader at{p, frag, n};
    return take(n) ? at : Reader{p, 0, 0, false};
  }
  // The next `n` (<= sizeof joined) bytes in one piece: where they lie when
  // one fragment holds them, else copied into `joined`. Null when short.
  const char* bytes(std::size_t n, char (&joined)[255]) {
    if (!ok || n > left || n > sizeof joined) return nullptr;
    if (n > 0) step();
    if (n <= frag) {
      const auto* at = reinterpret_cast<const char*>(p);
      take(n);
      return at;
    }
    for (std::size_t i = 0; i < n; ++i) joined[i] = static_cast<char>(u8());
    return joined;
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
bool find_server_name(Reader ext, ClientHello* out) {
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
      if (kind != 0) {  // not host_name
        list.take(n);
        continue;
      }
      const char* at = list.bytes(n, out->joined);
      if (!at) return false;
      out->name = std::string_view(at, n);
      return plausible_host(out->name);
    }
    return list.ok;
  }
  return ext.ok;
}

// How far the complete records at the start of `data` go, stopping once
// they carry `*need` handshake bytes (4 until the message header is known,
// then the whole message): `*have` handshake bytes in the records up to
// `*end`. Invalid at the first byte of a header that cannot start a
// handshake record, or an empty or oversized one, or a message that is not
// a ClientHello or is too long; NeedMore where the next record is incomplete
// (`*end` is then where it ends, or would: parsing before is pointless).
HelloParse complete_records(const unsigned char* p, std::size_t size, std::size_t* end, std::size_t* have) {
  std::size_t need = 4;
  for (*end = 0, *have = 0;;) {
    const std::size_t at = *end;
    if (size > at && p[at] != 22) return HelloParse::Invalid;     // handshake
    if (size > at + 1 && p[at + 1] != 3) return HelloParse::Invalid;  // TLS 1.x
    if (size < at + kRecordHeader) {
      *end = at + kRecordHeader;
      return HelloParse::NeedMore;
    }
    const std::size_t len = be16(p + at + 3);
    if (len == 0 || len > kMaxFragment) return HelloParse::Invalid;
    if (at == 0 && size > kRecordHeader && p[kRecordHeader] != 1) return HelloParse::Invalid;  // not a ClientHello
    *end = at + kRecordHeader + len;
    if (size < *end) return HelloParse::NeedMore;
    *have += len;
    if (need == 4 && *have >= 4) {
      Reader head{p + kRecordHeader, be16(p + 3), 4};
      head.u8();
      need = 4 + head.u24();
      if (need > kMaxHelloMessage) return HelloParse::Invalid;
    }
    if (*have >= need) return HelloParse::Done;
  }
}

}  // namespace

HelloParse parse_client_hello(std::string_view data, ClientHello* out) noexcept {
  out->name = {};
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t have = 0;
  const HelloParse records = complete_records(p, data.size(), &out->end, &have);
  if (records != HelloParse::Done) return records;
  Reader r{p + kRecordHeader, be16(p + 3), have};
  r.u8();  // msg_type, checked by complete_records
  Reader hello = r.sub(r.u24());
  hello.take(2 + 32);          // legacy_version, random
  hello.take(hello.u8());      // legacy_session_id
  hello.take(hello.u16());     // cipher_suites
  hello.take(hello.u8());      // legacy_compression_methods
  if (!hello.ok) return HelloParse::Invalid;
  if (hello.left == 0) return HelloParse::Done;  // no extensions (SSL 3.0 style): no name
  Reader ext = hello.sub(hello.u16());
  if (!hello.ok || hello.left != 0) return HelloParse::Invalid;
  if (find_server_name(ext, out)) return HelloParse::Done;
  out->name = {};  // no name but a Done's
  return HelloParse::Invalid;
}

}  // namespace juggler
