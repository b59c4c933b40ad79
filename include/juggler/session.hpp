// Client connections: read, parse, route, proxy, answer. The request path.
#pragma once

#include "juggler/worker.hpp"

namespace juggler {

// Listener callback: accepts every pending connection. `server->data` is the Worker.
void session_on_connection(uv_stream_t* server, int status);

// Drain: sessions between requests close now; the others close once their
// current response is sent.
void session_drain(Worker& w) noexcept;

// Releases the exchange pool and the TLS idle handle (at worker exit, after
// every session closed).
void session_free_exchanges(Worker& w) noexcept;

// Frees what the worker kept for reuse; call once its loop has ended.
void session_worker_done(Worker& w) noexcept;

}  // namespace juggler
