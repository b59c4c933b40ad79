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

// The longest handshake message looked at (its 4-byte header included): what
// one record can carry. A longer ClientHello is Invalid (the default route).
inline constexpr std::size_t kMaxHelloMessage = 16384;
// The most bytes of records the SNI prelude reads for it: the message in up
// to 16 records (a smaller one may take more), and no more than a buffer of
// the worker's pool (16 KB by default); beyond, it is Invalid.
inline constexpr std::size_t kMaxClientHello = kMaxHelloMessage + 16 * 5;

// What parse_client_hello found.
struct ClientHello {
  // Done: the host_name (empty when the hello has no server_name extension),
  // a view into the data, or into `joined` when a record boundary cuts it.
  std::string_view name;
  // Done: how many bytes of the data the hello's records take. NeedMore: how
  // many the data must hold before parsing again can tell more.
  std::size_t end = 0;
  char joined[255];
};

// Parses the ClientHello at the start of `data`: TLS handshake records whose
// fragments, joined, begin with the ClientHello message (RFC 8446 5.1: a
// message may span records; a client fragments a large hello, or on purpose).
// Done: it is complete and well formed (`out->name`, `out->end`). NeedMore:
// `data` is a valid beginning of one. Invalid: a record that is not a TLS
// handshake record (or is empty, or over 16 KB), a handshake message that is
// not a ClientHello or is longer than kMaxHelloMessage, malformed lengths, or
// a host_name that is not a plausible DNS name (empty, over 255 bytes, bytes
// other than letters, digits, '-', '_', '.'). Pure: no I/O, no allocation;
// the work is linear in the records of `data`.
HelloParse parse_client_hello(std::string_view data, ClientHello* out) noexcept;

// The prelude of a `listen tcp ... sni` connection: reads into a buffer of
// the worker's pool until the ClientHello's records are complete, then calls
// `on_done(owner, name)` (empty for none, for a malformed hello, or for bytes
// that are not TLS) and hands every byte read back as not consumed: the
// protocol relays them as they came.
struct SniPrelude final : BufferedPrelude {
  void (*on_done)(void* owner, std::string_view name) = nullptr;
  void* owner = nullptr;

  // Runs on `s` (accepted, not reading yet), then starts it reading.
  void start(Stream& s, BufferPool& buffers, void (*done)(void*, std::string_view), void* done_owner) noexcept;
  // No more than the hello's records can take: the rest waits in the kernel
  // (what is handed on must fit the tunnel's room, a buffer of the same pool).
  uv_buf_t prelude_room() noexcept override { return room(kMaxClientHello); }
  Verdict prelude_read(std::size_t n, std::string_view* rest) noexcept override;

 private:
  // Parsing again before `len` reaches this tells nothing new (a hello fed a
  // byte at a time in records of a byte is parsed once per record).
  std::uint32_t want_ = 0;
};

}  // namespace juggler
