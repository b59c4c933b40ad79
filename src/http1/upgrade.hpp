// HTTP/1 connections that switched protocols (WebSocket): after the 101 the
// client's stream and the server connection's stream are joined by a Tunnel.
#pragma once

#include "juggler/worker.hpp"

namespace juggler {

struct Exchange;

// The exchange's tunnel hook (set_tunnel_hook, set at start-up): takes the
// client session and the server connection of an exchange whose 101 came.
void http1_upgrade(Exchange* ex);

// Closes every upgraded connection of `w` (the end of a drain).
void upgrades_close_all(Worker& w) noexcept;

}  // namespace juggler
