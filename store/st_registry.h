/* st_registry.h — device registry entries: validating an operator's PUT body, merging it with
 * the stored entry (keeping or generating keys, bumping the generation when credentials or
 * status change), the public view without secrets, and the parsed form the writer uses to
 * authenticate devices. Entries are stored as JSON (the shape of SPEC §4) with their secrets. */
#ifndef ST_REGISTRY_H
#define ST_REGISTRY_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "sg_buf.h"
#include "sg_result.h"
#include "sg_wire.h"

enum { ST_AUTH_SAS = 1, ST_AUTH_X509, ST_AUTH_X509_CA, ST_AUTH_PSK };

#define ST_KEY_MAX_BYTES 64

/* What authentication needs from an entry. */
typedef struct {
    bool enabled;
    uint32_t generation;
    int auth_type;
    uint8_t key1[ST_KEY_MAX_BYTES];   /* SAS primary key, or the PSK */
    size_t key1_len;
    uint8_t key2[ST_KEY_MAX_BYTES];   /* SAS secondary key */
    size_t key2_len;
    uint8_t thumbs[2][32];            /* x509: the SHA-256 thumbprints registered */
    size_t n_thumbs;
    int64_t max_messages;             /* 0 = shard default */
    int64_t max_bytes;                /* 0 = shard default */
} st_reg_t;

/* Parse a stored entry. SG_E_MALFORMED when it is not one (a damaged record). */
SG_WUR sg_rc st_reg_parse(const char *json, size_t len, st_reg_t *out);
/* The same from an entry already parsed (st_reg_put's `stored`). */
SG_WUR sg_rc st_reg_from_json(const json_t *e, st_reg_t *out);

/* The outcome of a PUT: the entry to store, the secrets it generated, and what changed. */
typedef struct {
    json_t *stored;          /* full entry with secrets */
    json_t *generated;       /* keys generated for it ({} when none): shown to the caller this once */
    bool created;
    bool revoke;             /* credentials or status changed: close the live session */
} st_reg_put_t;

/* The shard's defaults for entries that set no limits of their own. */
typedef struct {
    int64_t max_messages;
    int64_t max_bytes;
} st_limits_t;

/* Validate body (a PUT /v1/devices/{id} request) against existing (NULL when new). On success
 * the caller owns out->stored and out->generated. On failure returns SG_E_INVALID and fills
 * err_name/err_msg for a 400 answer. */
SG_WUR sg_rc st_reg_put(const char *id, const json_t *body, const json_t *existing, int64_t now_ms,
                        st_reg_put_t *out, const char **err_name, char *err_msg, size_t err_len);

/* Tags: at most ST_TAGS_MAX members, keys 1-ST_TAG_KEY_MAX of A-Z a-z 0-9 _ . -, string values of
 * at most ST_TAG_VALUE_MAX characters (Unicode code points). */
#define ST_TAGS_MAX 32
#define ST_TAG_KEY_MAX 64
#define ST_TAG_VALUE_MAX 256

bool st_reg_tag_key_valid(const char *k, size_t len);
/* Whether tags (a PUT body's "tags") follows the rules; msg says what is wrong when not. */
SG_WUR sg_rc st_reg_tags_check(const json_t *tags, char *msg, size_t msg_len);

/* A listing's tag filter: "key" (the entry has the tag) or "key:value" (with that value; the
 * value may hold ':'). */
typedef struct {
    char key[ST_TAG_KEY_MAX + 1];
    char value[4 * ST_TAG_VALUE_MAX + 1];   /* UTF-8 */
    bool has_value;
} st_tag_filter_t;

/* Parse s (NUL-terminated). SG_E_INVALID when the key breaks the tag key rules or the value is
 * longer than a tag value may be. */
SG_WUR sg_rc st_reg_tag_filter_parse(const char *s, st_tag_filter_t *f);
/* Whether the entry's tags pass the filter (only string values match a value). */
bool st_reg_tag_match(const json_t *entry, const st_tag_filter_t *f);

/* Which SAS keys POST /v1/devices/{id}/keys:regenerate replaces (a bit mask). */
enum { ST_REGEN_PRIMARY = 1, ST_REGEN_SECONDARY = 2, ST_REGEN_BOTH = 3 };

/* Its body ({"key": "primary"|"secondary"|"both"}, "both" when left out; NULL = an empty body).
 * SG_E_INVALID with msg filled when it is anything else. */
SG_WUR sg_rc st_reg_regen_parse(const json_t *body, int *which, char *msg, size_t msg_len);

/* New random SAS keys (as PUT generates them) for the `which` keys of existing, a stored SAS
 * entry: out->stored is the entry with them and its generation incremented, out->generated the
 * new keys (the caller owns both; out->revoke is set). SG_E_INVALID with err_name/err_msg when
 * existing is not a SAS entry ("NotSasDevice") or the random source fails ("Internal"). */
SG_WUR sg_rc st_reg_regenerate(const json_t *existing, int which, st_reg_put_t *out, const char **err_name,
                               char *err_msg, size_t err_len);

/* Copy of stored without secrets, with both limits shown (the shard's defaults where the entry
 * sets none). */
json_t *st_reg_public(const json_t *stored, const st_limits_t *defaults);
/* The answer to a PUT: the public entry plus the generated keys in its "auth". */
json_t *st_reg_put_answer(const st_reg_put_t *put, const st_limits_t *defaults);

/* Encode the ADMIN_RES frame answering req (same correlation id and device) with an HTTP-like
 * status and body (its reference is taken; NULL = empty body) into f, which is reset first.
 * An answer too large for a frame becomes a 500 error. */
SG_WUR sg_rc st_admin_answer(sg_wbuf_t *f, const sg_wire_hdr_t *req, int status, json_t *body);

/* A JSON error body {"error": name, "message": ...}. */
json_t *st_error_json(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
