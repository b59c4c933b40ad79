// An independent, strict HTTP/1.1 request framing reader (RFC 9112), for the
// fuzz invariants: what Juggler forwards must be exactly one message by this
// reader too, ending where llhttp (MessageParser) said. It shares no code with
// llhttp or src/http: if both readers had the same leniency, comparing llhttp
// with itself would never see it.
//
// Framing only, and no leniency:
//   request-line = method SP request-target SP HTTP-version CRLF
//     method: a token; target: 1* octets that are not CTL, SP or DEL (its URI
//     grammar is not framing and is not checked); version "HTTP/1." DIGIT.
//     The one tolerance: words may be separated by a run of SP (RFC 9112 3,
//     a MAY; Juggler forwards the line as received, see the smuggling table's
//     two_spaces_in_request_line). No HTAB/VT/FF/CR as separators.
//   field-line = token ":" OWS *(VCHAR / obs-text / SP / HTAB) OWS CRLF
//     (no obs-fold, no bare CR or LF, no NUL/CTL/DEL); the head ends at CRLF CRLF.
//   HTTP/1.1: exactly one Host.
//   Transfer-Encoding: not on HTTP/1.0, never with Content-Length; over all
//     its field lines chunked exactly once and last (the names of the codings
//     before it are not checked: not framing).
//   Content-Length: one field line, 1*DIGIT, no overflow.
//   chunked body (RFC 9112 7.1): 1*HEXDIG size, [ BWS ";" chunk-ext ] CRLF,
//     data, CRLF; last chunk, trailer field lines (as above), CRLF. The
//     extension's bytes are HTAB/SP/VCHAR/obs-text; its name/value grammar is
//     not framing and is not checked.
//   No Transfer-Encoding and no Content-Length: no body.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace juggler::strict {

struct Framing {
  enum Status { Complete, Incomplete, Error } status = Incomplete;
  std::size_t head_len = 0;  // through the empty line (0 while the head is incomplete)
  std::size_t end = 0;       // Complete: where the message ends
  bool chunked = false;
  bool has_content_length = false;
  std::uint64_t content_length = 0;
  std::uint64_t body_bytes = 0;  // decoded body bytes seen (chunk data or Content-Length bytes)
  const char* error = nullptr;   // Error: what was wrong
  std::size_t error_at = 0;      // Error: the offending offset
};

namespace detail {

inline bool tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}
inline bool vchar_or_obs(unsigned char c) { return (c >= 0x21 && c <= 0x7e) || c >= 0x80; }
inline bool field_char(unsigned char c) { return vchar_or_obs(c) || c == ' ' || c == '\t'; }
inline int hexval(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    unsigned char x = static_cast<unsigned char>(a[i]), y = static_cast<unsigned char>(b[i]);
    if (x >= 'A' && x <= 'Z') x = static_cast<unsigned char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<unsigned char>(y + 32);
    if (x != y) return false;
  }
  return true;
}
inline std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// The reader's cursor over the whole input. Every `need*` returns false when
// the input ran out (Incomplete); `bad` records an Error.
struct Cursor {
  std::string_view d;
  std::size_t i = 0;
  Framing& f;
  bool bad(const char* why) {
    f.status = Framing::Error;
    f.error = why;
    f.error_at = i;
    return false;
  }
  bool more() const { return i < d.size(); }
  unsigned char peek() const { return static_cast<unsigned char>(d[i]); }
};

// A line ending: CR LF exactly. Returns 1 ok, 0 incomplete, -1 error.
inline int crlf(Cursor& c) {
  if (!c.more()) return 0;
  if (c.peek() != '\r') return c.bad("expected CR LF"), -1;
  ++c.i;
  if (!c.more()) return 0;
  if (c.peek() != '\n') return c.bad("CR not followed by LF"), -1;
  ++c.i;
  return 1;
}

// One field line (name: value CRLF) from c.i. 1 ok (name/value set), 0 incomplete, -1 error.
inline int field_line(Cursor& c, std::string_view& name, std::string_view& value) {
  const std::size_t b = c.i;
  while (c.more() && tchar(c.peek())) ++c.i;
  if (!c.more()) return 0;
  if (c.i == b) return c.bad(c.peek() == ' ' || c.peek() == '\t' ? "obs-fold or whitespace before a field name"
                                                                  : "a field name is not a token"), -1;
  if (c.peek() != ':') return c.bad("a field name is not a token (or whitespace before the colon)"), -1;
  name = c.d.substr(b, c.i - b);
  ++c.i;
  const std::size_t vb = c.i;
  while (c.more() && field_char(c.peek())) ++c.i;
  if (!c.more()) return 0;
  value = trim_ows(c.d.substr(vb, c.i - vb));
  if (c.peek() != '\r') return c.bad("a byte not allowed in a field value"), -1;
  if (int r = crlf(c); r <= 0) return r;
  // obs-fold: the next line starts with whitespace (RFC 9112 5.2: reject).
  if (c.more() && (c.peek() == ' ' || c.peek() == '\t')) return c.bad("obs-fold"), -1;
  return 1;
}

// BWS (optional whitespace) inside a chunk extension.
inline void bws(Cursor& c) {
  while (c.more() && (c.peek() == ' ' || c.peek() == '\t')) ++c.i;
}

// chunk-ext up to (not including) the CR: BWS ";" then field bytes (HTAB, SP,
// VCHAR, obs-text). Where the chunk line ends is framing; the grammar of the
// extension's names and values is not, and is not checked (Juggler relays
// extensions it does not understand, e.g. "5;3xt=", RFC 9112 7.1.1).
// 1 ok, 0 incomplete, -1 error.
inline int chunk_ext(Cursor& c) {
  const std::size_t before = c.i;
  bws(c);
  if (!c.more()) return 0;
  if (c.peek() == '\r') return c.i == before ? 1 : (c.bad("whitespace before the end of a chunk line"), -1);
  if (c.peek() != ';') return c.bad("chunk size not followed by ';' or CR LF"), -1;
  while (c.more() && field_char(c.peek())) ++c.i;
  if (!c.more()) return 0;
  if (c.peek() != '\r') return c.bad("a byte not allowed in a chunk extension"), -1;
  return 1;
}

}  // namespace detail

// Frames one request at the start of `d`.
inline Framing frame_request(std::string_view d) {
  using namespace detail;
  Framing f;
  Cursor c{d, 0, f};
  auto incomplete = [&] {
    if (f.status != Framing::Error) f.status = Framing::Incomplete;
    return f;
  };
  // ---- request line
  const std::size_t mb = c.i;
  while (c.more() && tchar(c.peek())) ++c.i;
  if (!c.more()) return incomplete();
  if (c.i == mb) return c.bad("the method is not a token"), f;
  if (c.peek() != ' ') return c.bad("the method is not followed by SP"), f;
  while (c.more() && c.peek() == ' ') ++c.i;
  const std::size_t tb = c.i;
  while (c.more() && vchar_or_obs(c.peek())) ++c.i;
  if (!c.more()) return incomplete();
  if (c.i == tb) return c.bad("empty or invalid request-target"), f;
  if (c.peek() != ' ') return c.bad("the request-target is not followed by SP"), f;
  while (c.more() && c.peek() == ' ') ++c.i;
  static constexpr std::string_view kVersion = "HTTP/1.";
  for (char v : kVersion) {
    if (!c.more()) return incomplete();
    if (c.peek() != static_cast<unsigned char>(v)) return c.bad("not HTTP/1.x"), f;
    ++c.i;
  }
  if (!c.more()) return incomplete();
  if (c.peek() < '0' || c.peek() > '9') return c.bad("not HTTP/1.x"), f;
  const bool http10 = c.peek() == '0';
  ++c.i;
  if (int r = crlf(c); r <= 0) return r == 0 ? incomplete() : f;

  // ---- fields
  unsigned hosts = 0, cls = 0, tes = 0;
  bool chunked_seen = false, chunked_last = false;
  std::uint64_t cl = 0;
  for (;;) {
    if (!c.more()) return incomplete();
    if (c.peek() == '\r') {
      if (int r = crlf(c); r <= 0) return r == 0 ? incomplete() : f;
      break;
    }
    std::string_view name, value;
    if (int r = field_line(c, name, value); r <= 0) return r == 0 ? incomplete() : f;
    if (iequals(name, "host")) {
      ++hosts;
    } else if (iequals(name, "content-length")) {
      if (++cls > 1) return c.bad("more than one Content-Length field line"), f;
      if (value.empty()) return c.bad("empty Content-Length"), f;
      for (char ch : value) {
        if (ch < '0' || ch > '9') return c.bad("Content-Length is not 1*DIGIT"), f;
        const std::uint64_t dgt = static_cast<std::uint64_t>(ch - '0');
        if (cl > (UINT64_MAX - dgt) / 10) return c.bad("Content-Length overflows"), f;
        cl = cl * 10 + dgt;
      }
    } else if (iequals(name, "transfer-encoding")) {
      ++tes;
      bool any = false;
      std::size_t p = 0;
      while (p <= value.size()) {
        std::size_t q = value.find(',', p);
        if (q == std::string_view::npos) q = value.size();
        std::string_view coding = trim_ows(value.substr(p, q - p));
        p = q + 1;
        if (coding.empty()) continue;  // an empty list element
        // transfer-coding = token *( OWS ";" OWS transfer-parameter ): the name.
        // Only chunked decides the framing: the names of the codings before it
        // are not checked (Juggler forwards e.g. "c\x98p, chunked" or ";gzip,
        // chunked" and the server behind answers 501; not a framing question).
        std::string_view cname = coding.substr(0, coding.find(';'));
        cname = trim_ows(cname);
        any = true;
        if (chunked_seen) return c.bad("a transfer coding after chunked"), f;
        if (iequals(cname, "chunked")) {
          if (coding.size() != cname.size()) return c.bad("chunked with parameters"), f;
          chunked_seen = chunked_last = true;
        }
      }
      if (!any) return c.bad("empty Transfer-Encoding"), f;
    }
  }
  f.head_len = c.i;
  if (!http10 && hosts != 1) return c.bad(hosts ? "more than one Host" : "HTTP/1.1 without Host"), f;
  if (tes && http10) return c.bad("Transfer-Encoding on HTTP/1.0"), f;
  if (tes && cls) return c.bad("Transfer-Encoding and Content-Length"), f;
  if (tes && !chunked_last) return c.bad("chunked is not the final transfer coding"), f;
  f.chunked = tes > 0;
  f.has_content_length = cls > 0;
  f.content_length = cl;

  // ---- body
  if (f.has_content_length) {
    const std::uint64_t left = static_cast<std::uint64_t>(d.size() - c.i);
    if (left < cl) {
      f.body_bytes = left;
      return incomplete();
    }
    f.body_bytes = cl;
    f.end = c.i + static_cast<std::size_t>(cl);
    f.status = Framing::Complete;
    return f;
  }
  if (!f.chunked) {
    f.end = c.i;
    f.status = Framing::Complete;
    return f;
  }
  for (;;) {
    std::uint64_t size = 0;
    const std::size_t sb = c.i;
    while (c.more() && hexval(c.peek()) >= 0) {
      if (size > (UINT64_MAX >> 4)) return c.bad("chunk size overflows"), f;
      size = (size << 4) | static_cast<std::uint64_t>(hexval(c.peek()));
      ++c.i;
    }
    if (!c.more()) return incomplete();
    if (c.i == sb) return c.bad("chunk size is not 1*HEXDIG"), f;
    if (int r = chunk_ext(c); r <= 0) return r == 0 ? incomplete() : f;
    if (int r = crlf(c); r <= 0) return r == 0 ? incomplete() : f;
    if (size == 0) break;
    const std::uint64_t left = static_cast<std::uint64_t>(d.size() - c.i);
    if (left < size) {
      f.body_bytes += left;
      c.i = d.size();
      return incomplete();
    }
    f.body_bytes += size;
    c.i += static_cast<std::size_t>(size);
    if (int r = crlf(c); r <= 0) return r == 0 ? incomplete() : f;
  }
  // trailer section
  for (;;) {
    if (!c.more()) return incomplete();
    if (c.peek() == '\r') {
      if (int r = crlf(c); r <= 0) return r == 0 ? incomplete() : f;
      break;
    }
    std::string_view name, value;
    if (int r = field_line(c, name, value); r <= 0) return r == 0 ? incomplete() : f;
  }
  f.end = c.i;
  f.status = Framing::Complete;
  return f;
}

}  // namespace juggler::strict
