// The response filter chain (src/filter): stages transform the body in order,
// a stage may hold input back until the end, and a stage's output memory is
// not reused before the client write that carries it completed (the chain
// refuses more input meanwhile: backpressure).
#include <catch2/catch.hpp>
#include <algorithm>
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
  // Takes at most what fits its buffer (Full: the rest comes after written()).
  FilterStatus process(std::string_view in, bool, FilterOut& out, std::size_t* used) noexcept override {
    if (held && !in.empty()) ++overwrites;
    const std::size_t k = std::min(in.size(), sizeof buf);
    for (std::size_t i = 0; i < k; ++i) buf[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(in[i])));
    held = held || k > 0;
    *used = k;
    out.add(buf, k);
    return k == in.size() ? FilterStatus::Done : FilterStatus::Full;
  }
  void written() noexcept override { held = false; }
};

// Holds everything back until the end of the body, then brackets it.
struct Hold final : ResponseFilter {
  std::string kept, done;
  FilterStatus process(std::string_view in, bool last, FilterOut& out, std::size_t* used) noexcept override {
    kept.append(in);
    *used = in.size();
    if (!last) return FilterStatus::Done;
    done = "[" + kept + "]";
    return out.add(done.data(), done.size()) ? FilterStatus::Done : FilterStatus::Failed;
  }
  void written() noexcept override {}
};

struct Fails final : ResponseFilter {
  FilterStatus process(std::string_view, bool, FilterOut&, std::size_t*) noexcept override {
    return FilterStatus::Failed;
  }
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

  std::size_t used = 0;
  REQUIRE(chain.push("hello", false, out, &used) == FilterStatus::Done);
  CHECK(used == 5);
  CHECK(out.bytes() == 5);
  CHECK(chain.busy());
  client.start(out);
  // The write is pending: more input is refused, and the pending bytes stay intact.
  FilterOut refused;
  CHECK(chain.push("xxxxx", false, refused, &used) == FilterStatus::Failed);
  CHECK(used == 0);
  client.complete(chain);
  CHECK_FALSE(chain.busy());
  REQUIRE(chain.push(" world", true, out, &used) == FilterStatus::Done);
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
  std::size_t used = 0;
  REQUIRE(chain.push("ab", false, out, &used) == FilterStatus::Done);
  CHECK(out.n == 0);
  CHECK_FALSE(chain.busy());  // nothing to write: the relay reads on
  CHECK_FALSE(up.held);       // and Upper's buffer, copied by Hold, is free again
  REQUIRE(chain.push("cd", false, out, &used) == FilterStatus::Done);
  REQUIRE(chain.push({}, true, out, &used) == FilterStatus::Done);  // the end of the body, with no bytes
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
  std::size_t used = 0;
  CHECK(chain.push("x", false, out, &used) == FilterStatus::Failed);
  FilterChain full;
  Upper a, b, c, d, e;
  CHECK(full.add(&a));
  CHECK(full.add(&b));
  CHECK(full.add(&c));
  CHECK(full.add(&d));
  CHECK_FALSE(full.add(&e));
}

TEST_CASE("filters: a stage with a full buffer takes part of the input; the rest after the late write",
          "[filter]") {
  Upper up;
  FilterChain chain;
  REQUIRE(chain.add(&up));
  LateWrite client;
  const std::string body(1000, 'q');  // four buffers' worth for Upper
  std::size_t at = 0;
  int writes = 0;
  while (at < body.size()) {
    FilterOut out;
    std::size_t used = 0;
    const FilterStatus st = chain.push(std::string_view(body).substr(at), true, out, &used);
    REQUIRE(st != FilterStatus::Failed);
    CHECK(used <= sizeof up.buf);
    at += used;
    client.start(out);
    // While the write is pending nothing more goes in, whatever is left.
    FilterOut none;
    std::size_t none_used = 0;
    CHECK(chain.push(std::string_view(body).substr(at), true, none, &none_used) == FilterStatus::Failed);
    client.complete(chain);
    ++writes;
  }
  CHECK(writes == 4);
  CHECK(client.delivered == std::string(1000, 'Q'));
  CHECK(up.overwrites == 0);
}
