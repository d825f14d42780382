/* sg_buf.c — bounded cursor and capped writer; see sg_buf.h. */
#include "sg_buf.h"
#include <stdlib.h>

sg_rc sg_cur_u8(sg_cur_t *c, uint8_t *out)
{
    SG_ENSURE(sg_cur_left(c) >= 1, SG_E_TRUNCATED);
    *out = c->data[c->pos++];
    return SG_OK;
}

sg_rc sg_cur_u16(sg_cur_t *c, uint16_t *out)
{
    SG_ENSURE(sg_cur_left(c) >= 2, SG_E_TRUNCATED);
    const uint8_t *p = c->data + c->pos;
    *out = (uint16_t)((p[0] << 8) | p[1]);
    c->pos += 2;
    return SG_OK;
}

sg_rc sg_cur_u32(sg_cur_t *c, uint32_t *out)
{
    SG_ENSURE(sg_cur_left(c) >= 4, SG_E_TRUNCATED);
    const uint8_t *p = c->data + c->pos;
    *out = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    c->pos += 4;
    return SG_OK;
}

sg_rc sg_cur_u64(sg_cur_t *c, uint64_t *out)
{
    uint32_t hi, lo;
    SG_ENSURE(sg_cur_left(c) >= 8, SG_E_TRUNCATED);
    SG_GUARD(sg_cur_u32(c, &hi));
    SG_GUARD(sg_cur_u32(c, &lo));
    *out = ((uint64_t)hi << 32) | lo;
    return SG_OK;
}

sg_rc sg_cur_bytes(sg_cur_t *c, size_t n, const uint8_t **out)
{
    SG_ENSURE(sg_cur_left(c) >= n, SG_E_TRUNCATED);
    *out = c->data + c->pos;
    c->pos += n;
    return SG_OK;
}

sg_rc sg_cur_skip(sg_cur_t *c, size_t n)
{
    SG_ENSURE(sg_cur_left(c) >= n, SG_E_TRUNCATED);
    c->pos += n;
    return SG_OK;
}

sg_rc sg_cur_str8(sg_cur_t *c, size_t max, const uint8_t **out, size_t *len)
{
    uint8_t n;
    SG_GUARD(sg_cur_u8(c, &n));
    SG_ENSURE(n <= max, SG_E_TOO_BIG);
    *len = n;
    return sg_cur_bytes(c, n, out);
}

sg_rc sg_cur_str16(sg_cur_t *c, size_t max, const uint8_t **out, size_t *len)
{
    uint16_t n;
    SG_GUARD(sg_cur_u16(c, &n));
    SG_ENSURE(n <= max, SG_E_TOO_BIG);
    *len = n;
    return sg_cur_bytes(c, n, out);
}

sg_rc sg_cur_str32(sg_cur_t *c, size_t max, const uint8_t **out, size_t *len)
{
    uint32_t n;
    SG_GUARD(sg_cur_u32(c, &n));
    SG_ENSURE(n <= max, SG_E_TOO_BIG);
    *len = n;
    return sg_cur_bytes(c, n, out);
}

void sg_wbuf_init(sg_wbuf_t *w, size_t max)
{
    w->data = NULL;
    w->len = 0;
    w->cap = 0;
    w->max = max;
}

void sg_wbuf_fini(sg_wbuf_t *w)
{
    free(w->data);
    w->data = NULL;
    w->len = w->cap = 0;
}

sg_rc sg_wbuf_reserve(sg_wbuf_t *w, size_t extra)
{
    SG_ENSURE(extra <= w->max && w->len <= w->max - extra, SG_E_TOO_BIG);
    size_t need = w->len + extra;
    if (need <= w->cap)
        return SG_OK;
    size_t cap = w->cap ? w->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > w->max)
        cap = w->max;
    uint8_t *p = realloc(w->data, cap);
    SG_ENSURE(p != NULL, SG_E_NOMEM);
    w->data = p;
    w->cap = cap;
    return SG_OK;
}

sg_rc sg_wbuf_bytes(sg_wbuf_t *w, const void *p, size_t n)
{
    SG_GUARD(sg_wbuf_reserve(w, n));
    if (n)
        memcpy(w->data + w->len, p, n);
    w->len += n;
    return SG_OK;
}

sg_rc sg_wbuf_u8(sg_wbuf_t *w, uint8_t v) { return sg_wbuf_bytes(w, &v, 1); }

sg_rc sg_wbuf_u16(sg_wbuf_t *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return sg_wbuf_bytes(w, b, 2);
}

sg_rc sg_wbuf_u32(sg_wbuf_t *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return sg_wbuf_bytes(w, b, 4);
}

sg_rc sg_wbuf_u64(sg_wbuf_t *w, uint64_t v)
{
    SG_GUARD(sg_wbuf_u32(w, (uint32_t)(v >> 32)));
    return sg_wbuf_u32(w, (uint32_t)v);
}

sg_rc sg_wbuf_str8(sg_wbuf_t *w, const void *p, size_t n)
{
    SG_ENSURE(n <= UINT8_MAX, SG_E_TOO_BIG);
    SG_GUARD(sg_wbuf_u8(w, (uint8_t)n));
    return sg_wbuf_bytes(w, p, n);
}

sg_rc sg_wbuf_str16(sg_wbuf_t *w, const void *p, size_t n)
{
    SG_ENSURE(n <= UINT16_MAX, SG_E_TOO_BIG);
    SG_GUARD(sg_wbuf_u16(w, (uint16_t)n));
    return sg_wbuf_bytes(w, p, n);
}

sg_rc sg_wbuf_str32(sg_wbuf_t *w, const void *p, size_t n)
{
    SG_ENSURE(n <= UINT32_MAX, SG_E_TOO_BIG);
    SG_GUARD(sg_wbuf_u32(w, (uint32_t)n));
    return sg_wbuf_bytes(w, p, n);
}

void sg_wbuf_consume(sg_wbuf_t *w, size_t n)
{
    if (n >= w->len) {
        w->len = 0;
        return;
    }
    memmove(w->data, w->data + n, w->len - n);
    w->len -= n;
}

uint8_t *sg_wbuf_detach(sg_wbuf_t *w, size_t *len)
{
    uint8_t *p = w->data;
    *len = w->len;
    w->data = NULL;
    w->len = w->cap = 0;
    return p;
}
