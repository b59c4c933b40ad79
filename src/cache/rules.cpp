#include "cache/rules.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <ctime>

#include "juggler/http.hpp"
#include "juggler/route.hpp"

namespace juggler {

namespace {

// delta-seconds (RFC 9111 1.2.2): digits, capped at 2^31 (a larger value is
// "as good as infinite"); malformed: 0.
std::int64_t delta_seconds(std::string_view v) noexcept {
  if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
  if (v.empty()) return 0;
  std::int64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return 0;
    n = n * 10 + (c - '0');
    if (n > 2147483648LL) n = 2147483648LL;
  }
  return n;
}

int two_digits(std::string_view v, std::size_t at) noexcept {
  const char a = v[at], b = v[at + 1];
  if (a < '0' || a > '9' || b < '0' || b > '9') return -1;
  return (a - '0') * 10 + (b - '0');
}

// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H.
// Hinnant's days_from_civil): arithmetic only, where timegm() looks up the
// time zone on every call (a stored response's Date is parsed per miss).
constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}
static_assert(days_from_civil(1970, 1, 1) == 0 && days_from_civil(2000, 3, 1) == 11017);

constexpr std::string_view kMonths = "JanFebMarAprMayJunJulAugSepOctNovDec";
constexpr std::string_view kDays = "SunMonTueWedThuFriSat";

}  // namespace

void CacheControl::parse(std::string_view value) noexcept {
  for_each_token(value, [&](std::string_view d) {
    const std::size_t eq = d.find('=');
    const std::string_view name = trim_ows(d.substr(0, eq));
    const std::string_view arg = eq == std::string_view::npos ? std::string_view() : trim_ows(d.substr(eq + 1));
    if (iequals(name, "no-store")) no_store = true;
    else if (iequals(name, "no-cache")) no_cache = true;
    else if (iequals(name, "private")) is_private = true;
    else if (iequals(name, "public")) is_public = true;
    else if (iequals(name, "must-revalidate") || iequals(name, "proxy-revalidate")) must_revalidate = true;
    else if (iequals(name, "max-age")) max_age = delta_seconds(arg);
    else if (iequals(name, "s-maxage")) s_maxage = delta_seconds(arg);
    else if (iequals(name, "stale-while-revalidate")) stale_while_revalidate = delta_seconds(arg);
    else if (iequals(name, "stale-if-error")) stale_if_error = delta_seconds(arg);
  });
}

std::int64_t parse_http_date(std::string_view v) noexcept {
  v = trim_ows(v);
  // "Sun, 06 Nov 1994 08:49:37 GMT"
  if (v.size() != 29 || v.substr(3, 2) != ", " || v[7] != ' ' || v[11] != ' ' || v[16] != ' ' || v[19] != ':' ||
      v[22] != ':' || v.substr(25) != " GMT" || kDays.find(v.substr(0, 3)) % 3 != 0)
    return -1;
  const std::size_t mon = kMonths.find(v.substr(8, 3));
  const int day = two_digits(v, 5), hi = two_digits(v, 12), lo = two_digits(v, 14);
  const int hh = two_digits(v, 17), mm = two_digits(v, 20), ss = two_digits(v, 23);
  if (mon == std::string_view::npos || mon % 3 || day < 1 || day > 31 || hi < 0 || lo < 0 || hh < 0 || hh > 23 ||
      mm < 0 || mm > 59 || ss < 0 || ss > 60)
    return -1;
  return days_from_civil(hi * 100 + lo, static_cast<unsigned>(mon / 3 + 1), static_cast<unsigned>(day)) * 86400 +
         hh * 3600 + mm * 60 + ss;
}

void format_http_date(std::int64_t t, char out[29]) noexcept {
  const std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  std::strftime(out, 30, "%a, %d %b %Y %H:%M:%S GMT", &tm);  // C locale names
}

bool etag_list_matches(std::string_view list, std::string_view etag) noexcept {
  if (trim_ows(list) == "*") return true;
  const auto opaque = [](std::string_view t) { return t.substr(0, 2) == "W/" ? t.substr(2) : t; };
  etag = opaque(etag);
  // #entity-tag: [W/]"etagc*", etagc being any visible character but DQUOTE (a comma too)
  std::size_t i = 0;
  while (i < list.size()) {
    const char c = list[i];
    if (c == ',' || c == ' ' || c == '\t') {
      ++i;
      continue;
    }
    const std::size_t start = i;
    if (list.substr(i, 2) == "W/") i += 2;
    if (i >= list.size() || list[i] != '"') return false;
    const std::size_t close = list.find('"', i + 1);
    if (close == std::string_view::npos) return false;
    if (!etag.empty() && opaque(list.substr(start, close + 1 - start)) == etag) return true;
    i = close + 1;
  }
  return false;
}

bool not_modified_since(std::string_view if_modified_since, std::string_view last_modified) noexcept {
  const std::int64_t since = parse_http_date(if_modified_since), modified = parse_http_date(last_modified);
  return since >= 0 && modified >= 0 && modified <= since;
}

bool client_has_copy(const RequestHead& h, int status, std::string_view etag, std::string_view last_modified) noexcept {
  if (status < 200 || status > 299) return false;
  bool inm = false, match = false;
  std::string_view ims;
  for (const Header& x : h.headers) {
    if (iequals(x.name, "if-none-match")) {
      inm = true;
      match = match || etag_list_matches(x.value, etag);
    } else if (ims.empty() && iequals(x.name, "if-modified-since")) {
      ims = x.value;
    }
  }
  if (inm) return match;
  return !ims.empty() && not_modified_since(ims, last_modified);
}

bool unstored_field(std::string_view name) noexcept {
  return iequals(name, "connection") || iequals(name, "keep-alive") || iequals(name, "transfer-encoding") ||
         iequals(name, "content-length") || iequals(name, "set-cookie") || iequals(name, "age") ||
         iequals(name, "proxy-connection") || iequals(name, "te") || iequals(name, "trailer") ||
         iequals(name, "upgrade");
}

bool same_field_name(std::string_view a, std::string_view b) noexcept {
  const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

bool updates_stored_field(std::string_view name, std::string_view value, std::string_view stored_etag) noexcept {
  if (unstored_field(name) || iequals(name, "content-encoding") || iequals(name, "content-range")) return false;
  return !iequals(name, "etag") || !etag_list_matches(value, stored_etag);
}

bool heuristically_cacheable(int status) noexcept {
  switch (status) {
    case 200: case 203: case 204: case 300: case 301: case 308:
    case 404: case 405: case 410: case 414: case 501:
      return true;
    default:
      return false;
  }
}

StoreDecision decide_store(const ResponseFacts& r, bool request_authorization, std::uint32_t route_ttl_ms,
                           std::int64_t now) noexcept {
  StoreDecision d;
  const CacheControl& cc = r.cc;
  if (cc.no_store || cc.is_private || r.vary_star) return d;
  const bool shared_ok = cc.is_public || cc.s_maxage >= 0;
  if (r.set_cookie && !shared_ok) return d;
  d.auth_ok = shared_ok || cc.must_revalidate;
  if (request_authorization && !d.auth_ok) return d;
  std::int64_t lifetime_s = -1;
  if (cc.s_maxage >= 0) lifetime_s = cc.s_maxage;
  else if (cc.max_age >= 0) lifetime_s = cc.max_age;
  else if (r.has_expires) lifetime_s = r.expires < 0 ? 0 : std::max<std::int64_t>(0, r.expires - (r.date >= 0 ? r.date : now));
  const bool explicit_fresh = lifetime_s >= 0;
  // Explicit freshness makes any final status storable but a partial one,
  // 304 and the server errors (a stored 5xx would stand in for the good
  // copy stale-if-error keeps); without it, the heuristic statuses only.
  const bool status_ok = heuristically_cacheable(r.status) ||
                         (explicit_fresh && r.status >= 200 && r.status < 500 && r.status != 206 && r.status != 304);
  if (!status_ok) return d;
  std::uint64_t lifetime_ms = 0;
  if (explicit_fresh) lifetime_ms = static_cast<std::uint64_t>(lifetime_s) * 1000;
  else if (route_ttl_ms != kCacheNoBound) lifetime_ms = route_ttl_ms;  // the operator's heuristic
  if (route_ttl_ms != kCacheNoBound && lifetime_ms > route_ttl_ms) lifetime_ms = route_ttl_ms;
  d.revalidate = cc.no_cache;
  // RFC 9111 4.2.3: the apparent age counts from the end of the Date's second
  // (both clocks tick in whole seconds: a response 0.2 s old may carry the
  // second before `now`), so a fresh response is never aged by the rounding.
  const std::int64_t apparent = r.date >= 0 ? now - r.date - 1 : 0;
  d.age_ms = static_cast<std::uint64_t>(std::max<std::int64_t>({r.age, apparent, 0})) * 1000;
  const bool fresh_for_a_while = !d.revalidate && lifetime_ms > d.age_ms;
  if (!fresh_for_a_while && !r.validator) return d;
  d.store = true;
  d.lifetime_ms = lifetime_ms;
  // must-revalidate, s-maxage (RFC 9111 5.2.2.10) and no-cache forbid serving stale.
  if (!cc.must_revalidate && cc.s_maxage < 0 && !cc.no_cache) {
    if (cc.stale_if_error > 0) d.stale_if_error_ms = static_cast<std::uint64_t>(cc.stale_if_error) * 1000;
    if (cc.stale_while_revalidate > 0)
      d.stale_while_revalidate_ms = static_cast<std::uint64_t>(cc.stale_while_revalidate) * 1000;
  }
  return d;
}

ResponseFacts response_facts(const MessageParser& r) noexcept {
  ResponseFacts f;
  f.status = r.status();
  for (std::uint32_t i = 0; i < r.header_count(); ++i) {
    const HeaderSpan& hs = r.headers()[i];
    if (hs.drop) continue;
    const std::string_view n = r.header_name(hs), v = r.header_value(hs);
    switch (n.size()) {  // by length first: most fields are none of these
      case 3:
        if (iequals(n, "age")) std::from_chars(trim_ows(v).data(), trim_ows(v).data() + trim_ows(v).size(), f.age);
        break;
      case 4:
        if (iequals(n, "date")) f.date = parse_http_date(v);
        else if (iequals(n, "etag")) f.validator = true;
        else if (iequals(n, "vary")) for_each_token(v, [&](std::string_view t) { f.vary_star |= trim_ows(t) == "*"; });
        break;
      case 7:
        if (iequals(n, "expires")) f.has_expires = true, f.expires = parse_http_date(v);
        break;
      case 10:
        f.set_cookie = f.set_cookie || iequals(n, "set-cookie");
        break;
      case 13:
        if (iequals(n, "cache-control")) f.cc.parse(v);
        else f.validator = f.validator || iequals(n, "last-modified");
        break;
      default:
        break;
    }
  }
  return f;
}

bool unstored_line(const MessageParser& r, const HeaderSpan& hs) noexcept {
  switch (hs.kind) {
    case HeaderKind::ContentLength: case HeaderKind::TransferEncoding: case HeaderKind::Connection:
    case HeaderKind::HopByHop:
      return true;
    default:
      break;
  }
  const std::string_view n = r.header_name(hs);
  return (n.size() == 3 && iequals(n, "age")) || (n.size() == 10 && iequals(n, "set-cookie"));
}

bool purge_allowed(std::string_view peer, const CidrDef& net) noexcept {
  if (net.family == 0 || peer.size() >= INET6_ADDRSTRLEN) return false;
  char text[INET6_ADDRSTRLEN];
  std::memcpy(text, peer.data(), peer.size());
  text[peer.size()] = '\0';
  unsigned char addr[16];
  const unsigned char* a = addr;
  if (inet_pton(AF_INET, text, addr) == 1) {
    if (net.family != 4) return false;
  } else if (inet_pton(AF_INET6, text, addr) == 1) {
    static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const bool mapped = std::memcmp(addr, kMapped, 12) == 0;
    if (mapped) a = addr + 12;  // ::ffff:a.b.c.d is an IPv4 client
    if ((net.family == 4) != mapped) return false;
  } else {
    return false;
  }
  const unsigned full = net.bits / 8, rest = net.bits % 8;
  if (std::memcmp(a, net.addr, full) != 0) return false;
  if (rest == 0) return true;
  const unsigned mask = (0xFFu << (8 - rest)) & 0xFFu;
  return (a[full] & mask) == (net.addr[full] & mask);
}

}  // namespace juggler
