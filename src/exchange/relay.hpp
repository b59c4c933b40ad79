// The relay between a client connection and a server connection.
#pragma once

#include "juggler/worker.hpp"

namespace juggler {

// Sends what is pending of the request: the head once, then body bytes as
// they arrive. One write at a time.
void flush_upstream(Exchange* ex);

// Parses what the server sent and relays the head (edited when needed) and
// the body bytes, one client write per read.
void process_upstream(Exchange* ex);

// A client write of the relayed response completed.
void after_client_write(Exchange* ex);

}  // namespace juggler
