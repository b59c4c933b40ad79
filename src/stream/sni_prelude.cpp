// The SNI peek prelude (client_hello.hpp): the ClientHello parser run on a
// connection's first bytes, every byte then handed on untouched.
#include "stream/client_hello.hpp"

namespace juggler {

void SniPrelude::start(Stream& s, BufferPool& buffers, void (*done)(void*, std::string_view),
                       void* done_owner) noexcept {
  on_done = done;
  owner = done_owner;
  begin(s, buffers);
}

Prelude::Verdict SniPrelude::prelude_read(std::size_t n, std::string_view* rest) noexcept {
  len += static_cast<std::uint32_t>(n);
  std::string_view name;
  const std::string_view seen(buf->data, len);
  HelloParse r = parse_client_hello(seen, &name);
  // A record longer than the buffer can hold is as good as malformed here.
  if (r == HelloParse::NeedMore && len >= limit(kMaxClientHello)) r = HelloParse::Invalid;
  if (r == HelloParse::NeedMore) return Verdict::NeedMore;
  if (r == HelloParse::Invalid) name = {};
  if (on_done) on_done(owner, name);
  *rest = seen;  // nothing consumed: the ClientHello goes on as it came
  return Verdict::Done;
}

}  // namespace juggler
