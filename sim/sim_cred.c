/* sim_cred.c — device names, derived keys and credential files; see sim_cred.h. */
#include "sim_cred.h"
#include <inttypes.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sg_buf.h"
#include "sg_codec.h"
#include "sg_sas.h"

#define KEY_MAX 64

typedef struct {
    uint32_t id_off;      /* into text */
    uint8_t id_len;
    uint8_t key_len;      /* 0 = no key */
    uint8_t key[KEY_MAX];
} entry_t;

struct sim_creds {
    char *text;           /* every id, NUL-terminated, back to back */
    size_t text_len;
    entry_t *e;
    size_t n, cap;
};

sg_rc sim_device_name(char *out, size_t cap, const char *prefix, uint64_t n)
{
    int k = snprintf(out, cap, "%s-%" PRIu64, prefix, n);
    SG_ENSURE(k > 0 && (size_t)k < cap && sg_device_id_valid(out, (size_t)k), SG_E_TOO_BIG);
    return SG_OK;
}

void sim_derive_key(const char *seed, const char *device_id, uint8_t out[SIM_KEY_LEN])
{
    unsigned int len = SIM_KEY_LEN;
    HMAC(EVP_sha256(), seed, (int)strlen(seed), (const unsigned char *)device_id, strlen(device_id), out, &len);
}

void sim_creds_destroy(sim_creds_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->text);
    free((*self_p)->e);
    free(*self_p);
    *self_p = NULL;
}

static sim_creds_t *fail(sim_creds_t *c, char *err, size_t err_len, size_t line, const char *why)
{
    snprintf(err, err_len, "line %zu: %s", line, why);
    sim_creds_destroy(&c);
    return NULL;
}

/* The index after the run of blanks (blank) or of other bytes (!blank) from i in s[0..n). */
static size_t span(const uint8_t *s, size_t i, size_t n, bool blank)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t') == blank)
        i++;
    return i;
}

sim_creds_t *sim_creds_parse(const char *text, size_t len, char *err, size_t err_len)
{
    sim_creds_t *c = calloc(1, sizeof *c);
    if (!c || !(c->text = malloc(len + 1)))
        return fail(c, err, err_len, 0, "out of memory");
    sg_cur_t cur;
    sg_cur_init(&cur, text, len);
    size_t line = 0;
    while (sg_cur_left(&cur) > 0) {
        line++;
        const uint8_t *start = sg_cur_ptr(&cur);
        const uint8_t *nl = memchr(start, '\n', sg_cur_left(&cur));
        size_t n = nl ? (size_t)(nl - start) : sg_cur_left(&cur);
        if (sg_cur_skip(&cur, n + (nl != NULL)) != SG_OK)
            return fail(c, err, err_len, line, "internal error");
        if (n > 0 && start[n - 1] == '\r')
            n--;
        /* fields: id, whitespace, key, optional trailing whitespace */
        size_t i = span(start, 0, n, true);
        if (i == n || start[i] == '#')
            continue;
        size_t id_start = i;
        i = span(start, i, n, false);
        size_t id_len = i - id_start;
        size_t key_start = span(start, i, n, true);
        i = span(start, key_start, n, false);
        size_t key_len = i - key_start;
        if (span(start, i, n, true) != n)
            return fail(c, err, err_len, line, "expected 'deviceId base64key' (two fields)");
        if (!sg_device_id_valid((const char *)start + id_start, id_len))
            return fail(c, err, err_len, line, "not a valid device id (1-128 of A-Z a-z 0-9 - . % _ * ? ! ( ) , : = @ $ ')");
        if (key_len == 0)
            return fail(c, err, err_len, line, "no key (write '-' for a device without one)");
        entry_t e = {.id_off = (uint32_t)c->text_len, .id_len = (uint8_t)id_len};
        if (!(key_len == 1 && start[key_start] == '-')) {
            uint8_t raw[KEY_MAX + 3];
            size_t raw_len;
            if (key_len > 4 * ((KEY_MAX + 2) / 3) ||
                sg_b64_decode((const char *)start + key_start, key_len, raw, &raw_len) != SG_OK || raw_len == 0 ||
                raw_len > KEY_MAX)
                return fail(c, err, err_len, line, "the key is not base64 of 1 to 64 bytes");
            memcpy(e.key, raw, raw_len);
            e.key_len = (uint8_t)raw_len;
        }
        if (c->n == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 256;
            entry_t *ne = realloc(c->e, cap * sizeof *ne);
            if (!ne)
                return fail(c, err, err_len, line, "out of memory");
            c->e = ne;
            c->cap = cap;
        }
        memcpy(c->text + c->text_len, start + id_start, id_len);
        c->text[c->text_len + id_len] = 0;
        c->text_len += id_len + 1;
        c->e[c->n++] = e;
    }
    return c;
}

sim_creds_t *sim_creds_load(const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s: cannot open it", path);
        return NULL;
    }
    sg_wbuf_t w;
    sg_wbuf_init(&w, (size_t)1 << 34);
    char buf[65536];
    size_t n;
    sg_rc rc = SG_OK;
    while (rc == SG_OK && (n = fread(buf, 1, sizeof buf, f)) > 0)
        rc = sg_wbuf_bytes(&w, buf, n);
    fclose(f);
    sim_creds_t *c = NULL;
    if (rc != SG_OK)
        snprintf(err, err_len, "%s: out of memory reading it", path);
    else if (w.len == 0)
        snprintf(err, err_len, "%s: the file is empty", path);
    else {
        char why[256];
        c = sim_creds_parse((const char *)w.data, w.len, why, sizeof why);
        if (!c)
            snprintf(err, err_len, "%s: %s", path, why);
        else if (c->n == 0) {
            snprintf(err, err_len, "%s: no devices in it", path);
            sim_creds_destroy(&c);
        }
    }
    sg_wbuf_fini(&w);
    return c;
}

size_t sim_creds_count(const sim_creds_t *self) { return self ? self->n : 0; }

const char *sim_creds_id(const sim_creds_t *self, size_t i) { return self->text + self->e[i].id_off; }

const uint8_t *sim_creds_key(const sim_creds_t *self, size_t i, size_t *len)
{
    *len = self->e[i].key_len;
    return self->e[i].key_len ? self->e[i].key : NULL;
}
