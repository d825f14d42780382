/* sg_page.c — see sg_page.h. */
#include "sg_page.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sg_codec.h"
#include "sg_sas.h"
#include "sg_time.h"

json_t *sg_page_props_json(sg_wire_props_t p)
{
    json_t *o = json_object();
    const char *k, *v;
    size_t kl, vl;
    while (sg_wire_props_next(&p, &k, &kl, &v, &vl)) {
        /* Frontends only pass UTF-8; a value that is not (older data) becomes null, not bad JSON. */
        json_t *val = json_stringn(v, vl);
        json_object_setn_new(o, k, kl, val ? val : json_null());
    }
    return o;
}

json_t *sg_page_b64_json(const uint8_t *p, size_t n)
{
    char *s = malloc(sg_b64_encoded_len(n) + 1);
    if (!s)
        return NULL;
    sg_b64_encode(p, n, s);
    json_t *j = json_string(s);
    free(s);
    return j;
}

json_t *sg_page_time_json(int64_t ms)
{
    char t[25];
    sg_rfc3339(ms, t);
    return json_string(t);
}

json_t *sg_page_tele_json(const sg_page_tele_t *t)
{
    return json_pack("{s:I,s:s%,s:o,s:o,s:o}", "offset", (json_int_t)t->offset, "deviceId", t->device, t->device_len,
                     "enqueuedAt", sg_page_time_json(t->enqueued_ms), "properties", sg_page_props_json(t->props),
                     "payload", sg_page_b64_json(t->payload, t->payload_len));
}

static size_t digits(int64_t v)
{
    size_t n = v < 0 ? 2 : 1;
    for (uint64_t u = v < 0 ? (uint64_t)-(v + 1) + 1 : (uint64_t)v; u >= 10; u /= 10)
        n++;
    return n;
}

size_t sg_page_tele_json_len(const sg_page_tele_t *t)
{
    /* {"offset":N,"deviceId":"D","enqueuedAt":"T","properties":P,"payload":"B"} as jansson dumps
     * it compact: the quoted names and punctuation, then the values. */
    static const size_t fixed = sizeof "{\"offset\":,\"deviceId\":\"\",\"enqueuedAt\":\"\",\"properties\":,\"payload\":\"\"}" - 1;
    size_t props = 2;   /* {} */
    sg_wire_props_t p = t->props;
    const char *k, *v;
    size_t kl, vl, n = 0;
    while (sg_wire_props_next(&p, &k, &kl, &v, &vl))
        props += kl + vl + 5 + (n++ > 0);   /* "k":"v" and a comma before all but the first */
    return fixed + digits(t->offset) + t->device_len + 24 + props + sg_b64_encoded_len(t->payload_len);
}

/* ---- JSON pages ---- */

sg_rc sg_page_json_begin(sg_page_json_t *j, sg_wbuf_t *f, uint32_t partition)
{
    char head[64];
    int hl = snprintf(head, sizeof head, "{\"partition\":%u,\"records\":[", partition);
    j->f = f;
    j->n = 0;
    SG_GUARD(sg_wbuf_bytes(f, head, (size_t)hl));
    j->records_at = f->len;
    return SG_OK;
}

bool sg_page_json_add(sg_page_json_t *j, const json_t *rec)
{
    sg_wbuf_t *f = j->f;
    /* One dump into the room there is; a record larger than that is dumped again. */
    size_t mark = f->len, room = 0, len = 0;
    if (rec && sg_wbuf_reserve(f, 64 * 1024) == SG_OK) {
        if (j->n > 0)
            f->data[f->len++] = ',';
        room = f->cap - f->len;
        len = json_dumpb(rec, (char *)f->data + f->len, room, JSON_COMPACT);
        if (len > room &&
            (sg_wbuf_reserve(f, len) != SG_OK || json_dumpb(rec, (char *)f->data + f->len, len, JSON_COMPACT) != len))
            len = 0;
    }
    /* A page holds at least one record, which fits because records are capped. */
    if (len == 0 || (j->n > 0 && f->len + len - j->records_at > SG_PAGE_MAX_JSON)) {
        f->len = mark;
        return false;
    }
    f->len += len;
    j->n++;
    return true;
}

sg_rc sg_page_json_end(sg_page_json_t *j, int64_t next, uint64_t oldest, const char *group)
{
    char tail[160];
    bool g = group && *group;
    int tl = snprintf(tail, sizeof tail, "],\"next\":%lld,\"oldest\":%llu%s%s%s}", (long long)next,
                      (unsigned long long)oldest, g ? ",\"group\":\"" : "", g ? group : "", g ? "\"" : "");
    return sg_wbuf_bytes(j->f, tail, (size_t)tl);
}

/* ---- compact pages ---- */

/* partition u32, then next (u64) and count (u32) around oldest (u64): offsets from head_at */
#define NEXT_AT 4
#define COUNT_AT 20

sg_rc sg_page_out_begin(sg_page_out_t *o, sg_wbuf_t *f, uint32_t partition, uint64_t oldest, const char *group)
{
    size_t gl = group ? strlen(group) : 0;
    o->f = f;
    o->head_at = f->len;
    o->n = 0;
    o->json = 0;
    SG_GUARD(sg_wbuf_u32(f, partition));
    SG_GUARD(sg_wbuf_u64(f, 0));
    SG_GUARD(sg_wbuf_u64(f, oldest));
    SG_GUARD(sg_wbuf_u32(f, 0));
    return sg_wbuf_str8(f, group, gl);
}

bool sg_page_out_add(sg_page_out_t *o, const sg_page_tele_t *t)
{
    size_t json = sg_page_tele_json_len(t) + (o->n > 0);   /* and its comma */
    if (o->n > 0 && o->json + json > SG_PAGE_MAX_JSON)
        return false;
    sg_wbuf_t *f = o->f;
    size_t mark = f->len;
    uint16_t count = t->props.count;
    if (sg_wbuf_u64(f, (uint64_t)t->offset) != SG_OK || sg_wbuf_u64(f, (uint64_t)t->enqueued_ms) != SG_OK ||
        sg_wbuf_str8(f, t->device, t->device_len) != SG_OK || sg_wbuf_u16(f, count) != SG_OK ||
        sg_wbuf_bytes(f, t->props.rest.data + t->props.rest.pos, sg_cur_left(&t->props.rest)) != SG_OK ||
        sg_wbuf_str32(f, t->payload, t->payload_len) != SG_OK) {
        f->len = mark;
        return false;
    }
    o->json += json;
    o->n++;
    return true;
}

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int k = 0; k < bytes; k++)
        p[k] = (uint8_t)(v >> (8 * (bytes - 1 - k)));
}

void sg_page_out_end(sg_page_out_t *o, int64_t next)
{
    put_be(o->f->data + o->head_at + NEXT_AT, (uint64_t)next, 8);
    put_be(o->f->data + o->head_at + COUNT_AT, o->n, 4);
}

sg_rc sg_page_render(const uint8_t *body, size_t len, sg_wbuf_t *out)
{
    sg_cur_t c;
    uint32_t partition, count;
    uint64_t next, oldest;
    const uint8_t *group;
    size_t group_len;
    sg_cur_init(&c, body, len);
    SG_GUARD(sg_cur_u32(&c, &partition));
    SG_GUARD(sg_cur_u64(&c, &next));
    SG_GUARD(sg_cur_u64(&c, &oldest));
    SG_GUARD(sg_cur_u32(&c, &count));
    SG_GUARD(sg_cur_str8(&c, SG_GROUP_MAX, &group, &group_len));
    SG_ENSURE(group_len == 0 || sg_group_valid((const char *)group, group_len), SG_E_MALFORMED);
    char g[SG_GROUP_MAX + 1];
    memcpy(g, group, group_len);
    g[group_len] = 0;
    sg_page_json_t j;
    SG_GUARD(sg_page_json_begin(&j, out, partition));
    int64_t last = -1;
    for (uint32_t i = 0; i < count; i++) {
        sg_page_tele_t t;
        uint64_t off, enq;
        const uint8_t *dev;
        SG_GUARD(sg_cur_u64(&c, &off));
        SG_GUARD(sg_cur_u64(&c, &enq));
        SG_GUARD(sg_cur_str8(&c, SG_DEVICE_ID_MAX, &dev, &t.device_len));
        SG_GUARD(sg_wire_get_props(&c, &t.props));
        SG_GUARD(sg_cur_str32(&c, SG_WIRE_MAX_FRAME, &t.payload, &t.payload_len));
        t.offset = (int64_t)off;
        t.enqueued_ms = (int64_t)enq;
        t.device = (const char *)dev;
        json_t *rec = sg_page_tele_json(&t);
        bool added = sg_page_json_add(&j, rec);
        json_decref(rec);
        if (!added) {
            /* longer than the shard counted: the rest comes with the next read */
            next = (uint64_t)(j.n > 0 ? last : t.offset - 1);
            break;
        }
        last = t.offset;
    }
    if (j.n == count)
        SG_ENSURE(sg_cur_left(&c) == 0, SG_E_MALFORMED);
    return sg_page_json_end(&j, (int64_t)next, oldest, g);
}
