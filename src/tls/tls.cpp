#include "juggler/tls.hpp"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace juggler {

namespace {

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

// A readable file, or an exception that names it and says how to make one.
void require_readable(std::string_view what, std::string_view path, std::string_view where) {
  std::ifstream f{std::string(path)};
  if (!f) {
    throw std::runtime_error(std::string(where) + ": cannot read " + std::string(what) + " " + std::string(path) +
                             ": " + std::strerror(errno) +
                             " (run `make ssl_cert` for a self-signed one, or fix the path)");
  }
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return out;
}

std::vector<std::string> cert_names(SSL_CTX* ctx) {
  std::vector<std::string> names;
  X509* cert = SSL_CTX_get0_certificate(ctx);
  if (!cert) return names;
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (sans) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(sans, i);
      if (n->type != GEN_DNS) continue;
      const unsigned char* d = ASN1_STRING_get0_data(n->d.dNSName);
      names.push_back(lower({reinterpret_cast<const char*>(d), static_cast<std::size_t>(ASN1_STRING_length(n->d.dNSName))}));
    }
    GENERAL_NAMES_free(sans);
  }
  if (names.empty()) {
    char cn[256];
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0)
      names.push_back(lower(cn));
  }
  return names;
}

// ALPN: the server's order decides (h2 first where the listener offers it).
// `arg` is non-null on listeners with h2 on. A client that offers neither
// goes on without ALPN, as HTTP/1.
int on_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned inlen, void* arg) {
  static const unsigned char kHttp11[] = "\x08http/1.1";
  static const unsigned char kH2Http11[] = "\x02h2\x08http/1.1";
  const unsigned char* ours = arg ? kH2Http11 : kHttp11;
  const unsigned ours_len = arg ? sizeof kH2Http11 - 1 : sizeof kHttp11 - 1;
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, ours, ours_len, in, inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;  // no common protocol: go on without ALPN
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

// Session ticket keys, rotated without shared mutable state: the keys of
// epoch E (E = now / period) are HMAC-derived from a per-process random
// secret, so every worker computes the same keys with no lock. Tickets are
// issued under the current epoch and accepted from the previous one too (and
// then renewed); older tickets fall back to a full handshake.
struct TicketKeys {
  unsigned char secret[32];
  std::uint64_t period_s;
  TicketKeys() {
    if (RAND_bytes(secret, sizeof secret) != 1) throw std::runtime_error("RAND_bytes failed");
    const char* env = std::getenv("JUGGLER_TLS_TICKET_ROTATE_S");  // tests shorten it
    period_s = env && std::atoll(env) > 0 ? static_cast<std::uint64_t>(std::atoll(env)) : 12 * 3600;
  }
  void derive(std::uint64_t epoch, char label, unsigned char out[32]) const {
    unsigned char msg[9];
    msg[0] = static_cast<unsigned char>(label);
    for (int i = 0; i < 8; ++i) msg[1 + i] = static_cast<unsigned char>(epoch >> (8 * i));
    unsigned int len = 32;
    HMAC(EVP_sha256(), secret, sizeof secret, msg, sizeof msg, out, &len);
  }
};

const TicketKeys& ticket_keys() {
  static const TicketKeys keys;
  return keys;
}

// The derived keys of one epoch, cached per thread: a handshake costs no
// HMAC, and no lock is shared between workers.
struct EpochKeys {
  std::uint64_t epoch = UINT64_MAX;
  unsigned char name[32], aes[32], hmac[32];
  void load(const TicketKeys& k, std::uint64_t e) {
    if (epoch == e) return;
    k.derive(e, 'n', name);
    k.derive(e, 'a', aes);
    k.derive(e, 'h', hmac);
    epoch = e;
  }
};

const EVP_CIPHER* ticket_cipher() {
  static EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);  // fetched once, not per handshake
  return c;
}

int on_ticket_key(SSL* ssl, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX* cipher,
                  EVP_MAC_CTX* mac, int enc) {
  const TicketKeys& k = ticket_keys();
  const std::uint64_t now_epoch = static_cast<std::uint64_t>(std::time(nullptr)) / k.period_s;
  thread_local EpochKeys current, previous;
  current.load(k, now_epoch);
  if (now_epoch > 0) previous.load(k, now_epoch - 1);
  auto use = [&](const EpochKeys& keys, bool encrypt) {
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(keys.hmac), sizeof keys.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_CTX_set_params(mac, params) != 1) return false;
    return (encrypt ? EVP_EncryptInit_ex(cipher, ticket_cipher(), nullptr, keys.aes, iv)
                    : EVP_DecryptInit_ex(cipher, ticket_cipher(), nullptr, keys.aes, iv)) == 1;
  };
  if (enc) {
    std::memcpy(name, current.name, 16);
    if (RAND_bytes(iv, 16) != 1) return -1;
    return use(current, true) ? 1 : -1;
  }
  // TLS 1.3 clients use a ticket once (RFC 8446 C.4) and OpenSSL sends a new
  // one after a resumption only when the callback says "renew" (2): with 1,
  // every resumed connection left its client without a ticket, and the next
  // one paid a full handshake.
  const int ok = SSL_version(ssl) >= TLS1_3_VERSION ? 2 : 1;
  if (std::memcmp(name, current.name, 16) == 0) return use(current, false) ? ok : -1;
  if (now_epoch > 0 && std::memcmp(name, previous.name, 16) == 0)
    return use(previous, false) ? 2 : -1;  // 2: valid, but issue a fresh ticket
  return 0;  // unknown or expired key: full handshake
}

SSL_CTX* make_ctx(std::string_view cert, std::string_view key, std::string_view where, bool h2) {
  require_readable("certificate", cert, where);
  require_readable("key", key, where);
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) throw std::runtime_error(std::string(where) + ": SSL_CTX_new: " + openssl_error());
  auto fail = [&](const std::string& msg) {
    SSL_CTX_free(ctx);
    throw std::runtime_error(std::string(where) + ": " + msg);
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  // TLS 1.2: forward-secret AEAD suites only (no RC4, 3DES, CBC-SHA1, NULL, export).
  if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) fail("cipher list: " + openssl_error());
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Resumption: stateless tickets (keys rotated, see on_ticket_key) and a
  // server-side cache for clients that do not take tickets.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  static const unsigned char kSidCtx[] = "juggler";
  SSL_CTX_set_session_id_context(ctx, kSidCtx, sizeof kSidCtx - 1);
  SSL_CTX_sess_set_cache_size(ctx, 20480);
  static int h2_on = 1;  // any non-null argument: offer h2
  SSL_CTX_set_alpn_select_cb(ctx, on_alpn, h2 ? &h2_on : nullptr);
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
  // One ticket per full handshake (OpenSSL sends two by default): half the
  // work on both sides, and a client resumes one connection at a time anyway.
  SSL_CTX_set_num_tickets(ctx, 1);
  std::string c(cert), k(key);
  // Key first: loading the certificate after it drops a key that does not
  // match, which the check below then reports in plain words.
  if (SSL_CTX_use_PrivateKey_file(ctx, k.c_str(), SSL_FILETYPE_PEM) != 1)
    fail("key " + k + " is not a PEM private key: " + openssl_error());
  if (SSL_CTX_use_certificate_chain_file(ctx, c.c_str()) != 1)
    fail("certificate " + c + " is not a PEM certificate (chain): " + openssl_error() + " (run `make ssl_cert`?)");
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    fail("key " + k + " does not match certificate " + c);
  }
  return ctx;
}

}  // namespace

TlsContext::TlsContext(const RouteTable& table, const ListenerDef& l) {
  const std::string where = std::string(table.source) + ":" + std::to_string(l.line) + ": listen https";
  try {
    for (std::uint16_t i = 0; i < l.cert_count; ++i) {
      const CertDef& c = table.certs[l.first_cert + i];
      SSL_CTX* ctx = make_ctx(c.cert_file, c.key_file, where, l.kind == ListenKind::Https && l.h2);
      certs_.push_back({ctx, cert_names(ctx)});
    }
  } catch (...) {
    for (Cert& c : certs_) SSL_CTX_free(c.ctx);
    throw;
  }
  if (certs_.empty()) throw std::runtime_error(where + ": no certificate");
  for (Cert& c : certs_) {
    SSL_CTX_set_tlsext_servername_callback(c.ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(c.ctx, this);
  }
}

TlsContext::~TlsContext() {
  for (Cert& c : certs_) SSL_CTX_free(c.ctx);
}

// Per handshake: compared in place (the names are stored in lower case), no
// copy of the client's name.
SSL_CTX* TlsContext::ctx_for(std::string_view name) const noexcept {
  const std::size_t dot = name.find('.');
  for (const Cert& c : certs_) {
    for (const std::string& pattern : c.names) {
      if (iequals(name, pattern)) return c.ctx;
      if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '.' && dot != std::string_view::npos &&
          iequals(name.substr(dot), std::string_view(pattern).substr(1)))
        return c.ctx;
    }
  }
  return nullptr;
}

int TlsContext::on_servername(SSL* ssl, int*, void* arg) {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return SSL_TLSEXT_ERR_OK;
  auto* self = static_cast<TlsContext*>(arg);
  if (SSL_CTX* ctx = self->ctx_for(name); ctx && ctx != SSL_get_SSL_CTX(ssl)) SSL_set_SSL_CTX(ssl, ctx);
  return SSL_TLSEXT_ERR_OK;  // unknown names get the default certificate
}

namespace {

// The ciphertext side's BIO: OpenSSL's records are appended to the
// stream's pending string (BIO_get_data), which take_output() hands over by
// swapping. A memory BIO cost each byte four passes: its buffer grown with
// zeroes and written, then our string grown with zeroes and read into
// (≈ half the user-space instructions of a TLS download).
int out_write(BIO* bio, const char* data, std::size_t len, std::size_t* written) {
  try {
    static_cast<std::string*>(BIO_get_data(bio))->append(data, len);
  } catch (const std::bad_alloc&) {
    return 0;
  }
  *written = len;
  return 1;
}

long out_ctrl(BIO* bio, int cmd, long, void*) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_PENDING:
    case BIO_CTRL_WPENDING:
      return static_cast<long>(static_cast<std::string*>(BIO_get_data(bio))->size());
    default:
      return 0;
  }
}

int out_create(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

BIO* new_out_bio(std::string* pending) {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "juggler ciphertext out");
    if (m && (BIO_meth_set_write_ex(m, out_write) != 1 || BIO_meth_set_ctrl(m, out_ctrl) != 1 ||
              BIO_meth_set_create(m, out_create) != 1)) {
      BIO_meth_free(m);
      m = nullptr;
    }
    return m;
  }();
  BIO* b = method ? BIO_new(method) : nullptr;
  if (b) BIO_set_data(b, pending);
  return b;
}

}  // namespace

TlsStream::TlsStream(SSL_CTX* ctx) : ssl_(SSL_new(ctx)), in_(BIO_new(BIO_s_mem())), out_(new_out_bio(&pending_)) {
  if (!ssl_ || !in_ || !out_) {
    SSL_free(ssl_);
    BIO_free(in_);
    BIO_free(out_);
    throw std::bad_alloc();
  }
  BIO_set_mem_eof_return(in_, -1);  // empty means "wait", not EOF
  SSL_set_bio(ssl_, in_, out_);     // ssl_ owns both now
  SSL_set_accept_state(ssl_);
}

TlsStream::~TlsStream() { SSL_free(ssl_); }

void TlsStream::feed(const char* data, std::size_t len) {
  while (len > 0) {
    int n = BIO_write(in_, data, static_cast<int>(std::min<std::size_t>(len, 1 << 30)));
    if (n <= 0) return;
    data += n;
    len -= static_cast<std::size_t>(n);
  }
}

TlsStream::Read TlsStream::read(char* dst, std::size_t cap, std::size_t* got) {
  *got = 0;
  if (cap == 0) return Read::NeedMore;
  std::size_t n = 0;
  int rc = SSL_read_ex(ssl_, dst, cap, &n);
  if (rc == 1) {
    *got = n;
    return Read::Data;
  }
  switch (SSL_get_error(ssl_, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      return Read::NeedMore;
    case SSL_ERROR_ZERO_RETURN:
      return Read::Closed;
    default: {
      unsigned long e = ERR_peek_error();
      error_ = e ? ERR_reason_error_string(e) : "connection broken";
      if (!error_) error_ = "TLS error";
      ERR_clear_error();
      return Read::Error;
    }
  }
}

bool TlsStream::buffered() const noexcept { return SSL_pending(ssl_) > 0 || BIO_ctrl_pending(in_) > 0; }

// One TLS record per 16 KB of plaintext, not one per slice: a proxied
// response is a head in several slices (the server's bytes, our Connection
// line, the final CRLF) and a body, and every record costs its own AEAD pass,
// 22 bytes and a MAC check in the client. Small slices are gathered in a
// record-sized buffer; a slice of a full record or more goes straight in.
bool TlsStream::write(const uv_buf_t* iov, unsigned n) {
  constexpr std::size_t kRecord = 16384;
  char stage[kRecord];
  std::size_t staged = 0;
  auto put = [this](const char* p, std::size_t len) {
    std::size_t done = 0;
    if (SSL_write_ex(ssl_, p, len, &done) == 1 && done == len) return true;
    ERR_clear_error();
    return false;
  };
  for (unsigned i = 0; i < n; ++i) {
    const char* p = iov[i].base;
    std::size_t len = iov[i].len;
    while (len > 0) {
      if (staged == 0 && len >= kRecord) {
        if (!put(p, len)) return false;
        break;
      }
      const std::size_t take = std::min(len, kRecord - staged);
      std::memcpy(stage + staged, p, take);
      staged += take;
      p += take;
      len -= take;
      if (staged == kRecord) {
        if (!put(stage, staged)) return false;
        staged = 0;
      }
    }
  }
  return staged == 0 || put(stage, staged);
}

bool TlsStream::has_output() const noexcept { return !pending_.empty(); }

bool TlsStream::shutdown() noexcept {
  if (SSL_is_init_finished(ssl_) == 1 && (SSL_get_shutdown(ssl_) & SSL_SENT_SHUTDOWN) == 0) {
    SSL_shutdown(ssl_);  // writes close_notify; the peer's is not waited for
    ERR_clear_error();
  }
  return has_output();
}

std::size_t TlsStream::take_output() {
  out.swap(pending_);  // the two buffers take turns: no copy, no allocation once both grew
  pending_.clear();    // what `out` held was sent
  return out.size();
}

void TlsStream::trim(std::size_t keep) noexcept {
  if (out.capacity() > keep) std::string().swap(out);
  if (pending_.empty() && pending_.capacity() > keep) std::string().swap(pending_);
}

}  // namespace juggler
