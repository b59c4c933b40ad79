// gzip (zlib), br (libbrotli) and zstd (libzstd) as streaming response
// filters. Each encoder has one fixed output buffer: when it is full the
// stage takes no more input until the client write carrying it completed
// (FilterStatus::Full), so a stream costs the encoder's state plus kOut
// whatever the body's size and the client's speed. Encoders are pooled per
// thread (one worker) and reset between responses: zlib and zstd keep their
// memory across resets (no allocation per response in steady state); brotli
// has no reset, so its state is made anew per response (bounded by kBrWindow)
// from memory its encoder recycles (BlockCache).
#include "filter/compress.hpp"

#include <brotli/encode.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>

#include "juggler/free_list.hpp"

namespace juggler {

namespace {

constexpr std::size_t kOut = 16 * 1024;  // output buffer per stream
constexpr int kBrWindow = 18;            // 256 KB: brotli's default (4 MB) is too much per stream
constexpr int kZstdWindow = 18;          // the same bound for zstd (its level 3 default is 2 MB)
constexpr unsigned kKeepPerKind = 16;    // idle encoders kept per thread and kind

bool starts_with_lower(std::string_view v, std::string_view lower) noexcept {
  return v.size() >= lower.size() && iequals(v.substr(0, lower.size()), lower);
}

bool ends_with_lower(std::string_view v, std::string_view lower) noexcept {
  return v.size() >= lower.size() && iequals(v.substr(v.size() - lower.size()), lower);
}

// A q-value in thousandths ("1", "0.5", "0.125"); -1 when malformed.
int parse_q(std::string_view q) noexcept {
  if (q.empty() || (q[0] != '0' && q[0] != '1')) return -1;
  int value = (q[0] - '0') * 1000;
  if (q.size() == 1) return value;
  if (q[1] != '.' || q.size() > 5) return -1;
  int scale = 100;
  for (std::size_t i = 2; i < q.size(); ++i, scale /= 10) {
    if (q[i] < '0' || q[i] > '9') return -1;
    value += (q[i] - '0') * scale;
  }
  return value > 1000 ? -1 : value;
}

bool has_token(std::string_view list, std::string_view lower) noexcept {
  bool found = false;
  for_each_token(list, [&](std::string_view e) { found = found || iequals(e, lower); });
  return found;
}

// q per coding in thousandths, -1 while not named; index 0 is `*`.
struct Weights {
  int q[4] = {-1, -1, -1, -1};
};

// Reads one Accept-Encoding field line into `w` (a later line adds to it).
void weigh(std::string_view accept_encoding, Weights& w) noexcept {
  for_each_token(accept_encoding, [&](std::string_view e) {
    const std::size_t semi = e.find(';');
    const std::string_view name = trim_ows(e.substr(0, semi));
    int value = 1000;
    if (semi != std::string_view::npos) {
      // Only q is defined for Accept-Encoding (RFC 9110 12.5.3).
      const std::string_view param = trim_ows(e.substr(semi + 1));
      if (param.size() >= 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=')
        value = parse_q(trim_ows(param.substr(2, param.find(';') - 2)));
      if (value < 0) return;  // a malformed element is ignored
    }
    int slot = -1;
    if (name == "*") slot = 0;
    else if (iequals(name, "gzip") || iequals(name, "x-gzip")) slot = 1;
    else if (iequals(name, "br")) slot = 2;
    else if (iequals(name, "zstd")) slot = 3;
    if (slot >= 0) w.q[slot] = std::max(w.q[slot], value);
  });
}

std::uint8_t pick(const Weights& w, std::uint8_t allowed) noexcept {
  // The server's order breaks ties: zstd, then br, then gzip.
  static constexpr struct {
    int slot;
    std::uint8_t bit;
  } kOrder[] = {{3, kCompressZstd}, {2, kCompressBr}, {1, kCompressGzip}};
  std::uint8_t best = 0;
  int best_q = 0;
  for (const auto& o : kOrder) {
    if (!(allowed & o.bit)) continue;
    const int v = w.q[o.slot] >= 0 ? w.q[o.slot] : w.q[0];
    if (v > best_q) {
      best_q = v;
      best = o.bit;
    }
  }
  return best;
}

}  // namespace

std::uint8_t negotiate_encoding(std::string_view accept_encoding, std::uint8_t allowed) noexcept {
  Weights w;
  weigh(accept_encoding, w);
  return pick(w, allowed);
}

std::uint8_t negotiate_encoding(std::span<const Header> headers, std::uint8_t allowed) noexcept {
  // Several Accept-Encoding lines are one comma-separated list (RFC 9110 5.3).
  Weights w;
  for (const Header& h : headers)
    if (iequals(h.name, "accept-encoding")) weigh(h.value, w);
  return pick(w, allowed);
}

bool compressible_type(std::string_view content_type) noexcept {
  const std::string_view t = trim_ows(content_type.substr(0, content_type.find(';')));
  if (starts_with_lower(t, "text/")) return !iequals(t, "text/event-stream");
  if (starts_with_lower(t, "application/")) {
    const std::string_view sub = t.substr(12);
    return iequals(sub, "json") || iequals(sub, "javascript") || iequals(sub, "x-javascript") ||
           iequals(sub, "ecmascript") || iequals(sub, "xml") || iequals(sub, "wasm") ||
           ends_with_lower(sub, "+json") || ends_with_lower(sub, "+xml");
  }
  return iequals(t, "image/svg+xml");
}

bool compress_worth(const MessageParser& r) noexcept {
  if (r.has_content_length() && r.content_length() < kCompressMinBytes) return false;
  const int type = find_header(r, "content-type");
  if (type < 0 || !compressible_type(r.header_value(r.headers()[type]))) return false;
  const int coding = find_header(r, "content-encoding");
  if (coding >= 0 && !iequals(r.header_value(r.headers()[coding]), "identity")) return false;
  for (std::uint32_t i = 0; i < r.header_count(); ++i) {
    const HeaderSpan& h = r.headers()[i];
    if (iequals(r.header_name(h), "cache-control") && has_token(r.header_value(h), "no-transform")) return false;
  }
  return true;
}

namespace {

// What every encoder shares: the head edits, the
// output buffer and the pool link.
class Encoder : public ResponseFilter {
 public:
  Encoder(std::uint8_t kind, std::string_view name) noexcept : kind_(kind), name_(name) {}
  std::uint8_t kind() const noexcept { return kind_; }
  // Ready for a new response; false when the encoder could not be set up.
  virtual bool reset() noexcept = 0;
  // Back in the pool until the next reset(): may give up per-response memory.
  virtual void idle() noexcept {}
  bool head(HeadEdit& e) noexcept override;
  void written() noexcept override {}  // every process() starts with an empty buffer
  Encoder* next_free = nullptr;

 protected:
  // The output of one call: what the encoder put into out_.
  FilterStatus result(std::size_t produced, bool took_all, bool finished, bool last, FilterOut& out) noexcept {
    out.add(out_, produced);
    return (last ? finished : took_all) ? FilterStatus::Done : FilterStatus::Full;
  }
  char out_[kOut];

 private:
  std::uint8_t kind_;
  std::string_view name_;
};

bool Encoder::head(HeadEdit& e) noexcept {
  // compress_worth said yes: an absent or identity Content-Encoding.
  const int coding = e.find("content-encoding");
  if (!e.add("Content-Encoding", name_)) return false;
  if (coding >= 0) e.drop(coding);
  // Caches must keep the encodings apart: Vary names Accept-Encoding, merged
  // into the server's Vary (a second line when the merged one does not fit).
  const int vary = e.find("vary");
  if (vary < 0) {
    e.add("Vary", "Accept-Encoding");
  } else if (!has_token(e.value(vary), "accept-encoding") && !has_token(e.value(vary), "*")) {
    if (e.add("Vary", e.value(vary), ", Accept-Encoding")) e.drop(vary);
    else e.add("Vary", "Accept-Encoding");
  }
  // The bytes differ from the identity response's: a strong validator would
  // be a lie (RFC 9110 8.8.1), a weak one still revalidates.
  const int etag = e.find("etag");
  if (etag >= 0 && !starts_with_lower(e.value(etag), "w/")) {
    e.add("ETag", "W/", e.value(etag));
    e.drop(etag);
  }
  // Ranges of the identity body mean nothing in the encoded one.
  if (const int ranges = e.find("accept-ranges"); ranges >= 0) e.drop(ranges);
  e.changes_length = true;
  return true;
}

class Gzip final : public Encoder {
 public:
  explicit Gzip(int level) noexcept : Encoder(kCompressGzip, "gzip") {
    // windowBits 15 + 16: a gzip wrapper; memLevel 8: zlib's default (~256 KB).
    ok_ = deflateInit2(&z_, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK;
  }
  ~Gzip() override {
    if (ok_) deflateEnd(&z_);
  }
  bool reset() noexcept override { return ok_ && deflateReset(&z_) == Z_OK; }
  FilterStatus process(std::string_view in, bool last, FilterOut& out, std::size_t* used) noexcept override {
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z_.avail_in = static_cast<uInt>(in.size());
    z_.next_out = reinterpret_cast<Bytef*>(out_);
    z_.avail_out = kOut;
    const int rc = deflate(&z_, last ? Z_FINISH : Z_NO_FLUSH);
    if (rc == Z_STREAM_ERROR) return FilterStatus::Failed;
    *used = in.size() - z_.avail_in;
    return result(kOut - z_.avail_out, z_.avail_in == 0, rc == Z_STREAM_END, last, out);
  }

 private:
  z_stream z_{};
  bool ok_ = false;
};

// Brotli's memory, recycled: it has no reset, so its state is made anew per
// response, and the ~20 blocks it takes (hash tables, ring buffer: 0.5 MB
// and up at level 4) come from the blocks the previous response gave back
// instead of from malloc. Best fit, at most twice the size asked; at most
// kMaxBytes kept (about the whole state of a level-4 stream).
class BlockCache {
 public:
  BlockCache() noexcept = default;
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;
  ~BlockCache() {
    for (unsigned i = 0; i < n_; ++i) std::free(blocks_[i]);
  }
  static void* alloc(void* self, std::size_t size) noexcept { return static_cast<BlockCache*>(self)->take(size); }
  static void release(void* self, void* p) noexcept {
    if (p) static_cast<BlockCache*>(self)->give(static_cast<char*>(p) - kHeader);
  }

 private:
  // A block starts with its size; brotli gets what follows.
  static constexpr std::size_t kHeader = alignof(std::max_align_t);
  static constexpr unsigned kMax = 64;
  static constexpr std::size_t kMaxBytes = std::size_t{4} << 20;
  static std::size_t size_of(const void* block) noexcept { return *static_cast<const std::size_t*>(block); }

  void* take(std::size_t size) noexcept {
    unsigned best = n_;
    for (unsigned i = 0; i < n_; ++i) {
      const std::size_t have = size_of(blocks_[i]);
      if (have >= size && have / 2 <= size && (best == n_ || have < size_of(blocks_[best]))) best = i;
    }
    void* block;
    if (best < n_) {
      block = blocks_[best];
      blocks_[best] = blocks_[--n_];
      bytes_ -= size_of(block);
    } else {
      block = std::malloc(kHeader + size);
      if (!block) return nullptr;
      *static_cast<std::size_t*>(block) = size;
    }
    return static_cast<char*>(block) + kHeader;
  }
  void give(void* block) noexcept {
    const std::size_t size = size_of(block);
    if (n_ == kMax || bytes_ + size > kMaxBytes) {
      std::free(block);
      return;
    }
    blocks_[n_++] = block;
    bytes_ += size;
  }

  void* blocks_[kMax] = {};
  unsigned n_ = 0;
  std::size_t bytes_ = 0;
};

class Brotli final : public Encoder {
 public:
  explicit Brotli(int level) noexcept : Encoder(kCompressBr, "br"), level_(level) {}
  ~Brotli() override { idle(); }
  bool reset() noexcept override {
    idle();
    s_ = BrotliEncoderCreateInstance(&BlockCache::alloc, &BlockCache::release, &blocks_);
    return s_ && BrotliEncoderSetParameter(s_, BROTLI_PARAM_QUALITY, static_cast<std::uint32_t>(level_)) &&
           BrotliEncoderSetParameter(s_, BROTLI_PARAM_LGWIN, kBrWindow);
  }
  // Back in the pool: the state's memory waits in blocks_ for the next response.
  void idle() noexcept override {
    if (s_) BrotliEncoderDestroyInstance(s_);
    s_ = nullptr;
  }
  FilterStatus process(std::string_view in, bool last, FilterOut& out, std::size_t* used) noexcept override {
    std::size_t avail_in = in.size();
    const auto* next_in = reinterpret_cast<const std::uint8_t*>(in.data());
    std::size_t avail_out = kOut;
    auto* next_out = reinterpret_cast<std::uint8_t*>(out_);
    const BrotliEncoderOperation op = last ? BROTLI_OPERATION_FINISH : BROTLI_OPERATION_PROCESS;
    if (!BrotliEncoderCompressStream(s_, op, &avail_in, &next_in, &avail_out, &next_out, nullptr))
      return FilterStatus::Failed;
    *used = in.size() - avail_in;
    const bool finished = BrotliEncoderIsFinished(s_) && !BrotliEncoderHasMoreOutput(s_);
    return result(kOut - avail_out, avail_in == 0, finished, last, out);
  }

 private:
  BlockCache blocks_;
  BrotliEncoderState* s_ = nullptr;
  int level_;
};

class Zstd final : public Encoder {
 public:
  explicit Zstd(int level) noexcept : Encoder(kCompressZstd, "zstd"), c_(ZSTD_createCCtx()) {
    ok_ = c_ && !ZSTD_isError(ZSTD_CCtx_setParameter(c_, ZSTD_c_compressionLevel, level)) &&
          !ZSTD_isError(ZSTD_CCtx_setParameter(c_, ZSTD_c_windowLog, kZstdWindow));
  }
  ~Zstd() override { ZSTD_freeCCtx(c_); }
  bool reset() noexcept override { return ok_ && !ZSTD_isError(ZSTD_CCtx_reset(c_, ZSTD_reset_session_only)); }
  FilterStatus process(std::string_view in, bool last, FilterOut& out, std::size_t* used) noexcept override {
    ZSTD_inBuffer src{in.data(), in.size(), 0};
    ZSTD_outBuffer dst{out_, kOut, 0};
    const std::size_t left = ZSTD_compressStream2(c_, &dst, &src, last ? ZSTD_e_end : ZSTD_e_continue);
    if (ZSTD_isError(left)) return FilterStatus::Failed;
    *used = src.pos;
    return result(dst.pos, src.pos == src.size, left == 0, last, out);
  }

 private:
  ZSTD_CCtx* c_;
  bool ok_ = false;
};

// Idle encoders of this thread (a worker), per kind (slot_of).
thread_local FreeList<Encoder, kKeepPerKind> t_pool[3];

unsigned slot_of(std::uint8_t kind) noexcept { return kind == kCompressGzip ? 0 : kind == kCompressBr ? 1 : 2; }

}  // namespace

ResponseFilter* compressor_get(std::uint8_t encoding, const Settings& settings) {
  Encoder* e = t_pool[slot_of(encoding)].pop();
  if (!e) {
    if (encoding == kCompressGzip) e = new Gzip(settings.compress_level_gzip);
    else if (encoding == kCompressBr) e = new Brotli(settings.compress_level_br);
    else e = new Zstd(settings.compress_level_zstd);
  }
  if (!e->reset()) {
    delete e;
    return nullptr;
  }
  return e;
}

void compressor_put(ResponseFilter* f) noexcept {
  auto* e = static_cast<Encoder*>(f);
  e->idle();
  t_pool[slot_of(e->kind())].push(e);
}

}  // namespace juggler
