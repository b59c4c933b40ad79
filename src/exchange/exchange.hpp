// Exchanges: one request and its response (struct Exchange, in
// juggler/worker.hpp). Pooled per worker.
#pragma once

#include "juggler/worker.hpp"

namespace juggler {

// An exchange from the worker's pool (arrays sized from limit.header_count).
Exchange* exchange_get(Worker& w);
// Resets it for a new request on `s`.
void exchange_begin(Exchange* ex, ClientSession* s);
// Back to the pool.
void exchange_put(Worker& w, Exchange* ex);

// The request head is complete: route it and start what the route says.
void on_request_head(Exchange* ex);

// Ends the balancer's events for the attempt and lets go of the server
// connection: back to its idle list with `reuse`, else closed.
void detach_upstream(Exchange* ex, bool reuse);

// Copies the request line, Referer and User-Agent for the access log, before
// a streamed body may reuse the buffer the head was in.
void copy_log_fields(Exchange* ex);

// The access log line of the exchange (when the log is on).
void log_exchange(Exchange* ex);

// The answer is complete (or given up): logs, releases the server connection
// and the exchange, and tells the client connection what comes next.
void finish_exchange(Exchange* ex);

// Releases the exchange pool and the streams' idle handle (at worker exit,
// after every session closed).
void session_free_exchanges(Worker& w) noexcept;

}  // namespace juggler
