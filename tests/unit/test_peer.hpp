// A blocking socket on 127.0.0.1 (port from the kernel) for the tests that
// run a real peer in a thread: the stream's and the tunnel's.
#pragma once

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace juggler::test {

// `listening` false leaves the port bound but refusing.
struct PeerSocket {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  explicit PeerSocket(bool listening) {
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    if (listening) REQUIRE(::listen(fd, 4) == 0);
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  }
  PeerSocket(const PeerSocket&) = delete;
  PeerSocket& operator=(const PeerSocket&) = delete;
  ~PeerSocket() { ::close(fd); }
  int port() const { return ntohs(addr.sin_port); }
  // The next connection, with a 20 s receive timeout (a broken peer fails the
  // test, it does not hang it).
  int accept_one() const {
    const int c = ::accept(fd, nullptr, nullptr);
    timeval tv{20, 0};
    ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return c;
  }
};

}  // namespace juggler::test
