/* st_wdev.c — the writer's device cache: a device's registry entry, queue counters and session
 * loaded on first use and kept while it has a live session or deliveries in flight, its window
 * of deliveries, and the batch writes of its session and counters. */
#include <czmq.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "sg_log.h"
#include "sg_time.h"
#include "st_keys.h"
#include "st_writer_int.h"

/* The one copy of a frontend loop's or router's name (n bytes, no NUL needed). Names stay until
 * the writer stops: there are a few per frontend incarnation, however many sessions use them. */
const char *stw_intern(writer_t *w, const char *s, size_t n)
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
        stw_fatal_io("oom");
    return v;
}

static void sess_from_record(writer_t *w, wsess_t *out, const st_session_t *r)
{
    *out = (wsess_t){.epoch = r->epoch, .handle = r->handle, .since_ms = r->since_ms, .live = r->live,
                     .subscribed = r->subscribed, .sub_qos0 = r->sub_qos0, .methods = r->methods, .method = r->method,
                     .peer = stw_intern(w, r->peer, strlen(r->peer)), .router = stw_intern(w, r->router, strlen(r->router))};
}

void stw_sess_clear(writer_t *w, wsess_t *s)
{
    *s = (wsess_t){.peer = stw_intern(w, "", 0), .router = stw_intern(w, "", 0)};
}

/* d's session went live on d->sess.peer: into that loop's list. */
void stw_live_link(writer_t *w, wdev_t *d)
{
    wpeer_t *p = stw_wpeer_get(w, d->sess.peer);
    d->loop = p;
    d->loop_prev = NULL;
    d->loop_next = p->live;
    if (p->live)
        p->live->loop_prev = d;
    p->live = d;
    p->n_live++;
}

/* d's session ended: out of its loop's list (and its credit wait list). */
static void live_unlink(wdev_t *d)
{
    wpeer_t *p = d->loop;
    if (!p)
        return;
    if (d->credit_wait) {
        for (size_t i = 0; i < p->n_wait; i++)
            if (p->wait[i] == d) {
                p->wait[i] = p->wait[--p->n_wait];
                break;
            }
        d->credit_wait = false;
    }
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

void stw_dev_free(void **item)
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

/* Queue counters that do not decode are rebuilt from the device's records (st_db_queue_rebuild
 * says why) and stored again with the next commit. A record that is missing is not rebuilt:
 * every enqueue writes it, and looking for queued messages of each device without counters would
 * cost a seek on every load. */
static void put_dev_key(writer_t *w, wdev_t *d, char kind, const sg_wbuf_t *val);

static void meta_rebuild(writer_t *w, wdev_t *d, size_t meta_len)
{
    st_qmeta_t m = {0};
    if (st_db_queue_rebuild(&w->ctx->db, NULL, d->id, d->id_len, &m.next_seq, &m.count, &m.bytes) != SG_OK)
        stw_fatal_io("device-load");
    d->meta = m;
    SG_ERROR("store", "queue.meta_damaged", "device=%s bytes=%zu action=rebuilt queued=%u queuedBytes=%llu next=%llu",
             d->id, meta_len, m.count, (unsigned long long)m.bytes, (unsigned long long)m.next_seq);
    /* its own buffer: a load can come in the middle of an operation that is using w->scratch */
    sg_wbuf_t buf;
    sg_wbuf_init(&buf, 64);
    if (st_qmeta_put(&buf, &m) != SG_OK)
        stw_fatal_io("meta-encode");
    put_dev_key(w, d, ST_K_META, &buf);
    sg_wbuf_fini(&buf);
}

/* d's state from its stored records (NULL where there is none): registry entry, session, queue
 * counters. A session found live is linked to its loop and gets its deliveries started. */
static void dev_fill(writer_t *w, wdev_t *d, const char *reg, size_t reg_len, const char *sess, size_t sess_len,
                     const char *meta, size_t meta_len)
{
    if (reg) {
        sg_rc rc = st_reg_parse(reg, reg_len, &d->reg);
        if (rc != SG_OK)
            SG_ERROR("store", "registry.damaged", "device=%.*s", (int)d->id_len, d->id);
        d->exists = rc == SG_OK;
        /* Kept until the commit: a registry put (an update, say) needs the entry again. */
        if (d->exists && (d->reg_text = strndup(reg, reg_len)))
            zlist_append(w->reg_texts, d);
    }
    /* Sessions are stored only for registered devices (a delete removes both). */
    st_session_t rec;
    if (reg && sess && st_session_get(sess, sess_len, &rec) == SG_OK)
        sess_from_record(w, &d->sess, &rec);
    if (meta && st_qmeta_get(meta, meta_len, &d->meta) != SG_OK)
        meta_rebuild(w, d, meta_len);
    if (d->sess.live) {
        stw_live_link(w, d);
        w->sessions++;   /* counted while cached; see dev_evict */
        /* A session that outlived a restart of this shard: its window is empty here, so start
         * delivering again (what it already got comes again, marked DUP). */
        stw_want_delivery(w, d);
    }
}

typedef struct {
    writer_t *w;
    wdev_t *d;
} dev_load_t;

static void dev_load_each(void *arg, size_t i, const char *const v[3], const size_t vl[3])
{
    const dev_load_t *l = arg;
    (void)i;
    /* sessions are stored only for registered devices: none is taken without its entry */
    dev_fill(l->w, l->d, v[0], vl[0], v[0] ? v[1] : NULL, v[0] ? vl[1] : 0, v[2], vl[2]);
}

/* The writer's own load (read-ahead did not have the device): its three adjacent keys in one
 * batched MultiGet, cheaper than three point reads (bench/dev_records_bench: 5.5 against 6.4 us
 * a device with the blocks cached). */
static sg_rc dev_load(writer_t *w, wdev_t *d)
{
    const char *ids[1] = {d->id};
    dev_load_t l = {w, d};
    return st_db_dev_records(&w->ctx->db, ids, 1, true, dev_load_each, &l);
}

static wdev_t *dev_new(writer_t *w, const char *id, size_t id_len)
{
    wdev_t *d = calloc(1, sizeof *d);
    if (!d || !(d->id = strndup(id, id_len))) {
        free(d);
        return NULL;
    }
    d->id_len = id_len;
    stw_sess_clear(w, &d->sess);
    return d;
}

/* The cached state of device id, loaded on first use; NULL only on storage errors. */
wdev_t *stw_dev_get(writer_t *w, const char *id, size_t id_len)
{
    char key[SG_DEVICE_ID_MAX + 1];
    memcpy(key, id, id_len);
    key[id_len] = 0;
    wdev_t *d = zhashx_lookup(w->devs, key);
    if (d)
        return d;
    if (!(d = dev_new(w, id, id_len)))
        return NULL;
    stw_ahead_touched(w, key);
    atomic_fetch_add(&w->ctx->stat_loads_inline, 1);
    if (dev_load(w, d) != SG_OK) {
        void *p = d;
        stw_dev_free(&p);
        return NULL;
    }
    zhashx_insert(w->devs, key, d);
    return d;
}

/* A device's state from its records as st_db_dev_records gives them, into the cache. */
wdev_t *stw_dev_install(writer_t *w, const char *id, size_t id_len, const char *const v[3], const size_t vl[3])
{
    char key[SG_DEVICE_ID_MAX + 1];
    memcpy(key, id, id_len);
    key[id_len] = 0;
    wdev_t *d = dev_new(w, id, id_len);
    if (!d)
        stw_fatal_io("oom");
    dev_fill(w, d, v[0], vl[0], v[1], vl[1], v[2], vl[2]);
    zhashx_insert(w->devs, key, d);
    return d;
}

typedef struct {
    writer_t *w;
    char *const *ids;
} load_t;

static void load_one(void *arg, size_t i, const char *const v[3], const size_t vl[3])
{
    load_t *l = arg;
    if (!zhashx_lookup(l->w->devs, l->ids[i]))
        stw_dev_install(l->w, l->ids[i], strlen(l->ids[i]), v, vl);
}

sg_rc stw_dev_load_sorted(writer_t *w, char *const *ids, size_t n)
{
    load_t l = {w, ids};
    return st_db_dev_records(&w->ctx->db, (const char *const *)ids, n, true, load_one, &l);
}

wdev_t *st_writer_dev(writer_t *w, const char *id, size_t len)
{
    wdev_t *d = stw_dev_get(w, id, len);
    if (!d)
        stw_fatal_io("device-load");
    return d;
}

bool st_wdev_exists(const wdev_t *d) { return d->exists; }

const st_ctx_t *st_writer_ctx(const writer_t *w) { return w->ctx; }

/* Keep the cache bounded: drop entries without a live session or deliveries in flight. Live
 * sessions stay cached and do not count against store.cache_devices (else a shard holding more
 * sessions than that would walk its whole cache after every batch, finding nothing to drop). */
void stw_dev_evict(writer_t *w)
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

static void put_dev_key(writer_t *w, wdev_t *d, char kind, const sg_wbuf_t *val)
{
    char key[ST_KEY_MAX];
    size_t klen = st_key_dev(key, d->id, d->id_len, kind);
    rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEV], key, klen, (const char *)val->data, val->len);
}

void stw_save_session(writer_t *w, wdev_t *d)
{
    st_session_t rec = {.epoch = d->sess.epoch, .live = d->sess.live, .subscribed = d->sess.subscribed,
                        .sub_qos0 = d->sess.sub_qos0, .methods = d->sess.methods, .method = d->sess.method, .handle = d->sess.handle,
                        .since_ms = d->sess.since_ms};
    snprintf(rec.peer, sizeof rec.peer, "%s", d->sess.peer);
    snprintf(rec.router, sizeof rec.router, "%s", d->sess.router);
    sg_wbuf_reset(&w->scratch);
    if (st_session_put(&w->scratch, &rec) != SG_OK)
        stw_fatal_io("session-encode");
    put_dev_key(w, d, ST_K_SESSION, &w->scratch);
    /* The index of live sessions lets a restarted shard find them without scanning every key. */
    char key[ST_KEY_MAX];
    size_t klen = st_key_live(key, d->id, d->id_len);
    if (d->sess.live)
        rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, klen, "", 0);
    else
        rocksdb_writebatch_delete_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, klen);
}

void stw_save_meta(writer_t *w, wdev_t *d)
{
    sg_wbuf_reset(&w->scratch);
    if (st_qmeta_put(&w->scratch, &d->meta) != SG_OK)
        stw_fatal_io("meta-encode");
    put_dev_key(w, d, ST_K_META, &w->scratch);
}

void stw_busy_add(writer_t *w, wdev_t *d)
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

void stw_busy_del(writer_t *w, wdev_t *d)
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

void stw_flight_done(writer_t *w, const flight_t *f)
{
    wpeer_t *p = f->loop;
    if (!p)
        return;
    bool was_spent = p->out_bytes >= w->ctx->credit;
    p->out_bytes = p->out_bytes >= f->bytes ? p->out_bytes - f->bytes : 0;
    if (!was_spent || p->out_bytes >= w->ctx->credit || p->n_wait == 0)
        return;
    /* Credit is back: every waiting session tries again after this commit (stw_deliver puts
     * back in the list those that find it spent again). */
    size_t n = p->n_wait;
    p->n_wait = 0;
    for (size_t i = 0; i < n; i++) {
        p->wait[i]->credit_wait = false;
        stw_want_delivery(w, p->wait[i]);
    }
}

void stw_credit_wait(writer_t *w, wdev_t *d)
{
    wpeer_t *p = d->loop;
    if (d->credit_wait || !p)
        return;
    if (p->n_wait == p->cap_wait)
        p->wait = stw_grow(p->wait, &p->cap_wait, sizeof *p->wait, 16);
    p->wait[p->n_wait++] = d;
    d->credit_wait = true;
    atomic_fetch_add(&w->ctx->stat_credit_waits, 1);
}

/* Forget every delivery in flight: they are handed out again from the head of the queue. */
void stw_inflight_clear(writer_t *w, wdev_t *d)
{
    for (uint16_t i = 0; i < d->n_inflight; i++)
        stw_flight_done(w, &d->inflight[i]);
    d->n_inflight = 0;
    d->next_deliver = 0;
    stw_busy_del(w, d);
}

bool stw_inflight_has(const wdev_t *d, uint64_t seq)
{
    for (uint16_t i = 0; i < d->n_inflight; i++)
        if (d->inflight[i].seq == seq)
            return true;
    return false;
}

bool stw_inflight_remove(writer_t *w, wdev_t *d, uint64_t seq)
{
    for (uint16_t i = 0; i < d->n_inflight; i++)
        if (d->inflight[i].seq == seq) {
            stw_flight_done(w, &d->inflight[i]);
            d->inflight[i] = d->inflight[--d->n_inflight];
            if (d->n_inflight == 0)
                stw_busy_del(w, d);
            return true;
        }
    return false;
}

/* The session ended (closed, taken over, revoked): deliveries in flight go back to the queue
 * head with their delivery counts kept. */
void stw_session_end(writer_t *w, wdev_t *d)
{
    if (d->sess.live && w->sessions > 0)
        w->sessions--;
    live_unlink(d);
    d->sess.live = false;   /* `subscribed` stays: a non-clean session resumes with it */
    stw_inflight_clear(w, d);
    stw_save_session(w, d);
}

void stw_want_delivery(writer_t *w, wdev_t *d)
{
    if (!d->deliver_queued && d->sess.live && d->sess.subscribed) {
        d->deliver_queued = true;
        zlist_append(w->deliver, d);
    }
}
