/* sg_mqtt.c — MQTT 3.1.1 codec: framing, decoders that read a complete packet only through
 * sg_cur, and encoders that size a packet first, reserve it whole, then write it through sg_wbuf.
 * Plain MQTT 3.1.1; the IoT Hub dialect (topics, QoS 2, retain) is checked by the frontend. */
#include "sg_mqtt.h"
#include <string.h>

/* The largest Remaining Length that four variable-byte digits carry (§2.2.3). */
#define MQTT_MAX_REMAINING 268435455u
/* Strings on the wire carry a u16 length (§1.5.3). */
#define MQTT_MAX_STR 65535u

/* What a packet type's body looks like, so the shared ack and empty-packet codecs can tell which
 * types they serve. */
enum { BODY_RESERVED, BODY_OWN, BODY_PACKET_ID, BODY_NONE };
/* PUBLISH's low nibble is DUP/QoS/RETAIN rather than fixed; its decoder checks it. */
#define FLAGS_ANY 0xFF

/* Fixed-header rules per type (§2.2.2): name for logs, required flags, and body shape.
 * Types 0 and 15 are reserved (no name) and make a frame malformed. */
static const struct {
    const char *name;
    uint8_t flags;
    uint8_t body;
} packet_rules[16] = {
    [SG_MQTT_CONNECT] = {"CONNECT", 0x0, BODY_OWN},
    [SG_MQTT_CONNACK] = {"CONNACK", 0x0, BODY_OWN},
    [SG_MQTT_PUBLISH] = {"PUBLISH", FLAGS_ANY, BODY_OWN},
    [SG_MQTT_PUBACK] = {"PUBACK", 0x0, BODY_PACKET_ID},
    [SG_MQTT_PUBREC] = {"PUBREC", 0x0, BODY_PACKET_ID},
    [SG_MQTT_PUBREL] = {"PUBREL", 0x2, BODY_PACKET_ID},
    [SG_MQTT_PUBCOMP] = {"PUBCOMP", 0x0, BODY_PACKET_ID},
    [SG_MQTT_SUBSCRIBE] = {"SUBSCRIBE", 0x2, BODY_OWN},
    [SG_MQTT_SUBACK] = {"SUBACK", 0x0, BODY_OWN},
    [SG_MQTT_UNSUBSCRIBE] = {"UNSUBSCRIBE", 0x2, BODY_OWN},
    [SG_MQTT_UNSUBACK] = {"UNSUBACK", 0x0, BODY_PACKET_ID},
    [SG_MQTT_PINGREQ] = {"PINGREQ", 0x0, BODY_NONE},
    [SG_MQTT_PINGRESP] = {"PINGRESP", 0x0, BODY_NONE},
    [SG_MQTT_DISCONNECT] = {"DISCONNECT", 0x0, BODY_NONE},
};

static uint8_t body_shape(unsigned type)
{
    return type < 16 ? packet_rules[type].body : BODY_RESERVED;
}

const char *sg_mqtt_type_name(uint8_t type)
{
    return body_shape(type) != BODY_RESERVED ? packet_rules[type].name : "UNKNOWN";
}

/* ---- UTF-8 and topics ------------------------------------------------------------------ */

/* One UTF-8 sequence per row: lead-byte mask and pattern, continuation bytes, and the smallest
 * code point it may carry (anything below is an overlong form). */
static const struct {
    uint8_t mask, lead;
    unsigned extra;
    uint32_t min;
} utf8_forms[] = {
    {0x80, 0x00, 0, 0x0},
    {0xE0, 0xC0, 1, 0x80},
    {0xF0, 0xE0, 2, 0x800},
    {0xF8, 0xF0, 3, 0x10000},
};

/* Decode one sequence; false if it is not well-formed (bad lead, bad or missing continuation,
 * overlong). Range checks on the code point are left to the caller. */
static bool utf8_next(sg_cur_t *c, uint32_t *cp)
{
    uint8_t b;
    if (sg_cur_u8(c, &b) != SG_OK)
        return false;
    for (size_t i = 0; i < sizeof utf8_forms / sizeof utf8_forms[0]; i++) {
        if ((b & utf8_forms[i].mask) != utf8_forms[i].lead)
            continue;
        uint32_t v = b & (uint8_t)~utf8_forms[i].mask;
        for (unsigned k = 0; k < utf8_forms[i].extra; k++) {
            uint8_t cb;
            if (sg_cur_u8(c, &cb) != SG_OK || (cb & 0xC0) != 0x80)
                return false;
            v = (v << 6) | (cb & 0x3Fu);
        }
        *cp = v;
        return v >= utf8_forms[i].min;
    }
    return false;   /* a stray continuation byte, or 0xF8..0xFF */
}

bool sg_mqtt_valid_utf8(const uint8_t *p, size_t len)
{
    sg_cur_t c;
    sg_cur_init(&c, p, len);
    while (sg_cur_left(&c) > 0) {
        uint32_t cp;
        if (!utf8_next(&c, &cp))
            return false;
        /* §1.5.3: U+0000 and the surrogates are forbidden; RFC 3629 stops at U+10FFFF. */
        if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
    }
    return true;
}

/* Both wildcards are ASCII, and ASCII bytes never occur inside a multi-byte UTF-8 sequence, so a
 * byte search is exact. */
bool sg_mqtt_topic_has_wildcard(const uint8_t *p, size_t len)
{
    return len > 0 && (memchr(p, '+', len) != NULL || memchr(p, '#', len) != NULL);
}

/* §1.5.3 says topics SHOULD NOT hold the control characters U+0001..U+001F and U+007F..U+009F;
 * sacgate refuses them (they would reach logs, JSON readers and terminals). On valid UTF-8 a byte
 * scan is exact: C0 controls and DEL are single bytes, C1 controls are 0xC2 0x80..0x9F. */
bool sg_mqtt_topic_has_control(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] < 0x20 || p[i] == 0x7F || (p[i] == 0xC2 && i + 1 < len && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F))
            return true;
    }
    return false;
}

/* A Topic Name, as in PUBLISH and the will (§4.7.3): non-empty, valid UTF-8, no control
 * characters, no wildcards. */
static sg_rc check_topic_name(sg_mqtt_str_t t)
{
    SG_ENSURE(t.len > 0 && sg_mqtt_valid_utf8(t.p, t.len), SG_E_MALFORMED);
    SG_ENSURE(!sg_mqtt_topic_has_control(t.p, t.len), SG_E_MALFORMED);
    SG_ENSURE(!sg_mqtt_topic_has_wildcard(t.p, t.len), SG_E_PROTOCOL);
    return SG_OK;
}

/* A Topic Filter (§4.7.1): non-empty, valid UTF-8, no control characters, '+' fills a whole level and '#' fills the
 * last one. Remembering the previous byte is all these rules need; the start of the filter acts
 * like the byte after a '/'. */
static sg_rc check_topic_filter(sg_mqtt_str_t f)
{
    SG_ENSURE(f.len > 0 && sg_mqtt_valid_utf8(f.p, f.len), SG_E_MALFORMED);
    SG_ENSURE(!sg_mqtt_topic_has_control(f.p, f.len), SG_E_MALFORMED);
    sg_cur_t c;
    uint8_t prev = '/';
    sg_cur_init(&c, f.p, f.len);
    while (sg_cur_left(&c) > 0) {
        uint8_t b;
        SG_GUARD(sg_cur_u8(&c, &b));
        SG_ENSURE(prev != '+' || b == '/', SG_E_MALFORMED);                   /* "+x" */
        SG_ENSURE((b != '+' && b != '#') || prev == '/', SG_E_MALFORMED);     /* "a+", "a#" */
        SG_ENSURE(b != '#' || sg_cur_left(&c) == 0, SG_E_MALFORMED);          /* "#/a" */
        prev = b;
    }
    return SG_OK;
}

/* ---- framing ----------------------------------------------------------------------------- */

/* Remaining Length (§2.2.3): 7 bits per byte, least significant first, at most four bytes.
 * A byte not received yet is SG_E_AGAIN; a fourth byte that still says "more" is malformed, which
 * is known without waiting for a fifth. Non-minimal encodings are accepted: 3.1.1 does not
 * forbid them (the encoders below always write the minimal form). */
static sg_rc read_remaining_length(sg_cur_t *c, size_t *out)
{
    size_t value = 0;
    for (unsigned i = 0; i < 4; i++) {
        uint8_t b;
        SG_ENSURE(sg_cur_u8(c, &b) == SG_OK, SG_E_AGAIN);
        value |= (size_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *out = value;
            return SG_OK;
        }
    }
    return SG_E_MALFORMED;
}

sg_rc sg_mqtt_frame(const uint8_t *buf, size_t len, size_t max_packet, sg_mqtt_packet_t *pkt,
                    size_t *need)
{
    sg_cur_t c;
    uint8_t first;
    size_t remaining;
    const uint8_t *body;

    if (need)
        *need = 0;
    sg_cur_init(&c, buf, len);
    SG_ENSURE(sg_cur_u8(&c, &first) == SG_OK, SG_E_AGAIN);
    SG_ENSURE(body_shape(first >> 4) != BODY_RESERVED, SG_E_MALFORMED);
    SG_GUARD(read_remaining_length(&c, &remaining));

    /* The header is complete: the size is known, so an oversized packet is refused now rather
     * than after buffering up to 256 MB of it. */
    size_t total = c.pos + remaining;
    if (need)
        *need = total;
    SG_ENSURE(total <= max_packet, SG_E_TOO_BIG);
    SG_ENSURE(sg_cur_bytes(&c, remaining, &body) == SG_OK, SG_E_AGAIN);

    pkt->type = first >> 4;
    pkt->flags = first & 0x0F;
    pkt->body = body;
    pkt->body_len = remaining;
    pkt->total_len = total;
    return SG_OK;
}

/* ---- decoding helpers -------------------------------------------------------------------- */

/* Check that pkt is the type the caller decodes (the wrong decoder is a caller bug, so
 * SG_E_INVALID) and carries the fixed-header flags its type requires, then open its body. */
static sg_rc open_body(const sg_mqtt_packet_t *pkt, uint8_t type, sg_cur_t *c)
{
    SG_ENSURE(pkt->type == type, SG_E_INVALID);
    SG_ENSURE(packet_rules[type].flags == FLAGS_ANY || pkt->flags == packet_rules[type].flags,
              SG_E_MALFORMED);
    sg_cur_init(c, pkt->body, pkt->body_len);
    return SG_OK;
}

/* Reads inside a complete packet. Running out of body means the packet's own lengths disagree
 * with its Remaining Length: that is malformed, not "truncated", since no more bytes will come. */
static sg_rc short_is_malformed(sg_rc rc)
{
    return rc == SG_E_TRUNCATED ? SG_E_MALFORMED : rc;
}

static sg_rc body_u8(sg_cur_t *c, uint8_t *v)
{
    return short_is_malformed(sg_cur_u8(c, v));
}

static sg_rc body_u16(sg_cur_t *c, uint16_t *v)
{
    return short_is_malformed(sg_cur_u16(c, v));
}

/* A u16-length-prefixed string or binary field. */
static sg_rc body_str(sg_cur_t *c, sg_mqtt_str_t *s)
{
    return short_is_malformed(sg_cur_str16(c, MQTT_MAX_STR, &s->p, &s->len));
}

static sg_rc body_utf8(sg_cur_t *c, sg_mqtt_str_t *s)
{
    SG_GUARD(body_str(c, s));
    SG_ENSURE(sg_mqtt_valid_utf8(s->p, s->len), SG_E_MALFORMED);
    return SG_OK;
}

/* Packet identifiers are nonzero wherever they appear (§2.3.1). */
static sg_rc body_packet_id(sg_cur_t *c, uint16_t *id)
{
    SG_GUARD(body_u16(c, id));
    SG_ENSURE(*id != 0, SG_E_MALFORMED);
    return SG_OK;
}

static sg_rc body_end(const sg_cur_t *c)
{
    SG_ENSURE(sg_cur_left(c) == 0, SG_E_MALFORMED);
    return SG_OK;
}

/* ---- encoding helpers -------------------------------------------------------------------- */

/* Grow a body size by n, refusing bodies no Remaining Length can express. *total never exceeds
 * MQTT_MAX_REMAINING, so the sum cannot overflow. */
static sg_rc add_size(size_t *total, size_t n)
{
    SG_ENSURE(n <= MQTT_MAX_REMAINING - *total, SG_E_TOO_BIG);
    *total += n;
    return SG_OK;
}

/* Grow a body size by a u16-length-prefixed string. */
static sg_rc add_str(size_t *total, sg_mqtt_str_t s)
{
    SG_ENSURE(s.len <= MQTT_MAX_STR, SG_E_TOO_BIG);
    SG_ENSURE(s.p != NULL || s.len == 0, SG_E_INVALID);
    return add_size(total, 2 + s.len);
}

static size_t remaining_length_size(size_t n)
{
    return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

/* Reserve room for the whole packet, so the writes that follow cannot fail half-way (an encoder
 * either appends one complete packet or leaves w as it was), then write the fixed header with
 * the minimal Remaining Length. */
static sg_rc begin_packet(sg_wbuf_t *w, uint8_t type, uint8_t flags, size_t body_len)
{
    SG_ENSURE(body_len <= MQTT_MAX_REMAINING, SG_E_TOO_BIG);
    SG_GUARD(sg_wbuf_reserve(w, 1 + remaining_length_size(body_len) + body_len));
    SG_GUARD(sg_wbuf_u8(w, (uint8_t)(type << 4 | flags)));
    do {
        uint8_t digit = body_len & 0x7F;
        body_len >>= 7;
        SG_GUARD(sg_wbuf_u8(w, (uint8_t)(digit | (body_len ? 0x80 : 0))));
    } while (body_len);
    return SG_OK;
}

static sg_rc put_str(sg_wbuf_t *w, sg_mqtt_str_t s)
{
    return sg_wbuf_str16(w, s.p, s.len);
}

/* ---- CONNECT ----------------------------------------------------------------------------- */

/* Connect Flags bits (§3.1.2.3). */
enum {
    CF_RESERVED = 0x01,
    CF_CLEAN = 0x02,
    CF_WILL = 0x04,
    CF_WILL_QOS_SHIFT = 3,
    CF_WILL_QOS = 0x18,
    CF_WILL_RETAIN = 0x20,
    CF_PASSWORD = 0x40,
    CF_USERNAME = 0x80,
};

static bool is_mqtt_311(const sg_mqtt_connect_t *c)
{
    return c->protocol_level == 4 && c->protocol_name.len == 4 &&
           memcmp(c->protocol_name.p, "MQTT", 4) == 0;
}

static sg_rc check_connect_flags(uint8_t f)
{
    SG_ENSURE(!(f & CF_RESERVED), SG_E_MALFORMED);
    SG_ENSURE((f & CF_WILL_QOS) != CF_WILL_QOS, SG_E_MALFORMED);
    SG_ENSURE((f & CF_WILL) || !(f & (CF_WILL_QOS | CF_WILL_RETAIN)), SG_E_MALFORMED);
    SG_ENSURE((f & CF_USERNAME) || !(f & CF_PASSWORD), SG_E_MALFORMED);
    return SG_OK;
}

sg_rc sg_mqtt_decode_connect(const sg_mqtt_packet_t *pkt, sg_mqtt_connect_t *out)
{
    sg_cur_t c;
    uint8_t f;

    memset(out, 0, sizeof *out);
    SG_GUARD(open_body(pkt, SG_MQTT_CONNECT, &c));
    SG_GUARD(body_utf8(&c, &out->protocol_name));
    SG_GUARD(body_u8(&c, &out->protocol_level));
    /* Another protocol or level lays out the rest its own way (MQTT 5 adds properties), so stop
     * here and let the server answer CONNACK 1 instead of calling the packet malformed. */
    if (!is_mqtt_311(out))
        return SG_OK;

    SG_GUARD(body_u8(&c, &f));
    SG_GUARD(check_connect_flags(f));
    out->clean_session = f & CF_CLEAN;
    out->will = f & CF_WILL;
    out->will_qos = (f & CF_WILL_QOS) >> CF_WILL_QOS_SHIFT;
    out->will_retain = f & CF_WILL_RETAIN;
    out->has_username = f & CF_USERNAME;
    out->has_password = f & CF_PASSWORD;
    SG_GUARD(body_u16(&c, &out->keep_alive));

    /* Payload fields come in this fixed order, each present only if its flag says so. */
    SG_GUARD(body_utf8(&c, &out->client_id));
    if (out->will) {
        SG_GUARD(body_str(&c, &out->will_topic));
        SG_GUARD(check_topic_name(out->will_topic));
        SG_GUARD(body_str(&c, &out->will_message));
    }
    if (out->has_username)
        SG_GUARD(body_utf8(&c, &out->username));
    if (out->has_password)
        SG_GUARD(body_str(&c, &out->password));
    return body_end(&c);
}

sg_rc sg_mqtt_encode_connect(sg_wbuf_t *w, const sg_mqtt_connect_t *c)
{
    static const sg_mqtt_str_t mqtt = {(const uint8_t *)"MQTT", 4};
    sg_mqtt_str_t name = c->protocol_name.p ? c->protocol_name : mqtt;
    uint8_t f = (uint8_t)((c->clean_session ? CF_CLEAN : 0) | (c->will ? CF_WILL : 0) |
                          c->will_qos << CF_WILL_QOS_SHIFT |
                          (c->will_retain ? CF_WILL_RETAIN : 0) |
                          (c->has_username ? CF_USERNAME : 0) |
                          (c->has_password ? CF_PASSWORD : 0));
    size_t body = 4;   /* level, flags, keep-alive */

    /* Refuse what the server would call malformed rather than send it. */
    SG_ENSURE(c->will_qos <= 2, SG_E_INVALID);
    SG_ENSURE(check_connect_flags(f) == SG_OK, SG_E_INVALID);
    SG_GUARD(add_str(&body, name));
    SG_GUARD(add_str(&body, c->client_id));
    if (c->will) {
        SG_GUARD(add_str(&body, c->will_topic));
        SG_GUARD(add_str(&body, c->will_message));
    }
    if (c->has_username)
        SG_GUARD(add_str(&body, c->username));
    if (c->has_password)
        SG_GUARD(add_str(&body, c->password));

    SG_GUARD(begin_packet(w, SG_MQTT_CONNECT, 0, body));
    SG_GUARD(put_str(w, name));
    SG_GUARD(sg_wbuf_u8(w, c->protocol_level));
    SG_GUARD(sg_wbuf_u8(w, f));
    SG_GUARD(sg_wbuf_u16(w, c->keep_alive));
    SG_GUARD(put_str(w, c->client_id));
    if (c->will) {
        SG_GUARD(put_str(w, c->will_topic));
        SG_GUARD(put_str(w, c->will_message));
    }
    if (c->has_username)
        SG_GUARD(put_str(w, c->username));
    if (c->has_password)
        SG_GUARD(put_str(w, c->password));
    return SG_OK;
}

/* ---- CONNACK ----------------------------------------------------------------------------- */

sg_rc sg_mqtt_decode_connack(const sg_mqtt_packet_t *pkt, sg_mqtt_connack_t *out)
{
    sg_cur_t c;
    uint8_t ack_flags;

    SG_GUARD(open_body(pkt, SG_MQTT_CONNACK, &c));
    SG_GUARD(body_u8(&c, &ack_flags));
    SG_ENSURE(!(ack_flags & 0xFE), SG_E_MALFORMED);   /* bits 7-1 are reserved (§3.2.2.1) */
    SG_GUARD(body_u8(&c, &out->return_code));
    out->session_present = ack_flags & 0x01;
    return body_end(&c);
}

sg_rc sg_mqtt_encode_connack(sg_wbuf_t *w, bool session_present, uint8_t return_code)
{
    SG_GUARD(begin_packet(w, SG_MQTT_CONNACK, 0, 2));
    SG_GUARD(sg_wbuf_u8(w, session_present ? 1 : 0));
    return sg_wbuf_u8(w, return_code);
}

/* ---- PUBLISH ----------------------------------------------------------------------------- */

/* PUBLISH fixed-header flags (§3.3.1). */
enum { PF_RETAIN = 0x1, PF_QOS_SHIFT = 1, PF_QOS = 0x6, PF_DUP = 0x8 };

sg_rc sg_mqtt_decode_publish(const sg_mqtt_packet_t *pkt, sg_mqtt_publish_t *out)
{
    sg_cur_t c;

    memset(out, 0, sizeof *out);
    SG_GUARD(open_body(pkt, SG_MQTT_PUBLISH, &c));
    out->dup = pkt->flags & PF_DUP;
    out->qos = (pkt->flags & PF_QOS) >> PF_QOS_SHIFT;
    out->retain = pkt->flags & PF_RETAIN;
    SG_ENSURE(out->qos <= 2, SG_E_MALFORMED);
    SG_ENSURE(out->qos > 0 || !out->dup, SG_E_MALFORMED);   /* [MQTT-3.3.1-2] */

    SG_GUARD(body_str(&c, &out->topic));
    SG_GUARD(check_topic_name(out->topic));
    if (out->qos > 0)
        SG_GUARD(body_packet_id(&c, &out->packet_id));
    /* Whatever follows is the application payload, possibly empty. */
    out->payload.len = sg_cur_left(&c);
    return short_is_malformed(sg_cur_bytes(&c, out->payload.len, &out->payload.p));
}

sg_rc sg_mqtt_encode_publish(sg_wbuf_t *w, const sg_mqtt_publish_t *p)
{
    const sg_mqtt_str_t topic[3] = {p->topic, {NULL, 0}, {NULL, 0}};
    return sg_mqtt_encode_publish3(w, p->qos, p->dup, p->retain, p->packet_id, topic,
                                   p->payload.p, p->payload.len);
}

sg_rc sg_mqtt_encode_publish3(sg_wbuf_t *w, uint8_t qos, bool dup, bool retain,
                              uint16_t packet_id, const sg_mqtt_str_t topic[3],
                              const void *payload, size_t payload_len)
{
    size_t topic_len = 0;
    size_t body;

    SG_ENSURE(qos <= 2, SG_E_INVALID);
    SG_ENSURE(qos > 0 ? packet_id != 0 : !dup, SG_E_INVALID);
    SG_ENSURE(payload != NULL || payload_len == 0, SG_E_INVALID);
    for (size_t i = 0; i < 3; i++) {
        SG_ENSURE(topic[i].p != NULL || topic[i].len == 0, SG_E_INVALID);
        SG_ENSURE(topic[i].len <= MQTT_MAX_STR - topic_len, SG_E_TOO_BIG);
        topic_len += topic[i].len;
    }
    SG_ENSURE(topic_len > 0, SG_E_INVALID);
    body = 2 + topic_len + (qos > 0 ? 2 : 0);
    SG_GUARD(add_size(&body, payload_len));

    uint8_t flags = (uint8_t)((dup ? PF_DUP : 0) | qos << PF_QOS_SHIFT | (retain ? PF_RETAIN : 0));
    SG_GUARD(begin_packet(w, SG_MQTT_PUBLISH, flags, body));
    SG_GUARD(sg_wbuf_u16(w, (uint16_t)topic_len));
    for (size_t i = 0; i < 3; i++)
        SG_GUARD(sg_wbuf_bytes(w, topic[i].p, topic[i].len));
    if (qos > 0)
        SG_GUARD(sg_wbuf_u16(w, packet_id));
    return sg_wbuf_bytes(w, payload, payload_len);
}

/* ---- PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK --------------------------------------------- */

sg_rc sg_mqtt_decode_ack(const sg_mqtt_packet_t *pkt, uint16_t *packet_id)
{
    sg_cur_t c;
    uint16_t id;

    SG_ENSURE(body_shape(pkt->type) == BODY_PACKET_ID, SG_E_INVALID);
    SG_GUARD(open_body(pkt, pkt->type, &c));
    SG_GUARD(body_packet_id(&c, &id));
    SG_GUARD(body_end(&c));
    *packet_id = id;
    return SG_OK;
}

sg_rc sg_mqtt_encode_ack(sg_wbuf_t *w, sg_mqtt_type_t type, uint16_t packet_id)
{
    SG_ENSURE(body_shape(type) == BODY_PACKET_ID && packet_id != 0, SG_E_INVALID);
    SG_GUARD(begin_packet(w, (uint8_t)type, packet_rules[type].flags, 2));
    return sg_wbuf_u16(w, packet_id);
}

/* ---- SUBSCRIBE --------------------------------------------------------------------------- */

/* One SUBSCRIBE entry (§3.8.3): a filter and a requested-QoS byte whose upper six bits are
 * reserved, so "at most 2" covers both the reserved bits and QoS 3. */
static sg_rc read_subscription(sg_cur_t *c, sg_mqtt_str_t *filter, uint8_t *qos)
{
    SG_GUARD(body_str(c, filter));
    SG_GUARD(check_topic_filter(*filter));
    SG_GUARD(body_u8(c, qos));
    SG_ENSURE(*qos <= 2, SG_E_MALFORMED);
    return SG_OK;
}

sg_rc sg_mqtt_decode_subscribe(const sg_mqtt_packet_t *pkt, sg_mqtt_subscribe_t *out)
{
    sg_cur_t c;

    SG_GUARD(open_body(pkt, SG_MQTT_SUBSCRIBE, &c));
    SG_GUARD(body_packet_id(&c, &out->packet_id));
    /* Validate every entry now so the iterator never meets a bad one. */
    out->rest = c;
    out->count = 0;
    while (sg_cur_left(&c) > 0) {
        sg_mqtt_str_t filter;
        uint8_t qos;
        SG_GUARD(read_subscription(&c, &filter, &qos));
        out->count++;
    }
    SG_ENSURE(out->count > 0, SG_E_MALFORMED);   /* [MQTT-3.8.3-3] */
    return SG_OK;
}

bool sg_mqtt_subscribe_next(sg_mqtt_subscribe_t *s, sg_mqtt_str_t *filter, uint8_t *qos)
{
    return sg_cur_left(&s->rest) > 0 &&
           sg_cur_str16(&s->rest, MQTT_MAX_STR, &filter->p, &filter->len) == SG_OK &&
           sg_cur_u8(&s->rest, qos) == SG_OK;
}

sg_rc sg_mqtt_encode_subscribe(sg_wbuf_t *w, uint16_t packet_id, const sg_mqtt_str_t *filters,
                               const uint8_t *qos, size_t count)
{
    size_t body = 2;

    SG_ENSURE(packet_id != 0 && count > 0, SG_E_INVALID);
    for (size_t i = 0; i < count; i++) {
        SG_ENSURE(filters[i].len > 0 && qos[i] <= 2, SG_E_INVALID);
        SG_GUARD(add_str(&body, filters[i]));
        SG_GUARD(add_size(&body, 1));
    }
    SG_GUARD(begin_packet(w, SG_MQTT_SUBSCRIBE, packet_rules[SG_MQTT_SUBSCRIBE].flags, body));
    SG_GUARD(sg_wbuf_u16(w, packet_id));
    for (size_t i = 0; i < count; i++) {
        SG_GUARD(put_str(w, filters[i]));
        SG_GUARD(sg_wbuf_u8(w, qos[i]));
    }
    return SG_OK;
}

/* ---- SUBACK ------------------------------------------------------------------------------ */

static bool valid_suback_code(uint8_t code)
{
    return code <= 2 || code == SG_MQTT_SUBACK_FAILURE;
}

sg_rc sg_mqtt_decode_suback(const sg_mqtt_packet_t *pkt, sg_mqtt_suback_t *out)
{
    sg_cur_t c;

    SG_GUARD(open_body(pkt, SG_MQTT_SUBACK, &c));
    SG_GUARD(body_packet_id(&c, &out->packet_id));
    out->count = sg_cur_left(&c);
    SG_ENSURE(out->count > 0, SG_E_MALFORMED);
    SG_GUARD(short_is_malformed(sg_cur_bytes(&c, out->count, &out->codes)));

    /* Check each code through a cursor of its own over the same bytes. */
    sg_cur_t codes;
    sg_cur_init(&codes, out->codes, out->count);
    while (sg_cur_left(&codes) > 0) {
        uint8_t code;
        SG_GUARD(body_u8(&codes, &code));
        SG_ENSURE(valid_suback_code(code), SG_E_MALFORMED);
    }
    return SG_OK;
}

sg_rc sg_mqtt_encode_suback(sg_wbuf_t *w, uint16_t packet_id, const uint8_t *codes, size_t count)
{
    size_t body = 2;

    SG_ENSURE(packet_id != 0 && count > 0, SG_E_INVALID);
    for (size_t i = 0; i < count; i++)
        SG_ENSURE(valid_suback_code(codes[i]), SG_E_INVALID);
    SG_GUARD(add_size(&body, count));
    SG_GUARD(begin_packet(w, SG_MQTT_SUBACK, 0, body));
    SG_GUARD(sg_wbuf_u16(w, packet_id));
    return sg_wbuf_bytes(w, codes, count);
}

/* ---- UNSUBSCRIBE ------------------------------------------------------------------------- */

sg_rc sg_mqtt_decode_unsubscribe(const sg_mqtt_packet_t *pkt, sg_mqtt_unsubscribe_t *out)
{
    sg_cur_t c;

    SG_GUARD(open_body(pkt, SG_MQTT_UNSUBSCRIBE, &c));
    SG_GUARD(body_packet_id(&c, &out->packet_id));
    out->rest = c;
    out->count = 0;
    while (sg_cur_left(&c) > 0) {
        sg_mqtt_str_t filter;
        SG_GUARD(body_str(&c, &filter));
        SG_GUARD(check_topic_filter(filter));
        out->count++;
    }
    SG_ENSURE(out->count > 0, SG_E_MALFORMED);   /* [MQTT-3.10.3-2] */
    return SG_OK;
}

bool sg_mqtt_unsubscribe_next(sg_mqtt_unsubscribe_t *u, sg_mqtt_str_t *filter)
{
    return sg_cur_left(&u->rest) > 0 &&
           sg_cur_str16(&u->rest, MQTT_MAX_STR, &filter->p, &filter->len) == SG_OK;
}

sg_rc sg_mqtt_encode_unsubscribe(sg_wbuf_t *w, uint16_t packet_id, const sg_mqtt_str_t *filters,
                                 size_t count)
{
    size_t body = 2;

    SG_ENSURE(packet_id != 0 && count > 0, SG_E_INVALID);
    for (size_t i = 0; i < count; i++) {
        SG_ENSURE(filters[i].len > 0, SG_E_INVALID);
        SG_GUARD(add_str(&body, filters[i]));
    }
    SG_GUARD(begin_packet(w, SG_MQTT_UNSUBSCRIBE, packet_rules[SG_MQTT_UNSUBSCRIBE].flags, body));
    SG_GUARD(sg_wbuf_u16(w, packet_id));
    for (size_t i = 0; i < count; i++)
        SG_GUARD(put_str(w, filters[i]));
    return SG_OK;
}

/* ---- PINGREQ, PINGRESP, DISCONNECT ------------------------------------------------------- */

sg_rc sg_mqtt_decode_empty(const sg_mqtt_packet_t *pkt)
{
    sg_cur_t c;

    SG_ENSURE(body_shape(pkt->type) == BODY_NONE, SG_E_INVALID);
    SG_GUARD(open_body(pkt, pkt->type, &c));
    return body_end(&c);
}

sg_rc sg_mqtt_encode_empty(sg_wbuf_t *w, sg_mqtt_type_t type)
{
    SG_ENSURE(body_shape(type) == BODY_NONE, SG_E_INVALID);
    return begin_packet(w, (uint8_t)type, 0, 0);
}
