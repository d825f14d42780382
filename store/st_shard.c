/* st_shard.c — a shard's net actor: owns the ROUTER socket that routers connect to, answers
 * liveness probes itself, sends writes to the writer and reads to the readers, parks long-poll
 * telemetry and feedback reads until data arrives or their wait ends, and sends every answer and
 * push back out through the router it came from (or any live router for pushes after a restart).
 * Defence in depth behind the routers' own check: the ZAP handler admits only routers' keys here,
 * and every frame (every item of a BATCH) must be one a router may send (sg_role.c). */
#include "st_shard.h"
#include <pthread.h>
#include <czmq.h>
#include <errno.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "sg_frame.h"
#include "sg_log.h"
#include "sg_curve.h"
#include "sg_role.h"
#include "sg_time.h"
#include "sg_wire.h"
#include "st_internal.h"
#include "sg_zmq.h"

struct st_shard {
    zactor_t *actor;
    st_ctx_t *ctx;
    char endpoint[256];
    bool ready;      /* set by the actor before its start-up signal */
};

typedef struct {
    zmsg_t *msg;        /* [router][peer][frame][deadline] ready for a reader */
    int64_t deadline;
    uint64_t need[2];   /* runs again once the next telemetry offset / feedback sequence reaches
                           these (0: not that log; both 0: at any append) */
} parked_t;

typedef struct {
    st_ctx_t *ctx;
    st_shard_t *shard;
    const char *bind;
    zsock_t *router;    /* ROUTER: routers connect here */
    zsock_t *to_writer, *to_readers, *from_workers;
    zactor_t *writer;
    zactor_t **readers;
    zactor_t *retainer;
    zlistx_t *routers;  /* identities of routers that said HELLO (strings) */
    zhashx_t *links;    /* router identity -> rlink_t: what this pass sends it */
    zlist_t *dirty;     /* rlink_t with frames in their batch (flush_links) */
    zlist_t *parked;    /* parked_t* */
    zlist_t *held;      /* zmsg_t*: frames waiting for room in the writer's queue, in order */
    size_t held_bytes;
    int64_t forbidden_logged;   /* when a refused frame was last logged */
} net_t;

/* What goes back to one router: answers and pushes of a pass in one BATCH when it takes them. */
typedef struct {
    char name[SG_WIRE_MAX_PEER + 1];
    bool batches;       /* its PINGs say it takes BATCH frames */
    bool queued;        /* in net_t.dirty */
    bool gone;          /* a send found it disconnected: out of net_t.routers until it speaks */
    sg_wire_batch_t out;
} rlink_t;

static void rlink_free(void **item)
{
    rlink_t *l = *item;
    if (l) {
        sg_wire_batch_fini(&l->out);
        free(l);
    }
    *item = NULL;
}

/* Messages taken from one socket per wake before the other gets its turn. */
#define NET_DRAIN_MAX 256

static rlink_t *rlink_find(net_t *n, const void *id, size_t len)
{
    return sg_zmq_lookup_id(n->links, id, len, SG_WIRE_MAX_PEER);
}

/* A router spoke: it is there (for pushes after a restart, see send_out). */
static rlink_t *router_seen(net_t *n, zframe_t *id)
{
    rlink_t *l = rlink_find(n, zframe_data(id), zframe_size(id));
    if ((l && !l->gone) || zframe_size(id) == 0 || zframe_size(id) > SG_WIRE_MAX_PEER)
        return l;
    char *s = zframe_strdup(id);
    if (!zlistx_find(n->routers, s))
        zlistx_add_end(n->routers, s);
    if (l) {
        l->gone = false;
    } else if ((l = calloc(1, sizeof *l))) {   /* kept while the shard runs: routers are few */
        snprintf(l->name, sizeof l->name, "%s", s);
        sg_wire_batch_init(&l->out);
        zhashx_insert(n->links, s, l);
    }
    free(s);
    return l;
}

/* [router][peer][frame] out through the ROUTER socket, never blocking. */
static void send_frame(net_t *n, zframe_t *rid, zframe_t *peer, const sg_wbuf_t *w)
{
    zmsg_t *m = zmsg_new();
    zmsg_append(m, &(zframe_t *){zframe_dup(rid)});
    zmsg_append(m, &(zframe_t *){zframe_dup(peer)});
    zmsg_addmem(m, w->data, w->len);
    if (sg_zmq_send_nowait(n->router, &m) != 0) {
        atomic_fetch_add(&n->ctx->stat_dropped, 1);
        SG_WARN("store", "net.answer_lost", "reason=\"%s\"", zmq_strerror(errno));
        zmsg_destroy(&m);
    }
}

static void pong(net_t *n, zframe_t *rid, zframe_t *peer, const sg_wire_hdr_t *in)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 256);
    if (sg_frame_shard_pong(&w, in, n->ctx->name, n->ctx->incarnation) == SG_OK)
        send_frame(n, rid, peer, &w);
    sg_wbuf_fini(&w);
}

/* Tell the sender its frame was not taken (the writer or readers are behind): a device sees
 * CONNACK 3 or a closed connection, an operator 503; nothing accepted is lost. */
static void refuse_busy(net_t *n, zframe_t *rid, zframe_t *peer, const sg_wire_hdr_t *in)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 512);
    if (sg_wire_put_error(&w, in, SG_WIRE_ERR_BUSY) == SG_OK)
        send_frame(n, rid, peer, &w);
    sg_wbuf_fini(&w);
}

/* Frames the sender can be told to retry: a device gets CONNACK 3 or sends its publish again
 * later, an operator 503. The rest (session ends, completions, frontend reboots and heartbeats)
 * cannot be answered usefully, so they are always held. */
static bool refusable(uint8_t type)
{
    return type == SG_MSG_TELEMETRY || type == SG_MSG_AUTH || type == SG_MSG_PSK || type == SG_MSG_ADMIN ||
           type == SG_MSG_SUBSCRIBE;
}

static size_t msg_bytes(zmsg_t *m)
{
    return zmsg_content_size(m) + 64 * zmsg_size(m);   /* with the frames' own bookkeeping */
}

/* Send held frames while the writer's queue has room. */
static void flush_held(net_t *n)
{
    zmsg_t *m;
    while ((m = zlist_first(n->held))) {
        size_t bytes = msg_bytes(m);
        if (sg_zmq_send_nowait(n->to_writer, &m) != 0)
            break;
        zlist_pop(n->held);
        n->held_bytes -= bytes;
    }
    atomic_store(&n->ctx->stat_held_bytes, n->held_bytes);
}

/* Hand m to a worker queue without blocking. When the writer's queue is full, frames wait here in
 * order: what the frontends may have on the way is bounded by their credit (cluster.credit), so
 * this holds at most about frontend loops x credit. Only past store.hold_bytes (credit set larger
 * than the shard was sized for, or frontends that do not keep it) are device and operator frames
 * refused with BUSY (sent again later, or 503). The readers' queue refuses at once (reads are
 * operators', who get 503). */
static void to_worker(net_t *n, zsock_t *q, zmsg_t **m, const sg_wire_hdr_t *h)
{
    if (q == n->to_writer && zlist_size(n->held) > 0)
        flush_held(n);
    if (!(q == n->to_writer && zlist_size(n->held) > 0) && sg_zmq_send_nowait(q, m) == 0)
        return;
    size_t bytes = msg_bytes(*m);
    if (q == n->to_writer && (!refusable(h->type) || n->held_bytes + bytes <= n->ctx->hold_bytes)) {
        zlist_append(n->held, *m);
        *m = NULL;
        n->held_bytes += bytes;
        atomic_store(&n->ctx->stat_held_bytes, n->held_bytes);
        return;
    }
    zframe_t *rid = zmsg_first(*m), *peer = zmsg_next(*m);
    atomic_fetch_add(&n->ctx->stat_busy, 1);
    refuse_busy(n, rid, peer, h);
    zmsg_destroy(m);
}

/* What a walk over a batch's items needs (sg_wire_batch_each). */
typedef struct {
    net_t *n;
    zframe_t *rid;          /* the router it came from */
    const char *via;        /* the router to send through ("": any) */
    sg_role_t role;         /* the sender's role */
} walk_t;

static void on_router(net_t *n, zmsg_t *m, sg_role_t role);

/* Each item of a router's BATCH as if it had come alone: [router][its peer][its frame]. */
static void router_item(void *ctx, const uint8_t *peer, size_t peer_len, const uint8_t *f, size_t len)
{
    walk_t *k = ctx;
    zmsg_t *one = zmsg_new();
    zmsg_addmem(one, zframe_data(k->rid), zframe_size(k->rid));
    zmsg_addmem(one, peer, peer_len);
    zmsg_addmem(one, f, len);
    on_router(k->n, one, k->role);
}

/* A frame the sender's role may not send here: ERROR FORBIDDEN, logged at most once a second. */
static void forbid(net_t *n, zframe_t *rid, zframe_t *peer, sg_role_t role, const sg_wire_hdr_t *h)
{
    int64_t now = sg_mono_ms();
    if (now - n->forbidden_logged >= 1000) {
        SG_WARN("store", "net.forbidden", "shard=%s role=%s type=%s reason=\"only a router's key may send frames here, "
                "and only those a router relays\"", n->ctx->name, sg_role_name(role), sg_wire_type_name(h->type));
        n->forbidden_logged = now;
    }
    sg_wbuf_t w;
    sg_wbuf_init(&w, 512);
    if (sg_wire_put_error(&w, h, SG_WIRE_ERR_FORBIDDEN) == SG_OK)
        send_frame(n, rid, peer, &w);
    sg_wbuf_fini(&w);
}

/* Whether a frame from a router (with a peer of peer_len bytes) is one for the writer: not one
 * net answers or drops itself (PING, BATCH, a router's own HELLO), nor an operator's read (the
 * readers'). */
static bool for_writer(const sg_wire_hdr_t *h, size_t peer_len)
{
    uint16_t op;
    const char *json;
    size_t len;
    switch (h->type) {
    case SG_MSG_PING:
    case SG_MSG_BATCH: return false;
    case SG_MSG_HELLO: return h->device_len != 0 || peer_len != 0;   /* a frontend's, not a router announcing itself */
    case SG_MSG_ADMIN: return sg_wire_get_admin(h, &op, &json, &len) != SG_OK || sg_adm_op_writes(op);
    default: return true;
    }
}

/* Bytes of routers' BATCHes passed to the writer whole and not yet read by it, at most (and at
 * most store.hold_bytes): past it their items go one by one again, where the queue's high-water
 * mark and store.hold_bytes bound them. */
#define WRITER_BATCH_BYTES (64u * 1024u * 1024u)

/* A router's BATCH (in m: [router][peer][BATCH]) whose every item is for the writer and allowed
 * from this role goes to it whole, as [B][router][peer][BATCH]: one message on the inproc queue
 * instead of one per item, whose frames it reads in place (st_writer.c, recv_op): no message,
 * frames and list nodes allocated, copied and freed per operation on each side (net and the writer
 * used 38% less CPU for 400,000 telemetry messages). false: m is untouched and its items go one
 * by one (some are not the writer's, or the writer is behind). */
static bool batch_to_writer(net_t *n, zmsg_t **m, const sg_wire_hdr_t *h, sg_role_t role)
{
    sg_cur_t c;
    const uint8_t *peer, *f;
    size_t peer_len, len;
    sg_rc rc;
    sg_wire_batch_begin(h, &c);
    while ((rc = sg_wire_batch_next(&c, &peer, &peer_len, &f, &len)) == SG_OK) {
        sg_wire_hdr_t ih;
        if (sg_wire_decode(f, len, &ih) != SG_OK || !sg_role_may_send(role, ih.type) || !for_writer(&ih, peer_len))
            return false;
    }
    if (rc != SG_E_AGAIN)
        return false;
    if (zlist_size(n->held) > 0)
        flush_held(n);
    uint64_t bytes = zframe_size(zmsg_last(*m)), most = n->ctx->hold_bytes;
    if (most > WRITER_BATCH_BYTES)
        most = WRITER_BATCH_BYTES;
    if (zlist_size(n->held) > 0 || atomic_load(&n->ctx->writer_batch_bytes) + bytes > most)
        return false;
    atomic_fetch_add(&n->ctx->writer_batch_bytes, bytes);
    if (zmsg_pushstr(*m, "B") == 0 && sg_zmq_send_nowait(n->to_writer, m) == 0)
        return true;
    atomic_fetch_sub(&n->ctx->writer_batch_bytes, bytes);
    if (zmsg_size(*m) == 4) {
        zframe_t *tag = zmsg_pop(*m);
        zframe_destroy(&tag);
    }
    return false;
}

/* A log read that can only wait is parked here at once: a read with a wait, past the end of its
 * log (fewer than its `min` records after `after`). Sent to a reader, it would find nothing and
 * come back to be parked. A back-end that reads as fast as it can sends such a read after every
 * answer, one a group commit, and that round trip cost two of the 18 thread wake-ups a commit
 * makes at one device. A consumer group's read goes to a reader: its position is in the database.
 * m ([router][peer][frame]) is taken when it parks. */
static bool park_at_once(net_t *n, zmsg_t **m, const sg_wire_hdr_t *h)
{
    uint16_t aop;
    const char *json;
    size_t len;
    if (sg_wire_get_admin(h, &aop, &json, &len) != SG_OK || aop != SG_ADM_TELEMETRY_READ || len == 0)
        return false;
    json_t *q = json_loadb(json, len, 0, NULL);
    st_logq_t lq;
    uint64_t need[2];
    bool parks = false;
    if (q && st_logq_parse(q, &lq) && !lq.group && lq.wait_ms > 0) {
        uint64_t oldest;   /* from where the reader would read */
        parks = st_logq_short(n->ctx, &lq, st_logq_from(n->ctx, &lq, lq.after, &oldest), need);
    }
    json_decref(q);
    parked_t *p = parks ? calloc(1, sizeof *p) : NULL;
    if (!p)
        return false;
    p->deadline = sg_mono_ms() + lq.wait_ms;
    uint64_t deadline = (uint64_t)p->deadline;
    memcpy(p->need, need, sizeof need);
    zmsg_addmem(*m, &deadline, sizeof deadline);   /* as a reader's read that found too few */
    p->msg = *m;
    *m = NULL;
    zlist_append(n->parked, p);
    atomic_fetch_add(&n->ctx->stat_parked_at_once, 1);
    return true;
}

/* [router][peer][frame] from the ROUTER socket, sent by a peer of this role. */
static void on_router(net_t *n, zmsg_t *m, sg_role_t role)
{
    if (zmsg_size(m) != 3) {
        SG_WARN("store", "net.bad_envelope", "frames=%zu", zmsg_size(m));
        zmsg_destroy(&m);
        return;
    }
    zframe_t *rid = zmsg_first(m);
    zframe_t *peer = zmsg_next(m);
    zframe_t *frame = zmsg_next(m);
    sg_wire_hdr_t h;
    if (sg_wire_decode(zframe_data(frame), zframe_size(frame), &h) != SG_OK) {
        SG_WARN("store", "net.malformed_frame", "bytes=%zu", zframe_size(frame));
        zmsg_destroy(&m);
        return;
    }
    if (!sg_role_may_send(role, h.type)) {
        forbid(n, rid, peer, role, &h);
        zmsg_destroy(&m);
        return;
    }
    rlink_t *link = router_seen(n, rid);
    switch (h.type) {
    case SG_MSG_PING:
        if (link)
            link->batches = (h.flags & SG_WIRE_F_BATCH) != 0;
        pong(n, rid, peer, &h);
        zmsg_destroy(&m);
        return;
    case SG_MSG_BATCH: {
        if (batch_to_writer(n, &m, &h, role))
            return;
        walk_t k = {.n = n, .rid = rid, .role = role};
        if (sg_wire_batch_each(&h, router_item, &k) != SG_OK)
            SG_WARN("store", "net.malformed_frame", "bytes=%zu reason=\"a damaged batch\"", zframe_size(frame));
        zmsg_destroy(&m);
        return;
    }
    case SG_MSG_HELLO:
        if (!for_writer(&h, zframe_size(peer))) {   /* a router announcing itself */
            zmsg_destroy(&m);
            return;
        }
        break;   /* a frontend's HELLO goes to the writer */
    case SG_MSG_ADMIN:
        if (!for_writer(&h, zframe_size(peer))) {   /* a read */
            if (park_at_once(n, &m, &h))
                return;
            uint64_t none = 0;
            zmsg_addmem(m, &none, sizeof none);
            to_worker(n, n->to_readers, &m, &h);
            return;
        }
        break;
    default:
        break;
    }
    to_worker(n, n->to_writer, &m, &h);
}

/* [router][peer][frame] on the ROUTER socket; 0, or errno. */
static int send_via(net_t *n, const void *router, size_t rlen, const void *peer, size_t peer_len, const void *frame,
                    size_t len)
{
    void *raw = zsock_resolve(n->router);
    if (zmq_send(raw, router, rlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return errno;
    /* queued: the other parts cannot be refused for the high-water mark */
    zmq_send(raw, peer, peer_len, ZMQ_SNDMORE);
    zmq_send(raw, frame, len, 0);
    return 0;
}

/* Send [peer][frame] through the named router now; when it is gone (or unnamed: a session loaded
 * from disk after a restart), through any other connected router. Routers that are gone are
 * forgotten until they speak again. */
static void send_now(net_t *n, const void *rid, size_t rid_len, const void *peer, size_t peer_len, const void *frame,
                     size_t len)
{
    int err = EHOSTUNREACH;
    if (rid_len > 0) {
        err = send_via(n, rid, rid_len, peer, peer_len, frame, len);
        if (err == EHOSTUNREACH) {
            char *gone = strndup(rid, rid_len);
            void *h = gone ? zlistx_find(n->routers, gone) : NULL;
            if (h)
                zlistx_delete(n->routers, h);
            rlink_t *l = rlink_find(n, rid, rid_len);
            if (l)
                l->gone = true;
            free(gone);
        }
    }
    while (err == EHOSTUNREACH) {
        const char *any = zlistx_first(n->routers);
        if (!any)
            break;
        err = send_via(n, any, strlen(any), peer, peer_len, frame, len);
        if (err == EHOSTUNREACH)
            zlistx_delete(n->routers, zlistx_cursor(n->routers));
    }
    if (err) {
        atomic_fetch_add(&n->ctx->stat_dropped, 1);
        SG_WARN("store", "net.unroutable", "reason=\"%s\"", err == EHOSTUNREACH ? "no router connected" : zmq_strerror(err));
    }
}

/* One frame of a batch that cannot go whole, sent alone (send_now). */
static void item_out(void *ctx, const uint8_t *peer, size_t peer_len, const uint8_t *f, size_t len)
{
    walk_t *k = ctx;
    send_now(k->n, k->via, strlen(k->via), peer, peer_len, f, len);
}

/* Send what this pass put in l's batch: one BATCH, or the frame alone. A router that is gone
 * gets its frames sent one by one through the others (send_now). */
static void flush_link(net_t *n, rlink_t *l)
{
    if (l->out.n == 0)
        return;
    const uint8_t *f, *peer;
    size_t len, peer_len, rlen = strlen(l->name);
    sg_wire_batch_out(&l->out, &f, &len, &peer, &peer_len);
    int err = l->out.n == 1 ? -1 : send_via(n, l->name, rlen, "", 0, f, len);
    if (err == -1) {
        send_now(n, l->name, rlen, peer, peer_len, f, len);
    } else if (err && err != EHOSTUNREACH) {
        atomic_fetch_add(&n->ctx->stat_dropped, l->out.n);
        SG_WARN("store", "net.unroutable", "frames=%u reason=\"%s\"", l->out.n, zmq_strerror(err));
    } else if (err) {
        l->gone = err == EHOSTUNREACH;
        void *at = zlistx_find(n->routers, l->name);
        if (at && l->gone)
            zlistx_delete(n->routers, at);
        walk_t k = {.n = n, .via = ""};
        (void)!sg_wire_batch_each_frame(l->out.w.data, l->out.w.len, item_out, &k);
    }
    sg_wire_batch_clear(&l->out);
}

/* [peer][frame] back out through router rid: into its batch when it takes batches (sent at the
 * end of the pass by flush_links), else at once. */
static void send_out(net_t *n, zframe_t *rid, zframe_t *peer, zframe_t *frame)
{
    rlink_t *l = rlink_find(n, zframe_data(rid), zframe_size(rid));
    if (l && l->batches && sg_wire_batchable(zframe_size(peer), zframe_size(frame))) {
        if (!sg_wire_batch_fits(&l->out, zframe_size(peer), zframe_size(frame)))
            flush_link(n, l);
        if (sg_wire_batch_add(&l->out, zframe_data(peer), zframe_size(peer), zframe_data(frame), zframe_size(frame)) ==
            SG_OK) {
            if (!l->queued)
                zlist_append(n->dirty, l);
            l->queued = true;
            return;
        }
    }
    if (l)
        flush_link(n, l);   /* what waits in its batch is older */
    send_now(n, zframe_data(rid), zframe_size(rid), zframe_data(peer), zframe_size(peer), zframe_data(frame),
             zframe_size(frame));
}

static void flush_links(net_t *n)
{
    rlink_t *l;
    while ((l = zlist_pop(n->dirty))) {
        l->queued = false;
        flush_link(n, l);
    }
}

/* How long the net actor may sleep: until the first parked read's deadline (a read may wait
 * for milliseconds), at most 1 s. One already due waits for room in the readers' queue: it is
 * tried again every PARKED_RETRY_MS, not in a spin. */
#define PARKED_RETRY_MS 5
static int parked_wait(net_t *n)
{
    int64_t now = sg_mono_ms(), wait = 1000;
    for (parked_t *p = zlist_first(n->parked); p; p = zlist_next(n->parked))
        if (p->deadline - now < wait)
            wait = p->deadline - now;
    return wait > 0 ? (int)wait : PARKED_RETRY_MS;
}

/* Whether a parked read's log has what it waits for (a read that asks for `min` records waits
 * for that many, not for every append). */
static bool need_met(const net_t *n, const uint64_t need[2])
{
    return (need[0] == 0 && need[1] == 0) || (need[0] && atomic_load(&n->ctx->stat_tele_next) >= need[0]) ||
           (need[1] && atomic_load(&n->ctx->stat_fb_next) >= need[1]);
}

/* Runs the parked reads that are due (their deadline passed) and, after an append
 * (appended true), those whose log has what they wait for. */
static void wake_parked(net_t *n, bool appended)
{
    int64_t now = sg_mono_ms();
    parked_t *p = zlist_first(n->parked);
    while (p) {
        parked_t *next = zlist_next(n->parked);
        /* a full reader queue keeps it parked until the next round */
        if ((p->deadline <= now || (appended && need_met(n, p->need))) && sg_zmq_send_nowait(n->to_readers, &p->msg) == 0) {
            zlist_remove(n->parked, p);
            free(p);
        }
        p = next;
    }
}

/* The writer's frames for one router, gathered into a BATCH: on whole to a router that takes
 * batches, else (or when it is gone) one by one. */
static void send_batch(net_t *n, zframe_t *rid, zframe_t *batch)
{
    rlink_t *l = rlink_find(n, zframe_data(rid), zframe_size(rid));
    if (l)
        flush_link(n, l);   /* what waits for it is older */
    int err = l && l->batches && !l->gone ? send_via(n, l->name, strlen(l->name), "", 0, zframe_data(batch),
                                                     zframe_size(batch))
                                          : EHOSTUNREACH;
    if (err && err != EHOSTUNREACH) {
        atomic_fetch_add(&n->ctx->stat_dropped, 1);
        SG_WARN("store", "net.unroutable", "reason=\"%s\"", zmq_strerror(err));
        return;
    }
    if (!err)
        return;
    /* through that router if it is there (it does not take batches), else through any */
    walk_t k = {.n = n, .via = l && !l->gone ? l->name : ""};
    (void)!sg_wire_batch_each_frame(zframe_data(batch), zframe_size(batch), item_out, &k);
}

static void on_workers(net_t *n, zmsg_t *m)
{
    char *tag = zmsg_popstr(m);
    if (tag && tag[0] == 'R' && zmsg_size(m) == 3) {
        zframe_t *rid = zmsg_first(m), *peer = zmsg_next(m), *frame = zmsg_next(m);
        send_out(n, rid, peer, frame);
    } else if (tag && tag[0] == 'B' && zmsg_size(m) == 2) {
        zframe_t *rid = zmsg_first(m), *batch = zmsg_next(m);
        send_batch(n, rid, batch);
    } else if (tag && tag[0] == 'P' && zmsg_size(m) == 5) {
        /* A read that found nothing (or fewer records than it asks for). If what it waits for was
         * committed since it looked (the append signal may have come before this), it runs again
         * now instead of waiting. */
        zframe_t *nf = zmsg_last(m);
        uint64_t need[2] = {0, 0};
        if (zframe_size(nf) == sizeof need)
            memcpy(need, zframe_data(nf), sizeof need);
        zmsg_remove(m, nf);
        zframe_destroy(&nf);
        if (need_met(n, need) && sg_zmq_send_nowait(n->to_readers, &m) == 0) {
            free(tag);
            return;
        }
        parked_t *p = calloc(1, sizeof *p);
        memcpy(p->need, need, sizeof need);
        zframe_t *dl = zmsg_last(m);
        uint64_t deadline = 0;
        if (zframe_size(dl) == sizeof deadline)
            memcpy(&deadline, zframe_data(dl), sizeof deadline);
        p->deadline = (int64_t)deadline;
        p->msg = m;
        m = NULL;
        zlist_append(n->parked, p);
    } else if (tag && tag[0] == 'A') {
        wake_parked(n, true);
    }
    free(tag);
    zmsg_destroy(&m);
}

static int start_workers(net_t *n)
{
    st_ctx_t *c = n->ctx;
    n->to_writer = zsock_new_push(NULL);
    n->to_readers = zsock_new_push(NULL);
    n->from_workers = zsock_new_pull(NULL);
    if (!n->to_writer || !n->to_readers || !n->from_workers)
        return -1;
    /* Bounded: when the writer (or the readers) fall behind, further device and operator frames
     * are refused with BUSY instead of growing memory; pings are still answered. */
    zsock_set_sndhwm(n->to_writer, c->queue_limit);
    zsock_set_sndhwm(n->to_readers, c->queue_limit);
    zsock_set_rcvhwm(n->from_workers, 0);
    if (zsock_bind(n->from_workers, "%s", c->ep_out) != 0 || zsock_bind(n->to_readers, "%s", c->ep_readers) != 0)
        return -1;
    n->writer = zactor_new(st_writer_actor, c);
    if (!n->writer || !atomic_load(&c->writer_ready))
        return -1;
    if (zsock_connect(n->to_writer, "%s", c->ep_writer) != 0)
        return -1;
    n->readers = calloc((size_t)c->readers, sizeof *n->readers);
    if (!n->readers)
        return -1;
    for (int i = 0; i < c->readers; i++)
        if (!(n->readers[i] = zactor_new(st_reader_actor, c)))
            return -1;
    if (!(n->retainer = zactor_new(st_retain_actor, c)))
        return -1;
    return 0;
}

static void stop_workers(net_t *n)
{
    /* A compaction of the retention thread would hold up the stop for its whole length. */
    if (n->retainer)
        rocksdb_disable_manual_compaction(n->ctx->db.db);
    zactor_destroy(&n->retainer);
    if (n->readers)
        for (int i = 0; i < n->ctx->readers; i++)
            zactor_destroy(&n->readers[i]);
    free(n->readers);
    zactor_destroy(&n->writer);
    zsock_destroy(&n->to_writer);
    zsock_destroy(&n->to_readers);
    zsock_destroy(&n->from_workers);
}

static void net_actor(zsock_t *pipe, void *args)
{
    pthread_setname_np(pthread_self(), "sg-st-net");   /* top -H, perf and /proc show it */
    net_t n = {.shard = args};
    n.ctx = n.shard->ctx;
    n.routers = zlistx_new();
    n.links = zhashx_new();
    zhashx_set_destructor(n.links, rlink_free);
    n.dirty = zlist_new();
    zlistx_set_duplicator(n.routers, (zlistx_duplicator_fn *)strdup);
    zlistx_set_destructor(n.routers, (zlistx_destructor_fn *)zstr_free);
    zlistx_set_comparator(n.routers, (zlistx_comparator_fn *)strcmp);
    n.parked = zlist_new();
    n.held = zlist_new();
    n.router = zsock_new(ZMQ_ROUTER);
    int ok = n.router != NULL;
    if (ok) {
        zsock_set_router_mandatory(n.router, 1);
        sg_curve_server(n.router);
        /* No high-water mark towards the routers: everything sent there answers a frame that
         * came in (bounded by the frontends' credit, cluster.credit, and by the operators' own
         * limits) or is a delivery (bounded by each loop's credit in the writer); a mark would
         * only turn a stalled router into lost answers. */
        zsock_set_sndhwm(n.router, 0);
        zsock_set_rcvhwm(n.router, n.ctx->queue_limit);
        sg_zmq_link_liveness(n.router);
        ok = zsock_bind(n.router, "%s", n.shard->endpoint) >= 0;
        if (ok) {
            const char *ep = zsock_endpoint(n.router);
            if (ep)
                snprintf(n.shard->endpoint, sizeof n.shard->endpoint, "%s", ep);
        } else {
            SG_ERROR("store", "net.bind_failed", "shard=%s endpoint=%s reason=\"%s\"", n.ctx->name, n.shard->endpoint,
                     zmq_strerror(zmq_errno()));
        }
    }
    if (ok && start_workers(&n) != 0) {
        SG_ERROR("store", "net.workers_failed", "shard=%s", n.ctx->name);
        ok = 0;
    }
    n.shard->ready = ok;
    zsock_signal(pipe, ok ? 0 : 1);
    if (ok) {
        SG_INFO("store", "shard.ready", "shard=%s partition=%u endpoint=%s data=%s sync=%s", n.ctx->name,
                n.ctx->partition, n.shard->endpoint, n.ctx->db.path, n.ctx->sync ? "always" : "never");
        if (!n.ctx->sync)
            SG_WARN("store", "sync.never", "shard=%s reason=\"store.sync=never: acknowledgements do not wait for "
                    "the disk, so a crash of the machine can lose messages the devices and operators were told "
                    "were stored\"", n.ctx->name);
        zpoller_t *poller = zpoller_new(pipe, n.router, n.from_workers, NULL);
        for (;;) {
            void *which = zpoller_wait(poller, zlist_size(n.held) ? 5 : parked_wait(&n));
            if (which == pipe)
                break;
            /* Everything the socket holds, up to a bound (see sg_zmq_recv_nowait). */
            zmsg_t *m;
            char uid[32];   /* the sender's role (sg_curve's ZAP handler) */
            if (which == n.router)
                for (int k = 0; k < NET_DRAIN_MAX && (m = sg_zmq_recv_nowait_from(n.router, uid, sizeof uid)); k++)
                    on_router(&n, m, sg_curve_peer_role(uid));
            else if (which == n.from_workers)
                for (int k = 0; k < NET_DRAIN_MAX && (m = sg_zmq_recv_nowait(n.from_workers)); k++)
                    on_workers(&n, m);
            if (zlist_size(n.parked))
                wake_parked(&n, false);
            if (zlist_size(n.held))
                flush_held(&n);
            flush_links(&n);   /* one message per router for all this pass answered */
        }
        zpoller_destroy(&poller);
    }
    parked_t *p;
    while ((p = zlist_pop(n.parked))) {
        zmsg_destroy(&p->msg);
        free(p);
    }
    zlist_destroy(&n.parked);
    zmsg_t *held;
    while ((held = zlist_pop(n.held)))
        zmsg_destroy(&held);
    zlist_destroy(&n.held);
    stop_workers(&n);
    zsock_destroy(&n.router);
    zlistx_destroy(&n.routers);
    zlist_destroy(&n.dirty);
    zhashx_destroy(&n.links);
    sg_actor_end();
}

st_shard_t *st_shard_new(const sg_config_t *cfg, const char *name, unsigned partition, const char *bind,
                         const char *data_dir)
{
    st_shard_t *self = calloc(1, sizeof *self);
    st_ctx_t *c = self ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        free(self);
        return NULL;
    }
    self->ctx = c;
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(self->endpoint, sizeof self->endpoint, "%s", bind);
    c->partition = partition;
    c->sync = strcmp(sg_config_str(cfg, "store.sync"), "always") == 0;
    c->readers = (int)sg_config_int(cfg, "store.readers");
    c->max_batch = (int)sg_config_int(cfg, "store.max_batch");
    c->queue_limit = c->max_batch * 8;
    c->max_queued_messages = sg_config_int(cfg, "store.max_queued_messages");
    c->max_queued_bytes = sg_config_int(cfg, "store.max_queued_bytes");
    c->max_message_bytes = sg_config_int(cfg, "store.max_message_bytes");
    c->default_ttl = sg_config_int(cfg, "store.default_ttl");
    c->max_ttl = sg_config_int(cfg, "store.max_ttl");
    c->delivery_window = (int)sg_config_int(cfg, "store.delivery_window");
    c->credit = (uint64_t)sg_config_int(cfg, "cluster.credit");
    c->hold_bytes = (uint64_t)sg_config_int(cfg, "store.hold_bytes");
    c->max_delivery_count = (int)sg_config_int(cfg, "store.max_delivery_count");
    c->delivery_lock_ms = sg_config_int(cfg, "store.delivery_lock") * 1000;
    c->cache_devices = sg_config_int(cfg, "store.cache_devices");
    c->read_ahead = sg_config_int(cfg, "store.read_ahead");
    c->read_ahead_delay_ms = sg_config_int(cfg, "store.read_ahead_delay_ms");
    c->peer_timeout_ms = sg_config_int(cfg, "store.peer_timeout") * 1000;
    c->tele_retention_ms = sg_config_int(cfg, "store.telemetry_retention") * 1000;
    c->tele_max_bytes = sg_config_int(cfg, "store.telemetry_max_bytes");
    c->fb_retention_ms = sg_config_int(cfg, "store.feedback_retention") * 1000;
    c->fb_max_bytes = sg_config_int(cfg, "store.feedback_max_bytes");
    c->dead_retention_ms = sg_config_int(cfg, "store.deadletter_retention") * 1000;
    c->retention_interval_ms = sg_config_int(cfg, "store.retention_interval") * 1000;
    c->notify_slice = (int)sg_config_int(cfg, "store.notify_slice");
    c->inquiry_timeout_ms = sg_config_int(cfg, "store.inquiry_timeout") * 1000;
    c->inquiry_lease_ms = sg_config_int(cfg, "store.inquiry_lease") * 1000;
    c->inquiry_max = sg_config_int(cfg, "store.inquiry_max");
    c->inquiry_max_bytes = sg_config_int(cfg, "store.inquiry_max_bytes");
    /* This start of the shard: routers tell frontends when it changes, so that publishes the
     * previous start took in and never acknowledged are sent again by their devices. */
    if (RAND_bytes((unsigned char *)&c->incarnation, sizeof c->incarnation) != 1 || c->incarnation == 0)
        c->incarnation = (uint64_t)sg_now_ms() | 1;
    if (c->default_ttl > c->max_ttl)
        c->default_ttl = c->max_ttl;
    c->ring = st_import_ring(sg_config_str(cfg, "cluster.shards"), (unsigned)sg_config_int(cfg, "cluster.vnodes"));
    if (!c->ring || rt_ring_size(c->ring) <= partition || strcmp(rt_ring_name(c->ring, partition), name) != 0) {
        SG_ERROR("store", "config.invalid", "key=cluster.shards shard=%s partition=%u reason=\"this shard must be "
                 "listed once, at its partition's place, among unique names\"", name, partition);
        rt_ring_destroy(&c->ring);
        free(c);
        free(self);
        return NULL;
    }
    /* Unique per shard instance so several shards can live in one process (sacgate all). */
    snprintf(c->ep_writer, sizeof c->ep_writer, "inproc://st-%s-%p-w", name, (void *)c);
    snprintf(c->ep_readers, sizeof c->ep_readers, "inproc://st-%s-%p-r", name, (void *)c);
    snprintf(c->ep_out, sizeof c->ep_out, "inproc://st-%s-%p-o", name, (void *)c);
    snprintf(c->ep_ahead, sizeof c->ep_ahead, "inproc://st-%s-%p-l", name, (void *)c);
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST)
        SG_WARN("store", "data_dir.create_failed", "path=%s reason=\"%s\"", data_dir, strerror(errno));
    /* Before the database opens: a volume that filled while the shard was down gets its reserve
     * back, so RocksDB has room to open (and the shard starts refusing new data). */
    const char *log_dir = sg_config_str(cfg, "store.log_dir");
    if (st_space_init(&c->space, data_dir, sg_config_int(cfg, "store.disk_min_free"),
                      sg_config_int(cfg, "store.disk_reserve")) != SG_OK ||
        st_space_may_open(&c->space, !*log_dir) != SG_OK ||
        st_db_open(&c->db, data_dir, &(st_db_opts_t){.sync = c->sync,
                                                     .log_dir = log_dir,
                                                     .write_buffer = sg_config_int(cfg, "store.write_buffer"),
                                                     .memory = sg_config_int(cfg, "store.memory")}) != SG_OK ||
        st_retain_load(c) != SG_OK) {
        st_db_close(&c->db);   /* nothing to close when it did not open */
        rt_ring_destroy(&c->ring);
        free(c);
        free(self);
        return NULL;
    }
    atomic_store(&c->stat_disk_free, c->space.free);
    atomic_store(&c->stat_disk_full, c->space.full);
    self->actor = zactor_new(net_actor, self);
    if (!self->actor || !self->ready) {
        st_shard_destroy(&self);
        return NULL;
    }
    return self;
}

void st_shard_destroy(st_shard_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    st_shard_t *self = *self_p;
    zactor_destroy(&self->actor);
    if (self->ctx) {
        st_db_close(&self->ctx->db);
        rt_ring_destroy(&self->ctx->ring);
        free(self->ctx);
    }
    free(self);
    *self_p = NULL;
}

const char *st_shard_endpoint(const st_shard_t *self) { return self->endpoint; }
