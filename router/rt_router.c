/* rt_router.c — the router actor; see rt_router.h.
 * Envelopes: front ROUTER receives [peer][frame]; each shard has its own DEALER (identity = this
 * router's name) that carries [peer][frame] both ways. The router decodes only the header, to
 * validate and route; bodies pass through untouched. Every socket has a high-water mark; a frame
 * that cannot be queued is answered with ERROR/BUSY rather than dropped silently. */
#include "rt_router.h"
#include <czmq.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "rt_ring.h"
#include "sg_curve.h"
#include "sg_log.h"
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
    int64_t last_pong;
    bool up;
    uint64_t incarnation;   /* from its PONGs: a new value means it restarted (0: not heard yet) */
    uint64_t sent, refused;
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
    zhashx_t *peers;     /* frontend routing id -> peer_t, from their heartbeats */
    uint64_t boot;       /* this start of the router: frontends see a restart in its PONGs */
    uint64_t *incarnations;   /* of every shard, for the PONGs (n_shards) */
};

typedef struct {
    int64_t last_seen;
    uint64_t connections;
} peer_t;

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

/* A frontend loop's heartbeat: remember it and its connection count for /v1/cluster, and answer
 * with a PONG so the frontend knows its router is there (its /readyz). */
static void on_heartbeat(rt_router_t *r, zsock_t *front, zframe_t *peer, const sg_wire_hdr_t *h)
{
    /* The PONG also carries this router's incarnation and every shard's: a frontend that missed
     * a SHARD_STATE (or whose router restarted) learns it here within a heartbeat. */
    sg_wire_hdr_t pong = sg_wire_hdr(SG_MSG_PONG, NULL);
    sg_wbuf_t w;
    sg_wbuf_init(&w, 64 + 8 * r->n_shards);
    for (size_t i = 0; i < r->n_shards; i++)
        r->incarnations[i] = r->shards[i].incarnation;
    if (sg_wire_encode_hdr(&w, &pong) == SG_OK &&
        sg_wire_put_router_pong(&w, r->boot, r->incarnations, (uint16_t)r->n_shards) == SG_OK)
        to_peer(front, peer, &w);
    sg_wbuf_fini(&w);
    const char *json;
    size_t len;
    char *id = zframe_strdup(peer);
    peer_t *p = zhashx_lookup(r->peers, id);
    if (!p) {
        p = calloc(1, sizeof *p);
        if (p)
            zhashx_insert(r->peers, id, p);
    }
    if (p) {
        p->last_seen = sg_mono_ms();
        json_t *b = sg_wire_get_json(h, &json, &len) == SG_OK ? json_loadb(json, len, 0, NULL) : NULL;
        p->connections = (uint64_t)json_integer_value(json_object_get(b, "connections"));
        json_decref(b);
    }
    free(id);
}

/* Frontends seen recently, summed over their loops: [{name, loops, connections}]. */
static json_t *frontends_json(rt_router_t *r)
{
    json_t *by_name = json_object();
    int64_t now = sg_mono_ms();
    zlist_t *stale = zlist_new();
    for (peer_t *p = zhashx_first(r->peers); p; p = zhashx_next(r->peers)) {
        const char *id = zhashx_cursor(r->peers);
        if (now - p->last_seen > PEER_FORGET_MS) {
            zlist_append(stale, (void *)id);
            continue;
        }
        size_t n = strcspn(id, "/");
        char name[SG_WIRE_MAX_PEER + 1];
        snprintf(name, sizeof name, "%.*s", (int)n, id);
        json_t *f = json_object_get(by_name, name);
        if (!f) {
            f = json_pack("{s:s,s:i,s:I}", "name", name, "loops", 0, "connections", (json_int_t)0);
            json_object_set_new(by_name, name, f);
        }
        json_object_set_new(f, "loops", json_integer(json_integer_value(json_object_get(f, "loops")) + 1));
        json_object_set_new(f, "connections",
                            json_integer(json_integer_value(json_object_get(f, "connections")) + (json_int_t)p->connections));
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

static void send_error(zsock_t *front, zframe_t *peer, const sg_wire_hdr_t *in, uint16_t code)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 512);
    if (sg_wire_put_error(&w, in, code) == SG_OK)
        to_peer(front, peer, &w);
    sg_wbuf_fini(&w);
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
    json_t *body = json_pack("{s:s,s:i,s:o,s:o,s:b,s:I,s:I,s:I}", "router", r->name, "vnodes",
                             (int)rt_ring_vnodes(r->ring), "shards", shards, "frontends", frontends_json(r), "ready", all_up, "relayedIn",
                             (json_int_t)r->relayed_in, "relayedOut", (json_int_t)r->relayed_out, "unroutable",
                             (json_int_t)r->unroutable);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_RING_RES, NULL);
    h.corr = in->corr;
    h.status = 200;
    sg_wbuf_t w;
    sg_wbuf_init(&w, SG_WIRE_MAX_FRAME);
    if (text && sg_wire_encode_hdr(&w, &h) == SG_OK && sg_wire_put_json(&w, text, strlen(text)) == SG_OK)
        to_peer(front, peer, &w);
    free(text);
    sg_wbuf_fini(&w);
}

/* [peer][frame] to shard i without blocking; false when its queue is full. */
static bool to_shard(rt_router_t *r, size_t i, zframe_t *peer, zframe_t *frame)
{
    shard_t *s = &r->shards[i];
    void *raw = zsock_resolve(s->sock);
    if (zmq_send(raw, zframe_data(peer), zframe_size(peer), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        s->refused++;
        return false;
    }
    /* The first part is queued, so the second cannot be refused for the high-water mark. */
    zmq_send(raw, zframe_data(frame), zframe_size(frame), 0);
    s->sent++;
    return true;
}

/* Pass a frontend loop's heartbeat on to every shard: shards end the sessions of a loop that
 * has gone silent (a crashed pod that never comes back under its name; store.peer_timeout). */
static void forward_alive(rt_router_t *r, zframe_t *peer)
{
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_ALIVE, NULL);
    sg_wbuf_t w;
    sg_wbuf_init(&w, 64);
    if (sg_wire_encode_hdr(&w, &h) == SG_OK) {
        zframe_t *f = zframe_new(w.data, w.len);
        for (size_t i = 0; i < r->n_shards; i++)
            if (to_shard(r, i, peer, f))
                r->shards[i].sent--;   /* not relayed traffic */
        zframe_destroy(&f);
    }
    sg_wbuf_fini(&w);
}

static void on_front(rt_router_t *r, zsock_t *front, zmsg_t *m)
{
    if (zmsg_size(m) != 2) {
        zmsg_destroy(&m);
        return;
    }
    zframe_t *peer = zmsg_first(m), *frame = zmsg_next(m);
    sg_wire_hdr_t h;
    if (sg_wire_decode(zframe_data(frame), zframe_size(frame), &h) != SG_OK) {
        SG_WARN("router", "frame.malformed", "peer=%.*s bytes=%zu", (int)zframe_size(peer),
                (const char *)zframe_data(peer), zframe_size(frame));
        zmsg_destroy(&m);
        return;
    }
    r->relayed_in++;
    if (h.type == SG_MSG_RING) {
        send_ring(r, front, peer, &h);
    } else if (h.type == SG_MSG_PING) {
        on_heartbeat(r, front, peer, &h);
        forward_alive(r, peer);
    } else if (h.type == SG_MSG_HELLO) {
        for (size_t i = 0; i < r->n_shards; i++)
            (void)to_shard(r, i, peer, frame);
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
        bool urgent = h.type == SG_MSG_AUTH || h.type == SG_MSG_ADMIN;
        if (i >= r->n_shards || (urgent && !r->shards[i].up && r->shards[i].last_pong != 0))
            send_error(front, peer, &h, SG_WIRE_ERR_NO_SHARD);
        else if (!to_shard(r, i, peer, frame))
            send_error(front, peer, &h, SG_WIRE_ERR_BUSY);
    }
    zmsg_destroy(&m);
}

/* Tell every frontend loop seen here which incarnation of shard i answers now: publishes the
 * earlier one took in and did not acknowledge are gone, and their devices must send them again
 * (frontends close those connections; MQTT 3.1.1 devices resend on reconnect). */
static void shard_state(rt_router_t *r, zsock_t *front, size_t i)
{
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_SHARD_STATE, NULL);
    h.shard = (uint32_t)i;
    sg_wbuf_t w;
    sg_wbuf_init(&w, 64);
    if (sg_wire_encode_hdr(&w, &h) == SG_OK && sg_wire_put_u64(&w, r->shards[i].incarnation) == SG_OK) {
        for (peer_t *p = zhashx_first(r->peers); p; p = zhashx_next(r->peers)) {
            const char *id = zhashx_cursor(r->peers);
            zframe_t *peer = zframe_new(id, strlen(id));
            to_peer(front, peer, &w);
            zframe_destroy(&peer);
        }
    }
    sg_wbuf_fini(&w);
}

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
        zmsg_destroy(&m);
        return;
    }
    if (h.type == SG_MSG_PONG) {
        s->last_pong = sg_mono_ms();
        if (!s->up) {
            SG_INFO("router", "shard.reachable", "shard=%s endpoint=%s", s->name, s->endpoint);
            atomic_fetch_add(&r->shards_up, 1);
        }
        s->up = true;
        const char *name;
        size_t len;
        uint64_t inc;
        if (sg_wire_get_shard_pong(&h, &name, &len, &inc) == SG_OK && inc != s->incarnation) {
            if (s->incarnation)
                SG_WARN("router", "shard.restarted", "shard=%s reason=\"a new incarnation answers: frontends end the "
                        "connections whose publishes it never acknowledged\"", s->name);
            s->incarnation = inc;
            shard_state(r, front, i);
        }
        zmsg_destroy(&m);
        return;
    }
    zframe_t *peer_copy = zframe_dup(peer);
    if (sg_zmq_send_nowait(front, &m) == 0) {
        r->relayed_out++;
    } else {
        int err = errno;
        r->unroutable++;
        if (err == EAGAIN)
            SG_WARN("router", "peer.full", "peer=%.*s type=%s reason=\"peer's queue at its high-water mark; frame dropped\"",
                    (int)zframe_size(peer_copy), (const char *)zframe_data(peer_copy), sg_wire_type_name(h.type));
        /* A push for a session whose frontend is gone: tell the shard so it ends the session.
         * (h points into m: encode before m is destroyed.) */
        /* ...but only for a loop that was connected here: one it never saw may be connected to
         * another router, and the session must not be ended for it. */
        char *pid = zframe_strdup(peer_copy);
        bool known = zhashx_lookup(r->peers, pid) != NULL;
        free(pid);
        if (err == EHOSTUNREACH && known && (h.type == SG_MSG_DELIVER || h.type == SG_MSG_KICK)) {
            sg_wire_hdr_t g = sg_wire_hdr(SG_MSG_PEER_GONE, NULL);
            g.device = h.device;
            g.device_len = h.device_len;
            g.epoch = h.epoch;
            g.corr = h.corr;
            sg_wbuf_t w;
            sg_wbuf_init(&w, 512);
            if (sg_wire_encode_hdr(&w, &g) == SG_OK) {
                zframe_t *f = zframe_new(w.data, w.len);
                (void)to_shard(r, i, peer_copy, f);
                zframe_destroy(&f);
            }
            sg_wbuf_fini(&w);
        }
        SG_DEBUG("router", "peer.unreachable", "peer=%.*s type=%s", (int)zframe_size(peer_copy),
                 (const char *)zframe_data(peer_copy), sg_wire_type_name(h.type));
        zmsg_destroy(&m);
    }
    zframe_destroy(&peer_copy);
}

static json_t *frontends_json(rt_router_t *r);

static void ping_all(rt_router_t *r)
{
    json_decref(frontends_json(r));   /* forgets frontends that stopped their heartbeats */
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_PING, NULL);
    sg_wbuf_t w;
    sg_wbuf_init(&w, 256);
    if (sg_wire_encode_hdr(&w, &h) == SG_OK) {
        zframe_t *empty = zframe_new(NULL, 0), *f = zframe_new(w.data, w.len);
        for (size_t i = 0; i < r->n_shards; i++) {
            shard_t *s = &r->shards[i];
            if (to_shard(r, i, empty, f))
                s->sent--;   /* probes are not relayed traffic */
            if (s->up && sg_mono_ms() - s->last_pong >= SHARD_DOWN_AFTER_MS) {
                s->up = false;
                atomic_fetch_sub(&r->shards_up, 1);
                SG_WARN("router", "shard.unreachable", "shard=%s endpoint=%s", s->name, s->endpoint);
            }
        }
        zframe_destroy(&empty);
        zframe_destroy(&f);
    }
    sg_wbuf_fini(&w);
}

static void router_actor(zsock_t *pipe, void *args)
{
    rt_router_t *r = args;
    zsock_t *front = zsock_new(ZMQ_ROUTER);
    bool ok = front != NULL;
    if (ok) {
        zsock_set_router_mandatory(front, 1);
        sg_curve_server(front);
        zsock_set_sndhwm(front, r->hwm);
        zsock_set_rcvhwm(front, r->hwm);
        ok = zsock_bind(front, "%s", r->endpoint) >= 0;
        if (ok && zsock_endpoint(front))
            snprintf(r->endpoint, sizeof r->endpoint, "%s", zsock_endpoint(front));
        if (!ok)
            SG_ERROR("router", "bind_failed", "endpoint=%s reason=\"%s\"", r->endpoint, zmq_strerror(zmq_errno()));
    }
    zpoller_t *poller = ok ? zpoller_new(pipe, front, NULL) : NULL;
    for (size_t i = 0; ok && i < r->n_shards; i++) {
        shard_t *s = &r->shards[i];
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
        ping_all(r);
        int64_t next_ping = sg_mono_ms() + PING_EVERY_MS;
        for (;;) {
            int64_t wait = next_ping - sg_mono_ms();
            void *which = zpoller_wait(poller, wait > 0 ? (int)wait : 0);
            if (which == pipe)
                break;
            /* Everything the socket holds, up to a bound (the others get their turn). */
            zmsg_t *m;
            if (which == front) {
                for (int k = 0; k < RT_DRAIN_MAX && (m = sg_zmq_recv_nowait(front)); k++)
                    on_front(r, front, m);
            } else if (which) {
                for (size_t i = 0; i < r->n_shards; i++)
                    if (which == r->shards[i].sock)
                        for (int k = 0; k < RT_DRAIN_MAX && (m = sg_zmq_recv_nowait(which)); k++)
                            on_shard(r, front, i, m);
            }
            if (sg_mono_ms() >= next_ping) {
                ping_all(r);
                next_ping = sg_mono_ms() + PING_EVERY_MS;
            }
        }
    }
    zpoller_destroy(&poller);
    for (size_t i = 0; i < r->n_shards; i++)
        zsock_destroy(&r->shards[i].sock);
    zsock_destroy(&front);
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
    zhashx_set_destructor(r->peers, (zhashx_destructor_fn *)zstr_free);
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
    }
    free(r->shards);
    free(r->incarnations);
    rt_ring_destroy(&r->ring);
    zhashx_destroy(&r->peers);
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
