// HTTP/2 client connections (src/http2): what the HTTP/1 connection, the
// runtime and the drain call. nghttp2 stays behind this header.
#pragma once

#include "juggler/worker.hpp"

namespace juggler {

struct H2Conn;
struct ClientSession;

// The TLS handshake of `s` chose h2 (ALPN): an HTTP/2 connection takes its
// stream over, with the bytes already read (the client preface) in `s->in`.
// The session stays allocated and on the worker's session list (the drain and
// the connection count see it) until the stream closes; then it goes back to
// the free list.
void h2_adopt(ClientSession* s);

// Drain (SIGTERM): GOAWAY with the last stream id; the streams in flight
// finish, then the connection closes.
void h2_drain(H2Conn* c) noexcept;

// The worker's loop is ending (every connection closed): its idle handle
// closes. Then, after the loop ended, h2_worker_done frees what was kept for
// reuse.
void h2_worker_close(Worker& w) noexcept;
void h2_worker_done(Worker& w) noexcept;

}  // namespace juggler
