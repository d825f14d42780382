/* sg_propbag.c — parse and build the URL-encoded property bags at the end of IoT Hub topics
 * ("%24.mid=1&%24.to=...&k=v"). Parsing decodes into the caller's storage without allocating;
 * encoding appends through an sg_wbuf so the connection's output cap applies. */
#include "sg_propbag.h"

#include <string.h>

#include "sg_codec.h"

/* Encode input in slices so one stack buffer serves any length: 3 output bytes per input byte at
 * most, plus the NUL sg_url_encode adds. */
#define PB_ENC_SLICE 256

/* URL-decode p[0..n) into the free part of the store and NUL-terminate it. A decoded NUL byte
 * (from "%00" or a raw NUL) is refused: the decoded strings are C strings and would silently lose
 * everything after it. */
static sg_rc pb_decode(const char *p, size_t n, char *store, size_t store_cap, size_t *used,
                       const char **out)
{
    size_t got;
    /* Decoding only shrinks, so n + 1 free bytes always suffice. */
    SG_ENSURE(store_cap - *used > n, SG_E_TOO_BIG);
    char *dst = store + *used;
    SG_GUARD(sg_url_decode(p, n, dst, &got, 0));
    SG_ENSURE(memchr(dst, '\0', got) == NULL, SG_E_MALFORMED);
    *out = dst;
    *used += got + 1;
    return SG_OK;
}

sg_rc sg_propbag_parse(const char *bag, size_t len, sg_prop_t *props, size_t max,
                       size_t *n, char *store, size_t store_cap)
{
    sg_cur_t c;
    size_t used = 0, count = 0;
    *n = 0;
    SG_ENSURE(bag != NULL || len == 0, SG_E_INVALID);
    sg_cur_init(&c, bag, len);
    while (sg_cur_left(&c) > 0) {
        const uint8_t *start = sg_cur_ptr(&c);
        const uint8_t *amp = memchr(start, '&', sg_cur_left(&c));
        size_t seg_len = amp ? (size_t)(amp - start) : sg_cur_left(&c);
        const uint8_t *seg;
        SG_GUARD(sg_cur_bytes(&c, seg_len, &seg));
        if (amp)
            SG_GUARD(sg_cur_skip(&c, 1));
        if (seg_len == 0)
            continue;   /* "&&" or a trailing '&' */

        /* The key ends at the first '='; the value is the rest and may hold more '='. */
        const uint8_t *eq = memchr(seg, '=', seg_len);
        size_t key_len = eq ? (size_t)(eq - seg) : seg_len;
        const char *val = eq ? (const char *)eq + 1 : (const char *)seg + seg_len;
        size_t val_len = eq ? seg_len - key_len - 1 : 0;
        SG_ENSURE(key_len > 0, SG_E_MALFORMED);
        SG_ENSURE(count < max, SG_E_TOO_BIG);

        sg_prop_t *pr = &props[count];
        SG_GUARD(pb_decode((const char *)seg, key_len, store, store_cap, &used, &pr->key));
        SG_GUARD(pb_decode(val, val_len, store, store_cap, &used, &pr->value));
        count++;
    }
    *n = count;
    return SG_OK;
}

static sg_rc pb_put_encoded(sg_wbuf_t *w, const char *s)
{
    char enc[PB_ENC_SLICE * 3 + 1];
    size_t len = strlen(s);
    for (size_t off = 0; off < len; off += PB_ENC_SLICE) {
        size_t take = len - off < PB_ENC_SLICE ? len - off : PB_ENC_SLICE;
        size_t enc_len;
        SG_GUARD(sg_url_encode((const uint8_t *)s + off, take, enc, sizeof enc, &enc_len));
        SG_GUARD(sg_wbuf_bytes(w, enc, enc_len));
    }
    return SG_OK;
}

static sg_rc pb_encode_all(sg_wbuf_t *w, const sg_prop_t *props, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        /* An empty key would read back as malformed; a missing value is the empty value. */
        SG_ENSURE(props[i].key != NULL && props[i].key[0] != '\0', SG_E_INVALID);
        if (i > 0)
            SG_GUARD(sg_wbuf_u8(w, '&'));
        SG_GUARD(pb_put_encoded(w, props[i].key));
        SG_GUARD(sg_wbuf_u8(w, '='));
        SG_GUARD(pb_put_encoded(w, props[i].value ? props[i].value : ""));
    }
    return SG_OK;
}

/* All or nothing: on failure w is left as it was, so a caller can fall back (or drop the
 * message) without a half-written bag in its buffer. */
sg_rc sg_propbag_encode(sg_wbuf_t *w, const sg_prop_t *props, size_t n)
{
    size_t mark = w->len;
    sg_rc rc = pb_encode_all(w, props, n);
    if (rc != SG_OK)
        w->len = mark;
    return rc;
}
