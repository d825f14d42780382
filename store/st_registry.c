/* st_registry.c — registry entry validation and views; see st_registry.h. */
#include "st_registry.h"
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sg_codec.h"
#include "sg_frame.h"
#include "sg_time.h"

#define SAS_KEY_BYTES 32
#define PSK_MIN_BYTES 16

json_t *st_error_json(const char *name, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return json_pack("{s:s,s:s}", "error", name, "message", msg);
}

sg_rc st_admin_answer(sg_wbuf_t *f, const sg_wire_hdr_t *req, int status, json_t *body)
{
    sg_wire_hdr_t in = *req;
    in.epoch = 0;   /* operators' requests belong to no session */
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    sg_wbuf_reset(f);
    sg_rc rc = sg_frame_json_res(f, &in, SG_MSG_ADMIN_RES, (uint16_t)status, text ? text : "", text ? strlen(text) : 0);
    free(text);
    if (rc == SG_OK)
        return SG_OK;
    sg_wbuf_reset(f);
    const char *e = "{\"error\":\"Internal\",\"message\":\"the answer is too large for one frame\"}";
    return sg_frame_json_res(f, &in, SG_MSG_ADMIN_RES, 500, e, strlen(e));
}

static const char *auth_type_name(int t)
{
    switch (t) {
    case ST_AUTH_SAS: return "sas";
    case ST_AUTH_X509: return "x509";
    case ST_AUTH_X509_CA: return "x509-ca";
    case ST_AUTH_PSK: return "psk";
    }
    return "";
}

static int auth_type_parse(const char *s)
{
    for (int t = ST_AUTH_SAS; t <= ST_AUTH_PSK; t++)
        if (strcmp(s, auth_type_name(t)) == 0)
            return t;
    return 0;
}

static sg_rc b64_key(const json_t *v, uint8_t *out, size_t *len)
{
    const char *s = json_string_value(v);
    SG_ENSURE(s != NULL, SG_E_INVALID);
    size_t n = strlen(s);
    SG_ENSURE(n > 0 && n <= 4 * ((ST_KEY_MAX_BYTES + 2) / 3), SG_E_INVALID);
    uint8_t tmp[ST_KEY_MAX_BYTES + 3];
    SG_GUARD(sg_b64_decode(s, n, tmp, len));
    SG_ENSURE(*len >= 16 && *len <= ST_KEY_MAX_BYTES, SG_E_INVALID);
    memcpy(out, tmp, *len);
    return SG_OK;
}

sg_rc st_reg_parse(const char *json, size_t len, st_reg_t *out)
{
    json_error_t jerr;
    json_t *e = json_loadb(json, len, 0, &jerr);
    memset(out, 0, sizeof *out);
    if (!e)
        return SG_E_MALFORMED;
    sg_rc rc = st_reg_from_json(e, out);
    json_decref(e);
    return rc;
}

sg_rc st_reg_from_json(const json_t *e, st_reg_t *out)
{
    memset(out, 0, sizeof *out);
    const char *status = json_string_value(json_object_get(e, "status"));
    json_t *auth = json_object_get(e, "auth");
    const char *type = json_string_value(json_object_get(auth, "type"));
    if (!status || !type)
        return SG_E_MALFORMED;
    out->enabled = strcmp(status, "enabled") == 0;
    out->generation = (uint32_t)json_integer_value(json_object_get(e, "generation"));
    out->auth_type = auth_type_parse(type);
    json_t *limits = json_object_get(e, "limits");
    out->max_messages = json_integer_value(json_object_get(limits, "maxQueuedMessages"));
    out->max_bytes = json_integer_value(json_object_get(limits, "maxQueuedBytes"));
    if (out->auth_type == ST_AUTH_SAS) {
        if (b64_key(json_object_get(auth, "primaryKey"), out->key1, &out->key1_len) != SG_OK ||
            b64_key(json_object_get(auth, "secondaryKey"), out->key2, &out->key2_len) != SG_OK)
            return SG_E_MALFORMED;
    } else if (out->auth_type == ST_AUTH_PSK) {
        const char *hex = json_string_value(json_object_get(auth, "key"));
        if (!hex || sg_hex_decode(hex, strlen(hex), out->key1, sizeof out->key1, &out->key1_len) != SG_OK)
            return SG_E_MALFORMED;
    } else if (out->auth_type == ST_AUTH_X509) {
        json_t *tp = json_object_get(auth, "thumbprints");
        size_t i, n;
        json_t *v;
        json_array_foreach(tp, i, v) {
            const char *hex = json_string_value(v);
            if (i >= 2 || !hex || sg_hex_decode(hex, strlen(hex), out->thumbs[i], 32, &n) != SG_OK || n != 32)
                return SG_E_MALFORMED;
            out->n_thumbs = i + 1;
        }
        if (out->n_thumbs == 0)
            return SG_E_MALFORMED;
    } else if (out->auth_type == 0) {
        return SG_E_MALFORMED;
    }
    return SG_OK;
}

static json_t *random_b64_key(size_t nbytes)
{
    uint8_t raw[ST_KEY_MAX_BYTES];
    char b64[2 * ST_KEY_MAX_BYTES];
    if (RAND_bytes(raw, (int)nbytes) != 1)
        return NULL;
    sg_b64_encode(raw, nbytes, b64);
    return json_string(b64);
}

static json_t *random_hex_key(size_t nbytes)
{
    uint8_t raw[ST_KEY_MAX_BYTES];
    char hex[2 * ST_KEY_MAX_BYTES + 1];
    if (RAND_bytes(raw, (int)nbytes) != 1)
        return NULL;
    sg_hex_encode(raw, nbytes, hex);
    return json_string(hex);
}

#define FAIL(name, ...)                                  \
    do {                                                 \
        *err_name = (name);                              \
        snprintf(err_msg, err_len, __VA_ARGS__);         \
        goto fail;                                       \
    } while (0)

/* Validate and normalise the "auth" member. Generated secrets are also put into *generated. */
static bool put_auth(const json_t *req, const json_t *old, json_t **auth_out, json_t *generated,
                     const char **err_name, char *err_msg, size_t err_len)
{
    json_t *auth = json_object();
    const char *type = "sas";
    if (req) {
        if (!json_is_object(req))
            FAIL("InvalidDevice", "auth must be an object");
        type = json_string_value(json_object_get(req, "type"));
        if (!type)
            FAIL("InvalidDevice", "auth.type is required: sas, x509, x509-ca or psk");
    } else if (old) {
        /* An update without auth keeps the credentials it had. */
        json_decref(auth);
        *auth_out = json_deep_copy(old);
        return *auth_out != NULL;
    }
    int t = auth_type_parse(type);
    if (!t)
        FAIL("InvalidDevice", "auth.type '%s' is not one of sas, x509, x509-ca, psk", type);
    const char *old_type = old ? json_string_value(json_object_get(old, "type")) : NULL;
    bool same_type = old_type && strcmp(old_type, type) == 0;
    json_object_set_new(auth, "type", json_string(type));
    if (t == ST_AUTH_SAS) {
        static const char *const names[2] = {"primaryKey", "secondaryKey"};
        for (int i = 0; i < 2; i++) {
            json_t *k = req ? json_object_get(req, names[i]) : NULL;
            if (k) {
                uint8_t raw[ST_KEY_MAX_BYTES];
                size_t n;
                if (b64_key(k, raw, &n) != SG_OK || n != SAS_KEY_BYTES)
                    FAIL("InvalidDevice", "auth.%s must be the base64 encoding of exactly 32 bytes", names[i]);
                json_object_set(auth, names[i], k);
            } else if (same_type) {
                json_object_set(auth, names[i], json_object_get(old, names[i]));
            } else {
                json_t *g = random_b64_key(SAS_KEY_BYTES);
                if (!g)
                    FAIL("Internal", "random source failed");
                json_object_set(generated, names[i], g);
                json_object_set_new(auth, names[i], g);
            }
        }
    } else if (t == ST_AUTH_PSK) {
        json_t *k = json_object_get(req, "key");
        if (k) {
            const char *hex = json_string_value(k);
            uint8_t raw[ST_KEY_MAX_BYTES];
            size_t n;
            if (!hex || sg_hex_decode(hex, strlen(hex), raw, sizeof raw, &n) != SG_OK || n < PSK_MIN_BYTES)
                FAIL("InvalidDevice", "auth.key must be hex of 16 to 64 bytes");
            json_object_set(auth, "key", k);
        } else if (same_type) {
            json_object_set(auth, "key", json_object_get(old, "key"));
        } else {
            json_t *g = random_hex_key(32);
            if (!g)
                FAIL("Internal", "random source failed");
            json_object_set(generated, "key", g);
            json_object_set_new(auth, "key", g);
        }
    } else if (t == ST_AUTH_X509) {
        json_t *tp = json_object_get(req, "thumbprints");
        size_t i;
        json_t *v;
        if (!json_is_array(tp) || json_array_size(tp) == 0 || json_array_size(tp) > 2)
            FAIL("InvalidDevice", "auth.thumbprints must list one or two SHA-256 thumbprints");
        json_t *norm = json_array();
        json_array_foreach(tp, i, v) {
            const char *s = json_string_value(v);
            uint8_t raw[32];
            size_t n;
            char hex[65];
            if (!s || strlen(s) != 64 || sg_hex_decode(s, 64, raw, sizeof raw, &n) != SG_OK) {
                json_decref(norm);
                FAIL("InvalidDevice", "auth.thumbprints[%zu] must be 64 hex digits (SHA-256 of the DER certificate)", i);
            }
            sg_hex_encode(raw, 32, hex);
            json_array_append_new(norm, json_string(hex));
        }
        json_object_set_new(auth, "thumbprints", norm);
    }
    *auth_out = auth;
    return true;
fail:
    json_decref(auth);
    return false;
}

static bool valid_limit(const json_t *v, int64_t max)
{
    return json_is_integer(v) && json_integer_value(v) >= 1 && json_integer_value(v) <= max;
}

sg_rc st_reg_put(const char *id, const json_t *body, const json_t *existing, int64_t now_ms, st_reg_put_t *out,
                 const char **err_name, char *err_msg, size_t err_len)
{
    json_t *stored = NULL, *auth = NULL, *generated = json_object();
    memset(out, 0, sizeof *out);
    if (!json_is_object(body))
        FAIL("InvalidDevice", "the body must be a JSON object");

    const char *key;
    json_t *val;
    json_object_foreach((json_t *)body, key, val) {
        if (strcmp(key, "deviceId") && strcmp(key, "status") && strcmp(key, "tags") &&
            strcmp(key, "limits") && strcmp(key, "auth") && strcmp(key, "generation") &&
            strcmp(key, "connection") && strcmp(key, "queueDepth") && strcmp(key, "queuedBytes") &&
            strcmp(key, "createdAt"))   /* read-only members of a GET answer are ignored */
            FAIL("InvalidDevice", "unknown member '%s'", key);
    }
    json_t *jid = json_object_get(body, "deviceId");
    if (jid && (!json_is_string(jid) || strcmp(json_string_value(jid), id) != 0))
        FAIL("InvalidDevice", "deviceId in the body must equal the id in the path ('%s')", id);

    const char *status = "enabled";
    json_t *jst = json_object_get(body, "status");
    if (jst) {
        status = json_string_value(jst);
        if (!status || (strcmp(status, "enabled") && strcmp(status, "disabled")))
            FAIL("InvalidDevice", "status must be \"enabled\" or \"disabled\"");
    } else if (existing) {
        status = json_string_value(json_object_get(existing, "status"));
    }

    json_t *tags = json_object_get(body, "tags");
    if (tags && st_reg_tags_check(tags, err_msg, err_len) != SG_OK) {
        *err_name = "InvalidDevice";
        goto fail;
    }
    if (!tags && existing)
        tags = json_object_get(existing, "tags");

    json_t *limits = json_object_get(body, "limits");
    json_t *lim = json_object();
    if (limits) {
        if (!json_is_object(limits)) {
            json_decref(lim);
            FAIL("InvalidDevice", "limits must be an object");
        }
        json_object_foreach(limits, key, val) {
            if (strcmp(key, "maxQueuedMessages") == 0 && valid_limit(val, 100000)) {
                json_object_set(lim, key, val);
            } else if (strcmp(key, "maxQueuedBytes") == 0 && valid_limit(val, 1073741824)) {
                json_object_set(lim, key, val);
            } else {
                json_decref(lim);
                FAIL("InvalidDevice", "limits.%s is not a known limit with a value in range "
                     "(maxQueuedMessages 1-100000, maxQueuedBytes 1-1073741824)", key);
            }
        }
    } else if (existing && json_object_get(existing, "limits")) {
        json_object_update(lim, json_object_get(existing, "limits"));
    }

    const json_t *old_auth = existing ? json_object_get(existing, "auth") : NULL;
    if (!put_auth(json_object_get(body, "auth"), old_auth, &auth, generated, err_name, err_msg, err_len)) {
        json_decref(lim);
        goto fail;
    }

    uint32_t gen = 1;
    bool revoke = false;
    if (existing) {
        gen = (uint32_t)json_integer_value(json_object_get(existing, "generation"));
        const char *old_status = json_string_value(json_object_get(existing, "status"));
        revoke = !json_equal(auth, (json_t *)old_auth) || !old_status || strcmp(old_status, status) != 0;
        if (revoke)
            gen++;
    }
    char created[25];
    sg_rfc3339(now_ms, created);
    stored = json_pack("{s:s,s:s,s:I,s:o,s:o,s:o}", "deviceId", id, "status", status, "generation",
                       (json_int_t)gen, "tags", tags ? json_deep_copy(tags) : json_object(), "limits",
                       lim, "auth", auth);
    if (!stored)
        FAIL("Internal", "out of memory");
    json_t *ca = existing ? json_object_get(existing, "createdAt") : NULL;
    json_object_set_new(stored, "createdAt", ca ? json_copy(ca) : json_string(created));

    out->stored = stored;
    out->generated = generated;
    out->created = existing == NULL;
    out->revoke = revoke;
    return SG_OK;
fail:
    json_decref(generated);
    json_decref(stored);
    return SG_E_INVALID;
}

/* Characters (code points) of UTF-8 text: the bytes that do not continue a sequence. */
static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

bool st_reg_tag_key_valid(const char *k, size_t len)
{
    if (len == 0 || len > ST_TAG_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return false;
    }
    return true;
}

sg_rc st_reg_tags_check(const json_t *tags, char *msg, size_t msg_len)
{
    if (!json_is_object(tags)) {
        snprintf(msg, msg_len, "tags must be an object of string values, e.g. {\"site\": \"north\"}");
        return SG_E_INVALID;
    }
    if (json_object_size(tags) > ST_TAGS_MAX) {
        snprintf(msg, msg_len, "a device has at most %d tags; this one has %zu", ST_TAGS_MAX, json_object_size(tags));
        return SG_E_INVALID;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)tags, k, v) {
        if (!st_reg_tag_key_valid(k, strlen(k))) {
            snprintf(msg, msg_len, "tag key '%.80s' is not 1-%d characters of A-Z a-z 0-9 _ . -", k, ST_TAG_KEY_MAX);
            return SG_E_INVALID;
        }
        if (!json_is_string(v)) {
            snprintf(msg, msg_len, "tag '%s' must have a string value", k);
            return SG_E_INVALID;
        }
        if (utf8_chars(json_string_value(v), json_string_length(v)) > ST_TAG_VALUE_MAX) {
            snprintf(msg, msg_len, "the value of tag '%s' is longer than %d characters", k, ST_TAG_VALUE_MAX);
            return SG_E_INVALID;
        }
    }
    return SG_OK;
}

sg_rc st_reg_tag_filter_parse(const char *s, st_tag_filter_t *f)
{
    memset(f, 0, sizeof *f);
    const char *colon = strchr(s, ':');
    size_t klen = colon ? (size_t)(colon - s) : strlen(s);
    SG_ENSURE(st_reg_tag_key_valid(s, klen), SG_E_INVALID);
    memcpy(f->key, s, klen);
    if (colon) {
        const char *v = colon + 1;
        size_t vlen = strlen(v);
        SG_ENSURE(vlen < sizeof f->value && utf8_chars(v, vlen) <= ST_TAG_VALUE_MAX, SG_E_INVALID);
        memcpy(f->value, v, vlen);
        f->has_value = true;
    }
    return SG_OK;
}

bool st_reg_tag_match(const json_t *entry, const st_tag_filter_t *f)
{
    json_t *v = json_object_get(json_object_get(entry, "tags"), f->key);
    if (!v)
        return false;
    if (!f->has_value)
        return true;
    return json_is_string(v) && json_string_length(v) == strlen(f->value) &&
           strcmp(json_string_value(v), f->value) == 0;
}

sg_rc st_reg_regen_parse(const json_t *body, int *which, char *msg, size_t msg_len)
{
    *which = ST_REGEN_BOTH;
    if (!body)
        return SG_OK;
    if (!json_is_object(body)) {
        snprintf(msg, msg_len, "the body must be a JSON object: {\"key\": \"primary\", \"secondary\" or \"both\"}");
        return SG_E_INVALID;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
        if (strcmp(k, "key") != 0) {
            snprintf(msg, msg_len, "unknown member '%.80s': the body is {\"key\": \"primary\", \"secondary\" or "
                     "\"both\"}", k);
            return SG_E_INVALID;
        }
    }
    json_t *key = json_object_get(body, "key");
    if (!key)
        return SG_OK;
    static const struct {
        const char *name;
        int which;
    } names[] = {{"primary", ST_REGEN_PRIMARY}, {"secondary", ST_REGEN_SECONDARY}, {"both", ST_REGEN_BOTH}};
    for (size_t i = 0; json_is_string(key) && i < sizeof names / sizeof names[0]; i++)
        if (strcmp(json_string_value(key), names[i].name) == 0) {
            *which = names[i].which;
            return SG_OK;
        }
    snprintf(msg, msg_len, "key must be \"primary\", \"secondary\" or \"both\"");
    return SG_E_INVALID;
}

sg_rc st_reg_regenerate(const json_t *existing, int which, st_reg_put_t *out, const char **err_name, char *err_msg,
                        size_t err_len)
{
    json_t *stored = NULL, *generated = json_object();
    memset(out, 0, sizeof *out);
    const char *type = json_string_value(json_object_get(json_object_get(existing, "auth"), "type"));
    if (!type || strcmp(type, "sas") != 0)
        FAIL("NotSasDevice", "device '%s' authenticates with %s, not SAS keys: only SAS keys can be regenerated "
             "(change other credentials with PUT /v1/devices/{id})",
             json_string_value(json_object_get(existing, "deviceId")), type ? type : "no known credential");
    stored = json_deep_copy(existing);
    json_t *auth = json_object_get(stored, "auth");
    static const char *const names[2] = {"primaryKey", "secondaryKey"};
    for (int i = 0; i < 2; i++) {
        if (!(which & (i == 0 ? ST_REGEN_PRIMARY : ST_REGEN_SECONDARY)))
            continue;
        json_t *g = random_b64_key(SAS_KEY_BYTES);
        if (!g)
            FAIL("Internal", "random source failed");
        json_object_set(generated, names[i], g);
        json_object_set_new(auth, names[i], g);
    }
    uint32_t gen = (uint32_t)json_integer_value(json_object_get(existing, "generation"));
    json_object_set_new(stored, "generation", json_integer((json_int_t)gen + 1));
    out->stored = stored;
    out->generated = generated;
    out->revoke = true;
    return SG_OK;
fail:
    json_decref(generated);
    json_decref(stored);
    return SG_E_INVALID;
}

json_t *st_reg_put_answer(const st_reg_put_t *put, const st_limits_t *defaults)
{
    json_t *answer = st_reg_public(put->stored, defaults);
    json_object_update(json_object_get(answer, "auth"), put->generated);
    return answer;
}

json_t *st_reg_public(const json_t *stored, const st_limits_t *defaults)
{
    json_t *pub = json_deep_copy(stored);
    json_t *lim = json_object_get(pub, "limits");
    if (!json_is_object(lim)) {
        lim = json_object();
        json_object_set_new(pub, "limits", lim);
    }
    if (!json_object_get(lim, "maxQueuedMessages"))
        json_object_set_new(lim, "maxQueuedMessages", json_integer(defaults->max_messages));
    if (!json_object_get(lim, "maxQueuedBytes"))
        json_object_set_new(lim, "maxQueuedBytes", json_integer(defaults->max_bytes));
    json_t *auth = json_object_get(pub, "auth");
    json_object_del(auth, "primaryKey");
    json_object_del(auth, "secondaryKey");
    json_object_del(auth, "key");
    return pub;
}
