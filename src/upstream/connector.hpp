// The upstream connector: pick, connect or reuse, send; failures as values.
#pragma once

#include "exchange/exchange.hpp"

namespace juggler {

// Picks a server for the exchange's pool (skipping those tried) and sends
// the request on an idle connection or a new one; 503 when nobody is usable.
void connect_upstream(Exchange* ex);

// The connection is ready: starts the response parser, the timer, the send.
void send_request(Exchange* ex);

// The one place that decides what a failure means (see Termination): retry,
// 408 / 502 / 504, or a cut of the client connection.
void exchange_fail(Exchange* ex, Termination t);

// The exchange's timer: connect timeout, or the party it waits for is silent.
void on_exchange_timer(TimerNode* t);

}  // namespace juggler
