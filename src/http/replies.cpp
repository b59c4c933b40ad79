// Status reason phrases, and the built-in answers (ErrorPages without a
// folder: two constant variants per status, keep-alive and close).
#include "juggler/error_pages.hpp"
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

}  // namespace

std::string_view status_reason(int status) noexcept {
  for (const Status& s : kStatuses)
    if (s.code == status) return s.reason;
  return "Unknown";
}

std::string_view canned_reply(int status, bool close) noexcept {
  // The built-in pages live in one place: ErrorPages without a folder.
  static const ErrorPages builtin;
  return builtin.reply(status, close);
}

}  // namespace juggler
