// The relay between a client connection and a server connection.
#pragma once

#include "juggler/worker.hpp"

namespace juggler {

// Sends what is pending of the request: the head once, then body bytes as
// they arrive. One write at a time.
void flush_upstream(Exchange* ex);

// While a large body streams, the client buffer is reused from its start once
// everything in it went upstream (the request can then no longer be replayed).
void recycle_client_buffer(Exchange* ex);

// Parses what the server sent and relays the head (edited when needed) and
// the body bytes, one client write per read.
void process_upstream(Exchange* ex);

// Feeds the body bytes in the server buffer (from parse_pos) to the
// response parser. Error: the body is broken and the exchange failed.
ParseEvent feed_response_body(Exchange* ex);

// A client write of the relayed response completed.
void after_client_write(Exchange* ex);

// Everything read from the server went out: its buffer starts over (a bigger
// one for a large body) and reading it resumes.
void read_upstream_on(Exchange* ex);

}  // namespace juggler
