// Compression filters (src/filter/compress): negotiation, which types are
// worth it, and each encoder streamed through a chain whose client write
// completes late, decoded back to the exact input.
#include <brotli/decode.h>
#include <catch2/catch.hpp>
#include <zlib.h>
#include <zstd.h>

#include <random>
#include <string>

#include "decode.hpp"
#include "filter/compress.hpp"

using namespace juggler;

namespace {

std::string unbrotli(const std::string& in) {
  BrotliDecoderState* s = BrotliDecoderCreateInstance(nullptr, nullptr, nullptr);
  std::string out;
  std::size_t avail_in = in.size();
  const auto* next_in = reinterpret_cast<const std::uint8_t*>(in.data());
  BrotliDecoderResult rc = BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT;
  while (rc == BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT) {
    std::uint8_t buf[65536];
    std::size_t avail_out = sizeof buf;
    std::uint8_t* next_out = buf;
    rc = BrotliDecoderDecompressStream(s, &avail_in, &next_in, &avail_out, &next_out, nullptr);
    out.append(reinterpret_cast<char*>(buf), sizeof buf - avail_out);
  }
  BrotliDecoderDestroyInstance(s);
  CHECK(rc == BROTLI_DECODER_RESULT_SUCCESS);
  return out;
}

std::string unzstd(const std::string& in) {
  ZSTD_DCtx* d = ZSTD_createDCtx();
  std::string out;
  ZSTD_inBuffer src{in.data(), in.size(), 0};
  std::size_t rc = 1;
  while (src.pos < src.size || rc != 0) {
    char buf[65536];
    ZSTD_outBuffer dst{buf, sizeof buf, 0};
    rc = ZSTD_decompressStream(d, &dst, &src);
    REQUIRE_FALSE(ZSTD_isError(rc));
    out.append(buf, dst.pos);
    if (dst.pos == 0 && src.pos == src.size) break;
  }
  ZSTD_freeDCtx(d);
  CHECK(rc == 0);
  return out;
}

std::string decode(std::uint8_t encoding, const std::string& data) {
  if (encoding == kCompressGzip) return juggler_test::gunzip(data);
  if (encoding == kCompressBr) return unbrotli(data);
  return unzstd(data);
}

// Prose-like bytes: compress about 3:1, so the output fills the encoder's buffer.
std::string text(std::size_t n) {
  std::mt19937 rng(7);
  std::string out;
  while (out.size() < n) {
    const int len = 2 + static_cast<int>(rng() % 8);
    for (int i = 0; i < len; ++i) out += static_cast<char>('a' + rng() % 26);
    out += ' ';
  }
  out.resize(n);
  return out;
}

const Settings kLevels = [] {
  Settings s{};
  s.compress_level_gzip = 5;
  s.compress_level_br = 4;
  s.compress_level_zstd = 3;
  return s;
}();

}  // namespace

TEST_CASE("compress: several Accept-Encoding lines are one list", "[compress]") {
  const std::uint8_t all = kCompressGzip | kCompressBr | kCompressZstd;
  const Header two[] = {{"Accept-Encoding", "gzip;q=0.1"}, {"X-Other", "br"}, {"ACCEPT-ENCODING", "br"}};
  CHECK(negotiate_encoding(two, all) == kCompressBr);
  const Header refused[] = {{"accept-encoding", "zstd, *"}, {"Accept-Encoding", "zstd;q=0, br;q=0"}};
  CHECK(negotiate_encoding(refused, all) == kCompressZstd);  // the larger q of a coding named twice
  CHECK(negotiate_encoding(refused, kCompressBr | kCompressGzip) == kCompressGzip);  // br refused, gzip by `*`
  CHECK(negotiate_encoding(std::span<const Header>{}, all) == 0);
}

TEST_CASE("compress: Accept-Encoding with q-values, ties by zstd > br > gzip", "[compress]") {
  const std::uint8_t all = kCompressGzip | kCompressBr | kCompressZstd;
  CHECK(negotiate_encoding("", all) == 0);
  CHECK(negotiate_encoding("gzip", all) == kCompressGzip);
  CHECK(negotiate_encoding("x-gzip", all) == kCompressGzip);
  CHECK(negotiate_encoding("gzip, deflate, br", all) == kCompressBr);
  CHECK(negotiate_encoding("gzip, br, zstd", all) == kCompressZstd);
  CHECK(negotiate_encoding("gzip;q=1.0, br;q=0.9", all) == kCompressGzip);
  CHECK(negotiate_encoding("gzip;q=0", all) == 0);
  CHECK(negotiate_encoding("gzip;q=0, *", all) == kCompressZstd);
  CHECK(negotiate_encoding("*;q=0.2, br;q=0.1", all) == kCompressZstd);
  CHECK(negotiate_encoding("*;q=0", all) == 0);
  CHECK(negotiate_encoding("identity", all) == 0);
  CHECK(negotiate_encoding("zstd, br", kCompressGzip) == 0);
  CHECK(negotiate_encoding("zstd, br, gzip", kCompressGzip | kCompressBr) == kCompressBr);
  CHECK(negotiate_encoding(" GZIP ; Q=0.5 ,br;q=0.25", all) == kCompressGzip);
  CHECK(negotiate_encoding("gzip;q=2", all) == 0);      // malformed: ignored
  CHECK(negotiate_encoding("gzip;q=0.0001", all) == 0);  // more than three decimals
  CHECK(negotiate_encoding("br;q=0.001, gzip;q=0", all) == kCompressBr);
}

TEST_CASE("compress: the types worth compressing", "[compress]") {
  for (const char* t : {"text/html", "text/plain; charset=utf-8", "TEXT/CSS", "application/json",
                        "application/problem+json", "application/javascript", "application/xml",
                        "application/atom+xml", "image/svg+xml", "application/wasm"})
    CHECK(compressible_type(t));
  for (const char* t : {"image/png", "application/octet-stream", "text/event-stream", "video/mp4", "",
                        "application/zip", "textual/plain"})
    CHECK_FALSE(compressible_type(t));
}

TEST_CASE("compress: each encoder streams through a chain with late client writes", "[compress]") {
  for (const std::uint8_t encoding : {kCompressGzip, kCompressBr, kCompressZstd}) {
    for (const std::size_t size : {std::size_t{300}, std::size_t{100000}, std::size_t{2000000}}) {
      INFO("encoding " << int(encoding) << ", " << size << " bytes");
      const std::string body = text(size);
      ResponseFilter* enc = compressor_get(encoding, kLevels);
      REQUIRE(enc);
      FilterChain chain;
      REQUIRE(chain.add(enc));
      std::string wire;
      std::size_t largest = 0;
      // The body comes in 64 KB reads; each output is "written" only after the
      // next push was tried (and refused: the write is still pending).
      for (std::size_t at = 0; at < size || !chain.empty();) {
        const std::size_t end = std::min(size, (at / 65536 + 1) * 65536);
        const bool last = end == size;
        FilterOut out;
        std::size_t used = 0;
        const FilterStatus st = chain.push(std::string_view(body).substr(at, end - at), last, out, &used);
        REQUIRE(st != FilterStatus::Failed);
        at += used;
        largest = std::max(largest, out.bytes());
        if (out.n) {
          FilterOut none;
          std::size_t none_used = 0;
          CHECK(chain.push("x", false, none, &none_used) == FilterStatus::Failed);
          for (unsigned i = 0; i < out.n; ++i) wire.append(out.slices[i].base, out.slices[i].len);
          chain.written();
        }
        if (last && st == FilterStatus::Done) break;
      }
      CHECK(wire.size() < size);
      CHECK(largest <= 16 * 1024);  // bounded output per write, whatever the body
      CHECK(decode(encoding, wire) == body);
      compressor_put(enc);
    }
  }
}
