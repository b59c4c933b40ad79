// libFuzzer target: the ClientHello parser (src/stream/client_hello.cpp).
// Whatever the bytes, it must not crash, and:
//  - Done: the hello's records end within the bytes; the name is a view
//    inside them (or, cut by a record boundary, inside ClientHello::joined),
//    a plausible host name or empty;
//  - fed in pieces (as reads deliver it), every shorter prefix of a complete
//    hello says NeedMore with a hint past its own length, and a prefix found
//    Invalid stays Invalid.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "stream/client_hello.hpp"

using namespace juggler;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

bool inside(std::string_view part, const char* from, std::size_t len) {
  return part.data() >= from && part.data() + part.size() <= from + len;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  ClientHello hello;
  const HelloParse r = parse_client_hello(all, &hello);
  if (r == HelloParse::Done) {
    check(hello.end >= 5 + 4 && hello.end <= size);
    if (!hello.name.empty()) {
      check(inside(hello.name, all.data(), hello.end) || inside(hello.name, hello.joined, sizeof hello.joined));
      check(hello.name.size() <= 255);
      for (char c : hello.name) check(c != '\0' && c != '/' && c != ' ');
    }
  } else {
    check(hello.name.empty());
    if (r == HelloParse::NeedMore) check(hello.end > size);
  }
  for (std::size_t k = 0; k < size; ++k) {
    ClientHello part;
    const HelloParse pr = parse_client_hello(all.substr(0, k), &part);
    if (r == HelloParse::Done && k < hello.end) check(pr == HelloParse::NeedMore && part.end > k);
    if (pr == HelloParse::Invalid) check(r == HelloParse::Invalid);
  }
  return 0;
}
