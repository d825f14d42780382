/* fuzz_propbag.c — libFuzzer harness for IoT Hub property bags: parse, encode what parsed, parse
 * again; the second parse must give the same pairs and re-encoding must be stable, else abort(). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sg_propbag.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sg_prop_t first[SG_PROPBAG_MAX_PROPS], second[SG_PROPBAG_MAX_PROPS];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *bag = malloc(size ? size : 1);
    size_t store_cap = size + SG_PROPBAG_MAX_PROPS * 2;   /* what the header promises is enough */
    char *store = malloc(store_cap);
    if (!bag || !store)
        abort();
    if (size)
        memcpy(bag, data, size);
    size_t n = 0;
    sg_rc rc = sg_propbag_parse(bag, size, first, SG_PROPBAG_MAX_PROPS, &n, store, store_cap);
    if (rc != SG_OK) {
        if (rc != SG_E_MALFORMED && rc != SG_E_TOO_BIG)
            abort();
        goto out;
    }
    if (n > SG_PROPBAG_MAX_PROPS)
        abort();
    for (size_t i = 0; i < n; i++) {
        /* Views stay inside the store and keys are never empty. */
        if (first[i].key < store || first[i].key >= store + store_cap || first[i].key[0] == '\0' ||
            first[i].value < store || first[i].value >= store + store_cap)
            abort();
    }

    sg_wbuf_t w1, w2;
    sg_wbuf_init(&w1, 1 << 20);
    sg_wbuf_init(&w2, 1 << 20);
    if (sg_propbag_encode(&w1, first, n) != SG_OK)
        abort();
    size_t store2_cap = w1.len + SG_PROPBAG_MAX_PROPS * 2;
    char *store2 = malloc(store2_cap);
    size_t m = 0;
    if (!store2 ||
        sg_propbag_parse((const char *)w1.data, w1.len, second, SG_PROPBAG_MAX_PROPS, &m, store2,
                         store2_cap) != SG_OK ||
        m != n)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (strcmp(first[i].key, second[i].key) != 0 ||
            strcmp(first[i].value, second[i].value) != 0)
            abort();
    }
    /* Encoding is canonical: encoding the re-parsed pairs gives the same text. */
    if (sg_propbag_encode(&w2, second, m) != SG_OK || w2.len != w1.len ||
        (w1.len && memcmp(w1.data, w2.data, w1.len) != 0))
        abort();
    free(store2);
    sg_wbuf_fini(&w1);
    sg_wbuf_fini(&w2);
out:
    free(store);
    free(bag);
    return 0;
}
