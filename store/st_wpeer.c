/* st_wpeer.c — liveness of frontend loops as the writer sees it (heartbeats passed on by routers):
 * a loop that rebooted or stayed silent past store.peer_timeout has its sessions ended, and is
 * told with KICKs if it speaks again. */
#include <czmq.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "sg_log.h"
#include "sg_time.h"
#include "st_writer_int.h"

/* How long the sessions ended for a dead loop are remembered for KICKs if it comes back. */
#define DEAD_PEER_KEEP_MS (3600 * 1000)

void stw_wpeer_free(void **item)
{
    wpeer_t *p = *item;
    if (!p)
        return;
    for (size_t i = 0; i < p->n_ended; i++)
        free(p->ended[i].device);
    free(p->ended);
    free(p->wait);
    free(p);
    *item = NULL;
}

/* A loop first named by a session loaded at start counts as heard then: if it stays silent for
 * store.peer_timeout, those sessions end like any of a silent loop. */
wpeer_t *stw_wpeer_get(writer_t *w, const char *name)
{
    wpeer_t *p = zhashx_lookup(w->peers, name);
    if (!p) {
        if (!(p = calloc(1, sizeof *p)))
            stw_fatal_io("oom");
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
    stw_send_kick(w, d, SG_KICK_STALE);
    if (dead) {
        if (dead->n_ended == dead->cap_ended)
            dead->ended = stw_grow(dead->ended, &dead->cap_ended, sizeof *dead->ended, 16);
        char *id = strdup(d->id);
        if (!id)
            stw_fatal_io("oom");
        dead->ended[dead->n_ended++] = (ended_t){id, d->sess.handle, d->sess.epoch};
    }
    stw_session_end(w, d);
}

/* HELLO from a frontend loop that (re)started: its earlier incarnation's sessions are gone.
 * The name is "{frontend}/{loop}/{boot}"; sessions on the same "{frontend}/{loop}/" with another
 * boot id are ended. */
void stw_frontend_hello(writer_t *w, op_t *op)
{
    const char *name;
    size_t len;
    if (sg_wire_get_name(&op->h, &name, &len) != SG_OK)
        return;
    /* A loop announces its own reboot only: the name must be the one it is routed as (the
     * router puts the sender's identity in the envelope, and a live loop's identity cannot be
     * taken on that router). The limit of this is stw_session_matches's: frontends share their
     * tier's key and pick their identities, so one holding the key could still connect under a
     * name no loop uses and announce it. */
    if (len != op->peer_len || memcmp(name, op->peer, len) != 0) {
        char shown[SG_WIRE_MAX_PEER + 1], from[SG_WIRE_MAX_PEER + 1];
        sg_log_clean(shown, sizeof shown, name, len);
        sg_log_clean(from, sizeof from, op->peer, op->peer_len);
        SG_WARN("store", "hello.refused", "name=\"%s\" from=\"%s\" reason=\"a frontend loop announced another's "
                "reboot\"", shown, from);
        return;
    }
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
void stw_peer_heard(writer_t *w, const op_t *op)
{
    size_t n = op->peer_len, rn = op->router_len;
    if (n == 0 || n > SG_WIRE_MAX_PEER || rn == 0 || rn > SG_WIRE_MAX_PEER)
        return;
    char name[SG_WIRE_MAX_PEER + 1], router[SG_WIRE_MAX_PEER + 1];
    memcpy(name, op->peer, n);
    name[n] = 0;
    memcpy(router, op->router, rn);
    router[rn] = 0;
    wpeer_t *p = stw_wpeer_get(w, name);
    p->last_ms = sg_mono_ms();
    if (!p->dead)
        return;
    SG_WARN("store", "peer.back", "peer=%s kicked=%zu reason=\"silent longer than store.peer_timeout; its sessions "
            "were ended\"", name, p->n_ended);
    for (size_t i = 0; i < p->n_ended; i++) {
        stw_kick(w, router, name, p->ended[i].device, p->ended[i].handle, p->ended[i].epoch, SG_KICK_STALE);
        free(p->ended[i].device);
    }
    p->n_ended = 0;
    p->dead = false;
}

/* Loops not heard from for store.peer_timeout are gone: end their sessions (their devices
 * reconnect elsewhere; their commands wait in the queue instead of burning delivery attempts).
 * Sessions found on disk at start whose loop has not spoken since are ended the same way. */
void stw_check_peers(writer_t *w)
{
    int64_t now = sg_mono_ms(), timeout = w->ctx->peer_timeout_ms;
    /* Time the shard itself did not run (stopped, starved) is not the loops' silence: routers do
     * not pass heartbeats on to a shard that stopped answering, so they resume only after it is
     * back. The checks come every second; a longer gap moves every loop's last sign of life on. */
    int64_t gap = w->peers_checked_ms ? now - w->peers_checked_ms : 0;
    w->peers_checked_ms = now;
    if (gap > 3000)
        for (wpeer_t *p = zhashx_first(w->peers); p; p = zhashx_next(w->peers))
            p->last_ms += gap;
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
