// Listening sockets' accept callback.
#pragma once

#include "juggler/worker.hpp"

namespace juggler {

// What a listening socket's callback needs: its worker, and the TLS context
// when it is an https listener; and the state of its accept pacing.
struct ListenerCtx {
  Worker* worker;
  // An https listener's certificates, which a reload may replace (the main
  // thread stores, the next accept loads); null for plain http.
  const std::atomic<TlsContext*>* tls;
  const ListenerDef* def;  // its listen statement (kind, proxy_protocol, sni)
  // Its sockets and certificates (src/runtime/listeners); null for the admin
  // listener. A tcp or tls listener finds its pool in the worker's table by it.
  const ListenerSlot* slot = nullptr;
  uv_stream_t* server = nullptr;
  // Accept pacing (listener.cpp, kAcceptsPerTurn): past the turn's quota, a
  // connection is left to libuv (which then stops watching the socket) and
  // accepted from the prepare phase, before the next poll.
  uv_prepare_t prepare{};
  std::uint32_t accepted = 0;  // since the last prepare phase
  bool deferred = false;       // libuv holds an accepted descriptor for us
};

// Sets up `lc` for the listening `server` (whose data is &lc) on `loop`.
void listener_init(ListenerCtx& lc, uv_loop_t* loop, uv_stream_t* server) noexcept;
// Closes what listener_init opened (the listening handle is closed by its owner).
void listener_close(ListenerCtx& lc) noexcept;

// Accepts pending connections. `server->data` is the ListenerCtx.
void listener_on_connection(uv_stream_t* server, int status);

}  // namespace juggler
