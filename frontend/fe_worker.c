/* fe_worker.c — one frontend event-loop thread: its listener, its router link (a DEALER whose
 * edge-triggered ZMQ_FD sits in the same epoll set and is drained after every wake-up), its
 * table of connections by handle, and the list of connections waiting for room on the link. */
#include <pthread.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include "fe_internal.h"
#include "fe_worker.h"
#include "sg_frame.h"
#include "sg_log.h"
#include "sg_curve.h"
#include "sg_zmq.h"
#include "sg_time.h"

#define ACCEPTS_PER_WAKE 64

/* Frames waiting for room on the link: the backlog, and the pass's batch while the link is full. */
static uint32_t link_waiting(const fe_worker_t *w) { return w->n_backlog + (w->link_full ? w->out.n : 0); }

/* Bookkeeping has to wait: the start of a wait is logged (sg_log cuts a flapping link's lines to
 * its rate per event); the peaks are kept. */
static void wait_started(fe_worker_t *w)
{
    if (!w->waiting) {
        w->waiting = true;
        w->wait_since = sg_mono_ms();
        w->wait_run_peak = 0;
        SG_WARN("frontend", "link.backlog", "thread=%d reason=\"the router link is full: session bookkeeping "
                "waits in order and the connections it came from stop being read\"", w->index);
    }
    uint32_t n = link_waiting(w);
    if (n > w->wait_run_peak)
        w->wait_run_peak = n;
    if (n > w->wait_peak)
        w->wait_peak = n;
}

/* A send went through: once nothing waits any more, the wait is over. */
static void link_room(fe_worker_t *w)
{
    w->link_full = false;
    if (!w->waiting || w->n_backlog > 0)
        return;
    w->waiting = false;
    SG_INFO("frontend", "link.backlog_sent", "thread=%d peak=%u waited_ms=%lld", w->index, w->wait_run_peak,
            (long long)(sg_mono_ms() - w->wait_since));
}

/* Send what the loop pass put in w->out (one BATCH frame, or a frame alone). SG_E_FULL while the
 * link is at its high-water mark: kept, sent by a later flush. */
sg_rc fe_link_flush(fe_worker_t *w)
{
    if (w->out.n == 0)
        return SG_OK;
    const uint8_t *f, *peer;
    size_t len, peer_len;
    sg_wire_batch_out(&w->out, &f, &len, &peer, &peer_len);
    if (zmq_send(w->link_raw, f, len, ZMQ_DONTWAIT) < 0) {
        if (errno == EAGAIN) {
            w->link_full = true;
            return SG_E_FULL;
        }
        SG_WARN("frontend", "link.send_failed", "frames=%u reason=\"%s\"", w->out.n, zmq_strerror(errno));
    } else {
        w->link_sends++;
    }
    sg_wire_batch_clear(&w->out);
    link_room(w);
    return SG_OK;
}

/* A frame for the router: into this pass's batch when the router takes batches (sent by
 * fe_link_flush at the end of the pass, so a pass that reads many publishes pays one CURVE box
 * and one send for all of them), else at once. SG_E_FULL when the link is full. */
sg_rc fe_link_send(fe_worker_t *w, const sg_wbuf_t *frame)
{
    if (w->n_backlog > 0)
        return SG_E_FULL;   /* queued frames go first: a device's frames stay in order */
    if (w->router_batches && sg_wire_batchable(0, frame->len)) {
        if (!sg_wire_batch_fits(&w->out, 0, frame->len))
            SG_GUARD(fe_link_flush(w));
        return sg_wire_batch_add(&w->out, NULL, 0, frame->data, frame->len) == SG_OK ? SG_OK : SG_E_IO;
    }
    SG_GUARD(fe_link_flush(w));   /* what is in the batch is older */
    if (zmq_send(w->link_raw, frame->data, frame->len, ZMQ_DONTWAIT) >= 0) {
        w->link_sends++;
        link_room(w);
        return SG_OK;
    }
    if (errno != EAGAIN)
        return SG_E_IO;
    w->link_full = true;
    return SG_E_FULL;
}

/* Keep a copy of frame at the end of the backlog. */
static sg_rc backlog_push(fe_worker_t *w, const sg_wbuf_t *frame)
{
    if (w->n_backlog == w->cap_backlog) {
        /* a ring buffer that doubles; copy the live part to the front of the new array */
        uint32_t cap = w->cap_backlog ? w->cap_backlog * 2 : 256;
        zmq_msg_t *b = cap > w->cap_backlog ? malloc(cap * sizeof *b) : NULL;
        if (!b)
            return SG_E_NOMEM;
        for (uint32_t i = 0; i < w->n_backlog; i++)
            memcpy(&b[i], &w->backlog[(w->head_backlog + i) % w->cap_backlog], sizeof *b);
        free(w->backlog);
        w->backlog = b;
        w->cap_backlog = cap;
        w->head_backlog = 0;
    }
    zmq_msg_t *m = &w->backlog[(w->head_backlog + w->n_backlog) % w->cap_backlog];
    if (zmq_msg_init_size(m, frame->len) != 0)
        return SG_E_NOMEM;
    memcpy(zmq_msg_data(m), frame->data, frame->len);
    w->n_backlog++;
    return SG_OK;
}

sg_rc fe_link_send_queued(fe_worker_t *w, const sg_wbuf_t *frame)
{
    sg_rc rc = fe_link_send(w, frame);
    if (rc == SG_OK && !w->link_full)
        return SG_OK;
    /* No cap to drop beyond: what waits is bounded by the connections (fe_internal.h). */
    if (rc != SG_OK && backlog_push(w, frame) != SG_OK) {
        SG_ERROR("frontend", "link.backlog_lost", "type=%s frames=%u reason=\"out of memory\"",
                 sg_wire_type_name(frame->len > 1 ? frame->data[1] : 0), w->n_backlog);
        return SG_E_NOMEM;
    }
    wait_started(w);   /* in the backlog, or in the pass's batch that waits for room too */
    return SG_E_FULL;
}

/* Send queued bookkeeping frames while the link has room. */
static void flush_backlog(fe_worker_t *w)
{
    if (fe_link_flush(w) != SG_OK)
        return;   /* the batch is older than the backlog */
    while (w->n_backlog > 0) {
        zmq_msg_t *m = &w->backlog[w->head_backlog];
        if (zmq_msg_send(m, w->link_raw, ZMQ_DONTWAIT) < 0) {
            w->link_full = errno == EAGAIN;
            return;
        }
        w->link_sends++;
        w->head_backlog = (w->head_backlog + 1) % w->cap_backlog;
        w->n_backlog--;
    }
    link_room(w);
}

void fe_worker_block(fe_worker_t *w, fe_conn_t *c)
{
    if (c->flags & FE_F_BLOCKED)
        return;
    fe_conn_t **b = realloc(w->blocked, (w->n_blocked + 1) * sizeof *b);
    if (!b) {
        fe_conn_close(c, "out-of-memory");
        return;
    }
    w->blocked = b;
    w->blocked[w->n_blocked++] = c;
    c->flags |= FE_F_BLOCKED;
}

void fe_worker_unblock_conn(fe_worker_t *w, fe_conn_t *c)
{
    if (!(c->flags & FE_F_BLOCKED))
        return;
    for (uint32_t i = 0; i < w->n_blocked; i++)
        if (w->blocked[i] == c) {
            w->blocked[i] = w->blocked[--w->n_blocked];
            break;
        }
    c->flags &= (uint16_t)~FE_F_BLOCKED;
}

void fe_worker_release_slot(fe_worker_t *w, fe_conn_t *c)
{
    fe_worker_unblock_conn(w, c);
    w->slots[c->slot] = NULL;
    w->gens[c->slot]++;
    w->free_slots[w->n_free++] = c->slot;
}

/* Connections blocked on a full link retry once it has room again. */
static void unblock(fe_worker_t *w)
{
    while (w->n_blocked > 0 && w->n_backlog == 0 && (zsock_events(w->link) & ZMQ_POLLOUT)) {
        fe_conn_t *c = w->blocked[--w->n_blocked];
        c->flags &= (uint16_t)~FE_F_BLOCKED;
        fe_conn_resume(c, FE_P_LINK);
    }
}

/* The router says shard i answers as incarnation inc: a change means a restart that lost what
 * the shard held in memory (fe_session_shard_lost). */
static void shard_incarnation(fe_worker_t *w, uint32_t i, uint64_t inc)
{
    if (inc == 0 || i >= SG_WIRE_MAX_SHARDS)
        return;
    if (i >= w->n_shard_inc) {
        uint64_t *a = realloc(w->shard_inc, (i + 1) * sizeof *a);
        if (!a)
            return;
        memset(a + w->n_shard_inc, 0, (i + 1 - w->n_shard_inc) * sizeof *a);
        w->shard_inc = a;
        w->n_shard_inc = i + 1;
    }
    uint64_t was = w->shard_inc[i];
    w->shard_inc[i] = inc;
    if (was != 0 && was != inc)
        fe_session_shard_lost(w, (uint16_t)i, "shard-restarted");
}

static void on_shard_state(fe_worker_t *w, const sg_wire_hdr_t *h)
{
    uint64_t inc;
    if (sg_wire_get_u64(h, &inc) == SG_OK)
        shard_incarnation(w, h->shard, inc);
}

/* The router's answer to our heartbeat: it is there, and which incarnations it knows. A router
 * that restarted lost the frames it was carrying, in both directions. */
static void on_router_pong(fe_worker_t *w, const sg_wire_hdr_t *h)
{
    sg_wire_router_pong_t p;
    if (sg_wire_get_router_pong(h, &p) != SG_OK)
        return;
    if (w->router_boot != 0 && p.router != w->router_boot)
        fe_session_shard_lost(w, FE_SHARD_UNKNOWN, "router-restarted");
    w->router_batches = (h->flags & SG_WIRE_F_BATCH) != 0;
    w->router_boot = p.router;
    uint64_t inc;
    for (uint32_t i = 0; sg_wire_router_pong_next(&p, &inc); i++)
        shard_incarnation(w, i, inc);
}

static void drain_once(fe_worker_t *w);

static void drain_link(fe_worker_t *w)
{
    /* ZMQ_FD is edge-triggered: read until a receive finds nothing (that receive takes in
     * ZeroMQ's pending commands, so the descriptor signals again for the next message). No
     * ZMQ_EVENTS look per message: each costs a poll(2) and a getpid(2). Writing the PUBACKs
     * can send on the link (a connection that closes, one that reads again), and a send can
     * take the edge of frames that came meanwhile: then look again. */
    uint64_t sends;
    do {
        drain_once(w);
        sends = w->link_sends;
        fe_session_flush_acks(w);
        fe_session_credit_resume(w);   /* after the PUBACKs: they returned the credit */
        if (fe_link_flush(w) != SG_OK) {
            /* the link is full: a later pass sends them (the loop wakes every 10 ms meanwhile) */
        }
    } while (w->link_sends != sends);
}

/* One frame from the router (alone or out of a BATCH). */
static void on_frame(fe_worker_t *w, const uint8_t *f, size_t len)
{
    sg_wire_hdr_t h;
    if (sg_wire_decode(f, len, &h) != SG_OK)
        SG_WARN("frontend", "link.malformed", "bytes=%zu", len);
    else if (h.type == SG_MSG_PONG)
        on_router_pong(w, &h);
    else if (h.type == SG_MSG_SHARD_STATE)
        on_shard_state(w, &h);
    else if (h.type == SG_MSG_BATCH)
        SG_WARN("frontend", "link.malformed", "bytes=%zu reason=\"a batch inside a batch\"", len);
    else
        fe_session_frame(w, &h);
}

static void on_item(void *ctx, const uint8_t *peer, size_t peer_len, const uint8_t *f, size_t len)
{
    (void)peer;   /* the router's batches name no peer: they are all for this loop */
    (void)peer_len;
    on_frame(ctx, f, len);
}

static void drain_once(fe_worker_t *w)
{
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, w->link_raw, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            break;
        }
        atomic_store(&w->router_seen_ms, sg_mono_ms());
        const uint8_t *f = zmq_msg_data(&msg);
        size_t len = zmq_msg_size(&msg);
        sg_wire_hdr_t h;
        if (sg_wire_decode(f, len, &h) == SG_OK && h.type == SG_MSG_BATCH) {
            if (sg_wire_batch_each(&h, on_item, w) != SG_OK)
                SG_WARN("frontend", "link.malformed", "bytes=%zu reason=\"a damaged batch\"", len);
        } else {
            on_frame(w, f, len);
        }
        zmq_msg_close(&msg);
    }
}

static void on_link(sg_loop_t *loop, sg_io_t *io, uint32_t events)
{
    (void)loop;
    (void)io;
    (void)events;
    /* drained after every wake-up in the thread loop */
}

static void on_stop(sg_loop_t *loop, sg_io_t *io, uint32_t events)
{
    fe_worker_t *w = (fe_worker_t *)((char *)io - offsetof(fe_worker_t, stop_io));
    uint64_t v;
    (void)loop;
    (void)events;
    if (read(io->fd, &v, sizeof v) < 0) {
        /* nothing to do: the flag below is what matters */
    }
    w->stop = true;
}

static void accept_from(sg_loop_t *loop, fe_worker_t *w, sg_io_t *io, bool ws)
{
    for (int i = 0; i < ACCEPTS_PER_WAKE; i++) {
        struct sockaddr_storage from;
        socklen_t from_len = sizeof from;
        int fd = accept4(io->fd, (struct sockaddr *)&from, &from_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of descriptors: stop accepting for a second rather than spin. */
                SG_WARN("frontend", "accept.no_fds", "thread=%d reason=\"%s\"", w->index, strerror(errno));
                if (sg_loop_mod(loop, io, 0) != SG_OK)
                    SG_ERROR("frontend", "accept.pause_failed", "thread=%d", w->index);
                w->accept_paused_until = sg_loop_now(loop) + 1;
            }
            return;
        }
        fe_conn_accept(w, fd, (struct sockaddr *)&from, ws);
    }
}

static void on_accept(sg_loop_t *loop, sg_io_t *io, uint32_t events)
{
    (void)events;
    accept_from(loop, (fe_worker_t *)((char *)io - offsetof(fe_worker_t, listen_io)), io, false);
}

static void on_ws_accept(sg_loop_t *loop, sg_io_t *io, uint32_t events)
{
    (void)events;
    accept_from(loop, (fe_worker_t *)((char *)io - offsetof(fe_worker_t, ws_listen_io)), io, true);
}

/* Tell the router this loop is alive and how many devices it holds (GET /v1/cluster); its PONG
 * tells us the router is there (fe_frontend_ready). */
static void heartbeat(fe_worker_t *w)
{
    char json[256];
    int n = snprintf(json, sizeof json,
                     "{\"connections\":%llu,\"creditWaits\":%llu,\"creditBytes\":%llu,\"linkBacklog\":%u,"
                     "\"linkBacklogPeak\":%u}",
                     (unsigned long long)atomic_load(&w->n_conns), (unsigned long long)atomic_load(&w->credit_waits),
                     (unsigned long long)atomic_load(&w->credit_bytes), link_waiting(w), w->wait_peak);
    sg_wbuf_reset(&w->frame);
    if (sg_frame_heartbeat(&w->frame, json, (size_t)n) == SG_OK && fe_link_send(w, &w->frame) != SG_OK)
        SG_DEBUG("frontend", "heartbeat.dropped", "peer=%s", w->peer_id);
}

static void *worker_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sg-fe-loop");   /* top -H, perf and /proc show it */
    fe_worker_t *w = arg;
    /* Announce this incarnation so shards end sessions an earlier one left behind. */
    sg_wbuf_reset(&w->frame);
    if (sg_frame_hello(&w->frame, w->peer_id) == SG_OK && fe_link_send(w, &w->frame) != SG_OK)
        SG_WARN("frontend", "hello.failed", "peer=%s", w->peer_id);
    uint32_t next_beat = 0;
    while (!w->stop) {
        if (sg_loop_now(w->loop) >= next_beat) {
            heartbeat(w);
            next_beat = sg_loop_now(w->loop) + HEARTBEAT_EVERY_S;
            drain_link(w);   /* sending can consume the ZMQ_FD edge of frames already here */
        }
        sg_loop_run_once(w->loop, w->n_blocked || w->n_backlog || w->n_retry || w->n_owed || w->out.n ? 10 : 1000);
        drain_link(w);
        if (w->n_retry)
            fe_session_retry(w);
        if (w->n_owed)
            fe_session_owed(w);
        if (w->n_backlog)
            flush_backlog(w);
        if (w->n_blocked)
            unblock(w);
        /* Sending can consume the edge of the link's ZMQ_FD: look again before sleeping. */
        drain_link(w);
        if (w->accept_paused_until && sg_loop_now(w->loop) >= w->accept_paused_until) {
            w->accept_paused_until = 0;
            if (sg_loop_mod(w->loop, &w->listen_io, EPOLLIN) != SG_OK ||
                (w->ws_listen_io.fd >= 0 && sg_loop_mod(w->loop, &w->ws_listen_io, EPOLLIN) != SG_OK))
                SG_ERROR("frontend", "accept.resume_failed", "thread=%d", w->index);
        }
    }
    /* Accept nothing more; close every connection so shards hear SESSION_END before the
     * process goes. */
    sg_loop_del(w->loop, &w->listen_io);
    if (w->ws_listen_io.fd >= 0)
        sg_loop_del(w->loop, &w->ws_listen_io);
    for (uint32_t i = 0; i < w->set->max_connections; i++)
        if (w->slots[i])
            fe_conn_close(w->slots[i], "shutdown");
    sg_loop_run_once(w->loop, 0);
    for (int i = 0; i < 100 && w->n_backlog > 0; i++) {
        flush_backlog(w);
        if (w->n_backlog)
            usleep(10000);
    }
    return NULL;
}

fe_worker_t *fe_worker_new(int index, const fe_settings_t *set, fe_tls_t *tls, int listen_fd, int ws_fd, const char *peer_id,
                           const char *routers, int hwm, _Atomic uint32_t *open)
{
    fe_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->index = index;
    w->set = set;
    w->open = open;
    w->tls = tls;
    w->listen_io = (sg_io_t){.fd = listen_fd, .fn = on_accept};
    w->ws_listen_io = (sg_io_t){.fd = ws_fd, .fn = on_ws_accept};
    w->stop_io = (sg_io_t){.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), .fn = on_stop};
    w->link_io = (sg_io_t){.fd = -1, .fn = on_link};
    snprintf(w->peer_id, sizeof w->peer_id, "%s", peer_id);
    w->loop = sg_loop_new(1000);
    w->slots = calloc(set->max_connections, sizeof *w->slots);
    w->gens = calloc(set->max_connections, sizeof *w->gens);
    w->free_slots = malloc(set->max_connections * sizeof *w->free_slots);
    w->rx = malloc(FE_RX_SCRATCH);
    w->credit_used = calloc(FE_CREDIT_SLOTS, sizeof *w->credit_used);
    sg_wbuf_init(&w->tx, set->max_packet + 1024);
    sg_wbuf_init(&w->frame, SG_WIRE_MAX_FRAME);
    sg_wire_batch_init(&w->out);
    w->link = zsock_new(ZMQ_DEALER);
    if (!w->loop || !w->slots || !w->gens || !w->free_slots || !w->rx || !w->credit_used || !w->link ||
        w->stop_io.fd < 0) {
        fe_worker_destroy(&w);
        return NULL;
    }
    for (uint32_t i = 0; i < set->max_connections; i++)
        w->free_slots[i] = set->max_connections - 1 - i;
    w->n_free = set->max_connections;
    zsock_set_identity(w->link, peer_id);
    sg_curve_client(w->link);
    zsock_set_sndhwm(w->link, hwm);
    zsock_set_rcvhwm(w->link, hwm);
    zsock_set_reconnect_ivl(w->link, 100);
    zsock_set_reconnect_ivl_max(w->link, 2000);
    sg_zmq_link_liveness(w->link);
    zsock_set_linger(w->link, 1000);   /* let SESSION_ENDs out at shutdown */
    /* One router per loop (loop i uses the i-th endpoint, round-robin): a DEALER connected to
     * several would spread one device's frames over routers and reorder them. */
    char *list = strdup(routers), *save = NULL;
    char *eps[64];
    int n_eps = 0, connected = 0;
    for (char *ep = list ? strtok_r(list, ",", &save) : NULL; ep && n_eps < 64; ep = strtok_r(NULL, ",", &save))
        eps[n_eps++] = ep;
    if (n_eps > 0) {
        const char *ep = eps[index % n_eps];
        if (zsock_connect(w->link, "%s", ep) == 0)
            connected++;
        else
            SG_ERROR("frontend", "link.connect_failed", "endpoint=%s", ep);
    }
    free(list);
    w->link_raw = zsock_resolve(w->link);
    w->link_io.fd = zsock_fd(w->link);
    if (!connected || sg_loop_add(w->loop, &w->listen_io, EPOLLIN) != SG_OK ||
        (ws_fd >= 0 && sg_loop_add(w->loop, &w->ws_listen_io, EPOLLIN) != SG_OK) ||
        sg_loop_add(w->loop, &w->stop_io, EPOLLIN) != SG_OK || sg_loop_add(w->loop, &w->link_io, EPOLLIN) != SG_OK) {
        fe_worker_destroy(&w);
        return NULL;
    }
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        fe_worker_destroy(&w);
        return NULL;
    }
    return w;
}

void fe_worker_destroy(fe_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fe_worker_t *w = *self_p;
    if (w->thread) {
        uint64_t one = 1;
        if (write(w->stop_io.fd, &one, sizeof one) < 0)
            w->stop = true;
        pthread_join(w->thread, NULL);
    }
    if (w->stop_io.fd >= 0)
        close(w->stop_io.fd);
    zsock_destroy(&w->link);
    sg_loop_destroy(&w->loop);
    free(w->slots);
    free(w->gens);
    free(w->free_slots);
    free(w->blocked);
    for (uint32_t i = 0; i < w->n_backlog; i++)
        zmq_msg_close(&w->backlog[(w->head_backlog + i) % w->cap_backlog]);
    free(w->backlog);
    free(w->shard_inc);
    free(w->rx);
    free(w->acks);
    free(w->retry);
    free(w->owed);
    free(w->subacks);
    free(w->credit_used);
    free(w->credit_wait);
    sg_wbuf_fini(&w->tx);
    sg_wbuf_fini(&w->frame);
    sg_wire_batch_fini(&w->out);
    free(w);
    *self_p = NULL;
}
