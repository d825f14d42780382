/* st_wahead.c — devices read ahead on the reader threads, so a cold device never stalls the
 * commit of others. A frame from a frontend (AUTH, above all: a reconnect storm after a restart
 * is made of them) for a device the writer has not cached does not read its three records on
 * the writer thread: the frame waits in a list of its own while a reader loads them with one
 * batched MultiGet, and the writer goes on committing everyone else. When the records come
 * back, the device goes into the cache and its waiting frames are applied in the order they
 * came; later frames for it queue behind them, so a device's frames keep their order.
 *
 * Why the records a reader sends are still current: only the writer writes, and it writes a
 * device only once it is cached; evictions happen after a commit. A device not cached when its
 * read is asked for therefore has nothing uncommitted, and if the writer loads it itself
 * meanwhile (an operator's request, the expiry sweep, an import), the read is marked stale and
 * the writer's own copy is used.
 *
 * Operator requests are never held back: they read inline (st_wdev.c) as before. */
#include <czmq.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sg_log.h"
#include "sg_time.h"
#include "st_writer_int.h"

/* ids in one request to a reader */
#define AHEAD_PER_MSG 128
/* A read not back after this long (a reader thread gone) is done on the writer. */
#define AHEAD_OVERDUE_MS 10000

/* found flags in a reader's answer */
enum { FOUND_REG = 1, FOUND_SESS = 2, FOUND_META = 4, FOUND_ERROR = 0x80 };

/* One device being read ahead, and the frames waiting for it. */
struct st_ahead {
    op_t *ops;
    size_t n, cap;
    int64_t asked_ms;
    bool stale;         /* the writer loaded the device itself meanwhile */
};

static void ahead_free(void **item)
{
    ahead_t *a = *item;
    if (!a)
        return;
    for (size_t i = 0; i < a->n; i++)
        stw_op_free(&a->ops[i]);
    free(a->ops);
    free(a);
    *item = NULL;
}

sg_rc stw_ahead_init(writer_t *w)
{
    w->pending = zhashx_new();   /* no destructor: release() takes an entry out before freeing it */
    SG_ENSURE(w->pending, SG_E_NOMEM);
    if (w->ctx->read_ahead == 0)
        return SG_OK;
    w->ahead = zsock_new_push(NULL);
    SG_ENSURE(w->ahead, SG_E_IO);
    zsock_set_sndhwm(w->ahead, 0);   /* bounded by store.read_ahead devices */
    SG_ENSURE(zsock_bind(w->ahead, "%s", w->ctx->ep_ahead) == 0, SG_E_IO);
    return SG_OK;
}

void stw_ahead_fini(writer_t *w)
{
    for (void *a = w->pending ? zhashx_first(w->pending) : NULL; a; a = zhashx_next(w->pending))
        ahead_free(&a);
    zhashx_destroy(&w->pending);
    for (size_t i = 0; i < w->n_asks; i++)
        free(w->asks[i]);
    free(w->asks);
    zsock_destroy(&w->ahead);
}

/* Frames a device's cold start may bring: everything a frontend sends about one device. */
static bool from_frontend(uint8_t type)
{
    switch (type) {
    case SG_MSG_AUTH:
    case SG_MSG_PSK:
    case SG_MSG_TELEMETRY:
    case SG_MSG_INQUIRY:
    case SG_MSG_SESSION_END:
    case SG_MSG_PEER_GONE:
    case SG_MSG_SUBSCRIBE:
    case SG_MSG_COMPLETE:
    case SG_MSG_METHOD_RES: return true;
    default: return false;
    }
}

bool stw_ahead_park(writer_t *w, op_t *op, const char *key)
{
    if (!w->ahead || !from_frontend(op->h.type))
        return false;
    ahead_t *a = zhashx_lookup(w->pending, key);
    if (!a) {
        if (zhashx_lookup(w->devs, key) || (int64_t)zhashx_size(w->pending) >= w->ctx->read_ahead)
            return false;   /* cached, or enough reads out: read on the writer */
        char *id = strdup(key);
        if (!id || !(a = calloc(1, sizeof *a)))
            stw_fatal_io("oom");
        a->asked_ms = sg_mono_ms();
        zhashx_insert(w->pending, key, a);
        if (w->n_asks == w->cap_asks)
            w->asks = stw_grow(w->asks, &w->cap_asks, sizeof *w->asks, 64);
        w->asks[w->n_asks++] = id;
    }
    if (a->n == a->cap)
        a->ops = stw_grow(a->ops, &a->cap, sizeof *a->ops, 4);
    stw_op_move(&a->ops[a->n++], op);   /* the caller's stw_op_free finds nothing to free */
    return true;
}

void stw_ahead_send(writer_t *w)
{
    for (size_t i = 0; i < w->n_asks;) {
        zmsg_t *m = zmsg_new();
        zmsg_addstr(m, "L");
        for (size_t k = 0; k < AHEAD_PER_MSG && i < w->n_asks; k++, i++) {
            zmsg_addstr(m, w->asks[i]);
            free(w->asks[i]);
        }
        if (zmsg_send(&m, w->ahead) != 0)
            stw_fatal_io("read-ahead-send");   /* inproc with no high-water mark: only at shutdown */
    }
    w->n_asks = 0;
}

void stw_ahead_touched(writer_t *w, const char *key)
{
    ahead_t *a = zhashx_lookup(w->pending, key);
    if (a)
        a->stale = true;
}

/* The device key is cached now: apply the frames that waited for it, in order. */
static int release(writer_t *w, const char *key, ahead_t *a, int64_t now)
{
    zhashx_delete(w->pending, key);   /* out of the table first: the frames must not wait again */
    int n = (int)a->n;
    for (size_t i = 0; i < a->n; i++)
        stw_take(w, &a->ops[i], now);
    void *p = a;
    ahead_free(&p);
    return n;
}

static bool frame_is(zframe_t *f, size_t len) { return f && zframe_size(f) == len; }

int stw_ahead_loaded(writer_t *w, zmsg_t *m, int64_t now)
{
    int applied = 0;
    char key[SG_DEVICE_ID_MAX + 1];
    for (zframe_t *id; (id = zmsg_pop(m));) {
        zframe_t *found = zmsg_pop(m), *rec[3];
        for (int k = 0; k < 3; k++)
            rec[k] = zmsg_pop(m);
        size_t idl = zframe_size(id);
        ahead_t *a = NULL;
        if (frame_is(found, 1) && rec[2] && idl > 0 && idl <= SG_DEVICE_ID_MAX) {
            memcpy(key, zframe_data(id), idl);
            key[idl] = 0;
            a = zhashx_lookup(w->pending, key);
        }
        if (a) {
            uint8_t f = zframe_data(found)[0];
            if (!zhashx_lookup(w->devs, key)) {
                if (a->stale || (f & FOUND_ERROR)) {
                    if (!stw_dev_get(w, key, idl))
                        stw_fatal_io("device-load");
                } else {
                    const char *v[3] = {NULL, NULL, NULL};
                    size_t vl[3] = {0, 0, 0};
                    for (int k = 0; k < 3; k++)
                        if (f & (1 << k)) {
                            v[k] = (const char *)zframe_data(rec[k]);
                            vl[k] = zframe_size(rec[k]);
                        }
                    stw_dev_install(w, key, idl, v, vl);
                    atomic_fetch_add(&w->ctx->stat_loads_ahead, 1);
                }
            }
            applied += release(w, key, a, now);
        }
        zframe_destroy(&id);
        zframe_destroy(&found);
        for (int k = 0; k < 3; k++)
            zframe_destroy(&rec[k]);
    }
    return applied;
}

int stw_ahead_overdue(writer_t *w, int64_t now)
{
    int64_t mono = sg_mono_ms();
    if (zhashx_size(w->pending) == 0 || mono - w->ahead_checked_ms < 1000)
        return 0;
    w->ahead_checked_ms = mono;
    zlist_t *late = zlist_new();
    for (ahead_t *a = zhashx_first(w->pending); a; a = zhashx_next(w->pending))
        if (mono - a->asked_ms > AHEAD_OVERDUE_MS + w->ctx->read_ahead_delay_ms)
            zlist_append(late, strdup(zhashx_cursor(w->pending)));
    int applied = 0;
    for (char *key; (key = zlist_pop(late)); free(key)) {
        ahead_t *a = zhashx_lookup(w->pending, key);
        SG_WARN("store", "read_ahead.overdue", "device=%s reason=\"no reader answered; read on the writer\"", key);
        if (!stw_dev_get(w, key, strlen(key)))
            stw_fatal_io("device-load");
        applied += release(w, key, a, now);
    }
    zlist_destroy(&late);
    return applied;
}

/* ---- the reader's half ---- */

typedef struct {
    zmsg_t *out;
    char **ids;
} serve_t;

static void answer_one(void *arg, size_t i, const char *const v[3], const size_t vl[3])
{
    serve_t *s = arg;
    uint8_t f = 0;
    zmsg_addstr(s->out, s->ids[i]);
    for (int k = 0; k < 3; k++)
        if (v[k])
            f |= (uint8_t)(1 << k);
    zmsg_addmem(s->out, &f, 1);
    for (int k = 0; k < 3; k++)
        zmsg_addmem(s->out, v[k] ? v[k] : "", v[k] ? vl[k] : 0);
}

static int id_order(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

void st_ahead_serve(st_ctx_t *c, zmsg_t *req, zsock_t *to_writer)
{
    char *tag = zmsg_popstr(req);
    bool ok = tag && streq(tag, "L");
    zstr_free(&tag);
    size_t n = ok ? zmsg_size(req) : 0;
    char **ids = calloc(n ? n : 1, sizeof *ids);
    size_t k = 0;
    for (char *id; ids && k < n && (id = zmsg_popstr(req));)
        ids[k++] = id;
    if (c->read_ahead_delay_ms > 0)
        usleep((useconds_t)(c->read_ahead_delay_ms * 1000));
    /* In key order: one pass over each table block (ids from the writer are not sorted). */
    if (k > 1)
        qsort(ids, k, sizeof *ids, id_order);
    serve_t s = {zmsg_new(), ids};
    zmsg_addstr(s.out, "L");
    if (k > 0 && st_db_dev_records(&c->db, (const char *const *)ids, k, true, answer_one, &s) != SG_OK) {
        /* the writer reads them itself */
        zmsg_destroy(&s.out);
        s.out = zmsg_new();
        zmsg_addstr(s.out, "L");
        uint8_t f = FOUND_ERROR;
        for (size_t i = 0; i < k; i++) {
            zmsg_addstr(s.out, ids[i]);
            zmsg_addmem(s.out, &f, 1);
            for (int r = 0; r < 3; r++)
                zmsg_addmem(s.out, "", 0);
        }
    }
    if (zmsg_size(s.out) > 1)
        zmsg_send(&s.out, to_writer);
    zmsg_destroy(&s.out);
    for (size_t i = 0; i < k; i++)
        free(ids[i]);
    free(ids);
}
