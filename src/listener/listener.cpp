// Listeners: accepting connections (one listening socket per worker and
// listen statement, SO_REUSEPORT), refusing them over
// limit.connections_per_worker, and handing them to an HTTP/1 connection.
#include "listener/listener.hpp"

#include "http1/connection.hpp"

namespace juggler {

namespace {

// limit.connections_per_worker reached: the connection is accepted, told 503
// (best effort, one non-blocking write) and closed, so clients are not left
// waiting in the backlog.
void refuse_connection(Worker& w, uv_stream_t* server) {
  auto* t = new uv_tcp_t();
  uv_tcp_init(&w.loop, t);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(t)) == 0) {
    std::string_view bytes = w.shared.error_pages.reply(503, true);
    uv_buf_t b = uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
    uv_try_write(reinterpret_cast<uv_stream_t*>(t), &b, 1);
  }
  ++w.refused_connections;
  uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
}

}  // namespace

void listener_on_connection(uv_stream_t* server, int status) {
  auto* lc = static_cast<ListenerCtx*>(server->data);
  Worker* w = lc->worker;
  if (status < 0) {
    // EMFILE and the like: libuv sheds the pending connections itself; say so
    // at most once a second, not once per connection.
    if (w->now_ms() - w->last_accept_error_ms >= 1000) {
      w->last_accept_error_ms = w->now_ms();
      log(LogLevel::Warn, "accept: %s", uv_strerror(status));
    }
    return;
  }
  const std::uint32_t limit = settings(*w).connections_per_worker;
  if (limit && w->session_count >= limit) {
    refuse_connection(*w, server);
    return;
  }
  client_accept(*w, server, lc->tls ? lc->tls->default_ctx() : nullptr);
}

}  // namespace juggler
