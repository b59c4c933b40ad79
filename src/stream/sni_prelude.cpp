// The SNI peek prelude (client_hello.hpp): the ClientHello parser run on a
// connection's first bytes, every byte then handed on untouched.
#include "stream/client_hello.hpp"

namespace juggler {

void SniPrelude::start(Stream& s, BufferPool& buffers, void (*done)(void*, std::string_view),
                       void* done_owner) noexcept {
  on_done = done;
  owner = done_owner;
  want_ = 0;
  begin(s, buffers);
}

Prelude::Verdict SniPrelude::prelude_read(std::size_t n, std::string_view* rest) noexcept {
  len += static_cast<std::uint32_t>(n);
  const bool full = len >= limit(kMaxClientHello);
  if (len < want_ && !full) return Verdict::NeedMore;
  const std::string_view seen(buf->data, len);
  ClientHello hello;
  HelloParse r = parse_client_hello(seen, &hello);
  // Records longer than the buffer can hold are as good as malformed here.
  if (r == HelloParse::NeedMore && full) r = HelloParse::Invalid;
  if (r == HelloParse::NeedMore) {
    want_ = static_cast<std::uint32_t>(std::min<std::size_t>(hello.end, kMaxClientHello));
    return Verdict::NeedMore;
  }
  if (on_done) on_done(owner, r == HelloParse::Done ? hello.name : std::string_view());
  *rest = seen;  // nothing consumed: the ClientHello goes on as it came
  return Verdict::Done;
}

}  // namespace juggler
