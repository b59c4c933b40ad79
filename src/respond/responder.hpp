// Local answers: the balancer's own responses, written through the client
// connection like relayed ones.
#pragma once

#include <string_view>

#include "exchange/exchange.hpp"

namespace juggler {

// Each prepares a local answer (the exchange's `answer`, written in state
// Respond) and returns State::Respond; the bytes are constant or in the
// exchange's scratch, valid until it ends.

// Answers `status` with `keep` (keep-alive) or `close` (Connection: close)
// bytes; a request whose body was not read entirely closes the connection.
State reply_local(Exchange* ex, int status, std::string_view keep, std::string_view close);
// The error page of `status` (custom or built in; HEAD gets the head only).
State reply_error(Exchange* ex, int status);
// An error before or while the head is parsed: answer, then close (lingering).
State reply_and_close(Exchange* ex, int status);
// `-> redirect POOL CODE` / `-> redirect https CODE`.
State reply_redirect(Exchange* ex);

}  // namespace juggler
