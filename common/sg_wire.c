/* sg_wire.c — encoding and validation of inter-tier frames; see sg_wire.h.
 * Header layout (big-endian): u8 version, u8 type, u8 flags, u16 status, u32 shard, u64 corr,
 * u64 epoch, str8 device id; the body follows. */
#include "sg_wire.h"
#include "sg_sas.h"

static const char *const k_type_names[SG_MSG_TYPE_MAX] = {
    [SG_MSG_AUTH] = "AUTH",
    [SG_MSG_AUTH_RES] = "AUTH_RES",
    [SG_MSG_SESSION_END] = "SESSION_END",
    [SG_MSG_KICK] = "KICK",
    [SG_MSG_TELEMETRY] = "TELEMETRY",
    [SG_MSG_TELEMETRY_ACK] = "TELEMETRY_ACK",
    [SG_MSG_SUBSCRIBE] = "SUBSCRIBE",
    [SG_MSG_DELIVER] = "DELIVER",
    [SG_MSG_COMPLETE] = "COMPLETE",
    [SG_MSG_ADMIN] = "ADMIN",
    [SG_MSG_ADMIN_RES] = "ADMIN_RES",
    [SG_MSG_PEER_GONE] = "PEER_GONE",
    [SG_MSG_HELLO] = "HELLO",
    [SG_MSG_RING] = "RING",
    [SG_MSG_RING_RES] = "RING_RES",
    [SG_MSG_PING] = "PING",
    [SG_MSG_PONG] = "PONG",
    [SG_MSG_ERROR] = "ERROR",
    [SG_MSG_ALIVE] = "ALIVE",
    [SG_MSG_SHARD_STATE] = "SHARD_STATE",
    [SG_MSG_BATCH] = "BATCH",
    [SG_MSG_METHOD] = "METHOD",
    [SG_MSG_METHOD_RES] = "METHOD_RES",
    [SG_MSG_INQUIRY] = "INQUIRY",
    [SG_MSG_INQUIRY_RES] = "INQUIRY_RES",
    [SG_MSG_PSK] = "PSK",
    [SG_MSG_PSK_RES] = "PSK_RES",
    [SG_MSG_SUBSCRIBE_RES] = "SUBSCRIBE_RES",
};

const char *sg_wire_type_name(uint8_t type)
{
    if (type == 0 || type >= SG_MSG_TYPE_MAX)
        return "UNKNOWN";
    return k_type_names[type];
}

sg_wire_hdr_t sg_wire_hdr(uint8_t type, const char *device)
{
    sg_wire_hdr_t h = {.type = type, .shard = SG_WIRE_SHARD_BY_DEVICE};
    if (device) {
        h.device = device;
        h.device_len = strlen(device);
    }
    return h;
}

sg_wire_hdr_t sg_wire_reply(const sg_wire_hdr_t *in, uint8_t type, uint16_t status)
{
    sg_wire_hdr_t h = sg_wire_hdr(type, NULL);
    h.device = in->device;
    h.device_len = in->device_len;
    h.corr = in->corr;
    h.epoch = in->epoch;
    h.status = status;
    return h;
}

sg_rc sg_wire_decode(const uint8_t *frame, size_t len, sg_wire_hdr_t *out)
{
    sg_cur_t c;
    uint8_t version;
    const uint8_t *dev;

    SG_ENSURE(len <= SG_WIRE_MAX_FRAME, SG_E_TOO_BIG);
    sg_cur_init(&c, frame, len);
    SG_GUARD(sg_cur_u8(&c, &version));
    SG_ENSURE(version == SG_WIRE_VERSION, SG_E_MALFORMED);
    SG_GUARD(sg_cur_u8(&c, &out->type));
    SG_ENSURE(out->type > 0 && out->type < SG_MSG_TYPE_MAX, SG_E_MALFORMED);
    SG_GUARD(sg_cur_u8(&c, &out->flags));
    SG_GUARD(sg_cur_u16(&c, &out->status));
    SG_GUARD(sg_cur_u32(&c, &out->shard));
    SG_GUARD(sg_cur_u64(&c, &out->corr));
    SG_GUARD(sg_cur_u64(&c, &out->epoch));
    SG_GUARD(sg_cur_str8(&c, SG_DEVICE_ID_MAX, &dev, &out->device_len));
    SG_ENSURE(out->device_len == 0 || sg_device_id_valid((const char *)dev, out->device_len),
              SG_E_MALFORMED);
    out->device = (const char *)dev;
    out->body = sg_cur_ptr(&c);
    out->body_len = sg_cur_left(&c);
    return SG_OK;
}

sg_rc sg_wire_encode_hdr(sg_wbuf_t *w, const sg_wire_hdr_t *h)
{
    SG_ENSURE(h->device_len <= SG_DEVICE_ID_MAX, SG_E_TOO_BIG);
    SG_GUARD(sg_wbuf_u8(w, SG_WIRE_VERSION));
    SG_GUARD(sg_wbuf_u8(w, h->type));
    SG_GUARD(sg_wbuf_u8(w, h->flags));
    SG_GUARD(sg_wbuf_u16(w, h->status));
    SG_GUARD(sg_wbuf_u32(w, h->shard));
    SG_GUARD(sg_wbuf_u64(w, h->corr));
    SG_GUARD(sg_wbuf_u64(w, h->epoch));
    return sg_wbuf_str8(w, h->device, h->device_len);
}

/* The u64 corr follows version, type, flags, status (2) and shard (4). */
#define CORR_AT 9

sg_rc sg_wire_set_corr(uint8_t *frame, size_t len, uint64_t corr)
{
    SG_ENSURE(len >= CORR_AT + 8 && frame[0] == SG_WIRE_VERSION, SG_E_MALFORMED);
    for (int k = 0; k < 8; k++)
        frame[CORR_AT + k] = (uint8_t)(corr >> (56 - 8 * k));
    return SG_OK;
}

/* flags follow version and type */
sg_rc sg_wire_add_flags(uint8_t *frame, size_t len, uint8_t flags)
{
    SG_ENSURE(len >= 3 && frame[0] == SG_WIRE_VERSION, SG_E_MALFORMED);
    frame[2] |= flags;
    return SG_OK;
}

static void body_cursor(const sg_wire_hdr_t *h, sg_cur_t *c) { sg_cur_init(c, h->body, h->body_len); }

/* A body must be consumed exactly: trailing bytes mean the peer speaks another format. */
static sg_rc body_end(const sg_cur_t *c) { return sg_cur_left(c) == 0 ? SG_OK : SG_E_MALFORMED; }

sg_rc sg_wire_put_auth(sg_wbuf_t *w, const sg_wire_auth_t *a)
{
    SG_GUARD(sg_wbuf_u8(w, a->method));
    return sg_wbuf_str16(w, a->credential, a->credential_len);
}

sg_rc sg_wire_get_auth(const sg_wire_hdr_t *h, sg_wire_auth_t *a)
{
    sg_cur_t c;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u8(&c, &a->method));
    SG_ENSURE(a->method >= SG_CRED_SAS && a->method <= SG_CRED_PSK, SG_E_MALFORMED);
    SG_GUARD(sg_cur_str16(&c, SG_WIRE_MAX_CREDENTIAL, &a->credential, &a->credential_len));
    return body_end(&c);
}

sg_rc sg_wire_put_psk(sg_wbuf_t *w, const uint8_t *key, size_t len)
{
    SG_ENSURE(len <= SG_WIRE_MAX_PSK, SG_E_TOO_BIG);
    return sg_wbuf_str8(w, key, len);
}

sg_rc sg_wire_get_psk(const sg_wire_hdr_t *h, const uint8_t **key, size_t *len)
{
    sg_cur_t c;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_str8(&c, SG_WIRE_MAX_PSK, key, len));
    return body_end(&c);
}

sg_rc sg_wire_put_cert(sg_wbuf_t *w, const uint8_t *der, size_t len)
{
    SG_ENSURE(len > 0, SG_E_MALFORMED);
    return sg_wbuf_str16(w, der, len);
}

sg_rc sg_wire_get_chain(const uint8_t *p, size_t len, const uint8_t *ders[SG_WIRE_MAX_CHAIN],
                        size_t lens[SG_WIRE_MAX_CHAIN], size_t *n)
{
    sg_cur_t c;
    sg_cur_init(&c, p, len);
    *n = 0;
    while (sg_cur_left(&c) > 0) {
        SG_ENSURE(*n < SG_WIRE_MAX_CHAIN, SG_E_MALFORMED);
        SG_GUARD(sg_cur_str16(&c, SG_WIRE_MAX_CREDENTIAL, &ders[*n], &lens[*n]));
        SG_ENSURE(lens[*n] > 0, SG_E_MALFORMED);
        (*n)++;
    }
    return *n > 0 ? SG_OK : SG_E_MALFORMED;
}

sg_rc sg_wire_put_auth_res(sg_wbuf_t *w, const sg_wire_auth_res_t *a)
{
    SG_GUARD(sg_wbuf_u64(w, (uint64_t)a->expires));
    return sg_wbuf_u32(w, a->generation);
}

sg_rc sg_wire_get_auth_res(const sg_wire_hdr_t *h, sg_wire_auth_res_t *a)
{
    sg_cur_t c;
    uint64_t exp;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u64(&c, &exp));
    SG_GUARD(sg_cur_u32(&c, &a->generation));
    a->expires = (int64_t)exp;
    return body_end(&c);
}

sg_rc sg_wire_put_prop(sg_wbuf_t *w, const char *k, size_t kl, const char *v, size_t vl)
{
    SG_GUARD(sg_wbuf_str16(w, k, kl));
    return sg_wbuf_str16(w, v, vl);
}

bool sg_wire_props_next(sg_wire_props_t *p, const char **k, size_t *kl, const char **v, size_t *vl)
{
    const uint8_t *kp, *vp;
    if (p->count == 0)
        return false;
    /* Validated by the body reader, so these cannot fail here. */
    if (sg_cur_str16(&p->rest, UINT16_MAX, &kp, kl) != SG_OK ||
        sg_cur_str16(&p->rest, UINT16_MAX, &vp, vl) != SG_OK)
        return false;
    *k = (const char *)kp;
    *v = (const char *)vp;
    p->count--;
    return true;
}

/* Reads the u16 count and walks the pairs once to validate them, leaving c after the list. */
sg_rc sg_wire_get_props(sg_cur_t *c, sg_wire_props_t *p)
{
    const uint8_t *s;
    size_t n;
    SG_GUARD(sg_cur_u16(c, &p->count));
    SG_ENSURE(p->count <= SG_WIRE_MAX_PROPS, SG_E_TOO_BIG);
    size_t start = c->pos;
    for (uint16_t i = 0; i < p->count; i++) {
        SG_GUARD(sg_cur_str16(c, UINT16_MAX, &s, &n));
        SG_ENSURE(n > 0, SG_E_MALFORMED);
        SG_GUARD(sg_cur_str16(c, UINT16_MAX, &s, &n));
    }
    sg_cur_init(&p->rest, c->data + start, c->pos - start);
    return SG_OK;
}

sg_rc sg_wire_put_telemetry_head(sg_wbuf_t *w, uint16_t packet_id, uint16_t nprops)
{
    SG_GUARD(sg_wbuf_u16(w, packet_id));
    return sg_wbuf_u16(w, nprops);
}

sg_rc sg_wire_put_payload(sg_wbuf_t *w, const void *p, size_t n) { return sg_wbuf_str32(w, p, n); }

sg_rc sg_wire_get_telemetry(const sg_wire_hdr_t *h, sg_wire_telemetry_t *t)
{
    sg_cur_t c;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u16(&c, &t->packet_id));
    SG_GUARD(sg_wire_get_props(&c, &t->props));
    SG_GUARD(sg_cur_str32(&c, SG_WIRE_MAX_FRAME, &t->payload, &t->payload_len));
    return body_end(&c);
}

sg_rc sg_wire_put_pid(sg_wbuf_t *w, uint16_t packet_id) { return sg_wbuf_u16(w, packet_id); }

sg_rc sg_wire_get_pid(const sg_wire_hdr_t *h, uint16_t *packet_id)
{
    sg_cur_t c;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u16(&c, packet_id));
    return body_end(&c);
}

sg_rc sg_wire_put_subscribe(sg_wbuf_t *w, uint8_t channel, uint8_t mode)
{
    SG_GUARD(sg_wbuf_u8(w, channel));
    return sg_wbuf_u8(w, mode);
}

sg_rc sg_wire_get_subscribe(const sg_wire_hdr_t *h, uint8_t *channel, uint8_t *mode, uint16_t *pid)
{
    sg_cur_t c;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u8(&c, channel));
    SG_GUARD(sg_cur_u8(&c, mode));
    *pid = 0;
    if (h->flags & SG_WIRE_F_ANSWER)
        SG_GUARD(sg_cur_u16(&c, pid));
    SG_ENSURE((*channel == SG_CHAN_C2D && *mode <= SG_SUB_QOS0) ||
                  (*channel == SG_CHAN_METHODS && (*mode == SG_SUB_OFF || *mode == SG_SUB_QOS0)),
              SG_E_MALFORMED);
    return body_end(&c);
}

sg_rc sg_wire_put_deliver_head(sg_wbuf_t *w, const sg_wire_deliver_t *d, uint16_t nprops)
{
    SG_GUARD(sg_wbuf_u16(w, d->packet_id));
    SG_GUARD(sg_wbuf_u32(w, d->delivery_count));
    SG_GUARD(sg_wbuf_u64(w, (uint64_t)d->enqueued_ms));
    SG_GUARD(sg_wbuf_u64(w, (uint64_t)d->expires_ms));
    SG_GUARD(sg_wbuf_str8(w, d->message_id, d->message_id_len));
    return sg_wbuf_u16(w, nprops);
}

sg_rc sg_wire_get_deliver(const sg_wire_hdr_t *h, sg_wire_deliver_t *d)
{
    sg_cur_t c;
    uint64_t enq, exp;
    const uint8_t *mid;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u16(&c, &d->packet_id));
    SG_GUARD(sg_cur_u32(&c, &d->delivery_count));
    SG_GUARD(sg_cur_u64(&c, &enq));
    SG_GUARD(sg_cur_u64(&c, &exp));
    SG_GUARD(sg_cur_str8(&c, 128, &mid, &d->message_id_len));
    SG_GUARD(sg_wire_get_props(&c, &d->props));
    SG_GUARD(sg_cur_str32(&c, SG_WIRE_MAX_FRAME, &d->payload, &d->payload_len));
    d->enqueued_ms = (int64_t)enq;
    d->expires_ms = (int64_t)exp;
    d->message_id = (const char *)mid;
    return body_end(&c);
}

bool sg_method_name_valid(const char *s, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch && strchr("-._~:@!$'()*,;=", ch))))
            return false;
    }
    return true;
}

/* "{status}/?$rid={rid}[&...]" after the prefix. The status is a decimal int32 (IoT Hub passes
 * any integer through); the query may hold other keys, and "$" may come URL-encoded (%24). */
bool sg_method_res_topic(const uint8_t *p, size_t n, int32_t *status, const char **rid, size_t *rid_len)
{
    size_t i = 0;
    bool neg = false;
    int64_t v = 0;
    if (i < n && p[i] == '-')
        neg = true, i++;
    size_t digits = i;
    while (i < n && p[i] >= '0' && p[i] <= '9' && i - digits < 10)
        v = v * 10 + (p[i++] - '0');
    if (i == digits || (neg ? -v : v) < INT32_MIN || (neg ? -v : v) > INT32_MAX)
        return false;
    *status = (int32_t)(neg ? -v : v);
    if (n - i < 2 || p[i] != '/' || p[i + 1] != '?')
        return false;
    i += 2;
    while (i < n) {
        const uint8_t *amp = memchr(p + i, '&', n - i);
        size_t end = amp ? (size_t)(amp - p) : n;
        if (end - i > 5 && memcmp(p + i, "$rid=", 5) == 0) {
            *rid = (const char *)p + i + 5;
            *rid_len = end - i - 5;
            return true;
        }
        if (end - i > 7 && memcmp(p + i, "%24rid=", 7) == 0) {
            *rid = (const char *)p + i + 7;
            *rid_len = end - i - 7;
            return true;
        }
        i = end + 1;
    }
    return false;
}

static sg_rc get_method_str(sg_cur_t *c, size_t max, const char **s, size_t *len)
{
    const uint8_t *p;
    SG_GUARD(sg_cur_str8(c, UINT8_MAX, &p, len));
    SG_ENSURE(sg_method_name_valid((const char *)p, *len, max), SG_E_MALFORMED);
    *s = (const char *)p;
    return SG_OK;
}

sg_rc sg_wire_put_method(sg_wbuf_t *w, const sg_wire_method_t *m)
{
    SG_ENSURE(sg_method_name_valid(m->rid, m->rid_len, SG_METHOD_RID_MAX), SG_E_MALFORMED);
    SG_ENSURE(sg_method_name_valid(m->name, m->name_len, SG_METHOD_NAME_MAX), SG_E_MALFORMED);
    SG_GUARD(sg_wbuf_str8(w, m->rid, m->rid_len));
    SG_GUARD(sg_wbuf_str8(w, m->name, m->name_len));
    return sg_wbuf_str32(w, m->payload, m->payload_len);
}

sg_rc sg_wire_get_method(const sg_wire_hdr_t *h, sg_wire_method_t *m)
{
    sg_cur_t c;
    body_cursor(h, &c);
    m->status = 0;
    SG_GUARD(get_method_str(&c, SG_METHOD_RID_MAX, &m->rid, &m->rid_len));
    SG_GUARD(get_method_str(&c, SG_METHOD_NAME_MAX, &m->name, &m->name_len));
    SG_GUARD(sg_cur_str32(&c, SG_WIRE_MAX_FRAME, &m->payload, &m->payload_len));
    return body_end(&c);
}

sg_rc sg_wire_put_method_res(sg_wbuf_t *w, const sg_wire_method_t *m)
{
    SG_ENSURE(sg_method_name_valid(m->rid, m->rid_len, SG_METHOD_RID_MAX), SG_E_MALFORMED);
    SG_GUARD(sg_wbuf_u32(w, (uint32_t)m->status));
    SG_GUARD(sg_wbuf_str8(w, m->rid, m->rid_len));
    return sg_wbuf_str32(w, m->payload, m->payload_len);
}

sg_rc sg_wire_get_method_res(const sg_wire_hdr_t *h, sg_wire_method_t *m)
{
    sg_cur_t c;
    uint32_t st;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u32(&c, &st));
    m->status = (int32_t)st;
    m->name = NULL;
    m->name_len = 0;
    SG_GUARD(get_method_str(&c, SG_METHOD_RID_MAX, &m->rid, &m->rid_len));
    SG_GUARD(sg_cur_str32(&c, SG_WIRE_MAX_FRAME, &m->payload, &m->payload_len));
    return body_end(&c);
}

sg_rc sg_wire_put_u8(sg_wbuf_t *w, uint8_t v) { return sg_wbuf_u8(w, v); }

sg_rc sg_wire_get_u8(const sg_wire_hdr_t *h, uint8_t *v)
{
    sg_cur_t c;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u8(&c, v));
    return body_end(&c);
}

sg_rc sg_wire_put_admin(sg_wbuf_t *w, uint16_t op, const char *json, size_t len)
{
    SG_GUARD(sg_wbuf_u16(w, op));
    return sg_wbuf_str32(w, json, len);
}

sg_rc sg_wire_get_admin(const sg_wire_hdr_t *h, uint16_t *op, const char **json, size_t *len)
{
    sg_cur_t c;
    const uint8_t *p;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u16(&c, op));
    SG_ENSURE(*op > 0 && *op < SG_ADM_OP_MAX, SG_E_MALFORMED);
    SG_GUARD(sg_cur_str32(&c, SG_WIRE_MAX_FRAME, &p, len));
    *json = (const char *)p;
    return body_end(&c);
}

sg_rc sg_wire_put_json(sg_wbuf_t *w, const char *json, size_t len) { return sg_wbuf_str32(w, json, len); }

sg_rc sg_wire_get_json(const sg_wire_hdr_t *h, const char **json, size_t *len)
{
    sg_cur_t c;
    const uint8_t *p;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_str32(&c, SG_WIRE_MAX_FRAME, &p, len));
    *json = (const char *)p;
    return body_end(&c);
}

sg_rc sg_wire_put_error(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint16_t code)
{
    sg_wire_hdr_t h = sg_wire_reply(in, SG_MSG_ERROR, code);
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    SG_GUARD(sg_wbuf_u8(w, in->type));
    /* A refused publish (0 for QoS 0) or completion is named, so its frontend can send that one
     * again. */
    sg_wire_telemetry_t t;
    sg_wire_inquiry_t q;
    uint16_t pid;
    if (in->type == SG_MSG_TELEMETRY && sg_wire_get_telemetry(in, &t) == SG_OK)
        SG_GUARD(sg_wbuf_u16(w, t.packet_id));
    else if (in->type == SG_MSG_INQUIRY && sg_wire_get_inquiry(in, &q) == SG_OK)
        SG_GUARD(sg_wbuf_u16(w, q.packet_id));
    else if (in->type == SG_MSG_COMPLETE && sg_wire_get_pid(in, &pid) == SG_OK)
        SG_GUARD(sg_wbuf_u16(w, pid));
    return SG_OK;
}

sg_rc sg_wire_get_error(const sg_wire_hdr_t *h, uint8_t *about, uint16_t *pid, bool *named)
{
    sg_cur_t c;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u8(&c, about));
    *pid = 0;
    *named = sg_cur_left(&c) > 0;
    if (*named)
        SG_GUARD(sg_cur_u16(&c, pid));
    return body_end(&c);
}

static bool in_set(const char *s, size_t len, size_t max, const char *extra)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              (s[i] && strchr(extra, s[i]))))
            return false;
    return true;
}

bool sg_inquiry_name_valid(const char *s, size_t len)
{
    return in_set(s, len, SG_INQUIRY_NAME_MAX, "._-") && !(len == 3 && memcmp(s, "res", 3) == 0);
}

bool sg_inquiry_rid_valid(const char *s, size_t len) { return in_set(s, len, SG_INQUIRY_RID_MAX, "._-~"); }

sg_rc sg_wire_put_inquiry(sg_wbuf_t *w, const sg_wire_inquiry_t *q)
{
    SG_GUARD(sg_wbuf_u16(w, q->packet_id));
    SG_GUARD(sg_wbuf_str8(w, q->name, q->name_len));
    SG_GUARD(sg_wbuf_str8(w, q->rid, q->rid_len));
    return sg_wbuf_str32(w, q->payload, q->payload_len);
}

sg_rc sg_wire_get_inquiry(const sg_wire_hdr_t *h, sg_wire_inquiry_t *q)
{
    sg_cur_t c;
    const uint8_t *n, *r;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u16(&c, &q->packet_id));
    SG_GUARD(sg_cur_str8(&c, SG_INQUIRY_NAME_MAX, &n, &q->name_len));
    SG_GUARD(sg_cur_str8(&c, SG_INQUIRY_RID_MAX, &r, &q->rid_len));
    SG_GUARD(sg_cur_str32(&c, SG_WIRE_MAX_FRAME, &q->payload, &q->payload_len));
    q->name = (const char *)n;
    q->rid = (const char *)r;
    SG_ENSURE(sg_inquiry_name_valid(q->name, q->name_len) && sg_inquiry_rid_valid(q->rid, q->rid_len), SG_E_MALFORMED);
    return body_end(&c);
}

sg_rc sg_wire_put_inquiry_res(sg_wbuf_t *w, const char *rid, size_t rid_len, const void *payload, size_t len)
{
    SG_GUARD(sg_wbuf_str8(w, rid, rid_len));
    return sg_wbuf_str32(w, payload, len);
}

sg_rc sg_wire_get_inquiry_res(const sg_wire_hdr_t *h, const char **rid, size_t *rid_len, const uint8_t **payload,
                              size_t *len)
{
    sg_cur_t c;
    const uint8_t *r;
    body_cursor(h, &c);
    SG_ENSURE(h->status >= 100 && h->status <= 599, SG_E_MALFORMED);
    SG_GUARD(sg_cur_str8(&c, SG_INQUIRY_RID_MAX, &r, rid_len));
    SG_GUARD(sg_cur_str32(&c, SG_WIRE_MAX_FRAME, payload, len));
    *rid = (const char *)r;
    SG_ENSURE(sg_inquiry_rid_valid(*rid, *rid_len), SG_E_MALFORMED);
    return body_end(&c);
}

sg_rc sg_wire_put_name(sg_wbuf_t *w, const char *name) { return sg_wbuf_str8(w, name, strlen(name)); }

sg_rc sg_wire_get_name(const sg_wire_hdr_t *h, const char **name, size_t *len)
{
    sg_cur_t c;
    const uint8_t *p;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_str8(&c, SG_WIRE_MAX_PEER, &p, len));
    *name = (const char *)p;
    return body_end(&c);
}

sg_rc sg_wire_put_shard_pong(sg_wbuf_t *w, const char *name, uint64_t incarnation)
{
    SG_GUARD(sg_wbuf_str8(w, name, strlen(name)));
    return sg_wbuf_u64(w, incarnation);
}

sg_rc sg_wire_get_shard_pong(const sg_wire_hdr_t *h, const char **name, size_t *len, uint64_t *incarnation)
{
    sg_cur_t c;
    const uint8_t *p;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_str8(&c, SG_WIRE_MAX_PEER, &p, len));
    SG_GUARD(sg_cur_u64(&c, incarnation));
    *name = (const char *)p;
    return body_end(&c);
}

sg_rc sg_wire_put_router_pong(sg_wbuf_t *w, uint64_t router, const uint64_t *shards, uint16_t n)
{
    SG_ENSURE(n <= SG_WIRE_MAX_SHARDS, SG_E_TOO_BIG);
    SG_GUARD(sg_wbuf_u64(w, router));
    SG_GUARD(sg_wbuf_u16(w, n));
    for (uint16_t i = 0; i < n; i++)
        SG_GUARD(sg_wbuf_u64(w, shards[i]));
    return SG_OK;
}

sg_rc sg_wire_get_router_pong(const sg_wire_hdr_t *h, sg_wire_router_pong_t *p)
{
    sg_cur_t c;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u64(&c, &p->router));
    SG_GUARD(sg_cur_u16(&c, &p->n));
    SG_ENSURE(p->n <= SG_WIRE_MAX_SHARDS, SG_E_MALFORMED);
    /* exactly n incarnations follow: checked now, so the iterator needs no error path */
    SG_ENSURE(sg_cur_left(&c) == (size_t)p->n * 8, sg_cur_left(&c) < (size_t)p->n * 8 ? SG_E_TRUNCATED : SG_E_MALFORMED);
    p->rest = c;
    return SG_OK;
}

bool sg_wire_router_pong_next(sg_wire_router_pong_t *p, uint64_t *incarnation)
{
    return sg_cur_u64(&p->rest, incarnation) == SG_OK;
}

sg_rc sg_wire_put_u64(sg_wbuf_t *w, uint64_t v) { return sg_wbuf_u64(w, v); }

sg_rc sg_wire_get_u64(const sg_wire_hdr_t *h, uint64_t *v)
{
    sg_cur_t c;
    body_cursor(h, &c);
    SG_GUARD(sg_cur_u64(&c, v));
    return body_end(&c);
}

bool sg_adm_op_writes(uint16_t op)
{
    return op == SG_ADM_DEVICE_PUT || op == SG_ADM_DEVICE_DELETE || op == SG_ADM_MSG_ENQUEUE || op == SG_ADM_MSG_PURGE ||
           op == SG_ADM_DEVICE_IMPORT || op == SG_ADM_GROUP_COMMIT || op == SG_ADM_KEYS_REGENERATE ||
           op == SG_ADM_NOTIFY || op == SG_ADM_INQUIRY_CLAIM || op == SG_ADM_INQUIRY_WATCH ||
           op == SG_ADM_INQUIRY_ANSWER || op == SG_ADM_CA_PUT || op == SG_ADM_CA_GET || op == SG_ADM_CA_DELETE ||
           op == SG_ADM_METHOD_INVOKE;   /* not a write to disk, but the writer holds the sessions */
}

bool sg_group_valid(const char *g, size_t len)
{
    if (len == 0 || len > SG_GROUP_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((g[i] >= 'a' && g[i] <= 'z') || (g[i] >= 'A' && g[i] <= 'Z') || (g[i] >= '0' && g[i] <= '9') ||
              g[i] == '.' || g[i] == '_' || g[i] == '-'))
            return false;
    return true;
}

/* ---- BATCH ---- */

/* Header of a BATCH frame: no device, so always this size (see sg_wire_encode_hdr). */
#define BATCH_HDR_LEN 26u
/* str8 peer + str32 frame */
#define ITEM_OVERHEAD 5u

void sg_wire_batch_init(sg_wire_batch_t *b)
{
    sg_wbuf_init(&b->w, SG_WIRE_BATCH_MAX);
    b->n = 0;
    b->first = BATCH_HDR_LEN;
}

void sg_wire_batch_fini(sg_wire_batch_t *b)
{
    sg_wbuf_fini(&b->w);
    b->n = 0;
}

bool sg_wire_batchable(size_t peer_len, size_t len)
{
    return peer_len <= UINT8_MAX && len <= SG_WIRE_BATCH_ITEM_MAX;
}

bool sg_wire_batch_fits(const sg_wire_batch_t *b, size_t peer_len, size_t len)
{
    size_t used = b->n ? b->w.len : BATCH_HDR_LEN;
    return sg_wire_batchable(peer_len, len) && used + ITEM_OVERHEAD + peer_len + len <= SG_WIRE_BATCH_MAX;
}

sg_rc sg_wire_batch_add(sg_wire_batch_t *b, const void *peer, size_t peer_len, const void *frame, size_t len)
{
    SG_ENSURE(sg_wire_batch_fits(b, peer_len, len), SG_E_TOO_BIG);
    if (b->n == 0) {
        sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_BATCH, NULL);
        sg_wbuf_reset(&b->w);
        SG_GUARD(sg_wire_encode_hdr(&b->w, &h));
        b->first = b->w.len;
    }
    size_t at = b->w.len;
    sg_rc rc = sg_wbuf_str8(&b->w, peer, peer_len);
    if (rc == SG_OK)
        rc = sg_wbuf_str32(&b->w, frame, len);
    if (rc != SG_OK) {
        b->w.len = at;   /* nothing of a failed item stays */
        return rc;
    }
    b->n++;
    return SG_OK;
}

void sg_wire_batch_out(const sg_wire_batch_t *b, const uint8_t **frame, size_t *len, const uint8_t **peer,
                       size_t *peer_len)
{
    if (b->n != 1) {
        *frame = b->w.data;
        *len = b->w.len;
        *peer = NULL;
        *peer_len = 0;
        return;
    }
    /* the only item: its own peer and frame, as they were added */
    const uint8_t *p = b->w.data + b->first;
    *peer_len = p[0];
    *peer = p + 1;
    *frame = p + 1 + p[0] + 4;
    *len = b->w.len - (b->first + 1 + p[0] + 4);
}

void sg_wire_batch_begin(const sg_wire_hdr_t *h, sg_cur_t *c) { body_cursor(h, c); }

sg_rc sg_wire_batch_next(sg_cur_t *c, const uint8_t **peer, size_t *peer_len, const uint8_t **frame, size_t *len)
{
    if (sg_cur_left(c) == 0)
        return SG_E_AGAIN;
    SG_GUARD(sg_cur_str8(c, SG_WIRE_MAX_PEER, peer, peer_len));
    SG_GUARD(sg_cur_str32(c, SG_WIRE_BATCH_ITEM_MAX, frame, len));
    SG_ENSURE(*len >= 2 && (*frame)[1] != SG_MSG_BATCH, SG_E_MALFORMED);
    return SG_OK;
}

sg_rc sg_wire_batch_each(const sg_wire_hdr_t *h, sg_wire_item_fn fn, void *ctx)
{
    sg_cur_t c;
    const uint8_t *peer, *frame;
    size_t peer_len, len;
    sg_rc rc;
    sg_wire_batch_begin(h, &c);
    while ((rc = sg_wire_batch_next(&c, &peer, &peer_len, &frame, &len)) == SG_OK)
        fn(ctx, peer, peer_len, frame, len);
    return rc == SG_E_AGAIN ? SG_OK : rc;
}

sg_rc sg_wire_batch_each_frame(const uint8_t *batch, size_t len, sg_wire_item_fn fn, void *ctx)
{
    sg_wire_hdr_t h;
    SG_GUARD(sg_wire_decode(batch, len, &h));
    SG_ENSURE(h.type == SG_MSG_BATCH, SG_E_MALFORMED);
    return sg_wire_batch_each(&h, fn, ctx);
}
