/* st_writer.c — a shard's single writer: every state change of the shard happens here.
 * It takes all pending operations (up to store.max_batch), applies them to its in-memory device
 * state and one RocksDB WriteBatch, writes that batch once (fsynced with sync=always: group
 * commit), and only then sends the answers and starts deliveries. One thread owning all mutable
 * state keeps per-device rules (queue limits, session epochs, delivery windows) race-free
 * without locks; readers see only committed data through their own RocksDB reads. */
#include <czmq.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include "sg_codec.h"
#include "sg_log.h"
#include "sg_propbag.h"
#include "sg_sas.h"
#include "sg_time.h"
#include "sg_wire.h"
#include "sg_zmq.h"
#include "st_internal.h"
#include "st_keys.h"
#include "st_record.h"
#include "st_registry.h"
#include "st_writer.h"

#define SWEEP_EVERY_MS 1000
#define SWEEP_MAX 1000

/* One delivery handed to the session and not yet acknowledged. */
typedef struct {
    uint64_t seq;
    int64_t sent_ms;
} flight_t;

/* A device's session as the writer keeps it: st_session_t without its two inline name buffers
 * (~200 bytes a device at 250,000 cached devices a shard): the frontend loop and router names are
 * interned, shared by every session of that loop (see intern()). Converted to and from the
 * st_session_t record when loaded and saved. */
typedef struct {
    uint64_t epoch;
    uint64_t handle;          /* the connection inside that frontend */
    int64_t since_ms;
    const char *peer;         /* interned routing id of the frontend loop ("" when none) */
    const char *router;       /* interned: the router that reaches that loop */
    bool live;
    bool subscribed;
    bool sub_qos0;
    uint8_t method;
} wsess_t;

typedef struct st_wpeer wpeer_t;

/* In-memory state of one device the writer has touched. */
typedef struct st_wdev wdev_t;
struct st_wdev {
    char *id;
    size_t id_len;
    bool exists;
    st_reg_t reg;
    st_qmeta_t meta;
    wsess_t sess;
    uint64_t next_deliver;      /* lowest queue seq not yet handed to the session */
    uint16_t n_inflight;
    flight_t *inflight;         /* handed out and not yet completed (the window) */
    wdev_t *busy_prev, *busy_next;   /* in w->busy while n_inflight > 0 */
    bool in_busy;
    bool deliver_queued;
    char *reg_text;             /* registry entry as of the open batch (read or written in it), or NULL */
    wpeer_t *loop;              /* while the session is live: its frontend loop, in whose list it is */
    wdev_t *loop_prev, *loop_next;
};

/* A message to take out of the queue at the start of the next batch (found while delivering). */
typedef struct {
    wdev_t *dev;
    uint64_t seq;
    uint8_t outcome;    /* ST_OUT_EXPIRED or ST_OUT_DELIVERY_COUNT_EXCEEDED */
} expire_t;

/* One operation as received: envelope and decoded header. */
typedef struct st_op op_t;
struct st_op {
    zframe_t *router;
    zframe_t *peer;
    zframe_t *frame;
    sg_wire_hdr_t h;
};

typedef struct st_writer writer_t;
struct st_writer {
    st_ctx_t *ctx;
    zsock_t *in;                /* PULL from net */
    zsock_t *out;               /* PUSH to net */
    zhashx_t *devs;             /* id -> wdev_t */
    rocksdb_writebatch_t *batch;
    rocksdb_writebatch_t *carry;   /* bookkeeping written after the answers, without fsync */
    zlist_t *answers;           /* zmsg_t* to send after commit */
    zlist_t *deliver;           /* wdev_t* to run deliveries for after commit */
    zlist_t *reg_texts;         /* wdev_t* whose reg_text is set: cleared after each commit */
    expire_t *expired;
    size_t n_expired, cap_expired;
    st_counters_t counters;
    bool counters_dirty;
    bool tele_appended;
    uint64_t tele_next;
    uint64_t sessions;
    uint64_t queued;
    int64_t last_sweep;
    wdev_t *busy;               /* devices with deliveries in flight (checked for lock timeouts) */
    int64_t resume_at;          /* start-up deliveries wait for the routers to reconnect */
    zhashx_t *routers_heard;    /* routers an operation came through since the start (until resume_at) */
    zhashx_t *names;            /* interned frontend loop and router names (wsess_t) */
    zhashx_t *finished;         /* "{id}/{seq}" of messages finished in the open batch */
    op_t held;                  /* an op that must start a batch of its own (needs_fresh_batch) */
    bool has_held;
    zhashx_t *peers;            /* frontend loop name -> wpeer_t (liveness from heartbeats) */
    int64_t started_mono;       /* sg_mono_ms at start: loops get store.peer_timeout to be heard */
    sg_wbuf_t scratch;
    sg_wbuf_t scratch2;
};

/* A session ended because its frontend loop went silent: told again (KICK) if the loop speaks. */
typedef struct {
    char *device;
    uint64_t handle, epoch;
} ended_t;

/* Liveness of one frontend loop ("{frontend}/{loop}/{boot}"), from the heartbeats routers pass on,
 * and its live sessions: a loop that reboots or goes silent has its own sessions ended without a
 * walk over every cached device. */
struct st_wpeer {
    int64_t last_ms;            /* sg_mono_ms of the last heartbeat (or session start, or shard start) */
    bool dead;                  /* declared gone; its sessions were ended */
    ended_t *ended;
    size_t n_ended, cap_ended;
    wdev_t *live;               /* the live sessions on this loop (wdev_t.loop_next) */
    size_t n_live;
};

/* How long the sessions ended for a dead loop are remembered for KICKs if it comes back. */
#define DEAD_PEER_KEEP_MS (3600 * 1000)


/* The shard's memory no longer matches its disk: end the process so it restarts from its WAL.
 * _exit, not exit: after a failed write, RocksDB's own clean-up (run by exit's destructors) trips
 * an assertion in Debian's build and the process would die of SIGABRT instead. */
static void fatal_io(const char *what)
{
    SG_ERROR("store", "writer.fatal", "what=%s reason=\"storage write failed; exiting so the shard restarts from its WAL\"", what);
    fflush(NULL);
    _exit(70);
}

/* A batch the volume had no room for after all (something else filled it between our look and
 * the write): the reserve goes back so the restart can open the database. */
static void fatal_full(writer_t *w, const char *what)
{
    st_space_release(&w->ctx->space);
    SG_ERROR("store", "writer.disk_full", "what=%s free=%lld reason=\"the volume filled under a write; exiting so the "
             "shard restarts from its WAL with its reserve given back\"", what, (long long)w->ctx->space.free);
    fflush(NULL);
    _exit(75);
}

/* Double the capacity of a growing array (first: the capacity of a new one). */
static void *grow(void *arr, size_t *cap, size_t elem, size_t first)
{
    size_t n = *cap ? *cap * 2 : first;
    void *p = realloc(arr, n * elem);
    if (!p)
        fatal_io("oom");
    *cap = n;
    return p;
}

/* ---------- device cache ---------- */

static void want_delivery(writer_t *w, wdev_t *d);

/* The one copy of a frontend loop's or router's name (n bytes, no NUL needed). Names stay until
 * the writer stops: there are a few per frontend incarnation, however many sessions use them. */
static const char *intern(writer_t *w, const char *s, size_t n)
{
    char key[SG_WIRE_MAX_PEER + 1];
    if (n > SG_WIRE_MAX_PEER)
        n = SG_WIRE_MAX_PEER;
    memcpy(key, s, n);
    key[n] = 0;
    char *v = zhashx_lookup(w->names, key);
    if (v)
        return v;
    if (!(v = strdup(key)) || zhashx_insert(w->names, key, v) != 0)
        fatal_io("oom");
    return v;
}

static void sess_from_record(writer_t *w, wsess_t *out, const st_session_t *r)
{
    *out = (wsess_t){.epoch = r->epoch, .handle = r->handle, .since_ms = r->since_ms, .live = r->live,
                     .subscribed = r->subscribed, .sub_qos0 = r->sub_qos0, .method = r->method,
                     .peer = intern(w, r->peer, strlen(r->peer)), .router = intern(w, r->router, strlen(r->router))};
}

static void sess_clear(writer_t *w, wsess_t *s)
{
    *s = (wsess_t){.peer = intern(w, "", 0), .router = intern(w, "", 0)};
}

static wpeer_t *wpeer_get(writer_t *w, const char *name);

/* d's session went live on d->sess.peer: into that loop's list. */
static void live_link(writer_t *w, wdev_t *d)
{
    wpeer_t *p = wpeer_get(w, d->sess.peer);
    d->loop = p;
    d->loop_prev = NULL;
    d->loop_next = p->live;
    if (p->live)
        p->live->loop_prev = d;
    p->live = d;
    p->n_live++;
}

/* d's session ended: out of its loop's list. */
static void live_unlink(wdev_t *d)
{
    wpeer_t *p = d->loop;
    if (!p)
        return;
    if (d->loop_prev)
        d->loop_prev->loop_next = d->loop_next;
    else
        p->live = d->loop_next;
    if (d->loop_next)
        d->loop_next->loop_prev = d->loop_prev;
    d->loop = NULL;
    d->loop_prev = d->loop_next = NULL;
    p->n_live--;
}

static void dev_free(void **item)
{
    wdev_t *d = *item;
    if (!d)
        return;
    live_unlink(d);   /* only at the end (evicted devices have no live session) */
    free(d->id);
    free(d->inflight);
    free(d->reg_text);
    free(d);
    *item = NULL;
}

static sg_rc dev_load(writer_t *w, wdev_t *d)
{
    char key[ST_KEY_MAX];
    char *val;
    size_t vlen, klen;
    st_db_t *db = &w->ctx->db;

    klen = st_key_dev(key, d->id, d->id_len, ST_K_REGISTRY);
    SG_GUARD(st_db_get(db, NULL, ST_CF_DEV, key, klen, &val, &vlen));
    bool registered = val != NULL;
    if (val) {
        sg_rc rc = st_reg_parse(val, vlen, &d->reg);
        if (rc != SG_OK)
            SG_ERROR("store", "registry.damaged", "device=%.*s", (int)d->id_len, d->id);
        d->exists = rc == SG_OK;
        /* Kept until the commit: a registry put (an update, say) needs the entry again. */
        if (d->exists && (d->reg_text = strndup(val, vlen)))
            zlist_append(w->reg_texts, d);
        rocksdb_free(val);
    }
    /* Sessions are stored only for registered devices (a delete removes both), so an unknown id
     * skips that read: an import of fresh devices loads a great many of them. */
    klen = st_key_dev(key, d->id, d->id_len, ST_K_SESSION);
    if (registered)
        SG_GUARD(st_db_get(db, NULL, ST_CF_DEV, key, klen, &val, &vlen));
    if (registered && val) {
        st_session_t rec;
        if (st_session_get(val, vlen, &rec) == SG_OK)
            sess_from_record(w, &d->sess, &rec);
        rocksdb_free(val);
    }
    klen = st_key_dev(key, d->id, d->id_len, ST_K_META);
    SG_GUARD(st_db_get(db, NULL, ST_CF_DEV, key, klen, &val, &vlen));
    if (val) {
        if (st_qmeta_get(val, vlen, &d->meta) != SG_OK)
            memset(&d->meta, 0, sizeof d->meta);
        rocksdb_free(val);
    }
    if (d->sess.live) {
        live_link(w, d);
        w->sessions++;   /* counted while cached; see dev_evict */
        /* A session that outlived a restart of this shard: its window is empty here, so start
         * delivering again (what it already got comes again, marked DUP). */
        want_delivery(w, d);
    }
    return SG_OK;
}

/* The cached state of device id, loaded on first use; NULL only on storage errors. */
static wdev_t *dev_get(writer_t *w, const char *id, size_t id_len)
{
    char key[SG_DEVICE_ID_MAX + 1];
    memcpy(key, id, id_len);
    key[id_len] = 0;
    wdev_t *d = zhashx_lookup(w->devs, key);
    if (d)
        return d;
    d = calloc(1, sizeof *d);
    if (!d || !(d->id = strdup(key))) {
        free(d);
        return NULL;
    }
    d->id_len = id_len;
    sess_clear(w, &d->sess);
    if (dev_load(w, d) != SG_OK) {
        void *p = d;
        dev_free(&p);
        return NULL;
    }
    zhashx_insert(w->devs, key, d);
    return d;
}

wdev_t *st_writer_dev(writer_t *w, const char *id, size_t len)
{
    wdev_t *d = dev_get(w, id, len);
    if (!d)
        fatal_io("device-load");
    return d;
}

bool st_wdev_exists(const wdev_t *d) { return d->exists; }

const st_ctx_t *st_writer_ctx(const writer_t *w) { return w->ctx; }

/* Keep the cache bounded: drop entries without a live session or deliveries in flight. Live
 * sessions stay cached and do not count against store.cache_devices (else a shard holding more
 * sessions than that would walk its whole cache after every batch, finding nothing to drop). */
static void dev_evict(writer_t *w)
{
    if ((int64_t)(zhashx_size(w->devs) - w->sessions) <= w->ctx->cache_devices || w->n_expired > 0)
        return;
    zlist_t *drop = zlist_new();
    for (wdev_t *d = zhashx_first(w->devs); d; d = zhashx_next(w->devs))
        if (!d->sess.live && d->n_inflight == 0 && !d->deliver_queued)
            zlist_append(drop, d->id);
    for (char *id = zlist_first(drop); id; id = zlist_next(drop))
        zhashx_delete(w->devs, id);
    zlist_destroy(&drop);
}

/* ---------- batch helpers ---------- */

static void put_dev_key(writer_t *w, wdev_t *d, char kind, const sg_wbuf_t *val)
{
    char key[ST_KEY_MAX];
    size_t klen = st_key_dev(key, d->id, d->id_len, kind);
    rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEV], key, klen, (const char *)val->data, val->len);
}

static void save_session(writer_t *w, wdev_t *d)
{
    st_session_t rec = {.epoch = d->sess.epoch, .live = d->sess.live, .subscribed = d->sess.subscribed,
                        .sub_qos0 = d->sess.sub_qos0, .method = d->sess.method, .handle = d->sess.handle,
                        .since_ms = d->sess.since_ms};
    snprintf(rec.peer, sizeof rec.peer, "%s", d->sess.peer);
    snprintf(rec.router, sizeof rec.router, "%s", d->sess.router);
    sg_wbuf_reset(&w->scratch);
    if (st_session_put(&w->scratch, &rec) != SG_OK)
        fatal_io("session-encode");
    put_dev_key(w, d, ST_K_SESSION, &w->scratch);
    /* The index of live sessions lets a restarted shard find them without scanning every key. */
    char key[ST_KEY_MAX];
    size_t klen = st_key_live(key, d->id, d->id_len);
    if (d->sess.live)
        rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, klen, "", 0);
    else
        rocksdb_writebatch_delete_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, klen);
}

static void save_meta(writer_t *w, wdev_t *d)
{
    sg_wbuf_reset(&w->scratch);
    if (st_qmeta_put(&w->scratch, &d->meta) != SG_OK)
        fatal_io("meta-encode");
    put_dev_key(w, d, ST_K_META, &w->scratch);
}

static void feedback(writer_t *w, wdev_t *d, const st_msg_t *m, uint8_t outcome, int64_t now)
{
    bool positive = outcome == ST_OUT_DELIVERED;
    bool wanted = m->ack == ST_ACK_FULL || (positive && m->ack == ST_ACK_POSITIVE) ||
                  (!positive && m->ack == ST_ACK_NEGATIVE);
    if (!wanted)
        return;
    uint8_t key[8];
    st_be64(key, w->counters.feedback_next++);
    w->counters_dirty = true;
    sg_wbuf_reset(&w->scratch);
    if (st_feedback_put(&w->scratch, m->message_id, m->message_id_len, d->id, d->id_len, outcome, now) != SG_OK)
        fatal_io("feedback-encode");
    rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_FB], (const char *)key, 8,
                              (const char *)w->scratch.data, w->scratch.len);
}

/* Remove message seq (record rec) from the queue; dead-letter it unless it was delivered. */
static void finish_msg(writer_t *w, wdev_t *d, uint64_t seq, const char *rec, size_t rlen, uint8_t outcome,
                       int64_t now)
{
    /* Reads see committed data only: a message finished earlier in this batch (completed,
     * expired, revoked) is still there, and must not be finished twice. */
    char fkey[SG_DEVICE_ID_MAX + 24];
    snprintf(fkey, sizeof fkey, "%s/%llx", d->id, (unsigned long long)seq);
    if (zhashx_lookup(w->finished, fkey))
        return;
    zhashx_insert(w->finished, fkey, (void *)1);
    st_msg_t m;
    char key[ST_KEY_MAX];
    size_t klen;
    st_db_t *db = &w->ctx->db;
    if (st_msg_get(rec, rlen, &m) != SG_OK) {
        SG_ERROR("store", "message.damaged", "device=%s seq=%llu", d->id, (unsigned long long)seq);
        memset(&m, 0, sizeof m);
    }
    klen = st_key_dev_seq(key, d->id, d->id_len, ST_K_QUEUE, seq);
    rocksdb_writebatch_delete_cf(w->batch, db->cf[ST_CF_DEV], key, klen);
    klen = st_key_exp(key, m.expires_ms, d->id, d->id_len, seq);
    rocksdb_writebatch_delete_cf(w->batch, db->cf[ST_CF_EXP], key, klen);
    if (outcome != ST_OUT_DELIVERED) {
        sg_wbuf_reset(&w->scratch2);
        if (st_dead_put(&w->scratch2, outcome, now, rec, rlen) != SG_OK)
            fatal_io("dead-encode");
        klen = st_key_dev_seq(key, d->id, d->id_len, ST_K_DEAD, seq);
        rocksdb_writebatch_put_cf(w->batch, db->cf[ST_CF_DEV], key, klen, (const char *)w->scratch2.data,
                                  w->scratch2.len);
        klen = st_key_exp(key, now, d->id, d->id_len, seq);   /* the retention thread's way to it */
        rocksdb_writebatch_put_cf(w->batch, db->cf[ST_CF_DLX], key, klen, "", 0);
    }
    if (d->meta.count > 0)
        d->meta.count--;
    d->meta.bytes = d->meta.bytes >= m.payload_len ? d->meta.bytes - m.payload_len : 0;
    if (w->queued > 0)
        w->queued--;
    save_meta(w, d);
    feedback(w, d, &m, outcome, now);
}

static void busy_add(writer_t *w, wdev_t *d)
{
    if (d->in_busy)
        return;
    d->busy_prev = NULL;
    d->busy_next = w->busy;
    if (w->busy)
        w->busy->busy_prev = d;
    w->busy = d;
    d->in_busy = true;
}

static void busy_del(writer_t *w, wdev_t *d)
{
    if (!d->in_busy)
        return;
    if (d->busy_prev)
        d->busy_prev->busy_next = d->busy_next;
    else
        w->busy = d->busy_next;
    if (d->busy_next)
        d->busy_next->busy_prev = d->busy_prev;
    d->busy_prev = d->busy_next = NULL;
    d->in_busy = false;
}

/* Forget every delivery in flight: they are handed out again from the head of the queue. */
static void inflight_clear(writer_t *w, wdev_t *d)
{
    d->n_inflight = 0;
    d->next_deliver = 0;
    busy_del(w, d);
}

static bool inflight_has(const wdev_t *d, uint64_t seq)
{
    for (uint16_t i = 0; i < d->n_inflight; i++)
        if (d->inflight[i].seq == seq)
            return true;
    return false;
}

static bool inflight_remove(writer_t *w, wdev_t *d, uint64_t seq)
{
    for (uint16_t i = 0; i < d->n_inflight; i++)
        if (d->inflight[i].seq == seq) {
            d->inflight[i] = d->inflight[--d->n_inflight];
            if (d->n_inflight == 0)
                busy_del(w, d);
            return true;
        }
    return false;
}

/* Finish message seq of d with outcome if it is still queued. */
static void finish_seq(writer_t *w, wdev_t *d, uint64_t seq, uint8_t outcome, int64_t now)
{
    char key[ST_KEY_MAX], *rec;
    size_t klen = st_key_dev_seq(key, d->id, d->id_len, ST_K_QUEUE, seq), rlen;
    if (st_db_get(&w->ctx->db, NULL, ST_CF_DEV, key, klen, &rec, &rlen) != SG_OK)
        fatal_io("queue-read");
    if (!rec)
        return;
    finish_msg(w, d, seq, rec, rlen, outcome, now);
    rocksdb_free(rec);
}

/* ---------- answers ---------- */

/* Queue ['R'][router][peer][frame] to be sent once the batch is durable. */
static void answer_raw(writer_t *w, const char *router, const char *peer, size_t peer_len, const sg_wbuf_t *frame)
{
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, "R");
    zmsg_addstr(m, router);
    zmsg_addmem(m, peer, peer_len);
    zmsg_addmem(m, frame->data, frame->len);
    zlist_append(w->answers, m);
}

static void answer(writer_t *w, const op_t *op, const sg_wbuf_t *frame)
{
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, "R");
    zmsg_append(m, &(zframe_t *){zframe_dup(op->router)});
    zmsg_append(m, &(zframe_t *){zframe_dup(op->peer)});
    zmsg_addmem(m, frame->data, frame->len);
    zlist_append(w->answers, m);
}

/* Answer an ADMIN request with an HTTP-like status and a JSON body (reference taken). */
static void answer_admin(writer_t *w, const op_t *op, int status, json_t *body)
{
    if (st_admin_answer(&w->scratch2, &op->h, status, body) != SG_OK)
        fatal_io("answer-encode");
    answer(w, op, &w->scratch2);
}

void st_writer_answer_admin(writer_t *w, const op_t *op, int status, json_t *body) { answer_admin(w, op, status, body); }

/* Tell frontend loop `peer` (through `router`) to close the connection of that session. */
static void kick(writer_t *w, const char *router, const char *peer, const char *device, uint64_t handle,
                 uint64_t epoch, uint8_t reason)
{
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_KICK, device);
    h.corr = handle;
    h.epoch = epoch;
    sg_wbuf_reset(&w->scratch);
    if (sg_wire_encode_hdr(&w->scratch, &h) != SG_OK || sg_wire_put_u8(&w->scratch, reason) != SG_OK)
        fatal_io("kick-encode");
    answer_raw(w, router, peer, strlen(peer), &w->scratch);
}

static void send_kick(writer_t *w, wdev_t *d, uint8_t reason)
{
    kick(w, d->sess.router, d->sess.peer, d->id, d->sess.handle, d->sess.epoch, reason);
}

/* The session ended (closed, taken over, revoked): deliveries in flight go back to the queue
 * head with their delivery counts kept. */
static void session_end(writer_t *w, wdev_t *d)
{
    if (d->sess.live && w->sessions > 0)
        w->sessions--;
    live_unlink(d);
    d->sess.live = false;   /* `subscribed` stays: a non-clean session resumes with it */
    inflight_clear(w, d);
    save_session(w, d);
}

static void want_delivery(writer_t *w, wdev_t *d)
{
    if (!d->deliver_queued && d->sess.live && d->sess.subscribed) {
        d->deliver_queued = true;
        zlist_append(w->deliver, d);
    }
}

/* ---------- device operations ---------- */

static bool session_matches(const wdev_t *d, const op_t *op)
{
    return d->sess.live && d->sess.epoch == op->h.epoch;
}

/* Pushes for a session go back through the router its frontend loop uses; follow it when the
 * session's traffic arrives through another one (the loop reconnected elsewhere). */
static void track_router(writer_t *w, wdev_t *d, const op_t *op)
{
    size_t n = zframe_size(op->router);
    if (!session_matches(d, op) || n == 0 || n > SG_WIRE_MAX_PEER ||
        (strlen(d->sess.router) == n && memcmp(d->sess.router, zframe_data(op->router), n) == 0))
        return;
    d->sess.router = intern(w, (const char *)zframe_data(op->router), n);
    save_session(w, d);
}

static void peer_heard(writer_t *w, const op_t *op);

static void op_auth(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    sg_wire_auth_t a;
    sg_wire_auth_res_t res = {0};
    uint16_t status = SG_AUTH_BAD_CREDENTIALS;
    const char *why = "unknown-device";
    bool present = false;

    if (sg_wire_get_auth(&op->h, &a) != SG_OK) {
        why = "malformed-request";
    } else if (!d->exists) {
        why = "unknown-device";
    } else if (!d->reg.enabled) {
        status = SG_AUTH_DISABLED;
        why = "disabled";
    } else if (a.method != SG_CRED_SAS || d->reg.auth_type != ST_AUTH_SAS) {
        why = "credential-kind-not-registered";
    } else {
        sg_sas_t t;
        sg_rc rc = sg_sas_parse((const char *)a.credential, a.credential_len, &t);
        if (rc == SG_OK) {
            rc = sg_sas_verify(&t, d->id, d->reg.key1, d->reg.key1_len, now / 1000);
            if (rc == SG_E_AUTH)
                rc = sg_sas_verify(&t, d->id, d->reg.key2, d->reg.key2_len, now / 1000);
        }
        if (rc == SG_OK) {
            status = SG_AUTH_OK;
            res.expires = t.se;
        }
        why = sg_strerror(rc);
    }
    if (status != SG_AUTH_OK) {
        SG_INFO("store", "auth.refused", "device=%s reason=%s", d->id, why);
    } else {
        if (d->sess.live) {
            send_kick(w, d, SG_KICK_TAKEOVER);
            session_end(w, d);
        }
        bool clean = (op->h.flags & SG_WIRE_F_CLEAN) != 0;
        present = !clean && d->sess.epoch != 0;
        uint64_t epoch = d->sess.epoch + 1;
        if (epoch < (uint64_t)now)
            epoch = (uint64_t)now;   /* survives a deleted-and-recreated device */
        d->sess.epoch = epoch;
        d->sess.live = true;
        d->sess.subscribed = present && d->sess.subscribed;
        d->sess.sub_qos0 = d->sess.subscribed && d->sess.sub_qos0;
        d->sess.method = a.method;
        d->sess.handle = op->h.corr;
        d->sess.since_ms = now;
        d->sess.peer = intern(w, (const char *)zframe_data(op->peer), zframe_size(op->peer));
        d->sess.router = intern(w, (const char *)zframe_data(op->router), zframe_size(op->router));
        live_link(w, d);
        inflight_clear(w, d);
        w->sessions++;
        save_session(w, d);
        peer_heard(w, op);
        res.generation = d->reg.generation;
        want_delivery(w, d);
    }
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_AUTH_RES, d->id);
    h.shard = w->ctx->partition;   /* the frontend learns which shard holds the session's publishes */
    h.corr = op->h.corr;
    h.status = status;
    h.epoch = status == SG_AUTH_OK ? d->sess.epoch : 0;
    if (status == SG_AUTH_OK)
        h.flags = (uint8_t)((present ? SG_WIRE_F_SESSION_PRESENT : 0) | (d->sess.subscribed ? SG_WIRE_F_SUBSCRIBED : 0) |
                            (d->sess.subscribed && d->sess.sub_qos0 ? SG_WIRE_F_SUBSCRIBED_QOS0 : 0));
    sg_wbuf_reset(&w->scratch);
    if (sg_wire_encode_hdr(&w->scratch, &h) != SG_OK || sg_wire_put_auth_res(&w->scratch, &res) != SG_OK)
        fatal_io("auth-encode");
    answer(w, op, &w->scratch);
}

static const char *auth_method_json(uint8_t method)
{
    switch (method) {
    case SG_CRED_X509: return "{\"scope\":\"device\",\"type\":\"x509Certificate\",\"issuer\":\"iothub\"}";
    case SG_CRED_PSK: return "{\"scope\":\"device\",\"type\":\"psk\",\"issuer\":\"iothub\"}";
    }
    return "{\"scope\":\"device\",\"type\":\"sas\",\"issuer\":\"iothub\"}";
}

static bool is_stamped(const char *k, size_t kl)
{
    static const char a[] = "iothub-connection-device-id", b[] = "iothub-connection-auth-method";
    return (kl == sizeof a - 1 && strncasecmp(k, a, kl) == 0) || (kl == sizeof b - 1 && strncasecmp(k, b, kl) == 0);
}

static uint16_t unstamped_props(sg_wire_props_t p)
{
    const char *k, *v;
    size_t kl, vl;
    uint16_t n = 0;
    while (sg_wire_props_next(&p, &k, &kl, &v, &vl))
        n += !is_stamped(k, kl);
    return n;
}

static void op_telemetry(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    sg_wire_telemetry_t t;
    uint16_t status = 0;
    if (sg_wire_get_telemetry(&op->h, &t) != SG_OK) {
        status = SG_TELE_MALFORMED;
    } else if (!session_matches(d, op)) {
        status = SG_TELE_STALE;   /* the frontend closes that connection */
    } else if (unstamped_props(t.props) + 2 > SG_WIRE_MAX_PROPS) {
        status = SG_TELE_MALFORMED;   /* the two stamped ones would not fit (frontends cap bags far lower) */
    } else {
        /* Drop whatever the device claims about its origin and stamp what the gateway knows. */
        sg_wire_props_t p = t.props;
        const char *k, *v;
        size_t kl, vl;
        uint16_t n = unstamped_props(t.props);
        const char *am = auth_method_json(d->sess.method);
        sg_wbuf_reset(&w->scratch);
        if (st_tele_put_head(&w->scratch, now, d->id, d->id_len, (uint16_t)(n + 2)) != SG_OK)
            fatal_io("telemetry-encode");
        p = t.props;
        while (sg_wire_props_next(&p, &k, &kl, &v, &vl))
            if (!is_stamped(k, kl) && sg_wire_put_prop(&w->scratch, k, kl, v, vl) != SG_OK)
                fatal_io("telemetry-encode");
        if (sg_wire_put_prop(&w->scratch, "iothub-connection-device-id", 27, d->id, d->id_len) != SG_OK ||
            sg_wire_put_prop(&w->scratch, "iothub-connection-auth-method", 29, am, strlen(am)) != SG_OK ||
            sg_wbuf_str32(&w->scratch, t.payload, t.payload_len) != SG_OK)
            fatal_io("telemetry-encode");
        uint8_t key[8];
        st_be64(key, w->tele_next++);
        rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_TELE], (const char *)key, 8,
                                  (const char *)w->scratch.data, w->scratch.len);
        w->tele_appended = true;
    }
    if (!(op->h.flags & SG_WIRE_F_QOS1) && status == 0)
        return;
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_TELEMETRY_ACK, d->id);
    h.corr = op->h.corr;
    h.epoch = op->h.epoch;
    h.status = status;
    sg_wbuf_reset(&w->scratch);
    if (sg_wire_encode_hdr(&w->scratch, &h) != SG_OK || sg_wire_put_pid(&w->scratch, status == SG_TELE_MALFORMED ? 0 : t.packet_id) != SG_OK)
        fatal_io("ack-encode");
    answer(w, op, &w->scratch);
}

static void op_session_end(writer_t *w, op_t *op, wdev_t *d)
{
    if (session_matches(d, op))
        session_end(w, d);
}

static void op_subscribe(writer_t *w, op_t *op, wdev_t *d)
{
    uint8_t chan, mode;
    if (sg_wire_get_subscribe(&op->h, &chan, &mode) != SG_OK || !session_matches(d, op))
        return;
    bool on = mode != SG_SUB_OFF, qos0 = mode == SG_SUB_QOS0;
    if (d->sess.subscribed == on && d->sess.sub_qos0 == qos0)
        return;
    d->sess.subscribed = on;
    d->sess.sub_qos0 = qos0;
    if (!on)
        inflight_clear(w, d);
    save_session(w, d);
    want_delivery(w, d);
}

static uint16_t pid_of(uint64_t seq) { return (uint16_t)(seq % 65535u + 1u); }

static void op_complete(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    uint16_t pid;
    if (sg_wire_get_pid(&op->h, &pid) != SG_OK || !session_matches(d, op))
        return;
    for (uint16_t i = 0; i < d->n_inflight; i++) {
        uint64_t seq = d->inflight[i].seq;
        if (pid_of(seq) == pid) {
            inflight_remove(w, d, seq);
            finish_seq(w, d, seq, ST_OUT_DELIVERED, now);
            want_delivery(w, d);
            return;
        }
    }
    /* An acknowledgement of a delivery this shard no longer tracks (it restarted, or the lock
     * ran out): the message stays queued and is delivered again, at least once. */
    SG_DEBUG("store", "complete.unknown", "device=%s pid=%u", d->id, pid);
    want_delivery(w, d);
}

/* ---------- admin operations ---------- */

static json_t *load_entry(writer_t *w, wdev_t *d)
{
    /* Loaded or put in this batch (then the database does not have it yet). */
    if (d->reg_text)
        return json_loads(d->reg_text, 0, NULL);
    char key[ST_KEY_MAX], *val;
    size_t vlen, klen = st_key_dev(key, d->id, d->id_len, ST_K_REGISTRY);
    if (st_db_get(&w->ctx->db, NULL, ST_CF_DEV, key, klen, &val, &vlen) != SG_OK)
        fatal_io("registry-read");
    if (!val)
        return NULL;
    json_t *e = json_loadb(val, vlen, 0, NULL);
    rocksdb_free(val);
    return e;
}

sg_rc st_writer_device_put(writer_t *w, wdev_t *d, const json_t *body, int64_t now, st_reg_put_t *put, json_t **answer,
                           const char **err_name, char *err_msg, size_t err_len)
{
    json_t *existing = d->exists ? load_entry(w, d) : NULL;
    sg_rc rc = st_reg_put(d->id, body, existing, now, put, err_name, err_msg, err_len);
    json_decref(existing);
    SG_GUARD(rc);
    char *text = json_dumps(put->stored, JSON_COMPACT);
    if (!text || st_reg_from_json(put->stored, &d->reg) != SG_OK)
        fatal_io("registry-encode");
    if (answer) {
        st_limits_t defaults = {w->ctx->max_queued_messages, w->ctx->max_queued_bytes};
        *answer = st_reg_put_answer(put, &defaults);
    }
    json_decref(put->stored);
    put->stored = NULL;
    char key[ST_KEY_MAX];
    size_t klen = st_key_dev(key, d->id, d->id_len, ST_K_REGISTRY);
    rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEV], key, klen, text, strlen(text));
    if (!d->reg_text)
        zlist_append(w->reg_texts, d);
    free(d->reg_text);
    d->reg_text = text;
    if (put->created) {
        d->exists = true;
        w->counters.devices++;
        w->counters_dirty = true;
    }
    if (put->revoke && d->sess.live) {
        SG_INFO("store", "session.revoked", "device=%s generation=%u", d->id, d->reg.generation);
        send_kick(w, d, SG_KICK_REVOKED);
        session_end(w, d);
    }
    return SG_OK;
}

static void adm_device_put(writer_t *w, op_t *op, wdev_t *d, json_t *body, int64_t now)
{
    st_reg_put_t put;
    json_t *reply = NULL;
    const char *ename = "InvalidDevice";
    char emsg[300];
    if (st_writer_device_put(w, d, body, now, &put, &reply, &ename, emsg, sizeof emsg) != SG_OK) {
        answer_admin(w, op, 400, st_error_json(ename, "%s", emsg));
        return;
    }
    json_decref(put.generated);
    answer_admin(w, op, put.created ? 201 : 200, reply);
}

/* Take every queued message of d out with `outcome` (they are read from the database: the batch
 * must not hold messages of d, see needs_fresh_batch). Returns how many. */
static size_t finish_all(writer_t *w, wdev_t *d, uint8_t outcome, int64_t now)
{
    st_db_t *db = &w->ctx->db;
    char prefix[ST_KEY_MAX];
    size_t n = 0, plen = st_key_dev(prefix, d->id, d->id_len, ST_K_QUEUE);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_DEV]);
    for (rocksdb_iter_seek(it, prefix, plen); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl != plen + 8 || memcmp(k, prefix, plen) != 0)
            break;
        const char *v = rocksdb_iter_value(it, &vl);
        finish_msg(w, d, st_get_be64((const uint8_t *)k + plen), v, vl, outcome, now);
        n++;
    }
    rocksdb_iter_destroy(it);
    return n;
}

static void adm_msg_purge(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    if (!d->exists) {
        answer_admin(w, op, 404, st_error_json("DeviceNotFound", "device '%s' is not registered", d->id));
        return;
    }
    size_t n = finish_all(w, d, ST_OUT_PURGED, now);
    inflight_clear(w, d);   /* purged deliveries no longer hold the window */
    SG_INFO("store", "queue.purged", "device=%s messages=%zu", d->id, n);
    answer_admin(w, op, 200, json_pack("{s:I}", "purged", (json_int_t)n));
}

static void adm_device_delete(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    if (!d->exists) {
        answer_admin(w, op, 404, st_error_json("DeviceNotFound", "device '%s' is not registered", d->id));
        return;
    }
    st_db_t *db = &w->ctx->db;
    char key[ST_KEY_MAX];
    size_t klen;
    finish_all(w, d, ST_OUT_REVOKED, now);   /* everything still queued is dead-lettered as revoked */
    if (d->sess.live) {
        send_kick(w, d, SG_KICK_REVOKED);
        session_end(w, d);
    }
    /* A device created again under this id starts without the old subscription (its epochs
     * come from the clock, so they still outrank the old session's). */
    sess_clear(w, &d->sess);
    klen = st_key_dev(key, d->id, d->id_len, ST_K_SESSION);
    rocksdb_writebatch_delete_cf(w->batch, db->cf[ST_CF_DEV], key, klen);
    klen = st_key_dev(key, d->id, d->id_len, ST_K_REGISTRY);
    rocksdb_writebatch_delete_cf(w->batch, db->cf[ST_CF_DEV], key, klen);
    d->exists = false;
    memset(&d->reg, 0, sizeof d->reg);
    /* The counters stay (emptied): a device created again under this id continues the sequence,
     * so its messages never overwrite the dead letters of this one. */
    d->meta.count = 0;
    d->meta.bytes = 0;
    save_meta(w, d);
    if (w->counters.devices > 0)
        w->counters.devices--;
    w->counters_dirty = true;
    SG_INFO("store", "device.deleted", "device=%s", d->id);
    answer_admin(w, op, 204, NULL);
}

static void uuid4(char out[37])
{
    uint8_t b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        fatal_io("random");
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static int ack_parse(const char *s)
{
    static const char *const names[] = {"none", "positive", "negative", "full"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

#define MAX_USER_PROPS 64

static void adm_enqueue(writer_t *w, op_t *op, wdev_t *d, json_t *body, int64_t now)
{
    st_ctx_t *ctx = w->ctx;
    if (!d->exists) {
        answer_admin(w, op, 404, st_error_json("DeviceNotFound", "device '%s' is not registered", d->id));
        return;
    }
    if (!d->reg.enabled) {
        answer_admin(w, op, 403, st_error_json("DeviceDisabled", "device '%s' is disabled", d->id));
        return;
    }
    if (!json_is_object(body)) {
        answer_admin(w, op, 400, st_error_json("InvalidMessage", "the body must be a JSON object"));
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v) {
        if (strcmp(k, "payload") && strcmp(k, "payloadEncoding") && strcmp(k, "properties") &&
            strcmp(k, "ttlSeconds") && strcmp(k, "ack")) {
            answer_admin(w, op, 400, st_error_json("InvalidMessage", "unknown member '%s'", k));
            return;
        }
    }
    json_t *jp = json_object_get(body, "payload");
    const char *enc = "utf8";
    if (json_object_get(body, "payloadEncoding")) {
        enc = json_string_value(json_object_get(body, "payloadEncoding"));
        if (!enc || (strcmp(enc, "utf8") && strcmp(enc, "base64"))) {
            answer_admin(w, op, 400, st_error_json("InvalidMessage", "payloadEncoding must be \"utf8\" or \"base64\""));
            return;
        }
    }
    if (jp && !json_is_string(jp)) {
        answer_admin(w, op, 400, st_error_json("InvalidMessage", "payload must be a string (utf8 text or base64)"));
        return;
    }
    const char *ptext = jp ? json_string_value(jp) : "";
    size_t plen = jp ? json_string_length(jp) : 0;
    uint8_t *payload = (uint8_t *)ptext;
    uint8_t *decoded = NULL;
    if (strcmp(enc, "base64") == 0) {
        decoded = malloc(plen / 4 * 3 + 3);
        size_t n;
        if (!decoded || sg_b64_decode(ptext, plen, decoded, &n) != SG_OK) {
            free(decoded);
            answer_admin(w, op, 400, st_error_json("InvalidMessage", "payload is not valid base64"));
            return;
        }
        payload = decoded;
        plen = n;
    }
    int64_t ttl = ctx->default_ttl;
    json_t *jt = json_object_get(body, "ttlSeconds");
    if (jt && (!json_is_integer(jt) || json_integer_value(jt) < 1 || json_integer_value(jt) > ctx->max_ttl)) {
        free(decoded);
        answer_admin(w, op, 400, st_error_json("InvalidMessage", "ttlSeconds must be an integer from 1 to %lld",
                                               (long long)ctx->max_ttl));
        return;
    }
    if (jt)
        ttl = json_integer_value(jt);
    int ack = ST_ACK_NONE;
    if (json_object_get(body, "ack")) {
        const char *a = json_string_value(json_object_get(body, "ack"));
        ack = a ? ack_parse(a) : -1;
        if (ack < 0) {
            free(decoded);
            answer_admin(w, op, 400, st_error_json("InvalidMessage", "ack must be none, positive, negative or full"));
            return;
        }
    }
    json_t *props = json_object_get(body, "properties");
    if (props && (!json_is_object(props) || json_object_size(props) > MAX_USER_PROPS)) {
        free(decoded);
        answer_admin(w, op, 400, st_error_json("InvalidMessage", "properties must be an object of at most %d string values",
                                               MAX_USER_PROPS));
        return;
    }
    size_t props_bytes = 0;
    json_object_foreach(props, k, v) {
        if (!json_is_string(v) || !*k || strncmp(k, "$.", 2) == 0 || strncasecmp(k, "iothub-", 7) == 0 ||
            strlen(k) > 256 || json_string_length(v) > 4096) {
            free(decoded);
            answer_admin(w, op, 400, st_error_json("InvalidMessage",
                "property '%s' is not allowed: values are strings (<= 4096 bytes), keys 1-256 bytes and not "
                "starting with '$.' or 'iothub-'", k));
            return;
        }
        props_bytes += strlen(k) + json_string_length(v);
    }
    /* The properties travel URL-encoded in the devicebound topic, which MQTT caps at 65535 bytes
     * (minus room for the id and the system properties): refuse now what could never be
     * delivered. */
    if (props && json_object_size(props) > 0) {
        sg_prop_t pv[MAX_USER_PROPS];
        size_t np = 0;
        json_object_foreach(props, k, v) {
            pv[np].key = k;
            pv[np++].value = json_string_value(v);
        }
        sg_wbuf_t bag;
        sg_wbuf_init(&bag, 65535 - 1024);
        sg_rc brc = sg_propbag_encode(&bag, pv, np);
        sg_wbuf_fini(&bag);
        if (brc != SG_OK) {
            free(decoded);
            answer_admin(w, op, 400, st_error_json("InvalidMessage", "the properties do not fit in an MQTT topic "
                                                   "(at most 64 KiB once URL-encoded, with the system properties)"));
            return;
        }
    }
    if ((int64_t)(plen + props_bytes) > ctx->max_message_bytes) {
        free(decoded);
        answer_admin(w, op, 413, st_error_json("MessageTooLarge", "message is %zu bytes; the limit is %lld",
                                               plen + props_bytes, (long long)ctx->max_message_bytes));
        return;
    }
    int64_t limit = d->reg.max_messages > 0 ? d->reg.max_messages : ctx->max_queued_messages;
    int64_t blimit = d->reg.max_bytes > 0 ? d->reg.max_bytes : ctx->max_queued_bytes;
    if ((int64_t)d->meta.count >= limit || (int64_t)(d->meta.bytes + plen) > blimit) {
        free(decoded);
        json_t *e = st_error_json("DeviceQueueFull", "device '%s' has %u messages (%llu bytes) queued; limits are %lld "
                                  "messages and %lld bytes", d->id, d->meta.count, (unsigned long long)d->meta.bytes,
                                  (long long)limit, (long long)blimit);
        json_object_set_new(e, "queued", json_integer(d->meta.count));
        json_object_set_new(e, "limit", json_integer(limit));
        json_object_set_new(e, "retryAfter", json_integer(d->sess.live && d->sess.subscribed ? 1 : 30));
        answer_admin(w, op, 429, e);
        return;
    }

    char mid[37];
    uuid4(mid);
    uint64_t seq = d->meta.next_seq++;
    st_msg_t m = {.message_id = mid, .message_id_len = 36, .enqueued_ms = now, .expires_ms = now + ttl * 1000,
                  .ack = (uint8_t)ack};
    sg_wbuf_reset(&w->scratch);
    sg_rc rc = st_msg_put_head(&w->scratch, &m, (uint16_t)json_object_size(props));
    json_object_foreach(props, k, v) {
        if (rc == SG_OK)
            rc = sg_wire_put_prop(&w->scratch, k, strlen(k), json_string_value(v), json_string_length(v));
    }
    if (rc == SG_OK)
        rc = st_msg_put_tail(&w->scratch, payload, plen);
    free(decoded);
    if (rc != SG_OK)
        fatal_io("message-encode");
    char key[ST_KEY_MAX];
    size_t klen = st_key_dev_seq(key, d->id, d->id_len, ST_K_QUEUE, seq);
    rocksdb_writebatch_put_cf(w->batch, ctx->db.cf[ST_CF_DEV], key, klen, (const char *)w->scratch.data, w->scratch.len);
    klen = st_key_exp(key, m.expires_ms, d->id, d->id_len, seq);
    rocksdb_writebatch_put_cf(w->batch, ctx->db.cf[ST_CF_EXP], key, klen, "", 0);
    d->meta.count++;
    d->meta.bytes += plen;
    w->queued++;
    save_meta(w, d);
    want_delivery(w, d);

    char exp[25];
    sg_rfc3339(m.expires_ms, exp);
    answer_admin(w, op, 201, json_pack("{s:s,s:s}", "messageId", mid, "expiresAt", exp));
}

static void op_admin(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    uint16_t aop;
    const char *json;
    size_t len;
    if (sg_wire_get_admin(&op->h, &aop, &json, &len) != SG_OK) {
        answer_admin(w, op, 400, st_error_json("BadRequest", "malformed admin frame"));
        return;
    }
    json_error_t jerr;
    json_t *body = len ? json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr) : json_object();
    if (!body) {
        answer_admin(w, op, 400, st_error_json("InvalidJson", "the body is not valid JSON: %s (line %d, column %d)",
                                               jerr.text, jerr.line, jerr.column));
        return;
    }
    switch (aop) {
    case SG_ADM_DEVICE_PUT: adm_device_put(w, op, d, body, now); break;
    case SG_ADM_DEVICE_DELETE: adm_device_delete(w, op, d, now); break;
    case SG_ADM_MSG_PURGE: adm_msg_purge(w, op, d, now); break;
    case SG_ADM_MSG_ENQUEUE: adm_enqueue(w, op, d, body, now); break;
    default: answer_admin(w, op, 400, st_error_json("BadRequest", "operation %u is not a write", aop)); break;
    }
    json_decref(body);
}

/* A consumer group's position in this partition: {"group", "offset"}, the last offset it has
 * read (-1: none). Written through the group commit like everything else, answered when durable. */
static void adm_group_commit(writer_t *w, op_t *op, const char *json, size_t len)
{
    json_t *b = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    const char *g = json_string_value(json_object_get(b, "group"));
    json_t *off = json_object_get(b, "offset");
    int64_t last = (int64_t)w->tele_next - 1;
    if (!g || !sg_group_valid(g, strlen(g)) || !json_is_integer(off)) {
        answer_admin(w, op, 400, st_error_json("BadRequest", "a commit names a valid group and an integer offset"));
    } else if (json_integer_value(off) < -1 || json_integer_value(off) > last) {
        answer_admin(w, op, 400, st_error_json("OffsetOutOfRange", "offset %lld is not in this partition: offsets "
                                               "run to %lld (-1: nothing read)", (long long)json_integer_value(off),
                                               (long long)last));
    } else {
        char key[1 + ST_GROUP_MAX];
        uint8_t v[8];
        st_be64(v, (uint64_t)(json_integer_value(off) + 1));
        size_t klen = st_key_group(key, g, strlen(g));
        rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, klen, (const char *)v, sizeof v);
        answer_admin(w, op, 204, NULL);
    }
    json_decref(b);
}

/* ---------- dispatch ---------- */

/* Does op bring new data (rather than bookkeeping of what is there)? Those wait for room. */
static bool brings_data(const op_t *op)
{
    uint16_t aop;
    const char *json;
    size_t len;
    if (op->h.type == SG_MSG_TELEMETRY || op->h.type == SG_MSG_AUTH)
        return true;
    return op->h.type == SG_MSG_ADMIN && sg_wire_get_admin(&op->h, &aop, &json, &len) == SG_OK &&
           (aop == SG_ADM_DEVICE_PUT || aop == SG_ADM_MSG_ENQUEUE || aop == SG_ADM_DEVICE_IMPORT);
}

/* The volume has no room for op: answer it as refused, change nothing. */
static void refuse_full(writer_t *w, op_t *op)
{
    sg_wire_hdr_t h;
    switch (op->h.type) {
    case SG_MSG_TELEMETRY: {
        sg_wire_telemetry_t t;
        if (!(op->h.flags & SG_WIRE_F_QOS1) || sg_wire_get_telemetry(&op->h, &t) != SG_OK)
            return;   /* QoS 0: nothing to answer, the message is not kept */
        h = sg_wire_hdr(SG_MSG_TELEMETRY_ACK, NULL);
        h.device = op->h.device;
        h.device_len = op->h.device_len;
        h.corr = op->h.corr;
        h.epoch = op->h.epoch;
        h.status = SG_TELE_FULL;
        sg_wbuf_reset(&w->scratch);
        if (sg_wire_encode_hdr(&w->scratch, &h) != SG_OK || sg_wire_put_pid(&w->scratch, t.packet_id) != SG_OK)
            fatal_io("ack-encode");
        break;
    }
    case SG_MSG_AUTH: {
        h = sg_wire_hdr(SG_MSG_AUTH_RES, NULL);
        h.device = op->h.device;
        h.device_len = op->h.device_len;
        h.corr = op->h.corr;
        h.status = SG_AUTH_UNAVAILABLE;   /* CONNACK 3 */
        sg_wire_auth_res_t res = {0};
        sg_wbuf_reset(&w->scratch);
        if (sg_wire_encode_hdr(&w->scratch, &h) != SG_OK || sg_wire_put_auth_res(&w->scratch, &res) != SG_OK)
            fatal_io("auth-encode");
        break;
    }
    default:
        answer_admin(w, op, 507, st_error_json("InsufficientStorage", "shard %s: its data volume is full (%lld bytes "
                     "free, store.disk_min_free is %lld): new data is refused until space is freed; reads work",
                     w->ctx->name, (long long)w->ctx->space.free, (long long)w->ctx->space.min_free));
        return;
    }
    answer(w, op, &w->scratch);
}

/* Until resume_at, remember which routers operations came through (they are there). */
static void note_router(writer_t *w, const op_t *op, int64_t now)
{
    size_t rn = zframe_size(op->router);
    if (now >= w->resume_at || rn == 0 || rn > SG_WIRE_MAX_PEER)
        return;
    char r[SG_WIRE_MAX_PEER + 1];
    memcpy(r, zframe_data(op->router), rn);
    r[rn] = 0;
    if (!zhashx_lookup(w->routers_heard, r))
        zhashx_insert(w->routers_heard, r, (void *)1);
}

static void apply(writer_t *w, op_t *op, int64_t now)
{
    uint16_t aop;
    const char *json;
    size_t len;
    /* An import names its devices in its body, not in the header. */
    if (op->h.type == SG_MSG_ADMIN && sg_wire_get_admin(&op->h, &aop, &json, &len) == SG_OK &&
        aop == SG_ADM_DEVICE_IMPORT) {
        st_import_apply(w, op, json, len, now);
        return;
    }
    if (op->h.type == SG_MSG_ADMIN && sg_wire_get_admin(&op->h, &aop, &json, &len) == SG_OK &&
        aop == SG_ADM_GROUP_COMMIT) {
        adm_group_commit(w, op, json, len);
        return;
    }
    if (op->h.device_len == 0) {
        SG_WARN("store", "op.no_device", "type=%s", sg_wire_type_name(op->h.type));
        return;
    }
    wdev_t *d = dev_get(w, op->h.device, op->h.device_len);
    if (!d)
        fatal_io("device-load");
    if (op->h.type != SG_MSG_AUTH && op->h.type != SG_MSG_ADMIN)
        track_router(w, d, op);
    switch (op->h.type) {
    case SG_MSG_AUTH: op_auth(w, op, d, now); break;
    case SG_MSG_TELEMETRY: op_telemetry(w, op, d, now); break;
    case SG_MSG_SESSION_END:
    case SG_MSG_PEER_GONE: op_session_end(w, op, d); break;
    case SG_MSG_SUBSCRIBE: op_subscribe(w, op, d); break;
    case SG_MSG_COMPLETE: op_complete(w, op, d, now); break;
    case SG_MSG_ADMIN: op_admin(w, op, d, now); break;
    default: SG_WARN("store", "op.unexpected", "type=%s", sg_wire_type_name(op->h.type)); break;
    }
}

static void wpeer_free(void **item)
{
    wpeer_t *p = *item;
    if (!p)
        return;
    for (size_t i = 0; i < p->n_ended; i++)
        free(p->ended[i].device);
    free(p->ended);
    free(p);
    *item = NULL;
}

/* A loop first named by a session loaded at start counts as heard then: if it stays silent for
 * store.peer_timeout, those sessions end like any of a silent loop. */
static wpeer_t *wpeer_get(writer_t *w, const char *name)
{
    wpeer_t *p = zhashx_lookup(w->peers, name);
    if (!p) {
        if (!(p = calloc(1, sizeof *p)))
            fatal_io("oom");
        p->last_ms = sg_mono_ms();
        zhashx_insert(w->peers, name, p);
    }
    return p;
}

/* End session d because its frontend loop is gone (rebooted, or silent past store.peer_timeout).
 * The loop is told with a KICK in case it still holds the connection (remembered in `dead` so
 * the KICK is sent again if the loop speaks again). */
static void end_lost_session(writer_t *w, wdev_t *d, wpeer_t *dead, const char *why)
{
    SG_INFO("store", "session.stale", "device=%s peer=%s reason=%s", d->id, d->sess.peer, why);
    send_kick(w, d, SG_KICK_STALE);
    if (dead) {
        if (dead->n_ended == dead->cap_ended)
            dead->ended = grow(dead->ended, &dead->cap_ended, sizeof *dead->ended, 16);
        char *id = strdup(d->id);
        if (!id)
            fatal_io("oom");
        dead->ended[dead->n_ended++] = (ended_t){id, d->sess.handle, d->sess.epoch};
    }
    session_end(w, d);
}

/* HELLO from a frontend loop that (re)started: its earlier incarnation's sessions are gone.
 * The name is "{frontend}/{loop}/{boot}"; sessions on the same "{frontend}/{loop}/" with another
 * boot id are ended. */
static void frontend_hello(writer_t *w, op_t *op)
{
    const char *name;
    size_t len;
    if (sg_wire_get_name(&op->h, &name, &len) != SG_OK)
        return;
    const char *slash = memrchr(name, '/', len);
    if (!slash)
        return;
    size_t plen = (size_t)(slash - name) + 1;
    zlist_t *earlier = zlist_new();
    for (wpeer_t *p = zhashx_first(w->peers); p; p = zhashx_next(w->peers)) {
        const char *pn = zhashx_cursor(w->peers);
        if (p->live && strncmp(pn, name, plen) == 0 && (strlen(pn) != len || memcmp(pn, name, len) != 0))
            zlist_append(earlier, p);
    }
    for (wpeer_t *p = zlist_first(earlier); p; p = zlist_next(earlier))
        while (p->live)
            end_lost_session(w, p->live, NULL, "rebooted");   /* which takes it out of the list */
    zlist_destroy(&earlier);
}

/* The frontend loop in op's envelope is alive (a heartbeat passed on by a router, or a session
 * it started). A loop that was declared gone (a partition longer than store.peer_timeout) gets
 * KICKs for the sessions ended meanwhile, so its devices reconnect instead of idling in
 * sessions nobody serves. */
static void peer_heard(writer_t *w, const op_t *op)
{
    size_t n = zframe_size(op->peer), rn = zframe_size(op->router);
    if (n == 0 || n > SG_WIRE_MAX_PEER || rn == 0 || rn > SG_WIRE_MAX_PEER)
        return;
    char name[SG_WIRE_MAX_PEER + 1], router[SG_WIRE_MAX_PEER + 1];
    memcpy(name, zframe_data(op->peer), n);
    name[n] = 0;
    memcpy(router, zframe_data(op->router), rn);
    router[rn] = 0;
    wpeer_t *p = wpeer_get(w, name);
    p->last_ms = sg_mono_ms();
    if (!p->dead)
        return;
    SG_WARN("store", "peer.back", "peer=%s kicked=%zu reason=\"silent longer than store.peer_timeout; its sessions "
            "were ended\"", name, p->n_ended);
    for (size_t i = 0; i < p->n_ended; i++) {
        kick(w, router, name, p->ended[i].device, p->ended[i].handle, p->ended[i].epoch, SG_KICK_STALE);
        free(p->ended[i].device);
    }
    p->n_ended = 0;
    p->dead = false;
}

/* Loops not heard from for store.peer_timeout are gone: end their sessions (their devices
 * reconnect elsewhere; their commands wait in the queue instead of burning delivery attempts).
 * Sessions found on disk at start whose loop has not spoken since are ended the same way. */
static void check_peers(writer_t *w)
{
    int64_t now = sg_mono_ms(), timeout = w->ctx->peer_timeout_ms;
    if (now - w->started_mono < timeout)
        return;
    zlist_t *gone = zlist_new(), *died = zlist_new();
    for (wpeer_t *p = zhashx_first(w->peers); p; p = zhashx_next(w->peers)) {
        const char *name = zhashx_cursor(w->peers);
        if (p->dead && !p->live && now - p->last_ms > DEAD_PEER_KEEP_MS) {
            zlist_append(gone, (void *)name);   /* forgotten */
        } else if (!p->dead && now - p->last_ms > timeout) {
            SG_WARN("store", "peer.silent", "peer=%s silent_ms=%lld sessions=%zu", name, (long long)(now - p->last_ms),
                    p->n_live);
            p->dead = true;
            zlist_append(died, p);
        }
    }
    /* A dead loop keeps no live session (a new one would have revived it). */
    for (wpeer_t *p = zlist_first(died); p; p = zlist_next(died))
        while (p->live)
            end_lost_session(w, p->live, p, "silent");
    for (const char *name = zlist_first(gone); name; name = zlist_next(gone))
        zhashx_delete(w->peers, name);
    zlist_destroy(&gone);
    zlist_destroy(&died);
}

/* Hand queued messages to the live session, up to the in-flight window. Runs after commit. */
static void deliver(writer_t *w, wdev_t *d, int64_t now)
{
    st_ctx_t *ctx = w->ctx;
    d->deliver_queued = false;
    if (!d->sess.live || !d->sess.subscribed || d->n_inflight >= ctx->delivery_window || d->meta.count == 0)
        return;
    if (!d->inflight && !(d->inflight = calloc((size_t)ctx->delivery_window, sizeof *d->inflight)))
        fatal_io("oom");
    char key[ST_KEY_MAX];
    size_t plen = st_key_dev(key, d->id, d->id_len, ST_K_QUEUE);
    size_t klen = st_key_dev_seq(key, d->id, d->id_len, ST_K_QUEUE, d->next_deliver);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(ctx->db.db, ctx->db.ro, ctx->db.cf[ST_CF_DEV]);
    for (rocksdb_iter_seek(it, key, klen); rocksdb_iter_valid(it) && d->n_inflight < ctx->delivery_window;
         rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl != plen + 8 || memcmp(k, key, plen) != 0)
            break;
        uint64_t seq = st_get_be64((const uint8_t *)k + plen);
        if (inflight_has(d, seq))
            continue;   /* still in flight (only its neighbours were handed out again) */
        const char *v = rocksdb_iter_value(it, &vl);
        st_msg_t m;
        d->next_deliver = seq + 1;
        if (st_msg_get(v, vl, &m) != SG_OK) {
            SG_ERROR("store", "message.damaged", "device=%s seq=%llu", d->id, (unsigned long long)seq);
            continue;
        }
        uint8_t out = m.expires_ms <= now ? ST_OUT_EXPIRED
                      : m.delivery_count >= (uint32_t)ctx->max_delivery_count ? ST_OUT_DELIVERY_COUNT_EXCEEDED
                                                                               : 0;
        if (out) {
            /* dead-lettered at the start of the next batch (this runs after a commit) */
            if (w->n_expired == w->cap_expired)
                w->expired = grow(w->expired, &w->cap_expired, sizeof *w->expired, 64);
            w->expired[w->n_expired++] = (expire_t){d, seq, out};
            continue;
        }
        uint32_t count = m.delivery_count + 1;
        sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_DELIVER, d->id);
        h.corr = d->sess.handle;
        h.epoch = d->sess.epoch;
        sg_wire_deliver_t dv = {.packet_id = pid_of(seq), .delivery_count = count, .enqueued_ms = m.enqueued_ms,
                                .expires_ms = m.expires_ms, .message_id = m.message_id,
                                .message_id_len = m.message_id_len};
        sg_wbuf_reset(&w->scratch);
        sg_rc rc = sg_wire_encode_hdr(&w->scratch, &h);
        if (rc == SG_OK)
            rc = sg_wire_put_deliver_head(&w->scratch, &dv, m.props.count);
        /* The property pairs are stored in wire form already: copy them as they are. */
        if (rc == SG_OK)
            rc = sg_wbuf_bytes(&w->scratch, m.props.rest.data, m.props.rest.len);
        if (rc == SG_OK)
            rc = sg_wire_put_payload(&w->scratch, m.payload, m.payload_len);
        if (rc != SG_OK)
            fatal_io("deliver-encode");
        zmsg_t *msg = zmsg_new();
        zmsg_addstr(msg, "R");
        zmsg_addstr(msg, d->sess.router);
        zmsg_addstr(msg, d->sess.peer);
        zmsg_addmem(msg, w->scratch.data, w->scratch.len);
        zmsg_send(&msg, w->out);
        if (d->n_inflight == 0)
            busy_add(w, d);
        d->inflight[d->n_inflight++] = (flight_t){seq, now};
        /* Count the attempt; losing this update in a crash only under-counts by one. */
        if (st_msg_with_count(v, vl, count, &w->scratch2) != SG_OK)
            fatal_io("count-encode");
        rocksdb_writebatch_put_cf(w->carry, ctx->db.cf[ST_CF_DEV], k, kl, (const char *)w->scratch2.data,
                                  w->scratch2.len);
    }
    rocksdb_iter_destroy(it);
}

/* Messages whose time ran out: found while delivering, or by the sweep over the expiry index. */
static void expire_due(writer_t *w, int64_t now)
{
    for (size_t i = 0; i < w->n_expired; i++) {
        wdev_t *d = w->expired[i].dev;
        inflight_remove(w, d, w->expired[i].seq);
        finish_seq(w, d, w->expired[i].seq, w->expired[i].outcome, now);
        want_delivery(w, d);
    }
    w->n_expired = 0;
    if (now - w->last_sweep < SWEEP_EVERY_MS)
        return;
    w->last_sweep = now;
    /* Only with nothing waiting: heartbeats still queued behind a backlog must count first. */
    if (!(zsock_events(w->in) & ZMQ_POLLIN))
        check_peers(w);
    /* Deliveries not acknowledged within the lock time (lost on the way, or a device that does
     * not answer) are handed out again; after max_delivery_count attempts they are dead-lettered. */
    for (wdev_t *d = w->busy, *next; d; d = next) {
        next = d->busy_next;
        /* Only the deliveries that are overdue go out again, from the oldest on; the others stay
         * in flight (deliver() skips them). */
        uint64_t lowest = UINT64_MAX;
        for (uint16_t i = 0; i < d->n_inflight;) {
            if (now - d->inflight[i].sent_ms >= w->ctx->delivery_lock_ms) {
                if (d->inflight[i].seq < lowest)
                    lowest = d->inflight[i].seq;
                d->inflight[i] = d->inflight[--d->n_inflight];
            } else {
                i++;
            }
        }
        if (lowest != UINT64_MAX) {
            SG_INFO("store", "delivery.lock_expired", "device=%s from_seq=%llu", d->id, (unsigned long long)lowest);
            if (lowest < d->next_deliver)
                d->next_deliver = lowest;
            if (d->n_inflight == 0)
                busy_del(w, d);
            want_delivery(w, d);
        }
    }
    st_db_t *db = &w->ctx->db;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_EXP]);
    int n = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it) && n < SWEEP_MAX; rocksdb_iter_next(it), n++) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl < 18 || (int64_t)st_get_be64((const uint8_t *)k) > now)
            break;
        size_t id_len = kl - 17;
        wdev_t *d = dev_get(w, k + 8, id_len);
        if (!d)
            fatal_io("device-load");
        uint64_t seq = st_get_be64((const uint8_t *)k + 9 + id_len);
        if (inflight_has(d, seq))
            continue;   /* the device may still acknowledge it; it expires when it comes back */
        finish_seq(w, d, seq, ST_OUT_EXPIRED, now);
    }
    rocksdb_iter_destroy(it);
}

/* The next operation waiting, if any (never blocks: the poller says when there are some). */
static bool recv_op(writer_t *w, op_t *op)
{
    zmsg_t *m = sg_zmq_recv_nowait(w->in);
    if (!m)
        return false;
    if (zmsg_size(m) != 3) {
        zmsg_destroy(&m);
        return recv_op(w, op);
    }
    op->router = zmsg_pop(m);
    op->peer = zmsg_pop(m);
    op->frame = zmsg_pop(m);
    zmsg_destroy(&m);
    if (sg_wire_decode(zframe_data(op->frame), zframe_size(op->frame), &op->h) != SG_OK) {
        SG_WARN("store", "frame.malformed", "bytes=%zu", zframe_size(op->frame));
        zframe_destroy(&op->router);
        zframe_destroy(&op->peer);
        zframe_destroy(&op->frame);
        return recv_op(w, op);
    }
    return true;
}

static void op_free(op_t *op)
{
    zframe_destroy(&op->router);
    zframe_destroy(&op->peer);
    zframe_destroy(&op->frame);
}

/* A device delete or queue purge finds the device's queued messages by reading the database, so
 * what the open batch holds for it (a message enqueued just before) must be committed first. */
static bool needs_fresh_batch(const op_t *op)
{
    uint16_t aop;
    const char *json;
    size_t len;
    return op->h.type == SG_MSG_ADMIN && sg_wire_get_admin(&op->h, &aop, &json, &len) == SG_OK &&
           (aop == SG_ADM_DEVICE_DELETE || aop == SG_ADM_MSG_PURGE);
}

/* One group commit: apply what is waiting (at least `first` when given), write once, answer. */
static void cycle(writer_t *w, op_t *first)
{
    st_ctx_t *ctx = w->ctx;
    int64_t now = sg_now_ms();
    int n = 0;
    expire_due(w, now);
    op_t op, held;
    if (w->has_held) {   /* the caller runs this cycle before taking anything new */
        held = w->held;
        w->has_held = false;
        first = &held;
    }
    for (bool have = first != NULL; have || (n < ctx->max_batch && recv_op(w, &op)); have = false) {
        op_t *cur = have ? first : &op;
        if (n > 0 && needs_fresh_batch(cur) && rocksdb_writebatch_count(w->batch) > 0) {
            w->held = *cur;   /* taken over, not freed */
            w->has_held = true;
            break;
        }
        note_router(w, cur, now);
        size_t batch_bytes = 0;
        if (brings_data(cur) && (rocksdb_writebatch_data(w->batch, &batch_bytes),
                                 !st_space_room(&ctx->space, (int64_t)(batch_bytes + zframe_size(cur->frame)))))
            refuse_full(w, cur);
        else if (cur->h.type == SG_MSG_HELLO)
            frontend_hello(w, cur);
        else if (cur->h.type == SG_MSG_ALIVE)
            peer_heard(w, cur);
        else
            apply(w, cur, now);
        op_free(cur);
        n++;
    }
    if (w->counters_dirty) {
        sg_wbuf_reset(&w->scratch);
        if (st_counters_put(&w->scratch, &w->counters) != SG_OK)
            fatal_io("counters-encode");
        rocksdb_writebatch_put_cf(w->batch, ctx->db.cf[ST_CF_DEFAULT], "shard", 5, (const char *)w->scratch.data,
                                  w->scratch.len);
        w->counters_dirty = false;
    }
    if (rocksdb_writebatch_count(w->batch) > 0) {
        if (st_db_write(&ctx->db, w->batch, true) != SG_OK) {
            if (!st_space_room(&ctx->space, 0))
                fatal_full(w, "commit");
            fatal_io("commit");
        }
        rocksdb_writebatch_clear(w->batch);
        zhashx_purge(w->finished);
        atomic_fetch_add(&ctx->stat_batches, 1);
        atomic_fetch_add(&ctx->stat_batch_ops, (uint64_t)n);
    }
    /* The database has every entry now: reads go to it again. */
    for (wdev_t *d; (d = zlist_pop(w->reg_texts));) {
        free(d->reg_text);
        d->reg_text = NULL;
    }
    /* Durable now: publish the counters (an operator who got the answer may look at them next),
     * answer, then deliver. */
    atomic_store(&ctx->stat_devices, w->counters.devices);
    atomic_store(&ctx->stat_sessions, w->sessions);
    /* A look at the volume now and then without new data too: the figures stay true and the full
     * state ends as soon as space is back. */
    st_space_room(&ctx->space, 0);
    atomic_store(&ctx->stat_disk_free, ctx->space.free);
    atomic_store(&ctx->stat_disk_full, ctx->space.full);
    atomic_store(&ctx->stat_tele_next, w->tele_next);   /* before the append signal: see st_shard.c */
    atomic_store(&ctx->stat_fb_next, w->counters.feedback_next);
    zmsg_t *m;
    while ((m = zlist_pop(w->answers)))
        zmsg_send(&m, w->out);
    if (w->tele_appended) {
        zstr_send(w->out, "A");
        w->tele_appended = false;
    }
    /* Right after a start, pushes through a router that has not spoken yet would wait a whole
     * delivery lock: they wait until it has, or until resume_at. A session made since the start
     * came through a router that is there, so its deliveries go at once. */
    wdev_t *d;
    zlist_t *later = NULL;
    while ((d = zlist_pop(w->deliver))) {
        if (now < w->resume_at && !zhashx_lookup(w->routers_heard, d->sess.router)) {
            if (!later && !(later = zlist_new()))
                fatal_io("oom");
            zlist_append(later, d);
            continue;
        }
        deliver(w, d, now);
    }
    for (; later && (d = zlist_pop(later));)
        zlist_append(w->deliver, d);
    zlist_destroy(&later);
    if (rocksdb_writebatch_count(w->carry) > 0) {
        if (st_db_write(&ctx->db, w->carry, false) != SG_OK) {
            if (!st_space_room(&ctx->space, 0))
                fatal_full(w, "carry");
            fatal_io("carry");
        }
        rocksdb_writebatch_clear(w->carry);
    }
    dev_evict(w);
}

static sg_rc writer_init(writer_t *w, st_ctx_t *ctx)
{
    memset(w, 0, sizeof *w);
    w->ctx = ctx;
    w->in = zsock_new_pull(NULL);
    w->out = zsock_new_push(NULL);
    SG_ENSURE(w->in && w->out, SG_E_IO);
    zsock_set_rcvhwm(w->in, w->ctx->queue_limit);
    zsock_set_sndhwm(w->out, 0);
    SG_ENSURE(zsock_bind(w->in, "%s", ctx->ep_writer) == 0, SG_E_IO);
    SG_ENSURE(zsock_connect(w->out, "%s", ctx->ep_out) == 0, SG_E_IO);
    w->devs = zhashx_new();
    zhashx_set_destructor(w->devs, dev_free);
    w->finished = zhashx_new();
    w->peers = zhashx_new();
    zhashx_set_destructor(w->peers, wpeer_free);
    w->started_mono = sg_mono_ms();
    w->answers = zlist_new();
    w->deliver = zlist_new();
    w->reg_texts = zlist_new();
    w->routers_heard = zhashx_new();
    w->names = zhashx_new();
    zhashx_set_destructor(w->names, (zhashx_destructor_fn *)zstr_free);
    w->batch = rocksdb_writebatch_create();
    w->carry = rocksdb_writebatch_create();
    sg_wbuf_init(&w->scratch, SG_WIRE_MAX_FRAME);
    sg_wbuf_init(&w->scratch2, SG_WIRE_MAX_FRAME);
    char *val;
    size_t vlen;
    SG_GUARD(st_db_get(&ctx->db, NULL, ST_CF_DEFAULT, "shard", 5, &val, &vlen));
    if (val) {
        sg_rc rc = st_counters_get(val, vlen, &w->counters);
        rocksdb_free(val);
        SG_GUARD(rc);
    }
    /* Numbering goes on after the newest record, or after the oldest retained one when
     * retention dropped them all: an offset is never given twice. */
    w->tele_next = st_db_next_seq(&ctx->db, ST_CF_TELE);
    if (w->tele_next < atomic_load(&ctx->stat_tele_oldest))
        w->tele_next = atomic_load(&ctx->stat_tele_oldest);
    if (w->counters.feedback_next < atomic_load(&ctx->stat_fb_oldest))
        w->counters.feedback_next = atomic_load(&ctx->stat_fb_oldest);
    /* Sessions that were live when the shard stopped: load them, which restarts their deliveries
     * (what was in flight goes out again, DUP) even if the device stays silent. */
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(ctx->db.db, ctx->db.ro, ctx->db.cf[ST_CF_DEFAULT]);
    size_t resumed = 0;
    for (rocksdb_iter_seek(it, ST_LIVE_PREFIX, 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl < 2 || k[0] != ST_LIVE_PREFIX[0] || kl - 1 > SG_DEVICE_ID_MAX)
            break;
        if (!dev_get(w, k + 1, kl - 1))
            return SG_E_IO;
        resumed++;
    }
    rocksdb_iter_destroy(it);
    if (resumed)
        SG_INFO("store", "sessions.resumed", "shard=%s sessions=%zu", ctx->name, resumed);
    /* Routers probe every second; pushes sent before one has reconnected would wait a whole
     * delivery lock. */
    w->resume_at = sg_now_ms() + 2500;
    atomic_store(&ctx->stat_devices, w->counters.devices);
    atomic_store(&ctx->stat_tele_next, w->tele_next);
    atomic_store(&ctx->stat_fb_next, w->counters.feedback_next);
    return SG_OK;
}

static void writer_fini(writer_t *w)
{
    zmsg_t *m;
    while (w->answers && (m = zlist_pop(w->answers)))
        zmsg_destroy(&m);
    if (w->has_held)
        op_free(&w->held);
    zlist_destroy(&w->answers);
    zlist_destroy(&w->deliver);
    zlist_destroy(&w->reg_texts);
    zhashx_destroy(&w->routers_heard);
    zhashx_destroy(&w->names);
    zhashx_destroy(&w->devs);
    zhashx_destroy(&w->finished);
    zhashx_destroy(&w->peers);
    if (w->batch)
        rocksdb_writebatch_destroy(w->batch);
    if (w->carry)
        rocksdb_writebatch_destroy(w->carry);
    free(w->expired);
    sg_wbuf_fini(&w->scratch);
    sg_wbuf_fini(&w->scratch2);
    zsock_destroy(&w->in);
    zsock_destroy(&w->out);
}

void st_writer_actor(zsock_t *pipe, void *args)
{
    writer_t w;
    if (writer_init(&w, args) != SG_OK) {
        SG_ERROR("store", "writer.init_failed", "shard=%s", ((st_ctx_t *)args)->name);
        writer_fini(&w);
        zsock_signal(pipe, 1);
        return;
    }
    atomic_store(&w.ctx->writer_ready, true);
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, w.in, NULL);
    for (;;) {
        void *which = zpoller_wait(poller, 100);
        if (which == pipe) {
            char *cmd = zstr_recv(pipe);
            bool term = !cmd || streq(cmd, "$TERM");
            zstr_free(&cmd);
            if (term)
                break;
            continue;
        }
        if (zpoller_terminated(poller))
            break;
        op_t op;
        if (which == w.in && recv_op(&w, &op))
            cycle(&w, &op);
        else
            cycle(&w, NULL);   /* timer: expiry sweep and delayed work */
        while (w.has_held)
            cycle(&w, NULL);   /* an op that needed a batch of its own: before anything newer */
    }
    zpoller_destroy(&poller);
    writer_fini(&w);
}
