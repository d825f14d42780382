/* sg_sas.c — parse, verify and build Azure IoT Hub device SAS tokens (see sg_sas.h). The frontend
 * calls sg_sas_parse + sg_sas_verify on every CONNECT password of a symmetric-key device; the
 * simulator and tests build tokens with sg_sas_make. */
#include "sg_sas.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sg_buf.h"
#include "sg_codec.h"

#define SAS_PREFIX "SharedAccessSignature "
#define SAS_PREFIX_LEN (sizeof SAS_PREFIX - 1)
#define SAS_MAC_LEN 32                 /* HMAC-SHA256 */
#define SAS_SIG_B64_LEN 44             /* base64 of 32 bytes, with one '=' */
#define SAS_SE_MAX_DIGITS 19           /* INT64_MAX has 19 digits */
#define SAS_SE_TEXT_MAX 24             /* 19 digits + NUL, rounded up */
#define SAS_DEVICES "/devices/"
#define SAS_DEVICES_LEN (sizeof SAS_DEVICES - 1)
#define SAS_KEY_MAX 4096               /* far above any real key; keeps HMAC's int length safe */

/* Next view of c up to (not including) delim; the cursor moves past the delimiter when one is
 * found (the return is then 1), else to the end (0). */
static int cur_take_until(sg_cur_t *c, uint8_t delim, const char **out, size_t *n)
{
    const uint8_t *start = sg_cur_ptr(c);
    size_t left = sg_cur_left(c);
    const uint8_t *hit = memchr(start, delim, left);
    size_t take = hit ? (size_t)(hit - start) : left;
    *out = (const char *)start;
    *n = take;
    c->pos += take + (hit != NULL);
    return hit != NULL;
}

static int view_eq(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

/* se: 1 to 19 decimal digits, no sign, no leading zero (except "0" itself), fits int64. The
 * signature covers se as sent, and verification re-creates that text from the number, so only
 * the canonical spelling of each number is accepted. */
static sg_rc parse_se(const char *p, size_t n, int64_t *out)
{
    SG_ENSURE(n >= 1 && n <= SAS_SE_MAX_DIGITS, SG_E_MALFORMED);
    SG_ENSURE(n == 1 || p[0] != '0', SG_E_MALFORMED);
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        SG_ENSURE(p[i] >= '0' && p[i] <= '9', SG_E_MALFORMED);
        int d = p[i] - '0';
        SG_ENSURE(v <= (INT64_MAX - d) / 10, SG_E_MALFORMED);
        v = v * 10 + d;
    }
    *out = v;
    return SG_OK;
}

sg_rc sg_sas_parse(const char *token, size_t len, sg_sas_t *out)
{
    SG_ENSURE(len <= SG_SAS_MAX_TOKEN, SG_E_TOO_BIG);
    SG_ENSURE(token != NULL && out != NULL, SG_E_MALFORMED);
    sg_cur_t c;
    const uint8_t *prefix;
    sg_cur_init(&c, token, len);
    SG_ENSURE(sg_cur_bytes(&c, SAS_PREFIX_LEN, &prefix) == SG_OK, SG_E_MALFORMED);
    SG_ENSURE(memcmp(prefix, SAS_PREFIX, SAS_PREFIX_LEN) == 0, SG_E_MALFORMED);

    const char *sr = NULL, *sig = NULL, *se = NULL;
    size_t sr_len = 0, sig_len = 0, se_len = 0;
    /* Strict query string: no empty segments, every segment "name=value" with a non-empty value.
     * The value runs to the next '&' and may contain '=' (an unencoded sr can). */
    while (sg_cur_left(&c) > 0) {
        const char *seg, *name, *val;
        size_t seg_len, name_len, val_len;
        int more = cur_take_until(&c, '&', &seg, &seg_len);
        SG_ENSURE(seg_len > 0, SG_E_MALFORMED);
        SG_ENSURE(!more || sg_cur_left(&c) > 0, SG_E_MALFORMED);   /* trailing '&' */

        sg_cur_t sc;
        sg_cur_init(&sc, seg, seg_len);
        SG_ENSURE(cur_take_until(&sc, '=', &name, &name_len), SG_E_MALFORMED);
        val = (const char *)sg_cur_ptr(&sc);
        val_len = sg_cur_left(&sc);
        SG_ENSURE(val_len > 0, SG_E_MALFORMED);

        const char **slot;
        size_t *slot_len;
        if (view_eq(name, name_len, "sr")) {
            slot = &sr, slot_len = &sr_len;
        } else if (view_eq(name, name_len, "sig")) {
            slot = &sig, slot_len = &sig_len;
        } else if (view_eq(name, name_len, "se")) {
            slot = &se, slot_len = &se_len;
        } else {
            /* skn (a policy name) marks a service token, never a device's; anything else is
             * unknown. Both are refused. */
            return SG_E_MALFORMED;
        }
        SG_ENSURE(*slot == NULL, SG_E_MALFORMED);                    /* field seen twice */
        *slot = val;
        *slot_len = val_len;
    }
    SG_ENSURE(sr && sig && se, SG_E_MALFORMED);
    int64_t expiry;
    SG_GUARD(parse_se(se, se_len, &expiry));
    out->sr = sr;
    out->sr_len = sr_len;
    out->sig = sig;
    out->sig_len = sig_len;
    out->se = expiry;
    return SG_OK;
}

int sg_device_id_valid(const char *id, size_t len)
{
    if (id == NULL || len < 1 || len > SG_DEVICE_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)id[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
            continue;
        if (ch == '\0' || strchr("-.%_*?!(),:=@$'", ch) == NULL)
            return 0;
    }
    return 1;
}

/* Does res (already URL-decoded as the caller wants) read "{host}/devices/{x}" with a non-empty
 * host free of '/'? Gives the view of x. */
static int split_resource(const char *res, size_t n, const char **x, size_t *x_len)
{
    const char *slash = memchr(res, '/', n);
    if (slash == NULL || slash == res)
        return 0;
    size_t rest = n - (size_t)(slash - res);
    if (rest < SAS_DEVICES_LEN || memcmp(slash, SAS_DEVICES, SAS_DEVICES_LEN) != 0)
        return 0;
    *x = slash + SAS_DEVICES_LEN;
    *x_len = rest - SAS_DEVICES_LEN;
    return 1;
}

/* The resource names device_id when, after one URL-decode, it is "{host}/devices/{x}" and x is
 * the id as-is (sr encoded once, or sent plain) or after one more decode (sr built the SDK way,
 * encodeURIComponent(host + "/devices/" + encodeURIComponent(id))). A plain sr of an id that
 * contains '%' does not survive a decode, so the undecoded text is tried too. */
static int resource_names(const char *sr, size_t sr_len, const char *id, size_t id_len)
{
    char dec[SG_SAS_MAX_TOKEN + 1], dec2[SG_SAS_MAX_TOKEN + 1];
    const char *x;
    size_t x_len, dec_len, dec2_len;

    if (sr_len > SG_SAS_MAX_TOKEN)
        return 0;
    if (split_resource(sr, sr_len, &x, &x_len) && x_len == id_len && memcmp(x, id, id_len) == 0)
        return 1;
    if (sg_url_decode(sr, sr_len, dec, &dec_len, 0) != SG_OK)
        return 0;
    if (!split_resource(dec, dec_len, &x, &x_len))
        return 0;
    if (x_len == id_len && memcmp(x, id, id_len) == 0)
        return 1;
    if (sg_url_decode(x, x_len, dec2, &dec2_len, 0) != SG_OK)
        return 0;
    return dec2_len == id_len && memcmp(dec2, id, id_len) == 0;
}

/* mac = HMAC-SHA256(key, sr + "\n" + se). */
static sg_rc sas_mac(const uint8_t *key, size_t key_len, const char *sr, size_t sr_len,
                     const char *se, size_t se_len, uint8_t mac[SAS_MAC_LEN])
{
    uint8_t msg[SG_SAS_MAX_TOKEN + SAS_SE_TEXT_MAX + 1];
    unsigned int mac_len = 0;
    SG_ENSURE(sr_len <= SG_SAS_MAX_TOKEN && se_len < SAS_SE_TEXT_MAX, SG_E_TOO_BIG);
    SG_ENSURE(key_len >= 1 && key_len <= SAS_KEY_MAX, SG_E_INVALID);
    memcpy(msg, sr, sr_len);
    msg[sr_len] = '\n';
    memcpy(msg + sr_len + 1, se, se_len);
    if (HMAC(EVP_sha256(), key, (int)key_len, msg, sr_len + 1 + se_len, mac, &mac_len) == NULL ||
        mac_len != SAS_MAC_LEN)
        return SG_E_IO;
    return SG_OK;
}

sg_rc sg_sas_verify(const sg_sas_t *t, const char *device_id, const uint8_t *key,
                    size_t key_len, int64_t now)
{
    SG_ENSURE(t != NULL && t->sr != NULL && t->sig != NULL && device_id != NULL, SG_E_INVALID);
    SG_ENSURE(key != NULL && key_len >= 1 && key_len <= SAS_KEY_MAX, SG_E_INVALID);
    size_t id_len = strlen(device_id);
    SG_ENSURE(sg_device_id_valid(device_id, id_len), SG_E_INVALID);

    SG_ENSURE(resource_names(t->sr, t->sr_len, device_id, id_len), SG_E_WRONG_DEVICE);
    SG_ENSURE(t->se > now, SG_E_EXPIRED);

    /* The sig field is the URL-encoded base64 of the MAC; some clients leave it unencoded, which
     * decodes to itself ('+', '/' and '=' are not touched). Anything that is not exactly 32 bytes
     * of strict base64 cannot be the right signature. */
    char sig_txt[SAS_SIG_B64_LEN * 3 + 1];
    size_t sig_txt_len;
    uint8_t got[SAS_SIG_B64_LEN / 4 * 3], want[SAS_MAC_LEN];
    size_t got_len;
    SG_ENSURE(t->sig_len <= SAS_SIG_B64_LEN * 3, SG_E_AUTH);
    SG_ENSURE(sg_url_decode(t->sig, t->sig_len, sig_txt, &sig_txt_len, 0) == SG_OK, SG_E_AUTH);
    SG_ENSURE(sig_txt_len == SAS_SIG_B64_LEN, SG_E_AUTH);
    SG_ENSURE(sg_b64_decode(sig_txt, sig_txt_len, got, &got_len) == SG_OK, SG_E_AUTH);
    SG_ENSURE(got_len == SAS_MAC_LEN, SG_E_AUTH);

    char se_txt[SAS_SE_TEXT_MAX];
    int se_n = snprintf(se_txt, sizeof se_txt, "%" PRId64, t->se);
    SG_ENSURE(se_n > 0 && (size_t)se_n < sizeof se_txt, SG_E_INVALID);
    SG_GUARD(sas_mac(key, key_len, t->sr, t->sr_len, se_txt, (size_t)se_n, want));
    int diff = CRYPTO_memcmp(got, want, SAS_MAC_LEN);
    OPENSSL_cleanse(want, sizeof want);
    return diff == 0 ? SG_OK : SG_E_AUTH;
}

/* A bounded appender into the caller's fixed buffer; remembers overflow instead of failing each
 * call, so sg_sas_make reads as the token's layout. */
typedef struct {
    char *p;
    size_t len, cap;   /* cap includes room for the NUL */
    int over;
} sas_out_t;

static void out_put(sas_out_t *o, const char *s, size_t n)
{
    if (o->over || n >= o->cap - o->len) {
        o->over = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

sg_rc sg_sas_make(char *out, size_t cap, const char *host, const char *device_id,
                  const uint8_t *key, size_t key_len, int64_t se)
{
    SG_ENSURE(out != NULL && cap > 0, SG_E_TOO_BIG);
    out[0] = '\0';
    SG_ENSURE(host != NULL && device_id != NULL && key != NULL && se >= 0, SG_E_INVALID);
    size_t host_len = strlen(host), id_len = strlen(device_id);
    SG_ENSURE(host_len > 0 && memchr(host, '/', host_len) == NULL, SG_E_INVALID);
    SG_ENSURE(sg_device_id_valid(device_id, id_len), SG_E_INVALID);

    /* sr = encodeURIComponent(host + "/devices/" + encodeURIComponent(id)). */
    char id_enc[SG_DEVICE_ID_MAX * 3 + 1];
    char res[SG_SAS_MAX_TOKEN + 1];
    char sr[SG_SAS_MAX_TOKEN + 1];
    size_t id_enc_len, sr_len;
    SG_GUARD(sg_url_encode((const uint8_t *)device_id, id_len, id_enc, sizeof id_enc,
                           &id_enc_len));
    SG_ENSURE(host_len + SAS_DEVICES_LEN + id_enc_len < sizeof res, SG_E_TOO_BIG);
    memcpy(res, host, host_len);
    memcpy(res + host_len, SAS_DEVICES, SAS_DEVICES_LEN);
    memcpy(res + host_len + SAS_DEVICES_LEN, id_enc, id_enc_len);
    SG_GUARD(sg_url_encode((const uint8_t *)res, host_len + SAS_DEVICES_LEN + id_enc_len, sr,
                           sizeof sr, &sr_len));

    char se_txt[SAS_SE_TEXT_MAX];
    int se_n = snprintf(se_txt, sizeof se_txt, "%" PRId64, se);
    SG_ENSURE(se_n > 0 && (size_t)se_n < sizeof se_txt, SG_E_INVALID);

    uint8_t mac[SAS_MAC_LEN];
    char sig_b64[SAS_SIG_B64_LEN + 1], sig_enc[SAS_SIG_B64_LEN * 3 + 1];
    size_t sig_enc_len;
    SG_GUARD(sas_mac(key, key_len, sr, sr_len, se_txt, (size_t)se_n, mac));
    size_t b64_len = sg_b64_encode(mac, sizeof mac, sig_b64);
    OPENSSL_cleanse(mac, sizeof mac);
    SG_GUARD(sg_url_encode((const uint8_t *)sig_b64, b64_len, sig_enc, sizeof sig_enc,
                           &sig_enc_len));

    sas_out_t o = {out, 0, cap, 0};
    out_put(&o, SAS_PREFIX "sr=", SAS_PREFIX_LEN + 3);
    out_put(&o, sr, sr_len);
    out_put(&o, "&sig=", 5);
    out_put(&o, sig_enc, sig_enc_len);
    out_put(&o, "&se=", 4);
    out_put(&o, se_txt, (size_t)se_n);
    /* A token the parser would refuse is no use to anyone. */
    if (o.over || o.len > SG_SAS_MAX_TOKEN) {
        out[0] = '\0';
        return SG_E_TOO_BIG;
    }
    return SG_OK;
}
