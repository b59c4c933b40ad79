// libFuzzer target: the request path from raw client bytes to the head sent to
// a server, as src/session/session.cpp drives it.
//
// Input: 3 control bytes, then the bytes a client sends (possibly several
// pipelined requests). Control byte 0 picks how many extra read boundaries
// there are (0-2) and the head limit; bytes 1 and 2 place the boundaries.
//
// For each message: MessageParser(HTTP_REQUEST) fed the buffer in pieces, as
// reads arrive (spans point into one contiguous buffer, like the session's);
// describe_request(); distribute() of tests/routes/hardening.def;
// edit_request_head() into iov; then the body to the message's end. Checked
// with abort():
//   - consumed counts stay inside what was fed; a message ends where it began
//     or later, never before;
//   - every head span (first line, names, values, lines) lies inside the head,
//     the head inside the input, and head_len() <= max_head_bytes;
//   - the first line starts with the method llhttp parsed;
//   - describe_request's views point into the input (or are "/"), the route is
//     nullptr or one of route_table().routes;
//   - every iov slice lies inside the input buffer or the scratch; the scratch
//     never fills up (it would truncate the head silently);
//   - the edited head re-parses, alone, as a valid request with the same
//     method, target (origin form of an absolute-form one, whose authority is
//     then the one Host) and framing; exactly one X-Forwarded-For, Via; no
//     hop-by-hop header or client X-Forwarded-Proto/Host left;
//   - the head edited after the body was parsed equals the one edited at
//     HeadComplete (the session may build it at either time: connecting to the
//     server is asynchronous);
//   - what is forwarded (edited head + raw body bytes) re-parses as exactly one
//     message that ends where the original ended: no request can be smuggled
//     past the proxy by a framing the two parsings read differently;
//   - and the same by an independent strict RFC 9112 reader
//     (strict_framing.hpp, not llhttp): exactly one message, its head the
//     edited head, ending where llhttp said, with the same framing (chunked or
//     the same Content-Length); no error even when the bytes ran out early.
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "juggler/http.hpp"
#include "juggler/route.hpp"
#include "strict_framing.hpp"

using namespace juggler;
using juggler::fuzz::Region;

namespace {

constexpr std::uint32_t kMaxHeaders = 100;  // the default limit.header_count
constexpr std::string_view kClientIp = "203.0.113.77";

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return out;
}

struct Edited {
  std::string head;
  std::size_t scratch_len;
};

Edited edit(const MessageParser& p, const char* buf, std::size_t size, char* scratch, std::size_t scratch_cap,
            uv_buf_t* iov, std::size_t iov_cap) {
  std::size_t scratch_len = 0;
  std::memset(scratch, 0xAA, scratch_cap);
  unsigned n = edit_request_head(p, kClientIp, "http", scratch, scratch_cap, &scratch_len, iov);
  FUZZ_CHECK(n >= 1);
  FUZZ_CHECK(n <= p.header_count() + 4);  // + "GET ", "/" of an absolute-form target
  FUZZ_CHECK(n <= iov_cap);
  // A full scratch means the Writer truncated what we add: a broken head.
  FUZZ_CHECK(scratch_len < scratch_cap);
  const Region regions[] = {{buf, size}, {scratch, scratch_len}};
  return Edited{juggler::fuzz::gather(iov, n, regions, 2), scratch_len};
}

// Re-parses the edited head alone and checks it says the same thing.
void check_edited(const MessageParser& orig, const std::string& edited) {
  auto copy = std::make_unique<char[]>(edited.size() + 1);
  std::memcpy(copy.get(), edited.data(), edited.size());
  HeaderSpan spans[kMaxHeaders + 8];
  MessageParser q;
  q.init(HTTP_REQUEST, spans, kMaxHeaders + 8);
  q.max_head_bytes = edited.size() + 1;
  std::size_t used = 0;
  ParseEvent ev = q.feed(copy.get(), edited.size(), &used);
  if (ev != ParseEvent::HeadComplete) {
    std::fprintf(stderr, "edited head does not re-parse (event %d, %d %s):\n%.*s\n", static_cast<int>(ev),
                 q.error_status(), q.error_reason() ? q.error_reason() : "", static_cast<int>(edited.size()),
                 edited.data());
  }
  FUZZ_CHECK(ev == ParseEvent::HeadComplete);
  FUZZ_CHECK(used == edited.size());
  FUZZ_CHECK(q.method() == orig.method());
  // An absolute-form target goes in origin form, its authority as the one Host.
  RequestTarget t;
  FUZZ_CHECK(map_target(orig.url(), {}, t) == nullptr);
  const std::string origin = t.absolute && !t.origin.starts_with('/') ? "/" + std::string(t.origin) : std::string(t.origin);
  FUZZ_CHECK(q.url() == origin);
  FUZZ_CHECK(q.http_major() == orig.http_major() && q.http_minor() == orig.http_minor());
  FUZZ_CHECK(q.chunked() == orig.chunked());
  FUZZ_CHECK(q.has_content_length() == orig.has_content_length());
  FUZZ_CHECK(q.content_length() == orig.content_length());
  FUZZ_CHECK(q.has_body() == orig.has_body());
  unsigned xff = 0, via = 0, xfp = 0, xfh = 0, hosts = 0, orig_hosts = 0;
  for (std::uint32_t i = 0; i < q.header_count(); ++i) {
    const HeaderSpan& h = q.headers()[i];
    std::string n = lower(q.header_name(h));
    if (h.kind == HeaderKind::XForwardedFor) ++xff;
    if (h.kind == HeaderKind::XForwardedProto) ++xfp;
    if (h.kind == HeaderKind::XForwardedHost) ++xfh;
    if (h.kind == HeaderKind::Host) ++hosts;
    if (n == "via") ++via;
    // Hop-by-hop headers are the proxy's, never forwarded (HTTP/1.0 gets our
    // own Connection: keep-alive, the last line).
    if (h.kind == HeaderKind::HopByHop) FUZZ_CHECK(false);
    if (h.kind == HeaderKind::Connection)
      FUZZ_CHECK(orig.http_minor() == 0 && q.header_value(h) == "keep-alive" && i + 1 == q.header_count());
  }
  for (std::uint32_t i = 0; i < orig.header_count(); ++i)
    if (orig.headers()[i].kind == HeaderKind::Host) ++orig_hosts;
  FUZZ_CHECK(xff == 1);
  FUZZ_CHECK(xfp == 1);
  FUZZ_CHECK(via >= 1);
  FUZZ_CHECK(hosts == (t.absolute ? 1 : orig_hosts));
  for (std::uint32_t i = 0; i < q.header_count() && t.absolute; ++i)
    if (q.headers()[i].kind == HeaderKind::Host) FUZZ_CHECK(q.header_value(q.headers()[i]) == t.authority);
  FUZZ_CHECK(xfh <= 1);  // ours, from Host; the client's are dropped
  // The last X-Forwarded-For entry is the client we saw.
  for (std::uint32_t i = 0; i < q.header_count(); ++i) {
    const HeaderSpan& h = q.headers()[i];
    if (h.kind != HeaderKind::XForwardedFor) continue;
    std::string_view v = q.header_value(h);
    FUZZ_CHECK(v.size() >= kClientIp.size() && v.substr(v.size() - kClientIp.size()) == kClientIp);
  }
}

// What the server receives for one message: re-parsed, it must be exactly one
// message ending at the end (or, when the client's bytes ran out, no end yet).
void check_forwarded(const std::string& head, const char* body, std::size_t body_len, bool complete) {
  std::string all = head;
  all.append(body, body_len);
  auto copy = std::make_unique<char[]>(all.size() + 1);
  std::memcpy(copy.get(), all.data(), all.size());
  HeaderSpan spans[kMaxHeaders + 8];
  MessageParser q;
  q.init(HTTP_REQUEST, spans, kMaxHeaders + 8);
  q.max_head_bytes = head.size() + 1;
  std::size_t used = 0;
  ParseEvent ev = q.feed(copy.get(), all.size(), &used);
  FUZZ_CHECK(ev == ParseEvent::HeadComplete && used == head.size());
  std::size_t pos = used;
  ev = q.feed(copy.get() + pos, all.size() - pos, &used);
  FUZZ_CHECK(ev != ParseEvent::Error);
  pos += used;
  if (complete) {
    FUZZ_CHECK(ev == ParseEvent::MessageComplete);
    FUZZ_CHECK(pos == all.size());
  } else {
    FUZZ_CHECK(ev == ParseEvent::NeedMore);
  }

  // The same bytes through an independent strict reader (strict_framing.hpp,
  // no llhttp): one message, its head exactly the edited head, ending exactly
  // where llhttp's did; or, when the client's bytes ran out, not ended yet.
  const strict::Framing sf = strict::frame_request(all);
  if (sf.status == strict::Framing::Error || (complete && sf.status != strict::Framing::Complete)) {
    std::fprintf(stderr, "strict reader: %s at %zu of %zu (llhttp: %s):\n%s\n",
                 sf.error ? sf.error : (sf.status == strict::Framing::Incomplete ? "incomplete" : "complete"),
                 sf.error_at, all.size(), complete ? "complete" : "incomplete", all.c_str());
  }
  FUZZ_CHECK(sf.status != strict::Framing::Error);
  if (sf.status == strict::Framing::Complete || sf.head_len) FUZZ_CHECK(sf.head_len == head.size());
  if (complete) {
    FUZZ_CHECK(sf.status == strict::Framing::Complete);
    FUZZ_CHECK(sf.end == all.size());
  } else {
    FUZZ_CHECK(sf.status == strict::Framing::Incomplete);
  }
  FUZZ_CHECK(sf.chunked == q.chunked());
  FUZZ_CHECK(sf.has_content_length == q.has_content_length());
  if (sf.has_content_length) FUZZ_CHECK(sf.content_length == q.content_length());

  // The body once more with decoded spans collected (what filters and HTTP/2
  // consume): every span inside the bytes fed, the message ending where it
  // did, and as many decoded bytes as the strict reader counted.
  MessageParser d;
  d.init(HTTP_REQUEST, spans, kMaxHeaders + 8);
  d.max_head_bytes = head.size() + 1;
  FUZZ_CHECK(d.feed(copy.get(), all.size(), &used) == ParseEvent::HeadComplete);
  d.collect_body(true);
  std::size_t at = used;
  std::uint64_t decoded = 0;
  for (;;) {
    ev = d.feed(copy.get() + at, all.size() - at, &used);
    for (std::uint32_t i = 0; i < d.body_span_count(); ++i) {
      const BodySpan& b = d.body_spans()[i];
      FUZZ_CHECK(b.data >= copy.get() + at && b.data + b.len <= copy.get() + at + used);
      decoded += b.len;
    }
    at += used;
    if (ev != ParseEvent::BodyFull) break;
  }
  FUZZ_CHECK(ev == (complete ? ParseEvent::MessageComplete : ParseEvent::NeedMore));
  if (complete) {
    FUZZ_CHECK(at == all.size());
    FUZZ_CHECK(decoded == sf.body_bytes);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const std::uint8_t ctl = data[0];
  const auto splits = juggler::fuzz::make_splits(ctl, data[1], data[2], size - 3);
  data += 3;
  size -= 3;
  // An exact-size heap copy: ASan sees any read past the client's bytes.
  auto owned = std::make_unique<char[]>(size ? size : 1);
  if (size) std::memcpy(owned.get(), data, size);
  const char* buf = owned.get();

  const std::uint64_t max_head = (ctl & 0x80) ? 256 : 16384;
  const std::size_t scratch_cap = max_head + 512;  // as the session sizes it
  auto scratch = std::make_unique<char[]>(scratch_cap);
  auto scratch2 = std::make_unique<char[]>(scratch_cap);
  const std::size_t iov_cap = 2 * kMaxHeaders + 8;
  auto iov = std::make_unique<uv_buf_t[]>(iov_cap);
  auto spans = std::make_unique<HeaderSpan[]>(kMaxHeaders);
  auto route_headers = std::make_unique<Header[]>(kMaxHeaders);
  const RouteTable& table = route_table();

  std::size_t start = 0;  // where the current message begins (the session's parse_pos)
  for (int message = 0; message < 16 && start < size; ++message) {
    MessageParser p;
    p.init(HTTP_REQUEST, spans.get(), kMaxHeaders);
    p.max_head_bytes = max_head;

    // Read boundaries: the split points after `start`, then the end.
    const juggler::fuzz::Reads reads = juggler::fuzz::make_reads(splits, start, size);
    const std::size_t* ends = reads.ends;
    const unsigned nends = reads.count;

    // ---- the head
    std::size_t pos = start;
    unsigned e = 0;
    std::size_t used = 0;
    ParseEvent ev = juggler::fuzz::feed_head(p, buf, reads, pos, e, used);
    if (ev == ParseEvent::NeedMore) return 0;  // the client has not finished its head
    if (ev == ParseEvent::Error) {
      const int st = p.error_status();
      FUZZ_CHECK(st == 400 || st == 413 || st == 417 || st == 431 || st == 501);
      FUZZ_CHECK(p.error_reason() != nullptr);
      return 0;  // the session answers and closes
    }
    FUZZ_CHECK(ev == ParseEvent::HeadComplete);
    pos += used;
    const std::size_t head_end = pos;
    juggler::fuzz::check_head(p, buf, size);
    FUZZ_CHECK(p.head_begin() >= buf + start);
    FUZZ_CHECK(p.head_begin() + p.head_len() == buf + head_end);
    // The first line is the request line llhttp parsed: it starts with the method.
    {
      const char* mname = llhttp_method_name(static_cast<llhttp_method_t>(p.method()));
      std::string_view fl = p.first_line();
      if (fl.substr(0, std::strlen(mname)) != mname || fl.size() <= std::strlen(mname) ||
          fl[std::strlen(mname)] != ' ') {
        std::fprintf(stderr, "first line '%.*s' does not start with method %s\n", static_cast<int>(fl.size()),
                     fl.data(), mname);
        FUZZ_CHECK(false);
      }
      FUZZ_CHECK(juggler::fuzz::within(p.url(), p.head_begin(), p.head_len()));
    }
    // The proxy refuses these before routing; the parser must never let them by.
    FUZZ_CHECK(p.method() != HTTP_CONNECT);
    if (p.http_major() == 1 && p.http_minor() >= 1) {
      bool host = false;
      for (std::uint32_t i = 0; i < p.header_count(); ++i) host |= p.headers()[i].kind == HeaderKind::Host;
      FUZZ_CHECK(host);
    }

    // ---- routing (on_request_head)
    RequestHead head;
    describe_request(p, route_headers.get(), head);
    FUZZ_CHECK(head.target == p.url());
    FUZZ_CHECK(!head.path.empty());
    FUZZ_CHECK(head.path == "/" || juggler::fuzz::within(head.path, buf, size));
    FUZZ_CHECK(juggler::fuzz::within(head.query, buf, size));
    FUZZ_CHECK(juggler::fuzz::within(head.host, buf, size));
    FUZZ_CHECK(head.headers.size() == p.header_count());
    FUZZ_CHECK(head.path.find('?') == std::string_view::npos);
    const RouteDef* route = table.distribute(head);
    if (route) FUZZ_CHECK(route >= table.routes.data() && route < table.routes.data() + table.routes.size());
    (void)head.header("x-pool");

    // ---- the head for the server, as built at HeadComplete
    const Edited early = edit(p, buf, size, scratch.get(), scratch_cap, iov.get(), iov_cap);
    check_edited(p, early.head);

    // ---- the body (or, without one, the message's end), as reads arrive
    bool complete = false;
    if (!p.has_body()) {
      ev = p.feed(buf + pos, 0, &used);
      FUZZ_CHECK(used == 0);
      FUZZ_CHECK(ev == ParseEvent::MessageComplete);
      complete = true;
    } else {
      while (e < nends) {
        if (pos >= ends[e]) {
          ++e;
          continue;
        }
        const std::size_t avail = ends[e] - pos;
        ev = p.feed(buf + pos, avail, &used);
        FUZZ_CHECK(used <= avail);
        if (ev == ParseEvent::Error) {
          // The session answers 400 and closes: nothing after this is forwarded.
          FUZZ_CHECK(p.error_status() >= 400);
          return 0;
        }
        FUZZ_CHECK(ev == ParseEvent::NeedMore || ev == ParseEvent::MessageComplete);
        pos += used;
        if (ev == ParseEvent::MessageComplete) {
          complete = true;
          break;
        }
        ++e;
      }
    }
    FUZZ_CHECK(pos >= head_end && pos <= size);
    if (p.has_content_length() && !p.chunked() && complete) FUZZ_CHECK(pos - head_end == p.content_length());

    // ---- the head for the server, as built after the body was parsed (a
    // slow connect): the same bytes.
    // (regressions/request/trailer_* once cut trailer fields into this head.)
    const Edited late = edit(p, buf, size, scratch2.get(), scratch_cap, iov.get(), iov_cap);
    if (late.head != early.head) {
      std::fprintf(stderr, "edited head changed while the body was parsed:\n--- at head\n%s\n--- after body\n%s\n",
                   early.head.c_str(), late.head.c_str());
      FUZZ_CHECK(false);
    }

    check_forwarded(early.head, buf + head_end, pos - head_end, complete);
    if (!complete) return 0;
    if (p.has_content_length() && p.content_length() > 0) FUZZ_CHECK(pos > head_end);
    FUZZ_CHECK(pos > start);  // progress: a message is never empty
    if (!p.keep_alive()) return 0;  // the connection closes after this answer
    start = pos;
  }
  return 0;
}
