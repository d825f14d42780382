/* st_cert.h — X.509 device authentication on a shard (SPEC §3): a leaf certificate's SHA-256
 * thumbprint against the ones registered for the device, or a chain against the certificate
 * authorities registered through the HTTP API (PUT /v1/certificateAuthorities/{name}), which
 * every shard keeps in its own database ("C{name}" in the default column family) and in memory.
 * TLS has already proved that the client holds the leaf's key; this decides whether the leaf
 * speaks for the device. Only the shard's writer thread uses an st_cert_t. */
#ifndef ST_CERT_H
#define ST_CERT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sg_result.h"
#include "sg_wire.h"
#include "st_db.h"

#define ST_CA_PREFIX "C"
#define ST_CA_PEM_MAX (64 * 1024)
#define ST_CA_MAX 256

typedef struct st_cert st_cert_t;

st_cert_t *st_cert_new(void);
void st_cert_destroy(st_cert_t **self_p);

/* Load every CA stored in db (at the writer's start). A stored CA that no longer parses is
 * logged and skipped. */
SG_WUR sg_rc st_cert_load(st_cert_t *self, st_db_t *db);

/* Check an operator's CA: pem must hold exactly one certificate that is a CA (basic constraints
 * CA:TRUE, or a self-signed v1 root). SG_E_INVALID with msg saying what is wrong otherwise. */
SG_WUR sg_rc st_cert_check_ca(const char *pem, size_t len, char *msg, size_t msg_len);

/* Add or replace (name, pem) in memory; pem must hold one certificate (SG_E_INVALID otherwise).
 * *replaced tells whether the name was there. SG_E_FULL beyond ST_CA_MAX. */
SG_WUR sg_rc st_cert_put(st_cert_t *self, const char *name, const char *pem, size_t len, bool *replaced);
/* Remove a name; false when it was not there. */
bool st_cert_del(st_cert_t *self, const char *name);
size_t st_cert_count(const st_cert_t *self);
/* {"name","subject","notAfter","thumbprint","certificate":PEM} of one CA, or NULL. */
json_t *st_cert_json(const st_cert_t *self, const char *name);
/* [that, ...] of every CA, in name order. */
json_t *st_cert_list(const st_cert_t *self);

/* The DB key of a CA: "C{name}". out holds 1 + len bytes. */
size_t st_cert_key(char *out, const char *name, size_t len);

/* Whether the DER certificate's subject has exactly one CN and it equals id (an x509-ca
 * device's name check); false for anything that is not one certificate. */
bool st_cert_subject_is(const uint8_t *der, size_t len, const char *id);

/* Hex SHA-256 of DER bytes (out: 65 bytes). */
void st_cert_thumbprint(const uint8_t *der, size_t len, char out[65]);

/* Decide an X509 credential (an sg_wire chain, leaf first) for device id at now (s):
 * - n_thumbs > 0 (x509): the leaf's SHA-256 must be one of thumbs and the leaf inside its
 *   validity period;
 * - n_thumbs == 0 (x509-ca): the chain must verify against the registered CAs (time,
 *   signatures, basic constraints, client purpose) and the leaf's one subject CN must equal id.
 * SG_OK with *not_after the leaf's expiry (s since the epoch: the session ends then, as a SAS
 * session ends with its token), or SG_E_AUTH with *why naming the reason for the log (a static
 * string). */
SG_WUR sg_rc st_cert_verify(const st_cert_t *self, const uint8_t *chain, size_t chain_len, const char *id,
                            const uint8_t (*thumbs)[32], size_t n_thumbs, int64_t now, int64_t *not_after,
                            const char **why);

#endif
