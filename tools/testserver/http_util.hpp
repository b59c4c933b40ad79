// Pure helpers of the test backend: no I/O, no libuv, so each is easy to reason about.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace juggler::testserver {

// The alphabet /bytes cycles through: byte i of a body is kPattern[i % kPattern.size()].
inline constexpr std::string_view kPattern =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

// A read-only buffer of the pattern, kPatternBlock + kPattern.size() bytes long, so any
// piece of up to kPatternBlock bytes starting at body offset i is
// pattern_block() + i % kPattern.size(). Lives for the whole program.
inline constexpr std::size_t kPatternBlock = 64 * 1024;
const char* pattern_block() noexcept;

// "OK", "Not Found", ...; "Unknown" for codes without a registered phrase.
std::string_view reason_phrase(int status) noexcept;

// The Content-Type for a file name, by extension (case-insensitive);
// application/octet-stream when unknown.
std::string_view content_type_for(std::string_view path) noexcept;

// ASCII case-insensitive equality, for header names and tokens.
bool iequals(std::string_view a, std::string_view b) noexcept;

// The value of `key` in a query string "a=1&b=2" (without the '?'); nullopt if absent.
// A key without '=' has the empty value.
std::optional<std::string_view> query_param(std::string_view query, std::string_view key) noexcept;

// A decimal integer made only of digits, no sign or spaces, at most `max`; nullopt otherwise.
std::optional<std::uint64_t> parse_uint(std::string_view s, std::uint64_t max) noexcept;

// Decodes %XX escapes. Returns nullopt for a malformed escape.
std::optional<std::string> percent_decode(std::string_view s);

// Whether a decoded URL path may be served from a root: it starts with '/', has no NUL
// and no ".." segment, so root + path never leaves the root.
bool is_safe_path(std::string_view decoded_path) noexcept;

}  // namespace juggler::testserver
