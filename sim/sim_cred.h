/* sim_cred.h — who the simulated devices are: names ({prefix}-{n}), per-device keys derived from
 * a seed (so a million devices need no key file and any slice can compute its own), and
 * credential files ('deviceId base64key' lines) for devices registered some other way. */
#ifndef SIM_CRED_H
#define SIM_CRED_H

#include <stddef.h>
#include <stdint.h>
#include "sg_result.h"

#define SIM_KEY_LEN 32

/* "{prefix}-{n}" into out (cap bytes); SG_E_TOO_BIG when it does not fit or is not a valid
 * device id (over 128 characters). */
SG_WUR sg_rc sim_device_name(char *out, size_t cap, const char *prefix, uint64_t n);

/* The device's 32-byte key: HMAC-SHA256(seed, device id). Also the seed of its TLS PSK. */
void sim_derive_key(const char *seed, const char *device_id, uint8_t out[SIM_KEY_LEN]);

/* A loaded credential file. */
typedef struct sim_creds sim_creds_t;

/* Parse text (len bytes): one 'deviceId base64key' per line; the key may be '-' for none;
 * blank lines and lines starting with '#' are skipped; '\r\n' endings are accepted. Ids must be
 * valid device ids and keys valid base64 of 1-64 bytes. On failure returns NULL and says which
 * line and why in err. */
sim_creds_t *sim_creds_parse(const char *text, size_t len, char *err, size_t err_len);
sim_creds_t *sim_creds_load(const char *path, char *err, size_t err_len);
void sim_creds_destroy(sim_creds_t **self_p);
size_t sim_creds_count(const sim_creds_t *self);
const char *sim_creds_id(const sim_creds_t *self, size_t i);
/* NULL (and *len 0) for a device without a key. */
const uint8_t *sim_creds_key(const sim_creds_t *self, size_t i, size_t *len);

#endif
