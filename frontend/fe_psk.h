/* fe_psk.h — TLS pre-shared keys for PSK devices (SPEC §3) without blocking the event loop.
 * The key lives in the device's shard; the handshake waits for it per connection:
 * - TLS 1.3: a ClientHello callback reads the identity from the pre_shared_key extension,
 *   asks the shard (PSK frame) and returns SSL_CLIENT_HELLO_RETRY; the answer resumes the
 *   handshake and the find-session callback serves the key.
 * - TLS 1.2 PSK suites: the identity comes in the ClientKeyExchange, which OpenSSL reads and
 *   needs the key for in one go. A filter BIO in front of the socket (installed for clients
 *   offering TLS 1.2 PSK suites) peeks at that record (MSG_PEEK), asks the shard, and makes
 *   OpenSSL's reads retry until the answer has come.
 * While a look-up is out the connection does not read (FE_P_KEY); the CONNECT deadline runs.
 * The key is held only until the handshake has used it; afterwards the connection keeps its
 * identity and the key's SHA-256, which the CONNECT sends to the shard (credential PSK) so a key
 * rotated in between is refused. */
#ifndef FE_PSK_H
#define FE_PSK_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include "fe_internal.h"
#include "sg_wire.h"

/* Install the callbacks and PSK suites on a server context. psk_ke: also allow TLS 1.3 PSK
 * without (EC)DHE (frontend.psk_ke). */
void fe_psk_ctx_init(SSL_CTX *ctx, bool psk_ke);

/* A PSK_RES, or an ERROR about a PSK frame, from the router. */
void fe_psk_frame(fe_worker_t *w, const sg_wire_hdr_t *h);
bool fe_psk_is_frame(const sg_wire_hdr_t *h);

/* The identity a finished handshake authenticated with a PSK (and the key's SHA-256 in hash),
 * or NULL when the handshake used none. */
const char *fe_psk_identity(const fe_conn_t *c, uint8_t hash[32]);

/* In fe_conn.c: go on with a handshake that waited for its key. */
void fe_conn_handshake_resume(fe_conn_t *c);

#endif
