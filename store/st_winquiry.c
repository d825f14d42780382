/* st_winquiry.c — inquiries (docs/inquiries.md): a device asks, a control system claims the
 * question with GET /v1/inquiries and answers it with POST /v1/inquiries/{id}/response, and the
 * answer goes to the device's live session. Everything here runs on the shard's writer.
 *
 * An inquiry is durable before its PUBACK: the INQUIRY frame writes "I{seq}" (st_keys.h) and the
 * next sequence number into the open batch and is acknowledged (TELEMETRY_ACK, so the frontend
 * treats it as one more QoS 1 publish in its window) once the batch is committed. The writer also
 * keeps every open inquiry in memory, in expiry order, with its payload: claims, watches and
 * answers never read the disk, and store.inquiry_max / store.inquiry_max_bytes bound that memory
 * (beyond them a new inquiry is answered 503 at once rather than kept). Claim leases are memory
 * only: after a restart every open inquiry is claimable again, which is what an expired lease
 * means anyway. An answer or the timeout (504) deletes the record in the same batch that sends
 * the answer to the session, so an inquiry is answered once. */
#include <czmq.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "sg_codec.h"
#include "sg_frame.h"
#include "sg_log.h"
#include "sg_time.h"
#include "st_keys.h"
#include "st_writer_int.h"

typedef struct inq inq_t;
struct inq {
    uint64_t seq;
    int64_t received_ms, expires_ms;
    int64_t lease_ms;          /* claimed until then; 0 = never claimed */
    inq_t *prev, *next;        /* in expiry order */
    uint32_t payload_len;
    uint8_t dev_len, name_len, rid_len;
    char data[];               /* device \0 name \0 rid \0 payload */
};

/* A GET /v1/inquiries waiting for something to claim (SG_ADM_INQUIRY_WATCH). */
typedef struct watch watch_t;
struct watch {
    op_t op;
    int64_t deadline;
    watch_t *next;
};

struct st_winquiry {
    inq_t *head, *tail;
    zhashx_t *by_seq;          /* "%llx" seq -> inq_t (owned by the list) */
    uint64_t next_seq;
    size_t bytes;
    watch_t *watches;
};

static const char *inq_device(const inq_t *q) { return q->data; }
static const char *inq_name(const inq_t *q) { return q->data + q->dev_len + 1; }
static const char *inq_rid(const inq_t *q) { return q->data + q->dev_len + q->name_len + 2; }
static const uint8_t *inq_payload(const inq_t *q)
{
    return (const uint8_t *)q->data + q->dev_len + q->name_len + q->rid_len + 3;
}

static void seq_key(uint64_t seq, char out[20]) { snprintf(out, 20, "%llx", (unsigned long long)seq); }

/* I{seq:be64} */
static void rec_key(uint64_t seq, char out[9])
{
    out[0] = ST_INQUIRY_PREFIX[0];
    st_be64((uint8_t *)out + 1, seq);
}

static struct st_winquiry *state(writer_t *w)
{
    if (!w->inquiries) {
        if (!(w->inquiries = calloc(1, sizeof *w->inquiries)) || !(w->inquiries->by_seq = zhashx_new()))
            stw_fatal_io("oom");
    }
    return w->inquiries;
}

static inq_t *inq_new(uint64_t seq, int64_t received, int64_t expires, const char *dev, size_t dl, const char *name,
                      size_t nl, const char *rid, size_t rl, const uint8_t *payload, size_t pl)
{
    inq_t *q = calloc(1, sizeof *q + dl + nl + rl + 3 + pl);
    if (!q)
        stw_fatal_io("oom");
    q->seq = seq;
    q->received_ms = received;
    q->expires_ms = expires;
    q->dev_len = (uint8_t)dl;
    q->name_len = (uint8_t)nl;
    q->rid_len = (uint8_t)rl;
    q->payload_len = (uint32_t)pl;
    char *o = q->data;
    memcpy(o, dev, dl);
    o += dl + 1;
    memcpy(o, name, nl);
    o += nl + 1;
    memcpy(o, rid, rl);
    o += rl + 1;
    if (pl)
        memcpy(o, payload, pl);
    return q;
}

/* Into the list by expiry (new ones almost always go last) and the index. */
static void inq_link(struct st_winquiry *s, inq_t *q)
{
    inq_t *at = s->tail;
    while (at && at->expires_ms > q->expires_ms)
        at = at->prev;
    q->prev = at;
    q->next = at ? at->next : s->head;
    if (q->next)
        q->next->prev = q;
    else
        s->tail = q;
    if (at)
        at->next = q;
    else
        s->head = q;
    char k[20];
    seq_key(q->seq, k);
    zhashx_insert(s->by_seq, k, q);
    s->bytes += q->payload_len;
}

static void inq_unlink(struct st_winquiry *s, inq_t *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        s->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        s->tail = q->prev;
    char k[20];
    seq_key(q->seq, k);
    zhashx_delete(s->by_seq, k);
    s->bytes -= q->payload_len;
}

/* Record: u64 received, u64 expires, str8 device, str8 name, str8 rid, str32 payload. */
static void inq_save(writer_t *w, const inq_t *q)
{
    sg_wbuf_t *b = &w->scratch2;
    sg_wbuf_reset(b);
    if (sg_wbuf_u64(b, (uint64_t)q->received_ms) != SG_OK || sg_wbuf_u64(b, (uint64_t)q->expires_ms) != SG_OK ||
        sg_wbuf_str8(b, inq_device(q), q->dev_len) != SG_OK || sg_wbuf_str8(b, inq_name(q), q->name_len) != SG_OK ||
        sg_wbuf_str8(b, inq_rid(q), q->rid_len) != SG_OK || sg_wbuf_str32(b, inq_payload(q), q->payload_len) != SG_OK)
        stw_fatal_io("inquiry-encode");
    char key[9], next[8];
    rec_key(q->seq, key);
    rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, sizeof key, (const char *)b->data, b->len);
    st_be64((uint8_t *)next, q->seq + 1);
    rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], ST_INQUIRY_NEXT_KEY, strlen(ST_INQUIRY_NEXT_KEY),
                              next, sizeof next);
}

static inq_t *inq_load(uint64_t seq, const char *v, size_t vl)
{
    sg_cur_t c;
    uint64_t rec, exp;
    const uint8_t *dev, *name, *rid, *payload;
    size_t dl, nl, rl, pl;
    sg_cur_init(&c, v, vl);
    if (sg_cur_u64(&c, &rec) != SG_OK || sg_cur_u64(&c, &exp) != SG_OK ||
        sg_cur_str8(&c, SG_DEVICE_ID_MAX, &dev, &dl) != SG_OK || sg_cur_str8(&c, SG_INQUIRY_NAME_MAX, &name, &nl) != SG_OK ||
        sg_cur_str8(&c, SG_INQUIRY_RID_MAX, &rid, &rl) != SG_OK ||
        sg_cur_str32(&c, SG_WIRE_MAX_FRAME, &payload, &pl) != SG_OK || sg_cur_left(&c) != 0)
        return NULL;
    return inq_new(seq, (int64_t)rec, (int64_t)exp, (const char *)dev, dl, (const char *)name, nl, (const char *)rid,
                   rl, payload, pl);
}

sg_rc stw_inquiry_load(writer_t *w)
{
    struct st_winquiry *s = state(w);
    st_ctx_t *ctx = w->ctx;
    char *val;
    size_t vlen;
    SG_GUARD(st_db_get(&ctx->db, NULL, ST_CF_DEFAULT, ST_INQUIRY_NEXT_KEY, strlen(ST_INQUIRY_NEXT_KEY), &val, &vlen));
    if (val) {
        if (vlen == 8)
            s->next_seq = st_get_be64((const uint8_t *)val);
        rocksdb_free(val);
    }
    size_t n = 0, bad = 0;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(ctx->db.db, ctx->db.ro, ctx->db.cf[ST_CF_DEFAULT]);
    for (rocksdb_iter_seek(it, ST_INQUIRY_PREFIX, 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl != 9 || k[0] != ST_INQUIRY_PREFIX[0])
            break;
        uint64_t seq = st_get_be64((const uint8_t *)k + 1);
        const char *v = rocksdb_iter_value(it, &vl);
        inq_t *q = inq_load(seq, v, vl);
        if (!q) {
            bad++;
            continue;
        }
        inq_link(s, q);
        if (seq >= s->next_seq)
            s->next_seq = seq + 1;
        n++;
    }
    rocksdb_iter_destroy(it);
    if (n || bad)
        SG_INFO("store", "inquiries.loaded", "shard=%s open=%zu unreadable=%zu", ctx->name, n, bad);
    return SG_OK;
}

static void watch_free(watch_t *x)
{
    stw_op_free(&x->op);
    free(x);
}

void stw_inquiry_free(writer_t *w)
{
    struct st_winquiry *s = w->inquiries;
    if (!s)
        return;
    for (inq_t *q = s->head, *next; q; q = next) {
        next = q->next;
        free(q);
    }
    for (watch_t *x = s->watches, *next; x; x = next) {
        next = x->next;
        watch_free(x);
    }
    zhashx_destroy(&s->by_seq);
    free(s);
    w->inquiries = NULL;
}

/* The answer (status, payload) to device's live session, if it has one; whether it went. */
static bool to_session(writer_t *w, const inq_t *q, uint16_t status, const void *payload, size_t len)
{
    wdev_t *d = stw_dev_get(w, inq_device(q), q->dev_len);
    if (!d)
        stw_fatal_io("device-load");
    if (!d->sess.live || !d->sess.peer[0])
        return false;
    sg_wbuf_reset(&w->scratch);
    if (sg_frame_inquiry_res(&w->scratch, &(sg_frame_session_t){d->id, d->sess.handle, d->sess.epoch}, status,
                             inq_rid(q), q->rid_len, payload, len) != SG_OK) {
        SG_WARN("store", "inquiry.encode_failed", "device=%s bytes=%zu", d->id, len);
        return false;
    }
    stw_answer_raw(w, d->sess.router, d->sess.peer, strlen(d->sess.peer), &w->scratch);
    return true;
}

/* Done with q (answered or timed out): out of memory and, in the open batch, off the disk. */
static void inq_finish(writer_t *w, inq_t *q)
{
    char key[9];
    rec_key(q->seq, key);
    rocksdb_writebatch_delete_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, sizeof key);
    inq_unlink(w->inquiries, q);
    free(q);
}

/* A gateway-made answer: {"error": name, "message": msg}. */
static void answer_device(writer_t *w, const inq_t *q, uint16_t status, const char *name, const char *msg)
{
    json_t *j = json_pack("{s:s,s:s}", "error", name, "message", msg);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    to_session(w, q, status, text ? text : "{}", text ? strlen(text) : 2);
    free(text);
}

void stw_op_inquiry(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    struct st_winquiry *s = state(w);
    sg_wire_inquiry_t in;
    uint16_t status = SG_TELE_OK, pid = 0;
    if (sg_wire_get_inquiry(&op->h, &in) != SG_OK) {
        status = SG_TELE_MALFORMED;
    } else if (!stw_session_matches(d, op)) {
        status = SG_TELE_STALE;   /* the frontend closes that connection */
        pid = in.packet_id;
    } else {
        pid = in.packet_id;
        inq_t *q = inq_new(s->next_seq++, now, now + w->ctx->inquiry_timeout_ms, d->id, d->id_len, in.name,
                           in.name_len, in.rid, in.rid_len, in.payload, in.payload_len);
        if ((int64_t)zhashx_size(s->by_seq) >= w->ctx->inquiry_max ||
            (int64_t)(s->bytes + in.payload_len) > w->ctx->inquiry_max_bytes) {
            /* Taken (PUBACKed) and answered at once: the device hears why, nothing is kept. */
            SG_WARN("store", "inquiry.refused", "device=%s open=%zu bytes=%zu reason=\"store.inquiry_max or "
                    "store.inquiry_max_bytes reached\"", d->id, zhashx_size(s->by_seq), s->bytes);
            answer_device(w, q, 503, "TooManyInquiries", "the gateway holds as many open inquiries as it may; ask again later");
            free(q);
        } else {
            inq_save(w, q);
            inq_link(s, q);
        }
    }
    if ((op->h.flags & SG_WIRE_F_QOS1) || status != SG_TELE_OK)
        stw_tele_ack(w, op, d, status, pid);
}

static json_t *payload_json(const inq_t *q)
{
    /* JSON payloads are passed as JSON; anything else as base64 (docs/inquiries.md). */
    json_t *j = q->payload_len ? json_loadb((const char *)inq_payload(q), q->payload_len, JSON_DECODE_ANY, NULL) : NULL;
    if (j)
        return json_pack("{s:o,s:s}", "payload", j, "payloadEncoding", "json");
    char *b = malloc(sg_b64_encoded_len(q->payload_len) + 1);
    if (!b)
        return NULL;
    sg_b64_encode(inq_payload(q), q->payload_len, b);
    json_t *o = json_pack("{s:s,s:s}", "payload", b, "payloadEncoding", "base64");
    free(b);
    return o;
}

static bool claimable(const inq_t *q, int64_t now) { return q->expires_ms > now && q->lease_ms <= now; }

static void claim(writer_t *w, op_t *op, const json_t *body, int64_t now)
{
    struct st_winquiry *s = state(w);
    json_int_t max = json_integer_value(json_object_get(body, "max"));
    if (max < 1 || max > 1000) {
        st_writer_answer_admin(w, op, 400, st_error_json("InvalidQuery", "max must be 1 to 1000"));
        return;
    }
    json_t *list = json_array();
    for (inq_t *q = s->head; q && (json_int_t)json_array_size(list) < max; q = q->next) {
        if (!claimable(q, now))
            continue;
        json_t *o = payload_json(q);
        if (!o)
            break;
        q->lease_ms = now + w->ctx->inquiry_lease_ms;
        char id[48], rec[25], exp[25], lease[25];
        snprintf(id, sizeof id, "%u-%llu", w->ctx->partition, (unsigned long long)q->seq);
        sg_rfc3339(q->received_ms, rec);
        sg_rfc3339(q->expires_ms, exp);
        sg_rfc3339(q->lease_ms, lease);
        json_object_set_new(o, "inquiryId", json_string(id));
        json_object_set_new(o, "deviceId", json_stringn(inq_device(q), q->dev_len));
        json_object_set_new(o, "name", json_stringn(inq_name(q), q->name_len));
        json_object_set_new(o, "receivedAt", json_string(rec));
        json_object_set_new(o, "expiresAt", json_string(exp));
        json_object_set_new(o, "leaseExpiresAt", json_string(lease));
        json_array_append_new(list, o);
    }
    st_writer_answer_admin(w, op, 200, json_pack("{s:o}", "inquiries", list));
}

static bool any_claimable(const struct st_winquiry *s, int64_t now)
{
    for (const inq_t *q = s->head; q; q = q->next)
        if (claimable(q, now))
            return true;
    return false;
}

static void watch(writer_t *w, op_t *op, const json_t *body, int64_t now)
{
    struct st_winquiry *s = state(w);
    json_int_t wait = json_integer_value(json_object_get(body, "wait"));
    if (wait <= 0 || any_claimable(s, now)) {
        st_writer_answer_admin(w, op, 200, json_pack("{s:b}", "ready", any_claimable(s, now)));
        return;
    }
    watch_t *x = calloc(1, sizeof *x);
    if (!x)
        stw_fatal_io("oom");
    stw_op_move(&x->op, op);   /* the caller frees what is left in op (nothing) */
    x->deadline = now + (wait > 60 ? 60 : wait) * 1000;
    x->next = s->watches;
    s->watches = x;
}

static void answer(writer_t *w, op_t *op, const json_t *body, int64_t now)
{
    struct st_winquiry *s = state(w);
    json_t *js = json_object_get(body, "seq"), *jst = json_object_get(body, "status"),
           *jp = json_object_get(body, "payload");
    if (!json_is_integer(js) || !json_is_integer(jst) || !jp) {
        st_writer_answer_admin(w, op, 400, st_error_json("InvalidAnswer", "an answer is {\"seq\", \"status\", \"payload\"}"));
        return;
    }
    char k[20];
    seq_key((uint64_t)json_integer_value(js), k);
    inq_t *q = zhashx_lookup(s->by_seq, k);
    if (!q || q->expires_ms <= now) {
        st_writer_answer_admin(w, op, 404, st_error_json("InquiryNotFound", "no open inquiry has this id: it never "
                               "existed, was answered already, or timed out (the device got 504)"));
        return;
    }
    char *text = json_dumps(jp, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        stw_fatal_io("oom");
    bool delivered = to_session(w, q, (uint16_t)json_integer_value(jst), text, strlen(text));
    free(text);
    SG_INFO("store", "inquiry.answered", "device=%.*s seq=%llu status=%lld delivered=%d", (int)q->dev_len,
            inq_device(q), (unsigned long long)q->seq, (long long)json_integer_value(jst), delivered);
    inq_finish(w, q);
    st_writer_answer_admin(w, op, 200, json_pack("{s:b}", "delivered", delivered));
}

void stw_inquiry_admin(writer_t *w, op_t *op, uint16_t aop, const char *json, size_t len, int64_t now)
{
    json_t *body = json_loadb(json, len, 0, NULL);
    if (!json_is_object(body))
        st_writer_answer_admin(w, op, 400, st_error_json("InvalidBody", "the request is not a JSON object"));
    else if (aop == SG_ADM_INQUIRY_CLAIM)
        claim(w, op, body, now);
    else if (aop == SG_ADM_INQUIRY_WATCH)
        watch(w, op, body, now);
    else
        answer(w, op, body, now);
    json_decref(body);
}

void stw_inquiry_step(writer_t *w, int64_t now)
{
    struct st_winquiry *s = w->inquiries;
    if (!s)
        return;
    /* Unanswered in time: 504 to the device (when it is connected) and gone. */
    while (s->head && s->head->expires_ms <= now) {
        inq_t *q = s->head;
        char msg[96];
        snprintf(msg, sizeof msg, "no answer within %lld s", (long long)((q->expires_ms - q->received_ms) / 1000));
        answer_device(w, q, 504, "InquiryTimeout", msg);
        SG_INFO("store", "inquiry.timeout", "device=%.*s seq=%llu", (int)q->dev_len, inq_device(q),
                (unsigned long long)q->seq);
        inq_finish(w, q);
    }
    if (!s->watches)
        return;
    bool ready = any_claimable(s, now);
    watch_t **at = &s->watches;
    while (*at) {
        watch_t *x = *at;
        if (ready || x->deadline <= now) {
            st_writer_answer_admin(w, &x->op, 200, json_pack("{s:b}", "ready", ready));
            *at = x->next;
            watch_free(x);
        } else {
            at = &x->next;
        }
    }
}
