// Error pages: built-ins, a directory's NNN.html over them, start-up errors.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "juggler/error_pages.hpp"
#include "juggler/http.hpp"

using namespace juggler;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "juggler-error-pages-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path / name, std::ios::binary) << bytes;
  }
};

struct Parsed {
  std::string status_line;
  std::string content_type;
  std::string content_length;
  bool close = false;
  std::string body;
};

// Splits a reply into what the tests look at; checks the framing on the way.
Parsed parse(std::string_view r) {
  Parsed p;
  std::size_t end = r.find("\r\n\r\n");
  REQUIRE(end != std::string_view::npos);
  std::string_view head = r.substr(0, end + 2);
  p.body = std::string(r.substr(end + 4));
  std::size_t eol = head.find("\r\n");
  p.status_line = std::string(head.substr(0, eol));
  head.remove_prefix(eol + 2);
  while (!head.empty()) {
    eol = head.find("\r\n");
    std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    std::size_t colon = line.find(": ");
    REQUIRE(colon != std::string_view::npos);
    std::string_view name = line.substr(0, colon), value = line.substr(colon + 2);
    if (name == "Content-Type") p.content_type = value;
    else if (name == "Content-Length") p.content_length = value;
    else if (name == "Connection") p.close = value == "close";
    else FAIL("unexpected header " << line);
  }
  return p;
}

}  // namespace

TEST_CASE("built-in pages for every status the proxy emits, in both variants", "[error_pages]") {
  const ErrorPages pages;
  for (int status : {400, 404, 408, 413, 414, 417, 431, 501, 502, 503, 504}) {
    CAPTURE(status);
    for (bool close : {false, true}) {
      CAPTURE(close);
      Parsed p = parse(pages.reply(status, close));
      CHECK(p.status_line == "HTTP/1.1 " + std::to_string(status) + " " + std::string(status_reason(status)));
      CHECK(p.content_type == "text/html; charset=utf-8");
      CHECK(p.content_length == std::to_string(p.body.size()));
      CHECK(p.close == close);
      CHECK(p.body.find("<h1>" + std::to_string(status) + " ") != std::string::npos);
      std::string_view head = pages.head(status, close);
      CHECK(head.size() + p.body.size() == pages.reply(status, close).size());
      CHECK(head.substr(head.size() - 4) == "\r\n\r\n");
      CHECK(pages.reply(status, close).substr(0, head.size()) == head);
    }
    CHECK_FALSE(pages.custom(status));
  }
  CHECK(pages.custom_count() == 0);
}

TEST_CASE("a status without a page gets the 500 page", "[error_pages]") {
  const ErrorPages pages;
  CHECK(pages.reply(418, false) == pages.reply(500, false));
  CHECK(pages.reply(200, true) == pages.reply(500, true));
  CHECK(pages.reply(-1, true) == pages.reply(500, true));
  CHECK(pages.reply(600, false) == pages.reply(500, false));
  CHECK(pages.head(999, false) == pages.head(500, false));
  CHECK(parse(pages.reply(500, false)).status_line == "HTTP/1.1 500 Internal Server Error");
}

TEST_CASE("an empty dir means built-ins only", "[error_pages]") {
  const ErrorPages pages = ErrorPages::load("");
  CHECK(pages.custom_count() == 0);
  CHECK(pages.reply(503, true) == ErrorPages().reply(503, true));
}

TEST_CASE("a directory's 503.html overrides 503 only", "[error_pages]") {
  TempDir dir;
  const std::string page = "<!doctype html><p>Back soon — très bientôt</p>\n";
  dir.write("503.html", page);
  dir.write("README.txt", "not a page");
  dir.write("200.html", "not an error status");
  dir.write("5033.html", "not a status");
  dir.write("50x.html", "not a status");
  const ErrorPages builtin;
  const ErrorPages pages = ErrorPages::load(dir.path.string());
  CHECK(pages.custom_count() == 1);
  CHECK(pages.custom(503));
  for (bool close : {false, true}) {
    Parsed p = parse(pages.reply(503, close));
    CHECK(p.status_line == "HTTP/1.1 503 Service Unavailable");
    CHECK(p.content_type == "text/html; charset=utf-8");
    CHECK(p.content_length == std::to_string(page.size()));
    CHECK(p.body == page);
    CHECK(p.close == close);
  }
  for (int status : {400, 404, 502, 504})
    for (bool close : {false, true}) CHECK(pages.reply(status, close) == builtin.reply(status, close));
  CHECK(pages.reply(200, false) == builtin.reply(500, false));
}

TEST_CASE("a page for a status without a built-in one, and an empty page", "[error_pages]") {
  TempDir dir;
  dir.write("418.html", "teapot");
  dir.write("502.html", "");
  const ErrorPages pages = ErrorPages::load((dir.path / "").string());  // trailing slash as in routes.def
  CHECK(pages.custom_count() == 2);
  Parsed teapot = parse(pages.reply(418, true));
  CHECK(teapot.status_line == "HTTP/1.1 418 ");
  CHECK(teapot.body == "teapot");
  CHECK(teapot.content_length == "6");
  Parsed empty = parse(pages.reply(502, false));
  CHECK(empty.content_length == "0");
  CHECK(empty.body.empty());
}

TEST_CASE("a missing directory is a start-up error naming it", "[error_pages]") {
  TempDir dir;
  const std::string missing = (dir.path / "nope").string();
  CHECK_THROWS_WITH(ErrorPages::load(missing),
                    Catch::StartsWith("set error_pages: cannot read " + missing + ": "));
  dir.write("file", "x");
  CHECK_THROWS_WITH(ErrorPages::load((dir.path / "file").string()),
                    Catch::StartsWith("set error_pages: cannot read " + (dir.path / "file").string() + ": "));
}

TEST_CASE("an unreadable page is a start-up error naming the file", "[error_pages]") {
  if (::geteuid() == 0) SUCCEED("root reads everything: skipped");
  else {
    TempDir dir;
    dir.write("504.html", "x");
    fs::permissions(dir.path / "504.html", fs::perms::none);
    CHECK_THROWS_WITH(ErrorPages::load(dir.path.string()),
                      Catch::StartsWith("set error_pages: cannot read " + (dir.path / "504.html").string() + ": ") &&
                          Catch::Contains("ermission denied"));
  }
}

TEST_CASE("a page that is not a regular file is refused", "[error_pages]") {
  TempDir dir;
  fs::create_directory(dir.path / "502.html");
  CHECK_THROWS_WITH(ErrorPages::load(dir.path.string()), Catch::Contains("502.html") && Catch::Contains("not a regular file"));
}

TEST_CASE("a page larger than the cap is refused with its size", "[error_pages]") {
  TempDir dir;
  dir.write("503.html", std::string(ErrorPages::kMaxPageBytes, 'x'));
  CHECK_NOTHROW(ErrorPages::load(dir.path.string()));
  dir.write("503.html", std::string(ErrorPages::kMaxPageBytes + 1, 'x'));
  CHECK_THROWS_WITH(ErrorPages::load(dir.path.string()),
                    Catch::Contains((dir.path / "503.html").string()) &&
                        Catch::Contains(std::to_string(ErrorPages::kMaxPageBytes + 1) + " bytes") &&
                        Catch::Contains(std::to_string(ErrorPages::kMaxPageBytes)));
}
