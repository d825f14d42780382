/* fe_tls.h — the frontend's OpenSSL server context: TLS 1.2 and 1.3 only, the server
 * certificate chain and key, no session tickets or session cache (nothing per session survives
 * the connection, and idle sessions stay near OpenSSL's floor of ~13.5 KB with
 * SSL_MODE_RELEASE_BUFFERS), server cipher preference with SHA-256 suites first. */
#ifndef FE_TLS_H
#define FE_TLS_H

#include <openssl/ssl.h>

/* NULL (and a log line naming the file and OpenSSL's reason) when cert or key cannot be used. */
SSL_CTX *fe_tls_ctx_new(const char *cert_path, const char *key_path);

/* OpenSSL's first queued error as text (and clear the queue), for log lines. */
const char *fe_tls_error(char *buf, size_t len);

#endif
