/* st_record.c — encoders and checked decoders of a shard's binary records; see st_record.h. */
#include "st_record.h"

#define REC_V1 1
/* telemetry with its stamped properties as a credential kind (st_record.h) */
#define TELE_V2 2

static sg_rc rec_begin(sg_cur_t *c, const void *p, size_t n)
{
    uint8_t v;
    sg_cur_init(c, p, n);
    SG_GUARD(sg_cur_u8(c, &v));
    SG_ENSURE(v == REC_V1, SG_E_MALFORMED);
    return SG_OK;
}

static sg_rc rec_end(const sg_cur_t *c) { return sg_cur_left(c) == 0 ? SG_OK : SG_E_MALFORMED; }

sg_rc st_session_put(sg_wbuf_t *w, const st_session_t *s)
{
    SG_GUARD(sg_wbuf_u8(w, REC_V1));
    SG_GUARD(sg_wbuf_u64(w, s->epoch));
    SG_GUARD(sg_wbuf_u8(w, (uint8_t)((s->live ? 1 : 0) | (s->subscribed ? 2 : 0) | (s->sub_qos0 ? 4 : 0) |
                                       (s->methods ? 8 : 0))));
    SG_GUARD(sg_wbuf_u8(w, s->method));
    SG_GUARD(sg_wbuf_u64(w, s->handle));
    SG_GUARD(sg_wbuf_u64(w, (uint64_t)s->since_ms));
    SG_GUARD(sg_wbuf_str8(w, s->peer, strlen(s->peer)));
    return sg_wbuf_str8(w, s->router, strlen(s->router));
}

sg_rc st_session_get(const void *p, size_t n, st_session_t *s)
{
    sg_cur_t c;
    uint8_t flags;
    uint64_t since;
    const uint8_t *peer;
    size_t peer_len;
    SG_GUARD(rec_begin(&c, p, n));
    SG_GUARD(sg_cur_u64(&c, &s->epoch));
    SG_GUARD(sg_cur_u8(&c, &flags));
    SG_GUARD(sg_cur_u8(&c, &s->method));
    SG_GUARD(sg_cur_u64(&c, &s->handle));
    SG_GUARD(sg_cur_u64(&c, &since));
    SG_GUARD(sg_cur_str8(&c, SG_WIRE_MAX_PEER, &peer, &peer_len));
    const uint8_t *router;
    size_t router_len;
    SG_GUARD(sg_cur_str8(&c, SG_WIRE_MAX_PEER, &router, &router_len));
    memcpy(s->router, router, router_len);
    s->router[router_len] = 0;
    s->live = flags & 1;
    s->subscribed = (flags & 2) != 0;
    s->sub_qos0 = (flags & 4) != 0;
    s->methods = (flags & 8) != 0;
    s->since_ms = (int64_t)since;
    memcpy(s->peer, peer, peer_len);
    s->peer[peer_len] = 0;
    return rec_end(&c);
}

sg_rc st_qmeta_put(sg_wbuf_t *w, const st_qmeta_t *m)
{
    SG_GUARD(sg_wbuf_u8(w, REC_V1));
    SG_GUARD(sg_wbuf_u64(w, m->next_seq));
    SG_GUARD(sg_wbuf_u32(w, m->count));
    return sg_wbuf_u64(w, m->bytes);
}

sg_rc st_qmeta_get(const void *p, size_t n, st_qmeta_t *m)
{
    sg_cur_t c;
    SG_GUARD(rec_begin(&c, p, n));
    SG_GUARD(sg_cur_u64(&c, &m->next_seq));
    SG_GUARD(sg_cur_u32(&c, &m->count));
    SG_GUARD(sg_cur_u64(&c, &m->bytes));
    return rec_end(&c);
}

const char *st_outcome_name(uint8_t outcome)
{
    switch (outcome) {
    case ST_OUT_DELIVERED: return "delivered";
    case ST_OUT_EXPIRED: return "expired";
    case ST_OUT_REJECTED: return "rejected";
    case ST_OUT_PURGED: return "purged";
    case ST_OUT_REVOKED: return "revoked";
    case ST_OUT_DELIVERY_COUNT_EXCEEDED: return "deliveryCountExceeded";
    case ST_OUT_DAMAGED: return "damaged";
    }
    return "unknown";
}

/* Message layout: u8 v, str8 id, u64 enqueued, u64 expires, u8 ack, u32 delivery_count,
 * props, str32 payload. The count's offset is fixed once the id length is known. */
sg_rc st_msg_put_head(sg_wbuf_t *w, const st_msg_t *m, uint16_t nprops)
{
    SG_GUARD(sg_wbuf_u8(w, REC_V1));
    SG_GUARD(sg_wbuf_str8(w, m->message_id, m->message_id_len));
    SG_GUARD(sg_wbuf_u64(w, (uint64_t)m->enqueued_ms));
    SG_GUARD(sg_wbuf_u64(w, (uint64_t)m->expires_ms));
    SG_GUARD(sg_wbuf_u8(w, m->ack));
    SG_GUARD(sg_wbuf_u32(w, m->delivery_count));
    return sg_wbuf_u16(w, nprops);
}

sg_rc st_msg_put_tail(sg_wbuf_t *w, const void *payload, size_t len)
{
    return sg_wbuf_str32(w, payload, len);
}

static sg_rc msg_read(sg_cur_t *c, st_msg_t *m)
{
    const uint8_t *id;
    uint64_t enq, exp;
    SG_GUARD(sg_cur_str8(c, 128, &id, &m->message_id_len));
    SG_GUARD(sg_cur_u64(c, &enq));
    SG_GUARD(sg_cur_u64(c, &exp));
    SG_GUARD(sg_cur_u8(c, &m->ack));
    SG_GUARD(sg_cur_u32(c, &m->delivery_count));
    SG_GUARD(sg_wire_get_props(c, &m->props));
    SG_GUARD(sg_cur_str32(c, SG_WIRE_MAX_FRAME, &m->payload, &m->payload_len));
    m->message_id = (const char *)id;
    m->enqueued_ms = (int64_t)enq;
    m->expires_ms = (int64_t)exp;
    SG_ENSURE(m->ack <= ST_ACK_FULL, SG_E_MALFORMED);
    return SG_OK;
}

sg_rc st_msg_get(const void *p, size_t n, st_msg_t *m)
{
    sg_cur_t c;
    SG_GUARD(rec_begin(&c, p, n));
    SG_GUARD(msg_read(&c, m));
    return rec_end(&c);
}

sg_rc st_msg_with_count(const void *p, size_t n, uint32_t count, sg_wbuf_t *out)
{
    st_msg_t m;
    SG_GUARD(st_msg_get(p, n, &m));
    size_t at = 1 + 1 + m.message_id_len + 8 + 8 + 1;   /* offset of delivery_count */
    sg_wbuf_reset(out);
    SG_GUARD(sg_wbuf_bytes(out, p, n));
    out->data[at] = (uint8_t)(count >> 24);
    out->data[at + 1] = (uint8_t)(count >> 16);
    out->data[at + 2] = (uint8_t)(count >> 8);
    out->data[at + 3] = (uint8_t)count;
    return SG_OK;
}

sg_rc st_dead_put(sg_wbuf_t *w, uint8_t reason, int64_t at_ms, const void *msg, size_t n)
{
    SG_GUARD(sg_wbuf_u8(w, reason));
    SG_GUARD(sg_wbuf_u64(w, (uint64_t)at_ms));
    return sg_wbuf_bytes(w, msg, n);
}

sg_rc st_dead_head(const void *p, size_t n, uint8_t *reason, int64_t *at_ms, const uint8_t **msg, size_t *msg_len)
{
    sg_cur_t c;
    uint64_t at;
    sg_cur_init(&c, p, n);
    SG_GUARD(sg_cur_u8(&c, reason));
    SG_GUARD(sg_cur_u64(&c, &at));
    *at_ms = (int64_t)at;
    *msg = sg_cur_ptr(&c);
    *msg_len = sg_cur_left(&c);
    return SG_OK;
}

sg_rc st_dead_get(const void *p, size_t n, uint8_t *reason, int64_t *at_ms, st_msg_t *m)
{
    const uint8_t *msg;
    size_t len;
    SG_GUARD(st_dead_head(p, n, reason, at_ms, &msg, &len));
    return st_msg_get(msg, len, m);
}

sg_rc st_tele_put_head(sg_wbuf_t *w, int64_t enqueued_ms, const char *device, size_t dlen, uint8_t stamped,
                       uint16_t nprops)
{
    SG_GUARD(sg_wbuf_u8(w, TELE_V2));
    SG_GUARD(sg_wbuf_u64(w, (uint64_t)enqueued_ms));
    SG_GUARD(sg_wbuf_str8(w, device, dlen));
    SG_GUARD(sg_wbuf_u8(w, stamped));
    return sg_wbuf_u16(w, nprops);
}

sg_rc st_tele_get(const void *p, size_t n, st_tele_t *t)
{
    sg_cur_t c;
    uint8_t v;
    uint64_t enq;
    const uint8_t *dev;
    sg_cur_init(&c, p, n);
    SG_GUARD(sg_cur_u8(&c, &v));
    SG_ENSURE(v == REC_V1 || v == TELE_V2, SG_E_MALFORMED);
    SG_GUARD(sg_cur_u64(&c, &enq));
    SG_GUARD(sg_cur_str8(&c, 128, &dev, &t->device_len));
    t->stamped = 0;   /* a record from before: its properties hold the pair */
    if (v == TELE_V2) {
        SG_GUARD(sg_cur_u8(&c, &t->stamped));
        SG_ENSURE(t->stamped >= SG_CRED_SAS && t->stamped <= SG_CRED_PSK, SG_E_MALFORMED);
    }
    SG_GUARD(sg_wire_get_props(&c, &t->props));
    SG_GUARD(sg_cur_str32(&c, SG_WIRE_MAX_FRAME, &t->payload, &t->payload_len));
    t->enqueued_ms = (int64_t)enq;
    t->device = (const char *)dev;
    return rec_end(&c);
}

sg_rc st_feedback_put(sg_wbuf_t *w, const char *message_id, size_t mid_len, const char *device,
                      size_t dlen, uint8_t outcome, int64_t at_ms)
{
    SG_GUARD(sg_wbuf_u8(w, REC_V1));
    SG_GUARD(sg_wbuf_str8(w, message_id, mid_len));
    SG_GUARD(sg_wbuf_str8(w, device, dlen));
    SG_GUARD(sg_wbuf_u8(w, outcome));
    return sg_wbuf_u64(w, (uint64_t)at_ms);
}

sg_rc st_feedback_get(const void *p, size_t n, st_feedback_t *f)
{
    sg_cur_t c;
    const uint8_t *mid, *dev;
    uint64_t at;
    SG_GUARD(rec_begin(&c, p, n));
    SG_GUARD(sg_cur_str8(&c, 255, &mid, &f->message_id_len));
    SG_GUARD(sg_cur_str8(&c, 255, &dev, &f->device_len));
    SG_GUARD(sg_cur_u8(&c, &f->outcome));
    SG_GUARD(sg_cur_u64(&c, &at));
    f->message_id = (const char *)mid;
    f->device = (const char *)dev;
    f->at_ms = (int64_t)at;
    return rec_end(&c);
}

sg_rc st_counters_put(sg_wbuf_t *w, const st_counters_t *c)
{
    SG_GUARD(sg_wbuf_u8(w, REC_V1));
    SG_GUARD(sg_wbuf_u64(w, c->devices));
    return sg_wbuf_u64(w, c->feedback_next);
}

sg_rc st_counters_get(const void *p, size_t n, st_counters_t *c)
{
    sg_cur_t cur;
    SG_GUARD(rec_begin(&cur, p, n));
    SG_GUARD(sg_cur_u64(&cur, &c->devices));
    SG_GUARD(sg_cur_u64(&cur, &c->feedback_next));
    return rec_end(&cur);
}
