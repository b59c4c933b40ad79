// The strategies beyond round-robin: least_conn, random (power of two
// choices), least_time (peak-EWMA with a fake clock), consistent_hash (Maglev,
// keys, failover, cookie stickiness), slow start, and the hashing and
// randomness underneath.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <string>
#include <vector>

#include "juggler/balance.hpp"

using namespace juggler;

namespace {

constexpr Settings kSettings{};
constexpr HealthDef kNoHealth{false, Method::Get, "", 0, 0, 0, 0, 0, 0};

struct Srv {
  std::string authority;
  std::uint16_t weight = 1;
  bool backup = false;
};

struct PoolSpec {
  PoolSpec(Strategy st, std::vector<Srv> s, HashKey k = HashKey::None, std::string name = "", std::uint32_t slow = 0)
      : strategy(st), servers(std::move(s)), key(k), key_name(std::move(name)), slow_start_ms(slow) {}
  Strategy strategy;
  std::vector<Srv> servers;
  HashKey key;
  std::string key_name;
  std::uint32_t slow_start_ms;
};

// A route table built at run time, with its health array. Not movable: the
// table points into its own vectors.
class Fixture {
 public:
  explicit Fixture(std::vector<PoolSpec> pools) : specs_(std::move(pools)) {
    for (std::size_t pi = 0; pi < specs_.size(); ++pi) {
      const PoolSpec& ps = specs_[pi];
      PoolDef p{"pool", ps.strategy, ps.key, ps.key_name, static_cast<std::uint16_t>(servers_.size()),
                static_cast<std::uint16_t>(ps.servers.size()), kNoHealth, ps.slow_start_ms, 3, 10000, 1};
      pools_.push_back(p);
      for (const Srv& s : ps.servers)
        servers_.push_back(ServerDef{"127.0.0.1", 80, s.authority, s.weight, s.backup, static_cast<std::uint16_t>(pi), 1});
    }
    health_ = std::make_unique<ServerHealth[]>(servers_.size());
    table_ = std::make_unique<RouteTable>(RouteTable{"test", kSettings, {}, {}, pools_, servers_, {}, nullptr});
  }
  Fixture(const Fixture&) = delete;
  Fixture& operator=(const Fixture&) = delete;

  const RouteTable& table() const { return *table_; }
  ServerHealth* health() { return health_.get(); }
  ServerHealth& health(int s) { return health_[s]; }
  std::string_view name(int s) const { return s < 0 ? std::string_view("-") : servers_[s].authority; }

 private:
  std::vector<PoolSpec> specs_;
  std::vector<ServerDef> servers_;
  std::vector<PoolDef> pools_;
  std::unique_ptr<ServerHealth[]> health_;
  std::unique_ptr<RouteTable> table_;
};

std::vector<Srv> named(std::initializer_list<const char*> names) {
  std::vector<Srv> out;
  for (const char* n : names) out.push_back({n});
  return out;
}

std::vector<Srv> numbered(int n) {
  std::vector<Srv> out;
  for (int i = 0; i < n; ++i) out.push_back({"10.0.0." + std::to_string(i + 1) + ":8080"});
  return out;
}

using Hs = std::vector<Header>;

// A request with these headers, path and query.
struct Req {
  std::vector<Header> headers;
  RequestHead head;
  explicit Req(std::vector<Header> h = {}, std::string_view path = "/", std::string_view query = "")
      : headers(std::move(h)) {
    head.method = Method::Get;
    head.path = path;
    head.query = query;
    head.headers = headers;
  }
};

std::map<std::string, int> tally(Fixture& f, Balancer& b, std::uint16_t pool, int n, std::uint64_t now_ms = 0,
                                 const Tried& tried = Tried{}) {
  std::map<std::string, int> counts;
  RequestHead head;
  for (int i = 0; i < n; ++i) ++counts[std::string(f.name(b.pick(pool, head, tried, {"", "", now_ms})))];
  return counts;
}

// The server a key=header:x-user pool picks for `key`.
int pick_key(Balancer& b, std::uint16_t pool, const std::string& key, const Tried& tried = Tried{},
             std::uint64_t now_ms = 0) {
  Req r(Hs{{"X-User", key}});
  return b.pick(pool, r.head, tried, {"", "", now_ms});
}

std::vector<std::string> keys(int n) {
  std::vector<std::string> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.push_back("user-" + std::to_string(i));
  return out;
}

// Which authority owns each key in a table over `servers`.
std::vector<std::string> owners(const std::vector<Srv>& servers, const std::vector<std::string>& ks) {
  std::vector<ServerDef> defs;
  for (const Srv& s : servers) defs.push_back(ServerDef{"127.0.0.1", 80, s.authority, s.weight, s.backup, 0, 1});
  MaglevTable t(defs, false);
  std::vector<std::string> out;
  out.reserve(ks.size());
  for (const std::string& k : ks) out.push_back(servers[t.lookup(hash64(k))].authority);
  return out;
}

double moved(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  int n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return double(n) / double(a.size());
}

}  // namespace

// ---------------------------------------------------------------- hashing and randomness

TEST_CASE("hash64 is xxHash64 on short inputs and depends on every byte and the seed", "[balance]") {
  CHECK(hash64("") == 0xEF46DB3751D8E999ULL);
  CHECK(hash64("abc") == 0x44BC2CF5AD770999ULL);
  CHECK(hash64("abc", 1) != hash64("abc"));
  const std::string long_key(100, 'x');
  std::string other = long_key;
  other[57] = 'y';
  CHECK(hash64(long_key) != hash64(other));
  CHECK(hash64("127.0.0.1:6901") != hash64("127.0.0.1:6902"));
}

TEST_CASE("chacha20 block matches RFC 8439 2.3.2", "[balance]") {
  std::uint32_t key[8];
  for (int i = 0; i < 8; ++i)
    key[i] = std::uint32_t(4 * i) | std::uint32_t(4 * i + 1) << 8 | std::uint32_t(4 * i + 2) << 16 |
             std::uint32_t(4 * i + 3) << 24;
  const std::uint32_t nonce[3] = {0x09000000, 0x4a000000, 0};
  std::uint8_t out[64];
  chacha20_block(key, 1, nonce, out);
  const std::uint8_t expected[64] = {
      0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20, 0x71, 0xc4,
      0xc7, 0xd1, 0xf4, 0xc7, 0x33, 0xc0, 0x68, 0x03, 0x04, 0x22, 0xaa, 0x9a, 0xc3, 0xd4, 0x6c, 0x4e,
      0xd2, 0x82, 0x64, 0x46, 0x07, 0x9f, 0xaa, 0x09, 0x14, 0xc2, 0xd7, 0x05, 0xd9, 0x8b, 0x02, 0xa2,
      0xb5, 0x12, 0x9c, 0xd1, 0xde, 0x16, 0x4e, 0xb9, 0xcb, 0xd0, 0x83, 0xe8, 0xa2, 0x50, 0x3c, 0x4e};
  CHECK(std::equal(out, out + 64, expected));
}

TEST_CASE("minted cookies are 32 lower-case hex digits, distinct, uniformly spread", "[balance]") {
  Fixture f({{Strategy::RoundRobin, named({"a"})}});
  Balancer b(f.table(), f.health());
  Balancer other(f.table(), f.health());
  std::set<std::string> seen;
  std::map<char, int> digits;
  for (int i = 0; i < 2000; ++i) {
    char v[Balancer::kCookieChars];
    b.mint_cookie(v);
    const std::string s(v, sizeof v);
    for (char c : s) {
      REQUIRE(((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')));
      ++digits[c];
    }
    seen.insert(s);
  }
  CHECK(seen.size() == 2000);
  REQUIRE(digits.size() == 16);
  for (auto [c, n] : digits) {  // 64000 digits, 4000 expected each, sd ~ 61
    INFO(c);
    CHECK(n > 3600);
    CHECK(n < 4400);
  }
  char v[Balancer::kCookieChars];
  other.mint_cookie(v);  // two workers do not mint the same sequence
  CHECK(seen.count(std::string(v, sizeof v)) == 0);
}

TEST_CASE("alias table draws in proportion to weight", "[balance]") {
  const ServerDef defs[] = {{"h", 1, "a", 1, false, 0, 1}, {"h", 2, "b", 3, false, 0, 1},
                            {"h", 3, "c", 6, false, 0, 1}, {"h", 4, "z", 5, true, 0, 1}};
  AliasTable t(defs, false);
  std::uint64_t x = 1;
  auto next = [&] {
    x += 0x9E3779B97F4A7C15ULL;
    std::uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  };
  int counts[4] = {};
  for (int i = 0; i < 100000; ++i) ++counts[t.sample(next(), next())];
  CHECK(counts[3] == 0);  // the backup is not in the non-backup tier
  CHECK(counts[0] == Approx(10000).margin(600));
  CHECK(counts[1] == Approx(30000).margin(900));
  CHECK(counts[2] == Approx(60000).margin(900));
  AliasTable backups(defs, true);
  CHECK(backups.sample(next(), next()) == 3);
  CHECK(AliasTable(defs, true).empty() == false);
}

// ---------------------------------------------------------------- keys

TEST_CASE("cookie values: several headers, blanks, quotes, exact names", "[balance]") {
  Req plain(Hs{{"Cookie", "a=1; jsid=abc; b=2"}});
  CHECK(cookie_value(plain.head, "jsid") == "abc");
  CHECK(cookie_value(plain.head, "a") == "1");
  CHECK(cookie_value(plain.head, "b") == "2");
  CHECK(cookie_value(plain.head, "JSID").empty());  // names are case-sensitive

  Req spaced(Hs{{"cookie", "  jsid =  spaced\t;x=y"}});
  CHECK(cookie_value(spaced.head, "jsid") == "spaced");
  Req quoted(Hs{{"Cookie", "jsid=\"q-v\"; other=1"}});
  CHECK(cookie_value(quoted.head, "jsid") == "q-v");
  Req prefixes(Hs{{"Cookie", "xjsid=1; jsidx=2;jsid=3"}});
  CHECK(cookie_value(prefixes.head, "jsid") == "3");
  Req multiple(Hs{{"Cookie", "a=1"}, {"Accept", "jsid=no"}, {"COOKIE", "b=2; jsid=second"}});
  CHECK(cookie_value(multiple.head, "jsid") == "second");
  Req empty_first(Hs{{"Cookie", "jsid=; a=1"}, {"Cookie", "jsid=later"}});
  CHECK(cookie_value(empty_first.head, "jsid") == "later");
  Req none(Hs{{"Cookie", "a=1; jsid"}, {"Set-Cookie", "jsid=x"}});
  CHECK(cookie_value(none.head, "jsid").empty());
  Req no_headers;
  CHECK(cookie_value(no_headers.head, "jsid").empty());
}

TEST_CASE("query values: exact names, empty and valueless parameters", "[balance]") {
  CHECK(query_value("a=1&user=bob&c", "user") == "bob");
  CHECK(query_value("username=x&user=y", "user") == "y");
  CHECK(query_value("user=first&user=second", "user") == "first");
  CHECK(query_value("user", "user").empty());
  CHECK(query_value("user=&x=1", "user").empty());
  CHECK(query_value("", "user").empty());
  CHECK(query_value("a=1&user=%41b", "user") == "%41b");
}

TEST_CASE("hash keys by kind: ip, header, cookie, path, query", "[balance]") {
  Req r(Hs{{"X-Tenant", " acme "}, {"Cookie", "sid=s1"}}, "/cart/42", "uid=7&x=1");
  auto key = [&](HashKey k, const char* name) {
    PoolDef p{"p", Strategy::ConsistentHash, k, name, 0, 0, kNoHealth, 0, 0, 0, 1};
    return std::string(hash_key(p, r.head, "192.0.2.7"));
  };
  CHECK(key(HashKey::Ip, "") == "192.0.2.7");
  CHECK(key(HashKey::Header, "x-tenant") == "acme");
  CHECK(key(HashKey::Header, "x-missing").empty());
  CHECK(key(HashKey::Cookie, "sid") == "s1");
  CHECK(key(HashKey::Path, "") == "/cart/42");
  CHECK(key(HashKey::Query, "uid") == "7");
  CHECK(key(HashKey::None, "").empty());
}

// ---------------------------------------------------------------- Maglev

TEST_CASE("maglev tables are deterministic and independent of the servers' order", "[balance]") {
  const auto servers = numbered(7);
  std::vector<ServerDef> defs, reversed;
  for (const Srv& s : servers) defs.push_back(ServerDef{"127.0.0.1", 80, s.authority, 1, false, 0, 1});
  reversed.assign(defs.rbegin(), defs.rend());
  MaglevTable a(defs, false), b(defs, false), r(reversed, false);
  CHECK(a.size() == 65537);
  CHECK(a.slots() == b.slots());
  int differ = 0;
  for (std::uint32_t i = 0; i < a.size(); ++i)
    differ += defs[a.slots()[i]].authority != reversed[r.slots()[i]].authority;
  CHECK(differ == 0);
  // Pinned: running processes (an old and a new binary during a reload) must
  // agree, so the table of a given server set never changes silently.
  std::uint64_t digest = 0;
  for (std::uint16_t s : a.slots()) digest = digest * 31 + s;
  CHECK(digest == 0xc849405e26e03929ULL);
}

TEST_CASE("maglev table size is a prime of at least 100 slots per server", "[balance]") {
  CHECK(MaglevTable::size_for(1) == 65537);
  CHECK(MaglevTable::size_for(655) == 65537);
  const std::uint32_t m = MaglevTable::size_for(1000);
  CHECK(m >= 100000);
  bool prime = true;
  for (std::uint32_t d = 2; d * d <= m; ++d) prime = prime && m % d != 0;
  CHECK(prime);
}

TEST_CASE("maglev slots follow the weights", "[balance]") {
  const ServerDef defs[] = {{"h", 1, "a:1", 1, false, 0, 1}, {"h", 2, "b:1", 2, false, 0, 1},
                            {"h", 3, "c:1", 3, false, 0, 1}, {"h", 4, "z:1", 9, true, 0, 1}};
  MaglevTable t(defs, false);
  int counts[4] = {};
  for (std::uint16_t s : t.slots()) ++counts[s];
  CHECK(counts[3] == 0);
  CHECK(counts[0] / double(t.size()) == Approx(1 / 6.0).margin(0.005));
  CHECK(counts[1] / double(t.size()) == Approx(2 / 6.0).margin(0.005));
  CHECK(counts[2] / double(t.size()) == Approx(3 / 6.0).margin(0.005));
  MaglevTable backups(defs, true);
  CHECK(std::all_of(backups.slots().begin(), backups.slots().end(), [](std::uint16_t s) { return s == 3; }));
}

TEST_CASE("removing or adding one of N servers moves at most 1.3/N of the keys", "[balance]") {
  const auto ks = keys(100000);
  for (int n : {3, 5, 10}) {
    INFO("N = " << n);
    const auto all = numbered(n);
    const auto before = owners(all, ks);
    for (int gone : {0, n / 2, n - 1}) {
      auto fewer = all;
      fewer.erase(fewer.begin() + gone);
      const double m = moved(before, owners(fewer, ks));
      INFO("removed " << gone << ": moved " << m);
      CHECK(m >= 0.9 / n);  // its own keys had to move
      CHECK(m <= 1.3 / n);
    }
    auto more = all;
    more.push_back({"10.0.1.99:8080"});
    const double m = moved(before, owners(more, ks));
    INFO("added one: moved " << m);
    CHECK(m >= 0.9 / (n + 1));
    CHECK(m <= 1.3 / (n + 1));
  }
}

// ---------------------------------------------------------------- consistent_hash through the balancer

TEST_CASE("consistent_hash: the same key goes to the same server, keys spread by weight", "[balance]") {
  std::vector<Srv> servers = {{"a:1", 1}, {"b:1", 1}, {"c:1", 2}};
  Fixture f({{Strategy::ConsistentHash, servers, HashKey::Header, "x-user"}});
  Balancer w0(f.table(), f.health(), 0), w1(f.table(), f.health(), 1);
  std::map<std::string, int> counts;
  for (const std::string& k : keys(20000)) {
    const int s = pick_key(w0, 0, k);
    REQUIRE(s >= 0);
    REQUIRE(pick_key(w0, 0, k) == s);
    REQUIRE(pick_key(w1, 0, k) == s);  // every worker agrees
    ++counts[std::string(f.name(s))];
  }
  CHECK(counts["a:1"] == Approx(5000).margin(400));
  CHECK(counts["b:1"] == Approx(5000).margin(400));
  CHECK(counts["c:1"] == Approx(10000).margin(400));
}

TEST_CASE("consistent_hash: a down server's keys spread over the others and come back", "[balance]") {
  for (int n : {3, 5, 10}) {
    INFO("N = " << n);
    Fixture f({{Strategy::ConsistentHash, numbered(n), HashKey::Header, "x-user"}});
    Balancer b(f.table(), f.health());
    const auto ks = keys(20000);
    std::vector<int> before;
    for (const auto& k : ks) before.push_back(pick_key(b, 0, k));

    const int dead = n / 2;
    mark_down(f.health(dead));
    std::map<int, int> took;
    int moved_keys = 0;
    for (std::size_t i = 0; i < ks.size(); ++i) {
      const int s = pick_key(b, 0, ks[i]);
      REQUIRE(s >= 0);
      REQUIRE(s != dead);
      if (before[i] != dead) {
        REQUIRE(s == before[i]);  // nobody else's keys move
      } else {
        ++moved_keys;
        ++took[s];
      }
    }
    CHECK(moved_keys / double(ks.size()) <= 1.3 / n);
    CHECK(took.size() == std::size_t(n - 1));  // spread over all the others, not dumped on one
    for (auto [s, c] : took) CHECK(c < 2.0 * moved_keys / (n - 1) + 50);

    mark_up(f.health(dead), 1);
    for (std::size_t i = 0; i < ks.size(); ++i) REQUIRE(pick_key(b, 0, ks[i]) == before[i]);
  }
}

TEST_CASE("consistent_hash: tried servers, backups, nobody left", "[balance]") {
  std::vector<Srv> servers = numbered(4);
  servers.push_back({"backup-1:80", 1, true});
  servers.push_back({"backup-2:80", 1, true});
  Fixture f({{Strategy::ConsistentHash, servers, HashKey::Header, "x-user"}});
  Balancer b(f.table(), f.health());
  const auto ks = keys(2000);
  for (const auto& k : ks) {
    const int first = pick_key(b, 0, k);
    REQUIRE(first >= 0);
    REQUIRE(first < 4);
    Tried tried;
    tried.add(static_cast<std::uint32_t>(first));
    const int retry = pick_key(b, 0, k, tried);
    REQUIRE(retry >= 0);
    REQUIRE(retry < 4);
    REQUIRE(retry != first);
    REQUIRE(pick_key(b, 0, k, tried) == retry);  // a retry is deterministic too
  }
  for (int s = 0; s < 4; ++s) mark_down(f.health(s));
  std::map<int, int> backup_use;
  for (const auto& k : ks) {
    const int s = pick_key(b, 0, k);
    REQUIRE((s == 4 || s == 5));
    REQUIRE(pick_key(b, 0, k) == s);
    ++backup_use[s];
  }
  CHECK(backup_use[4] > 800);
  CHECK(backup_use[5] > 800);
  mark_down(f.health(4));
  mark_down(f.health(5));
  CHECK(pick_key(b, 0, "user-1") == -1);
  mark_up(f.health(2), 1);
  CHECK(pick_key(b, 0, "user-1") == 2);
}

TEST_CASE("consistent_hash: most servers down still finds the survivors", "[balance]") {
  Fixture f({{Strategy::ConsistentHash, numbered(10), HashKey::Header, "x-user"}});
  Balancer b(f.table(), f.health());
  for (int s = 0; s < 9; ++s) mark_down(f.health(s));
  for (const auto& k : keys(2000)) REQUIRE(pick_key(b, 0, k) == 9);
}

TEST_CASE("consistent_hash: with most servers down the survivors share keys by weight", "[balance]") {
  // 21 slots' worth of weight, 4 of them alive: a key's probes all miss about
  // (17/21)^8 = 18% of the time, and the scan after them must weigh too.
  std::vector<Srv> servers = numbered(18);
  servers.push_back({"light:80", 1});
  servers.push_back({"heavy:80", 3});
  Fixture f({{Strategy::ConsistentHash, servers, HashKey::Header, "x-user"}});
  Balancer b(f.table(), f.health());
  for (int s = 0; s < 18; ++s) mark_down(f.health(s));
  int heavy = 0;
  const auto ks = keys(20000);
  for (const auto& k : ks) {
    const int s = pick_key(b, 0, k);
    REQUIRE((s == 18 || s == 19));
    REQUIRE(pick_key(b, 0, k) == s);
    heavy += s == 19;
  }
  CHECK(heavy / double(ks.size()) == Approx(0.75).margin(0.02));
}

TEST_CASE("consistent_hash: requests without the key fall back to round-robin", "[balance]") {
  Fixture f({{Strategy::ConsistentHash, named({"x", "y"}), HashKey::Header, "x-user"},
             {Strategy::ConsistentHash, named({"p", "q"}), HashKey::Query, "uid"}});
  Balancer b(f.table(), f.health());
  CHECK(tally(f, b, 0, 100) == std::map<std::string, int>{{"x", 50}, {"y", 50}});
  std::string seq;
  Req r(Hs{{"X-Other", "1"}}, "/", "id=1&uid=");
  for (int i = 0; i < 4; ++i) seq += f.name(b.pick(1, r.head, Tried{}));
  CHECK((seq == "pqpq" || seq == "qpqp"));
}

TEST_CASE("consistent_hash on ip, path and query keys", "[balance]") {
  Fixture f({{Strategy::ConsistentHash, numbered(5), HashKey::Ip, ""},
             {Strategy::ConsistentHash, numbered(5), HashKey::Path, ""},
             {Strategy::ConsistentHash, numbered(5), HashKey::Query, "uid"}});
  Balancer b(f.table(), f.health());
  std::set<int> by_ip, by_path, by_query;
  for (int i = 0; i < 200; ++i) {
    const std::string ip = "198.51.100." + std::to_string(i);
    const std::string path = "/item/" + std::to_string(i);
    const std::string query = "a=b&uid=" + std::to_string(i);
    Req r({}, path, query);
    const int s_ip = b.pick(0, r.head, Tried{}, {ip, "", 0});
    CHECK(b.pick(0, Req({}, "/elsewhere").head, Tried{}, {ip, "", 0}) == s_ip);
    const int s_path = b.pick(1, r.head, Tried{}, {"203.0.113.1", "", 0});
    CHECK(b.pick(1, Req({}, path, "other=1").head, Tried{}, {"203.0.113.2", "", 0}) == s_path);
    const int s_query = b.pick(2, r.head, Tried{}, {});
    CHECK(b.pick(2, Req({}, "/x", "uid=" + std::to_string(i)).head, Tried{}, {}) == s_query);
    by_ip.insert(s_ip);
    by_path.insert(s_path);
    by_query.insert(s_query);
  }
  CHECK(by_ip.size() == 5);
  CHECK(by_path.size() == 5);
  CHECK(by_query.size() == 5);
}

TEST_CASE("cookie stickiness: a minted value picks the server the cookie will pick", "[balance]") {
  Fixture f({{Strategy::ConsistentHash, numbered(5), HashKey::Cookie, "jsid"},
             {Strategy::ConsistentHash, numbered(5), HashKey::Header, "x-user"},
             {Strategy::RoundRobin, numbered(2)}});
  Balancer b(f.table(), f.health());
  Req bare(Hs{{"Cookie", "other=1"}});
  CHECK(b.needs_cookie(0, bare.head));
  CHECK_FALSE(b.needs_cookie(1, bare.head));
  CHECK_FALSE(b.needs_cookie(2, bare.head));
  std::set<int> used;
  for (int i = 0; i < 100; ++i) {
    char v[Balancer::kCookieChars];
    b.mint_cookie(v);
    const std::string value(v, sizeof v);
    const int first = b.pick(0, bare.head, Tried{}, {"", value, 0});
    REQUIRE(first >= 0);
    used.insert(first);
    const std::string cookie = "other=1; jsid=" + value;
    Req again(Hs{{"Cookie", cookie}});
    CHECK_FALSE(b.needs_cookie(0, again.head));
    // The next request carries the cookie: same server, and a stale minted
    // value (the caller should not pass one) does not override it.
    CHECK(b.pick(0, again.head, Tried{}, {}) == first);
    CHECK(b.pick(0, again.head, Tried{}, {"", "0123", 0}) == first);
  }
  CHECK(used.size() == 5);
}

TEST_CASE("events: every strategy gets the same calls; each acts on those it needs", "[balance]") {
  Fixture f({{Strategy::ConsistentHash, numbered(3), HashKey::Cookie, "jsid"},
             {Strategy::RoundRobin, numbered(2)},
             {Strategy::LeastConn, numbered(2)},
             {Strategy::LeastTime, numbered(2)}});
  Balancer b(f.table(), f.health());
  Req bare(Hs{{"Cookie", "other=1"}});
  char line[256];

  // A sticky pool without the cookie: begin() mints one, the pick hashes on it,
  // and the response carries it.
  BalanceTicket t;
  b.begin(0, bare.head, t);
  REQUIRE(t.minted);
  const std::string value(t.minted_cookie());
  CHECK(value.size() == BalanceTicket::kCookieChars);
  const int s = b.pick(0, bare.head, Tried{}, {"", t.minted_cookie(), 0});
  const std::string cookie = "jsid=" + value;
  Req again(Hs{{"Cookie", cookie}});
  CHECK(b.pick(0, again.head, Tried{}, {}) == s);
  const std::size_t n = b.response_lines(t, line, sizeof line);
  CHECK(std::string(line, n) == "Set-Cookie: jsid=" + value + "; Path=/; HttpOnly\r\n");
  CHECK(b.response_lines(t, line, 10) == 10);  // cut at the room given

  // The same pool with the cookie, and a pool that does not hash: nothing minted or set.
  b.begin(0, again.head, t);
  CHECK_FALSE(t.minted);
  CHECK(t.minted_cookie().empty());
  CHECK(b.response_lines(t, line, sizeof line) == 0);
  b.begin(1, bare.head, t);
  CHECK_FALSE(t.minted);

  // In flight: counted only where the strategy reads it, and once per sent().
  const int rr = f.table().pools[1].first_server;
  b.sent_at(t, rr, 1000);
  CHECK(f.health(rr).inflight.load() == 0);
  b.finish(t);
  const int lc = f.table().pools[2].first_server;
  b.begin(2, bare.head, t);
  b.sent_at(t, lc, 1000);
  CHECK(f.health(lc).inflight.load() == 1);
  b.sent_at(t, lc + 1, 2000);  // a retry: the first attempt is finished first
  CHECK(f.health(lc).inflight.load() == 0);
  CHECK(f.health(lc + 1).inflight.load() == 1);
  b.finish(t);
  b.finish(t);  // idempotent
  CHECK(f.health(lc + 1).inflight.load() == 0);
  b.begin(2, bare.head, t);
  b.sent_at(t, lc, 1000);
  b.begin(2, bare.head, t);  // a ticket reused for the next request ends the last attempt
  CHECK(f.health(lc).inflight.load() == 0);

  // Latency: only least_time learns from response(), with the time since sent().
  const int lt = f.table().pools[3].first_server;
  b.begin(3, bare.head, t);
  b.sent_at(t, lt, 1000);
  b.response_at(t, 6000, 5);
  CHECK(ttfb_estimate_us(f.health(lt), 5) == Approx(5000).epsilon(0.01));
  b.finish(t);
  b.begin(1, bare.head, t);
  b.sent_at(t, rr, 1000);
  b.response_at(t, 9000, 5);
  CHECK(f.health(rr).latency.load() == 0);
}

// ---------------------------------------------------------------- least_conn

TEST_CASE("least_conn: fewest in flight per weight, ties by weighted round-robin", "[balance]") {
  Fixture f({{Strategy::LeastConn, {{"a", 5}, {"b", 1}, {"c", 1}}}});
  Balancer b(f.table(), f.health());
  RequestHead head;
  std::string seq;
  for (int i = 0; i < 7; ++i) seq += f.name(b.pick(0, head, Tried{}));
  CHECK(seq == "aabacaa");  // nothing in flight: the weights' smooth sequence

  f.health(0).inflight = 10;  // a: 10/5 = 2 per weight
  f.health(1).inflight = 1;   // b: 1
  f.health(2).inflight = 3;   // c: 3
  CHECK(f.name(b.pick(0, head, Tried{})) == "b");
  f.health(1).inflight = 2;  // a and b tied at 2: they alternate, c never
  std::map<std::string, int> counts;
  for (int i = 0; i < 60; ++i) ++counts[std::string(f.name(b.pick(0, head, Tried{})))];
  CHECK(counts["c"] == 0);
  CHECK(counts["a"] == 50);  // weighted among the tied: 5 to 1
  CHECK(counts["b"] == 10);
}

TEST_CASE("least_conn: on_start/on_finish under steady concurrency share by weight", "[balance]") {
  Fixture f({{Strategy::LeastConn, {{"a", 3}, {"b", 1}}}});
  Balancer b(f.table(), f.health());
  RequestHead head;
  std::queue<int> open;
  std::map<std::string, int> counts;
  for (int i = 0; i < 8000; ++i) {
    if (open.size() == 8) {
      b.on_finish(open.front());
      open.pop();
    }
    const int s = b.pick(0, head, Tried{});
    b.on_start(s);
    open.push(s);
    ++counts[std::string(f.name(s))];
  }
  CHECK(counts["a"] == Approx(6000).margin(300));
  CHECK(f.health(0).inflight + f.health(1).inflight == 8);
  while (!open.empty()) {
    b.on_finish(open.front());
    open.pop();
  }
  CHECK(f.health(0).inflight == 0);
  CHECK(f.health(1).inflight == 0);
}

TEST_CASE("least_conn: a server far behind takes everything until it catches up", "[balance]") {
  Fixture f({{Strategy::LeastConn, named({"a", "b", "c"})}});
  Balancer b(f.table(), f.health());
  RequestHead head;
  f.health(0).inflight = 5;
  f.health(1).inflight = 5;
  std::string seq;
  for (int i = 0; i < 5; ++i) {
    const int s = b.pick(0, head, Tried{});
    b.on_start(s);
    seq += f.name(s);
  }
  CHECK(seq == "ccccc");
}

// ---------------------------------------------------------------- random (power of two choices)

TEST_CASE("random: idle servers are picked in proportion to weight", "[balance]") {
  Fixture f({{Strategy::Random, {{"a", 1}, {"b", 2}, {"c", 5}}}});
  Balancer b(f.table(), f.health());
  auto counts = tally(f, b, 0, 80000);
  CHECK(counts["a"] == Approx(10000).margin(600));
  CHECK(counts["b"] == Approx(20000).margin(800));
  CHECK(counts["c"] == Approx(50000).margin(1000));
}

TEST_CASE("random: of two choices the one with fewer in flight wins", "[balance]") {
  Fixture f({{Strategy::Random, named({"a", "b", "c"})}});
  Balancer b(f.table(), f.health());
  f.health(0).inflight = 10;
  auto counts = tally(f, b, 0, 30000);
  CHECK(counts.count("a") == 0);  // always paired with a less loaded server
  CHECK(counts["b"] == Approx(15000).margin(600));
  f.health(1).inflight = 5;  // b in between: wins against a (1/3 of pairs), loses against c
  counts = tally(f, b, 0, 30000);
  CHECK(counts.count("a") == 0);
  CHECK(counts["b"] == Approx(10000).margin(600));
  CHECK(counts["c"] == Approx(20000).margin(600));
}

TEST_CASE("random and least_time: down, tried, backup, nobody left", "[balance]") {
  for (Strategy st : {Strategy::Random, Strategy::LeastTime}) {
    INFO(int(st));
    std::vector<Srv> servers = named({"a", "b", "c"});
    servers.push_back({"z", 1, true});
    Fixture f({{st, servers}});
    Balancer b(f.table(), f.health());
    mark_down(f.health(0));
    Tried tried;
    tried.add(1);
    auto counts = tally(f, b, 0, 1000, 0, tried);
    CHECK(counts == std::map<std::string, int>{{"c", 1000}});
    tried.add(2);
    counts = tally(f, b, 0, 100, 0, tried);
    CHECK(counts == std::map<std::string, int>{{"z", 100}});
    mark_down(f.health(3));
    counts = tally(f, b, 0, 10, 0, tried);
    CHECK(counts == std::map<std::string, int>{{"-", 10}});
    mark_up(f.health(0), 1);
    counts = tally(f, b, 0, 10, 0, tried);
    CHECK(counts == std::map<std::string, int>{{"a", 10}});
  }
}

TEST_CASE("round_robin and least_conn: backup only when no other server is left", "[balance]") {
  for (Strategy st : {Strategy::RoundRobin, Strategy::LeastConn}) {
    INFO(int(st));
    std::vector<Srv> servers = named({"a", "b"});
    servers.push_back({"z", 1, true});
    Fixture f({{st, servers}});
    Balancer b(f.table(), f.health());
    CHECK(tally(f, b, 0, 100) == std::map<std::string, int>{{"a", 50}, {"b", 50}});
    mark_down(f.health(0));
    Tried tried;
    tried.add(1);
    CHECK(tally(f, b, 0, 10, 0, tried) == std::map<std::string, int>{{"z", 10}});
  }
}

// ---------------------------------------------------------------- least_time

TEST_CASE("least_time: peak-EWMA math with a fake clock", "[balance]") {
  Fixture f({{Strategy::LeastTime, named({"a"})}});
  Balancer b(f.table(), f.health());
  ServerHealth& h = f.health(0);
  CHECK(ttfb_estimate_us(h, 1000) == 0);
  b.on_response(0, 10000, 1000);
  CHECK(ttfb_estimate_us(h, 1000) == Approx(10000));
  b.on_response(0, 50000, 1000);  // a slower sample: taken at once
  CHECK(ttfb_estimate_us(h, 1000) == Approx(50000));
  // A faster one a time constant later weighs 1 - 1/e; reads decay toward 0.
  CHECK(ttfb_estimate_us(h, 11000) == Approx(50000 / M_E).epsilon(0.001));
  b.on_response(0, 10000, 11000);
  CHECK(ttfb_estimate_us(h, 11000) == Approx(50000 / M_E + 10000 * (1 - 1 / M_E)).epsilon(0.001));
  // Samples 1 ms apart converge over ~τ, not at once.
  for (int i = 1; i <= 10000; ++i) b.on_response(0, 10000, 11000 + i);
  CHECK(ttfb_estimate_us(h, 21000) == Approx(10000 + (50000 / M_E - 10000 / M_E) / M_E).epsilon(0.01));
  // A clock a little behind the stamp (another worker's) counts as no time.
  CHECK(ttfb_estimate_us(h, 20990) == Approx(ttfb_estimate_us(h, 21000)));
}

TEST_CASE("least_time: traffic leaves a slow server within a second and returns after it recovers", "[balance]") {
  // Real sample values: on_response gets the TTFB the simulation knows.
  struct Sim {
    static std::vector<double> run(bool recovers) {
      Fixture f({{Strategy::LeastTime, named({"a", "b"})}});
      Balancer b(f.table(), f.health());
      RequestHead head;
      struct Job {
        std::uint64_t end;
        int server;
        std::uint64_t latency;
        bool operator>(const Job& o) const { return end > o.end; }
      };
      std::priority_queue<Job, std::vector<Job>, std::greater<>> running;
      std::vector<double> share;
      int a = 0;
      const std::uint64_t t0 = 5'000'000;
      for (std::uint64_t t = 0; t < 90'000; ++t) {
        while (!running.empty() && running.top().end <= t) {
          const Job j = running.top();
          running.pop();
          b.on_response(j.server, j.latency * 1000, t0 + t);
          b.on_finish(j.server);
        }
        const int s = b.pick(0, head, Tried{}, {"", "", t0 + t});
        REQUIRE(s >= 0);
        const bool slow = s == 0 && t >= 5000 && (!recovers || t < 15000);
        const std::uint64_t latency = slow ? 1000 : 10;
        b.on_start(s);
        running.push({t + latency, s, latency});
        a += s == 0;
        if (t % 1000 == 999) {
          share.push_back(a / 1000.0);
          a = 0;
        }
      }
      return share;
    }
  };
  const auto recovering = Sim::run(true);
  const auto stays_slow = Sim::run(false);
  for (int sec = 1; sec < 5; ++sec) {
    INFO("second " << sec);
    CHECK(recovering[sec] > 0.35);
    CHECK(recovering[sec] < 0.65);
  }
  for (int sec = 6; sec < 15; ++sec) {
    INFO("second " << sec);
    CHECK(recovering[sec] < 0.01);
  }
  // Probed again once its decayed estimate undercuts the busy fast server,
  // then back to an even share as the estimate settles (τ = 10 s).
  double mid_recovering = 0, mid_slow = 0;
  for (int sec = 30; sec < 45; ++sec) {
    mid_recovering += recovering[sec] / 15;
    mid_slow += stays_slow[sec] / 15;
  }
  CHECK(mid_recovering > 0.05);
  CHECK(mid_slow < 0.01);
  double late_recovering = 0, late_slow = 0;
  for (int sec = 60; sec < 90; ++sec) {
    late_recovering += recovering[sec] / 30;
    late_slow += stays_slow[sec] / 30;
  }
  CHECK(late_recovering > 0.35);
  CHECK(late_recovering < 0.65);
  CHECK(late_slow < 0.01);
}

TEST_CASE("least_time: an unknown server is probed, but one request at a time", "[balance]") {
  Fixture f({{Strategy::LeastTime, named({"known", "new"})}});
  Balancer b(f.table(), f.health());
  RequestHead head;
  b.on_response(0, 5000, 100);
  CHECK(f.name(b.pick(0, head, Tried{}, {"", "", 100})) == "new");  // no sample, idle: costs nothing
  b.on_start(1);
  for (int i = 0; i < 20; ++i) CHECK(f.name(b.pick(0, head, Tried{}, {"", "", 100})) == "known");
  b.on_response(1, 1000, 101);
  b.on_finish(1);
  CHECK(f.name(b.pick(0, head, Tried{}, {"", "", 101})) == "new");  // now known to be faster
}

TEST_CASE("least_time: weights scale the cost", "[balance]") {
  Fixture f({{Strategy::LeastTime, {{"a", 4}, {"b", 1}}}});
  Balancer b(f.table(), f.health());
  RequestHead head;
  b.on_response(0, 30000, 100);  // a is 3x slower but 4x heavier
  b.on_response(1, 10000, 100);
  CHECK(tally(f, b, 0, 100, 100) == std::map<std::string, int>{{"a", 100}});
  b.on_response(0, 50000, 100);  // 5x slower: no longer worth it
  CHECK(tally(f, b, 0, 100, 100) == std::map<std::string, int>{{"b", 100}});
}

// ---------------------------------------------------------------- slow start

TEST_CASE("slow start ramps a recovered server from 10% to its full weight", "[balance]") {
  for (Strategy st : {Strategy::RoundRobin, Strategy::LeastConn, Strategy::Random}) {
    INFO(int(st));
    Fixture f({{st, named({"a", "b"}), HashKey::None, "", 10000}});
    Balancer b(f.table(), f.health());
    const int n = st == Strategy::Random ? 40000 : 3100;
    const double tol = st == Strategy::Random ? 0.015 : 0.002;
    auto share_b = [&](std::uint64_t now) { return tally(f, b, 0, n, now)["b"] / double(n); };
    CHECK(share_b(500) == Approx(0.5).margin(tol));  // up from the start: no ramp
    mark_down(f.health(1));
    CHECK(share_b(800) == 0);
    mark_up(f.health(1), 1000);
    CHECK_FALSE(f.health(1).down.load());
    CHECK(share_b(1000) == Approx(0.1 / 1.1).margin(tol));
    CHECK(share_b(6000) == Approx(0.55 / 1.55).margin(tol));
    CHECK(share_b(11000) == Approx(0.5).margin(tol));
    CHECK(share_b(900000) == Approx(0.5).margin(tol));
  }
}

TEST_CASE("slow start without slow_start= on the pool changes nothing", "[balance]") {
  Fixture f({{Strategy::RoundRobin, named({"a", "b"})}});
  Balancer b(f.table(), f.health());
  mark_down(f.health(1));
  mark_up(f.health(1), 1000);
  CHECK(tally(f, b, 0, 100, 1000) == std::map<std::string, int>{{"a", 50}, {"b", 50}});
}

TEST_CASE("slow start on consistent_hash hands a recovered server its own keys back gradually", "[balance]") {
  Fixture f({{Strategy::ConsistentHash, numbered(4), HashKey::Header, "x-user", 10000}});
  Balancer b(f.table(), f.health());
  const auto ks = keys(20000);
  std::vector<int> home;
  for (const auto& k : ks) home.push_back(pick_key(b, 0, k));
  mark_down(f.health(1));
  mark_up(f.health(1), 1000);
  std::set<std::size_t> prev;
  const int own = int(std::count(home.begin(), home.end(), 1));
  for (std::uint64_t now : {1000, 3000, 6000, 11000}) {
    INFO("now " << now);
    std::set<std::size_t> back;
    for (std::size_t i = 0; i < ks.size(); ++i) {
      const int s = pick_key(b, 0, ks[i], Tried{}, now);
      if (home[i] != 1) REQUIRE(s == home[i]);  // nobody else's keys move
      if (s == 1) back.insert(i);
    }
    const double expected = now >= 11000 ? 1.0 : 0.1 + 0.9 * double(now - 1000) / 10000;
    CHECK(back.size() / double(own) == Approx(expected).margin(0.04));
    CHECK(std::includes(back.begin(), back.end(), prev.begin(), prev.end()));  // keys that came back stay
    prev = back;
  }
}
