/* sg_sas.h — Azure IoT Hub style shared access signature (SAS) tokens for devices.
 *   SharedAccessSignature sr={url-encoded resource}&sig={url-encoded base64 HMAC-SHA256}&se={expiry}
 * The signature covers "{sr exactly as sent}\n{se}" keyed with the base64-decoded device key.
 * The resource, once URL-decoded, must be "{host}/devices/{deviceId}" (host not checked; the id
 * part may itself be percent-encoded once more, as the Azure SDKs do). Fields may come in any
 * order; unknown fields are refused; skn (policy name) is refused because device tokens have
 * none. */
#ifndef SG_SAS_H
#define SG_SAS_H

#include <stddef.h>
#include <stdint.h>
#include "sg_result.h"

#define SG_SAS_MAX_TOKEN 4096
#define SG_DEVICE_ID_MAX 128

/* Views into the token text (not decoded). */
typedef struct {
    const char *sr;     size_t sr_len;
    const char *sig;    size_t sig_len;
    int64_t se;         /* expiry, seconds since the Unix epoch */
} sg_sas_t;

/* Parse a token. SG_E_MALFORMED when the prefix, a field, or se is wrong; SG_E_TOO_BIG beyond
 * SG_SAS_MAX_TOKEN. se must be 1-19 decimal digits without sign or leading zeros that fit int64
 * (verify signs the canonical decimal text of se, so only that spelling is accepted). The views
 * point into token, which must outlive *out. */
SG_WUR sg_rc sg_sas_parse(const char *token, size_t len, sg_sas_t *out);

/* Check a parsed token for device_id at time now with key (raw bytes, already base64-decoded).
 * Order of checks: resource names device_id (else SG_E_WRONG_DEVICE), not expired (se > now, else
 * SG_E_EXPIRED), signature matches in constant time (else SG_E_AUTH). The resource also matches
 * when sent entirely unencoded ("host/devices/id", even for ids containing '%'). An invalid
 * device_id or an empty key is SG_E_INVALID. */
SG_WUR sg_rc sg_sas_verify(const sg_sas_t *t, const char *device_id, const uint8_t *key,
                           size_t key_len, int64_t now);

/* Build a token for host/devices/device_id expiring at se, the way the Azure SDKs do.
 * SG_E_TOO_BIG when out (cap bytes including NUL) is too small. */
SG_WUR sg_rc sg_sas_make(char *out, size_t cap, const char *host, const char *device_id,
                         const uint8_t *key, size_t key_len, int64_t se);

/* Device ids: 1-128 chars of [A-Za-z0-9-.%_*?!(),:=@$'] (SPEC §2). */
int sg_device_id_valid(const char *id, size_t len);

#endif
