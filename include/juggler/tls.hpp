// TLS termination with OpenSSL 3 over BIOs in memory (a memory BIO in, our
// own appending BIO out): the libuv loop moves the ciphertext, OpenSSL never
// touches a socket, nothing blocks.
#pragma once

#include <openssl/ssl.h>
#include <uv.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "juggler/route.hpp"

namespace juggler {

// The certificates of one `listen https` statement, shared by every worker
// (an SSL_CTX is thread-safe once configured). The first certificate is the
// default; the others are chosen by SNI against their subjectAltNames / CN.
class TlsContext {
 public:
  // Throws std::runtime_error naming the file (and `make ssl_cert`) when a
  // certificate or key is missing, unreadable, or the key does not match.
  TlsContext(const RouteTable& table, const ListenerDef& listener);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  SSL_CTX* default_ctx() const noexcept { return certs_.front().ctx; }

 private:
  struct Cert {
    SSL_CTX* ctx;
    std::vector<std::string> names;  // lower case; "*.example.com" for wildcards
  };
  static int on_servername(SSL* ssl, int* alert, void* arg);
  SSL_CTX* ctx_for(std::string_view name) const noexcept;
  std::vector<Cert> certs_;
};

// One TLS connection's state. Owned by its client session.
class TlsStream {
 public:
  explicit TlsStream(SSL_CTX* ctx);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  enum class Read { Data, NeedMore, Closed, Error };

  // Ciphertext from the network.
  void feed(const char* data, std::size_t len);
  // Plaintext into [dst, dst+cap): Data with *got > 0, NeedMore (feed more;
  // the handshake may have produced bytes to send), Closed (close_notify),
  // Error (handshake failure or garbage; an alert may be waiting to be sent).
  Read read(char* dst, std::size_t cap, std::size_t* got);
  // Whether read() could return data without more input.
  bool buffered() const noexcept;
  // Encrypts all of iov[0..n) (the output BIO takes everything).
  bool write(const uv_buf_t* iov, unsigned n);
  // The ciphertext waiting to be sent becomes `out` (what `out` held is
  // dropped: its write ended); returns its size (0: nothing to send).
  std::size_t take_output();
  bool has_output() const noexcept;
  // Gives back buffers grown past `keep` bytes (`out` must not be in a write).
  void trim(std::size_t keep) noexcept;
  // A graceful close: queues close_notify (once the handshake is done), so
  // the client can tell a complete answer from one cut short. Returns whether
  // there is ciphertext to send.
  bool shutdown() noexcept;
  bool handshake_done() const noexcept { return SSL_is_init_finished(ssl_) == 1; }
  bool session_reused() const noexcept { return SSL_session_reused(ssl_) == 1; }
  const char* last_error() const noexcept { return error_; }
  const char* version() const noexcept { return SSL_get_version(ssl_); }
  // The handshake chose HTTP/2 through ALPN.
  bool alpn_h2() const noexcept {
    const unsigned char* p = nullptr;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl_, &p, &len);
    return len == 2 && p[0] == 'h' && p[1] == '2';
  }

  // Ciphertext being written to the socket (kept alive until the write ends).
  std::string out;

 private:
  std::string pending_;  // ciphertext OpenSSL wrote since the last take_output() (out_ appends to it)
  SSL* ssl_;
  BIO* in_;   // network → OpenSSL
  BIO* out_;  // OpenSSL → network: appends to pending_
  const char* error_ = "";
};

}  // namespace juggler
