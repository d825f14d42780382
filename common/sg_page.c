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

/* ---- a telemetry record's JSON, written directly ----
 * The text jansson dumps (JSON_COMPACT) for {"offset","deviceId","enqueuedAt","properties",
 * "payload"} built with json_pack, json_stringn and json_object_setn_new (sg_page_test checks them
 * against each other), without building the tree: a page of records was the largest use of the
 * CPU in `sacgate all` after the group commit (about 3 us a record through jansson's allocations,
 * its UTF-8 checks and its escaping). */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 when there is none: jansson's rules
 * (no overlong forms, no surrogates, nothing past U+10FFFF). */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t u = s[0];
    size_t len;
    uint32_t v;
    if (u < 0x80)
        return 1;
    if (u >= 0xC2 && u <= 0xDF)
        len = 2, v = u & 0x1F;
    else if (u >= 0xE0 && u <= 0xEF)
        len = 3, v = u & 0x0F;
    else if (u >= 0xF0 && u <= 0xF4)
        len = 4, v = u & 0x07;
    else
        return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) || (len == 3 && v < 0x800) || (len == 4 && v < 0x10000))
        return 0;
    return len;
}

static bool utf8_valid(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq((const uint8_t *)s + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* A JSON string of valid UTF-8 s as jansson escapes it: quote, backslash and control characters
 * (\b \f \n \r \t, else \u00XX); everything else as it is. */
static sg_rc put_str(sg_wbuf_t *f, const char *s, size_t n)
{
    SG_GUARD(sg_wbuf_reserve(f, 2 + 6 * n));
    char *o = (char *)f->data + f->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            *o++ = 'u', *o++ = '0', *o++ = '0';
            *o++ = "0123456789ABCDEF"[c >> 4];
            *o++ = "0123456789ABCDEF"[c & 15];
        }
    }
    *o++ = '"';
    f->len = (size_t)(o - (char *)f->data);
    return SG_OK;
}

static sg_rc put_lit(sg_wbuf_t *f, const char *s) { return sg_wbuf_bytes(f, s, strlen(s)); }

const char *sg_page_auth_method(uint8_t kind)
{
    switch (kind) {
    case SG_CRED_X509: return "{\"scope\":\"device\",\"type\":\"x509Certificate\",\"issuer\":\"iothub\"}";
    case SG_CRED_PSK: return "{\"scope\":\"device\",\"type\":\"psk\",\"issuer\":\"iothub\"}";
    }
    return "{\"scope\":\"device\",\"type\":\"sas\",\"issuer\":\"iothub\"}";
}

/* The properties object: a key that is not UTF-8 is left out and a value that is not becomes
 * null (as json_object_setn_new and json_stringn have it); a key given again keeps its first
 * place and takes the last value. The stamped pair come last, as they were stored before. */
typedef struct {
    const char *k, *v;
    size_t kl, vl;
} kv_t;

static void kv_add(kv_t *kv, size_t *n, const char *k, size_t kl, const char *v, size_t vl)
{
    if (!utf8_valid(k, kl))
        return;
    size_t i = 0;
    while (i < *n && !(kv[i].kl == kl && memcmp(kv[i].k, k, kl) == 0))
        i++;
    if (i == *n && *n < SG_WIRE_MAX_PROPS)
        kv[(*n)++] = (kv_t){.k = k, .kl = kl};
    if (i < *n) {
        kv[i].v = utf8_valid(v, vl) ? v : NULL;
        kv[i].vl = vl;
    }
}

static sg_rc put_props(sg_wbuf_t *f, const sg_page_tele_t *t)
{
    kv_t kv[SG_WIRE_MAX_PROPS + 2];
    size_t n = 0;
    sg_wire_props_t p = t->props;
    const char *k, *v;
    size_t kl, vl;
    while (sg_wire_props_next(&p, &k, &kl, &v, &vl))
        kv_add(kv, &n, k, kl, v, vl);
    if (t->stamped) {
        const char *am = sg_page_auth_method(t->stamped);
        kv_add(kv, &n, SG_STAMP_DEVICE, sizeof SG_STAMP_DEVICE - 1, t->device, t->device_len);
        kv_add(kv, &n, SG_STAMP_AUTH, sizeof SG_STAMP_AUTH - 1, am, strlen(am));
    }
    SG_GUARD(sg_wbuf_u8(f, '{'));
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            SG_GUARD(sg_wbuf_u8(f, ','));
        SG_GUARD(put_str(f, kv[i].k, kv[i].kl));
        SG_GUARD(sg_wbuf_u8(f, ':'));
        SG_GUARD(kv[i].v ? put_str(f, kv[i].v, kv[i].vl) : put_lit(f, "null"));
    }
    return sg_wbuf_u8(f, '}');
}

sg_rc sg_page_tele_dump(sg_wbuf_t *f, const sg_page_tele_t *t, sg_page_clock_t *clk)
{
    if (!utf8_valid(t->device, t->device_len))
        return SG_E_MALFORMED;   /* json_pack refuses it: the record counts as damaged */
    size_t mark = f->len;
    char num[24];
    int nl = snprintf(num, sizeof num, "%lld", (long long)t->offset);
    /* A page's records mostly share their second: its text is made once. */
    int64_t sec = t->enqueued_ms / 1000;
    if (!clk->valid || clk->sec != sec) {
        sg_rfc3339(t->enqueued_ms, clk->text);
        clk->sec = sec;
        clk->valid = true;
    }
    char ts[25];
    memcpy(ts, clk->text, sizeof ts);
    int64_t ms = t->enqueued_ms;   /* the digits as sg_rfc3339 writes them */
    ts[20] = (char)('0' + (ms / 100) % 10);
    ts[21] = (char)('0' + (ms / 10) % 10);
    ts[22] = (char)('0' + ms % 10);
    size_t b64 = sg_b64_encoded_len(t->payload_len);
    sg_rc rc = put_lit(f, "{\"offset\":");
    if (rc == SG_OK)
        rc = sg_wbuf_bytes(f, num, (size_t)nl);
    if (rc == SG_OK)
        rc = put_lit(f, ",\"deviceId\":");
    if (rc == SG_OK)
        rc = put_str(f, t->device, t->device_len);
    if (rc == SG_OK)
        rc = put_lit(f, ",\"enqueuedAt\":");
    if (rc == SG_OK)
        rc = put_str(f, ts, 24);
    if (rc == SG_OK)
        rc = put_lit(f, ",\"properties\":");
    if (rc == SG_OK)
        rc = put_props(f, t);
    if (rc == SG_OK)
        rc = put_lit(f, ",\"payload\":\"");
    if (rc == SG_OK && (rc = sg_wbuf_reserve(f, b64 + 1)) == SG_OK)
        f->len += sg_b64_encode(t->payload, t->payload_len, (char *)f->data + f->len);
    if (rc == SG_OK)
        rc = put_lit(f, "\"}");
    if (rc != SG_OK)
        f->len = mark;
    return rc;
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
    if (t->stamped) {
        /* the auth method's quotes are escaped: that one is known exactly */
        const char *am = sg_page_auth_method(t->stamped);
        size_t quotes = 0;
        for (const char *q = am; *q; q++)
            quotes += *q == '"';
        props += sizeof SG_STAMP_DEVICE - 1 + t->device_len + 5 + (n++ > 0);
        props += sizeof SG_STAMP_AUTH - 1 + strlen(am) + quotes + 5 + (n++ > 0);
    }
    return fixed + digits(t->offset) + t->device_len + 24 + props + sg_b64_encoded_len(t->payload_len);
}

/* ---- JSON pages ---- */

sg_rc sg_page_json_begin(sg_page_json_t *j, sg_wbuf_t *f, uint32_t partition)
{
    char head[64];
    int hl = snprintf(head, sizeof head, "{\"partition\":%u,\"records\":[", partition);
    j->f = f;
    j->n = 0;
    j->clock.valid = false;
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

int sg_page_json_add_tele(sg_page_json_t *j, const sg_page_tele_t *t)
{
    sg_wbuf_t *f = j->f;
    size_t mark = f->len;
    if (j->n > 0 && sg_wbuf_u8(f, ',') != SG_OK)
        return 0;
    sg_rc rc = sg_page_tele_dump(f, t, &j->clock);
    if (rc == SG_E_MALFORMED) {
        f->len = mark;
        return -1;
    }
    /* A page holds at least one record, which fits because records are capped. */
    if (rc != SG_OK || (j->n > 0 && f->len - j->records_at > SG_PAGE_MAX_JSON)) {
        f->len = mark;
        return 0;
    }
    j->n++;
    return 1;
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

sg_rc sg_page_out_begin(sg_page_out_t *o, sg_wbuf_t *f, uint32_t partition, uint64_t oldest, const char *group,
                        bool stamped)
{
    size_t gl = group ? strlen(group) : 0;
    o->f = f;
    o->stamped = stamped;
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
    /* For an asker that takes them, the stamped pair as a word in front of the properties (see
     * sg_page_get_props); else written out as they were stored before. */
    bool kind = t->stamped && o->stamped, spelled = t->stamped && !o->stamped;
    uint16_t count = (uint16_t)(t->props.count + (spelled ? 2 : 0));
    const char *am = t->stamped ? sg_page_auth_method(t->stamped) : NULL;
    if (sg_wbuf_u64(f, (uint64_t)t->offset) != SG_OK || sg_wbuf_u64(f, (uint64_t)t->enqueued_ms) != SG_OK ||
        sg_wbuf_str8(f, t->device, t->device_len) != SG_OK ||
        (kind && sg_wbuf_u16(f, SG_PAGE_STAMPED | t->stamped) != SG_OK) || sg_wbuf_u16(f, count) != SG_OK ||
        sg_wbuf_bytes(f, t->props.rest.data + t->props.rest.pos, sg_cur_left(&t->props.rest)) != SG_OK ||
        (spelled && (sg_wire_put_prop(f, SG_STAMP_DEVICE, sizeof SG_STAMP_DEVICE - 1, t->device, t->device_len) != SG_OK ||
                     sg_wire_put_prop(f, SG_STAMP_AUTH, sizeof SG_STAMP_AUTH - 1, am, strlen(am)) != SG_OK)) ||
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

sg_rc sg_page_get_props(sg_cur_t *c, sg_wire_props_t *p, uint8_t *stamped)
{
    /* a count never has the top bit: a word that has it is the stamp, and the pairs follow */
    const uint8_t *at = sg_cur_ptr(c);
    *stamped = 0;
    if (sg_cur_left(c) >= 2 && (at[0] & 0x80)) {
        uint16_t word;
        SG_GUARD(sg_cur_u16(c, &word));
        SG_ENSURE((word & 0xFF00) == SG_PAGE_STAMPED, SG_E_MALFORMED);
        *stamped = (uint8_t)word;
        SG_ENSURE(*stamped >= SG_CRED_SAS && *stamped <= SG_CRED_PSK, SG_E_MALFORMED);
    }
    return sg_wire_get_props(c, p);
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
    SG_ENSURE(oldest <= INT64_MAX, SG_E_MALFORMED);   /* an offset: JSON readers take 63 bits */
    SG_GUARD(sg_cur_str8(&c, SG_GROUP_MAX, &group, &group_len));
    SG_ENSURE(group_len == 0 || sg_group_valid((const char *)group, group_len), SG_E_MALFORMED);
    char g[SG_GROUP_MAX + 1];
    memcpy(g, group, group_len);
    g[group_len] = 0;
    sg_page_json_t j;
    SG_GUARD(sg_page_json_begin(&j, out, partition));
    int64_t last = -1;
    uint32_t taken = 0;   /* records read from the body */
    for (uint32_t i = 0; i < count; i++) {
        sg_page_tele_t t;
        uint64_t off, enq;
        const uint8_t *dev;
        SG_GUARD(sg_cur_u64(&c, &off));
        SG_GUARD(sg_cur_u64(&c, &enq));
        SG_GUARD(sg_cur_str8(&c, SG_DEVICE_ID_MAX, &dev, &t.device_len));
        SG_ENSURE(sg_device_id_valid((const char *)dev, t.device_len), SG_E_MALFORMED);   /* as shards store them */
        SG_GUARD(sg_page_get_props(&c, &t.props, &t.stamped));
        SG_GUARD(sg_cur_str32(&c, SG_WIRE_MAX_FRAME, &t.payload, &t.payload_len));
        t.offset = (int64_t)off;
        t.enqueued_ms = (int64_t)enq;
        t.device = (const char *)dev;
        int added = sg_page_json_add_tele(&j, &t);
        if (added == 0) {
            /* longer than the shard counted: the rest comes with the next read */
            next = (uint64_t)(j.n > 0 ? last : t.offset - 1);
            break;
        }
        last = t.offset;   /* or skipped as damaged, as the shard would have */
        taken++;
    }
    if (taken == count)
        SG_ENSURE(sg_cur_left(&c) == 0, SG_E_MALFORMED);
    return sg_page_json_end(&j, (int64_t)next, oldest, g);
}
