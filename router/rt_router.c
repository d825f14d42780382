/* rt_router.c — the router actor; see rt_router.h.
 * Envelopes: front ROUTER receives [peer][frame]; each shard has its own DEALER (identity = this
 * router's name) that carries [peer][frame] both ways. The router decodes only the header, to
 * validate and route; bodies pass through untouched. Flow control is credit (cluster.credit):
 * frontends keep what they have on the way to each shard within it, and shards what they deliver
 * to each frontend loop, so the queues here stay bounded. The sockets towards shards keep a
 * high-water mark as a backstop; a frame it refuses is answered with ERROR/BUSY, never dropped
 * silently.
 * Each peer's role comes with its messages (the CURVE key it connected with, sg_curve.h); a frame
 * its role may not send (sg_role.c: a frontend's key opens the device frames only) is answered
 * with ERROR/FORBIDDEN, counted per role and type for /metrics, and logged at most once a second. */
#include "rt_router.h"
#include <pthread.h>
#include <czmq.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "rt_ring.h"
#include "sg_curve.h"
#include "sg_frame.h"
#include "sg_log.h"
#include "sg_role.h"
#include "sg_time.h"
#include "sg_wire.h"
#include "sg_zmq.h"

#define PING_EVERY_MS 1000
#define SHARD_DOWN_AFTER_MS 3000
/* Messages taken from one socket per wake before the others get their turn. */
#define RT_DRAIN_MAX 256

typedef struct {
    char *name;
    char *endpoint;
    zsock_t *sock;
    int64_t last_pong;      /* when it was last heard from (a PONG, or any frame: it is there) */
    bool up;
    uint64_t incarnation;   /* from its PONGs: a new value means it restarted (0: not heard yet) */
    uint64_t sent, refused;
    bool batches;           /* its PONGs say it takes BATCH frames */
    sg_wire_batch_t out;    /* frames of this pass for it (flush_all) */
} shard_t;

struct rt_router {
    zactor_t *actor;
    char name[64];
    char endpoint[256];
    int hwm;
    shard_t *shards;
    size_t n_shards;
    rt_ring_t *ring;
    bool ready;
    _Atomic size_t shards_up;   /* read by the /readyz thread */
    uint64_t relayed_in, relayed_out, unroutable;
    uint64_t batches_in, batches_out;   /* BATCH messages taken in and sent (both sides) */
    zhashx_t *peers;     /* frontend routing id -> peer_t, from their heartbeats */
    uint64_t boot;       /* this start of the router: frontends see a restart in its PONGs */
    uint64_t *incarnations;   /* of every shard, for the PONGs (n_shards) */
    zlist_t *dirty;      /* peer_t with frames in their batch (flush_all) */
    uint64_t forbidden[SG_ROLE_MAX][SG_MSG_TYPE_MAX];   /* frames refused for the sender's role */
    int64_t forbidden_logged;   /* when the last refusal was logged */
    uint64_t forbidden_quiet;   /* refusals since, not logged */
};

typedef struct {
    int64_t last_seen;
    uint64_t connections;
    uint64_t credit_waits, credit_bytes;   /* from its heartbeats: see cluster.credit */
    uint64_t link_backlog, link_backlog_peak;   /* ...and its bookkeeping waiting for the link */
    char id[SG_WIRE_MAX_PEER + 1];
    bool batches;           /* its heartbeats say it takes BATCH frames */
    bool queued;            /* in r->dirty */
    sg_wire_batch_t out;    /* frames of this pass for it (flush_all) */
} peer_t;

static void peer_free(void **item)
{
    peer_t *p = *item;
    if (p) {
        sg_wire_batch_fini(&p->out);
        free(p);
    }
    *item = NULL;
}

#define PEER_FORGET_MS 30000

/* [peer][frame w] back to a frontend or admin without blocking (dropped when its queue is full:
 * the asker's deadline covers a lost answer). */
static void to_peer(zsock_t *front, zframe_t *peer, const sg_wbuf_t *w)
{
    zmsg_t *m = zmsg_new();
    zmsg_append(m, &(zframe_t *){zframe_dup(peer)});
    zmsg_addmem(m, w->data, w->len);
    if (sg_zmq_send_nowait(front, &m) != 0)
        zmsg_destroy(&m);
}

/* [peer][frame] on a ROUTER socket without blocking: 0, or errno (EAGAIN: its queue is full,
 * EHOSTUNREACH: no such peer connected). */
static int send_pair(void *raw, const void *peer, size_t peer_len, const void *frame, size_t len)
{
    if (zmq_send(raw, peer, peer_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return errno;
    /* The first part is queued, so the second cannot be refused for the high-water mark. */
    zmq_send(raw, frame, len, 0);
    return 0;
}

static peer_t *peer_find(rt_router_t *r, const uint8_t *id, size_t len)
{
    return sg_zmq_lookup_id(r->peers, id, len, SG_WIRE_MAX_PEER);
}

/* What a walk over a batch's items needs (sg_wire_batch_each). */
typedef struct {
    rt_router_t *r;
    zsock_t *front;
    zframe_t *from;     /* the envelope's peer */
    sg_role_t role;     /* its role */
    size_t shard;
    int err;
    const peer_t *to;
} walk_t;

static void flush_peer(rt_router_t *r, zsock_t *front, peer_t *p);
static void undeliverable(rt_router_t *r, zsock_t *front, const uint8_t *peer, size_t peer_len, const uint8_t *f,
                          size_t len, int err);

/* A frame for a frontend loop or admin (from a shard, or an error of ours): into the peer's
 * batch when it takes batches (sent at the end of the pass), else at once. */
static void to_front(rt_router_t *r, zsock_t *front, const uint8_t *peer, size_t peer_len, const uint8_t *f,
                     size_t len)
{
    peer_t *p = peer_find(r, peer, peer_len);
    if (p && p->batches && sg_wire_batchable(0, len)) {
        if (!sg_wire_batch_fits(&p->out, 0, len))
            flush_peer(r, front, p);
        if (sg_wire_batch_add(&p->out, NULL, 0, f, len) == SG_OK) {
            if (!p->queued)
                zlist_append(r->dirty, p);
            p->queued = true;
            return;
        }
    }
    if (p)
        flush_peer(r, front, p);   /* what waits in its batch is older */
    int err = send_pair(zsock_resolve(front), peer, peer_len, f, len);
    if (err)
        undeliverable(r, front, peer, peer_len, f, len, err);
    else
        r->relayed_out++;
}

static void peer_item_undeliverable(void *ctx, const uint8_t *ip, size_t ipl, const uint8_t *f, size_t len)
{
    walk_t *k = ctx;
    (void)ip;
    (void)ipl;
    undeliverable(k->r, k->front, (const uint8_t *)k->to->id, strlen(k->to->id), f, len, k->err);
}

static void flush_peer(rt_router_t *r, zsock_t *front, peer_t *p)
{
    if (p->out.n == 0)
        return;
    const uint8_t *f, *unused;
    size_t len, unused_len;
    sg_wire_batch_out(&p->out, &f, &len, &unused, &unused_len);
    int err = send_pair(zsock_resolve(front), p->id, strlen(p->id), f, len);
    if (!err) {
        r->relayed_out += p->out.n;
        r->batches_out += p->out.n > 1;
    } else {
        /* each frame as if it had been sent alone (a batch this router built: always whole). The
         * walk can send to this peer again (a PEER_GONE refused by a full shard queue is answered
         * here), so it walks the batch taken out of p->out, not p->out while that grows. */
        sg_wire_batch_t failed = p->out;
        sg_wire_batch_init(&p->out);
        walk_t k = {.r = r, .front = front, .err = err, .to = p};
        (void)!sg_wire_batch_each_frame(failed.w.data, failed.w.len, peer_item_undeliverable, &k);
        sg_wire_batch_fini(&failed);
        return;
    }
    sg_wire_batch_clear(&p->out);
}

/* A frontend loop's heartbeat: remember it and its connection count for /v1/cluster, and answer
 * with a PONG so the frontend knows its router is there (its /readyz). */
static void on_heartbeat(rt_router_t *r, zsock_t *front, zframe_t *peer, const sg_wire_hdr_t *h)
{
    /* The PONG also carries this router's incarnation and every shard's: a frontend that missed
     * a SHARD_STATE (or whose router restarted) learns it here within a heartbeat. */
    sg_wbuf_t w;
    sg_wbuf_init(&w, 64 + 8 * r->n_shards);
    for (size_t i = 0; i < r->n_shards; i++)
        r->incarnations[i] = r->shards[i].incarnation;
    if (sg_frame_router_pong(&w, r->boot, r->incarnations, (uint16_t)r->n_shards) == SG_OK)
        to_peer(front, peer, &w);
    sg_wbuf_fini(&w);
    const char *json;
    size_t len;
    char *id = zframe_strdup(peer);
    peer_t *p = zhashx_lookup(r->peers, id);
    if (!p && strlen(id) <= SG_WIRE_MAX_PEER) {
        p = calloc(1, sizeof *p);
        if (p) {
            snprintf(p->id, sizeof p->id, "%s", id);
            sg_wire_batch_init(&p->out);
            zhashx_insert(r->peers, id, p);
        }
    }
    if (p) {
        p->last_seen = sg_mono_ms();
        p->batches = (h->flags & SG_WIRE_F_BATCH) != 0;
        json_t *b = sg_wire_get_json(h, &json, &len) == SG_OK ? json_loadb(json, len, 0, NULL) : NULL;
        p->connections = (uint64_t)json_integer_value(json_object_get(b, "connections"));
        p->credit_waits = (uint64_t)json_integer_value(json_object_get(b, "creditWaits"));
        p->credit_bytes = (uint64_t)json_integer_value(json_object_get(b, "creditBytes"));
        p->link_backlog = (uint64_t)json_integer_value(json_object_get(b, "linkBacklog"));
        p->link_backlog_peak = (uint64_t)json_integer_value(json_object_get(b, "linkBacklogPeak"));
        json_decref(b);
    }
    free(id);
}

/* Add v to the integer member key of o. */
static void add_int(json_t *o, const char *key, json_int_t v)
{
    json_object_set_new(o, key, json_integer(json_integer_value(json_object_get(o, key)) + v));
}

/* Frontends seen recently, summed over their loops (the backlog peak: the largest of one loop):
 * [{name, loops, connections, creditWaits, creditBytes, linkBacklog, linkBacklogPeak}]. */
static json_t *frontends_json(rt_router_t *r)
{
    json_t *by_name = json_object();
    int64_t now = sg_mono_ms();
    zlist_t *stale = zlist_new();
    for (peer_t *p = zhashx_first(r->peers); p; p = zhashx_next(r->peers)) {
        const char *id = zhashx_cursor(r->peers);
        if (now - p->last_seen > PEER_FORGET_MS) {
            if (!p->queued)   /* one with frames waiting goes after the flush */
                zlist_append(stale, (void *)id);
            continue;
        }
        size_t n = strcspn(id, "/");
        char name[SG_WIRE_MAX_PEER + 1];
        snprintf(name, sizeof name, "%.*s", (int)n, id);
        json_t *f = json_object_get(by_name, name);
        if (!f) {
            f = json_pack("{s:s,s:i,s:I,s:I,s:I,s:I,s:I}", "name", name, "loops", 0, "connections", (json_int_t)0,
                          "creditWaits", (json_int_t)0, "creditBytes", (json_int_t)0, "linkBacklog", (json_int_t)0,
                          "linkBacklogPeak", (json_int_t)0);
            json_object_set_new(by_name, name, f);
        }
        add_int(f, "loops", 1);
        add_int(f, "connections", (json_int_t)p->connections);
        add_int(f, "creditWaits", (json_int_t)p->credit_waits);
        add_int(f, "creditBytes", (json_int_t)p->credit_bytes);
        add_int(f, "linkBacklog", (json_int_t)p->link_backlog);
        if ((json_int_t)p->link_backlog_peak > json_integer_value(json_object_get(f, "linkBacklogPeak")))
            json_object_set_new(f, "linkBacklogPeak", json_integer((json_int_t)p->link_backlog_peak));
    }
    for (const char *id = zlist_first(stale); id; id = zlist_next(stale))
        zhashx_delete(r->peers, id);
    zlist_destroy(&stale);
    json_t *arr = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(by_name, k, v)
        json_array_append(arr, v);
    json_decref(by_name);
    return arr;
}

int rt_shard_list(const sg_config_t *cfg, char ***names_out, char ***eps_out, size_t *n_out)
{
    const char *list = sg_config_str(cfg, "cluster.shards");
    const char *tmpl = sg_config_str(cfg, "cluster.shard_endpoint");
    char *copy = strdup(list), *save = NULL;
    char **names = NULL, **eps = NULL;
    size_t n = 0;
    if (!copy)
        return -1;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        char **nn = realloc(names, (n + 1) * sizeof *nn), **ne;
        if (!nn)
            break;
        names = nn;
        ne = realloc(eps, (n + 1) * sizeof *ne);
        if (!ne)
            break;
        eps = ne;
        char *eq = strchr(tok, '=');
        if (eq) {
            *eq = 0;
            names[n] = strdup(tok);
            eps[n] = strdup(eq + 1);
        } else {
            names[n] = strdup(tok);
            /* replace every {name} in the template */
            size_t cap = strlen(tmpl) + 8 * strlen(tok) + 1;
            char *ep = malloc(cap), *o = ep;
            for (const char *p = tmpl; ep && *p;) {
                if (strncmp(p, "{name}", 6) == 0 && (size_t)(o - ep) + strlen(tok) < cap) {
                    o += sprintf(o, "%s", tok);
                    p += 6;
                } else if ((size_t)(o - ep) < cap - 1) {
                    *o++ = *p++;
                } else {
                    break;
                }
            }
            if (ep)
                *o = 0;
            eps[n] = ep;
        }
        n++;
    }
    free(copy);
    *names_out = names;
    *eps_out = eps;
    *n_out = n;
    for (size_t i = 0; i < n; i++)
        if (!names[i] || !eps[i] || !*names[i])
            return -1;
    return n > 0 ? 0 : -1;
}

void rt_shard_list_free(char **names, char **eps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(names ? names[i] : NULL);
        free(eps ? eps[i] : NULL);
    }
    free(names);
    free(eps);
}

/* ERROR about frame `in` to its sender (in order with the answers going to it). */
static void send_error(rt_router_t *r, zsock_t *front, const uint8_t *peer, size_t peer_len, const sg_wire_hdr_t *in,
                       uint16_t code)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 512);
    if (sg_wire_put_error(&w, in, code) == SG_OK)
        to_front(r, front, peer, peer_len, w.data, w.len);
    sg_wbuf_fini(&w);
}

/* A frame the sender's role may not send: ERROR FORBIDDEN to it, counted, logged at most once a
 * second (a compromised pod could send them as fast as it likes). */
static void forbid(rt_router_t *r, zsock_t *front, const uint8_t *peer, size_t peer_len, sg_role_t role,
                   const sg_wire_hdr_t *h)
{
    r->forbidden[role][h->type]++;
    r->forbidden_quiet++;
    int64_t now = sg_mono_ms();
    if (now - r->forbidden_logged >= 1000) {
        SG_WARN("router", "frame.forbidden", "peer=%.*s role=%s type=%s refused=%llu reason=\"this peer's CURVE key "
                "is the %s's, which may not send %s (refusals since the last such line are counted)\"",
                (int)peer_len, (const char *)peer, sg_role_name(role), sg_wire_type_name(h->type),
                (unsigned long long)r->forbidden_quiet, sg_role_name(role), sg_wire_type_name(h->type));
        r->forbidden_logged = now;
        r->forbidden_quiet = 0;
    }
    send_error(r, front, peer, peer_len, h, SG_WIRE_ERR_FORBIDDEN);
}

/* [{role, type, count}] of the refusals so far, for /metrics. */
static json_t *forbidden_json(const rt_router_t *r)
{
    json_t *arr = json_array();
    for (int role = 0; role < SG_ROLE_MAX; role++)
        for (int t = 0; t < SG_MSG_TYPE_MAX; t++)
            if (r->forbidden[role][t])
                json_array_append_new(arr, json_pack("{s:s,s:s,s:I}", "role", sg_role_name((sg_role_t)role), "type",
                                                     sg_wire_type_name((uint8_t)t), "count",
                                                     (json_int_t)r->forbidden[role][t]));
    return arr;
}

static void send_ring(rt_router_t *r, zsock_t *front, zframe_t *peer, const sg_wire_hdr_t *in)
{
    int64_t now = sg_mono_ms();
    json_t *shards = json_array();
    bool all_up = true;
    for (size_t i = 0; i < r->n_shards; i++) {
        shard_t *s = &r->shards[i];
        bool up = s->last_pong && now - s->last_pong < SHARD_DOWN_AFTER_MS;
        all_up &= up;
        json_array_append_new(shards, json_pack("{s:s,s:i,s:s,s:b,s:I,s:I}", "name", s->name, "partition", (int)i,
                                                "endpoint", s->endpoint, "reachable", up, "relayed",
                                                (json_int_t)s->sent, "refused", (json_int_t)s->refused));
    }
    json_t *body = json_pack("{s:s,s:i,s:o,s:o,s:b,s:I,s:I,s:I,s:I,s:I,s:o}", "router", r->name, "vnodes",
                             (int)rt_ring_vnodes(r->ring), "shards", shards, "frontends", frontends_json(r), "ready", all_up, "relayedIn",
                             (json_int_t)r->relayed_in, "relayedOut", (json_int_t)r->relayed_out, "unroutable",
                             (json_int_t)r->unroutable, "batchesIn", (json_int_t)r->batches_in, "batchesOut",
                             (json_int_t)r->batches_out, "forbidden", forbidden_json(r));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    sg_wbuf_t w;
    sg_wbuf_init(&w, SG_WIRE_MAX_FRAME);
    if (text && sg_frame_json_res(&w, in, SG_MSG_RING_RES, 200, text, strlen(text)) == SG_OK)
        to_peer(front, peer, &w);
    free(text);
    sg_wbuf_fini(&w);
}

/* Send shard i's batch. When its queue is full, every frame in it is refused to its sender
 * (ERROR BUSY: a device's publish is sent again later, an operator gets 503). */
static void shard_item_refused(void *ctx, const uint8_t *peer, size_t peer_len, const uint8_t *f, size_t len)
{
    walk_t *k = ctx;
    sg_wire_hdr_t h;
    if (sg_wire_decode(f, len, &h) == SG_OK && h.type != SG_MSG_HELLO && h.type != SG_MSG_ALIVE)
        send_error(k->r, k->front, peer, peer_len, &h, SG_WIRE_ERR_BUSY);
}

static void flush_shard(rt_router_t *r, zsock_t *front, size_t i)
{
    shard_t *s = &r->shards[i];
    if (s->out.n == 0)
        return;
    const uint8_t *f, *peer;
    size_t len, peer_len;
    sg_wire_batch_out(&s->out, &f, &len, &peer, &peer_len);
    if (send_pair(zsock_resolve(s->sock), peer, peer_len, f, len) == 0) {
        s->sent += s->out.n;
        r->batches_out += s->out.n > 1;
    } else {
        /* Refusing each frame can send to this shard again (a refusal its loop cannot take ends
         * in a PEER_GONE for the shard): the walk goes over the batch taken out of s->out. */
        s->refused += s->out.n;
        sg_wire_batch_t failed = s->out;
        sg_wire_batch_init(&s->out);
        walk_t k = {.r = r, .front = front};
        (void)!sg_wire_batch_each_frame(failed.w.data, failed.w.len, shard_item_refused, &k);
        sg_wire_batch_fini(&failed);
        return;
    }
    sg_wire_batch_clear(&s->out);
}

/* [peer][frame] for shard i: into its batch when it takes batches (sent at the end of the pass),
 * else at once. Refused with ERROR BUSY to the sender when the shard's queue is full (`refuse`
 * false: dropped, for frames nobody waits on; h, the frame's header, is only needed to refuse). */
static void to_shard(rt_router_t *r, zsock_t *front, size_t i, const uint8_t *peer, size_t peer_len,
                     const uint8_t *f, size_t len, const sg_wire_hdr_t *h, bool refuse)
{
    shard_t *s = &r->shards[i];
    if (s->batches && sg_wire_batchable(peer_len, len)) {
        if (!sg_wire_batch_fits(&s->out, peer_len, len))
            flush_shard(r, front, i);
        if (sg_wire_batch_add(&s->out, peer, peer_len, f, len) == SG_OK)
            return;
    }
    flush_shard(r, front, i);   /* what waits in the batch is older */
    if (send_pair(zsock_resolve(s->sock), peer, peer_len, f, len) == 0) {
        s->sent++;
        return;
    }
    s->refused++;
    if (refuse)
        send_error(r, front, peer, peer_len, h, SG_WIRE_ERR_BUSY);
}

/* Everything this pass put in batches goes out. */
static void flush_all(rt_router_t *r, zsock_t *front)
{
    for (size_t i = 0; i < r->n_shards; i++)
        flush_shard(r, front, i);   /* refusals can add to the peers' batches: those go next */
    peer_t *p;
    while ((p = zlist_pop(r->dirty))) {
        p->queued = false;
        flush_peer(r, front, p);
    }
    for (size_t i = 0; i < r->n_shards; i++)
        flush_shard(r, front, i);   /* PEER_GONE for loops that turned out to be gone */
}

/* Pass a frontend loop's heartbeat on to every shard: shards end the sessions of a loop that
 * has gone silent (a crashed pod that never comes back under its name; store.peer_timeout). */
static void forward_alive(rt_router_t *r, zsock_t *front, const uint8_t *peer, size_t peer_len)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 64);
    if (sg_frame_alive(&w) == SG_OK)
        for (size_t i = 0; i < r->n_shards; i++) {
            /* Not to a shard that stopped answering: heartbeats would pile up in its queue for as
             * long as it is away (the shard does not count its own stall against the loops). */
            if (!r->shards[i].up && r->shards[i].last_pong != 0)
                continue;
            uint64_t sent = r->shards[i].sent;
            to_shard(r, front, i, peer, peer_len, w.data, w.len, NULL, false);
            r->shards[i].sent = sent;   /* not relayed traffic (counted when a batch goes) */
        }
    sg_wbuf_fini(&w);
}

/* One frame from a frontend loop or admin of this role (alone or out of its BATCH). */
static void front_frame(rt_router_t *r, zsock_t *front, zframe_t *from, sg_role_t role, const uint8_t *f,
                        size_t len)
{
    const uint8_t *peer = zframe_data(from);
    size_t peer_len = zframe_size(from);
    sg_wire_hdr_t h;
    if (sg_wire_decode(f, len, &h) != SG_OK || h.type == SG_MSG_BATCH) {
        SG_WARN("router", "frame.malformed", "peer=%.*s bytes=%zu", (int)peer_len, (const char *)peer, len);
        return;
    }
    if (!sg_role_may_send(role, h.type)) {
        forbid(r, front, peer, peer_len, role, &h);
        return;
    }
    r->relayed_in++;
    if (h.type == SG_MSG_RING) {
        send_ring(r, front, from, &h);
    } else if (h.type == SG_MSG_PING) {
        on_heartbeat(r, front, from, &h);
        forward_alive(r, front, peer, peer_len);
    } else if (h.type == SG_MSG_HELLO) {
        for (size_t i = 0; i < r->n_shards; i++)
            to_shard(r, front, i, peer, peer_len, f, len, &h, false);
    } else {
        size_t i;
        if (h.shard != SG_WIRE_SHARD_BY_DEVICE)
            i = h.shard;
        else if (h.device_len > 0)
            i = rt_ring_lookup(r->ring, h.device, h.device_len);
        else
            i = RT_RING_NONE;
        /* Telemetry and session traffic queue while a shard restarts (acks are only delayed);
         * a CONNECT or an operator's request gets an immediate "unavailable" instead. */
        bool urgent = h.type == SG_MSG_AUTH || h.type == SG_MSG_PSK || h.type == SG_MSG_ADMIN;
        if (i >= r->n_shards || (urgent && !r->shards[i].up && r->shards[i].last_pong != 0))
            send_error(r, front, peer, peer_len, &h, SG_WIRE_ERR_NO_SHARD);
        else
            to_shard(r, front, i, peer, peer_len, f, len, &h, true);
    }
}

static void front_item(void *ctx, const uint8_t *peer, size_t peer_len, const uint8_t *f, size_t len)
{
    walk_t *k = ctx;
    (void)peer;   /* the envelope names the sender */
    (void)peer_len;
    front_frame(k->r, k->front, k->from, k->role, f, len);
}

static void on_front(rt_router_t *r, zsock_t *front, zmsg_t *m, sg_role_t role)
{
    if (zmsg_size(m) != 2) {
        zmsg_destroy(&m);
        return;
    }
    zframe_t *peer = zmsg_first(m), *frame = zmsg_next(m);
    sg_wire_hdr_t h;
    bool batch = sg_wire_decode(zframe_data(frame), zframe_size(frame), &h) == SG_OK && h.type == SG_MSG_BATCH;
    if (batch && !sg_role_may_send(role, h.type)) {
        forbid(r, front, zframe_data(peer), zframe_size(peer), role, &h);
    } else if (batch) {
        r->batches_in++;
        walk_t k = {.r = r, .front = front, .from = peer, .role = role};
        if (sg_wire_batch_each(&h, front_item, &k) != SG_OK)
            SG_WARN("router", "frame.malformed", "peer=%.*s bytes=%zu reason=\"a damaged batch\"",
                    (int)zframe_size(peer), (const char *)zframe_data(peer), zframe_size(frame));
    } else {
        front_frame(r, front, peer, role, zframe_data(frame), zframe_size(frame));
    }
    zmsg_destroy(&m);
}

/* Tell every frontend loop seen here which incarnation of shard i answers now: publishes the
 * earlier one took in and did not acknowledge are gone, and their devices must send them again
 * (frontends close those connections; MQTT 3.1.1 devices resend on reconnect). */
static void shard_state(rt_router_t *r, zsock_t *front, size_t i)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 64);
    if (sg_frame_shard_state(&w, (uint32_t)i, r->shards[i].incarnation) == SG_OK) {
        /* in order with the answers already on their way to each loop (the list first: sending
         * looks peers up, which must not move the table's cursor) */
        zlist_t *all = zlist_new();
        for (peer_t *p = zhashx_first(r->peers); p; p = zhashx_next(r->peers))
            zlist_append(all, p);
        for (peer_t *p = zlist_first(all); p; p = zlist_next(all))
            to_front(r, front, (const uint8_t *)p->id, strlen(p->id), w.data, w.len);
        zlist_destroy(&all);
    }
    sg_wbuf_fini(&w);
}

/* A frame from a shard could not be passed to its peer (err: EAGAIN its queue is full,
 * EHOSTUNREACH it is not connected). A push for a session whose frontend loop is gone makes the
 * shard end that session, but only for a loop that was connected here: one it never saw may be
 * connected to another router. */
static void undeliverable(rt_router_t *r, zsock_t *front, const uint8_t *peer, size_t peer_len, const uint8_t *f,
                          size_t len, int err)
{
    sg_wire_hdr_t h;
    r->unroutable++;
    if (sg_wire_decode(f, len, &h) != SG_OK)
        return;
    if (err == EAGAIN)
        SG_WARN("router", "peer.full", "peer=%.*s type=%s reason=\"peer's queue at its high-water mark; frame dropped\"",
                (int)peer_len, (const char *)peer, sg_wire_type_name(h.type));
    else
        SG_DEBUG("router", "peer.unreachable", "peer=%.*s type=%s", (int)peer_len, (const char *)peer,
                 sg_wire_type_name(h.type));
    if (err != EHOSTUNREACH || !peer_find(r, peer, peer_len) || (h.type != SG_MSG_DELIVER && h.type != SG_MSG_KICK) ||
        h.device_len == 0)
        return;
    size_t i = rt_ring_lookup(r->ring, h.device, h.device_len);
    if (i >= r->n_shards)
        return;
    sg_wbuf_t w;
    sg_wbuf_init(&w, 512);
    if (sg_frame_peer_gone(&w, &h) == SG_OK)
        to_shard(r, front, i, peer, peer_len, w.data, w.len, NULL, false);
    sg_wbuf_fini(&w);
}

/* Shard i spoke: it is up (the probes' PONGs can lag behind its traffic after a restart; a CONNECT
 * refused as "no shard" while its answers flow would be wrong). */
static void shard_heard(rt_router_t *r, size_t i)
{
    shard_t *s = &r->shards[i];
    s->last_pong = sg_mono_ms();
    if (!s->up) {
        SG_INFO("router", "shard.reachable", "shard=%s endpoint=%s", s->name, s->endpoint);
        atomic_fetch_add(&r->shards_up, 1);
    }
    s->up = true;
}

static void on_shard_pong(rt_router_t *r, zsock_t *front, size_t i, const sg_wire_hdr_t *h)
{
    shard_t *s = &r->shards[i];
    shard_heard(r, i);
    s->batches = (h->flags & SG_WIRE_F_BATCH) != 0;
    const char *name;
    size_t len;
    uint64_t inc;
    if (sg_wire_get_shard_pong(h, &name, &len, &inc) == SG_OK && inc != s->incarnation) {
        if (s->incarnation)
            SG_WARN("router", "shard.restarted", "shard=%s reason=\"a new incarnation answers: frontends end the "
                    "connections whose publishes it never acknowledged\"", s->name);
        s->incarnation = inc;
        shard_state(r, front, i);
    }
}

static void shard_item(void *ctx, const uint8_t *peer, size_t peer_len, const uint8_t *f, size_t len)
{
    walk_t *k = ctx;
    to_front(k->r, k->front, peer, peer_len, f, len);
}

/* [peer][frame] from shard i: an answer or push for a frontend loop or admin, a BATCH of them
 * (each item naming its peer), or a PONG. */
static void on_shard(rt_router_t *r, zsock_t *front, size_t i, zmsg_t *m)
{
    shard_t *s = &r->shards[i];
    if (zmsg_size(m) != 2) {
        zmsg_destroy(&m);
        return;
    }
    zframe_t *peer = zmsg_first(m), *frame = zmsg_next(m);
    sg_wire_hdr_t h;
    if (sg_wire_decode(zframe_data(frame), zframe_size(frame), &h) != SG_OK) {
        SG_WARN("router", "shard.malformed", "shard=%s bytes=%zu", s->name, zframe_size(frame));
    } else if (h.type == SG_MSG_PONG) {
        on_shard_pong(r, front, i, &h);
    } else if (h.type == SG_MSG_BATCH) {
        shard_heard(r, i);
        r->batches_in++;
        walk_t k = {.r = r, .front = front, .shard = i};
        if (sg_wire_batch_each(&h, shard_item, &k) != SG_OK)
            SG_WARN("router", "shard.malformed", "shard=%s bytes=%zu reason=\"a damaged batch\"", s->name,
                    zframe_size(frame));
    } else {
        shard_heard(r, i);
        to_front(r, front, zframe_data(peer), zframe_size(peer), zframe_data(frame), zframe_size(frame));
    }
    zmsg_destroy(&m);
}

static json_t *frontends_json(rt_router_t *r);

static void ping_all(rt_router_t *r, zsock_t *front)
{
    json_decref(frontends_json(r));   /* forgets frontends that stopped their heartbeats */
    sg_wbuf_t w;
    sg_wbuf_init(&w, 256);
    if (sg_frame_probe(&w) == SG_OK) {
        for (size_t i = 0; i < r->n_shards; i++) {
            shard_t *s = &r->shards[i];
            if (send_pair(zsock_resolve(s->sock), "", 0, w.data, w.len) != 0)
                s->refused++;   /* a probe its full queue refused (probes are not counted as sent) */
            if (s->up && sg_mono_ms() - s->last_pong >= SHARD_DOWN_AFTER_MS) {
                s->up = false;
                atomic_fetch_sub(&r->shards_up, 1);
                SG_WARN("router", "shard.unreachable", "shard=%s endpoint=%s", s->name, s->endpoint);
            }
        }
    }
    sg_wbuf_fini(&w);
}

/* What the front and every shard socket hold, up to RT_DRAIN_MAX messages each (a flood on one
 * side never starves the others). */
static void drain_all(rt_router_t *r, zsock_t *front)
{
    zmsg_t *m;
    char uid[32];   /* the sender's role (sg_curve's ZAP handler) */
    for (int k = 0; k < RT_DRAIN_MAX && (m = sg_zmq_recv_nowait_from(front, uid, sizeof uid)); k++)
        on_front(r, front, m, sg_curve_peer_role(uid));
    for (size_t i = 0; i < r->n_shards; i++)
        for (int k = 0; k < RT_DRAIN_MAX && (m = sg_zmq_recv_nowait(r->shards[i].sock)); k++)
            on_shard(r, front, i, m);
}

static void router_actor(zsock_t *pipe, void *args)
{
    pthread_setname_np(pthread_self(), "sg-router");   /* top -H, perf and /proc show it */
    rt_router_t *r = args;
    zsock_t *front = zsock_new(ZMQ_ROUTER);
    bool ok = front != NULL;
    if (ok) {
        zsock_set_router_mandatory(front, 1);
        sg_curve_server(front);
        /* No high-water mark towards frontends and admins: what goes there answers their own
         * frames (a frontend keeps what it has on the way within cluster.credit, an admin within
         * its request limits) or is a delivery (each shard keeps those within a loop's credit),
         * so the queue of a stalled frontend is bounded without a mark that would drop them. */
        zsock_set_sndhwm(front, 0);
        zsock_set_rcvhwm(front, r->hwm);
        sg_zmq_link_liveness(front);
        ok = zsock_bind(front, "%s", r->endpoint) >= 0;
        if (ok && zsock_endpoint(front))
            snprintf(r->endpoint, sizeof r->endpoint, "%s", zsock_endpoint(front));
        if (!ok)
            SG_ERROR("router", "bind_failed", "endpoint=%s reason=\"%s\"", r->endpoint, zmq_strerror(zmq_errno()));
    }
    zpoller_t *poller = ok ? zpoller_new(pipe, front, NULL) : NULL;
    for (size_t i = 0; ok && i < r->n_shards; i++) {
        shard_t *s = &r->shards[i];
        sg_wire_batch_init(&s->out);
        s->sock = zsock_new(ZMQ_DEALER);
        if (!s->sock) {
            ok = false;
            break;
        }
        zsock_set_identity(s->sock, r->name);
        sg_curve_client(s->sock);
        zsock_set_sndhwm(s->sock, r->hwm);
        zsock_set_rcvhwm(s->sock, r->hwm);
        zsock_set_reconnect_ivl(s->sock, 100);
        zsock_set_reconnect_ivl_max(s->sock, 1000);
        sg_zmq_link_liveness(s->sock);   /* a shard gone without closing: connect again */
        if (zsock_connect(s->sock, "%s", s->endpoint) != 0) {
            SG_ERROR("router", "connect_failed", "shard=%s endpoint=%s", s->name, s->endpoint);
            ok = false;
            break;
        }
        zpoller_add(poller, s->sock);
    }
    r->ready = ok;
    zsock_signal(pipe, ok ? 0 : 1);
    if (ok) {
        SG_INFO("router", "ready", "router=%s endpoint=%s shards=%zu vnodes=%u", r->name, r->endpoint, r->n_shards,
                rt_ring_vnodes(r->ring));
        ping_all(r, front);
        int64_t next_ping = sg_mono_ms() + PING_EVERY_MS;
        for (;;) {
            int64_t wait = next_ping - sg_mono_ms();
            void *which = zpoller_wait(poller, wait > 0 ? (int)wait : 0);
            if (which == pipe)
                break;
            /* Everything every socket holds, up to a bound each, before anything goes out: the
             * poller names one socket, but when both shards' answers (or a shard's and the
             * frontends' publishes) wait together, they leave in one message per link instead of
             * one per socket that had them. Each message over TCP costs a CURVE box, a send and a
             * wake-up of the I/O thread on both sides: at the telemetry bench's load these are most
             * of a cluster's CPU beyond `sacgate all`'s. A socket with nothing costs one failed
             * receive (no wait: only what is already queued is taken). */
            if (which)
                drain_all(r, front);
            /* one message per link for all this pass took in */
            flush_all(r, front);
            if (sg_mono_ms() >= next_ping) {
                ping_all(r, front);
                next_ping = sg_mono_ms() + PING_EVERY_MS;
            }
        }
    }
    zpoller_destroy(&poller);
    for (size_t i = 0; i < r->n_shards; i++)
        zsock_destroy(&r->shards[i].sock);
    zsock_destroy(&front);
    sg_actor_end();
}

rt_router_t *rt_router_new(const sg_config_t *cfg, const char *name, const char *bind)
{
    rt_router_t *r = calloc(1, sizeof *r);
    char **names = NULL, **eps = NULL;
    size_t n = 0;
    if (!r)
        return NULL;
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->endpoint, sizeof r->endpoint, "%s", bind);
    r->hwm = (int)sg_config_int(cfg, "cluster.hwm");
    r->peers = zhashx_new();
    zhashx_set_destructor(r->peers, peer_free);
    r->dirty = zlist_new();
    if (rt_shard_list(cfg, &names, &eps, &n) != 0) {
        SG_ERROR("router", "config.invalid", "key=cluster.shards reason=\"give a comma-separated list of shard names or name=endpoint pairs\"");
        rt_shard_list_free(names, eps, n);
        free(r);
        return NULL;
    }
    r->ring = rt_ring_new((const char *const *)names, n, (unsigned)sg_config_int(cfg, "cluster.vnodes"));
    r->shards = calloc(n, sizeof *r->shards);
    r->incarnations = calloc(n ? n : 1, sizeof *r->incarnations);
    if (RAND_bytes((unsigned char *)&r->boot, sizeof r->boot) != 1 || r->boot == 0)
        r->boot = (uint64_t)sg_now_ms() | 1;
    if (n > SG_WIRE_MAX_SHARDS) {
        SG_ERROR("router", "config.invalid", "key=cluster.shards reason=\"at most %d shards\"", SG_WIRE_MAX_SHARDS);
        rt_shard_list_free(names, eps, n);
        rt_router_destroy(&r);
        return NULL;
    }
    if (!r->ring || !r->shards || !r->incarnations) {
        SG_ERROR("router", "config.invalid", "key=cluster.shards reason=\"shard names must be unique\"");
        rt_shard_list_free(names, eps, n);
        rt_router_destroy(&r);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        r->shards[i].name = names[i];
        r->shards[i].endpoint = eps[i];
    }
    r->n_shards = n;
    free(names);
    free(eps);
    r->actor = zactor_new(router_actor, r);
    if (!r->actor || !r->ready) {
        rt_router_destroy(&r);
        return NULL;
    }
    return r;
}

void rt_router_destroy(rt_router_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    rt_router_t *r = *self_p;
    zactor_destroy(&r->actor);
    for (size_t i = 0; i < r->n_shards; i++) {
        free(r->shards[i].name);
        free(r->shards[i].endpoint);
        sg_wire_batch_fini(&r->shards[i].out);
    }
    free(r->shards);
    free(r->incarnations);
    rt_ring_destroy(&r->ring);
    zhashx_destroy(&r->peers);
    zlist_destroy(&r->dirty);
    free(r);
    *self_p = NULL;
}

const char *rt_router_endpoint(const rt_router_t *self) { return self->endpoint; }

bool rt_router_ready(void *self, char *why, size_t why_len)
{
    rt_router_t *r = self;
    if (atomic_load(&r->shards_up) > 0)
        return true;
    snprintf(why, why_len, "none of the %zu shards has answered a probe in the last %d s", r->n_shards,
             SHARD_DOWN_AFTER_MS / 1000);
    return false;
}
