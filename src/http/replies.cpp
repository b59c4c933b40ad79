// Constant answers. Each status has two variants, keep-alive and close, built
// once at start-up so an error costs one write of static bytes.
#include <string>
#include <vector>

#include "juggler/http.hpp"

namespace juggler {

namespace {

struct Status {
  int code;
  std::string_view reason;
};

constexpr Status kStatuses[] = {
    {100, "Continue"}, {200, "OK"}, {201, "Created"}, {202, "Accepted"}, {204, "No Content"},
    {301, "Moved Permanently"}, {302, "Found"}, {303, "See Other"}, {304, "Not Modified"},
    {307, "Temporary Redirect"}, {308, "Permanent Redirect"}, {400, "Bad Request"},
    {401, "Unauthorized"}, {403, "Forbidden"}, {404, "Not Found"}, {405, "Method Not Allowed"},
    {408, "Request Timeout"}, {409, "Conflict"}, {410, "Gone"}, {413, "Content Too Large"},
    {414, "URI Too Long"}, {415, "Unsupported Media Type"}, {417, "Expectation Failed"},
    {429, "Too Many Requests"}, {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"}, {501, "Not Implemented"}, {502, "Bad Gateway"},
    {503, "Service Unavailable"}, {504, "Gateway Timeout"},
};

// Built once at start-up (static init), never per request.
struct Reply {
  int code;
  std::string keep;
  std::string close;
};

std::string page(int code, std::string_view reason) {
  std::string c = std::to_string(code);
  return "<html><head><title>" + c + " " + std::string(reason) + "</title></head><body><h1>" + c +
         " " + std::string(reason) + "</h1><hr><p>juggler</p></body></html>\n";
}

const std::vector<Reply>& replies() {
  static const std::vector<Reply> r = [] {
    std::vector<Reply> out;
    for (const Status& s : kStatuses) {
      if (s.code < 400) continue;
      std::string body = page(s.code, s.reason);
      std::string head = "HTTP/1.1 " + std::to_string(s.code) + " " + std::string(s.reason) +
                         "\r\nContent-Type: text/html\r\nContent-Length: " + std::to_string(body.size()) +
                         "\r\n";
      std::string keep = head;
      keep.append("\r\n").append(body);
      std::string close = head;
      close.append("Connection: close\r\n\r\n").append(body);
      out.push_back({s.code, std::move(keep), std::move(close)});
    }
    return out;
  }();
  return r;
}

}  // namespace

std::string_view status_reason(int status) noexcept {
  for (const Status& s : kStatuses)
    if (s.code == status) return s.reason;
  return "Unknown";
}

std::string_view canned_reply(int status, bool close) noexcept {
  for (const Reply& r : replies())
    if (r.code == status) return close ? r.close : r.keep;
  return canned_reply(500, close);
}

}  // namespace juggler
