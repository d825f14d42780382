/* st_writer_int.h — the shard writer's own state, shared by the files it is split into:
 * st_writer.c (the commit loop and its answers), st_wdev.c (the device cache and per-device
 * session and window state), st_wsession.c (what frontends send: AUTH, telemetry, SUBSCRIBE,
 * COMPLETE), st_wqueue.c (delivery, expiry, dead letters and feedback), st_wadmin.c (HTTP
 * writes) and st_wpeer.c (frontend loop liveness). Everything here runs on the writer thread;
 * nothing outside those files (and its unit test, st_op_test.c) includes it (st_writer.h is the
 * store's view of the writer). */
#ifndef ST_WRITER_INT_H
#define ST_WRITER_INT_H

#include <czmq.h>
#include <jansson.h>
#include <rocksdb/c.h>
#include <stdbool.h>
#include <stdint.h>
#include "sg_buf.h"
#include "sg_sas.h"
#include "sg_wire.h"
#include "st_cert.h"
#include "st_internal.h"
#include "st_keys.h"
#include "st_record.h"
#include "st_registry.h"
#include "st_writer.h"

/* One delivery handed to the session and not yet acknowledged. */
typedef struct st_wpeer wpeer_t;

typedef struct {
    uint64_t seq;
    int64_t sent_ms;
    uint32_t bytes;             /* of its DELIVER frame: credit of `loop` while in flight */
    wpeer_t *loop;              /* the frontend loop it went to (whose credit it holds) */
} flight_t;

/* A device's session as the writer keeps it: st_session_t without its two inline name buffers
 * (~200 bytes a device at 250,000 cached devices a shard): the frontend loop and router names are
 * interned, shared by every session of that loop (see stw_intern()). Converted to and from the
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
    bool methods;             /* subscribed to direct methods (st_wmethod.c) */
    uint8_t method;
    uint8_t sas_key;          /* the SAS key it authenticated with: ST_REGEN_PRIMARY or _SECONDARY; 0 when
                               * not known (not kept on disk: a session loaded after a restart) */
} wsess_t;

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
    bool credit_wait;           /* in its loop's wait list: deliveries wait for the loop's credit */
    char *reg_text;             /* registry entry as of the open batch (read or written in it), or NULL */
    wpeer_t *loop;              /* while the session is live: its frontend loop, in whose list it is */
    wdev_t *loop_prev, *loop_next;
};

/* A message to take out of the queue at the start of the next batch (found while delivering). */
typedef struct {
    wdev_t *dev;
    uint64_t seq;
    uint8_t outcome;    /* ST_OUT_EXPIRED, ST_OUT_DELIVERY_COUNT_EXCEEDED or ST_OUT_DAMAGED */
} expire_t;

/* One operation as received: envelope and decoded header. Its bytes are views into the message
 * the writer took it from (one frame alone, or an item of a router's BATCH), valid until the writer
 * takes the next operation. One kept for later (waiting for a device read ahead, a notification's
 * asker, an inquiry's watch, one held for a batch of its own) is moved with stw_op_move, which
 * copies its bytes into `own`. */
typedef struct st_op op_t;
struct st_op {
    const uint8_t *router, *peer, *frame;
    size_t router_len, peer_len, frame_len;
    sg_wire_hdr_t h;    /* views into frame */
    uint8_t *own;       /* the bytes above when the operation owns them, else NULL */
};

/* Move *from into *to, owning its bytes (copied out of the received message if they were views
 * into it); from is left empty. stw_op_free frees what an operation owns and empties it. */
void stw_op_move(op_t *to, op_t *from);
void stw_op_free(op_t *op);

typedef struct st_ahead ahead_t;   /* st_wahead.c */

typedef struct st_writer writer_t;
typedef struct st_mcall mcall_t;
struct st_writer {
    st_ctx_t *ctx;
    zsock_t *in;                /* PULL from net */
    zsock_t *out;               /* PUSH to net */
    zhashx_t *devs;             /* id -> wdev_t */
    rocksdb_writebatch_t *batch;
    rocksdb_writebatch_t *carry;   /* bookkeeping written after the answers, without fsync */
    zlist_t *answers;           /* zmsg_t* to send after commit */
    zhashx_t *outs;             /* router name -> sg_wire_batch_t*: its answers and pushes being gathered */
    zlist_t *deliver;           /* wdev_t* to run deliveries for after commit */
    zlist_t *reg_texts;         /* wdev_t* whose reg_text is set: cleared after each commit */
    expire_t *expired;
    size_t n_expired, cap_expired;
    st_counters_t counters;
    bool counters_dirty;
    bool tele_appended;
    bool fb_appended;           /* feedback in this batch: the append signal wakes feedback long-polls too */
    uint64_t tele_next;
    uint64_t sessions;
    uint64_t queued;
    int64_t last_sweep;
    bool sweep_more;            /* the expiry sweep stopped at its slice with more due: go on at once */
    char sweep_from[ST_KEY_MAX]; /* ... from this expiry-index key (sweep_from_len bytes) */
    size_t sweep_from_len;
    wdev_t *busy;               /* devices with deliveries in flight (checked for lock timeouts) */
    int64_t resume_at;          /* start-up deliveries wait for the routers to reconnect */
    zhashx_t *routers_heard;    /* routers an operation came through since the start (until resume_at) */
    zhashx_t *names;            /* interned frontend loop and router names (wsess_t) */
    zhashx_t *finished;         /* "{id}/{seq}" of messages finished in the open batch */
    op_t held;                  /* an op that must start a batch of its own (needs_fresh_batch) */
    bool has_held;
    /* The message the operations are read from (recv_op): a router's BATCH passed on whole,
     * read item by item in place (in_items while some are left), or a frame alone. */
    zmsg_t *in_msg;
    sg_cur_t in_cur;
    const uint8_t *in_router;
    size_t in_router_len, in_batch_bytes;
    bool in_items;
    zhashx_t *peers;            /* frontend loop name -> wpeer_t (liveness from heartbeats) */
    int64_t started_mono;       /* sg_mono_ms at start: loops get store.peer_timeout to be heard */
    int64_t peers_checked_ms;   /* sg_mono_ms of the last liveness check (stw_check_peers) */
    zsock_t *ahead;             /* PUSH to the readers: devices to read ahead (NULL: store.read_ahead 0) */
    zhashx_t *pending;          /* id -> ahead_t: devices being read ahead and the frames waiting */
    char **asks;                /* ids to ask the readers for at the end of this take */
    size_t n_asks, cap_asks;
    int64_t ahead_checked_ms;
    st_cert_t *certs;           /* certificate authorities registered on this shard */
    sg_wbuf_t scratch;
    sg_wbuf_t scratch2;
    struct st_wnotify *notify;  /* unfinished notification fan-outs (st_wnotify.c) */
    zhashx_t *calls;            /* "{device}/{rid}" -> mcall_t: pending direct method calls (st_wmethod.c) */
    int64_t calls_next;         /* earliest deadline among them (0: none) */
    struct st_winquiry *inquiries;   /* open inquiries and waiting watches (st_winquiry.c) */
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
    /* Credit (cluster.credit): bytes of deliveries on their way to this loop and not completed.
     * Past the credit, sessions wait in `wait` until completions bring it back, so what queues
     * for a slow or stopped frontend is bounded (the messages stay in their queues on disk). */
    uint64_t out_bytes;
    wdev_t **wait;
    size_t n_wait, cap_wait;
};

/* The MQTT packet id a queued message goes out with. */
static inline uint16_t stw_pid_of(uint64_t seq) { return (uint16_t)(seq % 65535u + 1u); }

/* ---- st_writer.c: failures, answers sent once the batch is durable ---- */
/* The shard's memory no longer matches its disk: end the process (it restarts from its WAL). */
__attribute__((noreturn)) void stw_fatal_io(const char *what);
/* Is d this shard's on the ring of its own configuration (cluster.shards, cluster.vnodes)? A
 * router whose ring differs sends devices where they do not live: their connects and operator
 * writes are refused (logged with both names) rather than served from a shard no other router
 * looks in (st_wadmin.c). */
bool stw_owns(writer_t *w, const wdev_t *d);
/* op comes from d's live session: its epoch, from the loop holding it (st_wsession.c). */
bool stw_session_matches(const wdev_t *d, const op_t *op);
/* Double the capacity of a growing array (first: the capacity of a new one). */
void *stw_grow(void *arr, size_t *cap, size_t elem, size_t first);
/* Queue a frame for peer through router (or an answer to op's sender), sent once the batch is
 * durable: frames for one router travel as one BATCH (see send_answers). */
void stw_answer_raw(writer_t *w, const char *router, const char *peer, size_t peer_len, const sg_wbuf_t *frame);
void stw_answer(writer_t *w, const op_t *op, const sg_wbuf_t *frame);

/* Apply one operation to memory and the open batch (or refuse it: the volume is full). */
void stw_take(writer_t *w, op_t *op, int64_t now);

/* ---- st_wdev.c: the device cache ---- */
/* zhashx destructor of w->devs. */
void stw_dev_free(void **item);
const char *stw_intern(writer_t *w, const char *s, size_t n);
void stw_sess_clear(writer_t *w, wsess_t *s);
void stw_live_link(writer_t *w, wdev_t *d);
wdev_t *stw_dev_get(writer_t *w, const char *id, size_t id_len);
/* Load the n devices ids (sorted, valid ids, not cached yet) with one batched read: start-up's
 * way to bring back every live session. */
SG_WUR sg_rc stw_dev_load_sorted(writer_t *w, char *const *ids, size_t n);
/* Into the cache from its records as st_db_dev_records gives them (not cached yet). */
wdev_t *stw_dev_install(writer_t *w, const char *id, size_t id_len, const char *const v[3], const size_t vl[3]);
void stw_dev_evict(writer_t *w);
void stw_save_session(writer_t *w, wdev_t *d);
void stw_save_meta(writer_t *w, wdev_t *d);
void stw_busy_add(writer_t *w, wdev_t *d);
void stw_busy_del(writer_t *w, wdev_t *d);
void stw_inflight_clear(writer_t *w, wdev_t *d);
bool stw_inflight_has(const wdev_t *d, uint64_t seq);
bool stw_inflight_remove(writer_t *w, wdev_t *d, uint64_t seq);
/* A delivery left the window: its loop gets its credit back (waiting sessions go on). */
void stw_flight_done(writer_t *w, const flight_t *f);
/* d waits for its loop's credit (stw_deliver found it spent). */
void stw_credit_wait(writer_t *w, wdev_t *d);
void stw_session_end(writer_t *w, wdev_t *d);
void stw_want_delivery(writer_t *w, wdev_t *d);

/* ---- st_wsession.c: frames from frontends ---- */
void stw_kick(writer_t *w, const char *router, const char *peer, const char *device, uint64_t handle, uint64_t epoch,
              uint8_t reason);
void stw_send_kick(writer_t *w, wdev_t *d, uint8_t reason);
void stw_track_router(writer_t *w, wdev_t *d, const op_t *op);
void stw_op_auth(writer_t *w, op_t *op, wdev_t *d, int64_t now);
void stw_op_psk(writer_t *w, op_t *op, wdev_t *d);
void stw_op_telemetry(writer_t *w, op_t *op, wdev_t *d, int64_t now);
void stw_op_session_end(writer_t *w, op_t *op, wdev_t *d);
void stw_op_subscribe(writer_t *w, op_t *op, wdev_t *d, int64_t now);
void stw_op_complete(writer_t *w, op_t *op, wdev_t *d, int64_t now);
/* TELEMETRY_ACK (status SG_TELE_*, packet id pid) answering a device's publish op. */
void stw_tele_ack(writer_t *w, const op_t *op, const wdev_t *d, uint16_t status, uint16_t pid);

/* ---- st_wqueue.c: the command queue's way out ---- */
void stw_finish_msg(writer_t *w, wdev_t *d, uint64_t seq, const char *rec, size_t rlen, uint8_t outcome, int64_t now);
bool stw_finish_seq(writer_t *w, wdev_t *d, uint64_t seq, uint8_t outcome, int64_t now);
void stw_deliver(writer_t *w, wdev_t *d, int64_t now);
void stw_expire_due(writer_t *w, int64_t now);
/* The feedback record of message m of d with outcome, if its ack mode asks for one. */
void stw_feedback(writer_t *w, wdev_t *d, const st_msg_t *m, uint8_t outcome, int64_t now);

/* ---- st_wadmin.c: HTTP writes ---- */
void stw_op_admin(writer_t *w, op_t *op, wdev_t *d, int64_t now);
void stw_adm_group_commit(writer_t *w, op_t *op, const char *json, size_t len);
void stw_uuid4(char out[37]);
/* A cloud-to-device message as POST /v1/devices/{id}/messages takes it (payload, payloadEncoding,
 * properties, ttlSeconds, ack), checked and encoded as its queue record into out under message
 * id mid, with one system property sys_key=sys_val first when sys_key is not NULL; *m gets its
 * fields (message_id points at mid). A bad body answers op (400, 413) and returns false. */
bool stw_msg_build(writer_t *w, op_t *op, const json_t *body, const char *mid, const char *sys_key,
                   const char *sys_val, int64_t now, sg_wbuf_t *out, st_msg_t *m);
/* Whether d's queue takes one more message whose stored record is rlen bytes (the byte limit
 * counts whole records: payload, properties, id and header); *limit and *blimit get its limits
 * (messages, bytes). */
bool stw_queue_room(writer_t *w, const wdev_t *d, size_t rlen, int64_t *limit, int64_t *blimit);
/* Put the encoded message rec (fields m) at the tail of d's queue in the open batch. */
void stw_queue_put(writer_t *w, wdev_t *d, const st_msg_t *m, const sg_wbuf_t *rec);

/* ---- st_wnotify.c: notifications fanned out to the devices with given tags ---- */
typedef struct st_wnotify st_wnotify_t;
/* The fan-outs a previous start left unfinished, resumed from their durable cursors. */
SG_WUR sg_rc stw_notify_load(writer_t *w);
void stw_notify_free(writer_t *w);
/* POST /v1/notifications, this shard's part: record it, answered when its fan-out is done. */
void stw_notify_start(writer_t *w, op_t *op, const char *json, size_t len, int64_t now);
/* One slice of the oldest unfinished fan-out into the open batch. */
void stw_notify_step(writer_t *w, int64_t now);
/* Whether a fan-out is unfinished (the writer then does not wait for operations). */
bool stw_notify_busy(const writer_t *w);

/* ---- st_winquiry.c: inquiries from devices, claimed and answered over HTTP ---- */
/* The open inquiries a previous start left. */
SG_WUR sg_rc stw_inquiry_load(writer_t *w);
void stw_inquiry_free(writer_t *w);
/* INQUIRY from the device's session: durable, then PUBACKed (QoS 1). */
void stw_op_inquiry(writer_t *w, op_t *op, wdev_t *d, int64_t now);
/* SG_ADM_INQUIRY_CLAIM, _WATCH (may keep op: its frames are taken), _ANSWER. */
void stw_inquiry_admin(writer_t *w, op_t *op, uint16_t aop, const char *json, size_t len, int64_t now);
/* Each cycle: time out unanswered inquiries (504) and wake watches. */
void stw_inquiry_step(writer_t *w, int64_t now);

/* ---- st_wahead.c: devices read ahead on the reader threads ---- */
SG_WUR sg_rc stw_ahead_init(writer_t *w);
void stw_ahead_fini(writer_t *w);
/* op is a frontend's frame for device key that is being read ahead, or is not cached and now
 * will be: the op waits (taken over) and true. False: apply it now. */
bool stw_ahead_park(writer_t *w, op_t *op, const char *key);
/* Ask the readers for the devices parked since the last call. */
void stw_ahead_send(writer_t *w);
/* A reader's answer (the frames after ['L']): devices into the cache, their waiting frames
 * applied; how many. */
int stw_ahead_loaded(writer_t *w, zmsg_t *m, int64_t now);
/* The writer read device key itself (st_wdev.c): a read-ahead still out for it is stale. */
void stw_ahead_touched(writer_t *w, const char *key);
/* Reads out for too long (a reader gone) are done on the writer; how many frames that applied. */
int stw_ahead_overdue(writer_t *w, int64_t now);
/* A registered, enabled device; otherwise op is answered 404 DeviceNotFound or 403 DeviceDisabled. */
bool stw_adm_device_enabled(writer_t *w, op_t *op, wdev_t *d);
/* POST /v1/devices/{id}/messages with body; fallback: a method call that found the device
 * unreachable (answered 202 {"queued": true, ...} instead of 201). */
void stw_adm_enqueue(writer_t *w, op_t *op, wdev_t *d, json_t *body, int64_t now, bool fallback);

/* ---- st_wmethod.c: direct method calls ---- */
void stw_methods_init(writer_t *w);
void stw_methods_fini(writer_t *w);
void stw_op_method_invoke(writer_t *w, op_t *op, wdev_t *d, json_t *body, int64_t now);
void stw_op_method_res(writer_t *w, op_t *op, wdev_t *d);
/* d's session took the method subscription (or resumed with it): calls waiting for it go out. */
void stw_methods_online(writer_t *w, wdev_t *d, int64_t now);
/* The device was deleted or disabled: each of its pending calls is answered with status and a
 * copy of body (whose reference is taken). */
void stw_methods_end(writer_t *w, wdev_t *d, int status, json_t *body);
/* Answer the calls past their deadlines. Each cycle. */
void stw_methods_tick(writer_t *w, int64_t now);
/* SG_ADM_CA_PUT / _GET / _DELETE: this shard's certificate authorities (st_cert.h). */
void stw_adm_ca(writer_t *w, op_t *op, uint16_t aop, const char *json, size_t len);

/* ---- st_wpeer.c: frontend loop liveness ---- */
/* zhashx destructor of w->peers. */
void stw_wpeer_free(void **item);
wpeer_t *stw_wpeer_get(writer_t *w, const char *name);
void stw_frontend_hello(writer_t *w, op_t *op);
void stw_peer_heard(writer_t *w, const op_t *op);
void stw_check_peers(writer_t *w);

#endif
