// The SNI peek prelude (client_hello.hpp): the ClientHello parser run on a
// connection's first bytes, every byte then handed on untouched.
#include <algorithm>

#include "stream/client_hello.hpp"

namespace juggler {

void SniPrelude::start(Stream& s, BufferPool& buffers, void (*done)(void*, std::string_view),
                       void* done_owner) noexcept {
  pool = &buffers;
  on_done = done;
  owner = done_owner;
  buf = nullptr;
  len = 0;
  s.set_prelude(this);
  s.set_reading(true);
}

void SniPrelude::release() noexcept {
  if (buf) pool->put(buf);
  buf = nullptr;
  len = 0;
}

uv_buf_t SniPrelude::prelude_room() noexcept {
  if (!buf) buf = pool->get();
  // No more than one record: the rest waits in the kernel (what is handed on
  // must fit the tunnel's room, a buffer of the same pool).
  const auto cap = static_cast<std::uint32_t>(std::min<std::size_t>(buf->cap, kMaxClientHello));
  return uv_buf_init(buf->data + len, cap - len);
}

Prelude::Verdict SniPrelude::prelude_read(std::size_t n, std::string_view* rest) noexcept {
  len += static_cast<std::uint32_t>(n);
  std::string_view name;
  const std::string_view seen(buf->data, len);
  HelloParse r = parse_client_hello(seen, &name);
  // A record longer than the buffer can hold is as good as malformed here.
  if (r == HelloParse::NeedMore && len >= std::min<std::size_t>(buf->cap, kMaxClientHello)) r = HelloParse::Invalid;
  if (r == HelloParse::NeedMore) return Verdict::NeedMore;
  if (r == HelloParse::Invalid) name = {};
  if (on_done) on_done(owner, name);
  *rest = seen;  // nothing consumed: the ClientHello goes on as it came
  return Verdict::Done;
}

}  // namespace juggler
