// Compression as a response filter (route options `gzip`, `compress`,
// `compress=gzip,br,zstd`): the encoding is negotiated from the request's
// Accept-Encoding, the response head decides whether it is worth it, and
// the body streams through a pooled encoder with a fixed output buffer.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "filter/filter.hpp"
#include "juggler/route.hpp"

namespace juggler {

// The encoding a client accepts (q-values; `gzip;q=0` refuses gzip; `*`
// stands for the codings not named) among `allowed` (kCompress* bits): the
// one with the highest q, ties by the server's order zstd > br > gzip; 0
// when none (identity).
std::uint8_t negotiate_encoding(std::string_view accept_encoding, std::uint8_t allowed) noexcept;
// The same over every Accept-Encoding line of a request head.
std::uint8_t negotiate_encoding(std::span<const Header> headers, std::uint8_t allowed) noexcept;

// Worth compressing: text/* (but text/event-stream, which must not wait in
// an encoder), JSON, JavaScript, XML, SVG, wasm.
bool compressible_type(std::string_view content_type) noexcept;

// Smaller bodies are sent as they are (the encoding's framing would eat the gain).
inline constexpr std::uint64_t kCompressMinBytes = 256;

// Worth compressing, by the response head alone (asked before an encoder is
// taken, so a response left alone costs none): not already encoded, of a
// type compressible_type() takes, not marked no-transform, not shorter than
// kCompressMinBytes.
bool compress_worth(const MessageParser& resp) noexcept;

// An encoder stage for `encoding` (one kCompress* bit) from this thread's
// pool, at the level `settings` names, for a response compress_worth()
// took; release it with compressor_put. Its head() adds Content-Encoding,
// merges Vary and weakens a strong ETag (it steps aside only when those
// lines do not fit).
ResponseFilter* compressor_get(std::uint8_t encoding, const Settings& settings);
void compressor_put(ResponseFilter* f) noexcept;

}  // namespace juggler
