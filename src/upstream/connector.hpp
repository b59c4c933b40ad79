// The upstream connector: pick, connect or reuse (state Connect), the
// parties' timeouts, and the one decision on failures (state Failed).
#pragma once

#include "exchange/exchange.hpp"

namespace juggler {

// The one place that decides what a failure means, from `ex->term` (see
// Termination): retry (Connect), 408 / 502 / 504 (Respond), or a cut (Cut).
State exchange_fail(Exchange* ex);

// The timer fired in `self` (connected): the party the exchange waits for
// was silent too long (Failed), or it re-arms (`self`).
State exchange_timer(Exchange* ex, State self);

// The exchange's timer callback: step(ex, Event::Timer).
void on_exchange_timer(TimerNode* t);

}  // namespace juggler
