/* st_reader.c — a shard's reader threads: answers that need only committed data (a device's
 * entry and connection, its pending messages, a page of the registry, telemetry and feedback
 * reads, shard statistics). Readers never change state; a log read that finds nothing and may
 * wait is handed back to the net actor to park until the writer appends more or its wait runs
 * out. */
#include <pthread.h>
#include <czmq.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "sg_codec.h"
#include "sg_log.h"
#include "sg_zmq.h"
#include "sg_page.h"
#include "sg_sas.h"
#include "sg_time.h"
#include "sg_wire.h"
#include "st_internal.h"
#include "st_keys.h"
#include "st_record.h"
#include "st_registry.h"

#define TELE_MAX_RECORDS 1000
#define TELE_DEFAULT_RECORDS 100
/* A page of records stops before its JSON passes this size (payloads are base64 in JSON, 4/3 of
 * their bytes); it always holds at least one record, which fits because records are capped. */
#define PAGE_MAX_JSON SG_PAGE_MAX_JSON
#define TELE_MAX_WAIT 60
#define LIST_MAX 1000

typedef struct {
    st_ctx_t *ctx;
    zsock_t *in;
    zsock_t *out;
    zsock_t *ahead;       /* PULL: devices the writer wants read ahead (NULL: store.read_ahead 0) */
    zsock_t *to_writer;   /* PUSH: their records */
    sg_wbuf_t page;       /* a log read's answer frame, written in place (log_read) */
} reader_t;

typedef struct {
    zframe_t *router, *peer, *frame;
    uint64_t deadline;
    /* The read runs again once the shard's next telemetry offset reaches need[0] or its next
     * feedback sequence need[1] (0: not that log), or at its deadline (st_shard.c parks it). */
    uint64_t need[2];
    sg_wire_hdr_t h;
} rop_t;

static void send_frame(reader_t *r, rop_t *op, const sg_wbuf_t *f)
{
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, "R");
    zmsg_append(m, &op->router);
    zmsg_append(m, &op->peer);
    zmsg_addmem(m, f->data, f->len);
    zmsg_send(&m, r->out);
}

static void answer(reader_t *r, rop_t *op, int status, json_t *body)
{
    sg_wbuf_t f;
    sg_wbuf_init(&f, SG_WIRE_MAX_FRAME);
    if (st_admin_answer(&f, &op->h, status, body) != SG_OK)
        abort();   /* a 500 always fits */
    send_frame(r, op, &f);
    sg_wbuf_fini(&f);
}

static char *get_dev(reader_t *r, const rocksdb_readoptions_t *ro, rop_t *op, char kind, size_t *vlen)
{
    char key[ST_KEY_MAX], *val = NULL;
    size_t klen = st_key_dev(key, op->h.device, op->h.device_len, kind);
    if (st_db_get(&r->ctx->db, ro, ST_CF_DEV, key, klen, &val, vlen) != SG_OK)
        return NULL;
    return val;
}

/* The frontend part of a peer id "{frontend}/{loop}/{boot}". */
static json_t *frontend_name(const char *peer)
{
    const char *slash = strchr(peer, '/');
    return json_stringn(peer, slash ? (size_t)(slash - peer) : strlen(peer));
}

static void device_get(reader_t *r, rop_t *op)
{
    st_db_t *db = &r->ctx->db;
    const rocksdb_snapshot_t *snap = rocksdb_create_snapshot(db->db);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_snapshot(ro, snap);
    size_t n;
    char *reg = get_dev(r, ro, op, ST_K_REGISTRY, &n);
    json_t *entry = reg ? json_loadb(reg, n, 0, NULL) : NULL;
    rocksdb_free(reg);
    if (!entry) {
        answer(r, op, 404, st_error_json("DeviceNotFound", "device '%.*s' is not registered", (int)op->h.device_len,
                                         op->h.device));
    } else {
        st_limits_t defaults = {r->ctx->max_queued_messages, r->ctx->max_queued_bytes};
        json_t *pub = st_reg_public(entry, &defaults);
        json_decref(entry);
        st_session_t s = {0};
        st_qmeta_t m = {0};
        char *v = get_dev(r, ro, op, ST_K_SESSION, &n);
        if (v && st_session_get(v, n, &s) != SG_OK)
            memset(&s, 0, sizeof s);
        rocksdb_free(v);
        v = get_dev(r, ro, op, ST_K_META, &n);
        /* damaged counters: counted from the records, as the writer will (zeros on a read error) */
        if (v && st_qmeta_get(v, n, &m) != SG_OK &&
            st_db_queue_rebuild(db, ro, op->h.device, op->h.device_len, &m.next_seq, &m.count, &m.bytes) != SG_OK)
            memset(&m, 0, sizeof m);
        rocksdb_free(v);
        json_t *conn = json_pack("{s:b}", "connected", s.live);
        if (s.live) {
            json_object_set_new(conn, "frontend", frontend_name(s.peer));
            json_object_set_new(conn, "since", sg_page_time_json(s.since_ms));
            json_object_set_new(conn, "subscribed", json_boolean(s.subscribed));
            json_object_set_new(conn, "methods", json_boolean(s.methods));
        }
        json_object_set_new(pub, "connection", conn);
        json_object_set_new(pub, "queueDepth", json_integer(m.count));
        json_object_set_new(pub, "queuedBytes", json_integer((json_int_t)m.bytes));
        answer(r, op, 200, pub);
    }
    rocksdb_readoptions_destroy(ro);
    rocksdb_release_snapshot(db->db, snap);
}

static json_t *msg_json(const st_msg_t *m)
{
    static const char *const acks[] = {"none", "positive", "negative", "full"};
    json_t *o = json_pack("{s:s%,s:o,s:o,s:s,s:I}", "messageId", m->message_id, m->message_id_len, "enqueuedAt",
                          sg_page_time_json(m->enqueued_ms), "expiresAt", sg_page_time_json(m->expires_ms), "ack", acks[m->ack & 3],
                          "deliveryCount", (json_int_t)m->delivery_count);
    json_object_set_new(o, "properties", sg_page_props_json(m->props));
    json_object_set_new(o, "payload", sg_page_b64_json(m->payload, m->payload_len));
    return o;
}

/* Whether item still fits in an answer of *bytes so far (its exact JSON size; property text
 * can grow six-fold when escaped); the first item always does. Counts it when it fits. */
static bool fits_page(size_t *bytes, const json_t *item)
{
    size_t n = json_dumpb(item, NULL, 0, JSON_COMPACT) + 1;
    if (*bytes > 0 && *bytes + n > PAGE_MAX_JSON)
        return false;
    *bytes += n;
    return true;
}

/* One queued message as JSON, or NULL when its record is damaged (skipped: the writer
 * dead-letters it when it comes to it). */
static json_t *queued_json(uint64_t seq, const char *v, size_t vl, const rop_t *op)
{
    (void)seq;
    (void)op;
    st_msg_t m;
    return st_msg_get(v, vl, &m) == SG_OK ? msg_json(&m) : NULL;
}

/* Bytes of a damaged record a dead-letter listing shows (base64): enough to tell what it was. */
#define DEAD_RAW_MAX 1024

/* One dead letter: the message, why and when it was dead-lettered. One whose message record
 * cannot be read (reason `damaged`: found so in the queue; any other: damaged since) is shown
 * by its queue sequence number, size and first bytes instead of the message's fields. */
static json_t *dead_json(uint64_t seq, const char *v, size_t vl, const rop_t *op)
{
    st_msg_t m;
    uint8_t reason = ST_OUT_DAMAGED;
    int64_t at = 0;
    const uint8_t *raw = (const uint8_t *)v;
    size_t raw_len = vl;
    bool head = st_dead_head(v, vl, &reason, &at, &raw, &raw_len) == SG_OK;
    if (!head)
        reason = ST_OUT_DAMAGED;   /* not even its reason can be read */
    if (head && st_msg_get(raw, raw_len, &m) == SG_OK) {
        json_t *j = msg_json(&m);
        json_object_set_new(j, "reason", json_string(st_outcome_name(reason)));
        json_object_set_new(j, "deadLetteredAt", sg_page_time_json(at));
        return j;
    }
    if (reason != ST_OUT_DAMAGED)
        SG_WARN("store", "deadletter.damaged", "device=%.*s seq=%llu reason=%s", (int)op->h.device_len,
                op->h.device, (unsigned long long)seq, st_outcome_name(reason));
    json_t *j = json_pack("{s:I,s:s,s:I}", "seq", (json_int_t)seq, "reason", st_outcome_name(reason), "size",
                          (json_int_t)raw_len);
    if (head)
        json_object_set_new(j, "deadLetteredAt", sg_page_time_json(at));
    json_object_set_new(j, "raw", sg_page_b64_json(raw, raw_len < DEAD_RAW_MAX ? raw_len : DEAD_RAW_MAX));
    return j;
}

/* The records of one kind under a device ({id}\0{kind}{seq}), oldest first, as {"deviceId",
 * field: [...], "more"}; at most one page (the rest are newer). */
static void dev_list(reader_t *r, rop_t *op, char kind, const char *field,
                     json_t *(*to_json)(uint64_t seq, const char *v, size_t vl, const rop_t *op))
{
    st_db_t *db = &r->ctx->db;
    size_t n;
    char *reg = get_dev(r, NULL, op, ST_K_REGISTRY, &n);
    if (!reg) {
        answer(r, op, 404, st_error_json("DeviceNotFound", "device '%.*s' is not registered", (int)op->h.device_len,
                                         op->h.device));
        return;
    }
    rocksdb_free(reg);
    char key[ST_KEY_MAX];
    size_t plen = st_key_dev(key, op->h.device, op->h.device_len, kind);
    json_t *arr = json_array();
    size_t bytes = 0;
    bool more = false;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_DEV]);
    for (rocksdb_iter_seek(it, key, plen); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl != plen + 8 || memcmp(k, key, plen) != 0)
            break;
        const char *v = rocksdb_iter_value(it, &vl);
        if (json_array_size(arr) >= LIST_MAX) {
            more = true;
            break;
        }
        json_t *j = to_json(st_get_be64((const uint8_t *)k + plen), v, vl, op);
        if (!j)
            continue;
        if (!fits_page(&bytes, j)) {
            json_decref(j);
            more = true;
            break;
        }
        json_array_append_new(arr, j);
    }
    rocksdb_iter_destroy(it);
    answer(r, op, 200, json_pack("{s:s%,s:o,s:b}", "deviceId", op->h.device, op->h.device_len, field, arr,
                                 "more", more));
}

static int64_t int_member(json_t *o, const char *k, int64_t def, int64_t lo, int64_t hi, bool *bad)
{
    json_t *v = json_object_get(o, k);
    if (!v)
        return def;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        *bad = true;
        return def;
    }
    return json_integer_value(v);
}

/* Ids one listing looks at in a shard at most: with a tag filter that few entries match, the
 * answer says where the look stopped ("last") and the caller continues from there. */
#define LIST_SCAN_MAX 10000
#define LIST_DEFAULT 100

/* The device id of a "dev" key ({id}\0{kind}...): its length, 0 when k is not such a key. */
static size_t key_id_len(const char *k, size_t kl)
{
    const char *z = memchr(k, 0, kl < SG_DEVICE_ID_MAX + 1 ? kl : SG_DEVICE_ID_MAX + 1);
    return z && z != k && (size_t)(z - k) + 1 < kl ? (size_t)(z - k) : 0;
}

/* One shard's registry entries after q.after in id (byte) order, those with q.tag (st_tag_filter_t)
 * only, at most q.limit: {"devices": [public entries], "more": bool, "last": id or null}. The shard
 * has looked at every id up to and including "last"; "more" false means up to its end. Only the
 * registry entry of each device is read: the iterator jumps over the keys before it (dead
 * letters, queue counters, queued messages) and after it (the session) with seeks. */
static void device_list(reader_t *r, rop_t *op, json_t *q)
{
    st_db_t *db = &r->ctx->db;
    bool bad = false;
    int64_t limit = int_member(q, "limit", LIST_DEFAULT, 1, LIST_MAX, &bad);
    json_t *ja = json_object_get(q, "after"), *jt = json_object_get(q, "tag");
    const char *after = json_string_value(ja);
    size_t after_len = after ? json_string_length(ja) : 0;
    if (bad || (ja && !after) || (after_len && !sg_device_id_valid(after, after_len))) {
        answer(r, op, 400, st_error_json("InvalidQuery", "limit must be an integer from 1 to %d and after a device id",
                                         LIST_MAX));
        return;
    }
    st_tag_filter_t filter;
    if (jt && (!json_is_string(jt) || strlen(json_string_value(jt)) != json_string_length(jt) ||
               st_reg_tag_filter_parse(json_string_value(jt), &filter) != SG_OK)) {
        answer(r, op, 400, st_error_json("InvalidQuery", "tag must be KEY or KEY:VALUE, the key 1-%d characters of A-Z "
                                         "a-z 0-9 _ . - and the value at most %d characters", ST_TAG_KEY_MAX,
                                         ST_TAG_VALUE_MAX));
        return;
    }
    st_limits_t defaults = {r->ctx->max_queued_messages, r->ctx->max_queued_bytes};
    json_t *devs = json_array();
    char cur[SG_DEVICE_ID_MAX + 1], done[SG_DEVICE_ID_MAX + 1], seek[ST_KEY_MAX];
    size_t cur_len = 0, done_len = 0, examined = 0, bytes = 0;
    bool more = false;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_DEV]);
    if (after_len) {
        memcpy(seek, after, after_len);
        seek[after_len] = 1;   /* past every "{after}\0..." key */
        rocksdb_iter_seek(it, seek, after_len + 1);
    } else {
        rocksdb_iter_seek_to_first(it);
    }
    while (rocksdb_iter_valid(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        size_t il = key_id_len(k, kl);
        if (il == 0) {
            rocksdb_iter_next(it);
            continue;
        }
        if (il != cur_len || memcmp(k, cur, il) != 0) {
            /* The id before is behind us. Stop at the next one once the page is full (so "more"
             * says whether there is one) or the look has gone far enough. */
            memcpy(done, cur, cur_len);
            done_len = cur_len;
            if ((int64_t)json_array_size(devs) >= limit || examined >= LIST_SCAN_MAX) {
                more = true;
                break;
            }
            memcpy(cur, k, il);
            cur_len = il;
            examined++;
        }
        char kind = k[il + 1];
        if (kind < ST_K_REGISTRY) {
            rocksdb_iter_seek(it, seek, st_key_dev(seek, cur, cur_len, ST_K_REGISTRY));
            continue;
        }
        if (kind == ST_K_REGISTRY && kl == il + 2) {
            const char *v = rocksdb_iter_value(it, &vl);
            json_t *e = json_loadb(v, vl, 0, NULL);
            if (!e)
                SG_ERROR("store", "registry.damaged", "device=%.*s", (int)cur_len, cur);
            if (e && (!jt || st_reg_tag_match(e, &filter))) {
                json_t *pub = st_reg_public(e, &defaults);
                if (!fits_page(&bytes, pub)) {
                    json_decref(pub);
                    json_decref(e);
                    more = true;   /* this id is not done: "last" stays at the one before */
                    break;
                }
                json_array_append_new(devs, pub);
            }
            json_decref(e);
        }
        memcpy(seek, cur, cur_len);
        seek[cur_len] = 1;   /* the next id */
        rocksdb_iter_seek(it, seek, cur_len + 1);
    }
    rocksdb_iter_destroy(it);
    json_t *ans = json_pack("{s:o,s:b}", "devices", devs, "more", more);
    json_object_set_new(ans, "last", more && done_len ? json_stringn(done, done_len) : json_null());
    answer(r, op, 200, ans);
}

/* The logs a shard keeps by offset, read the same way (GET /v1/telemetry, GET /v1/feedback):
 * after an offset or a consumer group's committed position, a page at a time, parked while empty. */
typedef struct {
    const char *damaged;   /* the log event of a record that cannot be read */
    st_cf_t cf;
    size_t (*group_key)(char *out, const char *group, size_t len);
    /* The record at off as JSON; NULL when it is damaged (skipped). NULL for telemetry, whose
     * records are written directly (sg_page_tele_dump). */
    json_t *(*record)(int64_t off, const char *v, size_t vl);
} log_kind_t;

/* A stored telemetry record as a page's record (views into v). */
static bool tele_view(int64_t off, const char *v, size_t vl, sg_page_tele_t *out)
{
    if (st_tele_get(v, vl, out) != SG_OK)
        return false;
    out->offset = off;
    return true;
}

/* A feedback record: which message of which device ended how, and when. */
static json_t *fb_record(int64_t off, const char *v, size_t vl)
{
    st_feedback_t f;
    if (st_feedback_get(v, vl, &f) != SG_OK)
        return NULL;
    return json_pack("{s:I,s:s%,s:s%,s:s,s:o}", "offset", (json_int_t)off, "messageId", f.message_id,
                     f.message_id_len, "deviceId", f.device, f.device_len, "outcome", st_outcome_name(f.outcome),
                     "at", sg_page_time_json(f.at_ms));
}

static const log_kind_t k_telemetry = {"telemetry.damaged", ST_CF_TELE, st_key_group, NULL};
static const log_kind_t k_feedback = {"feedback.damaged", ST_CF_FB, st_key_fb_group, fb_record};

bool st_logq_parse(json_t *q, st_logq_t *lq)
{
    bool bad = false;
    lq->after = int_member(q, "after", -1, -1, INT64_MAX - 1, &bad);
    lq->max = int_member(q, "max", TELE_DEFAULT_RECORDS, 1, TELE_MAX_RECORDS, &bad);
    int64_t wait = int_member(q, "wait", 0, 0, TELE_MAX_WAIT, &bad);
    /* milliseconds, from an admin that sends them (else the whole seconds above) */
    lq->wait_ms = int_member(q, "waitMs", wait * 1000, 0, TELE_MAX_WAIT * 1000, &bad);
    /* the answer waits (within the wait) until this many records are there */
    lq->min = int_member(q, "min", 1, 1, TELE_MAX_RECORDS, &bad);
    json_t *jlog = json_object_get(q, "log");
    const char *lname = jlog ? json_string_value(jlog) : "telemetry";
    bool known = lname && (strcmp(lname, "telemetry") == 0 || strcmp(lname, "feedback") == 0);
    lq->feedback = known && strcmp(lname, "feedback") == 0;
    lq->group = json_string_value(json_object_get(q, "group"));
    return !bad && known;
}

uint64_t st_logq_from(st_ctx_t *c, const st_logq_t *lq, int64_t after, uint64_t *oldest)
{
    uint64_t from = (uint64_t)(after + 1);
    *oldest = atomic_load(lq->feedback ? &c->stat_fb_oldest : &c->stat_tele_oldest);
    return from < *oldest ? *oldest : from;
}

bool st_logq_short(st_ctx_t *c, const st_logq_t *lq, uint64_t from, uint64_t need[2])
{
    /* Offsets are dense: the log's next offset says how many records are there without reading
     * them. Taken before looking: if a commit lands after this, the net actor sees the need met
     * when it parks the read and runs it again at once (see st_shard.c, on_workers). */
    uint64_t log_next = atomic_load(lq->feedback ? &c->stat_fb_next : &c->stat_tele_next);
    need[lq->feedback ? 0 : 1] = 0;
    need[lq->feedback ? 1 : 0] = from + (uint64_t)lq->min;
    return log_next < from + (uint64_t)lq->min;
}

/* Returns false when nothing was found and the read should be parked. */
static bool log_read(reader_t *r, rop_t *op, json_t *q)
{
    st_ctx_t *ctx = r->ctx;
    st_logq_t lq;
    if (!st_logq_parse(q, &lq)) {
        answer(r, op, 400, st_error_json("InvalidQuery", "after must be an offset >= -1, max and min 1-%d, wait 0-%d "
                                         "seconds, log telemetry or feedback", TELE_MAX_RECORDS, TELE_MAX_WAIT));
        return true;
    }
    bool fb = lq.feedback;
    const log_kind_t *lk = fb ? &k_feedback : &k_telemetry;
    int64_t after = lq.after, max = lq.max, min = lq.min;
    const char *group = lq.group;
    if (group) {
        /* From the group's committed position; a group that never committed starts at the oldest
         * retained record. */
        char key[1 + ST_GROUP_MAX], *v = NULL;
        size_t vl = 0;
        if (!sg_group_valid(group, strlen(group))) {
            answer(r, op, 400, st_error_json("InvalidQuery", "a group name is 1-%d of A-Z a-z 0-9 . _ -", ST_GROUP_MAX));
            return true;
        }
        if (st_db_get(&ctx->db, NULL, ST_CF_DEFAULT, key, lk->group_key(key, group, strlen(group)), &v, &vl) != SG_OK) {
            answer(r, op, 500, st_error_json("Internal", "the group's position could not be read"));
            return true;
        }
        after = v && vl == 8 ? (int64_t)st_get_be64((const uint8_t *)v) - 1 : -1;
        rocksdb_free(v);
    }
    if (op->deadline == 0 && lq.wait_ms > 0)
        op->deadline = (uint64_t)(sg_mono_ms() + lq.wait_ms);
    int64_t now = sg_mono_ms();
    bool waits = op->deadline != 0 && (int64_t)op->deadline > now;
    uint64_t oldest, from = st_logq_from(ctx, &lq, after, &oldest);
    if (st_logq_short(ctx, &lq, from, op->need) && waits)
        return false;   /* fewer than min: parked until there are enough, or the deadline */
    /* The answer is written straight into its frame: each record is dumped once, in place,
     * rather than gathered into one JSON tree and dumped again whole (a telemetry read per group
     * commit is the shard's largest use of the CPU after the commit itself). An admin that renders
     * telemetry pages itself (SG_WIRE_F_PAGE) gets the records as they are stored instead: less
     * than half the bytes for the CURVE boxes and sends between the tiers (sg_page.h). */
    bool compact = lk == &k_telemetry && (op->h.flags & SG_WIRE_F_PAGE);
    sg_wbuf_t *f = &r->page;
    sg_wbuf_reset(f);
    sg_wire_hdr_t h = sg_wire_reply(&op->h, SG_MSG_ADMIN_RES, 200);
    h.epoch = 0;
    h.flags = compact ? SG_WIRE_F_PAGE : 0;
    sg_page_json_t pj;
    sg_page_out_t po;
    if (sg_wire_encode_hdr(f, &h) != SG_OK)
        abort();   /* a few dozen bytes in an 8 MiB frame */
    size_t json_at = f->len + 4;   /* the JSON, after its str32 length */
    if ((compact ? sg_page_out_begin(&po, f, ctx->partition, oldest, group, op->h.flags & SG_WIRE_F_STAMPED)
                 : sg_wbuf_u32(f, 0) != SG_OK ? SG_E_TOO_BIG : sg_page_json_begin(&pj, f, ctx->partition)) != SG_OK)
        abort();
    int64_t n = 0, next = after;
    uint8_t key[8];
    st_be64(key, from);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(ctx->db.db, ctx->db.ro, ctx->db.cf[lk->cf]);
    for (rocksdb_iter_seek(it, (const char *)key, 8); rocksdb_iter_valid(it) && n < max; rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        if (kl != 8)
            continue;
        int64_t off = (int64_t)st_get_be64((const uint8_t *)k);
        sg_page_tele_t t;
        json_t *rec = NULL;
        int added = -1;   /* damaged */
        if (!lk->record ? tele_view(off, v, vl, &t) : (rec = lk->record(off, v, vl)) != NULL)
            added = compact ? sg_page_out_add(&po, &t) : rec ? sg_page_json_add(&pj, rec) : sg_page_json_add_tele(&pj, &t);
        json_decref(rec);
        if (added < 0) {
            SG_ERROR("store", lk->damaged, "offset=%lld", (long long)off);
            next = off;
            continue;
        }
        if (added == 0)
            break;   /* the page is full: the next read starts at this record */
        next = off;
        n++;
    }
    rocksdb_iter_destroy(it);
    if (n == 0 && waits) {
        uint64_t start = (uint64_t)(next + 1) > from ? (uint64_t)(next + 1) : from;   /* past damaged records */
        op->need[fb ? 1 : 0] = start + (uint64_t)min;
        return false;
    }
    if (compact) {
        sg_page_out_end(&po, next);
    } else {
        if (sg_page_json_end(&pj, next, oldest, group) != SG_OK) {   /* the page cap leaves room for it */
            answer(r, op, 500, st_error_json("Internal", "the page does not fit a frame"));
            return true;
        }
        /* the JSON's length in front of it (str32, as sg_wire_put_json writes it) */
        uint32_t jl = (uint32_t)(f->len - json_at);
        uint8_t *lp = f->data + json_at - 4;
        lp[0] = (uint8_t)(jl >> 24), lp[1] = (uint8_t)(jl >> 16), lp[2] = (uint8_t)(jl >> 8), lp[3] = (uint8_t)jl;
    }
    send_frame(r, op, f);
    return true;
}

static void shard_stats(reader_t *r, rop_t *op)
{
    st_ctx_t *c = r->ctx;
    uint64_t batches = atomic_load(&c->stat_batches), ops = atomic_load(&c->stat_batch_ops);
    /* Positions are all "the last one there" (-1: none), as `after` and `next` in reads are. */
    json_t *st = json_pack("{s:s,s:i,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:I}", "shard", c->name, "partition",
                           (int)c->partition, "sync", c->sync ? "always" : "never", "devices",
                           (json_int_t)atomic_load(&c->stat_devices), "sessions",
                           (json_int_t)atomic_load(&c->stat_sessions), "telemetryOldest",
                           (json_int_t)atomic_load(&c->stat_tele_oldest), "telemetryLast",
                           (json_int_t)atomic_load(&c->stat_tele_next) - 1, "batches", (json_int_t)batches,
                           "batchedOps", (json_int_t)ops, "diskFull", atomic_load(&c->stat_disk_full),
                           "diskFreeBytes", (json_int_t)atomic_load(&c->stat_disk_free));
    json_object_set_new(st, "retention",
                        json_pack("{s:{s:I,s:I,s:I},s:{s:I,s:I,s:I},s:{s:I,s:I}}", "telemetry", "seconds",
                                  (json_int_t)(c->tele_retention_ms / 1000), "maxBytes", (json_int_t)c->tele_max_bytes,
                                  "dropped", (json_int_t)atomic_load(&c->stat_retired_tele), "feedback", "seconds",
                                  (json_int_t)(c->fb_retention_ms / 1000), "maxBytes", (json_int_t)c->fb_max_bytes,
                                  "dropped", (json_int_t)atomic_load(&c->stat_retired_fb), "deadLetters", "seconds",
                                  (json_int_t)(c->dead_retention_ms / 1000), "dropped",
                                  (json_int_t)atomic_load(&c->stat_retired_dead)));
    json_object_set_new(st, "deviceLoads", json_pack("{s:I,s:I}", "readAhead", (json_int_t)atomic_load(&c->stat_loads_ahead),
                                                     "writer", (json_int_t)atomic_load(&c->stat_loads_inline)));
    json_object_set_new(st, "parkedReads", json_pack("{s:I,s:I}", "atOnce", (json_int_t)atomic_load(&c->stat_parked_at_once),
                                                     "byReader", (json_int_t)atomic_load(&c->stat_parked_reader)));
    json_object_set_new(st, "flow",
                        json_pack("{s:I,s:I,s:I,s:I,s:I}", "deliveryCreditWaits",
                                  (json_int_t)atomic_load(&c->stat_credit_waits), "heldBytes",
                                  (json_int_t)atomic_load(&c->stat_held_bytes), "batchBytes",
                                  (json_int_t)atomic_load(&c->writer_batch_bytes), "refusedBusy",
                                  (json_int_t)atomic_load(&c->stat_busy), "dropped",
                                  (json_int_t)atomic_load(&c->stat_dropped)));
    json_object_set_new(st, "methodCalls",
                        json_pack("{s:I,s:I,s:I,s:I,s:I}", "pending", (json_int_t)atomic_load(&c->stat_mcalls_pending),
                                  "answered", (json_int_t)atomic_load(&c->stat_mcalls_done[0]), "timedOut",
                                  (json_int_t)atomic_load(&c->stat_mcalls_done[1]), "notOnline",
                                  (json_int_t)atomic_load(&c->stat_mcalls_done[2]), "other",
                                  (json_int_t)atomic_load(&c->stat_mcalls_done[3])));
    json_object_set_new(st, "feedbackOldest", json_integer((json_int_t)atomic_load(&c->stat_fb_oldest)));
    json_object_set_new(st, "feedbackLast", json_integer((json_int_t)atomic_load(&c->stat_fb_next) - 1));
    st_db_stats_t d;
    st_db_stats(&c->db, &d);
    json_t *rdb = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:b}", "memtableBytes",
                            (json_int_t)d.memtable_bytes, "blockCacheBytes", (json_int_t)d.block_cache_bytes,
                            "blockCacheCapacity", (json_int_t)d.block_cache_capacity, "blockCacheHits",
                            (json_int_t)d.block_cache_hits, "blockCacheMisses", (json_int_t)d.block_cache_misses,
                            "tableBytes", (json_int_t)d.table_bytes, "pendingCompactionBytes",
                            (json_int_t)d.pending_compaction_bytes, "runningCompactions",
                            (json_int_t)d.running_compactions, "stallMicros", (json_int_t)d.stall_micros,
                            "delayedWriteRate", (json_int_t)d.delayed_write_rate, "writeStopped",
                            d.write_stopped != 0);
    json_object_set_new(rdb, "memtableCapacity", json_integer((json_int_t)d.memtable_capacity));
    json_object_set_new(rdb, "blockCacheMemtableBytes", json_integer((json_int_t)d.block_cache_memtable_bytes));
    json_object_set_new(rdb, "walSyncs", json_integer((json_int_t)d.wal_syncs));
    json_object_set_new(rdb, "walSyncMicros", json_integer((json_int_t)d.wal_sync_micros));
    json_object_set_new(rdb, "walSyncP99Micros", json_real(d.wal_sync_p99_micros));
    json_object_set_new(st, "rocksdb", rdb);
    answer(r, op, 200, st);
}

static void park(reader_t *r, rop_t *op)
{
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, "P");
    zmsg_append(m, &op->router);
    zmsg_append(m, &op->peer);
    zmsg_append(m, &op->frame);
    zmsg_addmem(m, &op->deadline, sizeof op->deadline);
    zmsg_addmem(m, op->need, sizeof op->need);
    zmsg_send(&m, r->out);
    atomic_fetch_add(&r->ctx->stat_parked_reader, 1);
}

/* GET /v1/notifications/{id}, this shard's part: its progress record (st_wnotify.c), 404 when
 * the shard never recorded the notification. */
static void notify_get(reader_t *r, rop_t *op, json_t *q)
{
    json_t *jn = json_object_get(q, "notificationId");
    const char *nid = json_string_value(jn);
    if (!nid || json_string_length(jn) == 0 || json_string_length(jn) > ST_NOTIFY_ID_MAX) {
        answer(r, op, 400, st_error_json("BadRequest", "malformed notification query"));
        return;
    }
    char key[1 + ST_NOTIFY_ID_MAX], *v = NULL;
    size_t vl = 0;
    if (st_db_get(&r->ctx->db, NULL, ST_CF_DEFAULT, key, st_key_notify(key, ST_NOTIFY_PREFIX[0], nid, strlen(nid)), &v,
                  &vl) != SG_OK) {
        answer(r, op, 500, st_error_json("Internal", "storage read failed"));
        return;
    }
    json_t *p = v ? json_loadb(v, vl, 0, NULL) : NULL;
    rocksdb_free(v);
    if (!p) {
        answer(r, op, 404, st_error_json("NotificationNotFound", "notification '%s' is not known here", nid));
        return;
    }
    json_object_del(p, "cursor");
    answer(r, op, 200, p);
}

static void handle(reader_t *r, rop_t *op)
{
    uint16_t aop;
    const char *json;
    size_t len;
    if (op->h.type != SG_MSG_ADMIN || sg_wire_get_admin(&op->h, &aop, &json, &len) != SG_OK) {
        answer(r, op, 400, st_error_json("BadRequest", "malformed read request"));
        return;
    }
    json_error_t jerr;
    json_t *q = len ? json_loadb(json, len, 0, &jerr) : json_object();
    if (!q) {
        answer(r, op, 400, st_error_json("InvalidJson", "%s", jerr.text));
        return;
    }
    switch (aop) {
    case SG_ADM_DEVICE_GET: device_get(r, op); break;
    case SG_ADM_MSG_LIST: dev_list(r, op, ST_K_QUEUE, "messages", queued_json); break;
    case SG_ADM_DEADLETTER_LIST: dev_list(r, op, ST_K_DEAD, "deadLetters", dead_json); break;
    case SG_ADM_TELEMETRY_READ:   /* telemetry, or feedback with {"log": "feedback"} */
        if (!log_read(r, op, q))
            park(r, op);
        break;
    case SG_ADM_SHARD_STATS: shard_stats(r, op); break;
    case SG_ADM_DEVICE_LIST: device_list(r, op, q); break;
    case SG_ADM_NOTIFY_GET: notify_get(r, op, q); break;
    default: answer(r, op, 400, st_error_json("BadRequest", "operation %u is not a read", aop)); break;
    }
    json_decref(q);
}

void st_reader_actor(zsock_t *pipe, void *args)
{
    pthread_setname_np(pthread_self(), "sg-st-reader");   /* top -H, perf and /proc show it */
    reader_t r = {.ctx = args};
    sg_wbuf_init(&r.page, SG_WIRE_MAX_FRAME);
    r.in = zsock_new_pull(NULL);
    r.out = zsock_new_push(NULL);
    if (r.in)
        zsock_set_rcvhwm(r.in, r.ctx->queue_limit);   /* before connecting, or it does not apply */
    if (!r.in || !r.out || zsock_connect(r.in, "%s", r.ctx->ep_readers) != 0 ||
        zsock_connect(r.out, "%s", r.ctx->ep_out) != 0) {
        zsock_destroy(&r.in);
        zsock_destroy(&r.out);
        zsock_signal(pipe, 1);
        return;
    }
    zsock_set_sndhwm(r.out, 0);
    if (r.ctx->read_ahead > 0) {
        r.ahead = zsock_new_pull(NULL);
        r.to_writer = zsock_new_push(NULL);
        if (r.to_writer)
            zsock_set_sndhwm(r.to_writer, 0);   /* answers to what the writer asked: bounded by store.read_ahead */
        if (!r.ahead || !r.to_writer || zsock_connect(r.ahead, "%s", r.ctx->ep_ahead) != 0 ||
            zsock_connect(r.to_writer, "%s", r.ctx->ep_writer) != 0) {
            zsock_destroy(&r.ahead);
            zsock_destroy(&r.to_writer);
            zsock_destroy(&r.in);
            zsock_destroy(&r.out);
            zsock_signal(pipe, 1);
            return;
        }
    }
    zsock_signal(pipe, 0);
    /* Read-aheads first: the writer has frames waiting on them. */
    zpoller_t *poller = r.ahead ? zpoller_new(pipe, r.ahead, r.in, NULL) : zpoller_new(pipe, r.in, NULL);
    for (;;) {
        void *which = zpoller_wait(poller, -1);
        if (which == pipe || !which)
            break;
        if (which == r.ahead) {
            zmsg_t *req = zmsg_recv(r.ahead);
            if (!req)
                break;
            st_ahead_serve(r.ctx, req, r.to_writer);
            zmsg_destroy(&req);
            continue;
        }
        zmsg_t *m = zmsg_recv(r.in);
        if (!m)
            break;
        rop_t op = {0};
        if (zmsg_size(m) == 4) {
            op.router = zmsg_pop(m);
            op.peer = zmsg_pop(m);
            op.frame = zmsg_pop(m);
            zframe_t *dl = zmsg_pop(m);
            if (zframe_size(dl) == sizeof op.deadline)
                memcpy(&op.deadline, zframe_data(dl), sizeof op.deadline);
            zframe_destroy(&dl);
            if (sg_wire_decode(zframe_data(op.frame), zframe_size(op.frame), &op.h) == SG_OK)
                handle(&r, &op);
        }
        zframe_destroy(&op.router);
        zframe_destroy(&op.peer);
        zframe_destroy(&op.frame);
        zmsg_destroy(&m);
    }
    zpoller_destroy(&poller);
    sg_wbuf_fini(&r.page);
    zsock_destroy(&r.ahead);
    zsock_destroy(&r.to_writer);
    zsock_destroy(&r.in);
    zsock_destroy(&r.out);
    sg_actor_end();
}
