/* st_record.h — binary records a shard stores (sessions, queue counters, messages, telemetry,
 * feedback). Each starts with a version byte and is read back through sg_cur, so a damaged
 * record is reported, never trusted. Registry entries are JSON (st_registry.h). */
#ifndef ST_RECORD_H
#define ST_RECORD_H

#include <stdbool.h>
#include <stdint.h>
#include "sg_buf.h"
#include "sg_result.h"
#include "sg_page.h"
#include "sg_wire.h"

/* Where a device's live session is. peer is the routing id of the frontend event loop. */
typedef struct {
    uint64_t epoch;
    bool live;
    bool subscribed;          /* devicebound subscription */
    bool sub_qos0;            /* ...granted at QoS 0 */
    bool methods;             /* subscribed to direct methods ($iothub/methods/POST/#) */
    uint8_t method;           /* SG_CRED_* it authenticated with */
    uint64_t handle;          /* the connection inside that frontend */
    int64_t since_ms;
    char peer[SG_WIRE_MAX_PEER + 1];
    char router[SG_WIRE_MAX_PEER + 1];   /* the router that reaches that frontend loop */
} st_session_t;

SG_WUR sg_rc st_session_put(sg_wbuf_t *w, const st_session_t *s);
SG_WUR sg_rc st_session_get(const void *p, size_t n, st_session_t *s);

/* Queue counters of one device. */
typedef struct {
    uint64_t next_seq;
    uint32_t count;
    uint64_t bytes;
} st_qmeta_t;

SG_WUR sg_rc st_qmeta_put(sg_wbuf_t *w, const st_qmeta_t *m);
SG_WUR sg_rc st_qmeta_get(const void *p, size_t n, st_qmeta_t *m);

/* Feedback requested for a cloud-to-device message. */
enum { ST_ACK_NONE = 0, ST_ACK_POSITIVE = 1, ST_ACK_NEGATIVE = 2, ST_ACK_FULL = 3 };

/* Outcomes (feedback and dead-letter reasons). */
enum {
    ST_OUT_DELIVERED = 1,
    ST_OUT_EXPIRED,
    ST_OUT_REJECTED,
    ST_OUT_PURGED,
    ST_OUT_REVOKED,
    ST_OUT_DELIVERY_COUNT_EXCEEDED,
    ST_OUT_DAMAGED,   /* dead-letter reason only: a queue record that could not be read (no feedback) */
};
const char *st_outcome_name(uint8_t outcome);

/* One queued message (views into the record bytes when read). */
typedef struct {
    const char *message_id;
    size_t message_id_len;
    int64_t enqueued_ms;
    int64_t expires_ms;
    uint8_t ack;
    uint32_t delivery_count;
    sg_wire_props_t props;
    const uint8_t *payload;
    size_t payload_len;
} st_msg_t;

/* Writes the message fields; props are written by the caller as (nprops, pairs) via
 * sg_wire_put_prop between st_msg_put_head and st_msg_put_tail. */
SG_WUR sg_rc st_msg_put_head(sg_wbuf_t *w, const st_msg_t *m, uint16_t nprops);
SG_WUR sg_rc st_msg_put_tail(sg_wbuf_t *w, const void *payload, size_t len);
SG_WUR sg_rc st_msg_get(const void *p, size_t n, st_msg_t *m);
/* Copy record p with delivery_count replaced (the count sits at a fixed place). */
SG_WUR sg_rc st_msg_with_count(const void *p, size_t n, uint32_t count, sg_wbuf_t *out);

/* Dead letter: u8 reason, u64 at_ms, then the message record (with reason ST_OUT_DAMAGED the
 * queue record's bytes as they were found, which st_msg_get refuses). */
SG_WUR sg_rc st_dead_put(sg_wbuf_t *w, uint8_t reason, int64_t at_ms, const void *msg, size_t n);
/* The reason and time of a dead letter, and where its message record is (*msg, *msg_len). */
SG_WUR sg_rc st_dead_head(const void *p, size_t n, uint8_t *reason, int64_t *at_ms, const uint8_t **msg,
                          size_t *msg_len);
SG_WUR sg_rc st_dead_get(const void *p, size_t n, uint8_t *reason, int64_t *at_ms, st_msg_t *m);

/* One telemetry record: what a page of them carries (sg_page.h); its offset is its key, not
 * stored in it (st_tele_get leaves it as it is).
 * u8 2, u64 enqueued (ms), str8 device, u8 credential kind (SG_CRED_*), props, str32 payload: the
 * two properties the gateway stamps (iothub-connection-device-id, -auth-method) are the device and
 * the kind, spelled out when read (sg_page.h), not stored with every record. Records of version
 * 1 (no kind; the pair among the properties) are still read. */
typedef sg_page_tele_t st_tele_t;

SG_WUR sg_rc st_tele_put_head(sg_wbuf_t *w, int64_t enqueued_ms, const char *device, size_t dlen, uint8_t stamped,
                              uint16_t nprops);
SG_WUR sg_rc st_tele_get(const void *p, size_t n, st_tele_t *t);

/* One feedback record. */
SG_WUR sg_rc st_feedback_put(sg_wbuf_t *w, const char *message_id, size_t mid_len,
                             const char *device, size_t dlen, uint8_t outcome, int64_t at_ms);

typedef struct {
    const char *message_id;
    size_t message_id_len;
    const char *device;
    size_t device_len;
    uint8_t outcome;
    int64_t at_ms;
} st_feedback_t;

SG_WUR sg_rc st_feedback_get(const void *p, size_t n, st_feedback_t *f);

/* Shard counters (default CF key "shard"). */
typedef struct {
    uint64_t devices;
    uint64_t feedback_next;
} st_counters_t;

SG_WUR sg_rc st_counters_put(sg_wbuf_t *w, const st_counters_t *c);
SG_WUR sg_rc st_counters_get(const void *p, size_t n, st_counters_t *c);

#endif
