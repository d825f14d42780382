/* sg_propbag.h — the URL-encoded property bags of IoT Hub topics ("k=v&k2=v2", system keys
 * start with "$." which devices send as "%24."). Parsing decodes keys and values into a caller
 * array of (key, value) pairs stored in one caller buffer; encoding percent-encodes like the
 * Azure SDKs (encodeURIComponent). */
#ifndef SG_PROPBAG_H
#define SG_PROPBAG_H

#include <stddef.h>
#include "sg_buf.h"
#include "sg_result.h"

#define SG_PROPBAG_MAX_PROPS 64

typedef struct {
    const char *key;      /* decoded, NUL-terminated, inside the caller's storage */
    const char *value;    /* decoded, NUL-terminated; "" for "k" or "k=" */
} sg_prop_t;

/* Parse bag (not NUL-terminated, len bytes). Decoded strings go into store (store_cap bytes;
 * len + SG_PROPBAG_MAX_PROPS * 2 is always enough). Empty bag -> *n = 0. Empty segments from
 * "&&" or a trailing "&" are skipped; an empty key ("=v") or bad percent-escape is
 * SG_E_MALFORMED, and so is a NUL byte in a decoded key or value ("%00"), which the C strings
 * could not carry; more than max props, or a store too small, is SG_E_TOO_BIG. A key seen twice
 * keeps both entries. On failure *n is 0. */
SG_WUR sg_rc sg_propbag_parse(const char *bag, size_t len, sg_prop_t *props, size_t max,
                              size_t *n, char *store, size_t store_cap);

/* Append "k=v&k2=v2" (encoded; "k=" for an empty or NULL value) to w. All or nothing: on
 * failure w->len is as before. An empty or NULL key is SG_E_INVALID; SG_E_TOO_BIG past w's max. */
SG_WUR sg_rc sg_propbag_encode(sg_wbuf_t *w, const sg_prop_t *props, size_t n);

#endif
