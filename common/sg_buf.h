/* sg_buf.h — bounded cursor over untrusted bytes (sg_cur) and a capped growable writer (sg_wbuf).
 * Every parser of wire data in sacgate reads only through sg_cur, which cannot read past its end;
 * every encoder writes through sg_wbuf, which refuses to grow past its cap. */
#ifndef SG_BUF_H
#define SG_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "sg_result.h"

typedef struct {
    const uint8_t *data;
    size_t len;
    size_t pos;
} sg_cur_t;

static inline void sg_cur_init(sg_cur_t *c, const void *data, size_t len)
{
    c->data = (const uint8_t *)data;
    c->len = len;
    c->pos = 0;
}

static inline size_t sg_cur_left(const sg_cur_t *c) { return c->len - c->pos; }
static inline const uint8_t *sg_cur_ptr(const sg_cur_t *c) { return c->data + c->pos; }

SG_WUR sg_rc sg_cur_u8(sg_cur_t *c, uint8_t *out);
SG_WUR sg_rc sg_cur_u16(sg_cur_t *c, uint16_t *out);   /* big-endian */
SG_WUR sg_rc sg_cur_u32(sg_cur_t *c, uint32_t *out);   /* big-endian */
SG_WUR sg_rc sg_cur_u64(sg_cur_t *c, uint64_t *out);   /* big-endian */
/* A view of the next n bytes; the cursor moves past them. */
SG_WUR sg_rc sg_cur_bytes(sg_cur_t *c, size_t n, const uint8_t **out);
SG_WUR sg_rc sg_cur_skip(sg_cur_t *c, size_t n);
/* Length-prefixed views: u8, u16 or u32 length then that many bytes; fails if len > max. */
SG_WUR sg_rc sg_cur_str8(sg_cur_t *c, size_t max, const uint8_t **out, size_t *len);
SG_WUR sg_rc sg_cur_str16(sg_cur_t *c, size_t max, const uint8_t **out, size_t *len);
SG_WUR sg_rc sg_cur_str32(sg_cur_t *c, size_t max, const uint8_t **out, size_t *len);

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max;   /* the writer never grows past this many bytes */
} sg_wbuf_t;

/* Start an empty writer that may grow to max bytes. Allocates lazily. */
void sg_wbuf_init(sg_wbuf_t *w, size_t max);
void sg_wbuf_fini(sg_wbuf_t *w);
static inline void sg_wbuf_reset(sg_wbuf_t *w) { w->len = 0; }
SG_WUR sg_rc sg_wbuf_reserve(sg_wbuf_t *w, size_t extra);
SG_WUR sg_rc sg_wbuf_u8(sg_wbuf_t *w, uint8_t v);
SG_WUR sg_rc sg_wbuf_u16(sg_wbuf_t *w, uint16_t v);
SG_WUR sg_rc sg_wbuf_u32(sg_wbuf_t *w, uint32_t v);
SG_WUR sg_rc sg_wbuf_u64(sg_wbuf_t *w, uint64_t v);
SG_WUR sg_rc sg_wbuf_bytes(sg_wbuf_t *w, const void *p, size_t n);
SG_WUR sg_rc sg_wbuf_str8(sg_wbuf_t *w, const void *p, size_t n);
SG_WUR sg_rc sg_wbuf_str16(sg_wbuf_t *w, const void *p, size_t n);
SG_WUR sg_rc sg_wbuf_str32(sg_wbuf_t *w, const void *p, size_t n);
/* Drop the first n bytes (consumed output). */
void sg_wbuf_consume(sg_wbuf_t *w, size_t n);
/* Hand the buffer to the caller (who frees it with free()); the writer is left empty. */
uint8_t *sg_wbuf_detach(sg_wbuf_t *w, size_t *len);

#endif
