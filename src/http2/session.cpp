// See session.hpp.
#include "http2/session.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <sys/mman.h>

namespace juggler {

nghttp2_session_callbacks* h2_callbacks_new(const H2Callbacks& cb) noexcept {
  nghttp2_session_callbacks* c = nullptr;
  if (nghttp2_session_callbacks_new(&c) != 0) return nullptr;
  nghttp2_session_callbacks_set_on_begin_headers_callback(c, cb.begin_headers);
  nghttp2_session_callbacks_set_on_header_callback2(c, cb.header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(c, cb.frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(c, cb.data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(c, cb.stream_close);
  if (cb.invalid_frame) nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(c, cb.invalid_frame);
  if (cb.begin_frame) nghttp2_session_callbacks_set_on_begin_frame_callback(c, cb.begin_frame);
  if (cb.send_data) nghttp2_session_callbacks_set_send_data_callback(c, cb.send_data);
  return c;
}

namespace {

nghttp2_option* options() {
  static nghttp2_option* opt = [] {
    nghttp2_option* o = nullptr;
    nghttp2_option_new(&o);
    nghttp2_option_set_no_auto_window_update(o, 1);
    return o;
  }();
  return opt;
}

}  // namespace

// ---------------------------------------------------------------- H2Mem

namespace {

// A block: a 16-byte header (its class; kBig: from malloc; kMapped: its own
// pages, the mapping's length after the class), then the bytes nghttp2
// gets, aligned as malloc's.
constexpr std::size_t kHeader = 16;
constexpr std::uint32_t kBig = 0xffffffffU;
constexpr std::uint32_t kMapped = 0xfffffffeU;
// A session's large blocks (its 16 KB frame buffer, its 4 KB stream map) are
// mapped pages of their own: an idle connection touches the first page of
// each, where from malloc the whole buffer (and the zeroed map) is resident:
// 43 KB per idle h2 connection became 30 KB. A mapping that fails (the map
// count limit) falls back to malloc.
constexpr std::size_t kMapFrom = 4000;

void* map_block(std::size_t bytes) noexcept {
  if (bytes > UINT32_MAX) return nullptr;
  void* b = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (b == MAP_FAILED) return nullptr;
  static_cast<std::uint32_t*>(b)[0] = kMapped;
  static_cast<std::uint32_t*>(b)[1] = static_cast<std::uint32_t>(bytes);
  return static_cast<char*>(b) + kHeader;
}

std::uint32_t& class_of(void* ptr) noexcept { return *reinterpret_cast<std::uint32_t*>(static_cast<char*>(ptr) - kHeader); }

// The bytes a kMapped block gives.
std::size_t mapped_room(void* ptr) noexcept { return (&class_of(ptr))[1] - kHeader; }

}  // namespace

H2Mem::H2Mem() noexcept : mem_{this, alloc, release, zalloc, resize} {}

H2Mem::~H2Mem() {
  for (Free*& head : free_) {
    while (Free* f = head) {
      head = f->next;
      std::free(f);
    }
  }
}

void* H2Mem::alloc(std::size_t size, void* self) noexcept {
  auto* m = static_cast<H2Mem*>(self);
  std::uint32_t c = 0;
  while (c < kClasses && (std::size_t{64} << c) < size + kHeader) ++c;
  void* block = nullptr;
  if (c == kClasses) {
    if (size > SIZE_MAX - kHeader) return nullptr;
    if (size >= kMapFrom)
      if (void* p = map_block(size + kHeader)) return p;
    block = std::malloc(size + kHeader);
  } else if (Free* f = m->free_[c]) {
    m->free_[c] = f->next;
    m->kept_[c] -= std::size_t{64} << c;
    block = f;
  } else {
    block = std::malloc(std::size_t{64} << c);
  }
  if (!block) return nullptr;
  *static_cast<std::uint32_t*>(block) = c == kClasses ? kBig : c;
  return static_cast<char*>(block) + kHeader;
}

void H2Mem::release(void* ptr, void* self) noexcept {
  if (!ptr) return;
  auto* m = static_cast<H2Mem*>(self);
  const std::uint32_t c = class_of(ptr);
  void* block = static_cast<char*>(ptr) - kHeader;
  if (c == kMapped) {
    munmap(block, mapped_room(ptr) + kHeader);
    return;
  }
  if (c == kBig || m->kept_[c] + (std::size_t{64} << c) > kKeepBytes) {
    std::free(block);
    return;
  }
  auto* f = static_cast<Free*>(block);
  f->next = m->free_[c];
  m->free_[c] = f;
  m->kept_[c] += std::size_t{64} << c;
}

void* H2Mem::zalloc(std::size_t n, std::size_t size, void* self) noexcept {
  if (size && n > SIZE_MAX / size) return nullptr;
  void* p = alloc(n * size, self);
  if (p && class_of(p) != kMapped) std::memset(p, 0, n * size);  // fresh pages are zero
  return p;
}

void* H2Mem::resize(void* ptr, std::size_t size, void* self) noexcept {
  if (!ptr) return alloc(size, self);
  const std::uint32_t c = class_of(ptr);
  if (c == kBig) {
    void* block = std::realloc(static_cast<char*>(ptr) - kHeader, size + kHeader);
    return block ? static_cast<char*>(block) + kHeader : nullptr;
  }
  const std::size_t room = c == kMapped ? mapped_room(ptr) : (std::size_t{64} << c) - kHeader;
  if (size <= room) return ptr;
  void* p = alloc(size, self);
  if (!p) return nullptr;  // ptr stays valid, as realloc's
  std::memcpy(p, ptr, room);
  release(ptr, self);
  return p;
}

// ---------------------------------------------------------------- the session

bool h2_session_start(nghttp2_session** ng, const nghttp2_session_callbacks* cbs, void* user, const H2Limits& l,
                      H2Mem* mem) noexcept {
  if (nghttp2_session_server_new3(ng, cbs, user, options(), mem ? mem->mem() : nullptr) != 0) return false;
  const nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, l.max_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, l.window},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, l.header_bytes},
      {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, l.hpack_table},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, l.max_frame},
  };
  if (nghttp2_submit_settings(*ng, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]) != 0) return false;
  const std::uint64_t conn_window = std::min<std::uint64_t>(std::uint64_t{l.max_streams} * l.window, INT32_MAX);
  return nghttp2_session_set_local_window_size(*ng, NGHTTP2_FLAG_NONE, 0, static_cast<std::int32_t>(conn_window)) == 0;
}

}  // namespace juggler
