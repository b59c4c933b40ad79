// The request head an HTTP/2 stream gives its exchange: the HEADERS fields
// written as HTTP/1.1 text that the exchange's parser reads like any head.
// The pseudo-headers become the request line and Host through map_target,
// the mapping of HTTP/1's targets (`:path` in origin form or "*",
// `:authority` as Host); the fields follow as lines, cookies joined into one
// (RFC 9113 8.2.3). A Host that disagrees with :authority, a missing :method
// or :path (CONNECT: not relayed) or a :path in no form served is a
// malformed request; nghttp2 already refused connection-specific fields and
// TE other than trailers. Apart from Worker and exchange so that the fuzz
// target (tests/fuzz/fuzz_h2.cpp) runs it as stream.cpp does.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>

namespace juggler {

struct H2Head {
  char* data = nullptr;  // the room, `cap` bytes (a pooled buffer's)
  std::uint32_t cap = 0;
  std::uint32_t len = 0;
  nghttp2_rcbuf* method = nullptr;  // pseudo-headers, held until the request line is written
  nghttp2_rcbuf* path = nullptr;
  nghttp2_rcbuf* authority = nullptr;  // held to the end of the head (Host must agree)
  std::uint32_t cookie_end = 0;        // end of the Cookie line's value (0: none yet)
  bool line_written = false;
  bool too_large = false;   // the head passed `cap`: 431 (fields after it are not written)
  bool has_length = false;  // content-length came: the body goes as it is (else chunked)
  bool te_trailers = false; // `te: trailers` (nghttp2 refuses any other TE): the answer's trailers are sent
};

// A field of the request's HEADERS, in order. False: the request is
// malformed (a PROTOCOL_ERROR reset).
bool h2_head_field(H2Head& h, nghttp2_rcbuf* name, nghttp2_rcbuf* value) noexcept;
// HEADERS ended: the head's last lines (Transfer-Encoding: chunked for a body
// without content-length). False: malformed.
bool h2_head_end(H2Head& h, bool end_stream) noexcept;
// Releases the pseudo-headers still held.
void h2_head_drop(H2Head& h) noexcept;

}  // namespace juggler
