/* fuzz_ndjson.c — libFuzzer harness for the NDJSON splitter of POST /v1/devices:import
 * (adm_ndjson): a request body is untrusted and arrives in chunks of any size. The first byte
 * picks the line limit, the second the chunk sizes; the rest is the body. Whatever the chunking,
 * the splitter must hand out exactly the lines a whole-buffer split finds (same numbers, same
 * bytes, blank ones dropped, too-long ones flagged), else abort(). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "adm_ndjson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool blank(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return false;
    return true;
}

/* The next expected line at or after *pos of body, as a whole-buffer split sees it. */
static bool expect_next(const uint8_t *body, size_t size, size_t *pos, uint64_t *number, size_t max_line,
                        adm_line_t *out)
{
    while (*pos < size) {
        const uint8_t *nl = memchr(body + *pos, '\n', size - *pos);
        size_t n = nl ? (size_t)(nl - (body + *pos)) : size - *pos;
        const uint8_t *start = body + *pos;
        uint64_t num = ++*number;
        *pos += n + (nl ? 1 : 0);
        if (blank(start, n))
            continue;
        out->number = num;
        out->too_long = n > max_line;
        out->data = out->too_long ? NULL : (const char *)start;
        out->len = out->too_long ? 0 : n;
        return true;
    }
    return false;
}

static void check(const adm_line_t *got, const adm_line_t *want)
{
    if (got->number != want->number || got->too_long != want->too_long)
        abort();
    if (!want->too_long && (got->len != want->len || (got->len && memcmp(got->data, want->data, got->len) != 0)))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max_line = (size_t)(data[0] % 64) + 1;
    uint32_t seed = data[1] | 1u;
    const uint8_t *body = data + 2;
    size = size - 2;

    adm_ndjson_t s;
    adm_ndjson_init(&s, max_line);
    size_t at = 0, want_pos = 0;
    uint64_t want_number = 0;
    adm_line_t got, want;
    while (at < size) {
        seed = seed * 1103515245u + 12345u;
        size_t chunk = (seed >> 16) % 40 + 1;
        if (chunk > size - at)
            chunk = size - at;
        /* A copy per chunk, freed right after: a line handed out must not point into an earlier
         * chunk (ASan catches it). */
        uint8_t *c = malloc(chunk);
        if (!c)
            abort();
        memcpy(c, body + at, chunk);
        size_t off = 0;
        while (off < chunk) {
            size_t used = 0;
            sg_rc rc = adm_ndjson_next(&s, (const char *)c + off, chunk - off, &used, &got);
            if (used == 0 || used > chunk - off)
                abort();
            off += used;
            if (rc == SG_E_AGAIN) {
                if (off != chunk)
                    abort();
                break;
            }
            if (rc != SG_OK || !expect_next(body, size, &want_pos, &want_number, max_line, &want))
                abort();
            check(&got, &want);
        }
        free(c);
        at += chunk;
    }
    if (adm_ndjson_end(&s, &got) == SG_OK) {
        if (!expect_next(body, size, &want_pos, &want_number, max_line, &want))
            abort();
        check(&got, &want);
    }
    if (expect_next(body, size, &want_pos, &want_number, max_line, &want))
        abort();   /* a line the splitter never handed out */
    adm_ndjson_fini(&s);
    return 0;
}
