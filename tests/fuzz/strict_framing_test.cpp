// Self-test of strict_framing.hpp (built and run by tests/fuzz/build.sh and
// run.sh before the fuzzers): known messages frame where RFC 9112 says, known
// smuggling framings are errors, cut messages are incomplete.
#include <cstdio>
#include <string>
#include <string_view>

#include "strict_framing.hpp"

using juggler::strict::Framing;
using juggler::strict::frame_request;

namespace {

int failures = 0;

void expect(std::string_view name, std::string_view msg, Framing::Status status, std::size_t end = 0) {
  const Framing f = frame_request(msg);
  const bool ok = f.status == status && (status != Framing::Complete || f.end == end);
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "strict_framing_test: %.*s: status %d end %zu (want %d end %zu) error %s at %zu\n",
                 static_cast<int>(name.size()), name.data(), static_cast<int>(f.status), f.end,
                 static_cast<int>(status), end, f.error ? f.error : "-", f.error_at);
  }
}

constexpr auto C = Framing::Complete;
constexpr auto I = Framing::Incomplete;
constexpr auto E = Framing::Error;

}  // namespace

int main() {
  using namespace std::string_view_literals;
  const std::string_view get = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
  expect("get", get, C, get.size());
  expect("get then more", "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /x HTTP/1.1\r\n", C, get.size());
  expect("get cut", get.substr(0, get.size() - 1), I);
  expect("http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", C, 18);
  expect("two spaces", "GET  /  HTTP/1.1\r\nHost: h\r\n\r\n", C, 29);
  const std::string_view cl = "POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET";
  expect("content-length", cl, C, cl.size() - 3);
  expect("content-length cut", cl.substr(0, cl.size() - 5), I);
  const std::string_view ch =
      "POST /e HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
      "5 ; a = \"q\\\"x\" ;b\r\nhello\r\n2;3xt=\r\n!!\r\n0\r\nT: v\r\n\r\nX";
  expect("chunked", ch, C, ch.size() - 1);
  expect("chunked cut", ch.substr(0, ch.size() - 3), I);
  // Smuggling framings and leniencies llhttp 8 has or had: all errors.
  const std::string_view post = "POST /e HTTP/1.1\r\nHost: h\r\n";
  auto with = [&](std::string_view rest) { return std::string(post) + std::string(rest); };
  expect("cl+te", with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), E);
  expect("cl twice", with("Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), E);
  expect("cl list", with("Content-Length: 5, 5\r\n\r\nhello"), E);
  expect("cl plus", with("Content-Length: +5\r\n\r\nhello"), E);
  expect("cl overflow", with("Content-Length: 18446744073709551621\r\n\r\nhello"), E);
  expect("te not last", with("Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"), E);
  expect("te twice", with("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), E);
  expect("te http/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", E);
  expect("te empty", with("Transfer-Encoding: \r\n\r\n"), E);
  expect("space before colon", with("Content-Length : 5\r\n\r\nhello"), E);
  expect("obs-fold", with("X: a\r\n b\r\n\r\n"), E);
  expect("bare lf", "GET / HTTP/1.1\nHost: h\n\n", E);
  expect("bare cr in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", E);
  expect("nul in value", "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"sv, E);
  expect("no host", "GET / HTTP/1.1\r\n\r\n", E);
  expect("two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", E);
  expect("http/0.9", "GET /\r\n\r\n", E);
  expect("http/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", E);
  expect("tab in request line", "GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", E);
  const std::string te = "Transfer-Encoding: chunked\r\n\r\n";
  expect("chunk data without crlf", with(te + "5\r\nhelloXX0\r\n\r\n"), E);
  expect("chunk size 0x", with(te + "0x5\r\nhello\r\n0\r\n\r\n"), E);
  expect("chunk size space", with(te + "5 \r\nhello\r\n0\r\n\r\n"), E);
  expect("chunk ext bare lf", with(te + "5;a=\"x\ny\"\r\nhello\r\n0\r\n\r\n"), E);
  expect("chunk ext nul", with(te + std::string("5;a\0\r\nhello\r\n0\r\n\r\n", 18)), E);
  expect("chunk bare lf", with(te + "5\nhello\n0\n\n"), E);
  expect("chunk last bare cr", with(te + "5\r\nhello\r\n0\r\n\rX"), E);
  expect("chunk overflow", with(te + "10000000000000005\r\nhello\r\n0\r\n\r\n"), E);
  expect("trailer space in name", with(te + "0\r\nFoo Bar: 1\r\n\r\n"), E);
  if (failures) return 1;
  std::puts("strict_framing_test: ok");
  return 0;
}
