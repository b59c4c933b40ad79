// Runtime control through the admin listener: drain a server, make it ready
// again, change its weight. Each is one store into the server's ServerHealth
// (balance.hpp) in the table serving now, which every worker's next pick
// reads: nothing is sent to the workers and nothing waits for them. Lasts
// until restart; a reload carries it over to the next table (by identity).
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "admin/admin.hpp"
#include "exchange/exchange.hpp"

namespace juggler {

namespace {

constexpr std::string_view kText = "text/plain; charset=utf-8";

// Compares without stopping at the first difference, so the time taken does
// not tell how much of a guess was right.
bool same_secret(std::string_view a, std::string_view b) noexcept {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

// "N" in 1..256 (a compiled weight's range); 0 when it is not.
std::uint16_t parse_weight(std::string_view v) noexcept {
  if (v.empty() || v.size() > 3) return 0;
  unsigned n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return 0;
    n = n * 10 + static_cast<unsigned>(c - '0');
  }
  return n >= 1 && n <= 256 ? static_cast<std::uint16_t>(n) : 0;
}

}  // namespace

std::string read_admin_token(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  if (in) text << in.rdbuf();
  std::string token = text.str();
  const std::size_t begin = token.find_first_not_of(" \t\r\n");
  const std::size_t end = token.find_last_not_of(" \t\r\n");
  token = begin == std::string::npos ? std::string() : token.substr(begin, end - begin + 1);
  if (!in || token.empty())
    throw std::runtime_error("set admin_token_file: cannot read a token from " + path +
                             (in ? " (it is empty)" : ": no such file or not readable"));
  return token;
}

State admin_control(Exchange* ex) {
  Shared& shared = ex->worker->shared;
  const Routing& live = live_routing(shared);  // admin_respond holds reload_lock
  const RouteTable& t = *live.table;
  // /servers/POOL/AUTHORITY/ACTION
  std::string_view rest = ex->head.path.substr(std::string_view("/servers/").size());
  const std::size_t slash1 = rest.find('/');
  const std::size_t slash2 = rest.rfind('/');
  if (slash1 == std::string_view::npos || slash2 == slash1) {
    return admin_answer(ex, 404, kText, "expected /servers/POOL/HOST:PORT/drain, /ready or /weight?w=N\n");
  }
  const std::string_view pool = rest.substr(0, slash1);
  const std::string_view authority = rest.substr(slash1 + 1, slash2 - slash1 - 1);
  const std::string_view action = rest.substr(slash2 + 1);
  if (action != "drain" && action != "ready" && action != "weight") {
    return admin_answer(ex, 404, kText, "unknown action: expected drain, ready or weight?w=N\n");
  }
  if (ex->head.method != Method::Post) {
    return admin_answer(ex, 405, kText, "method not allowed: control takes POST\n", "Allow: POST\r\n");
  }
  if (shared.admin_token.empty()) {
    return admin_answer(ex, 403, kText, "runtime control is off: set admin_token_file in routes.def\n");
  }
  std::string_view auth = ex->head.header("authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (!auth.starts_with(kBearer) || !same_secret(auth.substr(kBearer.size()), shared.admin_token)) {
    return admin_answer(ex, 401, kText, "unauthorized: send Authorization: Bearer <the token of admin_token_file>\n",
                 "WWW-Authenticate: Bearer realm=\"juggler\"\r\n");
  }
  const int found = find_server(t, pool, authority);
  if (found < 0) {
    return admin_answer(ex, 404, kText, "no such server in that pool\n");
  }
  const auto server = static_cast<std::size_t>(found);
  ServerHealth& h = live.health[server];
  if (action == "weight") {
    const std::uint16_t w = parse_weight(query_value(ex->head.query, "w"));
    if (w == 0) {
      return admin_answer(ex, 400, kText, "weight?w=N takes N from 1 to 256\n");
    }
    h.weight.store(w, std::memory_order_relaxed);
  } else {
    h.drained.store(action == "drain", std::memory_order_relaxed);
  }
  const ServerDef& d = t.servers[server];
  const unsigned weight = server_weight(live, server);
  log(LogLevel::Info, "admin: server %.*s in pool %.*s: %.*s (weight %u)", static_cast<int>(d.authority.size()),
      d.authority.data(), static_cast<int>(pool.size()), pool.data(), static_cast<int>(action.size()), action.data(),
      weight);
  std::string body = "{\"pool\":\"" + std::string(pool) + "\",\"server\":\"" + std::string(d.authority) +
                     "\",\"state\":\"" + std::string(server_state(live, server)) +
                     "\",\"weight\":" + std::to_string(weight) + "}\n";
  return admin_answer(ex, 200, "application/json", body);
}

}  // namespace juggler
