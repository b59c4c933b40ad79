// The response filter chain (src/filter): stages transform the body in order,
// a stage may hold input back until the end, and a stage's output memory is
// not reused before the client write that carries it completed (the chain
// refuses more input meanwhile: backpressure).
#include <catch2/catch.hpp>
#include <cctype>
#include <cstring>
#include <string>

#include "filter/filter.hpp"

using namespace juggler;

namespace {

// Upper-cases into one buffer of its own, reused after every written().
struct Upper final : ResponseFilter {
  char buf[256];
  bool held = false;           // output handed out and not written yet
  int overwrites = 0;          // process() while held: the chain let memory be reused too early
  bool process(std::string_view in, bool, FilterOut& out) override {
    if (held && !in.empty()) ++overwrites;
    if (in.size() > sizeof buf) return false;
    for (std::size_t i = 0; i < in.size(); ++i) buf[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(in[i])));
    held = held || !in.empty();
    return out.add(buf, in.size());
  }
  void written() noexcept override { held = false; }
};

// Holds everything back until the end of the body, then brackets it.
struct Hold final : ResponseFilter {
  std::string kept, done;
  bool process(std::string_view in, bool last, FilterOut& out) override {
    kept.append(in);
    if (!last) return true;
    done = "[" + kept + "]";
    return out.add(done.data(), done.size());
  }
  void written() noexcept override {}
};

struct Fails final : ResponseFilter {
  bool process(std::string_view, bool, FilterOut&) override { return false; }
  void written() noexcept override {}
};

// A client write that completes only when the test says so: it keeps the
// slices (not copies), as the relay's pending uv_write does.
struct LateWrite {
  FilterOut pending;
  std::string delivered;
  void start(const FilterOut& out) { pending = out; }
  void complete(FilterChain& chain) {
    for (unsigned i = 0; i < pending.n; ++i) delivered.append(pending.slices[i].base, pending.slices[i].len);
    pending.n = 0;
    chain.written();
  }
};

}  // namespace

TEST_CASE("filters: a stage's memory waits for the client write (backpressure)", "[filter]") {
  Upper up;
  FilterChain chain;
  REQUIRE(chain.add(&up));
  LateWrite client;
  FilterOut out;

  REQUIRE(chain.push("hello", false, out));
  CHECK(out.bytes() == 5);
  CHECK(chain.busy());
  client.start(out);
  // The write is pending: more input is refused, and the pending bytes stay intact.
  CHECK_FALSE(chain.push("xxxxx", false, out));
  client.complete(chain);
  CHECK_FALSE(chain.busy());
  REQUIRE(chain.push(" world", true, out));
  client.start(out);
  client.complete(chain);
  CHECK(client.delivered == "HELLO WORLD");
  CHECK(up.overwrites == 0);
}

TEST_CASE("filters: stages run in order; one may hold the body back until its end", "[filter]") {
  Upper up;
  Hold hold;
  FilterChain chain;
  REQUIRE(chain.add(&up));
  REQUIRE(chain.add(&hold));
  LateWrite client;
  FilterOut out;
  REQUIRE(chain.push("ab", false, out));
  CHECK(out.n == 0);
  CHECK_FALSE(chain.busy());  // nothing to write: the relay reads on
  CHECK_FALSE(up.held);       // and Upper's buffer, copied by Hold, is free again
  REQUIRE(chain.push("cd", false, out));
  REQUIRE(chain.push({}, true, out));  // the end of the body, with no bytes
  client.start(out);
  client.complete(chain);
  CHECK(client.delivered == "[ABCD]");
}

TEST_CASE("filters: a failing stage fails the push; a full chain refuses another stage", "[filter]") {
  Upper up;
  Fails bad;
  FilterChain chain;
  REQUIRE(chain.add(&up));
  REQUIRE(chain.add(&bad));
  FilterOut out;
  CHECK_FALSE(chain.push("x", false, out));
  FilterChain full;
  Upper a, b, c, d, e;
  CHECK(full.add(&a));
  CHECK(full.add(&b));
  CHECK(full.add(&c));
  CHECK(full.add(&d));
  CHECK_FALSE(full.add(&e));
}
