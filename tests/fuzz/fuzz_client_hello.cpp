// libFuzzer target: the ClientHello parser (src/stream/client_hello.cpp).
// Whatever the bytes, it must not crash, and:
//  - Done: the name is a view inside the bytes (the record), a plausible
//    host name or empty;
//  - fed in pieces (as reads deliver it), every shorter prefix of a complete
//    hello says NeedMore, and a prefix found Invalid stays Invalid.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "stream/client_hello.hpp"

using namespace juggler;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  std::string_view name;
  const HelloParse r = parse_client_hello(all, &name);
  if (r == HelloParse::Done) {
    check(size >= 5);
    const std::size_t record = 5 + ((static_cast<std::size_t>(data[3]) << 8) | data[4]);
    check(record <= size && record <= kMaxClientHello);
    if (!name.empty()) {
      check(name.data() >= all.data() && name.data() + name.size() <= all.data() + record);
      check(name.size() <= 255);
      for (char c : name) check(c != '\0' && c != '/' && c != ' ');
    }
  } else if (r != HelloParse::Invalid) {
    check(name.empty());
  }
  for (std::size_t k = 0; k < size; ++k) {
    std::string_view n;
    const HelloParse pr = parse_client_hello(all.substr(0, k), &n);
    if (r == HelloParse::Done && k < 5 + ((static_cast<std::size_t>(data[3]) << 8) | data[4]))
      check(pr == HelloParse::NeedMore);
    if (pr == HelloParse::Invalid) check(r == HelloParse::Invalid);
  }
  return 0;
}
