// The relay between a client connection and a server connection: the states
// Send, AwaitHead, Relay and Finish (declared with the others in
// exchange/exchange.hpp, where step() dispatches to them).
#pragma once

#include "exchange/exchange.hpp"
