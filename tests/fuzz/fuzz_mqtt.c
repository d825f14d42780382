/* fuzz_mqtt.c — libFuzzer harness for the MQTT 3.1.1 codec (common/sg_mqtt.c): frames the input
 * into packets as the frontend would, decodes each with its decoder, re-encodes whatever decoded
 * and aborts unless the re-encoded packet decodes to the same fields (and, where the wire form is
 * canonical, the same body bytes). */
#include <stdlib.h>
#include <string.h>
#include "sg_mqtt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PACKET 8192
#define SMALL_MAX 64

#define REQUIRE(cond)       \
    do {                    \
        if (!(cond))        \
            abort();        \
    } while (0)

static bool str_same(sg_mqtt_str_t a, sg_mqtt_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static bool body_same(const sg_mqtt_packet_t *a, const sg_mqtt_packet_t *b)
{
    return a->body_len == b->body_len &&
           (a->body_len == 0 || memcmp(a->body, b->body, a->body_len) == 0);
}

/* The packet just encoded into w must frame whole, with the original's type and flags. */
static void reframe(const sg_wbuf_t *w, const sg_mqtt_packet_t *orig, sg_mqtt_packet_t *out)
{
    size_t need = 0;
    REQUIRE(sg_mqtt_frame(w->data, w->len, SIZE_MAX, out, &need) == SG_OK);
    REQUIRE(out->total_len == w->len && need == w->len);
    REQUIRE(out->type == orig->type && out->flags == orig->flags);
}

static void check_connect(const sg_mqtt_packet_t *pkt, sg_wbuf_t *w)
{
    sg_mqtt_connect_t a, b;
    sg_mqtt_packet_t again;
    if (sg_mqtt_decode_connect(pkt, &a) != SG_OK)
        return;
    REQUIRE(sg_mqtt_encode_connect(w, &a) == SG_OK);
    reframe(w, pkt, &again);
    REQUIRE(sg_mqtt_decode_connect(&again, &b) == SG_OK);
    REQUIRE(str_same(a.protocol_name, b.protocol_name) && a.protocol_level == b.protocol_level);
    REQUIRE(a.clean_session == b.clean_session && a.keep_alive == b.keep_alive);
    REQUIRE(str_same(a.client_id, b.client_id));
    REQUIRE(a.will == b.will && a.will_qos == b.will_qos && a.will_retain == b.will_retain);
    REQUIRE(str_same(a.will_topic, b.will_topic) && str_same(a.will_message, b.will_message));
    REQUIRE(a.has_username == b.has_username && str_same(a.username, b.username));
    REQUIRE(a.has_password == b.has_password && str_same(a.password, b.password));
    /* A 3.1.1 CONNECT has one wire form; other protocols were decoded only in part. */
    bool v311 = a.protocol_level == 4 && str_same(a.protocol_name,
                                                  (sg_mqtt_str_t){(const uint8_t *)"MQTT", 4});
    REQUIRE(!v311 || body_same(pkt, &again));
}

static void check_connack(const sg_mqtt_packet_t *pkt, sg_wbuf_t *w)
{
    sg_mqtt_connack_t a, b;
    sg_mqtt_packet_t again;
    if (sg_mqtt_decode_connack(pkt, &a) != SG_OK)
        return;
    REQUIRE(sg_mqtt_encode_connack(w, a.session_present, a.return_code) == SG_OK);
    reframe(w, pkt, &again);
    REQUIRE(sg_mqtt_decode_connack(&again, &b) == SG_OK);
    REQUIRE(a.session_present == b.session_present && a.return_code == b.return_code);
    REQUIRE(body_same(pkt, &again));
}

static void check_publish(const sg_mqtt_packet_t *pkt, sg_wbuf_t *w)
{
    sg_mqtt_publish_t a, b;
    sg_mqtt_packet_t again;
    if (sg_mqtt_decode_publish(pkt, &a) != SG_OK)
        return;
    REQUIRE(a.qos <= 2 && (a.qos == 0) == (a.packet_id == 0));
    REQUIRE(a.topic.len > 0 && sg_mqtt_valid_utf8(a.topic.p, a.topic.len));
    REQUIRE(!sg_mqtt_topic_has_wildcard(a.topic.p, a.topic.len));
    REQUIRE(sg_mqtt_encode_publish(w, &a) == SG_OK);
    reframe(w, pkt, &again);
    REQUIRE(sg_mqtt_decode_publish(&again, &b) == SG_OK);
    REQUIRE(a.dup == b.dup && a.qos == b.qos && a.retain == b.retain);
    REQUIRE(a.packet_id == b.packet_id);
    REQUIRE(str_same(a.topic, b.topic) && str_same(a.payload, b.payload));
    REQUIRE(body_same(pkt, &again));
}

static void check_ack(const sg_mqtt_packet_t *pkt, sg_wbuf_t *w)
{
    uint16_t a, b;
    sg_mqtt_packet_t again;
    if (sg_mqtt_decode_ack(pkt, &a) != SG_OK)
        return;
    REQUIRE(a != 0);
    REQUIRE(sg_mqtt_encode_ack(w, (sg_mqtt_type_t)pkt->type, a) == SG_OK);
    reframe(w, pkt, &again);
    REQUIRE(sg_mqtt_decode_ack(&again, &b) == SG_OK && a == b);
    REQUIRE(body_same(pkt, &again));
}

/* Walk the entries with the iterator into arrays, re-encode them, and walk both in step. */
static void check_subscribe(const sg_mqtt_packet_t *pkt, sg_wbuf_t *w)
{
    sg_mqtt_subscribe_t a, b;
    sg_mqtt_packet_t again;
    if (sg_mqtt_decode_subscribe(pkt, &a) != SG_OK)
        return;
    REQUIRE(a.count > 0 && a.packet_id != 0);
    sg_mqtt_str_t *filters = malloc(a.count * sizeof *filters);
    uint8_t *qos = malloc(a.count);
    REQUIRE(filters && qos);
    sg_mqtt_subscribe_t it = a;
    size_t n = 0;
    sg_mqtt_str_t f;
    uint8_t q;
    while (sg_mqtt_subscribe_next(&it, &f, &q)) {
        REQUIRE(n < a.count && q <= 2 && f.len > 0);
        filters[n] = f;
        qos[n++] = q;
    }
    REQUIRE(n == a.count);

    REQUIRE(sg_mqtt_encode_subscribe(w, a.packet_id, filters, qos, n) == SG_OK);
    reframe(w, pkt, &again);
    REQUIRE(sg_mqtt_decode_subscribe(&again, &b) == SG_OK);
    REQUIRE(b.packet_id == a.packet_id && b.count == a.count);
    for (size_t i = 0; i < n; i++)
        REQUIRE(sg_mqtt_subscribe_next(&b, &f, &q) && str_same(f, filters[i]) && q == qos[i]);
    REQUIRE(!sg_mqtt_subscribe_next(&b, &f, &q));
    REQUIRE(body_same(pkt, &again));
    free(filters);
    free(qos);
}

static void check_suback(const sg_mqtt_packet_t *pkt, sg_wbuf_t *w)
{
    sg_mqtt_suback_t a, b;
    sg_mqtt_packet_t again;
    if (sg_mqtt_decode_suback(pkt, &a) != SG_OK)
        return;
    REQUIRE(sg_mqtt_encode_suback(w, a.packet_id, a.codes, a.count) == SG_OK);
    reframe(w, pkt, &again);
    REQUIRE(sg_mqtt_decode_suback(&again, &b) == SG_OK);
    REQUIRE(a.packet_id == b.packet_id && a.count == b.count);
    REQUIRE(memcmp(a.codes, b.codes, a.count) == 0);
    REQUIRE(body_same(pkt, &again));
}

static void check_unsubscribe(const sg_mqtt_packet_t *pkt, sg_wbuf_t *w)
{
    sg_mqtt_unsubscribe_t a, b;
    sg_mqtt_packet_t again;
    if (sg_mqtt_decode_unsubscribe(pkt, &a) != SG_OK)
        return;
    REQUIRE(a.count > 0 && a.packet_id != 0);
    sg_mqtt_str_t *filters = malloc(a.count * sizeof *filters);
    REQUIRE(filters);
    sg_mqtt_unsubscribe_t it = a;
    size_t n = 0;
    sg_mqtt_str_t f;
    while (sg_mqtt_unsubscribe_next(&it, &f)) {
        REQUIRE(n < a.count && f.len > 0);
        filters[n++] = f;
    }
    REQUIRE(n == a.count);

    REQUIRE(sg_mqtt_encode_unsubscribe(w, a.packet_id, filters, n) == SG_OK);
    reframe(w, pkt, &again);
    REQUIRE(sg_mqtt_decode_unsubscribe(&again, &b) == SG_OK);
    REQUIRE(b.packet_id == a.packet_id && b.count == a.count);
    for (size_t i = 0; i < n; i++)
        REQUIRE(sg_mqtt_unsubscribe_next(&b, &f) && str_same(f, filters[i]));
    REQUIRE(!sg_mqtt_unsubscribe_next(&b, &f));
    REQUIRE(body_same(pkt, &again));
    free(filters);
}

static void check_empty(const sg_mqtt_packet_t *pkt, sg_wbuf_t *w)
{
    sg_mqtt_packet_t again;
    if (sg_mqtt_decode_empty(pkt) != SG_OK)
        return;
    REQUIRE(sg_mqtt_encode_empty(w, (sg_mqtt_type_t)pkt->type) == SG_OK);
    reframe(w, pkt, &again);
    REQUIRE(sg_mqtt_decode_empty(&again) == SG_OK && again.body_len == 0);
}

/* One checker per packet type; acks and empty packets share theirs. */
static void (*const checkers[16])(const sg_mqtt_packet_t *, sg_wbuf_t *) = {
    [SG_MQTT_CONNECT] = check_connect,
    [SG_MQTT_CONNACK] = check_connack,
    [SG_MQTT_PUBLISH] = check_publish,
    [SG_MQTT_PUBACK] = check_ack,
    [SG_MQTT_PUBREC] = check_ack,
    [SG_MQTT_PUBREL] = check_ack,
    [SG_MQTT_PUBCOMP] = check_ack,
    [SG_MQTT_SUBSCRIBE] = check_subscribe,
    [SG_MQTT_SUBACK] = check_suback,
    [SG_MQTT_UNSUBSCRIBE] = check_unsubscribe,
    [SG_MQTT_UNSUBACK] = check_ack,
    [SG_MQTT_PINGREQ] = check_empty,
    [SG_MQTT_PINGRESP] = check_empty,
    [SG_MQTT_DISCONNECT] = check_empty,
};

/* Framing properties: a packet one byte short is AGAIN, and a smaller cap agrees. */
static void check_frame(const uint8_t *data, const sg_mqtt_packet_t *pkt)
{
    sg_mqtt_packet_t tmp;
    size_t need = 0;
    REQUIRE(pkt->type >= 1 && pkt->type <= 14 && pkt->flags <= 0x0F);
    REQUIRE(pkt->body + pkt->body_len == data + pkt->total_len);
    REQUIRE(sg_mqtt_frame(data, pkt->total_len - 1, MAX_PACKET, &tmp, &need) == SG_E_AGAIN);
    REQUIRE(need == 0 || need == pkt->total_len);
    sg_rc small = sg_mqtt_frame(data, pkt->total_len, SMALL_MAX, &tmp, NULL);
    REQUIRE(small == (pkt->total_len <= SMALL_MAX ? SG_OK : SG_E_TOO_BIG));
    REQUIRE(strcmp(sg_mqtt_type_name(pkt->type), "UNKNOWN") != 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sg_wbuf_t w;
    sg_mqtt_packet_t pkt;
    size_t need;

    sg_wbuf_init(&w, 2 * MAX_PACKET);
    while (sg_mqtt_frame(data, size, MAX_PACKET, &pkt, &need) == SG_OK) {
        check_frame(data, &pkt);
        sg_wbuf_reset(&w);
        checkers[pkt.type](&pkt, &w);
        data += pkt.total_len;
        size -= pkt.total_len;
    }
    sg_wbuf_fini(&w);

    /* The helpers take any bytes. */
    (void)sg_mqtt_valid_utf8(data, size);
    (void)sg_mqtt_topic_has_wildcard(data, size);
    return 0;
}
