/* sg_wire.h — the frames the tiers exchange over ZeroMQ.
 * Every frame starts with a small versioned header (type, flags, status, target shard,
 * correlation id, session epoch, device id) followed by a type-specific body. Both are read
 * through sg_cur: a frame from a peer is untrusted and a malformed one is rejected.
 *
 * Socket envelopes: a frontend or admin sends [frame] on a DEALER to a router's ROUTER socket;
 * the router forwards [peer][frame] to the owning shard, where peer is the sender's routing id;
 * a shard answers (or pushes) [peer][frame] to a router, which sends [frame] to that peer. */
#ifndef SG_WIRE_H
#define SG_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sg_buf.h"
#include "sg_result.h"

#define SG_WIRE_VERSION 1
#define SG_WIRE_SHARD_BY_DEVICE 0xFFFFFFFFu   /* route by the ring, not an explicit index */
/* Largest frame: a page of telemetry or messages as JSON (pages are capped at 4 MiB of encoded
 * records, see st_reader.c) plus headroom. */
#define SG_WIRE_MAX_FRAME (8u * 1024u * 1024u)
/* Properties one record or frame may carry (a device bag is capped far lower). */
#define SG_WIRE_MAX_PROPS 256
#define SG_WIRE_MAX_PEER 96

/* Who may send each type upstream is one line per type in common/sg_role.c (a type not listed
 * there is refused from everyone). */
typedef enum {
    SG_MSG_AUTH = 1,        /* fe->st: CONNECT credentials; corr = connection handle */
    SG_MSG_AUTH_RES,        /* st->fe: status = SG_AUTH_*, epoch = new session epoch */
    SG_MSG_SESSION_END,     /* fe->st: the connection with this epoch is gone */
    SG_MSG_KICK,            /* st->fe: close the connection (corr = handle) of this epoch */
    SG_MSG_TELEMETRY,       /* fe->st: one device-to-cloud message */
    SG_MSG_TELEMETRY_ACK,   /* st->fe: it is durable (status 0) or refused */
    SG_MSG_SUBSCRIBE,       /* fe->st: the session (un)subscribed a channel */
    SG_MSG_DELIVER,         /* st->fe: one cloud-to-device message for the session */
    SG_MSG_COMPLETE,        /* fe->st: the device PUBACKed a delivery */
    SG_MSG_ADMIN,           /* adm->st: an operator request (JSON) */
    SG_MSG_ADMIN_RES,       /* st->adm: status = HTTP status, body JSON */
    SG_MSG_PEER_GONE,       /* rt->st: a push to this peer could not be routed */
    SG_MSG_HELLO,           /* rt->st: router announces itself; fe->rt->st: frontend (re)booted */
    SG_MSG_RING,            /* adm->rt: describe the ring and shard reachability */
    SG_MSG_RING_RES,        /* rt->adm: JSON */
    SG_MSG_PING,            /* rt->st liveness probe */
    SG_MSG_PONG,            /* st->rt */
    SG_MSG_ERROR,           /* rt->peer: could not route (status = SG_WIRE_ERR_*) */
    SG_MSG_ALIVE,           /* rt->st: the frontend loop named by the envelope sent a heartbeat */
    SG_MSG_SHARD_STATE,     /* rt->fe: shard `shard` answers as this incarnation (it restarted) */
    SG_MSG_BATCH,           /* any hop: many frames in one message (see sg_wire_batch_t) */
    SG_MSG_METHOD,          /* st->fe: a direct method call for the session (corr = handle) */
    SG_MSG_METHOD_RES,      /* fe->st: the device's answer to one (status = SG_METHOD_RES_*) */
    SG_MSG_INQUIRY,         /* fe->st: the device asks the service (answered by TELEMETRY_ACK) */
    SG_MSG_INQUIRY_RES,     /* st->fe: the answer (status = its status) for the session corr/epoch */
    SG_MSG_PSK,             /* fe->st: the TLS PSK of device (the identity a handshake offers); corr = handle */
    SG_MSG_PSK_RES,         /* st->fe: status = SG_PSK_*, body the key when SG_PSK_OK */
    SG_MSG_SUBSCRIBE_RES,   /* st->fe: a SUBSCRIBE that asked (SG_WIRE_F_ANSWER) is in effect; u16 its pid */
    SG_MSG_TYPE_MAX
} sg_msg_type_t;

/* flags */
#define SG_WIRE_F_QOS1 0x01             /* TELEMETRY: the device waits for an acknowledgement */
#define SG_WIRE_F_CLEAN 0x02            /* AUTH: MQTT CleanSession=1 */
#define SG_WIRE_F_SESSION_PRESENT 0x04  /* AUTH_RES: an earlier non-clean session is resumed */
#define SG_WIRE_F_SUBSCRIBED 0x08       /* AUTH_RES: ...with its devicebound subscription */
#define SG_WIRE_F_SUBSCRIBED_QOS0 0x10  /* AUTH_RES: ...granted at QoS 0 */
#define SG_WIRE_F_BATCH 0x20            /* PING, PONG: the sender takes BATCH frames */
#define SG_WIRE_F_METHODS 0x40          /* AUTH_RES: the resumed session is subscribed to direct methods */
/* Flags mean something per frame type; the last bit has two meanings:
 * TELEMETRY at QoS 0: answer it too (an empty TELEMETRY_ACK, packet id 0), so its frontend gets its
 * credit back; AUTH_RES: this shard answers those. */
#define SG_WIRE_F_ACK0 0x80
/* SUBSCRIBE: answer it with SUBSCRIBE_RES once in effect (the body carries the MQTT packet id the
 * answer names); AUTH_RES: this shard answers those, so the frontend may hold the SUBACK */
#define SG_WIRE_F_ANSWER 0x01
/* ADMIN telemetry read: the asker takes a compact page (sg_page.h); ADMIN_RES: one */
#define SG_WIRE_F_PAGE 0x80
/* ADMIN telemetry read: ...and takes its records' stamped properties as a stamp word (sg_page.h) */
#define SG_WIRE_F_STAMPED 0x40

/* AUTH_RES status */
enum {
    SG_AUTH_OK = 0,
    SG_AUTH_BAD_CREDENTIALS = 1,   /* unknown device, wrong key/signature, wrong device, expired */
    SG_AUTH_DISABLED = 2,
    SG_AUTH_UNAVAILABLE = 3,       /* shard could not decide (storage error) */
};

/* PSK_RES status */
enum {
    SG_PSK_OK = 0,
    SG_PSK_NONE = 1,        /* unknown device, or not a PSK device */
    SG_PSK_DISABLED = 2,
};
#define SG_WIRE_MAX_PSK 64

/* TELEMETRY_ACK status */
enum {
    SG_TELE_OK = 0,
    SG_TELE_STALE = 1,       /* not the device's current session: the frontend closes that connection */
    SG_TELE_MALFORMED = 2,
    SG_TELE_FULL = 3,        /* the shard's volume is full: refused, not stored */
};

/* credential kinds in AUTH */
enum { SG_CRED_SAS = 1, SG_CRED_X509 = 2, SG_CRED_PSK = 3 };

/* ERROR status */
enum { SG_WIRE_ERR_NO_SHARD = 1, SG_WIRE_ERR_BUSY = 2, SG_WIRE_ERR_MALFORMED = 3,
       SG_WIRE_ERR_FORBIDDEN = 4 /* the sender's role may not send this type (common/sg_role.c) */ };

/* KICK reasons */
enum { SG_KICK_TAKEOVER = 1, SG_KICK_REVOKED = 2, SG_KICK_STALE = 3 };

/* SUBSCRIBE channels and modes (SG_CHAN_METHODS: mode SG_SUB_OFF or SG_SUB_QOS0) */
enum { SG_CHAN_C2D = 1, SG_CHAN_METHODS = 2 };

/* METHOD_RES header status: what the frontend made of the device's answer */
enum {
    SG_METHOD_RES_OK = 0,
    SG_METHOD_RES_TOO_BIG = 1,   /* over frontend.max_method_response: the payload is left out */
};
enum { SG_SUB_OFF = 0, SG_SUB_QOS1 = 1, SG_SUB_QOS0 = 2 };

typedef struct {
    uint8_t type;
    uint8_t flags;
    uint16_t status;
    uint32_t shard;
    uint64_t corr;
    uint64_t epoch;
    const char *device;     /* view, not NUL-terminated; device_len may be 0 */
    size_t device_len;
    const uint8_t *body;    /* view of the bytes after the header */
    size_t body_len;
} sg_wire_hdr_t;

/* Decode and validate a header: version, known type, device id 0-128 bytes of the id alphabet.
 * SG_E_MALFORMED / SG_E_TRUNCATED / SG_E_TOO_BIG otherwise. */
SG_WUR sg_rc sg_wire_decode(const uint8_t *frame, size_t len, sg_wire_hdr_t *out);
/* Append a header (device from h->device/device_len; body and body_len ignored). */
SG_WUR sg_rc sg_wire_encode_hdr(sg_wbuf_t *w, const sg_wire_hdr_t *h);
/* Set the correlation id of an encoded frame in place (a request sent again under a new id). */
SG_WUR sg_rc sg_wire_set_corr(uint8_t *frame, size_t len, uint64_t corr);
/* Add flags to an encoded frame's header in place. */
SG_WUR sg_rc sg_wire_add_flags(uint8_t *frame, size_t len, uint8_t flags);
const char *sg_wire_type_name(uint8_t type);

/* Convenience: a header initialised for type/device with every other field zero and shard
 * SG_WIRE_SHARD_BY_DEVICE. device is a NUL-terminated string or NULL. */
sg_wire_hdr_t sg_wire_hdr(uint8_t type, const char *device);
/* The header of a frame of this type and status answering frame in: the same device,
 * correlation id and session epoch (every answer and refusal starts from it). */
sg_wire_hdr_t sg_wire_reply(const sg_wire_hdr_t *in, uint8_t type, uint16_t status);

/* ---- bodies: each reader sits beside its writer ---- */

/* AUTH */
typedef struct {
    uint8_t method;                   /* SG_CRED_* */
    const uint8_t *credential;        /* SAS: the token; X509: a chain (below); PSK: SHA-256 of the key */
    size_t credential_len;
} sg_wire_auth_t;
/* A credential is at most this long (a SAS token is capped far lower; an X.509 chain of a few
 * certificates fits). */
#define SG_WIRE_MAX_CREDENTIAL 16384
SG_WUR sg_rc sg_wire_put_auth(sg_wbuf_t *w, const sg_wire_auth_t *a);
SG_WUR sg_rc sg_wire_get_auth(const sg_wire_hdr_t *h, sg_wire_auth_t *a);

/* An X509 credential: the certificates the client sent in its handshake, leaf first, each as
 * str16 DER; 1 to SG_WIRE_MAX_CHAIN of them and nothing after. */
#define SG_WIRE_MAX_CHAIN 4
SG_WUR sg_rc sg_wire_put_cert(sg_wbuf_t *w, const uint8_t *der, size_t len);
/* Split a chain: ders[i]/lens[i] view into it, *n how many. SG_E_MALFORMED when it is not one. */
SG_WUR sg_rc sg_wire_get_chain(const uint8_t *p, size_t len, const uint8_t *ders[SG_WIRE_MAX_CHAIN],
                               size_t lens[SG_WIRE_MAX_CHAIN], size_t *n);

/* PSK_RES: str8 key (empty unless SG_PSK_OK; at most SG_WIRE_MAX_PSK bytes) */
SG_WUR sg_rc sg_wire_put_psk(sg_wbuf_t *w, const uint8_t *key, size_t len);
SG_WUR sg_rc sg_wire_get_psk(const sg_wire_hdr_t *h, const uint8_t **key, size_t *len);

/* AUTH_RES */
typedef struct {
    int64_t expires;                  /* credential expiry (s since epoch), 0 = none */
    uint32_t generation;              /* registry generation the decision was made on */
} sg_wire_auth_res_t;
SG_WUR sg_rc sg_wire_put_auth_res(sg_wbuf_t *w, const sg_wire_auth_res_t *a);
SG_WUR sg_rc sg_wire_get_auth_res(const sg_wire_hdr_t *h, sg_wire_auth_res_t *a);

/* Property lists inside bodies: u16 count, then count pairs of str16 key, str16 value. */
typedef struct {
    uint16_t count;
    sg_cur_t rest;
} sg_wire_props_t;
SG_WUR sg_rc sg_wire_put_prop(sg_wbuf_t *w, const char *k, size_t kl, const char *v, size_t vl);
bool sg_wire_props_next(sg_wire_props_t *p, const char **k, size_t *kl, const char **v, size_t *vl);
/* Read and validate a property list at c (keys non-empty, at most 256 pairs); c moves past it. */
SG_WUR sg_rc sg_wire_get_props(sg_cur_t *c, sg_wire_props_t *p);

/* TELEMETRY: u16 packet id, props (caller writes u16 count then sg_wire_put_prop pairs), then
 * str32 payload. Use sg_wire_put_telemetry_head, then props, then sg_wire_put_payload. */
typedef struct {
    uint16_t packet_id;
    sg_wire_props_t props;
    const uint8_t *payload;
    size_t payload_len;
} sg_wire_telemetry_t;
SG_WUR sg_rc sg_wire_put_telemetry_head(sg_wbuf_t *w, uint16_t packet_id, uint16_t nprops);
SG_WUR sg_rc sg_wire_put_payload(sg_wbuf_t *w, const void *p, size_t n);
SG_WUR sg_rc sg_wire_get_telemetry(const sg_wire_hdr_t *h, sg_wire_telemetry_t *t);

/* INQUIRY: u16 packet id (0: QoS 0), str8 name, str8 rid, str32 payload. The name and rid are
 * checked here as the frontend checks them in the topic (sg_inquiry_name_valid, _rid_valid). */
#define SG_INQUIRY_NAME_MAX 64
#define SG_INQUIRY_RID_MAX 64
typedef struct {
    uint16_t packet_id;
    const char *name;
    size_t name_len;
    const char *rid;
    size_t rid_len;
    const uint8_t *payload;
    size_t payload_len;
} sg_wire_inquiry_t;
SG_WUR sg_rc sg_wire_put_inquiry(sg_wbuf_t *w, const sg_wire_inquiry_t *q);
SG_WUR sg_rc sg_wire_get_inquiry(const sg_wire_hdr_t *h, sg_wire_inquiry_t *q);
/* Inquiry names: 1-64 of A-Z a-z 0-9 . _ - (and not "res", the answers' topic level). Request
 * ids: 1-64 of A-Z a-z 0-9 . _ - ~ (URL-unreserved: they travel unescaped in topics). */
bool sg_inquiry_name_valid(const char *s, size_t len);
bool sg_inquiry_rid_valid(const char *s, size_t len);

/* INQUIRY_RES: header status = the answer's status (100-599); str8 rid, str32 payload. */
SG_WUR sg_rc sg_wire_put_inquiry_res(sg_wbuf_t *w, const char *rid, size_t rid_len, const void *payload, size_t len);
SG_WUR sg_rc sg_wire_get_inquiry_res(const sg_wire_hdr_t *h, const char **rid, size_t *rid_len, const uint8_t **payload,
                                     size_t *len);

/* TELEMETRY_ACK, COMPLETE: u16 packet id */
SG_WUR sg_rc sg_wire_put_pid(sg_wbuf_t *w, uint16_t packet_id);
SG_WUR sg_rc sg_wire_get_pid(const sg_wire_hdr_t *h, uint16_t *packet_id);

/* SUBSCRIBE: u8 channel, u8 mode (SG_SUB_*), and with SG_WIRE_F_ANSWER u16 the packet id of the
 * device's SUBSCRIBE (sg_wire_put_pid after this). *pid is 0 when no answer is asked. */
SG_WUR sg_rc sg_wire_put_subscribe(sg_wbuf_t *w, uint8_t channel, uint8_t mode);
SG_WUR sg_rc sg_wire_get_subscribe(const sg_wire_hdr_t *h, uint8_t *channel, uint8_t *mode, uint16_t *pid);

/* DELIVER */
typedef struct {
    uint16_t packet_id;
    uint32_t delivery_count;
    int64_t enqueued_ms;
    int64_t expires_ms;
    const char *message_id;
    size_t message_id_len;
    sg_wire_props_t props;     /* user properties (system ones are the fields above) */
    const uint8_t *payload;
    size_t payload_len;
} sg_wire_deliver_t;
/* Writes everything up to the props count; the caller then writes nprops pairs and the payload. */
SG_WUR sg_rc sg_wire_put_deliver_head(sg_wbuf_t *w, const sg_wire_deliver_t *d, uint16_t nprops);
SG_WUR sg_rc sg_wire_get_deliver(const sg_wire_hdr_t *h, sg_wire_deliver_t *d);

/* METHOD (st->fe): str8 rid, str8 name, str32 payload (JSON text).
 * METHOD_RES (fe->st): u32 status (the device's, as a signed 32-bit int), str8 rid, str32 payload
 * (the device's body, not checked: the shard checks it is JSON). rid and name are 1 to
 * SG_METHOD_NAME_MAX bytes of the method name alphabet (sg_method_name_valid). */
#define SG_METHOD_NAME_MAX 128
#define SG_METHOD_RID_MAX 64
typedef struct {
    const char *rid;
    size_t rid_len;
    const char *name;
    size_t name_len;
    int32_t status;            /* METHOD_RES only */
    const uint8_t *payload;
    size_t payload_len;
} sg_wire_method_t;
SG_WUR sg_rc sg_wire_put_method(sg_wbuf_t *w, const sg_wire_method_t *m);
SG_WUR sg_rc sg_wire_get_method(const sg_wire_hdr_t *h, sg_wire_method_t *m);
SG_WUR sg_rc sg_wire_put_method_res(sg_wbuf_t *w, const sg_wire_method_t *m);
SG_WUR sg_rc sg_wire_get_method_res(const sg_wire_hdr_t *h, sg_wire_method_t *m);
/* A method name or rid as it may appear in $iothub/methods/POST/{name}/?$rid={rid}: 1 to max
 * bytes of A-Z a-z 0-9 and - . _ ~ : @ ! $ ' ( ) * , ; = (nothing that ends a topic level, starts
 * a query or is a wildcard). */
bool sg_method_name_valid(const char *s, size_t len, size_t max);
/* The rest of a method response topic after "$iothub/methods/res/": "{status}/?$rid={rid}[&...]"
 * (untrusted device bytes). status: a decimal int32 (IoT Hub passes any integer through); the
 * query may hold other keys, and "$" may come URL-encoded (%24). *rid points into p and is not
 * checked (sg_method_name_valid). False when the shape is wrong. */
bool sg_method_res_topic(const uint8_t *p, size_t n, int32_t *status, const char **rid, size_t *rid_len);

/* KICK: u8 reason */
SG_WUR sg_rc sg_wire_put_u8(sg_wbuf_t *w, uint8_t v);
SG_WUR sg_rc sg_wire_get_u8(const sg_wire_hdr_t *h, uint8_t *v);

/* ADMIN: u16 op, str32 JSON;  ADMIN_RES / RING_RES: str32 JSON */
SG_WUR sg_rc sg_wire_put_admin(sg_wbuf_t *w, uint16_t op, const char *json, size_t len);
SG_WUR sg_rc sg_wire_get_admin(const sg_wire_hdr_t *h, uint16_t *op, const char **json, size_t *len);
SG_WUR sg_rc sg_wire_put_json(sg_wbuf_t *w, const char *json, size_t len);
SG_WUR sg_rc sg_wire_get_json(const sg_wire_hdr_t *h, const char **json, size_t *len);

/* ERROR answering the frame `in` (same corr, epoch, device), status = SG_WIRE_ERR_*, body = u8
 * type of the refused frame, then for a TELEMETRY its u16 packet id (0: QoS 0). */
SG_WUR sg_rc sg_wire_put_error(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint16_t code);
/* The refused frame's type and (telemetry) packet id; *named is false for an error that names
 * none (older routers and shards, other frames), *pid 0 then and for QoS 0. */
SG_WUR sg_rc sg_wire_get_error(const sg_wire_hdr_t *h, uint8_t *about, uint16_t *pid, bool *named);

/* PONG from a shard to a router's probe: str8 shard name, u64 incarnation (random at each start
 * of the shard: a new value means whatever the old one held in memory is gone). */
SG_WUR sg_rc sg_wire_put_shard_pong(sg_wbuf_t *w, const char *name, uint64_t incarnation);
SG_WUR sg_rc sg_wire_get_shard_pong(const sg_wire_hdr_t *h, const char **name, size_t *len, uint64_t *incarnation);

/* PONG from a router to a frontend loop's heartbeat: u64 router incarnation, u16 n, then the
 * incarnation of shards 0..n-1 as the router last heard them (0 = not heard yet). */
#define SG_WIRE_MAX_SHARDS 4096
typedef struct {
    uint64_t router;
    uint16_t n;
    sg_cur_t rest;
} sg_wire_router_pong_t;
SG_WUR sg_rc sg_wire_put_router_pong(sg_wbuf_t *w, uint64_t router, const uint64_t *shards, uint16_t n);
SG_WUR sg_rc sg_wire_get_router_pong(const sg_wire_hdr_t *h, sg_wire_router_pong_t *p);
/* The next shard's incarnation; false when there are no more. Only after a successful get. */
bool sg_wire_router_pong_next(sg_wire_router_pong_t *p, uint64_t *incarnation);

/* SHARD_STATE: header shard = the shard's index; body u64 incarnation. */
SG_WUR sg_rc sg_wire_put_u64(sg_wbuf_t *w, uint64_t v);
SG_WUR sg_rc sg_wire_get_u64(const sg_wire_hdr_t *h, uint64_t *v);

/* HELLO: str8 name of the announcing process instance */
SG_WUR sg_rc sg_wire_put_name(sg_wbuf_t *w, const char *name);
SG_WUR sg_rc sg_wire_get_name(const sg_wire_hdr_t *h, const char **name, size_t *len);

/* ---- BATCH: many frames in one ZeroMQ message ----
 * A busy link pays one CURVE box, one send and one wake-up of each side's I/O thread per batch
 * instead of per frame. Body: items of str8 peer (the routing id the frame is from or for; empty
 * where the envelope says it) and str32 frame; never a batch inside a batch. A frame travels
 * alone when it is the only one waiting, or too big to be worth batching. A sender batches only
 * to a peer whose PING or PONG carried SG_WIRE_F_BATCH, so tiers of an older version (which
 * would drop a BATCH as an unknown type) keep getting single frames during a rolling upgrade. */
#define SG_WIRE_BATCH_MAX (256u * 1024u)
#define SG_WIRE_BATCH_ITEM_MAX (32u * 1024u)

typedef struct {
    sg_wbuf_t w;        /* the BATCH frame being built (empty: no item yet) */
    uint32_t n;         /* items in it */
    size_t first;       /* offset of the first item (its str8 peer) */
} sg_wire_batch_t;

void sg_wire_batch_init(sg_wire_batch_t *b);
void sg_wire_batch_fini(sg_wire_batch_t *b);
static inline void sg_wire_batch_clear(sg_wire_batch_t *b)
{
    sg_wbuf_reset(&b->w);
    b->n = 0;
}
/* Is a frame of len bytes (with a peer of peer_len) worth batching at all? */
bool sg_wire_batchable(size_t peer_len, size_t len);
/* Does it fit in b beside what is there? */
bool sg_wire_batch_fits(const sg_wire_batch_t *b, size_t peer_len, size_t len);
/* Append one frame (sg_wire_batchable and sg_wire_batch_fits must hold; SG_E_TOO_BIG otherwise). */
SG_WUR sg_rc sg_wire_batch_add(sg_wire_batch_t *b, const void *peer, size_t peer_len, const void *frame, size_t len);
/* What goes out for b (n > 0): the BATCH frame, or with one item that frame alone, and *peer its
 * peer. Views into b, valid until it changes. */
void sg_wire_batch_out(const sg_wire_batch_t *b, const uint8_t **frame, size_t *len, const uint8_t **peer,
                       size_t *peer_len);
/* Walk a received BATCH (h decoded by sg_wire_decode): start at its body, then SG_OK per item,
 * SG_E_AGAIN after the last; SG_E_MALFORMED / SG_E_TRUNCATED for a damaged batch or a batch
 * inside it (stop there: the items before it were good). */
void sg_wire_batch_begin(const sg_wire_hdr_t *h, sg_cur_t *c);
SG_WUR sg_rc sg_wire_batch_next(sg_cur_t *c, const uint8_t **peer, size_t *peer_len, const uint8_t **frame,
                                size_t *len);
/* fn(ctx, peer, peer_len, frame, len) for each item of the BATCH h, in order: SG_OK when every
 * item was good, else the error where the walk stopped (the items before it were passed on).
 * sg_wire_batch_each_frame does the same for an encoded BATCH frame (SG_E_MALFORMED for another
 * type). */
typedef void (*sg_wire_item_fn)(void *ctx, const uint8_t *peer, size_t peer_len, const uint8_t *frame, size_t len);
SG_WUR sg_rc sg_wire_batch_each(const sg_wire_hdr_t *h, sg_wire_item_fn fn, void *ctx);
SG_WUR sg_rc sg_wire_batch_each_frame(const uint8_t *batch, size_t len, sg_wire_item_fn fn, void *ctx);

/* Admin operations carried by SG_MSG_ADMIN. */
typedef enum {
    SG_ADM_DEVICE_PUT = 1,
    SG_ADM_DEVICE_GET,
    SG_ADM_DEVICE_DELETE,
    SG_ADM_MSG_ENQUEUE,
    SG_ADM_MSG_LIST,
    SG_ADM_TELEMETRY_READ,
    SG_ADM_SHARD_STATS,
    SG_ADM_MSG_PURGE,
    SG_ADM_DEVICE_IMPORT,   /* registry entries for one shard, {"line":n,"entry":{..}} a line (store/st_import.c) */
    SG_ADM_GROUP_COMMIT,    /* a consumer group's telemetry position in one partition {"group","offset"} */
    SG_ADM_DEADLETTER_LIST, /* a device's dead letters */
    SG_ADM_DEVICE_LIST,     /* one shard's registry entries in id order {"after","limit","tag"} (a read) */
    SG_ADM_KEYS_REGENERATE, /* new SAS keys for a device {"key"} (a write: see st_shard.c, on_router) */
    SG_ADM_NOTIFY,          /* a notification to fan out in one shard {"notificationId","body"} (store/st_wnotify.c) */
    SG_ADM_NOTIFY_GET,      /* a notification's progress in one shard {"notificationId"} (a read) */
    SG_ADM_METHOD_INVOKE,   /* a direct method {"name","payload","responseTimeoutSeconds","connectTimeoutSeconds",
                             * "fallback"?} (store/st_wmethod.c; the writer holds sessions) */
    SG_ADM_INQUIRY_CLAIM,   /* claim up to "max" inquiries of one shard {"max"} (store/st_winquiry.c) */
    SG_ADM_INQUIRY_WATCH,   /* answered once one shard has a claimable inquiry or after "wait" s {"wait"} */
    SG_ADM_INQUIRY_ANSWER,  /* answer inquiry "seq" of one shard {"seq","status","payload"} */
    SG_ADM_CA_PUT,          /* register a CA on this shard {"name","certificate":PEM} (store/st_ca.c) */
    SG_ADM_CA_GET,          /* one CA {"name"}, or all of them without a name */
    SG_ADM_CA_DELETE,       /* {"name"} */
    SG_ADM_OP_MAX
} sg_adm_op_t;

/* True when op goes to the shard's writer rather than a reader: it changes state, or (the CA
 * operations) reads what only the writer holds in memory. */
bool sg_adm_op_writes(uint16_t op);

/* A telemetry consumer group's name: 1 to SG_GROUP_MAX of A-Z a-z 0-9 . _ - */
#define SG_GROUP_MAX 64
bool sg_group_valid(const char *g, size_t len);

#endif
