/* fe_tickets.h — stateless TLS session resumption with ticket keys shared by every frontend of
 * a cluster (frontend.ticket_keys, a file; a Kubernetes Secret in a cluster). A device that
 * reconnects, to this frontend or another, resumes its TLS session from the ticket it holds: no
 * certificate signature, no key exchange beyond (EC)DHE, and no state on the server (no session
 * cache: the ticket carries the session, encrypted and authenticated with a key from the file).
 *
 * The file holds 1-16 keys, one a line, oldest first: each 160 hex digits (80 random bytes,
 * `openssl rand -hex 80`: a 16-byte key name, a 32-byte HMAC-SHA256 key, a 32-byte AES-256 key,
 * nginx's order). The last key encrypts new tickets; every key decrypts (a ticket under an older
 * key is renewed under the newest). Blank lines and lines starting with '#' are ignored. Rotation:
 * append a new key, wait until every frontend has it (frontend.cert_reload or SIGHUP), later
 * delete the oldest. A ticket whose key is gone, or that was tampered with, gets a full handshake. */
#ifndef FE_TICKETS_H
#define FE_TICKETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include "sg_result.h"

#define FE_TICKET_MAX_KEYS 16
#define FE_TICKET_NAME_LEN 16
#define FE_TICKET_SECRET_LEN 32

typedef struct {
    uint8_t name[FE_TICKET_NAME_LEN];
    uint8_t hmac[FE_TICKET_SECRET_LEN];
    uint8_t aes[FE_TICKET_SECRET_LEN];
} fe_ticket_key_t;

typedef struct {
    int n;   /* keys[n - 1] is the newest: it encrypts */
    fe_ticket_key_t keys[FE_TICKET_MAX_KEYS];
} fe_ticket_keys_t;

typedef struct fe_tickets fe_tickets_t;

/* Parse a key file's text into out. SG_E_INVALID with a message in err naming the line and what
 * is wrong (wrong length, a character that is not a hex digit, a key name used twice, no keys,
 * too many). Operator input: nothing in it is trusted. */
SG_WUR sg_rc fe_tickets_parse(const char *text, size_t len, fe_ticket_keys_t *out, char *err, size_t err_len);

/* Keys from path, tickets valid for lifetime_s seconds. NULL (and a log line naming the file and
 * what is wrong with it) when the file cannot be read or parsed. */
fe_tickets_t *fe_tickets_new(const char *path, int lifetime_s);
void fe_tickets_destroy(fe_tickets_t **self_p);

/* Turn tickets on in ctx (a server context from fe_tls_ctx_new) with the keys of self: the key
 * callback, one TLS 1.3 ticket per handshake, the lifetime, and a session id context (OpenSSL
 * refuses to resume without one once client certificates are requested). Still no session cache.
 * self must outlive ctx and every SSL made from it. */
void fe_tickets_attach(fe_tickets_t *self, SSL_CTX *ctx);

/* Read the file again; when it cannot be used the keys in service stay and an error is logged
 * (false). `why` names the trigger in the log. Any thread. */
bool fe_tickets_reload(fe_tickets_t *self, const char *why);

/* Reload when the file's content is not what was last loaded (or last tried). */
void fe_tickets_check(fe_tickets_t *self);

/* Write a new key file with one random key at path (mode 0600). SG_E_INVALID when path exists
 * (an operator's keys are never replaced), SG_E_IO when it cannot be written. */
SG_WUR sg_rc fe_tickets_generate(const char *path);

#endif
