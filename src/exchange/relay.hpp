// The relay between a client connection and a server connection: the states
// Send, AwaitHead, Relay and Finish (declared with the others in
// exchange/exchange.hpp, where step() dispatches to them).
#pragma once

#include "exchange/exchange.hpp"

namespace juggler {

// Feeds the body bytes in the server buffer (from parse_pos) to the response
// parser. Error: the body is broken (Exchange::term says so; the caller
// returns State::Failed).
ParseEvent feed_response_body(Exchange* ex);

// Everything read from the server went out: its buffer starts over (a bigger
// one for a large body) and reading it resumes.
void read_upstream_on(Exchange* ex);

}  // namespace juggler
