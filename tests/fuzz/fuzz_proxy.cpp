// libFuzzer target: the PROXY protocol v1/v2 parser (src/stream/proxy_header.cpp).
// Whatever the bytes, it must not crash, and:
//  - Done: the header length is within the bytes and kMaxProxyHeader, the
//    address is a NUL-terminated text of ip_len characters that parses back;
//  - fed in pieces (as reads deliver it), every shorter prefix of a header
//    says NeedMore, and a prefix found Invalid stays Invalid when more comes.
#include <arpa/inet.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "stream/proxy_protocol.hpp"

using namespace juggler;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  ProxyHeader h;
  std::size_t used = 0;
  const ProxyParse r = parse_proxy_header(all, &h, &used);
  if (r == ProxyParse::Done) {
    check(used > 0 && used <= size && used <= kMaxProxyHeader);
    check(h.ip_len == std::strlen(h.ip));
    if (!h.local) {
      unsigned char bin[16];
      check(inet_pton(std::strchr(h.ip, ':') ? AF_INET6 : AF_INET, h.ip, bin) == 1);
    } else {
      check(h.ip_len == 0);
    }
  }
  const std::size_t limit = r == ProxyParse::Done ? used : std::min<std::size_t>(size, kMaxProxyHeader + 16);
  for (std::size_t k = 0; k < limit; ++k) {
    ProxyHeader ph;
    std::size_t pu = 0;
    const ProxyParse pr = parse_proxy_header(all.substr(0, k), &ph, &pu);
    if (r == ProxyParse::Done) check(pr == ProxyParse::NeedMore);
    if (pr == ProxyParse::Invalid) check(r == ProxyParse::Invalid);
  }
  return 0;
}
