// Request targets (RFC 9112 3.2): map_target, what routing sees of an
// absolute-form target and the origin-form head the server is sent.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "juggler/http.hpp"

using namespace juggler;

namespace {

struct Parsed {
  std::vector<HeaderSpan> storage = std::vector<HeaderSpan>(100);
  MessageParser p;
  ParseEvent event = ParseEvent::NeedMore;
};

void parse(Parsed& r, const std::string& bytes) {
  r.p.init(HTTP_REQUEST, r.storage.data(), 100);
  std::size_t used = 0;
  r.event = r.p.feed(bytes.data(), bytes.size(), &used);
}

// The head edit_request_head sends for `bytes`, from client 10.0.0.1 over http.
std::string forwarded(const std::string& bytes) {
  Parsed r;
  parse(r, bytes);
  REQUIRE(r.event == ParseEvent::HeadComplete);
  char scratch[1024];
  std::size_t len = 0;
  uv_buf_t iov[100 + 4];
  const unsigned n = edit_request_head(r.p, "10.0.0.1", "http", scratch, sizeof scratch, &len, iov);
  std::string s;
  for (unsigned i = 0; i < n; ++i) s.append(iov[i].base, iov[i].len);
  return s;
}

}  // namespace

TEST_CASE("map_target: origin-form and * keep the Host", "[target]") {
  RequestTarget t;
  CHECK(map_target("/a?b", "h:81", t) == nullptr);
  CHECK((t.authority == "h:81" && t.origin == "/a?b" && !t.absolute));
  CHECK(map_target("*", "h", t) == nullptr);
  CHECK((t.authority == "h" && t.origin == "*" && !t.absolute));
}

TEST_CASE("map_target: an absolute-form target's authority replaces the Host", "[target]") {
  struct Case {
    const char* target;
    const char* authority;
    const char* origin;
  };
  for (const Case& c : {Case{"http://a.example/x?q", "a.example", "/x?q"}, Case{"HTTPS://a.example:8443/", "a.example:8443", "/"},
                        Case{"http://a.example", "a.example", ""}, Case{"http://a.example?q=1", "a.example", "?q=1"},
                        Case{"http://[::1]:80/p", "[::1]:80", "/p"}, Case{"http://10.0.0.1/p", "10.0.0.1", "/p"}}) {
    RequestTarget t;
    INFO(c.target);
    CHECK(map_target(c.target, "other", t) == nullptr);
    CHECK(t.authority == c.authority);
    CHECK(t.origin == c.origin);
    CHECK(t.absolute);
  }
}

TEST_CASE("map_target: refused absolute-form targets", "[target]") {
  const std::string long_host = "http://" + std::string(kMaxAuthority + 1, 'a') + "/";
  for (const std::string& target :
       {std::string("ftp://a.example/x"), std::string("httpx://a/"), std::string("ws://a/"),
        std::string("http://user@a.example/x"), std::string("http://user:pw@a.example/x"), std::string("http:///x"),
        std::string("http://:80/x"), std::string("http://a:8x/"), std::string("http://a:123456/"), std::string("http://a:/"),
        std::string("http://[::1/"), std::string("http://a<b/"), std::string("a.example/x"), long_host}) {
    RequestTarget t;
    INFO(target);
    CHECK(map_target(target, "h", t) != nullptr);
  }
  RequestTarget t;
  CHECK(map_target("http://" + std::string(kMaxAuthority, 'a') + "/", "h", t) == nullptr);
}

TEST_CASE("the parser answers 400 to a refused absolute-form target", "[target]") {
  for (const char* line : {"GET ftp://a.example/x HTTP/1.1", "GET http://u@a.example/x HTTP/1.1", "GET http:///x HTTP/1.1"}) {
    const std::string req = std::string(line) + "\r\nHost: a.example\r\n\r\n";
    Parsed r;
    parse(r, req);
    INFO(line);
    CHECK(r.event == ParseEvent::Error);
    CHECK(r.p.error_status() == 400);
  }
}

TEST_CASE("routing sees the absolute-form's authority and path", "[target]") {
  const std::string req = "GET http://B.example:81?k=v HTTP/1.1\r\nHost: a.example\r\n\r\n";
  Parsed r;
  parse(r, req);
  REQUIRE(r.event == ParseEvent::HeadComplete);
  Header hs[100];
  RequestHead head;
  describe_request(r.p, hs, head);
  CHECK(head.host == "B.example");
  CHECK(head.path == "/");
  CHECK(head.query == "k=v");
  CHECK(head.target == "http://B.example:81?k=v");
}

TEST_CASE("the server gets origin form with the authority as Host", "[target]") {
  CHECK(forwarded("GET http://b.example:81/x?q HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n") ==
        "GET /x?q HTTP/1.1\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\nHost: b.example:81\r\n"
        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: b.example:81\r\nVia: 1.1 juggler\r\n\r\n");
  // An empty path is "/"; HTTP/1.0 without Host gets one.
  CHECK(forwarded("GET http://b.example?q HTTP/1.0\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n") ==
        "GET /?q HTTP/1.0\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.1\r\nHost: b.example\r\n"
        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: b.example\r\nVia: 1.1 juggler\r\nConnection: keep-alive\r\n\r\n");
  CHECK(forwarded("GET http://b.example HTTP/1.1\r\nHost: b.example\r\n\r\n").starts_with("GET / HTTP/1.1\r\nX-Forwarded-For"));
}

TEST_CASE("origin-form heads go as they came", "[target]") {
  CHECK(forwarded("GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n") ==
        "GET /x HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n"
        "X-Forwarded-Host: a.example\r\nVia: 1.1 juggler\r\n\r\n");
}
