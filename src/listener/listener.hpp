// Listening sockets' accept callback.
#pragma once

#include "juggler/worker.hpp"

namespace juggler {

// What a listening socket's callback needs: its worker, and the TLS context
// when it is an https listener.
struct ListenerCtx {
  Worker* worker;
  TlsContext* tls;  // null for plain http
};

// Accepts every pending connection. `server->data` is the ListenerCtx.
void listener_on_connection(uv_stream_t* server, int status);

}  // namespace juggler
