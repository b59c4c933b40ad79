// The access log's two line formats (log.hpp), written straight into the
// worker's buffer: no allocation, no printf, bounded by the room given (a
// line too long is cut and still ends in a newline).
#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>

#include "juggler/log.hpp"

namespace juggler {

namespace {

// Bytes a json string or a combined quoted field carries as they are:
// printable ASCII but `"` and `\\`.
constexpr auto kPlain = [] {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x7f; ++c) t[static_cast<std::size_t>(c)] = c != '"' && c != '\\';
  return t;
}();

// Appends at p. Checked: within [p, end - 1), the last byte kept for the
// newline, cutting what does not fit. Unchecked: the caller made sure the
// whole line fits (line_bound), so a write is a store or a memcpy of a known
// size, which is most of the line's cost.
template <bool Checked>
struct Out {
  char* p;
  char* end;

  std::size_t room(std::size_t n) const noexcept {
    return Checked ? std::min(n, static_cast<std::size_t>(end - 1 - p)) : n;
  }
  void put(char c) noexcept {
    if (!Checked || p < end - 1) *p++ = c;
  }
  void put(std::string_view s) noexcept {
    const std::size_t n = room(s.size());
    std::memcpy(p, s.data(), n);
    p += n;
  }
  void num(std::uint64_t v) noexcept {
    char tmp[24];
    const auto r = std::to_chars(tmp, tmp + sizeof tmp, v);
    put(std::string_view(tmp, static_cast<std::size_t>(r.ptr - tmp)));
  }
  // Seconds as "S.mmm" (combined's rt=), or milliseconds as "M.uuu" (json).
  void fixed3(std::uint64_t whole, std::uint64_t thousandths) noexcept {
    num(whole);
    frac3(thousandths);
  }
  void frac3(std::uint64_t thousandths) noexcept {
    const char frac[4] = {'.', static_cast<char>('0' + thousandths / 100 % 10),
                          static_cast<char>('0' + thousandths / 10 % 10), static_cast<char>('0' + thousandths % 10)};
    put(std::string_view(frac, 4));
  }
  // `v` with runs of plain bytes copied whole and each other byte given to
  // `escape`.
  template <class Escape>
  void escaped(std::string_view v, Escape escape) noexcept {
    const char* s = v.data();
    const char* const e = s + v.size();
    while (s < e) {
      const char* run = s;
      while (s < e && kPlain[static_cast<unsigned char>(*s)]) ++s;
      put(std::string_view(run, static_cast<std::size_t>(s - run)));
      if (s < e) escape(*s++);
    }
  }
  // Combined: a quoted field, `"` and `\\` escaped, control and other bytes
  // outside ASCII as they are but for controls ('?'), "-" when empty.
  void quoted(std::string_view v) noexcept {
    put('"');
    if (v.empty()) put('-');
    quoted_body(v);
    put('"');
  }
  void quoted_body(std::string_view v) noexcept {
    escaped(v, [this](char c) {
      if (c == '"' || c == '\\') {
        put('\\');
        put(c);
      } else {
        put(static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? '?' : c);
      }
    });
  }
  // Json: a string, every byte outside printable ASCII as \u00XX (so a line
  // is valid JSON and UTF-8 whatever the client sent; a UTF-8 sequence shows
  // as its bytes).
  void json(std::string_view v) noexcept {
    put('"');
    escaped(v, [this](char ch) {
      static constexpr char kHex[] = "0123456789abcdef";
      const auto c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\') {
        const char e[2] = {'\\', ch};
        put(std::string_view(e, 2));
      } else if (room(6) == 6) {  // never half an escape
        const char e[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
        put(std::string_view(e, 6));
      }
    });
    put('"');
  }
  // `v` when there is one, else the format's word for none ("-", "null").
  void num_or(bool present, std::uint64_t v, std::string_view none) noexcept {
    if (present) num(v);
    else put(none);
  }
  void json_or_null(std::string_view v) noexcept {
    if (v.empty()) put("null");
    else json(v);
  }
  char* finish() noexcept {
    *p++ = '\n';
    return p;
  }
};

// What a line can take at most: every string escaped at its longest (6 bytes
// a byte), the fixed text and numbers.
std::size_t line_bound(const AccessRecord& r, std::string_view date) noexcept {
  const std::size_t strings = r.kind.size() + r.client_ip.size() + r.request_line.size() + r.referer.size() +
                              r.user_agent.size() + r.pool.size() + r.upstream.size() + date.size() + 16;
  return 6 * strings + 512;
}

// The request line's protocol field ("HTTP/1.1"), or empty (a line cut short
// or none). An HTTP/2 stream's exchange read an HTTP/1.1 head: its protocol
// is then "HTTP/2.0" and the line is cut before the field (`line`).
std::string_view protocol(const AccessRecord& r, std::string_view& line) noexcept {
  line = r.request_line;
  const std::size_t sp = line.rfind(' ');
  if (sp == std::string_view::npos || !line.substr(sp + 1).starts_with("HTTP/")) return {};
  if (!r.h2) return line.substr(sp + 1);
  line = line.substr(0, sp);
  return "HTTP/2.0";
}

template <bool Checked>
char* combined(Out<Checked> o, const AccessRecord& r, std::string_view date) noexcept {
  o.put(r.client_ip);
  o.put(" - - [");
  o.put(date);
  o.put("] ");
  // HTTP/1's request line goes as it is: only an HTTP/2 stream's is split.
  std::string_view line;
  const std::string_view proto = r.h2 ? protocol(r, line) : std::string_view{};
  if (!proto.empty()) {
    o.put('"');
    o.quoted_body(line);
    o.put(' ');
    o.put(proto);
    o.put('"');
  } else {
    o.quoted(r.request_line.empty() ? r.kind : r.request_line);
  }
  o.put(' ');
  o.num_or(r.status != 0, static_cast<std::uint64_t>(r.status), "-");
  o.put(' ');
  o.num(r.bytes_out);
  o.put(' ');
  o.quoted(r.referer);
  o.put(' ');
  o.quoted(r.user_agent);
  o.put(" upstream=");
  o.put(r.upstream.empty() ? std::string_view("-") : r.upstream);
  o.put(" rt=");
  o.fixed3(r.duration_us / 1000000, r.duration_us / 1000 % 1000);
  o.put(" term=");
  o.put(std::string_view(r.term, 2));
  return o.finish();
}

template <bool Checked>
char* json(Out<Checked> o, const AccessRecord& r, std::string_view date, std::uint32_t millis) noexcept {
  // The request line's parts: method, target, protocol (views into it).
  std::string_view line = r.request_line, method, path;
  if (const std::size_t sp = line.find(' '); sp != std::string_view::npos) {
    method = line.substr(0, sp);
    path = line.substr(sp + 1);
    path = path.substr(0, path.rfind(' '));
  }
  o.put("{\"time\":\"");
  o.put(date);
  o.frac3(millis);
  o.put("Z\",\"kind\":");
  o.json(r.kind);
  o.put(",\"client\":");
  o.json(r.client_ip);
  o.put(",\"method\":");
  o.json_or_null(method);
  o.put(",\"path\":");
  o.json_or_null(path);
  o.put(",\"protocol\":");
  o.json_or_null(protocol(r, line));
  o.put(",\"route\":");
  o.num_or(r.route >= 0, static_cast<std::uint64_t>(r.route) + 1, "null");
  o.put(",\"pool\":");
  o.json_or_null(r.pool);
  o.put(",\"server\":");
  o.json_or_null(r.upstream);
  o.put(",\"status\":");
  o.num_or(r.status != 0, static_cast<std::uint64_t>(r.status), "null");
  o.put(",\"bytes_in\":");
  o.num(r.bytes_in);
  o.put(",\"bytes_out\":");
  o.num(r.bytes_out);
  o.put(",\"duration_ms\":");
  o.fixed3(r.duration_us / 1000, r.duration_us % 1000);
  o.put(",\"ttfb_ms\":");
  if (r.ttfb_us >= 0) o.fixed3(static_cast<std::uint64_t>(r.ttfb_us) / 1000, static_cast<std::uint64_t>(r.ttfb_us) % 1000);
  else o.put("null");
  o.put(",\"retries\":");
  o.num(r.retries);
  o.put(",\"term\":");
  o.json(std::string_view(r.term, 2));
  o.put(",\"tls\":");
  o.json_or_null(r.tls ? std::string_view(r.tls) : std::string_view());
  o.put(",\"referer\":");
  o.json_or_null(r.referer);
  o.put(",\"user_agent\":");
  o.json_or_null(r.user_agent);
  // Only a line cut short (the checked path: strings of kilobytes) is no
  // JSON object; the exchange's copies are 512 bytes in all.
  o.put('}');
  return o.finish();
}

}  // namespace

char* format_combined(char* p, char* end, const AccessRecord& r, std::string_view date) noexcept {
  if (line_bound(r, date) <= static_cast<std::size_t>(end - p)) return combined(Out<false>{p, end}, r, date);
  return combined(Out<true>{p, end}, r, date);
}

char* format_json(char* p, char* end, const AccessRecord& r, std::string_view date, std::uint32_t millis) noexcept {
  if (line_bound(r, date) <= static_cast<std::size_t>(end - p)) return json(Out<false>{p, end}, r, date, millis);
  return json(Out<true>{p, end}, r, date, millis);
}

}  // namespace juggler
