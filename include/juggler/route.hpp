// The types of a compiled route table: the seam between the code generator
// (codegen/gen_distributer.py, which writes generated/distributer.cpp) and the
// run-time core. The generated file includes this header and nothing else.
//
// Everything here is a literal type so the generator can emit `constexpr`
// arrays; nothing here allocates.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace juggler {

// HTTP methods a route can name. The session maps llhttp's method numbers onto
// these once per request (a 256-entry table); anything else is Method::Other and
// matches only routes written with `*`.
enum class Method : std::uint8_t { Get, Head, Post, Put, Delete, Connect, Options, Trace, Patch, Other };
inline constexpr std::size_t kMethodCount = 10;

struct Header {
  std::string_view name;
  std::string_view value;
};

// What distribute() and the strategies look at. Every view points into the
// session's read buffer; nothing is copied.
struct RequestHead {
  Method method = Method::Other;
  std::string_view target;  // the request-target as received
  std::string_view path;    // target without the query (and without scheme://authority)
  std::string_view query;   // after '?', without it; empty when absent
  std::string_view host;    // Host (or the absolute-form authority) without the port, as received
  std::span<const Header> headers;
  bool secure = false;      // arrived over TLS (`-> redirect https` routes do not match then)

  // First header called `lower_name` (given in lower case), compared without
  // regard to case; empty when absent. A linear scan: only routes with header
  // conditions and hashing strategies call it.
  [[nodiscard]] std::string_view header(std::string_view lower_name) const noexcept;
};

// ASCII case-insensitive equality of `a` with `lower`, which must be lower case.
[[nodiscard]] constexpr bool iequals(std::string_view a, std::string_view lower) noexcept {
  if (a.size() != lower.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
    if (c != lower[i]) return false;
  }
  return true;
}

inline std::string_view RequestHead::header(std::string_view lower_name) const noexcept {
  for (const Header& h : headers)
    if (iequals(h.name, lower_name)) return h.value;
  return {};
}

// ---------------------------------------------------------------- listeners

// Tcp and Tls relay bytes to a pool (L4); Tls terminates TLS first.
enum class ListenKind : std::uint8_t { Http, Https, Tcp, Tls };

struct CertDef {
  std::string_view cert_file;
  std::string_view key_file;
};

struct ListenerDef {
  ListenKind kind;
  std::string_view host;     // numeric address as written: "0.0.0.0", "::", "127.0.0.1"
  std::uint16_t port;
  std::int16_t pool;         // Tcp, Tls: index into pools(); -1 otherwise
  std::uint16_t first_cert;  // Https, Tls: range in certs(); the first is the default
  std::uint16_t cert_count;
  bool proxy_protocol;       // a PROXY v1/v2 header comes first on each connection
  std::uint32_t line;        // routes.def line, for messages
  bool sni = false;          // Tcp: the pool is chosen by the ClientHello's server_name (RouteTable::sni)
  bool h2 = true;            // Https: ALPN offers h2 then http/1.1 (h2=off: http/1.1 alone)
};

// ---------------------------------------------------------------- pools

enum class Strategy : std::uint8_t { RoundRobin, LeastConn, Random, ConsistentHash, LeastTime };
enum class HashKey : std::uint8_t { None, Ip, Header, Cookie, Path, Query };
// `send_proxy=v1|v2`: the PROXY protocol header a pool's server connections
// start with (tcp and tls listeners' pools only).
enum class SendProxy : std::uint8_t { Off, V1, V2 };

struct ServerDef {
  std::string_view host;       // numeric address: "127.0.0.1", "::1"
  std::uint16_t port;
  std::string_view authority;  // "127.0.0.1:6901", "[::1]:6901": logs, redirects, hashing
  std::uint16_t weight;        // 1..256
  bool backup;
  std::uint16_t pool;          // owning pool
  std::uint32_t line;
  // A slot of a `server NAME:PORT resolve` line (1..slots; 0: a numeric
  // server): `host` is then the DNS name, and the address to connect to is
  // the slot's current one (src/resolve), published at run time.
  std::uint8_t slot = 0;
};

// `server NAME:PORT resolve [slots=N] [init=none]`: a name looked up at
// start-up and every `set resolve.interval` off the request path, each
// address filling one of its fixed slots (servers[first_server, +slots)).
struct ResolveDef {
  std::string_view name;  // the DNS name as written
  std::uint16_t port;
  std::uint16_t pool;
  std::uint16_t first_server;
  std::uint8_t slots;
  bool init_none;         // start even when the name does not resolve (the slots empty: 503)
  std::uint32_t line;
};

struct HealthDef {
  bool enabled;
  Method method;
  std::string_view path;
  std::uint32_t interval_ms;
  std::uint32_t timeout_ms;
  std::uint8_t rise;
  std::uint8_t fall;
  std::uint16_t expect_lo;  // accepted status range, inclusive
  std::uint16_t expect_hi;
  bool tcp = false;         // `health tcp`: connecting is the whole check (no request)
};

struct PoolDef {
  std::string_view name;
  Strategy strategy;
  HashKey key;
  std::string_view key_name;  // Header: lower-case header name; Cookie/Query: name as written
  std::uint16_t first_server; // range in servers(); all servers of a pool are contiguous
  std::uint16_t server_count;
  HealthDef health;
  std::uint32_t slow_start_ms;  // 0 = off
  std::uint16_t max_fails;
  std::uint32_t fail_window_ms;
  std::uint32_t line;
  SendProxy send_proxy = SendProxy::Off;
};

// ---------------------------------------------------------------- routes

enum class Action : std::uint8_t {
  Proxy,          // forward to `pool`
  Redirect,       // answer `status` with Location: http://<picked server authority><target>
  RedirectHttps,  // answer `status` with Location: https://<host><target>
  Respond,        // answer `status` with an empty body
  Admin,          // the admin listener's pages (src/admin); never in a compiled table
};

// Response encodings a route may compress with (RouteDef::compress bits).
inline constexpr std::uint8_t kCompressGzip = 1, kCompressBr = 2, kCompressZstd = 4;

struct RouteDef {
  std::uint16_t index;     // position in routes(), file order
  std::uint32_t line;      // routes.def line
  std::string_view text;   // the statement as written (whitespace folded), for --check and logs
  Action action;
  std::int16_t pool;       // Proxy / Redirect; -1 otherwise
  std::uint16_t status;    // Redirect / RedirectHttps / Respond
  std::uint8_t retries;    // Proxy: extra attempts on another server
  std::uint8_t compress;   // kCompress* bits: `gzip`, `compress`, `compress=gzip,br,zstd`
  // 0 = not cached; kCacheNoBound = `cache` without a TTL (the server's
  // freshness, unbounded); else `cache=TTL`: the upper bound of a stored
  // response's freshness, and the freshness of one that names none.
  std::uint32_t cache_ttl_ms;
  // Proxy: the Upgrade tokens (lower case) a request may switch to, tunnelled
  // after a 101; `websocket` unless `upgrade=` lists others; empty: none.
  std::span<const std::string_view> upgrades = {};
};
inline constexpr std::uint32_t kCacheNoBound = 0xFFFFFFFFu;

// ---------------------------------------------------------------- settings

enum class CacheKind : std::uint8_t { Off, Memory, Redis };
enum class LogTarget : std::uint8_t { Off, Stdout, File };
enum class AccessLogFormat : std::uint8_t { Combined, Json };

// An address range (`set cache.purge_from 10.0.0.0/8`): family 0 = none.
struct CidrDef {
  std::uint8_t family;  // 0, 4 or 6
  std::uint8_t bits;    // prefix length
  std::uint8_t addr[16];  // network byte order; 4 bytes used for IPv4
};

struct Settings {
  std::uint16_t workers;  // 0 = auto (one per core)
  LogTarget access_log;
  std::string_view access_log_path;  // File only
  AccessLogFormat access_log_format;
  std::string_view error_pages;      // directory; empty = built-in pages
  std::uint32_t connect_timeout_ms;
  std::uint32_t client_header_timeout_ms;
  std::uint32_t client_idle_timeout_ms;
  std::uint32_t upstream_timeout_ms;
  std::uint32_t drain_timeout_ms;
  std::uint32_t tunnel_idle_timeout_ms;  // L4 tunnels: closed after this long with no byte either way
  std::uint64_t header_bytes;
  std::uint32_t header_count;
  std::uint32_t uri_bytes;
  std::uint64_t body_bytes;
  std::uint32_t requests_per_connection;  // 0 = unlimited
  std::uint32_t connections_per_worker;   // 0 = unlimited
  CacheKind cache;
  std::uint64_t cache_bytes;       // Memory
  std::string_view cache_address;  // Redis: "127.0.0.1:6379"
  std::uint32_t cache_max_object;  // larger responses stream through uncached
  std::string_view cache_redis_prefix;    // Redis: put before every key
  std::uint32_t cache_redis_deadline_ms;  // Redis: a lookup not answered by then bypasses the cache
  CidrDef cache_purge_from;        // who may PURGE (family 0: nobody)
  std::string_view admin_address;  // empty = no admin listener
  std::string_view admin_token_file;  // the bearer token of the admin's control endpoints; empty = none
  std::uint8_t compress_level_gzip;  // 1..9
  std::uint8_t compress_level_br;    // 0..11
  std::uint8_t compress_level_zstd;  // 1..19
  std::uint32_t drain_delay_ms;  // SIGTERM: /ready says 503 at once, the listeners close this much later
  std::string_view instance;     // `set instance`: this process's name in logs and metrics; empty = none
  // `set instance.header NAME`: the whole line "NAME: INSTANCE\r\n", made by the
  // generator, that relayed and cached responses carry; empty = none.
  std::string_view instance_header;
  std::uint32_t resolve_interval_ms = 10000;  // `server ... resolve`: how often the names are looked up again
  // HTTP/2 to clients (src/http2). The defaults live here: the generator
  // writes a field only when routes.def sets it.
  std::uint32_t h2_max_streams = 100;   // SETTINGS_MAX_CONCURRENT_STREAMS
  std::uint32_t h2_glitches = 100;      // resets, empty frames, SETTINGS, PINGs per connection before GOAWAY
  std::uint32_t h2_hpack_table = 4096;  // SETTINGS_HEADER_TABLE_SIZE: the HPACK table we decode with
  std::uint32_t h2_max_frame = 16384;   // SETTINGS_MAX_FRAME_SIZE
};

// A compiled route table: a value, reached through a pointer, so one process
// can hold two (a reload) and one test binary can link several.
struct RouteTable {
  std::string_view source;  // the routes file it was generated from
  const Settings& settings;
  std::span<const ListenerDef> listeners;
  std::span<const CertDef> certs;
  std::span<const PoolDef> pools;
  std::span<const ServerDef> servers;
  std::span<const RouteDef> routes;
  // The first route, in file order, whose method, path pattern and conditions
  // match `head`; nullptr when none does (the caller answers 404). Pure,
  // thread-safe and allocation-free; a pointer into `routes`.
  const RouteDef* (*distribute)(const RequestHead& head) noexcept;
  // `route sni` (listen tcp ... sni): the pool for a ClientHello's server_name
  // (as received, compared without case; empty: none or malformed): an exact
  // name, else the longest matching *.DOMAIN, else `route sni *`; -1 when
  // none matches (the connection is closed). Compiled like distribute().
  int (*sni)(std::string_view server_name) noexcept = nullptr;
  // The first 12 hex digits of the routes file's SHA-256: which table is live
  // (--check, the reload's log line).
  std::string_view source_hash = {};
  // The `server NAME:PORT resolve` lines (their slots are in `servers`).
  std::span<const ResolveDef> resolves = {};
};

// Defined by the generated file that a balancer binary links in (the code
// generator's default --entry): the compiled tables, in static storage. Other
// tables linked into the same program are reached through their own entry.
const RouteTable& route_table() noexcept;

}  // namespace juggler
