// llhttp wrapper: records the head as spans into the caller's buffer and
// refuses the framings that enable request smuggling.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "juggler/http.hpp"

namespace juggler {

namespace {

MessageParser& self(llhttp_t* p) { return *static_cast<MessageParser*>(p->data); }

// RFC 9110 token characters, as a table: names are checked byte by byte.
struct TcharTable {
  bool ok[256] = {};
  constexpr TcharTable() {
    for (int c = '0'; c <= '9'; ++c) ok[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) ok[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) ok[c] = true;
    for (char c : std::string_view("!#$%&'*+-.^_`|~")) ok[static_cast<unsigned char>(c)] = true;
  }
};
constexpr TcharTable kTchar;

bool is_tchar(char ch) noexcept { return kTchar.ok[static_cast<unsigned char>(ch)]; }

// A head line [b, e) must end in CRLF and hold no other CR: llhttp 8 takes
// CR followed by any byte as a line end, which a server may read otherwise.
bool clean_line(const char* b, const char* e) noexcept {
  if (e - b < 2 || e[-1] != '\n' || e[-2] != '\r') return false;
  return std::memchr(b, '\r', static_cast<std::size_t>(e - b)) == e - 2;
}

HeaderKind classify(std::string_view n) noexcept {
  switch (n.size()) {
    case 2:
      if (iequals(n, "te")) return HeaderKind::HopByHop;
      break;
    case 4:
      if (iequals(n, "host")) return HeaderKind::Host;
      break;
    case 6:
      if (iequals(n, "expect")) return HeaderKind::Expect;
      break;
    case 7:
      if (iequals(n, "trailer")) return HeaderKind::HopByHop;
      if (iequals(n, "upgrade")) return HeaderKind::HopByHop;
      break;
    case 10:
      if (iequals(n, "connection")) return HeaderKind::Connection;
      if (iequals(n, "keep-alive")) return HeaderKind::HopByHop;
      break;
    case 14:
      if (iequals(n, "content-length")) return HeaderKind::ContentLength;
      break;
    case 15:
      if (iequals(n, "x-forwarded-for")) return HeaderKind::XForwardedFor;
      break;
    case 16:
      if (iequals(n, "proxy-connection")) return HeaderKind::HopByHop;
      if (iequals(n, "x-forwarded-host")) return HeaderKind::XForwardedHost;
      break;
    case 17:
      if (iequals(n, "transfer-encoding")) return HeaderKind::TransferEncoding;
      if (iequals(n, "x-forwarded-proto")) return HeaderKind::XForwardedProto;
      break;
    default:
      break;
  }
  return HeaderKind::Other;
}

}  // namespace

const llhttp_settings_t MessageParser::kSettings = [] {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_method = &MessageParser::on_method;
  s.on_url = &MessageParser::on_url;
  s.on_status = &MessageParser::on_status;
  s.on_header_field = &MessageParser::on_header_field;
  s.on_header_field_complete = &MessageParser::on_header_field_complete;
  s.on_header_value = &MessageParser::on_header_value;
  s.on_header_value_complete = &MessageParser::on_header_value_complete;
  s.on_headers_complete = &MessageParser::on_headers_complete;
  s.on_message_complete = &MessageParser::on_message_complete;
  return s;
}();

const llhttp_settings_t MessageParser::kSettingsBody = [] {
  llhttp_settings_t s = kSettings;
  s.on_body = &MessageParser::on_body;
  return s;
}();

void MessageParser::collect_body(bool on) noexcept {
  parser_.settings = const_cast<llhttp_settings_t*>(on ? &kSettingsBody : &kSettings);
}

int MessageParser::on_body(llhttp_t* p, const char* at, std::size_t len) {
  // llhttp ends the body span at the end of every execute, also of an empty
  // one (a feed of no bytes mid-body): nothing to record.
  if (len == 0) return 0;
  auto* self = static_cast<MessageParser*>(p->data);
  // llhttp hands over at most what one feed() was given, so a span fits 32 bits.
  BodySpan& last = self->spans_[self->span_count_ ? self->span_count_ - 1 : 0];
  if (self->span_count_ && last.data + last.len == at) {
    last.len += static_cast<std::uint32_t>(len);
  } else {
    self->spans_[self->span_count_++] = {at, static_cast<std::uint32_t>(len)};
  }
  if (self->span_count_ < kMaxBodySpans) return 0;
  self->body_full_ = true;
  return HPE_PAUSED;
}

void MessageParser::init(llhttp_type_t type, HeaderSpan* headers, std::uint32_t max_headers) noexcept {
  llhttp_init(&parser_, type, &kSettings);
  parser_.data = this;
  headers_ = headers;
  max_headers_ = max_headers;
  reset();
}

void MessageParser::reset() noexcept {
  count_ = 0;
  span_count_ = 0;
  body_full_ = false;
  head_begin_ = head_end_ = url_ = nullptr;
  url_len_ = 0;
  field_end_ = value_begin_ = value_end_ = nullptr;
  content_length_ = 0;
  host_count_ = 0;
  in_field_ = no_body_ = has_body_ = until_close_ = expect_continue_ = false;
  connection_close_ = dropped_ = head_done_ = te_chunked_ = method_seen_ = false;
  chunked_ = has_content_length_ = keep_alive_ = false;
  chunk_ = ChunkState::Size;
  chunk_left_ = 0;
  chunk_digits_ = 0;
  chunk_line_ = 0;
  chunked_total_ = 0;
  error_status_ = 0;
  error_reason_ = nullptr;
  trailer_buf_ = nullptr;
  trailer_cap_ = trailer_len_ = trailer_start_ = 0;
  trailer_in_field_ = trailer_skip_ = false;
}

int MessageParser::fail(int status, const char* reason) noexcept {
  error_status_ = status;
  error_reason_ = reason;
  llhttp_set_error_reason(&parser_, reason);
  return HPE_USER;
}

int MessageParser::on_method(llhttp_t* p, const char* at, std::size_t) {
  MessageParser& m = self(p);
  // llhttp calls this again for each piece of a method split across reads:
  // only the first piece starts the head (which skips leading empty lines).
  if (!m.method_seen_) {
    m.head_begin_ = at;
    m.method_seen_ = true;
  }
  return 0;
}

int MessageParser::on_url(llhttp_t* p, const char* at, std::size_t len) {
  MessageParser& m = self(p);
  if (!m.url_) m.url_ = at;
  m.url_len_ = static_cast<std::uint32_t>(at + len - m.url_);
  return 0;
}

int MessageParser::on_status(llhttp_t*, const char*, std::size_t) { return 0; }

// collect_trailers: a piece of the current trailer field's name or value.
void MessageParser::trailer_append(const char* p, std::size_t n) noexcept {
  if (trailer_skip_) return;
  if (n > trailer_cap_ - trailer_len_) {
    trailer_skip_ = true;
    trailer_len_ = trailer_start_;
    return;
  }
  std::memcpy(trailer_buf_ + trailer_len_, p, n);
  trailer_len_ += static_cast<std::uint32_t>(n);
}

// A folded value comes in pieces, joined (RFC 9112 5.2: a proxy may replace a
// response's obs-fold by SP). A name not a token, or a CR or LF: left out.
void MessageParser::trailer_field_end() noexcept {
  for (std::uint32_t i = trailer_start_; i < trailer_len_ && !trailer_skip_; ++i)
    if (trailer_buf_[i] == '\r' || trailer_buf_[i] == '\n') trailer_skip_ = true;
  if (trailer_skip_) trailer_len_ = trailer_start_;
  while (!trailer_skip_ && trailer_len_ > trailer_start_ && is_ows(trailer_buf_[trailer_len_ - 1])) --trailer_len_;
  trailer_append("", 1);
  trailer_in_field_ = trailer_skip_ = false;
}

int MessageParser::on_header_field(llhttp_t* p, const char* at, std::size_t len) {
  MessageParser& m = self(p);
  if (m.head_done_) {  // chunked trailers: relayed as body bytes, never head fields
    if (!m.trailer_buf_) return 0;
    if (!m.trailer_in_field_) {
      m.trailer_in_field_ = true;
      m.trailer_start_ = m.trailer_len_;
    }
    m.trailer_append(at, len);
    return 0;
  }
  if (!m.in_field_) {
    if (m.count_ >= m.max_headers_) return m.fail(431, "too many header fields");
    HeaderSpan& h = m.headers_[m.count_];
    h = HeaderSpan{at, 0, 0, 0, HeaderKind::Other, false};
    m.in_field_ = true;
    m.value_begin_ = m.value_end_ = nullptr;
    m.value_pieces_ = false;
  }
  m.field_end_ = at + len;
  return 0;
}

int MessageParser::on_header_field_complete(llhttp_t* p) {
  MessageParser& m = self(p);
  if (m.head_done_) {
    if (!m.trailer_buf_) return 0;
    for (std::uint32_t i = m.trailer_start_; i < m.trailer_len_; ++i)
      if (!is_tchar(m.trailer_buf_[i])) m.trailer_skip_ = true;
    if (m.trailer_len_ == m.trailer_start_) m.trailer_skip_ = true;
    m.trailer_append("", 1);
    return 0;
  }
  HeaderSpan& h = m.headers_[m.count_];
  h.name_len = static_cast<std::uint32_t>(m.field_end_ - h.line);
  // llhttp 8 accepts "Name : value" and "Content Length"; whitespace in or
  // after a name is a smuggling vector (RFC 9112 5.1: MUST reject).
  if (h.name_len == 0) return m.fail(400, "empty header name");
  for (std::uint32_t i = 0; i < h.name_len; ++i)
    if (!is_tchar(h.line[i])) return m.fail(400, "invalid character in a header name");
  h.kind = classify({h.line, h.name_len});
  return 0;
}

int MessageParser::on_header_value(llhttp_t* p, const char* at, std::size_t len) {
  MessageParser& m = self(p);
  if (m.head_done_) {
    if (m.trailer_buf_) m.trailer_append(at, len);
    return 0;
  }
  if (!m.value_begin_) m.value_begin_ = at;
  else m.value_pieces_ = true;
  m.value_end_ = at + len;
  return 0;
}

int MessageParser::on_header_value_complete(llhttp_t* p) {
  MessageParser& m = self(p);
  if (m.head_done_) {
    if (m.trailer_buf_) m.trailer_field_end();
    return 0;
  }
  HeaderSpan& h = m.headers_[m.count_];
  if (m.value_begin_) {
    h.value_off = static_cast<std::uint32_t>(m.value_begin_ - h.line);
    h.value_len = static_cast<std::uint32_t>(m.value_end_ - m.value_begin_);
  } else {
    h.value_off = h.name_len + 1;
    h.value_len = 0;
  }
  std::string_view v{h.line + h.value_off, h.value_len};
  // obs-fold (a value continued on the next line) is refused. llhttp hands a
  // folded value over in pieces; a value in one piece has no CR or LF.
  if (m.value_pieces_) {
    for (char c : v)
      if (c == '\r' || c == '\n') return m.fail(400, "folded or broken header line");
    m.value_pieces_ = false;
  }
  while (!v.empty() && is_ows(v.back())) v.remove_suffix(1);
  h.value_len = static_cast<std::uint32_t>(v.size());
  switch (h.kind) {
    case HeaderKind::Host:
      if (++m.host_count_ > 1) return m.fail(400, "more than one Host header");
      for (char c : v)
        if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return m.fail(400, "invalid Host");
      break;
    case HeaderKind::Expect:
      if (iequals(v, "100-continue")) m.expect_continue_ = true;
      else return m.fail(417, "unsupported expectation");
      break;  // forwarded: the server's 100 Continue is relayed to the client
    case HeaderKind::TransferEncoding:
      if (v.empty()) return m.fail(400, "empty Transfer-Encoding");
      for_each_token(v, [&](std::string_view t) {
        if (iequals(t, "chunked")) m.te_chunked_ = true;
      });
      break;
    case HeaderKind::Connection:
      for_each_token(v, [&](std::string_view t) {
        if (iequals(t, "close")) m.connection_close_ = true;
      });
      h.drop = true;
      m.dropped_ = true;
      break;
    case HeaderKind::HopByHop:
      h.drop = true;
      m.dropped_ = true;
      break;
    default:
      break;
  }
  ++m.count_;
  m.in_field_ = false;
  return 0;
}

int MessageParser::check_head() noexcept {
  const bool request = parser_.type == HTTP_REQUEST;
  if (request) {
    if (parser_.http_major != 1 || parser_.http_minor > 1) return fail(400, "unsupported HTTP version");
    if (parser_.http_major == 1 && parser_.http_minor >= 1 && host_count_ == 0)
      return fail(400, "HTTP/1.1 request without Host");
    if ((parser_.flags & F_TRANSFER_ENCODING) && parser_.http_minor == 0 && parser_.http_major == 1)
      return fail(400, "Transfer-Encoding on HTTP/1.0");
    if (parser_.method == HTTP_CONNECT) return fail(501, "CONNECT is not supported");
    // llhttp 8 takes HTAB and FF inside the target; a server that splits the
    // request line on any whitespace (RFC 9112 3 allows it) reads another
    // target than the one we routed. No CTL, SP or DEL in a request-target.
    for (std::uint32_t i = 0; i < url_len_; ++i) {
      const auto c = static_cast<unsigned char>(url_[i]);
      if (c <= ' ' || c == 0x7f) return fail(400, "invalid character in the request target");
    }
    // Absolute-form: only http(s), no userinfo, a host[:port] (RFC 9112 3.2.2);
    // origin-form ('/') costs this one test.
    if (url_len_ && url_[0] != '/') {
      RequestTarget t;
      if (const char* why = map_target({url_, url_len_}, {}, t)) return fail(400, why);
    }
    // llhttp checks this only after the head (where we pause): refuse it here,
    // before the request is routed. RFC 9112 6.3: chunked must be the final
    // coding of a request, else 400; a coding we do not know at all is 501.
    if ((parser_.flags & F_TRANSFER_ENCODING) && !(parser_.flags & F_CHUNKED))
      return te_chunked_ ? fail(400, "chunked is not the final transfer coding")
                         : fail(501, "unknown transfer coding");
  }
  if (!request && (parser_.status_code < 100 || parser_.status_code > 599)) return fail(502, "bad status code");
  // Headers named by Connection are hop-by-hop too.
  for (std::uint32_t i = 0; i < count_; ++i) {
    if (headers_[i].kind != HeaderKind::Connection) continue;
    for_each_token(header_value(headers_[i]), [&](std::string_view t) {
      if (iequals(t, "close") || iequals(t, "keep-alive")) return;
      for (std::uint32_t j = 0; j < count_; ++j) {
        std::string_view n = header_name(headers_[j]);
        if (n.size() != t.size()) continue;
        bool eq = true;
        for (std::size_t k = 0; k < n.size() && eq; ++k)
          eq = ((n[k] | 0x20) == (t[k] | 0x20));
        // Never let a client strip the framing headers this way.
        if (eq && headers_[j].kind != HeaderKind::ContentLength &&
            headers_[j].kind != HeaderKind::TransferEncoding && headers_[j].kind != HeaderKind::Host)
          headers_[j].drop = true;
      }
    });
  }
  return 0;
}

int MessageParser::on_headers_complete(llhttp_t* p) {
  MessageParser& m = self(p);
  if (int rc = m.check_head(); rc != 0) return rc;
  m.content_length_ = p->content_length;
  m.chunked_ = (p->flags & F_CHUNKED) != 0;
  m.has_content_length_ = (p->flags & F_CONTENT_LENGTH) != 0;
  if (p->type == HTTP_RESPONSE) {
    int s = p->status_code;
    if (m.no_body_ || s / 100 == 1 || s == 204 || s == 304) p->flags |= F_SKIPBODY;
  }
  const bool skip = (p->flags & F_SKIPBODY) != 0;
  m.until_close_ = !skip && !(p->flags & F_CHUNKED) && !(p->flags & F_CONTENT_LENGTH) &&
                   llhttp_message_needs_eof(p);
  m.keep_alive_ = llhttp_should_keep_alive(p) != 0;
  m.has_body_ = !skip && ((p->flags & F_CHUNKED) || m.content_length_ > 0 || m.until_close_);
  m.head_done_ = true;
  return HPE_PAUSED;
}

int MessageParser::on_message_complete(llhttp_t*) { return HPE_PAUSED; }

std::string_view MessageParser::first_line() const noexcept {
  const char* end = count_ ? headers_[0].line : head_end_;
  if (!count_) {
    if (end > head_begin_ && end[-1] == '\n') --end;
    if (end > head_begin_ && end[-1] == '\r') --end;
  }
  return {head_begin_, static_cast<std::size_t>(end - head_begin_)};
}

std::string_view MessageParser::header_line(std::uint32_t i) const noexcept {
  const char* b = headers_[i].line;
  const char* e;
  if (i + 1 < count_) {
    e = headers_[i + 1].line;
  } else {
    e = head_end_;
    if (e > b && e[-1] == '\n') --e;  // the empty line that ends the head
    if (e > b && e[-1] == '\r') --e;
  }
  return {b, static_cast<std::size_t>(e - b)};
}

bool MessageParser::lines_clean() const noexcept {
  const char* final_line = head_end_ - 2;
  if (head_end_ - head_begin_ < 2 || final_line[0] != '\r' || final_line[1] != '\n') return false;
  const char* b = head_begin_;
  for (std::uint32_t i = 0; i <= count_; ++i) {
    const char* e = i < count_ ? headers_[i].line : final_line;
    if (e > b && !clean_line(b, e)) return false;
    b = e;
  }
  return true;
}

// One byte of a chunk-size line (size, extensions, CRLF). False: malformed.
bool MessageParser::chunk_size_byte(char c) noexcept {
  switch (chunk_) {
    case ChunkState::Size: {
      const int d = (c >= '0' && c <= '9')   ? c - '0'
                    : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                    : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                             : -1;
      const bool sized = chunk_digits_ > 0;  // at least one digit before anything else
      if (d >= 0) {
        if (++chunk_digits_ > 16) return false;
        chunk_left_ = (chunk_left_ << 4) | static_cast<std::uint64_t>(d);
      } else if (sized && (c == ';' || c == ' ' || c == '\t')) {
        chunk_ = ChunkState::Ext;
        chunk_line_ = 0;
      } else if (sized && c == '\r') {
        chunk_ = ChunkState::SizeLf;
      } else {
        return false;
      }
      return true;
    }
    case ChunkState::Ext:
      if (c == '\r') chunk_ = ChunkState::SizeLf;
      else if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f || ++chunk_line_ > 4096) return false;
      return true;
    default:  // SizeLf
      if (c != '\n') return false;
      if (chunk_left_ > UINT64_MAX - chunked_total_) return false;
      chunked_total_ += chunk_left_;
      chunk_ = chunk_left_ ? ChunkState::Data : ChunkState::TrailerStart;
      return true;
  }
}

// One byte of the trailer section and the final CRLF. False: malformed.
bool MessageParser::chunk_trailer_byte(char c) noexcept {
  switch (chunk_) {
    case ChunkState::TrailerStart:
      chunk_line_ = 0;
      if (c == '\r') chunk_ = ChunkState::FinalLf;
      else if (is_tchar(c)) chunk_ = ChunkState::TrailerName;
      else return false;
      return true;
    case ChunkState::TrailerName:
      if (c == ':') chunk_ = ChunkState::Trailer;
      else if (!is_tchar(c) || ++chunk_line_ > 8192) return false;
      return true;
    case ChunkState::Trailer:
      if (c == '\r') chunk_ = ChunkState::TrailerLf;
      else if (c == '\n' || (static_cast<unsigned char>(c) < 0x20 && c != '\t') || ++chunk_line_ > 8192) return false;
      return true;
    case ChunkState::TrailerLf:
      if (c != '\n') return false;
      chunk_ = ChunkState::TrailerStart;
      return true;
    default:  // FinalLf
      if (c != '\n') return false;
      chunk_ = ChunkState::Done;
      return true;
  }
}

// A strict chunked-body check run beside llhttp (which, in version 8, takes
// any two bytes after chunk data for CRLF): the body we relay byte for byte
// must frame the same way for every server behind us.
bool MessageParser::check_chunks(const char* p, std::size_t n) noexcept {
  if (!validating_chunks()) return true;
  const char* end = p + n;
  while (p < end) {
    const char c = *p;
    switch (chunk_) {
      case ChunkState::Size:
      case ChunkState::Ext:
      case ChunkState::SizeLf:
        if (!chunk_size_byte(c)) return false;
        ++p;
        break;
      case ChunkState::Data: {
        const std::uint64_t take = std::min<std::uint64_t>(chunk_left_, static_cast<std::uint64_t>(end - p));
        p += take;
        chunk_left_ -= take;
        if (chunk_left_ == 0) chunk_ = ChunkState::DataCr;
        break;
      }
      case ChunkState::DataCr:
        if (c != '\r') return false;
        chunk_ = ChunkState::DataLf;
        ++p;
        break;
      case ChunkState::DataLf:
        if (c != '\n') return false;
        chunk_ = ChunkState::Size;
        chunk_digits_ = 0;
        ++p;
        break;
      case ChunkState::Done:
        return false;  // nothing may follow within this message
      default:  // the trailer section
        if (!chunk_trailer_byte(c)) return false;
        ++p;
        break;
    }
  }
  return true;
}

ParseEvent MessageParser::feed(const char* data, std::size_t len, std::size_t* consumed) noexcept {
  if (!head_begin_) head_begin_ = data;
  span_count_ = 0;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (err == HPE_OK) {
    *consumed = len;
    if (head_end_ && !check_chunks(data, len)) {
      error_status_ = 400;
      error_reason_ = "malformed chunked body";
      return ParseEvent::Error;
    }
    if (!head_done_ && static_cast<std::uint64_t>(data + len - head_begin_) > max_head_bytes) {
      error_status_ = 431;
      error_reason_ = "request head too large";
      return ParseEvent::Error;
    }
    return ParseEvent::NeedMore;
  }
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    const char* pos = llhttp_get_error_pos(&parser_);
    *consumed = static_cast<std::size_t>(pos - data);
    if (err == HPE_PAUSED) llhttp_resume(&parser_);
    else llhttp_resume_after_upgrade(&parser_);
    if (body_full_) {
      body_full_ = false;
      if (!check_chunks(data, *consumed)) {
        error_status_ = 400;
        error_reason_ = "malformed chunked body";
        return ParseEvent::Error;
      }
      return ParseEvent::BodyFull;
    }
    if (head_done_ && !head_end_) {
      head_end_ = pos;
      if (head_len() > max_head_bytes) {
        error_status_ = 431;
        error_reason_ = "request head too large";
        return ParseEvent::Error;
      }
      if (!lines_clean()) {
        error_status_ = 400;
        error_reason_ = "bare CR or LF in the head";
        return ParseEvent::Error;
      }
      return ParseEvent::HeadComplete;
    }
    if (!check_chunks(data, *consumed) || (validating_chunks() && chunk_ != ChunkState::Done)) {
      error_status_ = 400;
      error_reason_ = "malformed chunked body";
      return ParseEvent::Error;
    }
    return ParseEvent::MessageComplete;
  }
  if (error_status_ == 0) {
    error_status_ = 400;
    error_reason_ = llhttp_get_error_reason(&parser_);
    if (!error_reason_) error_reason_ = llhttp_errno_name(err);
  }
  *consumed = static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - data);
  return ParseEvent::Error;
}

ParseEvent MessageParser::finish() noexcept {
  llhttp_errno_t err = llhttp_finish(&parser_);
  if (err == HPE_OK || err == HPE_PAUSED) return ParseEvent::MessageComplete;
  error_status_ = 502;
  error_reason_ = "message cut short";
  return ParseEvent::Error;
}

}  // namespace juggler
