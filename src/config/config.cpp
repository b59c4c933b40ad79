#include "juggler/config.hpp"

#include <CLI/CLI.hpp>
#include <uv.h>
#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace juggler {

int parse_options(int argc, char** argv, const RouteTable& table, Options& out) {
  CLI::App app{"juggler: an HTTP load balancer whose routing is compiled from routes.def"};
  app.set_version_flag("--version", std::string("juggler ") + JUGGLER_VERSION + " (routes from " +
                                        std::string(table.source) + ")");
  std::string level = "info";
  app.add_option("--workers,-w", out.workers, "worker threads (default: routes.def's `set workers`, auto = one per core)")
      ->check(CLI::Range(1, 256));
  app.add_option("--port,-p", out.port, "port of the first http listener (0 = any free port)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--https-port", out.https_port, "port of the first https listener (0 = any free port)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--access-log", out.access_log, "PATH, stdout or off (default: routes.def's `set access_log`)");
  app.add_option("--access-log-format", out.access_log_format,
                 "combined or json (default: routes.def's `set access_log_format`, else combined)")
      ->check(CLI::IsMember({"combined", "json"}));
  app.add_option("--admin", out.admin,
                 "ADDR:PORT (or PORT: 127.0.0.1) of the admin listener (/metrics, /stats), or off "
                 "(default: routes.def's `set admin`)");
  app.add_option("--instance", out.instance,
                 "this process's name in logs, metrics and the instance header (default: routes.def's `set instance`)");
  app.add_option("--log-level", level, "debug, info, warn, error or off")
      ->check(CLI::IsMember({"debug", "info", "warn", "error", "off"}));
  app.add_flag("--check", out.check, "print the compiled listeners, pools and routes, then exit");
  app.add_option("--control", out.control,
                 "the control socket make reload talks to (default juggler.sock in the folder the balancer "
                 "starts in; off: none)");
  app.add_option("--reload", out.reload,
                 "FILE.so: ask the balancer on --control to swap in this table (built by make reload), then exit");
  auto* table_opt = app.add_option("--table", out.table,
                                   "FILE.so: start on this table (built by make reload or juggler-reload) instead "
                                   "of the linked-in one; a bad or missing file stops the start");
  app.add_option("--table-if-exists", out.table_if_exists,
                 "FILE.so: as --table when FILE.so exists (a dangling symlink is an error), else the linked-in "
                 "table (the unit's /var/lib/juggler/reload/current.so)")
      ->excludes(table_opt);
  app.add_flag("--upgrade", out.upgrade,
               "take the listening sockets over from the balancer on --control, which then drains and exits "
               "(make upgrade)");
  // Durations as in routes.def (250ms 10s 2m); each overrides its `set timeout.*`.
  struct TimeoutFlag {
    const char* name;
    std::int64_t* out;
    const char* help;
  };
  const TimeoutFlag timeouts[] = {
      {"--timeout-connect", &out.connect_timeout_ms, "connecting to a server (then the next one)"},
      {"--timeout-client-header", &out.client_header_timeout_ms, "a request head must be complete within (408)"},
      {"--timeout-client-idle", &out.client_idle_timeout_ms, "a client idle, or silent mid-request, or not reading, longer is closed"},
      {"--timeout-upstream", &out.upstream_timeout_ms, "a server silent longer while awaited: 504, or its body is cut"},
      {"--timeout-drain", &out.drain_timeout_ms, "SIGTERM waits this long for requests in flight"},
      {"--timeout-tunnel-idle", &out.tunnel_idle_timeout_ms, "an L4 tunnel with no byte either way this long is closed"},
  };
  for (const TimeoutFlag& f : timeouts) {
    app.add_option_function<std::string>(
           f.name,
           [target = f.out, name = f.name](const std::string& v) {
             const std::int64_t ms = parse_duration_ms(v);
             if (ms <= 0)
               throw CLI::ValidationError(name, "'" + v + "' is not a duration (e.g. 250ms, 10s, 2m)");
             *target = ms;
           },
           f.help)
        ->type_name("DURATION");
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  parse_log_level(level, out.log_level);
  return -1;
}

bool socket_address(std::string_view host, std::uint16_t port, sockaddr_storage& out) noexcept {
  char name[64];  // uv_ip*_addr want a C string; an IPv6 literal is at most 45 bytes
  out = sockaddr_storage{};
  if (host.size() >= sizeof name) return false;
  host.copy(name, host.size());
  name[host.size()] = '\0';
  if (host.find(':') != std::string_view::npos) return uv_ip6_addr(name, port, reinterpret_cast<sockaddr_in6*>(&out)) == 0;
  return uv_ip4_addr(name, port, reinterpret_cast<sockaddr_in*>(&out)) == 0;
}

bool split_host_port(std::string_view text, std::string& host, int& port) {
  std::string_view h, p;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find("]:");
    if (close == std::string_view::npos) return false;
    h = text.substr(1, close - 1);
    p = text.substr(close + 2);
  } else if (const std::size_t colon = text.rfind(':'); colon == std::string_view::npos) {
    h = "127.0.0.1";  // a port alone: loopback, never every interface by accident
    p = text;
  } else {
    if (text.find(':') != colon) return false;
    h = text.substr(0, colon);
    p = text.substr(colon + 1);
  }
  if (p.empty() || p.size() > 5 || h.empty()) return false;
  int n = 0;
  for (char ch : p) {
    if (ch < '0' || ch > '9') return false;
    n = n * 10 + (ch - '0');
  }
  sockaddr_storage ss{};
  if (n > 65535 || !socket_address(h, static_cast<std::uint16_t>(n), ss)) return false;
  host.assign(h);
  port = n;
  return true;
}

std::string join_host_port(std::string_view host, int port) {
  const bool v6 = host.find(':') != std::string_view::npos && host.front() != '[';
  std::string out;
  if (v6) out += '[';
  out.append(host);
  if (v6) out += ']';
  return out + ":" + std::to_string(port);
}

std::int64_t parse_duration_ms(std::string_view t) noexcept {
  std::size_t i = 0;
  std::int64_t n = 0;
  while (i < t.size() && t[i] >= '0' && t[i] <= '9') {
    if (n > 100000000) return -1;
    n = n * 10 + (t[i++] - '0');
  }
  if (i == 0 || n == 0) return -1;
  const std::string_view unit = t.substr(i);
  if (unit == "ms") return n;
  if (unit == "s") return n * 1000;
  if (unit == "m") return n * 60 * 1000;
  if (unit == "h") return n * 3600 * 1000;
  return -1;
}

namespace {

// --instance NAME over `set instance`: the name as the generator checks it,
// and the header line of `set instance.header` made again with it, once.
void set_instance(Config& c, const std::string& name) {
  const bool valid = name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
           ch == '_' || ch == '-';
  });
  if (!valid) throw std::runtime_error("--instance: '" + name + "' is not 1 to 64 letters, digits, '.', '_' or '-'");
  const std::string_view line = c.settings.instance_header;
  const std::string_view header = line.substr(0, line.find(':'));
  std::string text = name;
  if (!line.empty()) text.append(header).append(": ").append(name).append("\r\n");
  c.instance_text = std::make_shared<const std::string>(std::move(text));
  c.settings.instance = std::string_view(*c.instance_text).substr(0, name.size());
  c.settings.instance_header = std::string_view(*c.instance_text).substr(name.size());
}

}  // namespace

Config make_config(const RouteTable& table, const Options& opts) {
  Config c;
  c.table = &table;
  c.settings = table.settings;
  c.log_level = opts.log_level;
  unsigned cores = std::thread::hardware_concurrency();
  c.workers = opts.workers > 0 ? static_cast<std::uint32_t>(opts.workers)
              : table.settings.workers ? table.settings.workers
                                       : (cores ? cores : 1);
  c.port_override = opts.port;
  if (opts.control != "off") c.control_path = opts.control;
  c.upgrade = opts.upgrade;
  c.https_port_override = opts.https_port;
  auto over = [](std::int64_t v, std::uint32_t& field) {
    if (v > 0) field = static_cast<std::uint32_t>(std::min<std::int64_t>(v, UINT32_MAX));
  };
  over(opts.connect_timeout_ms, c.settings.connect_timeout_ms);
  over(opts.client_header_timeout_ms, c.settings.client_header_timeout_ms);
  over(opts.client_idle_timeout_ms, c.settings.client_idle_timeout_ms);
  over(opts.upstream_timeout_ms, c.settings.upstream_timeout_ms);
  over(opts.drain_timeout_ms, c.settings.drain_timeout_ms);
  over(opts.tunnel_idle_timeout_ms, c.settings.tunnel_idle_timeout_ms);
  if (!opts.access_log.empty()) {
    if (opts.access_log == "off") c.settings.access_log = LogTarget::Off;
    else if (opts.access_log == "stdout") c.settings.access_log = LogTarget::Stdout;
    else {
      c.settings.access_log = LogTarget::File;
      c.access_log_path = opts.access_log;
    }
  } else if (c.settings.access_log == LogTarget::File) {
    c.access_log_path = std::string(c.settings.access_log_path);
  }
  if (!opts.access_log_format.empty())
    c.settings.access_log_format = opts.access_log_format == "json" ? AccessLogFormat::Json : AccessLogFormat::Combined;
  if (!opts.instance.empty()) set_instance(c, opts.instance);
  const std::string admin = opts.admin.empty() ? std::string(table.settings.admin_address) : opts.admin;
  if (!admin.empty() && admin != "off") {
    if (!split_host_port(admin, c.admin_host, c.admin_port))
      throw std::runtime_error("--admin: '" + admin + "' is not ADDR:PORT (e.g. 127.0.0.1:9090, [::1]:9090)");
  }
  if (opts.port >= 0) {
    bool has_http = false;
    for (const ListenerDef& l : table.listeners) has_http |= l.kind == ListenKind::Http;
    if (!has_http) throw std::runtime_error("--port: " + std::string(table.source) + " has no http listener");
  }
  if (opts.https_port >= 0) {
    bool has_https = false;
    for (const ListenerDef& l : table.listeners) has_https |= l.kind == ListenKind::Https;
    if (!has_https) throw std::runtime_error("--https-port: " + std::string(table.source) + " has no https listener");
  }
  return c;
}

namespace {
const char* strategy_name(Strategy s) {
  switch (s) {
    case Strategy::RoundRobin: return "round_robin";
    case Strategy::LeastConn: return "least_conn";
    case Strategy::Random: return "random";
    case Strategy::ConsistentHash: return "consistent_hash";
    case Strategy::LeastTime: return "least_time";
  }
  return "?";
}
}  // namespace

const char* listen_kind_name(ListenKind k) noexcept {
  switch (k) {
    case ListenKind::Http: return "http";
    case ListenKind::Https: return "https";
    case ListenKind::Tcp: return "tcp";
    case ListenKind::Tls: return "tls";
  }
  return "?";
}

std::string describe_config(const Config& c) {
  const RouteTable& t = *c.table;
  std::ostringstream o;
  o << "routes compiled from " << t.source;
  if (!t.source_hash.empty()) o << " (sha256 " << t.source_hash << ")";
  o << "\n\nlisteners\n";
  bool first_http = true, first_https = true;
  for (const ListenerDef& l : t.listeners) {
    // The first http / https listener's port is what --port / --https-port say.
    int port = l.port;
    const char* note = "";
    if (l.kind == ListenKind::Http && first_http) {
      first_http = false;
      if (c.port_override >= 0) port = c.port_override, note = "  (--port)";
    } else if (l.kind == ListenKind::Https && first_https) {
      first_https = false;
      if (c.https_port_override >= 0) port = c.https_port_override, note = "  (--https-port)";
    }
    o << "  " << listen_kind_name(l.kind) << "  " << l.host << ":" << port << note;
    if (l.pool >= 0) o << "  pool=" << t.pools[static_cast<std::size_t>(l.pool)].name;
    for (std::uint16_t i = 0; i < l.cert_count; ++i) o << "  cert=" << t.certs[l.first_cert + i].cert_file;
    o << "\n";
  }
  if (c.admin_port >= 0) o << "  admin  " << join_host_port(c.admin_host, c.admin_port) << "  (/metrics, /stats)\n";
  o << "\npools\n";
  for (const PoolDef& p : t.pools) {
    o << "  " << p.name << "  " << strategy_name(p.strategy);
    if (p.health.enabled)
      o << "  health=" << (p.health.tcp ? std::string_view("tcp") : p.health.path) << " every " << p.health.interval_ms
        << "ms";
    o << "\n";
    for (std::uint16_t i = 0; i < p.server_count; ++i) {
      const ServerDef& s = t.servers[p.first_server + i];
      o << "    server " << s.authority << "  weight=" << s.weight << (s.backup ? "  backup" : "") << "\n";
    }
  }
  o << "\nroutes (first match wins)\n";
  for (const RouteDef& r : t.routes) o << "  " << r.index + 1 << ". line " << r.line << ": " << r.text << "\n";
  // Effective settings: routes.def's, with the command line's overrides applied.
  const Settings& s = c.settings;
  const char* log = s.access_log == LogTarget::Off ? "off" : s.access_log == LogTarget::Stdout ? "stdout" : nullptr;
  o << "\nsettings (routes.def + command line)\n  workers " << c.workers
    << (t.settings.workers ? "" : " (auto: one per core)") << "\n  access_log "
    << (log ? log : c.access_log_path.c_str())
    << (s.access_log_format == AccessLogFormat::Json ? " (json)" : " (combined)") << "\n  timeout.connect " << s.connect_timeout_ms
    << "ms, client_header " << s.client_header_timeout_ms << "ms, client_idle " << s.client_idle_timeout_ms
    << "ms, upstream " << s.upstream_timeout_ms << "ms, drain " << s.drain_timeout_ms
    << "ms, tunnel_idle " << s.tunnel_idle_timeout_ms << "ms\n  limit.header_bytes " << s.header_bytes << ", header_count " << s.header_count << ", uri_bytes "
    << s.uri_bytes << ", body_bytes " << s.body_bytes << "\n  drain.delay " << s.drain_delay_ms << "ms";
  if (!s.instance.empty()) o << "\n  instance " << s.instance;
  if (!s.instance_header.empty()) o << "\n  instance.header " << s.instance_header.substr(0, s.instance_header.size() - 2);
  o << "\n";
  return o.str();
}

std::string unsupported_features(const RouteTable&) {
  // Every feature routes.def names is built (the memory and the Redis cache
  // were the last); the check stays for the next one that lands in parts.
  return {};
}

}  // namespace juggler
