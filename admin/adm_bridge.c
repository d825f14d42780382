/* adm_bridge.c — correlation of admin requests with router answers; see adm_bridge.h. */
#include "adm_bridge.h"
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "rt_ring.h"
#include "sg_frame.h"
#include "sg_log.h"
#include "sg_zmq.h"
#include "sg_curve.h"
#include "sg_time.h"
#include "sg_wire.h"

#define RING_REFRESH_MS 5000
#define BUSY_FIRST_MS 20
#define BUSY_MAX_MS 1000

typedef struct {
    zframe_t **frames;
    adm_part_t *parts;
    int n, left;
    int64_t deadline;
    adm_done_fn done;
    void *arg;
    bool retry_busy;
    bool any;                 /* done at the first answer (adm_bridge_submit_any) */
} sub_t;

typedef struct {
    sub_t *sub;
    int index;
    int64_t deadline;
    zframe_t *frame;          /* kept to send again when refused as busy (retry_busy only) */
    int64_t backoff_ms;
    int64_t resend_at;        /* 0 = waiting for an answer, else when to send again */
} pending_t;

struct adm_bridge {
    zactor_t *actor;
    zsock_t *push;            /* HTTP threads -> bridge; used only under lock */
    char ep[128];
    char routers[1024];
    char name[96];
    int hwm;
    _Atomic int shards;
    bool ready;
    bool stopped;
    pthread_mutex_t lock;     /* push (a ZeroMQ socket is one thread's at a time: the HTTP pool's
                               * threads take turns) and stopped */
    pthread_mutex_t ring_lock;
    rt_ring_t *ring;          /* under ring_lock: replaced by the bridge, read by HTTP threads */
    char *ring_sig;           /* bridge thread only: "vnodes:name,name,..." the ring was built from */
};

typedef struct {
    adm_bridge_t *b;
    zsock_t *pull, *dealer;
    zhashx_t *pending;        /* "%llx" corr -> pending_t */
    uint64_t next_corr;
    int64_t next_ring;
    uint64_t ring_corr;
    int64_t next_resend;      /* earliest resend_at of a busy part, 0 = none waits */
} bridge_t;

static void pending_free(void **item)
{
    pending_t *p = *item;
    if (!p)
        return;
    zframe_destroy(&p->frame);
    free(p);
    *item = NULL;
}

static void part_set(adm_part_t *p, int status, const char *json, size_t len, bool page)
{
    p->status = status;
    p->page = page;
    p->json = malloc(len + 1);
    if (p->json) {
        memcpy(p->json, json, len);
        p->json[len] = 0;
        p->len = len;
    } else {
        p->status = 500;
        p->len = 0;
    }
}

static void sub_finish_one(sub_t *s)
{
    if (--s->left == 0) {
        s->done(s->arg);
        free(s->frames);
        free(s);
    }
}

/* An any-mode submission got its first answer: its other parts are forgotten. */
static void forget_rest(bridge_t *br, sub_t *s)
{
    zlist_t *keys = zlist_new();
    zlist_autofree(keys);
    for (pending_t *p = zhashx_first(br->pending); p; p = zhashx_next(br->pending))
        if (p->sub == s)
            zlist_append(keys, (void *)zhashx_cursor(br->pending));
    for (const char *key = zlist_first(keys); key; key = zlist_next(keys)) {
        zhashx_delete(br->pending, key);
        s->left--;
    }
    zlist_destroy(&keys);
}

/* Part p (under key) is answered. */
static void part_answered(bridge_t *br, const char *key, pending_t *p, int status, const char *json, size_t len,
                          bool page)
{
    sub_t *s = p->sub;
    part_set(&s->parts[p->index], status, json, len, page);
    zhashx_delete(br->pending, key);
    if (s->any)
        forget_rest(br, s);
    sub_finish_one(s);
}

static void corr_key(uint64_t corr, char key[24]) { snprintf(key, 24, "%llx", (unsigned long long)corr); }

static void send_ring_probe(bridge_t *br)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 256);
    if (sg_frame_ring(&w, br->ring_corr = ++br->next_corr) == SG_OK)
        zmq_send(zsock_resolve(br->dealer), w.data, w.len, ZMQ_DONTWAIT);
    sg_wbuf_fini(&w);
}

static void on_submit(bridge_t *br)
{
    zframe_t *f = zframe_recv(br->pull);
    if (!f)
        return;
    sub_t *s = NULL;
    if (zframe_size(f) == sizeof s)
        memcpy(&s, zframe_data(f), sizeof s);
    zframe_destroy(&f);
    if (!s)
        return;
    /* One reference per frame plus one for this loop, so s outlives the loop even when every
     * frame is answered (or refused) inside it. */
    int n = s->n;
    s->left = n + 1;
    for (int i = 0; i < n; i++) {
        uint64_t corr = ++br->next_corr;
        uint8_t *d = zframe_data(s->frames[i]);
        if (sg_wire_set_corr(d, zframe_size(s->frames[i]), corr) != SG_OK)
            abort();   /* built by this bridge: always a whole header */
        if (zmq_send(zsock_resolve(br->dealer), d, zframe_size(s->frames[i]), ZMQ_DONTWAIT) < 0) {
            const char *e = "{\"error\":\"Unavailable\",\"message\":\"the router link is full or down; retry later\"}";
            part_set(&s->parts[i], 503, e, strlen(e), false);
            zframe_destroy(&s->frames[i]);
            sub_finish_one(s);
            continue;
        }
        pending_t *p = calloc(1, sizeof *p);
        p->sub = s;
        p->index = i;
        p->deadline = s->deadline;
        if (s->retry_busy)
            p->frame = s->frames[i];   /* sent again as it is (same corr) if refused as busy */
        else
            zframe_destroy(&s->frames[i]);
        s->frames[i] = NULL;
        char key[24];
        corr_key(corr, key);
        zhashx_insert(br->pending, key, p);
    }
    sub_finish_one(s);
}

/* Rebuild the ring when the routers report other shard names or vnodes than it was built from.
 * The names come in partition order; the ring's index of a shard is its partition. */
static void ring_update(adm_bridge_t *b, const json_t *ring)
{
    json_t *shards = json_object_get(ring, "shards");
    json_int_t vnodes = json_integer_value(json_object_get(ring, "vnodes"));
    size_t n = json_array_size(shards);
    if (n == 0 || vnodes <= 0 || vnodes > 65536)
        return;
    const char **names = calloc(n, sizeof *names);
    sg_wbuf_t sig;   /* "vnodes:name,name,...": names come from a comma-separated list */
    sg_wbuf_init(&sig, 1u << 20);
    char head[24];
    int hl = snprintf(head, sizeof head, "%lld:", (long long)vnodes);
    bool ok = names && sg_wbuf_bytes(&sig, head, (size_t)hl) == SG_OK;
    size_t i;
    json_t *s;
    json_array_foreach(shards, i, s) {
        json_int_t part = json_integer_value(json_object_get(s, "partition"));
        const char *name = json_string_value(json_object_get(s, "name"));
        ok = ok && name && part == (json_int_t)i && sg_wbuf_bytes(&sig, name, strlen(name)) == SG_OK &&
             sg_wbuf_u8(&sig, i + 1 < n ? ',' : 0) == SG_OK;
        if (ok)
            names[i] = name;
    }
    if (ok && !(b->ring_sig && strcmp(b->ring_sig, (const char *)sig.data) == 0)) {
        rt_ring_t *fresh = rt_ring_new(names, n, (unsigned)vnodes);
        char *text = fresh ? strdup((const char *)sig.data) : NULL;
        if (text) {
            pthread_mutex_lock(&b->ring_lock);
            rt_ring_t *old = b->ring;
            b->ring = fresh;
            pthread_mutex_unlock(&b->ring_lock);
            rt_ring_destroy(&old);
            free(b->ring_sig);
            b->ring_sig = text;
            SG_INFO("admin", "ring.updated", "shards=%zu vnodes=%lld", n, (long long)vnodes);
        } else {
            rt_ring_destroy(&fresh);
            SG_WARN("admin", "ring.invalid", "shards=%zu vnodes=%lld reason=\"the routers' shard names cannot form a ring\"",
                    n, (long long)vnodes);
        }
    }
    sg_wbuf_fini(&sig);
    free(names);
}

/* A busy refusal of a part that may be retried: schedule it again after a doubling backoff, or
 * return false when the next try would come after its deadline (it is answered as busy). */
static bool retry_later(bridge_t *br, pending_t *p)
{
    if (!p->frame)
        return false;
    int64_t now = sg_mono_ms();
    int64_t backoff = p->backoff_ms ? p->backoff_ms * 2 : BUSY_FIRST_MS;
    if (backoff > BUSY_MAX_MS)
        backoff = BUSY_MAX_MS;
    if (now + backoff >= p->deadline)
        return false;
    p->backoff_ms = backoff;
    p->resend_at = now + backoff;
    SG_DEBUG("admin", "bridge.busy_retry", "backoff_ms=%lld", (long long)backoff);
    if (!br->next_resend || p->resend_at < br->next_resend)
        br->next_resend = p->resend_at;
    return true;
}

/* Send again the busy parts whose backoff is over; a send refused locally counts as busy too. */
static void resend_due(bridge_t *br)
{
    int64_t now = sg_mono_ms();
    if (!br->next_resend || now < br->next_resend)
        return;
    br->next_resend = 0;
    for (pending_t *p = zhashx_first(br->pending); p; p = zhashx_next(br->pending)) {
        if (!p->resend_at)
            continue;
        if (p->resend_at <= now) {
            p->resend_at = 0;
            if (zmq_send(zsock_resolve(br->dealer), zframe_data(p->frame), zframe_size(p->frame), ZMQ_DONTWAIT) >= 0 ||
                !retry_later(br, p))
                continue;   /* a part that cannot be retried any more times out at its deadline */
        }
        if (p->resend_at && (!br->next_resend || p->resend_at < br->next_resend))
            br->next_resend = p->resend_at;
    }
}

static void on_answer(bridge_t *br)
{
    zframe_t *f = zframe_recv(br->dealer);
    if (!f)
        return;
    sg_wire_hdr_t h;
    if (sg_wire_decode(zframe_data(f), zframe_size(f), &h) != SG_OK) {
        SG_WARN("admin", "bridge.malformed", "bytes=%zu", zframe_size(f));
        zframe_destroy(&f);
        return;
    }
    const char *json = "";
    size_t len = 0;
    int status = h.status;
    bool page = false;
    if (h.type == SG_MSG_ADMIN_RES && (h.flags & SG_WIRE_F_PAGE)) {
        json = (const char *)h.body;   /* a compact telemetry page, rendered by the request */
        len = h.body_len;
        page = true;
    } else if (h.type == SG_MSG_ERROR) {
        json = h.status == SG_WIRE_ERR_BUSY
                   ? "{\"error\":\"Busy\",\"message\":\"the shard's queue is full; retry later\"}"
                   : "{\"error\":\"ShardUnavailable\",\"message\":\"no shard could take the request\"}";
        len = strlen(json);
        status = 503;
    } else if (sg_wire_get_json(&h, &json, &len) != SG_OK) {
        json = "{\"error\":\"Internal\",\"message\":\"malformed answer from the cluster\"}";
        len = strlen(json);
        status = 502;
    }
    if (h.type == SG_MSG_RING_RES && h.corr == br->ring_corr) {
        json_t *ring = json_loadb(json, len, 0, NULL);
        if (ring) {
            ring_update(br->b, ring);
            atomic_store(&br->b->shards, (int)json_array_size(json_object_get(ring, "shards")));
        }
        json_decref(ring);
    }
    char key[24];
    corr_key(h.corr, key);
    pending_t *p = zhashx_lookup(br->pending, key);
    if (p && h.type == SG_MSG_ERROR && h.status == SG_WIRE_ERR_BUSY && retry_later(br, p)) {
        zframe_destroy(&f);
        return;
    }
    if (p)
        part_answered(br, key, p, status, json, len, page);
    zframe_destroy(&f);
}

/* Answer the parts whose deadline passed: 504, the outcome unknown (a write may have been
 * applied). At shutdown every waiting part, with a message that says so. */
static void expire(bridge_t *br, bool stopping)
{
    int64_t now = sg_mono_ms();
    zlist_t *due = zlist_new();
    zlist_autofree(due);   /* copies: an any-mode answer below may delete other keys */
    for (pending_t *p = zhashx_first(br->pending); p; p = zhashx_next(br->pending))
        if (p->deadline <= now)
            zlist_append(due, (void *)zhashx_cursor(br->pending));
    for (const char *key = zlist_first(due); key; key = zlist_next(due)) {
        pending_t *p = zhashx_lookup(br->pending, key);
        if (!p)
            continue;   /* forgotten with an any-mode submission answered meanwhile */
        const char *e = stopping ? "{\"error\":\"Timeout\",\"message\":\"the gateway is shutting down: the cluster "
                                   "did not answer before it stopped waiting\"}"
                                 : "{\"error\":\"Timeout\",\"message\":\"the cluster did not answer in time\"}";
        part_answered(br, key, p, 504, e, strlen(e), false);
    }
    zlist_destroy(&due);
}

static void bridge_actor(zsock_t *pipe, void *args)
{
    pthread_setname_np(pthread_self(), "sg-adm-bridge");   /* top -H, perf and /proc show it */
    bridge_t br = {.b = args};
    br.pull = zsock_new_pull(br.b->ep);
    br.dealer = zsock_new(ZMQ_DEALER);
    br.pending = zhashx_new();
    zhashx_set_destructor(br.pending, pending_free);
    bool ok = br.pull && br.dealer;
    if (ok) {
        zsock_set_identity(br.dealer, br.b->name);
        sg_curve_client(br.dealer);
        zsock_set_sndhwm(br.dealer, br.b->hwm);
        zsock_set_rcvhwm(br.dealer, br.b->hwm);
        zsock_set_reconnect_ivl(br.dealer, 100);
        zsock_set_reconnect_ivl_max(br.dealer, 2000);
        sg_zmq_link_liveness(br.dealer);
        char *list = strdup(br.b->routers), *save = NULL;
        for (char *ep = list ? strtok_r(list, ",", &save) : NULL; ep; ep = strtok_r(NULL, ",", &save))
            if (zsock_connect(br.dealer, "%s", ep) != 0) {
                SG_ERROR("admin", "bridge.connect_failed", "endpoint=%s", ep);
                ok = false;
            }
        free(list);
    }
    br.b->ready = ok;
    zsock_signal(pipe, ok ? 0 : 1);
    zpoller_t *poller = ok ? zpoller_new(pipe, br.pull, br.dealer, NULL) : NULL;
    while (ok) {
        int64_t now = sg_mono_ms();
        if (now >= br.next_ring) {
            send_ring_probe(&br);
            br.next_ring = now + (atomic_load(&br.b->shards) ? RING_REFRESH_MS : 200);
        }
        int wait = 100;
        if (br.next_resend)
            wait = br.next_resend <= now ? 0 : br.next_resend - now < wait ? (int)(br.next_resend - now) : wait;
        void *which = zpoller_wait(poller, wait);
        if (which == pipe)
            break;
        if (which == br.pull)
            on_submit(&br);
        else if (which == br.dealer)
            on_answer(&br);
        resend_due(&br);
        expire(&br, false);
    }
    /* Answer whatever still waits so no HTTP request stays suspended. */
    while (ok && (zsock_events(br.pull) & ZMQ_POLLIN)) {
        zframe_t *f = zframe_recv(br.pull);
        sub_t *s = NULL;
        if (f && zframe_size(f) == sizeof s)
            memcpy(&s, zframe_data(f), sizeof s);
        zframe_destroy(&f);
        for (int i = 0; s && i < s->n; i++) {
            const char *e = "{\"error\":\"Unavailable\",\"message\":\"shutting down\"}";
            part_set(&s->parts[i], 503, e, strlen(e), false);
            zframe_destroy(&s->frames[i]);
        }
        if (s) {
            s->left = 1;
            sub_finish_one(s);
        }
    }
    for (pending_t *p = zhashx_first(br.pending); p; p = zhashx_next(br.pending))
        p->deadline = 0;
    expire(&br, true);
    zpoller_destroy(&poller);
    zhashx_destroy(&br.pending);
    zsock_destroy(&br.pull);
    zsock_destroy(&br.dealer);
    sg_actor_end();
}

adm_bridge_t *adm_bridge_new(const char *routers, const char *name, int hwm)
{
    adm_bridge_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    snprintf(b->routers, sizeof b->routers, "%s", routers);
    snprintf(b->name, sizeof b->name, "%s", name);
    snprintf(b->ep, sizeof b->ep, "inproc://adm-bridge-%p", (void *)b);
    pthread_mutex_init(&b->lock, NULL);
    pthread_mutex_init(&b->ring_lock, NULL);
    b->hwm = hwm;
    b->actor = zactor_new(bridge_actor, b);
    if (!b->actor || !b->ready) {
        adm_bridge_destroy(&b);
        return NULL;
    }
    b->push = zsock_new_push(b->ep);
    if (!b->push) {
        adm_bridge_destroy(&b);
        return NULL;
    }
    zsock_set_sndhwm(b->push, 0);
    return b;
}

void adm_bridge_stop(adm_bridge_t *self)
{
    if (!self)
        return;
    /* After this no submission reaches the actor, and the actor answers what it already has. */
    pthread_mutex_lock(&self->lock);
    self->stopped = true;
    pthread_mutex_unlock(&self->lock);
    zactor_destroy(&self->actor);
}

void adm_bridge_destroy(adm_bridge_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    adm_bridge_t *b = *self_p;
    adm_bridge_stop(b);
    zsock_destroy(&b->push);
    pthread_mutex_destroy(&b->lock);
    pthread_mutex_destroy(&b->ring_lock);
    rt_ring_destroy(&b->ring);
    free(b->ring_sig);
    free(b);
    *self_p = NULL;
}

static sg_rc submit(adm_bridge_t *self, zframe_t **frames, adm_part_t *parts, int n, int64_t timeout_ms,
                    adm_done_fn done, void *arg, bool retry_busy, bool any)
{
    sub_t *s = calloc(1, sizeof *s);
    zframe_t **copy = malloc((size_t)n * sizeof *copy);
    if (!s || !copy || n <= 0) {
        free(s);
        free(copy);
        return SG_E_NOMEM;
    }
    memcpy(copy, frames, (size_t)n * sizeof *copy);
    s->frames = copy;
    s->parts = parts;
    s->n = n;
    s->deadline = sg_mono_ms() + timeout_ms;
    s->done = done;
    s->arg = arg;
    s->retry_busy = retry_busy;
    s->any = any;
    /* Never blocks; once stopped the caller answers 503 instead. The lock also hands the push
     * socket from one HTTP thread to the next with the memory barrier ZeroMQ asks for. */
    pthread_mutex_lock(&self->lock);
    bool ok = !self->stopped && zmq_send(zsock_resolve(self->push), &s, sizeof s, ZMQ_DONTWAIT) == (int)sizeof s;
    pthread_mutex_unlock(&self->lock);
    if (!ok) {
        free(copy);
        free(s);
        return SG_E_UNAVAILABLE;
    }
    return SG_OK;
}

sg_rc adm_bridge_submit(adm_bridge_t *self, zframe_t **frames, adm_part_t *parts, int n, int64_t timeout_ms,
                        adm_done_fn done, void *arg)
{
    return submit(self, frames, parts, n, timeout_ms, done, arg, false, false);
}

sg_rc adm_bridge_submit_any(adm_bridge_t *self, zframe_t **frames, adm_part_t *parts, int n, int64_t timeout_ms,
                            adm_done_fn done, void *arg)
{
    return submit(self, frames, parts, n, timeout_ms, done, arg, false, true);
}

sg_rc adm_bridge_submit_retrying(adm_bridge_t *self, zframe_t **frames, adm_part_t *parts, int n,
                                 int64_t timeout_ms, adm_done_fn done, void *arg)
{
    return submit(self, frames, parts, n, timeout_ms, done, arg, true, false);
}

int adm_bridge_shards(const adm_bridge_t *self) { return atomic_load(&self->shards); }

int adm_bridge_shard_of(adm_bridge_t *self, const char *id, size_t len)
{
    pthread_mutex_lock(&self->ring_lock);
    size_t i = rt_ring_lookup(self->ring, id, len);
    pthread_mutex_unlock(&self->ring_lock);
    return i == RT_RING_NONE ? -1 : (int)i;
}

zframe_t *adm_bridge_admin_frame(const char *id, uint32_t shard, uint16_t op, const char *json, size_t len)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, SG_WIRE_MAX_FRAME);
    zframe_t *f = NULL;
    if (sg_frame_admin(&w, id, shard, op, json, len) == SG_OK)
        f = zframe_new(w.data, w.len);
    sg_wbuf_fini(&w);
    return f;
}
