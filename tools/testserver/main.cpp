// testserver: the HTTP backend the demo and the end-to-end tests run behind the balancer.
#include <arpa/inet.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "http_util.hpp"
#include "server.hpp"

namespace {

constexpr std::string_view kUsage =
    "usage: testserver --port P [--host 127.0.0.1] [--root DIR] [--quiet] [--reset-all] [--delay-ms N]\n"
    "                  [--drop-after N]\n"
    "\n"
    "  --port P     TCP port to listen on (0 picks a free one; the listening line names it)\n"
    "  --host H     IPv4 or IPv6 address to bind (default 127.0.0.1)\n"
    "  --root DIR   serve static files from DIR (default: none, every other path is 404)\n"
    "  --quiet      no per-request log line\n"
    "  --reset-all  answer every request with a TCP reset (for failover tests)\n"
    "  --delay-ms N wait N ms before answering any request (for slow-server tests)\n"
    "  --drop-after N  on each connection answer N requests, then close upon the next one\n"
    "               without answering (a stale keep-alive connection, for replay tests)\n"
    "  --help       this text\n"
    "\n"
    "Prints 'testserver listening on HOST:PORT' once listening; exits 0 on SIGINT/SIGTERM.\n"
    "Endpoints: /ping /echo /headers /delay?ms=N /status/N /interim?n=N[&code=C]\n"
    "           /bytes?n=N[&chunked=1][&cut=K][&pause=K&pause_ms=M&pauses=P]\n"
    "           /close /reset /hang, anything else a static file under --root.\n"
    "Every response carries X-Server: <port> and X-Conn: <connection serial number>.\n";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "testserver: %s\n%.*s", message.c_str(), static_cast<int>(kUsage.size()), kUsage.data());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using juggler::testserver::parse_uint;
  juggler::testserver::Options options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fwrite(kUsage.data(), 1, kUsage.size(), stdout);
      return 0;
    }
    if (arg == "--quiet") {
      options.quiet = true;
      continue;
    }
    if (arg == "--reset-all") {
      options.reset_all = true;
      continue;
    }
    // --name value or --name=value
    std::string_view name = arg;
    std::optional<std::string_view> value;
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    }
    if (name != "--port" && name != "--host" && name != "--root" && name != "--delay-ms" && name != "--drop-after") {
      return usage_error("unknown argument '" + std::string(arg) + "'");
    }
    if (!value) {
      if (i + 1 >= argc) return usage_error(std::string(name) + " needs a value");
      value = argv[++i];
    }
    if (name == "--delay-ms") {
      const auto ms = parse_uint(*value, 600000);
      if (!ms) return usage_error("--delay-ms must be a number of milliseconds, not '" + std::string(*value) + "'");
      options.delay_ms = static_cast<unsigned>(*ms);
    } else if (name == "--drop-after") {
      const auto n = parse_uint(*value, 1000000);
      if (!n) return usage_error("--drop-after must be a number of requests, not '" + std::string(*value) + "'");
      options.drop_after = static_cast<int>(*n);
    } else if (name == "--port") {
      const auto port = parse_uint(*value, 65535);
      if (!port) return usage_error("--port must be a number from 0 to 65535, not '" + std::string(*value) + "'");
      options.port = static_cast<int>(*port);
    } else if (name == "--host") {
      options.host = std::string(*value);
      unsigned char addr[16];
      if (inet_pton(AF_INET, options.host.c_str(), addr) != 1 && inet_pton(AF_INET6, options.host.c_str(), addr) != 1) {
        return usage_error("--host must be an IPv4 or IPv6 address, not '" + options.host + "'");
      }
    } else {
      struct stat st {};
      const std::string root(*value);
      if (root.empty() || ::stat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return usage_error("--root '" + root + "' is not a directory");
      }
      options.root = root;
    }
  }
  if (options.port < 0) return usage_error("--port is required");
  return juggler::testserver::run(options);
}
