// The server_name of a TLS ClientHello, peeked for SNI routing
// (`listen tcp ADDR:PORT sni`, `route sni NAME -> POOL`): the connection is
// not terminated, the bytes read are relayed untouched, ClientHello included.
// The parser is pure (client_hello.cpp, no I/O, no allocation; fuzzed by
// tests/fuzz/fuzz_client_hello.cpp); SniPrelude runs it as a stream prelude.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "stream/buffered_prelude.hpp"

namespace juggler {

enum class HelloParse : std::uint8_t { NeedMore, Done, Invalid };

// The longest ClientHello looked at: one TLS record (its 5-byte header and up
// to 16 KB). A ClientHello spread over more records is Invalid (routed to
// the default).
inline constexpr std::size_t kMaxClientHello = 5 + 16384;

// Parses the TLS record at the start of `data`. Done: it is a ClientHello,
// `*name` its host_name (a view into `data`; empty when it has no
// server_name extension). NeedMore: `data` is a valid beginning of a record
// not complete yet. Invalid: not a TLS handshake record, not a ClientHello,
// or malformed. A host_name that is not a plausible DNS name (empty, over
// 255 bytes, bytes other than letters, digits, '-', '_', '.') is Invalid.
HelloParse parse_client_hello(std::string_view data, std::string_view* name) noexcept;

// The prelude of a `listen tcp ... sni` connection: reads into a buffer of
// the worker's pool until the ClientHello's record is complete, then calls
// `on_done(owner, name)` (empty for none, for a malformed hello, or for bytes
// that are not TLS) and hands every byte read back as not consumed: the
// protocol relays them as they came.
struct SniPrelude final : BufferedPrelude {
  void (*on_done)(void* owner, std::string_view name) = nullptr;
  void* owner = nullptr;

  // Runs on `s` (accepted, not reading yet), then starts it reading.
  void start(Stream& s, BufferPool& buffers, void (*done)(void*, std::string_view), void* done_owner) noexcept;
  // No more than one record: the rest waits in the kernel (what is handed on
  // must fit the tunnel's room, a buffer of the same pool).
  uv_buf_t prelude_room() noexcept override { return room(kMaxClientHello); }
  Verdict prelude_read(std::size_t n, std::string_view* rest) noexcept override;
};

}  // namespace juggler
