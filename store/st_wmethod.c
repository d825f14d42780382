/* st_wmethod.c — direct method calls, held by the writer of the device's shard (SPEC §2, §4).
 * The shard is where the device's live session and its method subscription are known, so the
 * pending calls live here: an admin's SG_ADM_METHOD_INVOKE becomes a call with an unguessable
 * rid (64 random bits), pushed as SG_MSG_METHOD to the session's frontend loop; the device's
 * answer (SG_MSG_METHOD_RES from whichever frontend it is on now) is matched by device and rid
 * and answered to the admin as ADMIN_RES. A call that waits for the device to connect, or whose
 * session ended before it answered, is pushed (again) to the next session that subscribes, so it
 * follows the device across frontends. Deadlines (connectTimeoutSeconds, then
 * responseTimeoutSeconds from the first delivery) are checked on every writer cycle (at least
 * every 100 ms). Nothing here touches the disk: calls end with the shard process, and the admin's
 * own deadline answers the caller then. */
#include <czmq.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include "sg_frame.h"
#include "sg_log.h"
#include "st_writer_int.h"

/* Pending calls a shard holds at once; more are refused (429) rather than grow without bound. */
#define MAX_CALLS 65536

struct st_mcall {
    char *device;
    char rid[17];
    char name[SG_METHOD_NAME_MAX + 1];
    char *payload;              /* JSON text sent to the device */
    size_t payload_len;
    char *router;               /* the admin's router, and the admin's routing id */
    char *peer;
    size_t peer_len;
    uint64_t corr;              /* the admin's correlation id */
    int64_t connect_deadline;   /* ms: answered DeviceNotOnline then if never delivered */
    int64_t response_ms;        /* responseTimeoutSeconds in ms */
    int64_t response_deadline;  /* ms, from the first delivery (0 before) */
    uint64_t epoch;             /* the session it was last delivered to (0: none) */
};

static void call_free(void **item)
{
    mcall_t *c = *item;
    if (c) {
        free(c->device);
        free(c->payload);
        free(c->router);
        free(c->peer);
        free(c);
    }
    *item = NULL;
}

void stw_methods_init(writer_t *w)
{
    w->calls = zhashx_new();
    zhashx_set_destructor(w->calls, call_free);
    w->calls_next = 0;
}

void stw_methods_fini(writer_t *w) { zhashx_destroy(&w->calls); }

static void call_key(char *key, size_t cap, const char *device, size_t dlen, const char *rid, size_t rlen)
{
    /* '/' is not in the device id alphabet, so "{device}/{rid}" is unambiguous */
    snprintf(key, cap, "%.*s/%.*s", (int)dlen, device, (int)rlen, rid);
}

#define KEY_CAP (SG_DEVICE_ID_MAX + SG_METHOD_RID_MAX + 2)

static void next_deadline(writer_t *w, int64_t at)
{
    if (at > 0 && (w->calls_next == 0 || at < w->calls_next))
        w->calls_next = at;
}

/* Answer the admin that made call c (ADMIN_RES with its correlation id) and forget the call. */
static void call_answer(writer_t *w, mcall_t *c, int status, json_t *body)
{
    int outcome = status == 200 ? 0 : status == 504 ? 1 : status == 404 && c->epoch == 0 ? 2 : 3;
    atomic_fetch_add(&w->ctx->stat_mcalls_done[outcome], 1);
    sg_wire_hdr_t req = sg_wire_hdr(SG_MSG_ADMIN, c->device);
    req.corr = c->corr;
    if (st_admin_answer(&w->scratch2, &req, status, body) != SG_OK)
        stw_fatal_io("answer-encode");
    stw_answer_raw(w, c->router, c->peer, c->peer_len, &w->scratch2);
    char key[KEY_CAP];
    call_key(key, sizeof key, c->device, strlen(c->device), c->rid, strlen(c->rid));
    zhashx_delete(w->calls, key);
    atomic_store(&w->ctx->stat_mcalls_pending, zhashx_size(w->calls));
}

/* Push call c to d's live session. */
static void call_deliver(writer_t *w, wdev_t *d, mcall_t *c, int64_t now)
{
    sg_wire_method_t m = {.rid = c->rid, .rid_len = strlen(c->rid), .name = c->name, .name_len = strlen(c->name),
                          .payload = (const uint8_t *)c->payload, .payload_len = c->payload_len};
    sg_wbuf_reset(&w->scratch);
    if (sg_frame_method(&w->scratch, &(sg_frame_session_t){d->id, d->sess.handle, d->sess.epoch}, &m) != SG_OK)
        stw_fatal_io("method-encode");
    stw_answer_raw(w, d->sess.router, d->sess.peer, strlen(d->sess.peer), &w->scratch);
    if (c->epoch && c->epoch != d->sess.epoch)
        SG_INFO("store", "method.redelivered", "device=%s name=%s epoch=%llu", d->id, c->name,
                (unsigned long long)d->sess.epoch);
    c->epoch = d->sess.epoch;
    if (c->response_deadline == 0) {
        c->response_deadline = now + c->response_ms;
        next_deadline(w, c->response_deadline);
    }
}

static bool can_answer(const wdev_t *d) { return d->sess.live && d->sess.methods; }

static json_int_t int_member(const json_t *body, const char *name, json_int_t dflt)
{
    json_t *v = json_object_get(body, name);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

void stw_op_method_invoke(writer_t *w, op_t *op, wdev_t *d, json_t *body, int64_t now)
{
    const char *name = json_string_value(json_object_get(body, "name"));
    json_int_t resp = int_member(body, "responseTimeoutSeconds", 30), conn = int_member(body, "connectTimeoutSeconds", 0);
    json_t *fallback = json_object_get(body, "fallback");
    /* the admin checked all of this; a frame from elsewhere is checked again */
    if (!name || !sg_method_name_valid(name, strlen(name), SG_METHOD_NAME_MAX) || resp < 5 || resp > 300 || conn < 0 ||
        conn > 300 || (fallback && !json_is_object(fallback))) {
        st_writer_answer_admin(w, op, 400, st_error_json("InvalidMethodRequest", "malformed method invocation"));
        return;
    }
    if (!stw_adm_device_enabled(w, op, d))
        return;
    if (!can_answer(d) && fallback) {
        /* Not reachable now: the same request as a queued cloud-to-device message (202). */
        stw_adm_enqueue(w, op, d, fallback, now, true);
        return;
    }
    if (!can_answer(d) && conn == 0) {
        atomic_fetch_add(&w->ctx->stat_mcalls_done[2], 1);
        st_writer_answer_admin(w, op, 404, st_error_json("DeviceNotOnline", "device '%s' is not connected with a "
                                                         "subscription to $iothub/methods/POST/#", d->id));
        return;
    }
    if (zhashx_size(w->calls) >= MAX_CALLS) {
        json_t *e = st_error_json("TooManyPendingMethods", "shard %s holds %d pending method calls; retry later",
                                  w->ctx->name, MAX_CALLS);
        json_object_set_new(e, "retryAfter", json_integer(1));
        st_writer_answer_admin(w, op, 429, e);
        return;
    }
    json_t *payload = json_object_get(body, "payload");
    mcall_t *c = calloc(1, sizeof *c);
    char key[KEY_CAP];
    uint8_t rnd[8];
    if (!c)
        stw_fatal_io("oom");
    do {   /* 64 random bits: unguessable, and unique among the device's calls */
        if (RAND_bytes(rnd, sizeof rnd) != 1)
            stw_fatal_io("random");
        for (int i = 0; i < 8; i++)
            snprintf(c->rid + 2 * i, 3, "%02x", rnd[i]);
        call_key(key, sizeof key, d->id, d->id_len, c->rid, 16);
    } while (zhashx_lookup(w->calls, key));
    snprintf(c->name, sizeof c->name, "%s", name);
    c->device = strdup(d->id);
    c->payload = payload ? json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("null");
    c->payload_len = c->payload ? strlen(c->payload) : 0;
    c->router = strndup((const char *)op->router, op->router_len);
    c->peer_len = op->peer_len;
    c->peer = malloc(c->peer_len + 1);
    if (!c->device || !c->payload || !c->router || !c->peer)
        stw_fatal_io("oom");
    memcpy(c->peer, op->peer, c->peer_len);
    c->corr = op->h.corr;
    c->response_ms = (int64_t)resp * 1000;
    c->connect_deadline = now + (int64_t)conn * 1000;
    zhashx_insert(w->calls, key, c);
    atomic_store(&w->ctx->stat_mcalls_pending, zhashx_size(w->calls));
    SG_DEBUG("store", "method.call", "device=%s name=%s rid=%s online=%d", d->id, c->name, c->rid, can_answer(d));
    if (can_answer(d))
        call_deliver(w, d, c, now);
    else
        next_deadline(w, c->connect_deadline);
}

/* The device answered: {"status", "payload"} to the caller, if the rid names one of its calls. */
void stw_op_method_res(writer_t *w, op_t *op, wdev_t *d)
{
    sg_wire_method_t m;
    if (sg_wire_get_method_res(&op->h, &m) != SG_OK) {
        SG_WARN("store", "method.malformed_response", "device=%s", d->id);
        return;
    }
    char key[KEY_CAP];
    call_key(key, sizeof key, d->id, d->id_len, m.rid, m.rid_len);
    mcall_t *c = zhashx_lookup(w->calls, key);
    /* Only the device's current session answers (a stale connection's late answer is not it). */
    if (!c || !stw_session_matches(d, op)) {
        SG_INFO("store", "method.unknown_rid", "device=%s rid=%.*s reason=\"no pending call of this device has this "
                "request id (answered, timed out, or never made); dropped\"", d->id, (int)m.rid_len, m.rid);
        return;
    }
    if (op->h.status == SG_METHOD_RES_TOO_BIG) {
        json_t *e = st_error_json("MethodResponseTooLarge", "device '%s' answered with a body over "
                                  "frontend.max_method_response", d->id);
        json_object_set_new(e, "status", json_integer(m.status));
        call_answer(w, c, 502, e);
        return;
    }
    json_t *payload = m.payload_len ? json_loadb((const char *)m.payload, m.payload_len, JSON_DECODE_ANY, NULL) : json_null();
    if (!payload) {
        json_t *e = st_error_json("InvalidMethodResponse", "device '%s' answered method '%s' with a body that is not JSON",
                                  d->id, c->name);
        json_object_set_new(e, "status", json_integer(m.status));
        call_answer(w, c, 502, e);
        return;
    }
    call_answer(w, c, 200, json_pack("{s:i,s:o}", "status", (int)m.status, "payload", payload));
}

/* d's session now takes method calls (it subscribed, or resumed with the subscription): every call
 * of d not yet delivered to this session goes to it. */
void stw_methods_online(writer_t *w, wdev_t *d, int64_t now)
{
    if (!can_answer(d) || zhashx_size(w->calls) == 0)
        return;
    for (mcall_t *c = zhashx_first(w->calls); c; c = zhashx_next(w->calls))
        if (c->epoch != d->sess.epoch && strcmp(c->device, d->id) == 0)
            call_deliver(w, d, c, now);
}

void stw_methods_end(writer_t *w, wdev_t *d, int status, json_t *body)
{
    if (zhashx_size(w->calls) == 0) {
        json_decref(body);
        return;
    }
    zlist_t *mine = zlist_new();
    if (!mine)
        stw_fatal_io("oom");
    for (mcall_t *c = zhashx_first(w->calls); c; c = zhashx_next(w->calls))
        if (strcmp(c->device, d->id) == 0)
            zlist_append(mine, c);
    for (mcall_t *c; (c = zlist_pop(mine));)
        call_answer(w, c, status, json_deep_copy(body));
    zlist_destroy(&mine);
    json_decref(body);
}

/* Calls past their deadline are answered: 404 DeviceNotOnline when never delivered, else 504. */
void stw_methods_tick(writer_t *w, int64_t now)
{
    if (w->calls_next == 0 || now < w->calls_next)
        return;
    w->calls_next = 0;
    zlist_t *due = NULL;
    for (mcall_t *c = zhashx_first(w->calls); c; c = zhashx_next(w->calls)) {
        int64_t at = c->response_deadline ? c->response_deadline : c->connect_deadline;
        if (at > now) {
            next_deadline(w, at);
            continue;
        }
        if (!due && !(due = zlist_new()))
            stw_fatal_io("oom");
        zlist_append(due, c);
    }
    for (mcall_t *c; due && (c = zlist_pop(due));) {
        if (c->response_deadline) {
            SG_INFO("store", "method.timeout", "device=%s name=%s", c->device, c->name);
            call_answer(w, c, 504, st_error_json("GatewayTimeout", "device '%s' did not answer method '%s' within "
                                                 "%lld s", c->device, c->name, (long long)(c->response_ms / 1000)));
        } else {
            call_answer(w, c, 404, st_error_json("DeviceNotOnline", "device '%s' did not connect with a subscription to "
                                                 "$iothub/methods/POST/# within connectTimeoutSeconds", c->device));
        }
    }
    zlist_destroy(&due);
}
