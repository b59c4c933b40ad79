// distribute() and route_table() of the table generated from tests/routes/dispatch.def
// (tests/CMakeLists.txt links it into unit_tests). Needs nothing from src/: the
// requests are built by hand and RequestHead::header is inline in route.hpp.
#include <catch2/catch.hpp>

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "juggler/route.hpp"

using namespace juggler;
using namespace std::string_literals;

namespace {

constexpr Method kAllMethods[] = {Method::Get,     Method::Head,    Method::Post,  Method::Put,   Method::Delete,
                                  Method::Connect, Method::Options, Method::Trace, Method::Patch, Method::Other};

// The route a request lands on, as the text of its statement ("404" when none),
// so a failure reads like routes.def.
std::string hit(Method m, std::string_view path, std::string_view host = {},
                std::initializer_list<Header> headers = {}) {
  std::vector<Header> hs(headers);
  RequestHead r;
  r.method = m;
  r.path = path;
  r.target = path;
  r.host = host;
  r.headers = hs;
  const RouteDef* d = route_table().distribute(r);
  if (d == nullptr) return "404";
  // The result is an element of route_table().routes, found at its own index.
  const auto routes = route_table().routes;
  REQUIRE(d->index < routes.size());
  REQUIRE(d == &routes[d->index]);
  return std::string(d->text);
}

const char* const kHealthz = "route GET,HEAD /healthz -> respond 200";
const char* const kHealthzPost = "route POST /healthz -> respond 405";
const char* const kPrivate = "route GET /static/private/* -> respond 403";
const char* const kStatic = "route GET,HEAD /static/* -> web gzip cache=60s";
const char* const kImg = "route * /img* -> web";
const char* const kApiHost = "route * /api/* host=api.example.com -> api retries=5";
const char* const kApiTenant = "route * /api/* host=*.tenant.example.com -> api";
const char* const kApiCanary = "route * /api/* header:X-Canary=1 header:X-Team=blue -> fast";
const char* const kApiV1 = "route GET,POST /api/v1/* -> api";
const char* const kApiWrite = "route DELETE,PUT,PATCH /api/* -> respond 403";
const char* const kFiles = "route GET /files/* -> redirect web 302";
const char* const kOld = "route * /old -> redirect https 301";
const char* const kOptions = "route OPTIONS,TRACE,CONNECT /* -> respond 405";
const char* const kExact = "route GET /exact -> web retries=0";
const char* const kExactSlash = "route GET /exact/ -> fast";
const char* const kAB = "route GET /a/b -> web";
const char* const kA = "route GET /a/* -> fast";
const char* const kWww = "route * /* host=www.example.com -> web";
const char* const kCatchAll = "route GET,HEAD /* -> web";

}  // namespace

TEST_CASE("distribute: method lists pick the route naming the method", "[distribute]") {
  CHECK(hit(Method::Get, "/healthz") == kHealthz);
  CHECK(hit(Method::Head, "/healthz") == kHealthz);
  CHECK(hit(Method::Post, "/healthz") == kHealthzPost);
  CHECK(hit(Method::Put, "/healthz") == "404");
  CHECK(hit(Method::Delete, "/healthz") == "404");
  CHECK(hit(Method::Patch, "/healthz") == "404");
  CHECK(hit(Method::Other, "/healthz") == "404");
  CHECK(hit(Method::Options, "/healthz") == kOptions);
  CHECK(hit(Method::Trace, "/healthz") == kOptions);
  CHECK(hit(Method::Connect, "/healthz") == kOptions);
  // The catch-all names GET and HEAD only.
  CHECK(hit(Method::Get, "/nothing/here") == kCatchAll);
  CHECK(hit(Method::Head, "/nothing/here") == kCatchAll);
  CHECK(hit(Method::Post, "/nothing/here") == "404");
  CHECK(hit(Method::Put, "/nothing/here") == "404");
}

TEST_CASE("distribute: `*` methods match every method, Other included", "[distribute]") {
  for (Method m : kAllMethods) {
    INFO("method " << static_cast<int>(m));
    CHECK(hit(m, "/old") == kOld);
    CHECK(hit(m, "/img/logo.png") == kImg);
    // www.example.com (line 53) is after the OPTIONS,TRACE,CONNECT route (line 48) and
    // before the GET,HEAD catch-all (line 54): first match wins.
    const bool options = m == Method::Options || m == Method::Trace || m == Method::Connect;
    CHECK(hit(m, "/anything", "www.example.com") == (options ? kOptions : kWww));
  }
  CHECK(hit(Method::Post, "/anything", "www.example.com") == kWww);
  CHECK(hit(Method::Options, "/anything", "www.example.com") == kOptions);
  CHECK(hit(Method::Other, "/anything", "www.example.com") == kWww);
  CHECK(hit(Method::Other, "/anything") == "404");
}

TEST_CASE("distribute: exact patterns match only their path", "[distribute]") {
  CHECK(hit(Method::Get, "/exact") == kExact);
  CHECK(hit(Method::Get, "/exact/") == kExactSlash);
  CHECK(hit(Method::Get, "/exact/more") == kCatchAll);
  CHECK(hit(Method::Get, "/exac") == kCatchAll);
  CHECK(hit(Method::Get, "/exactly") == kCatchAll);
  CHECK(hit(Method::Get, "/healthz/") == kCatchAll);
  CHECK(hit(Method::Get, "/healthzz") == kCatchAll);
  CHECK(hit(Method::Get, "/Healthz") == kCatchAll);  // paths are case-sensitive
  CHECK(hit(Method::Post, "/old/") == "404");
  CHECK(hit(Method::Post, "/ol") == "404");
}

TEST_CASE("distribute: `/dir/*` matches /dir, /dir/ and below; `/img*` any continuation", "[distribute]") {
  CHECK(hit(Method::Get, "/static") == kStatic);
  CHECK(hit(Method::Get, "/static/") == kStatic);
  CHECK(hit(Method::Get, "/static/app.js") == kStatic);
  CHECK(hit(Method::Head, "/static/css/site.css") == kStatic);
  CHECK(hit(Method::Get, "/staticx") == kCatchAll);
  CHECK(hit(Method::Get, "/stati") == kCatchAll);
  CHECK(hit(Method::Post, "/static/app.js") == "404");

  CHECK(hit(Method::Delete, "/img") == kImg);
  CHECK(hit(Method::Delete, "/imgs/a.png") == kImg);
  CHECK(hit(Method::Delete, "/img.png") == kImg);
  CHECK(hit(Method::Delete, "/images/a.png") == "404");  // "/ima..." does not start with "/img"
  CHECK(hit(Method::Delete, "/img/") == kImg);
  CHECK(hit(Method::Delete, "/im") == "404");
  CHECK(hit(Method::Get, "/im") == kCatchAll);

  CHECK(hit(Method::Get, "/files") == kFiles);
  CHECK(hit(Method::Get, "/files/report.pdf") == kFiles);
  CHECK(hit(Method::Get, "/filesystem") == kCatchAll);

  // `/*` matches every path that starts with '/' (and the empty path).
  CHECK(hit(Method::Get, "/") == kCatchAll);
  CHECK(hit(Method::Get, "") == kCatchAll);
  CHECK(hit(Method::Options, "/") == kOptions);
  CHECK(hit(Method::Get, "*") == "404");  // OPTIONS * style targets are not paths
  CHECK(hit(Method::Options, "*") == "404");
}

TEST_CASE("distribute: first match in file order across overlapping patterns", "[distribute]") {
  // /static/private/* is written before /static/*: it wins for GET, not for HEAD.
  CHECK(hit(Method::Get, "/static/private") == kPrivate);
  CHECK(hit(Method::Get, "/static/private/") == kPrivate);
  CHECK(hit(Method::Get, "/static/private/key.pem") == kPrivate);
  CHECK(hit(Method::Head, "/static/private/key.pem") == kStatic);
  CHECK(hit(Method::Get, "/static/privately") == kStatic);

  // The exact /a/b before the prefix /a/*.
  CHECK(hit(Method::Get, "/a/b") == kAB);
  CHECK(hit(Method::Get, "/a/b/") == kA);
  CHECK(hit(Method::Get, "/a/bc") == kA);
  CHECK(hit(Method::Get, "/a") == kA);
  CHECK(hit(Method::Get, "/a/") == kA);
  CHECK(hit(Method::Get, "/ab") == kCatchAll);
  CHECK(hit(Method::Head, "/a/b") == kCatchAll);

  // Conditional /api/* routes come before the unconditional /api/v1/* and /api/*.
  CHECK(hit(Method::Get, "/api/v1/users", "api.example.com") == kApiHost);
  CHECK(hit(Method::Get, "/api/v1/users") == kApiV1);
  CHECK(hit(Method::Post, "/api/v1") == kApiV1);
  CHECK(hit(Method::Post, "/api/v1/") == kApiV1);
  CHECK(hit(Method::Post, "/api/v1x") == "404");
  CHECK(hit(Method::Post, "/api/v2/users") == "404");
  CHECK(hit(Method::Get, "/api/v2/users") == kCatchAll);
  CHECK(hit(Method::Delete, "/api/v1/users") == kApiWrite);
  CHECK(hit(Method::Put, "/api") == kApiWrite);
  CHECK(hit(Method::Patch, "/api/") == kApiWrite);
  CHECK(hit(Method::Delete, "/apix") == "404");
  CHECK(hit(Method::Delete, "/api/x", "api.example.com") == kApiHost);
}

TEST_CASE("distribute: host conditions are case-insensitive; *.domain needs a label before it",
          "[distribute]") {
  CHECK(hit(Method::Post, "/api/x", "api.example.com") == kApiHost);
  CHECK(hit(Method::Post, "/api/x", "API.Example.COM") == kApiHost);
  CHECK(hit(Method::Other, "/api", "api.example.com") == kApiHost);
  CHECK(hit(Method::Post, "/api/x", "api.example.com.evil") == "404");
  CHECK(hit(Method::Post, "/api/x", "xapi.example.com") == "404");
  CHECK(hit(Method::Post, "/api/x", "api.example.co") == "404");
  CHECK(hit(Method::Post, "/api/x", "") == "404");

  CHECK(hit(Method::Post, "/api/x", "a.tenant.example.com") == kApiTenant);
  CHECK(hit(Method::Post, "/api/x", "A.TENANT.Example.Com") == kApiTenant);
  CHECK(hit(Method::Post, "/api/x", "b.a.tenant.example.com") == kApiTenant);
  CHECK(hit(Method::Post, "/api/x", "tenant.example.com") == "404");
  CHECK(hit(Method::Post, "/api/x", ".tenant.example.com") == "404");  // no label before it
  CHECK(hit(Method::Post, "/api/x", "atenant.example.com") == "404");
  CHECK(hit(Method::Post, "/api/x", "a.tenant.example.com.") == "404");

  CHECK(hit(Method::Post, "/x", "WWW.example.com") == kWww);
  CHECK(hit(Method::Post, "/x", "www.example.com:8080") == "404");  // host is given without port
}

TEST_CASE("distribute: header conditions all have to hold; names ignore case, values do not",
          "[distribute]") {
  const Header canary{"X-Canary", "1"};
  const Header team{"X-Team", "blue"};
  CHECK(hit(Method::Post, "/api/x", {}, {canary, team}) == kApiCanary);
  CHECK(hit(Method::Post, "/api/x", {}, {team, canary}) == kApiCanary);
  CHECK(hit(Method::Post, "/api/x", {}, {{"x-canary", "1"}, {"X-TEAM", "blue"}}) == kApiCanary);
  CHECK(hit(Method::Post, "/api/x", {}, {{"Accept", "*/*"}, canary, {"Via", "1.1 a"}, team}) == kApiCanary);
  CHECK(hit(Method::Post, "/api/x", {}, {canary}) == "404");
  CHECK(hit(Method::Post, "/api/x", {}, {team}) == "404");
  CHECK(hit(Method::Post, "/api/x", {}, {canary, {"X-Team", "Blue"}}) == "404");
  CHECK(hit(Method::Post, "/api/x", {}, {{"X-Canary", "10"}, team}) == "404");
  CHECK(hit(Method::Post, "/api/x", {}, {{"X-Canary", ""}, team}) == "404");
  // The first header of a name is the one compared.
  CHECK(hit(Method::Post, "/api/x", {}, {{"X-Canary", "0"}, canary, team}) == "404");
  // Host conditions of earlier routes still come first.
  CHECK(hit(Method::Post, "/api/x", "api.example.com", {canary, team}) == kApiHost);
  CHECK(hit(Method::Get, "/api/v1/x", {}, {canary, team}) == kApiCanary);
  CHECK(hit(Method::Get, "/other", {}, {canary, team}) == kCatchAll);
}

TEST_CASE("route_table: the settings, set and defaulted", "[distribute][route_table]") {
  const RouteTable& t = route_table();
  CHECK(t.source == "tests/routes/dispatch.def");
  const Settings& s = t.settings;
  CHECK(s.workers == 2);
  CHECK(s.access_log == LogTarget::File);
  CHECK(s.access_log_path == "/var/log/juggler/access.log");
  CHECK(s.error_pages.empty());
  CHECK(s.connect_timeout_ms == 1500);
  CHECK(s.client_header_timeout_ms == 10000);
  CHECK(s.client_idle_timeout_ms == 60000);
  CHECK(s.upstream_timeout_ms == 30000);
  CHECK(s.drain_timeout_ms == 0);
  CHECK(s.header_bytes == 16 * 1024);
  CHECK(s.header_count == 100);
  CHECK(s.uri_bytes == 8 * 1024);
  CHECK(s.body_bytes == 1024ull * 1024 * 1024);
  CHECK(s.requests_per_connection == 1000);
  CHECK(s.connections_per_worker == 0);
  CHECK(s.cache == CacheKind::Memory);
  CHECK(s.cache_bytes == 32u * 1024 * 1024);
  CHECK(s.cache_address.empty());
  CHECK(s.admin_address == "[::1]:9090");
}

TEST_CASE("route_table: listeners and certificates", "[distribute][route_table]") {
  const RouteTable& t = route_table();
  REQUIRE(t.listeners.size() == 3);
  const ListenerDef& http = t.listeners[0];
  CHECK(http.kind == ListenKind::Http);
  CHECK(http.host == "127.0.0.1");
  CHECK(http.port == 18070);
  CHECK(http.pool == -1);
  CHECK(http.cert_count == 0);
  CHECK(http.line == 16);

  const ListenerDef& https = t.listeners[1];
  CHECK(https.kind == ListenKind::Https);
  CHECK(https.host == "::");
  CHECK(https.port == 18443);
  CHECK(https.pool == -1);
  REQUIRE(https.cert_count == 2);
  REQUIRE(t.certs.size() == 2);
  CHECK(https.first_cert == 0);
  CHECK(t.certs[0].cert_file == "certs/a.crt");  // the first pair is the default
  CHECK(t.certs[0].key_file == "certs/a.key");
  CHECK(t.certs[1].cert_file == "certs/b.crt");
  CHECK(t.certs[1].key_file == "certs/b.key");

  const ListenerDef& tcp = t.listeners[2];
  CHECK(tcp.kind == ListenKind::Tcp);
  CHECK(tcp.host == "0.0.0.0");  // written `*`
  CHECK(tcp.port == 18071);
  REQUIRE(tcp.pool >= 0);
  CHECK(t.pools[static_cast<std::size_t>(tcp.pool)].name == "db");
}

TEST_CASE("route_table: pools and their servers", "[distribute][route_table]") {
  const RouteTable& t = route_table();
  REQUIRE(t.pools.size() == 4);
  REQUIRE(t.servers.size() == 7);

  const PoolDef& web = t.pools[0];
  CHECK(web.name == "web");
  CHECK(web.strategy == Strategy::RoundRobin);
  CHECK(web.key == HashKey::None);
  CHECK(web.key_name.empty());
  CHECK(web.first_server == 0);
  CHECK(web.server_count == 3);
  CHECK(web.slow_start_ms == 0);  // defaults
  CHECK(web.max_fails == 3);
  CHECK(web.fail_window_ms == 10000);
  CHECK(web.line == 20);
  CHECK(web.health.enabled);
  CHECK(web.health.method == Method::Get);
  CHECK(web.health.path == "/ping");
  CHECK(web.health.interval_ms == 5000);
  CHECK(web.health.timeout_ms == 1000);
  CHECK(web.health.rise == 3);
  CHECK(web.health.fall == 2);
  CHECK(web.health.expect_lo == 200);
  CHECK(web.health.expect_hi == 299);

  const PoolDef& api = t.pools[1];
  CHECK(api.name == "api");
  CHECK(api.strategy == Strategy::ConsistentHash);
  CHECK(api.key == HashKey::Header);
  CHECK(api.key_name == "x-user");  // header names are stored lower case
  CHECK(api.first_server == 3);
  CHECK(api.server_count == 2);
  CHECK(api.slow_start_ms == 30000);
  CHECK(api.max_fails == 5);
  CHECK(api.fail_window_ms == 60000);
  CHECK_FALSE(api.health.enabled);

  CHECK(t.pools[2].name == "db");
  CHECK(t.pools[2].strategy == Strategy::LeastConn);
  CHECK(t.pools[3].name == "fast");
  CHECK(t.pools[3].strategy == Strategy::LeastTime);
  CHECK(t.pools[3].first_server == 6);
  CHECK(t.pools[3].server_count == 1);

  const ServerDef& s0 = t.servers[0];
  CHECK(s0.host == "127.0.0.1");
  CHECK(s0.port == 6901);
  CHECK(s0.authority == "127.0.0.1:6901");
  CHECK(s0.weight == 1);
  CHECK_FALSE(s0.backup);
  CHECK(s0.pool == 0);
  CHECK(s0.line == 21);
  CHECK(t.servers[1].weight == 3);
  const ServerDef& v6 = t.servers[2];
  CHECK(v6.host == "::1");
  CHECK(v6.port == 6903);
  CHECK(v6.authority == "[::1]:6903");
  CHECK(v6.backup);
  CHECK(t.servers[5].authority == "127.0.0.1:5432");
  CHECK(t.servers[5].pool == 2);

  // Every pool's servers are contiguous and point back at it.
  for (std::size_t p = 0; p < t.pools.size(); ++p)
    for (std::size_t i = 0; i < t.pools[p].server_count; ++i)
      CHECK(t.servers[t.pools[p].first_server + i].pool == p);
}

TEST_CASE("route_table: routes in file order with their actions and options", "[distribute][route_table]") {
  const auto routes = route_table().routes;
  REQUIRE(routes.size() == 19);
  for (std::size_t i = 0; i < routes.size(); ++i) CHECK(routes[i].index == i);

  const RouteDef& healthz = routes[0];
  CHECK(healthz.line == 36);
  CHECK(healthz.text == kHealthz);  // whitespace folded, no comment
  CHECK(healthz.action == Action::Respond);
  CHECK(healthz.status == 200);
  CHECK(healthz.pool == -1);

  const RouteDef& st = routes[3];
  CHECK(st.text == kStatic);
  CHECK(st.action == Action::Proxy);
  CHECK(st.pool == 0);
  CHECK(st.compress == kCompressGzip);
  CHECK(st.cache_ttl_ms == 60000);
  CHECK(st.retries == 2);  // the default

  CHECK(routes[4].text == kImg);  // the trailing comment is not part of it
  CHECK(routes[5].pool == 1);
  CHECK(routes[5].retries == 5);
  CHECK(routes[5].compress == 0);
  CHECK(routes[5].cache_ttl_ms == 0);
  CHECK(routes[7].pool == 3);

  const RouteDef& files = routes[10];
  CHECK(files.action == Action::Redirect);
  CHECK(files.pool == 0);
  CHECK(files.status == 302);

  const RouteDef& old = routes[11];
  CHECK(old.text == kOld);
  CHECK(old.action == Action::RedirectHttps);
  CHECK(old.pool == -1);
  CHECK(old.status == 301);

  CHECK(routes[13].text == kExact);
  CHECK(routes[13].retries == 0);
  CHECK(routes[18].text == kCatchAll);
  CHECK(routes[18].line == 54);
}

// tests/routes/basic.def, linked into the same program under another entry.
namespace juggler {
const RouteTable& basic_table() noexcept;
}

TEST_CASE("two compiled tables live side by side, each reached through its own value", "[distribute]") {
  const RouteTable& dispatch = route_table();
  const RouteTable& basic = basic_table();
  REQUIRE(&dispatch != &basic);
  CHECK(dispatch.source == "tests/routes/dispatch.def");
  CHECK(basic.source == "tests/routes/basic.def");
  REQUIRE(dispatch.distribute != basic.distribute);

  RequestHead r;
  r.method = Method::Get;
  r.path = r.target = "/ping";
  // basic.def routes /ping to its pool; each table answers with a route of its own.
  const RouteDef* b = basic.distribute(r);
  REQUIRE(b != nullptr);
  CHECK(b == &basic.routes[b->index]);
  CHECK(b->text == "route * /ping -> web");
  const RouteDef* d = dispatch.distribute(r);
  if (d) CHECK(d == &dispatch.routes[d->index]);
  CHECK(d != b);

  // A path only basic.def knows nothing of: 404 there.
  r.path = r.target = "/nowhere/at/all";
  CHECK(basic.distribute(r) == nullptr);
}
