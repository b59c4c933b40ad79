// The relay of a filtered response: what src/exchange/relay.cpp calls when
// an exchange has a filter chain (Exchange::filters), and only then. The
// zero-copy relay pays one pointer test per server read and per completed
// client write, and one byte test per request and per response head.
#pragma once

#include <string_view>

#include "exchange/exchange.hpp"

namespace juggler {

// The request is about to go to the server (its head is still in the client
// buffer): notes what filters its route may run on the response
// (Exchange::filter_want). Call only when the route names a filter.
void filters_note_request(Exchange* ex);

// The final response head was parsed and Exchange::filter_want is set:
// builds the chain (Exchange::filters), or leaves it null when every stage
// steps aside. With a chain, the body is collected decoded and the framing
// becomes ours: chunked, or until close for an HTTP/1.0 client
// (Exchange::client_close is set before the head is built).
void filters_begin(Exchange* ex);

// The lines the chain adds to the response head, followed by `extra` (the
// relay's Connection and Set-Cookie lines), in the chain's memory.
std::string_view filters_head_lines(Exchange* ex, std::string_view extra);

// Instead of the zero-copy relay for each server read in Relay: the `n`
// slices of Exchange::iov already hold the head (first read) or nothing; the
// body bytes parsed from the server buffer run through the chain and go out
// framed, one client write at a time. Returns the next state: Relay (more
// to come, or a write pending), Finish (the last write pending), Done or
// Failed (Exchange::term says why).
State filtered_relay(Exchange* ex, unsigned n);

// The client write of a filtered response completed, in state `s`.
State filtered_written(Exchange* ex, State s);

// Returns the chain to the worker's pool (exchange_put).
void filters_release(Exchange* ex) noexcept;

}  // namespace juggler
