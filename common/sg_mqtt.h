/* sg_mqtt.h — MQTT 3.1.1 codec: framing, decoding and encoding of every control packet.
 * Decoders take one complete packet (fixed header first byte + body) and fill views that point
 * into that packet's bytes (no copies; valid while the packet buffer lives). They read only
 * through sg_cur and reject everything MQTT 3.1.1 calls malformed. Encoders append one packet to
 * an sg_wbuf. Used by the frontend (server side) and the simulator and tests (client side).
 * Dialect rules (topic tables of SPEC §2) are not here: this is plain MQTT 3.1.1.
 * Conventions shared by every function below:
 * - sg_mqtt_frame checks only what framing needs (type 0/15, Remaining Length, size); the
 *   per-type fixed-header flag rules (PUBREL/SUBSCRIBE/UNSUBSCRIBE 0x2, PUBLISH DUP/QoS, all
 *   others 0) are checked by the decoders, which return SG_E_MALFORMED when they are broken.
 * - Decoders return SG_E_MALFORMED, never SG_E_TRUNCATED, when a field inside a complete packet
 *   runs past its end (e.g. a string length beyond the Remaining Length): the frame is complete,
 *   so its own lengths disagree. Passing a packet to the wrong decoder is SG_E_INVALID.
 *   On failure the output struct is unspecified.
 * - Encoders append one complete packet with the minimal Remaining Length, or leave the writer
 *   as it was. A string over 65535 bytes, a body over 268435455 bytes or a writer past its cap
 *   is SG_E_TOO_BIG; arguments that would make a packet the decoders reject (QoS 3, packet id 0,
 *   empty topic or filter list, inconsistent CONNECT flags) are SG_E_INVALID. Encoders do not
 *   check string contents (UTF-8, wildcards): callers pass valid topics. */
#ifndef SG_MQTT_H
#define SG_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sg_buf.h"
#include "sg_result.h"

typedef enum {
    SG_MQTT_CONNECT = 1,
    SG_MQTT_CONNACK = 2,
    SG_MQTT_PUBLISH = 3,
    SG_MQTT_PUBACK = 4,
    SG_MQTT_PUBREC = 5,
    SG_MQTT_PUBREL = 6,
    SG_MQTT_PUBCOMP = 7,
    SG_MQTT_SUBSCRIBE = 8,
    SG_MQTT_SUBACK = 9,
    SG_MQTT_UNSUBSCRIBE = 10,
    SG_MQTT_UNSUBACK = 11,
    SG_MQTT_PINGREQ = 12,
    SG_MQTT_PINGRESP = 13,
    SG_MQTT_DISCONNECT = 14,
} sg_mqtt_type_t;

/* CONNACK return codes (MQTT 3.1.1 §3.2.2.3). */
enum {
    SG_MQTT_CONNACK_ACCEPTED = 0,
    SG_MQTT_CONNACK_BAD_PROTOCOL = 1,
    SG_MQTT_CONNACK_ID_REJECTED = 2,
    SG_MQTT_CONNACK_UNAVAILABLE = 3,
    SG_MQTT_CONNACK_BAD_USER_OR_PASSWORD = 4,
    SG_MQTT_CONNACK_NOT_AUTHORIZED = 5,
};

#define SG_MQTT_SUBACK_FAILURE 0x80

/* A view of bytes inside a packet. */
typedef struct {
    const uint8_t *p;
    size_t len;
} sg_mqtt_str_t;

/* One complete packet found by sg_mqtt_frame. */
typedef struct {
    uint8_t type;          /* sg_mqtt_type_t */
    uint8_t flags;         /* low nibble of the first byte */
    const uint8_t *body;   /* variable header + payload */
    size_t body_len;       /* the Remaining Length */
    size_t total_len;      /* fixed header + body: bytes to consume */
} sg_mqtt_packet_t;

/* Look for one complete packet at the start of buf.
 * SG_OK: *pkt describes it. SG_E_AGAIN: more bytes needed. *need, when not NULL, is set to the
 * total packet size once the fixed header is complete, else 0. SG_E_MALFORMED: Remaining Length
 * longer than 4 bytes or type 0/15 (both known before the body arrives). SG_E_TOO_BIG: the packet
 * would exceed max_packet bytes, reported as soon as the Remaining Length is read. Non-minimal
 * Remaining Length encodings are accepted (3.1.1 does not forbid them). */
SG_WUR sg_rc sg_mqtt_frame(const uint8_t *buf, size_t len, size_t max_packet,
                           sg_mqtt_packet_t *pkt, size_t *need);

typedef struct {
    sg_mqtt_str_t protocol_name;   /* "MQTT" */
    uint8_t protocol_level;        /* 4 for 3.1.1 */
    bool clean_session;
    uint16_t keep_alive;
    sg_mqtt_str_t client_id;
    bool will;
    uint8_t will_qos;
    bool will_retain;
    sg_mqtt_str_t will_topic;
    sg_mqtt_str_t will_message;
    bool has_username;
    sg_mqtt_str_t username;
    bool has_password;
    sg_mqtt_str_t password;
} sg_mqtt_connect_t;

/* Decodes CONNECT. A protocol name other than "MQTT" or a level other than 4 decodes with
 * SG_OK so the server can answer CONNACK 1; then only protocol_name and protocol_level are filled
 * (the rest is zero), since the rest of such a packet follows another spec (MQTT 5 adds
 * properties). Otherwise: reserved flag set, password without username, will QoS 3, will QoS or
 * retain without the will flag, bad UTF-8 in a string field, an empty will topic or trailing
 * bytes are SG_E_MALFORMED; wildcards in the will topic are SG_E_PROTOCOL. An empty client id
 * decodes fine (refusing it is dialect policy).
 * The encoder writes the flags from the struct fields; protocol_name.p NULL means "MQTT". */
SG_WUR sg_rc sg_mqtt_decode_connect(const sg_mqtt_packet_t *pkt, sg_mqtt_connect_t *out);
SG_WUR sg_rc sg_mqtt_encode_connect(sg_wbuf_t *w, const sg_mqtt_connect_t *c);

/* CONNACK: a 2-byte body; ack-flag bits 7-1 set is SG_E_MALFORMED. Any return code decodes
 * (6-255 are reserved, not malformed). */
typedef struct {
    bool session_present;
    uint8_t return_code;
} sg_mqtt_connack_t;

SG_WUR sg_rc sg_mqtt_decode_connack(const sg_mqtt_packet_t *pkt, sg_mqtt_connack_t *out);
SG_WUR sg_rc sg_mqtt_encode_connack(sg_wbuf_t *w, bool session_present, uint8_t return_code);

typedef struct {
    bool dup;
    uint8_t qos;
    bool retain;
    sg_mqtt_str_t topic;
    uint16_t packet_id;    /* 0 for QoS 0 */
    sg_mqtt_str_t payload;
} sg_mqtt_publish_t;

/* Decodes PUBLISH. QoS 3, DUP with QoS 0, packet id 0 with QoS > 0, zero-length topic, bad
 * UTF-8 or U+0000 in the topic are SG_E_MALFORMED; wildcards ('+', '#') in the topic are
 * SG_E_PROTOCOL. QoS 2 and RETAIN decode fine: refusing them is dialect policy.
 * The encoder ignores packet_id for QoS 0. */
SG_WUR sg_rc sg_mqtt_decode_publish(const sg_mqtt_packet_t *pkt, sg_mqtt_publish_t *out);
SG_WUR sg_rc sg_mqtt_encode_publish(sg_wbuf_t *w, const sg_mqtt_publish_t *p);
/* Same, with the topic given in up to three pieces that are concatenated on the wire (so the
 * frontend can build "devices/{id}/messages/devicebound/" + bag without a copy). */
SG_WUR sg_rc sg_mqtt_encode_publish3(sg_wbuf_t *w, uint8_t qos, bool dup, bool retain,
                                     uint16_t packet_id, const sg_mqtt_str_t topic[3],
                                     const void *payload, size_t payload_len);

/* PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK: a packet id only (PUBREL has flags 0x2). A body
 * other than 2 bytes, wrong flags or packet id 0 are SG_E_MALFORMED; other types SG_E_INVALID. */
SG_WUR sg_rc sg_mqtt_decode_ack(const sg_mqtt_packet_t *pkt, uint16_t *packet_id);
SG_WUR sg_rc sg_mqtt_encode_ack(sg_wbuf_t *w, sg_mqtt_type_t type, uint16_t packet_id);

/* SUBSCRIBE (flags must be 0x2; packet id nonzero; at least one filter; requested QoS 0-2 with
 * the upper six bits 0; filters valid UTF-8, non-empty, '#' only last and alone in its level,
 * '+' alone in its level). Breaking any of these is SG_E_MALFORMED. Filters are read with an
 * iterator so no array is needed. */
typedef struct {
    uint16_t packet_id;
    size_t count;
    sg_cur_t rest;   /* iterator state */
} sg_mqtt_subscribe_t;

SG_WUR sg_rc sg_mqtt_decode_subscribe(const sg_mqtt_packet_t *pkt, sg_mqtt_subscribe_t *out);
/* Next filter; returns false when there are no more. Only valid after a
 * successful decode (which has already validated every entry). */
bool sg_mqtt_subscribe_next(sg_mqtt_subscribe_t *s, sg_mqtt_str_t *filter, uint8_t *qos);
SG_WUR sg_rc sg_mqtt_encode_subscribe(sg_wbuf_t *w, uint16_t packet_id,
                                      const sg_mqtt_str_t *filters, const uint8_t *qos,
                                      size_t count);

/* SUBACK: packet id nonzero and at least one return code, each 0, 1, 2 or 0x80, else
 * SG_E_MALFORMED. */
typedef struct {
    uint16_t packet_id;
    size_t count;
    const uint8_t *codes;   /* count return codes: 0, 1, 2 or 0x80 */
} sg_mqtt_suback_t;

SG_WUR sg_rc sg_mqtt_decode_suback(const sg_mqtt_packet_t *pkt, sg_mqtt_suback_t *out);
SG_WUR sg_rc sg_mqtt_encode_suback(sg_wbuf_t *w, uint16_t packet_id, const uint8_t *codes,
                                   size_t count);

/* UNSUBSCRIBE (flags 0x2, packet id nonzero, at least one filter, same filter rules as
 * SUBSCRIBE; else SG_E_MALFORMED). */
typedef struct {
    uint16_t packet_id;
    size_t count;
    sg_cur_t rest;
} sg_mqtt_unsubscribe_t;

SG_WUR sg_rc sg_mqtt_decode_unsubscribe(const sg_mqtt_packet_t *pkt, sg_mqtt_unsubscribe_t *out);
bool sg_mqtt_unsubscribe_next(sg_mqtt_unsubscribe_t *u, sg_mqtt_str_t *filter);
SG_WUR sg_rc sg_mqtt_encode_unsubscribe(sg_wbuf_t *w, uint16_t packet_id,
                                        const sg_mqtt_str_t *filters, size_t count);

/* PINGREQ, PINGRESP, DISCONNECT: flags 0 and no body, else SG_E_MALFORMED; other types
 * SG_E_INVALID. */
SG_WUR sg_rc sg_mqtt_decode_empty(const sg_mqtt_packet_t *pkt);
SG_WUR sg_rc sg_mqtt_encode_empty(sg_wbuf_t *w, sg_mqtt_type_t type);

/* Topic helpers. sg_mqtt_valid_utf8: well-formed UTF-8 under MQTT's rules (shortest form only,
 * no U+0000, no surrogates U+D800..U+DFFF, nothing above U+10FFFF). */
bool sg_mqtt_valid_utf8(const uint8_t *p, size_t len);
/* A control character (U+0001..U+001F, U+007F..U+009F) in p, which must be valid UTF-8: topic
 * names and filters that hold one are refused (SG_E_MALFORMED). */
bool sg_mqtt_topic_has_control(const uint8_t *p, size_t len);
bool sg_mqtt_topic_has_wildcard(const uint8_t *p, size_t len);
const char *sg_mqtt_type_name(uint8_t type);

#endif
