// Command-line options (CLI11) and the effective configuration: the compiled
// settings of routes.def with the command line laid over them.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>

#include "juggler/log.hpp"
#include "juggler/route.hpp"

namespace juggler {

struct Options {
  int workers = -1;        // -1: routes.def's `set workers`
  int port = -1;           // -1: as compiled; overrides the first http listener
  int https_port = -1;     // likewise for the first https listener
  std::string access_log;  // empty: routes.def's; else PATH | stdout | off
  std::string access_log_format;  // empty: routes.def's; else combined | json
  std::string admin;       // empty: routes.def's `set admin`; else ADDR:PORT, or off
  std::string instance;    // empty: routes.def's `set instance`; else this process's name (a pod's, a host's)
  LogLevel log_level = LogLevel::Info;
  bool check = false;
  // The control socket `make reload` talks to (`off`: none), and the client
  // mode: ask the balancer there to load this table object, then exit.
  std::string control = "juggler.sock";
  std::string reload;
  bool upgrade = false;  // take the listening sockets over from the balancer on `control` (make upgrade)
  // Start on this table object (built by make reload / juggler-reload)
  // instead of the linked-in table; `table_if_exists`: only when the path
  // exists (the unit's STATE/reload/current.so), else the linked-in one.
  std::string table, table_if_exists;
  // Timeout overrides, in ms (-1: routes.def's `set timeout.*`).
  std::int64_t connect_timeout_ms = -1, client_header_timeout_ms = -1, client_idle_timeout_ms = -1,
               upstream_timeout_ms = -1, drain_timeout_ms = -1, tunnel_idle_timeout_ms = -1;
};

// "250ms", "10s", "2m", "1h" in milliseconds; -1 when malformed or zero.
std::int64_t parse_duration_ms(std::string_view text) noexcept;

// Parses argv (`table` is the compiled table, named by --version). Returns -1
// to go on, or the exit status when the program must stop now (--help,
// --version, or a usage error, already printed).
int parse_options(int argc, char** argv, const RouteTable& table, Options& out);

struct Config {
  const RouteTable* table = nullptr;
  Settings settings{};        // compiled settings, overridden by Options
  std::uint32_t workers = 1;  // resolved (auto = cores)
  int port_override = -1;
  int https_port_override = -1;
  std::string access_log_path;  // when settings.access_log == File
  // The admin listener (/metrics, /stats): `set admin` or --admin; port -1 = none.
  std::string admin_host;
  int admin_port = -1;
  LogLevel log_level = LogLevel::Info;
  std::string control_path;  // the control socket (runtime/reload.hpp); empty = none
  bool upgrade = false;      // --upgrade (runtime/upgrade.hpp)
  // --instance: the name and the instance header line made from it, which
  // settings.instance and settings.instance_header view; on the heap, so the
  // views survive copies and moves of the Config.
  std::shared_ptr<const std::string> instance_text;
};

// Builds the effective configuration. Throws std::runtime_error with a
// message for the operator when an option is invalid.
Config make_config(const RouteTable& table, const Options& opts);

// The socket address of a compiled host (an IPv4 or IPv6 literal, stored
// without brackets by the code generator) and port; false when it is neither.
bool socket_address(std::string_view host, std::uint16_t port, sockaddr_storage& out) noexcept;

// Splits "127.0.0.1:9090" or "[::1]:9090" (port 0..65535) into host (without
// brackets) and port; "9090" alone is 127.0.0.1:9090. False when it is none of these.
bool split_host_port(std::string_view text, std::string& host, int& port);
// The reverse, for messages: "127.0.0.1:9090", or "[::1]:9090" for an IPv6
// host (one given in brackets already is kept as it is).
std::string join_host_port(std::string_view host, int port);

// Human-readable tables of listeners, pools, servers and routes, and the
// effective settings after command-line overrides (--check).
std::string describe_config(const Config& config);

// A listen statement's kind as routes.def writes it ("http", "https", "tcp",
// "tls"): --check's listing, the upgrade's listener lines, listener URLs.
const char* listen_kind_name(ListenKind k) noexcept;

// Features compiled from routes.def whose run-time side is not built yet: one
// line each ("routes.def:12: gzip is not implemented yet"); empty when none.
std::string unsupported_features(const RouteTable& table);

}  // namespace juggler
