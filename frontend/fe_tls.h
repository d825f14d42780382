/* fe_tls.h — the frontend's OpenSSL server context: TLS 1.2 and 1.3 only, the server
 * certificate chain and key, no session cache (nothing per session survives the connection, and
 * idle sessions stay near OpenSSL's floor of ~13.5 KB with SSL_MODE_RELEASE_BUFFERS), session
 * tickets only with shared ticket keys (fe_tls_use_tickets), server cipher preference with
 * SHA-256 suites first. A client certificate is asked for and never required: X.509 devices send
 * one, which the device's shard judges at CONNECT; SAS devices send none.
 *
 * The context can be replaced while the frontend runs (a rotated certificate): fe_tls_t holds
 * the current one, every new connection takes it, and an SSL keeps a reference to the context
 * it was made from, so connections that are open when the certificate changes keep theirs. */
#ifndef FE_TLS_H
#define FE_TLS_H

#include <stdbool.h>
#include <openssl/ssl.h>

typedef struct fe_tls fe_tls_t;

/* A context from cert_path (PEM chain) and key_path (PEM key); psk_ke: TLS 1.3 PSK without
 * (EC)DHE is accepted too (frontend.psk_ke). NULL (and a log line naming the
 * file and OpenSSL's reason) when they cannot be used. The paths are kept for reloads. */
fe_tls_t *fe_tls_new(const char *cert_path, const char *key_path, bool psk_ke);
void fe_tls_destroy(fe_tls_t **self_p);

/* A server-side SSL made from the current context, or NULL (out of memory). Any thread. */
SSL *fe_tls_ssl_new(fe_tls_t *self);

/* Read the files again and use them for new connections. When they cannot be used the
 * current certificate stays and an error is logged; false then. `why` names the trigger in the
 * log line (e.g. "SIGHUP", "file-changed"). Any thread; reloads are serialised. */
bool fe_tls_reload(fe_tls_t *self, const char *why);

/* Reload when the certificate or key file is not the one last loaded (or last tried): device,
 * inode, size or times of the path as it resolves now, so a Kubernetes Secret volume that swaps
 * a symlink is seen as well as a file written in place or renamed over. */
void fe_tls_check(fe_tls_t *self);

/* Stateless session resumption (fe_tickets.h): the current context and every one a reload builds
 * issue and accept tickets under tickets' keys. Call before connections are accepted; tickets
 * must outlive self. Without this call a context has no tickets and no session cache. */
typedef struct fe_tickets fe_tickets_t;
void fe_tls_use_tickets(fe_tls_t *self, fe_tickets_t *tickets);

/* One server context from the files (what fe_tls_new and reloads build). NULL with a log line. */
SSL_CTX *fe_tls_ctx_new(const char *cert_path, const char *key_path, bool psk_ke);

/* OpenSSL's first queued error as text (and clear the queue), for log lines. */
const char *fe_tls_error(char *buf, size_t len);

#endif
