// HTTP/1 client connections (ClientSession, in juggler/worker.hpp): the
// protocol above a byte stream. What the exchange and the listener call.
#pragma once

#include "juggler/worker.hpp"

namespace juggler {

// Accepts a pending connection of `server` into a new session (terminating
// TLS with `tls` when not null) and starts reading its first request.
void client_accept(Worker& w, uv_stream_t* server, SSL_CTX* tls);

// Parses and acts on what the client sent: called after each read and when
// an exchange finished with pipelined bytes waiting.
void process_client(ClientSession* s);

// Writes to the client; true when it all went out now, else
// on_stream_written follows.
bool write_client(ClientSession* s, uv_buf_t* iov, unsigned n);

// Starts or stops reading the client as the buffer, the exchange and
// backpressure allow.
void update_client_reading(ClientSession* s);

// Closes at once: the exchange (and its server connection) is abandoned.
void client_abort(ClientSession* s);

// Closes after the answer was written; with `linger`, the write side is shut
// down first and what the client still sends is discarded for a moment.
void client_finish(ClientSession* s, bool linger);

// The exchange of `s` ended (it was released): closes the connection
// (`close`, lingering with `linger`) or goes on with the next request.
void client_next(ClientSession* s, bool close, bool linger);

// The client's timer: 408 for a slow head, idle close, end of lingering.
void on_client_timer(TimerNode* t);

// Drain: sessions between requests close now; the others close once their
// current response is sent.
void session_drain(Worker& w) noexcept;

// Frees what the worker kept for reuse; call once its loop has ended.
void session_worker_done(Worker& w) noexcept;

}  // namespace juggler
