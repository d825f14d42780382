/* fe_internal.h — what the frontend's modules share inside one event-loop thread:
 * fe_conn (bytes, TLS, buffers, lifetime), fe_session (the MQTT dialect) and fe_worker (the
 * thread, its listener, its router link and its table of connections by handle). */
#ifndef FE_INTERNAL_H
#define FE_INTERNAL_H

#include <czmq.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include "fe_flight.h"
#include "fe_inquiry.h"
#include "fe_tls.h"
#include "sg_loop.h"
#include "sg_buf.h"
#include "sg_mqtt.h"
#include "sg_frame.h"
#include "sg_wire.h"

typedef struct fe_worker fe_worker_t;
typedef struct fe_conn fe_conn_t;

/* Settings every thread reads (copied once from the configuration). */
typedef struct {
    uint32_t max_packet;
    uint32_t max_connect_packet;   /* until the CONNACK: the CONNECT and anything pipelined after it */
    struct fe_iplimit *iplimit;    /* per-address connection limits of the process (fe_iplimit.h) */
    uint32_t max_will;
    uint32_t max_outbuf;
    uint16_t keepalive_cap;
    uint16_t connect_timeout;
    uint16_t window;
    uint16_t ack_timeout;
    uint32_t max_telemetry;
    uint32_t max_method_response;   /* largest direct method response body (fe_methods.c) */
    uint32_t max_connections;   /* per process (frontend.max_connections); each thread's table holds as many */
    uint16_t telemetry_rate;    /* messages per second per device (token bucket refill) */
    uint16_t telemetry_burst;   /* bucket size */
    uint32_t credit;            /* bytes of unacknowledged publishes per shard per loop (cluster.credit) */
} fe_settings_t;

/* Credit slots: one per shard, and one for connections whose shard is not known (an older
 * shard's AUTH_RES names none). */
#define FE_CREDIT_SLOTS (SG_WIRE_MAX_SHARDS + 1)

typedef enum {
    FE_HANDSHAKE = 0,     /* TLS handshake in progress */
    FE_WAIT_CONNECT,      /* TLS up, waiting for the CONNECT packet */
    FE_AUTHENTICATING,    /* CONNECT sent to the shard, waiting for its decision */
    FE_ONLINE,            /* CONNACK 0 sent */
    FE_CLOSED,
    FE_STATE_COUNT
} fe_state_t;

/* Why reading is paused (any bit set = EPOLLIN off). */
#define FE_P_AUTH 0x01     /* waiting for the shard's authentication decision */
#define FE_P_WINDOW 0x02   /* too many telemetry messages waiting for durable acks */
#define FE_P_LINK 0x04     /* the router link is at its high-water mark */
#define FE_P_FLUSH 0x08    /* closing once the output is written */
#define FE_P_RATE 0x10     /* over its telemetry rate: resumes when the bucket refills */
#define FE_P_KEY 0x20      /* the handshake waits for the device's PSK from its shard (fe_psk.c) */
#define FE_P_CREDIT 0x40   /* its shard's credit on this loop is spent: resumes as acknowledgements return it */
#define FE_P_SUBACK 0x80   /* its SUBACK waits until the shard has its method subscription (fe_session.c) */
/* The reasons the gateway holds a connection's input back itself: that time does not count
 * against the device's keep-alive (its PINGREQs wait unread). */
#define FE_P_HELD (FE_P_WINDOW | FE_P_LINK | FE_P_CREDIT | FE_P_SUBACK)

/* Other flags. */
#define FE_F_C2D 0x01          /* subscribed to devicebound */
#define FE_F_SSL_WANTS_OUT 0x02
#define FE_F_GRACEFUL 0x04     /* DISCONNECT received: no will */
#define FE_F_BLOCKED 0x08      /* in the worker's blocked list */
#define FE_F_C2D_QOS0 0x10     /* the devicebound subscription was granted QoS 0 */
#define FE_F_LINGER 0x20       /* refused: output sent and half-closed, draining until the peer closes */
#define FE_F_RETRY 0x40        /* in the worker's retry list: a tier refused one of its publishes (BUSY) */
#define FE_F_METHODS 0x80      /* subscribed to $iothub/methods/POST/# (fe_methods.c) */
#define FE_F_INQUIRY_RES 0x100 /* subscribed to its inquiries' answers (fe_inquiry.c) */
#define FE_F_CREDIT_WAIT 0x200 /* in the worker's credit_wait list */
#define FE_F_ACK0 0x400        /* its shard answers QoS 0 publishes (SG_WIRE_F_ACK0): they use credit too */
#define FE_F_SUB_ANSWER 0x800  /* its shard answers subscriptions that ask (SG_WIRE_F_ANSWER) */

typedef struct {
    uint8_t qos;
    uint16_t topic_len;
    uint32_t payload_len;
    uint8_t data[];       /* topic then payload */
} fe_will_t;

/* QoS 0 deliveries written into the output buffer but not yet onto the socket: each is
 * completed at the shard once the bytes up to its end have been written (so a slow reader's
 * window still applies and a close loses nothing: what was not written is delivered again). */
#define FE_Q0_MAX 64
typedef struct {
    uint32_t n;
    struct {
        uint32_t end;   /* offset in the output buffer just past the PUBLISH */
        uint16_t pid;
    } e[FE_Q0_MAX];
} fe_q0_t;

#define FE_SHARD_UNKNOWN 0xFFFF

/* Packet ids of the QoS 1 deliveries a connection carries (at most store.delivery_window, 64):
 * a PUBACK for any other id is not passed on. */
#define FE_SENT_MAX 64
typedef struct {
    uint8_t n;
    uint16_t pid[FE_SENT_MAX];
} fe_sent_t;

struct fe_conn {
    sg_io_t io;
    sg_timer_t timer;
    fe_worker_t *w;
    SSL *ssl;
    uint8_t *in;          /* unparsed input; NULL while idle */
    uint32_t in_len, in_cap;
    uint8_t *out;         /* unsent output; NULL while idle */
    uint32_t out_len, out_cap;
    char *device;         /* authenticated (or claimed) device id, exact-size allocation */
    fe_will_t *will;
    fe_q0_t *q0;          /* NULL unless QoS 0 deliveries wait in `out` */
    fe_flight_t *flight;  /* QoS 1 publishes sent to the shard and not acknowledged (window entries);
                           * NULL while there are none */
    fe_sent_t *sent;      /* QoS 1 deliveries written to the device and not PUBACKed; NULL while none */
    struct fe_ipent *ipent;   /* its client address's count (fe_iplimit.h), NULL when untracked */
    struct fe_ws *ws;         /* MQTT over WebSocket (fe_ws.h): accepted on the ws port; NULL otherwise */
    uint64_t epoch;
    uint32_t slot, gen;
    uint32_t accepted_at;     /* loop seconds */
    uint32_t last_rx;
    uint32_t token_expires;   /* loop seconds; 0 = never */
    uint32_t pending_since;   /* loop second the oldest pending publish went to the shard */
    uint32_t q0_at;           /* loop second QoS 0 credit last went out or came back (q0_n > 0) */
    uint32_t tokens_at;       /* loop millisecond the bucket was last refilled */
    uint16_t tokens;          /* telemetry messages the device may still send now */
    uint16_t keepalive;
    uint16_t pending;         /* QoS 1 telemetry awaiting durable acks */
    uint32_t q0_n;            /* QoS 0 publishes on their way whose answers return credit (FE_F_ACK0) */
    uint32_t q0_bytes;        /* ... and their bytes */
    uint16_t shard;           /* the device's shard (AUTH_RES), FE_SHARD_UNKNOWN before */
    uint8_t state;
    uint8_t paused;
    uint16_t flags;
};

struct fe_frontend_shared;

/* A PUBACK due on a connection (the shard made its publish durable). */
typedef struct {
    uint64_t handle;
    uint32_t seq;      /* the order it became due */
    uint16_t pid;
    bool resume;       /* the connection's window opened: read it again once this is written */
} fe_ack_t;

struct fe_worker {
    int index;
    const fe_settings_t *set;
    fe_tls_t *tls;         /* the server context new connections take (fe_tls.h) */
    sg_loop_t *loop;
    pthread_t thread;
    sg_io_t listen_io;
    sg_io_t ws_listen_io;  /* the ws port's listener (fd -1: none) */
    sg_io_t stop_io;       /* eventfd written to stop the thread */
    sg_io_t link_io;       /* the DEALER's ZMQ_FD */
    zsock_t *link;
    void *link_raw;
    char peer_id[SG_WIRE_MAX_PEER + 1];
    fe_conn_t **slots;
    uint32_t *gens;
    uint32_t *free_slots;
    uint32_t n_free;
    fe_conn_t **blocked;   /* connections waiting for room on the link */
    uint32_t n_blocked;
    zmq_msg_t *backlog;    /* session bookkeeping frames waiting for room on the link, in order */
    uint64_t *shard_inc;   /* incarnation of each shard as the router last told (0 = not told) */
    uint32_t n_shard_inc;
    uint64_t router_boot;  /* incarnation of the router (0 = not heard yet) */
    uint32_t n_backlog, cap_backlog, head_backlog;
    bool waiting;          /* bookkeeping waits for room on the link (in the backlog or the pass's batch) */
    uint32_t wait_peak;    /* the most frames that ever waited at once (heartbeat: linkBacklogPeak) */
    uint32_t wait_run_peak;   /* ...in this wait */
    int64_t wait_since;    /* sg_mono_ms when this wait started */
    uint64_t *retry;       /* handles of connections with refused publishes to send again */
    uint32_t n_retry, cap_retry;
    struct fe_owed *owed;  /* refused bookkeeping to send again (fe_session_owed) */
    uint32_t n_owed, cap_owed;
    struct fe_suback *subacks;   /* SUBACKs held until the shard has the subscription (FE_P_SUBACK) */
    uint32_t n_subacks, cap_subacks;
    uint32_t *credit_used; /* per shard (FE_CREDIT_SLOTS): bytes of its QoS 1 publishes not acknowledged yet */
    uint64_t *credit_wait; /* handles of connections paused for their shard's credit (FE_P_CREDIT) */
    uint32_t n_credit_wait, cap_credit_wait;
    bool credit_back;      /* credit came back to a slot below its limit: waiters look again (end of pass) */
    fe_ack_t *acks;        /* PUBACKs due, sent once per pass (one TLS record per connection) */
    uint32_t n_acks, cap_acks;
    uint64_t link_sends;   /* messages sent on the link (a send can take the ZMQ_FD edge: drain_link) */
    sg_wire_batch_t out;   /* frames of this loop pass for the link, sent as one BATCH (fe_link_flush) */
    bool router_batches;   /* the router's PONG said it takes BATCH frames */
    bool link_full;        /* the last send on the link found it full, and none has gone since */
    uint8_t *rx;           /* read scratch */
    sg_wbuf_t tx;          /* packet encoding scratch */
    sg_wbuf_t frame;       /* wire frame scratch */
    volatile bool stop;
    uint32_t accept_paused_until;
    _Atomic uint32_t *open;   /* connections of the whole process: the limit is per process, not per thread */
    /* statistics, read by other threads */
    _Atomic uint64_t n_conns;
    _Atomic int64_t router_seen_ms;   /* sg_mono_ms of the last frame from the router (0: never) */
    _Atomic uint64_t accepted, online, auth_failed, telemetry_in, c2d_out, protocol_errors;
    _Atomic uint64_t refused_ip;   /* connections refused by the per-address limits */
    _Atomic uint64_t methods_out, method_responses;   /* direct method requests sent, responses passed on */
    _Atomic uint64_t credit_waits;   /* times a connection paused because its shard's credit was spent */
    _Atomic uint64_t credit_bytes;   /* bytes of unacknowledged publishes, all shards (credit in use) */
};

/* Each loop sends its router a heartbeat this often; a loop whose router has not answered for
 * FE_ROUTER_STALE_MS makes the frontend unready. */
#define HEARTBEAT_EVERY_S 2
#define FE_ROUTER_STALE_MS 7000

#define FE_RX_SCRATCH (16 * 1024 + 512)

/* A CONNECT has arrived and is not decided yet (waiting for the shard, or for room on the link):
 * it gets CONNACK 3 a second before the CONNECT deadline rather than a silent close. */
static inline bool fe_conn_connect_pending(const fe_conn_t *c)
{
    return c->state == FE_AUTHENTICATING || (c->state == FE_WAIT_CONNECT && c->device && (c->paused & FE_P_LINK));
}

/* fe_conn.c */
/* A new TCP connection from addr (on the ws port: MQTT over WebSocket): refused (closed) over the
 * process or per-address limits. */
void fe_conn_accept(fe_worker_t *w, int fd, const struct sockaddr *addr, bool ws);
void fe_conn_close(fe_conn_t *c, const char *reason);
/* Queue bytes for the device; closes the connection when its output cap is exceeded. */
void fe_conn_send(fe_conn_t *c, const uint8_t *p, size_t n);
/* For the WebSocket layer (fe_ws.c): MQTT bytes from the device; bytes queued as they are (false:
 * over the output cap, the connection is closed); write what is queued. */
void fe_conn_feed(fe_conn_t *c, const uint8_t *data, size_t n);
bool fe_conn_queue(fe_conn_t *c, const uint8_t *p, size_t n);
void fe_conn_flush(fe_conn_t *c);
/* Send then close once everything is written (CONNACK refusals). */
void fe_conn_send_and_close(fe_conn_t *c, const uint8_t *p, size_t n, const char *reason);
/* Complete QoS 0 delivery pid at the shard once the bytes sent so far are on the socket. */
void fe_conn_complete_when_written(fe_conn_t *c, uint16_t pid);
void fe_conn_pause(fe_conn_t *c, uint8_t why);
void fe_conn_resume(fe_conn_t *c, uint8_t why);
void fe_conn_schedule(fe_conn_t *c);   /* recompute the connection's next timer deadline */
uint64_t fe_conn_handle(const fe_conn_t *c);
fe_conn_t *fe_conn_by_handle(fe_worker_t *w, uint64_t handle);

/* fe_session.c: returns one of these from fe_session_packet */
enum { FE_PKT_DONE = 0, FE_PKT_RETRY = 1 };
int fe_session_packet(fe_conn_t *c, const sg_mqtt_packet_t *pkt);
void fe_session_frame(fe_worker_t *w, const sg_wire_hdr_t *h);
/* The connection is closing; was = the state it was in (it is FE_CLOSED already). */
void fe_session_closed(fe_conn_t *c, uint8_t was);
/* Send the bookkeeping frame f of c's input (fe_link_send_queued): when it has to wait, c stops
 * being read until the link has room, so one device cannot grow the backlog. */
void fe_session_send_bookkeeping(fe_conn_t *c, const sg_wbuf_t *f);
/* The PUBACK of a QoS 1 publish that needs nothing from a shard (a method response): written now,
 * or, while earlier publishes wait to be durable, after theirs (MQTT 3.1.1 4.6: in order). */
void fe_session_puback_in_order(fe_conn_t *c, uint16_t pid);
/* Send the PUBACKs that became due since the last call, one write per connection: the shard
 * acknowledges a group commit at once, and a TLS record (and a write) per acknowledgement cost
 * more than the rest of the path. Called after the link is drained. */
void fe_session_flush_acks(fe_worker_t *w);
/* Send again the publishes a tier refused (BUSY: a full queue) once their wait is over; a
 * connection stays in the list while any waits. Each pass of the loop. */
void fe_session_retry(fe_worker_t *w);
/* A subscription change or a delivery's completion a router or shard refused for a full queue
 * (BUSY, at its backstop: cluster.hwm, store.hold_bytes), to send again; the connection stays. */
typedef struct fe_owed {
    uint64_t handle;      /* the connection (fe_conn_handle) */
    uint64_t epoch;       /* of its session then */
    uint32_t retry_at;    /* loop ms */
    uint16_t pid;         /* COMPLETE: the delivery's packet id */
    uint8_t type;         /* SG_MSG_SUBSCRIBE or SG_MSG_COMPLETE */
} fe_owed_t;
/* Send what is due of w->owed again. */
void fe_session_owed(fe_worker_t *w);
/* Credit (cluster.credit): the bytes of QoS 1 publishes a loop has sent towards one shard and
 * not had acknowledged are bounded; a connection of a shard whose credit is spent is not read
 * (FE_P_CREDIT) until acknowledgements bring it back, so a slow or stopped shard slows its own
 * devices and nothing on the way grows past the credits. fe_session_credit_return gives back
 * c's unacknowledged publishes (it is closing); fe_session_credit_resume reads the paused
 * connections whose shard has credit again (end of each pass). */
void fe_session_credit_return(fe_conn_t *c);
void fe_session_credit_resume(fe_worker_t *w);
/* A QoS 0 delivery reached the socket (fe_conn_complete_when_written). */
void fe_session_written(fe_conn_t *c, uint16_t pid);
/* Checks deadlines; returns false when it closed the connection. */
bool fe_session_timer(fe_conn_t *c, uint32_t now);

/* fe_inquiry.c (the topic parsers are in fe_inquiry.h) */
/* The INQUIRY frame of publish p on topic t into w->frame (SG_E_FULL: too big for a frame). */
SG_WUR sg_rc fe_inquiry_frame(fe_conn_t *c, const sg_mqtt_publish_t *p, const fe_inquiry_topic_t *t);
void fe_inquiry_subscribed(fe_conn_t *c, bool on);
/* INQUIRY_RES from the shard: the answer to the device. */
void fe_inquiry_answer(fe_conn_t *c, const sg_wire_hdr_t *h);

/* The shard answering for `shard` changed (it restarted): the publishes the old one took in and
 * never acknowledged are gone. Every connection of the loop waiting for acknowledgements from
 * that shard (every shard: FE_SHARD_UNKNOWN, after a router restart) is closed, so its device
 * sends them again after reconnecting (MQTT 3.1.1 resends only then). */
void fe_session_shard_lost(fe_worker_t *w, uint16_t shard, const char *why);

/* fe_methods.c: direct methods (SPEC §2), hooked into fe_session.c's dispatch */
/* Is f the method channel's filter ($iothub/methods/POST/#)? */
bool fe_methods_is_filter(sg_mqtt_str_t f);
/* The method subscription went on or off: the device's shard is told (it decides whether a call
 * can be delivered). */
void fe_methods_subscribe(fe_conn_t *c, bool on);
/* The same, asking the shard to answer (SUBSCRIBE_RES naming pid) once it is in effect. */
void fe_methods_subscribe_answered(fe_conn_t *c, uint16_t pid);
/* Is t under $iothub/methods/res/ (a method response; anything else there is foreign)? */
bool fe_methods_is_response(sg_mqtt_str_t t);
/* A PUBLISH on $iothub/methods/res/...: passed to the shard, or the connection closed for a
 * malformed topic. Returns FE_PKT_*. */
int fe_methods_response(fe_conn_t *c, const sg_mqtt_publish_t *p);
/* SG_MSG_METHOD from the shard: the call goes to the device as a QoS 0 PUBLISH. */
void fe_methods_frame(fe_conn_t *c, const sg_wire_hdr_t *h);

/* fe_worker.c */
/* Send a frame on the router link without blocking (into the pass's batch when the router takes
 * batches): SG_E_FULL at the high-water mark (or while queued bookkeeping frames wait, so a
 * device's frames stay in order); the caller retries. */
SG_WUR sg_rc fe_link_send(fe_worker_t *w, const sg_wbuf_t *frame);
/* Send the pass's batch; SG_E_FULL (kept) while the link is at its high-water mark. */
SG_WUR sg_rc fe_link_flush(fe_worker_t *w);
/* Send a frame that must not be lost (session end, will, subscription, completion, method
 * answer, key look-up): queued in order when the link is full and sent as soon as it has room.
 * SG_E_FULL when it waits (in the backlog, or in the pass's batch while the link is full),
 * SG_E_NOMEM when it could not be kept (logged).
 * The backlog has no cap to drop beyond; it is bounded by the connections instead:
 * - a frame from a connection's input that has to wait pauses that connection until the link has
 *   room (fe_session_send_bookkeeping), so its input adds one frame at most;
 * - a closing connection adds its will and its SESSION_END once, and the will's bytes were held
 *   by the connection before;
 * - a connection that is not authenticated adds no more than its TLS-PSK key look-up, and its
 *   handshake waits for the answer; its CONNECT waits for the link itself;
 * - a frame for a session that is no longer here (an orphan) adds one SESSION_END, and a shard
 *   sends such a session no more than one AUTH_RES and its window of deliveries. */
sg_rc fe_link_send_queued(fe_worker_t *w, const sg_wbuf_t *frame);
void fe_worker_block(fe_worker_t *w, fe_conn_t *c);
/* Take c off the blocked list (it no longer waits for the link). */
void fe_worker_unblock_conn(fe_worker_t *w, fe_conn_t *c);
void fe_worker_release_slot(fe_worker_t *w, fe_conn_t *c);

/* The header of a frame of c's session into f (appended): its device, its handle on this loop
 * and the session epoch, with flags and status; the type's body follows. */
static inline SG_WUR sg_rc fe_conn_frame_head(const fe_conn_t *c, sg_wbuf_t *f, uint8_t type, uint8_t flags,
                                              uint16_t status)
{
    sg_frame_session_t s = {c->device, fe_conn_handle(c), c->epoch};
    return sg_frame_session_head(f, type, &s, flags, status);
}

#endif
