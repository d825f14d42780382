/* sg_mqtt_test.c — unit tests of the MQTT 3.1.1 codec: every packet type encoded then framed and
 * decoded, hand-written packets from the spec, malformed input asserting the exact sg_rc, and a
 * stream of packets framed one byte at a time. */
#include <stdint.h>
#include "sg_mqtt.h"
#include "sg_test.h"

#define MAX_PACKET (1u << 20)

/* A string literal as a view, without its NUL. */
#define S(lit) ((sg_mqtt_str_t){(const uint8_t *)(lit), sizeof(lit) - 1})

static bool str_eq(sg_mqtt_str_t s, const char *want)
{
    size_t n = strlen(want);
    return s.len == n && (n == 0 || memcmp(s.p, want, n) == 0);
}

static bool str_same(sg_mqtt_str_t a, sg_mqtt_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Frame bytes that must hold exactly one complete packet. */
static sg_rc frame_exact(const uint8_t *b, size_t n, sg_mqtt_packet_t *pkt)
{
    size_t need = 0;
    sg_rc rc = sg_mqtt_frame(b, n, MAX_PACKET, pkt, &need);
    if (rc == SG_OK) {
        CHECK(pkt->total_len == n);
        CHECK(need == n);
    }
    return rc;
}

#define FRAME(arr, pkt) CHECK_RC(frame_exact(arr, sizeof arr, pkt), SG_OK)

/* ---- framing ---- */

static void test_frame_basics(void)
{
    sg_mqtt_packet_t pkt;
    size_t need = 99;

    CHECK_RC(sg_mqtt_frame(NULL, 0, MAX_PACKET, &pkt, &need), SG_E_AGAIN);
    CHECK(need == 0);

    static const uint8_t ping[] = {0xC0, 0x00};
    FRAME(ping, &pkt);
    CHECK(pkt.type == SG_MQTT_PINGREQ && pkt.flags == 0 && pkt.body_len == 0);

    /* Only the first byte: the length is not known yet. */
    CHECK_RC(sg_mqtt_frame(ping, 1, MAX_PACKET, &pkt, &need), SG_E_AGAIN);
    CHECK(need == 0);
    /* need may be NULL. */
    CHECK_RC(sg_mqtt_frame(ping, 1, MAX_PACKET, &pkt, NULL), SG_E_AGAIN);

    /* Reserved types 0 and 15 fail on the first byte. */
    static const uint8_t t0[] = {0x00, 0x00}, t15[] = {0xF0, 0x00};
    CHECK_RC(sg_mqtt_frame(t0, 2, MAX_PACKET, &pkt, &need), SG_E_MALFORMED);
    CHECK_RC(sg_mqtt_frame(t15, 2, MAX_PACKET, &pkt, &need), SG_E_MALFORMED);
    CHECK_RC(sg_mqtt_frame(t15, 1, MAX_PACKET, &pkt, &need), SG_E_MALFORMED);

    /* A second packet after the first is left alone. */
    static const uint8_t two[] = {0xC0, 0x00, 0xD0, 0x00};
    CHECK_RC(sg_mqtt_frame(two, sizeof two, MAX_PACKET, &pkt, &need), SG_OK);
    CHECK(pkt.type == SG_MQTT_PINGREQ && pkt.total_len == 2);
}

/* The Remaining Length boundaries of §2.2.3, each as a header only: AGAIN, need = whole size. */
static void test_frame_remaining_length(void)
{
    static const struct {
        uint8_t bytes[4];
        size_t n;
        size_t value;
    } cases[] = {
        {{0x00}, 1, 0},
        {{0x7F}, 1, 127},
        {{0x80, 0x01}, 2, 128},
        {{0xFF, 0x7F}, 2, 16383},
        {{0x80, 0x80, 0x01}, 3, 16384},
        {{0xFF, 0xFF, 0x7F}, 3, 2097151},
        {{0x80, 0x80, 0x80, 0x01}, 4, 2097152},
        {{0xFF, 0xFF, 0xFF, 0x7F}, 4, 268435455},
        {{0x80, 0x00}, 2, 0},   /* non-minimal, accepted */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t hdr[5] = {0x30};
        memcpy(hdr + 1, cases[i].bytes, cases[i].n);
        sg_mqtt_packet_t pkt;
        size_t need = 0;
        sg_rc rc = sg_mqtt_frame(hdr, 1 + cases[i].n, SIZE_MAX, &pkt, &need);
        CHECK(need == 1 + cases[i].n + cases[i].value);
        if (cases[i].value == 0) {
            CHECK_RC(rc, SG_OK);
            CHECK(pkt.body_len == 0);
        } else {
            CHECK_RC(rc, SG_E_AGAIN);
        }
    }

    /* The encoders write the minimal form: publish bodies straddling each boundary. */
    static const struct {
        size_t body;
        uint8_t rl[4];
        size_t n;
    } enc[] = {
        {127, {0x7F}, 1},
        {128, {0x80, 0x01}, 2},
        {16383, {0xFF, 0x7F}, 2},
        {16384, {0x80, 0x80, 0x01}, 3},
    };
    static uint8_t payload[16384];
    for (size_t i = 0; i < sizeof enc / sizeof enc[0]; i++) {
        sg_wbuf_t w;
        const sg_mqtt_str_t topic[3] = {S("t"), {0}, {0}};
        sg_wbuf_init(&w, MAX_PACKET);
        /* body = 2 + 1 (topic) + payload */
        CHECK_RC(sg_mqtt_encode_publish3(&w, 0, false, false, 0, topic, payload, enc[i].body - 3),
                 SG_OK);
        CHECK(w.len == 1 + enc[i].n + enc[i].body);
        CHECK(w.data && memcmp(w.data + 1, enc[i].rl, enc[i].n) == 0);
        sg_wbuf_fini(&w);
    }
}

static void test_frame_errors(void)
{
    sg_mqtt_packet_t pkt;
    size_t need = 99;

    /* A fifth length byte: malformed as soon as the fourth says "more follows". */
    static const uint8_t five[] = {0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00};
    CHECK_RC(sg_mqtt_frame(five, sizeof five, SIZE_MAX, &pkt, &need), SG_E_MALFORMED);
    CHECK_RC(sg_mqtt_frame(five, 5, SIZE_MAX, &pkt, &need), SG_E_MALFORMED);
    CHECK_RC(sg_mqtt_frame(five, 4, SIZE_MAX, &pkt, &need), SG_E_AGAIN);
    CHECK(need == 0);

    /* Remaining Length 10 with only 5 body bytes present. */
    static const uint8_t part[] = {0x30, 0x0A, 0x00, 0x01, 'a', 'x', 'y'};
    CHECK_RC(sg_mqtt_frame(part, sizeof part, MAX_PACKET, &pkt, &need), SG_E_AGAIN);
    CHECK(need == 12);

    /* Remaining Length 1024: over a 1000-byte cap with only the header in hand. */
    static const uint8_t big[] = {0x30, 0x80, 0x08};
    CHECK_RC(sg_mqtt_frame(big, sizeof big, 1000, &pkt, &need), SG_E_TOO_BIG);
    CHECK(need == 1027);
    CHECK_RC(sg_mqtt_frame(big, sizeof big, 1026, &pkt, &need), SG_E_TOO_BIG);
    CHECK_RC(sg_mqtt_frame(big, sizeof big, 1027, &pkt, &need), SG_E_AGAIN);
    CHECK(need == 1027);
    /* The cap counts the fixed header too. */
    static const uint8_t ping[] = {0xC0, 0x00};
    CHECK_RC(sg_mqtt_frame(ping, 2, 1, &pkt, &need), SG_E_TOO_BIG);
    CHECK_RC(sg_mqtt_frame(ping, 2, 2, &pkt, &need), SG_OK);
}

/* Several packets concatenated, arriving one byte at a time: frame must find exactly them. */
static void test_frame_byte_at_a_time(void)
{
    sg_wbuf_t w;
    size_t ends[8], n = 0;
    static uint8_t big_payload[300];
    sg_mqtt_connect_t conn = {.protocol_level = 4, .client_id = S("dev1"), .keep_alive = 60};
    sg_mqtt_publish_t pub = {.qos = 1, .packet_id = 7, .topic = S("a/b"), .payload = S("hello")};
    sg_mqtt_publish_t pub_big = {.topic = S("big"), .payload = {big_payload, sizeof big_payload}};
    const sg_mqtt_str_t filters[] = {S("a/+"), S("b/#")};
    const uint8_t qos[] = {0, 1};

    sg_wbuf_init(&w, MAX_PACKET);
    CHECK_RC(sg_mqtt_encode_connect(&w, &conn), SG_OK);
    ends[n++] = w.len;
    CHECK_RC(sg_mqtt_encode_publish(&w, &pub), SG_OK);
    ends[n++] = w.len;
    CHECK_RC(sg_mqtt_encode_subscribe(&w, 3, filters, qos, 2), SG_OK);
    ends[n++] = w.len;
    CHECK_RC(sg_mqtt_encode_empty(&w, SG_MQTT_PINGREQ), SG_OK);
    ends[n++] = w.len;
    CHECK_RC(sg_mqtt_encode_publish(&w, &pub_big), SG_OK);   /* 2-byte Remaining Length */
    ends[n++] = w.len;
    CHECK_RC(sg_mqtt_encode_ack(&w, SG_MQTT_PUBREL, 9), SG_OK);
    ends[n++] = w.len;
    CHECK_RC(sg_mqtt_encode_empty(&w, SG_MQTT_DISCONNECT), SG_OK);
    ends[n++] = w.len;

    uint8_t rx[1024];
    size_t have = 0, consumed = 0, found = 0;
    for (size_t i = 0; i < w.len; i++) {
        rx[have++] = w.data[i];
        for (;;) {
            sg_mqtt_packet_t pkt;
            size_t need = 0;
            sg_rc rc = sg_mqtt_frame(rx, have, MAX_PACKET, &pkt, &need);
            if (rc == SG_E_AGAIN) {
                /* need, once known, is the size of the next expected packet. */
                if (found < n)
                    CHECK(need == 0 || need == ends[found] - consumed);
                else
                    CHECK(have == 0);
                break;
            }
            CHECK_RC(rc, SG_OK);
            if (rc != SG_OK || found >= n)
                break;
            CHECK(consumed + pkt.total_len == ends[found]);
            CHECK(memcmp(rx, w.data + consumed, pkt.total_len) == 0);
            consumed += pkt.total_len;
            found++;
            memmove(rx, rx + pkt.total_len, have - pkt.total_len);
            have -= pkt.total_len;
        }
    }
    CHECK(found == n);
    CHECK(have == 0);
    CHECK(consumed == w.len);
    sg_wbuf_fini(&w);
}

/* ---- UTF-8 and filters ---- */

static void test_utf8(void)
{
    static const struct {
        const char *s;
        bool ok;
    } cases[] = {
        {"", true},
        {"a/b", true},
        {"\xC3\xA9", true},                 /* é */
        {"\xE2\x82\xAC", true},             /* € */
        {"\xF0\x90\x8D\x88", true},         /* U+10348 */
        {"\xF4\x8F\xBF\xBF", true},         /* U+10FFFF */
        {"\xEF\xBF\xBF", true},             /* U+FFFF: a noncharacter, allowed */
        {"\xED\x9F\xBF", true},             /* U+D7FF, just below the surrogates */
        {"\xEE\x80\x80", true},             /* U+E000, just above */
        {"\xF4\x90\x80\x80", false},        /* U+110000 */
        {"\xED\xA0\x80", false},            /* U+D800 */
        {"\xED\xBF\xBF", false},            /* U+DFFF */
        {"\xC0\x80", false},                /* overlong U+0000 */
        {"\xC1\xBF", false},                /* overlong U+007F */
        {"\xE0\x80\xAF", false},            /* overlong '/' */
        {"\xF0\x80\x80\x80", false},        /* overlong */
        {"\x80", false},                    /* stray continuation */
        {"\xE2\x82", false},                /* cut short */
        {"\xC3\x28", false},                /* bad continuation */
        {"\xF8\x88\x80\x80\x80", false},    /* 5-byte form */
        {"\xFF", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool got = sg_mqtt_valid_utf8((const uint8_t *)cases[i].s, strlen(cases[i].s));
        if (got != cases[i].ok)
            fprintf(stderr, "utf8 case %zu\n", i);
        CHECK(got == cases[i].ok);
    }
    static const uint8_t nul[] = {'a', 0x00, 'b'};
    CHECK(!sg_mqtt_valid_utf8(nul, sizeof nul));

    CHECK(sg_mqtt_topic_has_wildcard((const uint8_t *)"a/+", 3));
    CHECK(sg_mqtt_topic_has_wildcard((const uint8_t *)"#", 1));
    CHECK(!sg_mqtt_topic_has_wildcard((const uint8_t *)"a/b", 3));
    CHECK(!sg_mqtt_topic_has_wildcard(NULL, 0));
}

/* ---- CONNECT ---- */

/* §3.1: will QoS 1, clean session, username and password, keep-alive 10. */
static const uint8_t connect_spec[] = {
    0x10, 0x22,
    0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0xCE, 0x00, 0x0A,
    0x00, 0x03, 'c', 'i', 'd',
    0x00, 0x03, 'a', '/', 'b',
    0x00, 0x02, 'h', 'i',
    0x00, 0x04, 'u', 's', 'e', 'r',
    0x00, 0x02, 'p', 'w',
};

/* A CONNECT whose flags byte is f and payload holds just the client id "c". */
static sg_rc decode_connect_flags(uint8_t f)
{
    uint8_t b[] = {0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, f, 0x00, 0x3C, 0x00, 0x01, 'c'};
    sg_mqtt_packet_t pkt;
    sg_mqtt_connect_t c;
    SG_GUARD(frame_exact(b, sizeof b, &pkt));
    return sg_mqtt_decode_connect(&pkt, &c);
}

static sg_rc decode_bytes_connect(const uint8_t *b, size_t n, sg_mqtt_connect_t *c)
{
    sg_mqtt_packet_t pkt;
    SG_GUARD(frame_exact(b, n, &pkt));
    return sg_mqtt_decode_connect(&pkt, c);
}

static void check_connect_round_trip(const sg_mqtt_connect_t *in)
{
    sg_wbuf_t w;
    sg_mqtt_packet_t pkt;
    sg_mqtt_connect_t out;

    sg_wbuf_init(&w, MAX_PACKET);
    CHECK_RC(sg_mqtt_encode_connect(&w, in), SG_OK);
    CHECK_RC(frame_exact(w.data, w.len, &pkt), SG_OK);
    CHECK_RC(sg_mqtt_decode_connect(&pkt, &out), SG_OK);
    CHECK(str_eq(out.protocol_name, "MQTT") && out.protocol_level == 4);
    CHECK(out.clean_session == in->clean_session && out.keep_alive == in->keep_alive);
    CHECK(str_same(out.client_id, in->client_id));
    CHECK(out.will == in->will && out.will_qos == in->will_qos &&
          out.will_retain == in->will_retain);
    CHECK(str_same(out.will_topic, in->will ? in->will_topic : (sg_mqtt_str_t){0}));
    CHECK(str_same(out.will_message, in->will ? in->will_message : (sg_mqtt_str_t){0}));
    CHECK(out.has_username == in->has_username && out.has_password == in->has_password);
    CHECK(str_same(out.username, in->has_username ? in->username : (sg_mqtt_str_t){0}));
    CHECK(str_same(out.password, in->has_password ? in->password : (sg_mqtt_str_t){0}));
    sg_wbuf_fini(&w);
}

static void test_connect(void)
{
    sg_mqtt_packet_t pkt;
    sg_mqtt_connect_t c;

    FRAME(connect_spec, &pkt);
    CHECK_RC(sg_mqtt_decode_connect(&pkt, &c), SG_OK);
    CHECK(str_eq(c.protocol_name, "MQTT") && c.protocol_level == 4);
    CHECK(c.clean_session && c.keep_alive == 10);
    CHECK(str_eq(c.client_id, "cid"));
    CHECK(c.will && c.will_qos == 1 && !c.will_retain);
    CHECK(str_eq(c.will_topic, "a/b") && str_eq(c.will_message, "hi"));
    CHECK(c.has_username && str_eq(c.username, "user"));
    CHECK(c.has_password && str_eq(c.password, "pw"));

    /* Re-encoding the decoded fields gives back the same bytes. */
    sg_wbuf_t w;
    sg_wbuf_init(&w, MAX_PACKET);
    CHECK_RC(sg_mqtt_encode_connect(&w, &c), SG_OK);
    CHECK(w.len == sizeof connect_spec && memcmp(w.data, connect_spec, w.len) == 0);
    sg_wbuf_fini(&w);

    sg_mqtt_connect_t full = {
        .protocol_level = 4, .clean_session = false, .keep_alive = 65535,
        .client_id = S("device-42"), .will = true, .will_qos = 2, .will_retain = true,
        .will_topic = S("dead/device-42"), .will_message = {(const uint8_t *)"\x00\xFF", 2},
        .has_username = true, .username = S("host/device-42/?api-version=2021-04-12"),
        .has_password = true, .password = {(const uint8_t *)"\x00pw", 3},
    };
    check_connect_round_trip(&full);
    sg_mqtt_connect_t minimal = {.protocol_level = 4, .clean_session = true};   /* empty id */
    check_connect_round_trip(&minimal);
    sg_mqtt_connect_t user_only = {.protocol_level = 4, .has_username = true,
                                   .username = S("u"), .client_id = S("x")};
    check_connect_round_trip(&user_only);
}

static void test_connect_malformed(void)
{
    sg_mqtt_connect_t c;

    CHECK_RC(decode_connect_flags(0x02), SG_OK);
    CHECK_RC(decode_connect_flags(0x00), SG_OK);
    CHECK_RC(decode_connect_flags(0x03), SG_E_MALFORMED);   /* reserved bit */
    CHECK_RC(decode_connect_flags(0x01), SG_E_MALFORMED);
    CHECK_RC(decode_connect_flags(0x42), SG_E_MALFORMED);   /* password without username */
    CHECK_RC(decode_connect_flags(0x0A), SG_E_MALFORMED);   /* will QoS 1 without will */
    CHECK_RC(decode_connect_flags(0x12), SG_E_MALFORMED);   /* will QoS 2 without will */
    CHECK_RC(decode_connect_flags(0x22), SG_E_MALFORMED);   /* will retain without will */
    CHECK_RC(decode_connect_flags(0x1E), SG_E_MALFORMED);   /* will QoS 3 */
    CHECK_RC(decode_connect_flags(0x1A), SG_E_MALFORMED);   /* QoS 3 without will */
    /* Flags that promise fields the payload lacks: the payload runs out. */
    CHECK_RC(decode_connect_flags(0x82), SG_E_MALFORMED);   /* username missing */
    CHECK_RC(decode_connect_flags(0x06), SG_E_MALFORMED);   /* will topic missing */

    /* Protocol-name length (0x10) points past the end of a complete packet. */
    static const uint8_t name_past[] = {0x10, 0x06, 0x00, 0x10, 'M', 'Q', 'T', 'T'};
    CHECK_RC(decode_bytes_connect(name_past, sizeof name_past, &c), SG_E_MALFORMED);
    /* Keep-alive cut short. */
    static const uint8_t short_ka[] = {0x10, 0x09, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02,
                                       0x00};
    CHECK_RC(decode_bytes_connect(short_ka, sizeof short_ka, &c), SG_E_MALFORMED);
    /* Client-id length past the end. */
    static const uint8_t id_past[] = {0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02,
                                      0x00, 0x3C, 0x00, 0x05, 'c'};
    CHECK_RC(decode_bytes_connect(id_past, sizeof id_past, &c), SG_E_MALFORMED);
    /* Trailing byte after the last field. */
    static const uint8_t trailing[] = {0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02,
                                       0x00, 0x3C, 0x00, 0x01, 'c', 'x'};
    CHECK_RC(decode_bytes_connect(trailing, sizeof trailing, &c), SG_E_MALFORMED);
    /* Fixed-header flags must be 0. */
    static const uint8_t hdr_flags[] = {0x11, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02,
                                        0x00, 0x3C, 0x00, 0x01, 'c'};
    CHECK_RC(decode_bytes_connect(hdr_flags, sizeof hdr_flags, &c), SG_E_MALFORMED);
    /* Bad UTF-8 in the client id. */
    static const uint8_t bad_id[] = {0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02,
                                     0x00, 0x3C, 0x00, 0x01, 0xC0};
    CHECK_RC(decode_bytes_connect(bad_id, sizeof bad_id, &c), SG_E_MALFORMED);
    /* Will topic with a wildcard, and an empty will topic. */
    static const uint8_t will_wild[] = {0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x06,
                                        0x00, 0x3C, 0x00, 0x01, 'c', 0x00, 0x01, '#', 0x00, 0x00};
    CHECK_RC(decode_bytes_connect(will_wild, sizeof will_wild, &c), SG_E_PROTOCOL);
    static const uint8_t will_empty[] = {0x10, 0x11, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x06,
                                         0x00, 0x3C, 0x00, 0x01, 'c', 0x00, 0x00, 0x00, 0x00};
    CHECK_RC(decode_bytes_connect(will_empty, sizeof will_empty, &c), SG_E_MALFORMED);
    /* Empty client id decodes: refusing it is the dialect's call. */
    static const uint8_t empty_id[] = {0x10, 0x0C, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02,
                                       0x00, 0x3C, 0x00, 0x00};
    CHECK_RC(decode_bytes_connect(empty_id, sizeof empty_id, &c), SG_OK);
    CHECK(c.client_id.len == 0);
}

/* Other protocols and levels decode SG_OK with only the protocol fields, so the server can send
 * CONNACK 1. */
static void test_connect_other_protocols(void)
{
    sg_mqtt_connect_t c;

    static const uint8_t level3[] = {0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x03, 0x02,
                                     0x00, 0x3C, 0x00, 0x01, 'c'};
    CHECK_RC(decode_bytes_connect(level3, sizeof level3, &c), SG_OK);
    CHECK(str_eq(c.protocol_name, "MQTT") && c.protocol_level == 3 && c.client_id.len == 0);

    static const uint8_t mqisdp[] = {0x10, 0x0F, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x03,
                                     0x02, 0x00, 0x3C, 0x00, 0x01, 'c'};
    CHECK_RC(decode_bytes_connect(mqisdp, sizeof mqisdp, &c), SG_OK);
    CHECK(str_eq(c.protocol_name, "MQIsdp") && c.protocol_level == 3);

    /* MQTT 5: a properties length (0) after keep-alive, which 3.1.1 would call malformed. */
    static const uint8_t v5[] = {0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00,
                                 0x3C, 0x00, 0x00, 0x01, 'c'};
    CHECK_RC(decode_bytes_connect(v5, sizeof v5, &c), SG_OK);
    CHECK(c.protocol_level == 5);

    /* Even so, the protocol name itself must be a valid UTF-8 string that fits. */
    static const uint8_t bad_name[] = {0x10, 0x07, 0x00, 0x04, 'M', 'Q', 0xFF, 'T', 0x04};
    CHECK_RC(decode_bytes_connect(bad_name, sizeof bad_name, &c), SG_E_MALFORMED);
    static const uint8_t no_level[] = {0x10, 0x06, 0x00, 0x04, 'M', 'Q', 'T', 'T'};
    CHECK_RC(decode_bytes_connect(no_level, sizeof no_level, &c), SG_E_MALFORMED);

    /* The encoder writes what it is given, so a simulator can test CONNACK 1. */
    sg_mqtt_connect_t v3 = {.protocol_name = S("MQIsdp"), .protocol_level = 3,
                            .clean_session = true, .keep_alive = 60, .client_id = S("c")};
    sg_wbuf_t w;
    sg_mqtt_packet_t pkt;
    sg_wbuf_init(&w, MAX_PACKET);
    CHECK_RC(sg_mqtt_encode_connect(&w, &v3), SG_OK);
    CHECK(w.len == sizeof mqisdp && memcmp(w.data, mqisdp, w.len) == 0);
    CHECK_RC(frame_exact(w.data, w.len, &pkt), SG_OK);
    sg_wbuf_fini(&w);
}

static void test_connect_encode_errors(void)
{
    sg_wbuf_t w;
    static uint8_t huge[65536];
    sg_wbuf_init(&w, MAX_PACKET);

    sg_mqtt_connect_t c = {.protocol_level = 4, .has_password = true, .password = S("p")};
    CHECK_RC(sg_mqtt_encode_connect(&w, &c), SG_E_INVALID);
    c = (sg_mqtt_connect_t){.protocol_level = 4, .will_qos = 1};
    CHECK_RC(sg_mqtt_encode_connect(&w, &c), SG_E_INVALID);
    c = (sg_mqtt_connect_t){.protocol_level = 4, .will = true, .will_qos = 3,
                            .will_topic = S("t")};
    CHECK_RC(sg_mqtt_encode_connect(&w, &c), SG_E_INVALID);
    c = (sg_mqtt_connect_t){.protocol_level = 4, .client_id = {huge, sizeof huge}};
    CHECK_RC(sg_mqtt_encode_connect(&w, &c), SG_E_TOO_BIG);
    c.client_id.len = 65535;
    CHECK_RC(sg_mqtt_encode_connect(&w, &c), SG_OK);
    CHECK(w.len == 1 + 3 + 10 + 2 + 65535);   /* type, 3-byte length, var header, id */
    /* A failed encode leaves the writer as it was. */
    size_t before = w.len;
    c.has_username = true;
    c.username = (sg_mqtt_str_t){huge, sizeof huge};
    CHECK_RC(sg_mqtt_encode_connect(&w, &c), SG_E_TOO_BIG);
    CHECK(w.len == before);
    sg_wbuf_fini(&w);
}

/* ---- CONNACK ---- */

static sg_rc decode_connack_bytes(const uint8_t *b, size_t n, sg_mqtt_connack_t *a)
{
    sg_mqtt_packet_t pkt;
    SG_GUARD(frame_exact(b, n, &pkt));
    return sg_mqtt_decode_connack(&pkt, a);
}

static void test_connack(void)
{
    sg_mqtt_connack_t a;
    static const uint8_t spec[] = {0x20, 0x02, 0x01, 0x00};
    CHECK_RC(decode_connack_bytes(spec, sizeof spec, &a), SG_OK);
    CHECK(a.session_present && a.return_code == SG_MQTT_CONNACK_ACCEPTED);

    for (uint8_t rc = 0; rc <= 5; rc++) {
        sg_wbuf_t w;
        sg_wbuf_init(&w, 64);
        CHECK_RC(sg_mqtt_encode_connack(&w, rc == 0, rc), SG_OK);
        CHECK(w.len == 4);
        CHECK_RC(decode_connack_bytes(w.data, w.len, &a), SG_OK);
        CHECK(a.session_present == (rc == 0) && a.return_code == rc);
        sg_wbuf_fini(&w);
    }

    static const uint8_t reserved[] = {0x20, 0x02, 0x02, 0x00};
    CHECK_RC(decode_connack_bytes(reserved, sizeof reserved, &a), SG_E_MALFORMED);
    static const uint8_t long_body[] = {0x20, 0x03, 0x00, 0x00, 0x00};
    CHECK_RC(decode_connack_bytes(long_body, sizeof long_body, &a), SG_E_MALFORMED);
    static const uint8_t short_body[] = {0x20, 0x01, 0x00};
    CHECK_RC(decode_connack_bytes(short_body, sizeof short_body, &a), SG_E_MALFORMED);
    static const uint8_t flags[] = {0x21, 0x02, 0x00, 0x00};
    CHECK_RC(decode_connack_bytes(flags, sizeof flags, &a), SG_E_MALFORMED);
}

/* ---- PUBLISH ---- */

static sg_rc decode_publish_bytes(const uint8_t *b, size_t n, sg_mqtt_publish_t *p)
{
    sg_mqtt_packet_t pkt;
    SG_GUARD(frame_exact(b, n, &pkt));
    return sg_mqtt_decode_publish(&pkt, p);
}

/* A QoS 0 PUBLISH with the given topic bytes and payload "x". */
static sg_rc decode_topic(const void *topic, size_t len)
{
    uint8_t b[64] = {0x30, (uint8_t)(2 + len + 1), 0x00, (uint8_t)len};
    sg_mqtt_publish_t p;
    memcpy(b + 4, topic, len);
    b[4 + len] = 'x';
    return decode_publish_bytes(b, 5 + len, &p);
}

static void check_publish_round_trip(const sg_mqtt_publish_t *in)
{
    sg_wbuf_t w;
    sg_mqtt_publish_t out;
    sg_wbuf_init(&w, MAX_PACKET);
    CHECK_RC(sg_mqtt_encode_publish(&w, in), SG_OK);
    CHECK_RC(decode_publish_bytes(w.data, w.len, &out), SG_OK);
    CHECK(out.dup == in->dup && out.qos == in->qos && out.retain == in->retain);
    CHECK(out.packet_id == (in->qos ? in->packet_id : 0));
    CHECK(str_same(out.topic, in->topic) && str_same(out.payload, in->payload));
    sg_wbuf_fini(&w);
}

static void test_publish(void)
{
    sg_mqtt_publish_t p;

    /* §3.3.2.3 example: topic "a/b", packet id 10, QoS 1. */
    static const uint8_t spec[] = {0x32, 0x09, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0A, 'h', 'i'};
    CHECK_RC(decode_publish_bytes(spec, sizeof spec, &p), SG_OK);
    CHECK(!p.dup && p.qos == 1 && !p.retain && p.packet_id == 10);
    CHECK(str_eq(p.topic, "a/b") && str_eq(p.payload, "hi"));

    static const uint8_t q0[] = {0x31, 0x05, 0x00, 0x01, 't', 'h', 'i'};
    CHECK_RC(decode_publish_bytes(q0, sizeof q0, &p), SG_OK);
    CHECK(p.qos == 0 && p.retain && p.packet_id == 0 && str_eq(p.payload, "hi"));

    /* QoS 2 with DUP decodes: refusing QoS 2 is dialect policy. */
    static const uint8_t q2[] = {0x3C, 0x05, 0x00, 0x01, 't', 0x12, 0x34};
    CHECK_RC(decode_publish_bytes(q2, sizeof q2, &p), SG_OK);
    CHECK(p.dup && p.qos == 2 && p.packet_id == 0x1234 && p.payload.len == 0);

    check_publish_round_trip(&(sg_mqtt_publish_t){.topic = S("a"), .payload = S("")});
    check_publish_round_trip(&(sg_mqtt_publish_t){.qos = 1, .packet_id = 1, .topic = S("a/b/c"),
                                                  .payload = S("payload")});
    check_publish_round_trip(&(sg_mqtt_publish_t){.qos = 2, .dup = true, .retain = true,
                                                  .packet_id = 65535,
                                                  .topic = S("devices/d/messages/events/"),
                                                  .payload = {(const uint8_t *)"\0\1", 2}});
    check_publish_round_trip(&(sg_mqtt_publish_t){.qos = 1, .packet_id = 5,
                                                  .topic = S("\xE2\x82\xAC/\xC3\xA9")});
}

static void test_publish_malformed(void)
{
    sg_mqtt_publish_t p;

    static const uint8_t qos3[] = {0x36, 0x05, 0x00, 0x01, 't', 0x00, 0x01};
    CHECK_RC(decode_publish_bytes(qos3, sizeof qos3, &p), SG_E_MALFORMED);
    static const uint8_t dup_q0[] = {0x38, 0x04, 0x00, 0x01, 't', 'x'};
    CHECK_RC(decode_publish_bytes(dup_q0, sizeof dup_q0, &p), SG_E_MALFORMED);
    static const uint8_t id0[] = {0x32, 0x05, 0x00, 0x01, 't', 0x00, 0x00};
    CHECK_RC(decode_publish_bytes(id0, sizeof id0, &p), SG_E_MALFORMED);
    /* QoS 1 without room for the packet id. */
    static const uint8_t no_id[] = {0x32, 0x04, 0x00, 0x01, 't', 0x00};
    CHECK_RC(decode_publish_bytes(no_id, sizeof no_id, &p), SG_E_MALFORMED);
    /* Topic length past the end of the packet. */
    static const uint8_t topic_past[] = {0x30, 0x04, 0x00, 0x05, 'a', 'b'};
    CHECK_RC(decode_publish_bytes(topic_past, sizeof topic_past, &p), SG_E_MALFORMED);
    static const uint8_t no_topic[] = {0x30, 0x01, 0x00};
    CHECK_RC(decode_publish_bytes(no_topic, sizeof no_topic, &p), SG_E_MALFORMED);

    CHECK_RC(decode_topic("", 0), SG_E_MALFORMED);
    CHECK_RC(decode_topic("a/b", 3), SG_OK);
    CHECK_RC(decode_topic("a/+/b", 5), SG_E_PROTOCOL);
    CHECK_RC(decode_topic("a/#", 3), SG_E_PROTOCOL);
    CHECK_RC(decode_topic("+", 1), SG_E_PROTOCOL);
    CHECK_RC(decode_topic("a\0b", 3), SG_E_MALFORMED);
    CHECK_RC(decode_topic("\xC0\xAF", 2), SG_E_MALFORMED);
    CHECK_RC(decode_topic("\xED\xA0\x80", 3), SG_E_MALFORMED);
    CHECK_RC(decode_topic("a\xFF", 2), SG_E_MALFORMED);
    CHECK_RC(decode_topic("\xE2\x82", 2), SG_E_MALFORMED);
    /* Bad UTF-8 wins over a wildcard: the topic is not even a string. */
    CHECK_RC(decode_topic("#\xFF", 2), SG_E_MALFORMED);
    /* Control characters: C0, DEL, C1 (U+0085 is 0xC2 0x85); U+00A0 (0xC2 0xA0) and é are fine. */
    CHECK_RC(decode_topic("a\x01", 2), SG_E_MALFORMED);
    CHECK_RC(decode_topic("a\x1b[2J", 5), SG_E_MALFORMED);
    CHECK_RC(decode_topic("a\nb", 3), SG_E_MALFORMED);
    CHECK_RC(decode_topic("a\x7f", 2), SG_E_MALFORMED);
    CHECK_RC(decode_topic("a\xC2\x85", 3), SG_E_MALFORMED);
    CHECK_RC(decode_topic("a\xC2\x9F", 3), SG_E_MALFORMED);
    CHECK_RC(decode_topic("a\xC2\xA0", 3), SG_OK);
    CHECK_RC(decode_topic("\xC3\xA9~", 3), SG_OK);
}

static void test_publish_encode(void)
{
    sg_wbuf_t w;
    sg_mqtt_publish_t p;
    static uint8_t huge[65536];

    /* Three pieces, some empty, concatenated on the wire. */
    sg_wbuf_init(&w, MAX_PACKET);
    const sg_mqtt_str_t parts[3] = {S("devices/d1/messages/devicebound/"), {NULL, 0}, S("k=v")};
    CHECK_RC(sg_mqtt_encode_publish3(&w, 1, false, false, 77, parts, "body", 4), SG_OK);
    CHECK_RC(decode_publish_bytes(w.data, w.len, &p), SG_OK);
    CHECK(str_eq(p.topic, "devices/d1/messages/devicebound/k=v"));
    CHECK(p.packet_id == 77 && str_eq(p.payload, "body"));
    sg_wbuf_reset(&w);

    const sg_mqtt_str_t only_last[3] = {{NULL, 0}, {NULL, 0}, S("t")};
    CHECK_RC(sg_mqtt_encode_publish3(&w, 0, false, true, 0, only_last, NULL, 0), SG_OK);
    static const uint8_t want[] = {0x31, 0x03, 0x00, 0x01, 't'};
    CHECK(w.len == sizeof want && memcmp(w.data, want, w.len) == 0);
    sg_wbuf_reset(&w);

    /* Argument errors, and the writer untouched after each. */
    const sg_mqtt_str_t none[3] = {{NULL, 0}, {NULL, 0}, {NULL, 0}};
    CHECK_RC(sg_mqtt_encode_publish3(&w, 0, false, false, 0, none, NULL, 0), SG_E_INVALID);
    const sg_mqtt_str_t t[3] = {S("t"), {NULL, 0}, {NULL, 0}};
    CHECK_RC(sg_mqtt_encode_publish3(&w, 3, false, false, 1, t, NULL, 0), SG_E_INVALID);
    CHECK_RC(sg_mqtt_encode_publish3(&w, 1, false, false, 0, t, NULL, 0), SG_E_INVALID);
    CHECK_RC(sg_mqtt_encode_publish3(&w, 0, true, false, 0, t, NULL, 0), SG_E_INVALID);
    CHECK_RC(sg_mqtt_encode_publish3(&w, 0, false, false, 0, t, NULL, 1), SG_E_INVALID);
    const sg_mqtt_str_t long_topic[3] = {{huge, 40000}, {huge, 25535}, {huge, 1}};
    CHECK_RC(sg_mqtt_encode_publish3(&w, 0, false, false, 0, long_topic, NULL, 0), SG_E_TOO_BIG);
    CHECK_RC(sg_mqtt_encode_publish(&w, &(sg_mqtt_publish_t){.topic = {huge, sizeof huge}}),
             SG_E_TOO_BIG);
    CHECK_RC(sg_mqtt_encode_publish3(&w, 0, false, false, 0, t, huge, 268435455), SG_E_TOO_BIG);
    CHECK(w.len == 0);
    sg_wbuf_fini(&w);

    /* A writer cap is honoured, and a refusal leaves earlier packets intact. */
    sg_wbuf_init(&w, 16);
    CHECK_RC(sg_mqtt_encode_empty(&w, SG_MQTT_PINGREQ), SG_OK);
    CHECK_RC(sg_mqtt_encode_publish3(&w, 0, false, false, 0, t, huge, 20), SG_E_TOO_BIG);
    CHECK(w.len == 2);
    sg_wbuf_fini(&w);
}

/* ---- acks ---- */

static sg_rc decode_ack_bytes(const uint8_t *b, size_t n, uint16_t *id)
{
    sg_mqtt_packet_t pkt;
    SG_GUARD(frame_exact(b, n, &pkt));
    return sg_mqtt_decode_ack(&pkt, id);
}

static void test_acks(void)
{
    static const struct {
        sg_mqtt_type_t type;
        uint8_t first;
    } types[] = {
        {SG_MQTT_PUBACK, 0x40}, {SG_MQTT_PUBREC, 0x50}, {SG_MQTT_PUBREL, 0x62},
        {SG_MQTT_PUBCOMP, 0x70}, {SG_MQTT_UNSUBACK, 0xB0},
    };
    uint16_t id = 0;

    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const uint8_t hand[] = {types[i].first, 0x02, 0x12, 0x34};
        CHECK_RC(decode_ack_bytes(hand, sizeof hand, &id), SG_OK);
        CHECK(id == 0x1234);

        sg_wbuf_t w;
        sg_wbuf_init(&w, 64);
        CHECK_RC(sg_mqtt_encode_ack(&w, types[i].type, 0xBEEF), SG_OK);
        CHECK(w.len == 4 && w.data[0] == types[i].first);
        CHECK_RC(decode_ack_bytes(w.data, w.len, &id), SG_OK);
        CHECK(id == 0xBEEF);
        CHECK_RC(sg_mqtt_encode_ack(&w, types[i].type, 0), SG_E_INVALID);
        sg_wbuf_fini(&w);

        /* Flags toggled (PUBREL loses its 0x2, the others gain one). */
        const uint8_t bad_flags[] = {(uint8_t)(types[i].first ^ 0x02), 0x02, 0x12, 0x34};
        CHECK_RC(decode_ack_bytes(bad_flags, sizeof bad_flags, &id), SG_E_MALFORMED);
        const uint8_t zero[] = {types[i].first, 0x02, 0x00, 0x00};
        CHECK_RC(decode_ack_bytes(zero, sizeof zero, &id), SG_E_MALFORMED);
        const uint8_t longer[] = {types[i].first, 0x03, 0x12, 0x34, 0x00};
        CHECK_RC(decode_ack_bytes(longer, sizeof longer, &id), SG_E_MALFORMED);
        const uint8_t shorter[] = {types[i].first, 0x01, 0x12};
        CHECK_RC(decode_ack_bytes(shorter, sizeof shorter, &id), SG_E_MALFORMED);
    }

    /* The wrong decoder or type is a caller bug. */
    static const uint8_t ping[] = {0xC0, 0x00};
    CHECK_RC(decode_ack_bytes(ping, sizeof ping, &id), SG_E_INVALID);
    sg_wbuf_t w;
    sg_wbuf_init(&w, 64);
    CHECK_RC(sg_mqtt_encode_ack(&w, SG_MQTT_SUBACK, 1), SG_E_INVALID);
    CHECK_RC(sg_mqtt_encode_ack(&w, (sg_mqtt_type_t)15, 1), SG_E_INVALID);
    CHECK(w.len == 0);
    sg_wbuf_fini(&w);
}

/* ---- SUBSCRIBE ---- */

static sg_rc decode_subscribe_bytes(const uint8_t *b, size_t n, sg_mqtt_subscribe_t *s)
{
    sg_mqtt_packet_t pkt;
    SG_GUARD(frame_exact(b, n, &pkt));
    return sg_mqtt_decode_subscribe(&pkt, s);
}

/* A SUBSCRIBE (packet id 1) with one filter and requested QoS 0. */
static sg_rc decode_filter(const char *filter)
{
    uint8_t b[64] = {0x82};
    size_t n = strlen(filter);
    b[1] = (uint8_t)(2 + 2 + n + 1);
    b[2] = 0x00, b[3] = 0x01, b[4] = 0x00, b[5] = (uint8_t)n;
    memcpy(b + 6, filter, n);
    b[6 + n] = 0x00;
    sg_mqtt_subscribe_t s;
    return decode_subscribe_bytes(b, 7 + n, &s);
}

static void test_subscribe(void)
{
    sg_mqtt_subscribe_t s;
    sg_mqtt_str_t f;
    uint8_t qos;

    /* §3.8.3 example: "a/b" QoS 1 and "c/d" QoS 2, packet id 10. */
    static const uint8_t spec[] = {0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, 'a', '/', 'b', 0x01,
                                   0x00, 0x03, 'c', '/', 'd', 0x02};
    CHECK_RC(decode_subscribe_bytes(spec, sizeof spec, &s), SG_OK);
    CHECK(s.packet_id == 10 && s.count == 2);
    CHECK(sg_mqtt_subscribe_next(&s, &f, &qos) && str_eq(f, "a/b") && qos == 1);
    CHECK(sg_mqtt_subscribe_next(&s, &f, &qos) && str_eq(f, "c/d") && qos == 2);
    CHECK(!sg_mqtt_subscribe_next(&s, &f, &qos));

    const sg_mqtt_str_t filters[] = {S("devices/d1/messages/devicebound/#"), S("+"), S("#"),
                                     S("$iothub/twin/res/#")};
    const uint8_t want_qos[] = {1, 0, 2, 0};
    sg_wbuf_t w;
    sg_wbuf_init(&w, MAX_PACKET);
    CHECK_RC(sg_mqtt_encode_subscribe(&w, 4242, filters, want_qos, 4), SG_OK);
    CHECK(w.data[0] == 0x82);
    CHECK_RC(decode_subscribe_bytes(w.data, w.len, &s), SG_OK);
    CHECK(s.packet_id == 4242 && s.count == 4);
    for (size_t i = 0; i < 4; i++)
        CHECK(sg_mqtt_subscribe_next(&s, &f, &qos) && str_same(f, filters[i]) &&
              qos == want_qos[i]);
    CHECK(!sg_mqtt_subscribe_next(&s, &f, &qos));

    /* Encoder argument errors leave the writer alone. */
    size_t before = w.len;
    const uint8_t q3 = 3;
    CHECK_RC(sg_mqtt_encode_subscribe(&w, 0, filters, want_qos, 1), SG_E_INVALID);
    CHECK_RC(sg_mqtt_encode_subscribe(&w, 1, filters, want_qos, 0), SG_E_INVALID);
    CHECK_RC(sg_mqtt_encode_subscribe(&w, 1, filters, &q3, 1), SG_E_INVALID);
    CHECK_RC(sg_mqtt_encode_subscribe(&w, 1, &S(""), want_qos, 1), SG_E_INVALID);
    static uint8_t huge[65536];
    CHECK_RC(sg_mqtt_encode_subscribe(&w, 1, &(sg_mqtt_str_t){huge, sizeof huge}, want_qos, 1),
             SG_E_TOO_BIG);
    CHECK(w.len == before);
    sg_wbuf_fini(&w);
}

static void test_subscribe_malformed(void)
{
    sg_mqtt_subscribe_t s;

    static const char *good[] = {"a", "#", "+", "+/+", "/", "a//b", "/#", "+/#", "a/+/c",
                                 "sport/tennis/#", "$SYS/#", "\xC3\xA9/+"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        CHECK_RC(decode_filter(good[i]), SG_OK);
    static const char *bad[] = {"", "a/#/b", "a+", "#x", "a#", "++", "+a", "a/b#", "#/",
                                "a/+b", "\xC0\x80", "\xED\xA0\x80", "a/\x01/#", "\t", "a/\x7f", "\xC2\x80/+"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (decode_filter(bad[i]) != SG_E_MALFORMED)
            fprintf(stderr, "filter \"%s\" accepted\n", bad[i]);
        CHECK_RC(decode_filter(bad[i]), SG_E_MALFORMED);
    }
    static const uint8_t nul_filter[] = {0x82, 0x08, 0x00, 0x01, 0x00, 0x03, 'a', 0x00, 'b', 0x00};
    CHECK_RC(decode_subscribe_bytes(nul_filter, sizeof nul_filter, &s), SG_E_MALFORMED);

    static const uint8_t flags0[] = {0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00};
    CHECK_RC(decode_subscribe_bytes(flags0, sizeof flags0, &s), SG_E_MALFORMED);
    static const uint8_t flags3[] = {0x83, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00};
    CHECK_RC(decode_subscribe_bytes(flags3, sizeof flags3, &s), SG_E_MALFORMED);
    static const uint8_t none[] = {0x82, 0x02, 0x00, 0x01};
    CHECK_RC(decode_subscribe_bytes(none, sizeof none, &s), SG_E_MALFORMED);
    static const uint8_t id0[] = {0x82, 0x06, 0x00, 0x00, 0x00, 0x01, 'a', 0x00};
    CHECK_RC(decode_subscribe_bytes(id0, sizeof id0, &s), SG_E_MALFORMED);
    static const uint8_t qos3[] = {0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x03};
    CHECK_RC(decode_subscribe_bytes(qos3, sizeof qos3, &s), SG_E_MALFORMED);
    static const uint8_t qos_reserved[] = {0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x41};
    CHECK_RC(decode_subscribe_bytes(qos_reserved, sizeof qos_reserved, &s), SG_E_MALFORMED);
    /* Second entry lacks its QoS byte. */
    static const uint8_t cut[] = {0x82, 0x09, 0x00, 0x01, 0x00, 0x01, 'a', 0x00, 0x00, 0x01, 'b'};
    CHECK_RC(decode_subscribe_bytes(cut, sizeof cut, &s), SG_E_MALFORMED);
    /* Filter length past the end. */
    static const uint8_t past[] = {0x82, 0x06, 0x00, 0x01, 0x00, 0x09, 'a', 0x00};
    CHECK_RC(decode_subscribe_bytes(past, sizeof past, &s), SG_E_MALFORMED);
    /* Decoding SUBSCRIBE as something else. */
    sg_mqtt_packet_t pkt;
    static const uint8_t ok[] = {0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00};
    FRAME(ok, &pkt);
    sg_mqtt_publish_t p;
    CHECK_RC(sg_mqtt_decode_publish(&pkt, &p), SG_E_INVALID);
}

/* ---- SUBACK ---- */

static sg_rc decode_suback_bytes(const uint8_t *b, size_t n, sg_mqtt_suback_t *a)
{
    sg_mqtt_packet_t pkt;
    SG_GUARD(frame_exact(b, n, &pkt));
    return sg_mqtt_decode_suback(&pkt, a);
}

static void test_suback(void)
{
    sg_mqtt_suback_t a;

    static const uint8_t spec[] = {0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80};
    CHECK_RC(decode_suback_bytes(spec, sizeof spec, &a), SG_OK);
    CHECK(a.packet_id == 10 && a.count == 4);
    CHECK(a.codes[0] == 0 && a.codes[1] == 1 && a.codes[2] == 2 && a.codes[3] == 0x80);

    const uint8_t codes[] = {SG_MQTT_SUBACK_FAILURE, 1};
    sg_wbuf_t w;
    sg_wbuf_init(&w, 64);
    CHECK_RC(sg_mqtt_encode_suback(&w, 99, codes, 2), SG_OK);
    CHECK_RC(decode_suback_bytes(w.data, w.len, &a), SG_OK);
    CHECK(a.packet_id == 99 && a.count == 2 && memcmp(a.codes, codes, 2) == 0);
    const uint8_t bad = 3;
    size_t before = w.len;
    CHECK_RC(sg_mqtt_encode_suback(&w, 99, &bad, 1), SG_E_INVALID);
    CHECK_RC(sg_mqtt_encode_suback(&w, 0, codes, 1), SG_E_INVALID);
    CHECK_RC(sg_mqtt_encode_suback(&w, 1, codes, 0), SG_E_INVALID);
    CHECK(w.len == before);
    sg_wbuf_fini(&w);

    static const uint8_t bad_code[] = {0x90, 0x03, 0x00, 0x01, 0x03};
    CHECK_RC(decode_suback_bytes(bad_code, sizeof bad_code, &a), SG_E_MALFORMED);
    static const uint8_t code81[] = {0x90, 0x03, 0x00, 0x01, 0x81};
    CHECK_RC(decode_suback_bytes(code81, sizeof code81, &a), SG_E_MALFORMED);
    static const uint8_t no_codes[] = {0x90, 0x02, 0x00, 0x01};
    CHECK_RC(decode_suback_bytes(no_codes, sizeof no_codes, &a), SG_E_MALFORMED);
    static const uint8_t id0[] = {0x90, 0x03, 0x00, 0x00, 0x00};
    CHECK_RC(decode_suback_bytes(id0, sizeof id0, &a), SG_E_MALFORMED);
    static const uint8_t flags[] = {0x92, 0x03, 0x00, 0x01, 0x00};
    CHECK_RC(decode_suback_bytes(flags, sizeof flags, &a), SG_E_MALFORMED);
}

/* ---- UNSUBSCRIBE ---- */

static sg_rc decode_unsubscribe_bytes(const uint8_t *b, size_t n, sg_mqtt_unsubscribe_t *u)
{
    sg_mqtt_packet_t pkt;
    SG_GUARD(frame_exact(b, n, &pkt));
    return sg_mqtt_decode_unsubscribe(&pkt, u);
}

static void test_unsubscribe(void)
{
    sg_mqtt_unsubscribe_t u;
    sg_mqtt_str_t f;

    /* §3.10.3 example: "a/b" and "c/d", packet id 10. */
    static const uint8_t spec[] = {0xA2, 0x0C, 0x00, 0x0A, 0x00, 0x03, 'a', '/', 'b',
                                   0x00, 0x03, 'c', '/', 'd'};
    CHECK_RC(decode_unsubscribe_bytes(spec, sizeof spec, &u), SG_OK);
    CHECK(u.packet_id == 10 && u.count == 2);
    CHECK(sg_mqtt_unsubscribe_next(&u, &f) && str_eq(f, "a/b"));
    CHECK(sg_mqtt_unsubscribe_next(&u, &f) && str_eq(f, "c/d"));
    CHECK(!sg_mqtt_unsubscribe_next(&u, &f));

    const sg_mqtt_str_t filters[] = {S("x/+/y"), S("#")};
    sg_wbuf_t w;
    sg_wbuf_init(&w, 256);
    CHECK_RC(sg_mqtt_encode_unsubscribe(&w, 3, filters, 2), SG_OK);
    CHECK(w.data[0] == 0xA2);
    CHECK_RC(decode_unsubscribe_bytes(w.data, w.len, &u), SG_OK);
    CHECK(u.packet_id == 3 && u.count == 2);
    CHECK(sg_mqtt_unsubscribe_next(&u, &f) && str_eq(f, "x/+/y"));
    CHECK(sg_mqtt_unsubscribe_next(&u, &f) && str_eq(f, "#"));
    CHECK(!sg_mqtt_unsubscribe_next(&u, &f));
    CHECK_RC(sg_mqtt_encode_unsubscribe(&w, 0, filters, 2), SG_E_INVALID);
    CHECK_RC(sg_mqtt_encode_unsubscribe(&w, 3, filters, 0), SG_E_INVALID);
    sg_wbuf_fini(&w);

    static const uint8_t flags0[] = {0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, 'a'};
    CHECK_RC(decode_unsubscribe_bytes(flags0, sizeof flags0, &u), SG_E_MALFORMED);
    static const uint8_t none[] = {0xA2, 0x02, 0x00, 0x01};
    CHECK_RC(decode_unsubscribe_bytes(none, sizeof none, &u), SG_E_MALFORMED);
    static const uint8_t id0[] = {0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, 'a'};
    CHECK_RC(decode_unsubscribe_bytes(id0, sizeof id0, &u), SG_E_MALFORMED);
    static const uint8_t bad_filter[] = {0xA2, 0x07, 0x00, 0x01, 0x00, 0x03, 'a', '+', 'b'};
    CHECK_RC(decode_unsubscribe_bytes(bad_filter, sizeof bad_filter, &u), SG_E_MALFORMED);
    static const uint8_t empty_filter[] = {0xA2, 0x04, 0x00, 0x01, 0x00, 0x00};
    CHECK_RC(decode_unsubscribe_bytes(empty_filter, sizeof empty_filter, &u), SG_E_MALFORMED);
    static const uint8_t past[] = {0xA2, 0x05, 0x00, 0x01, 0x00, 0x04, 'a'};
    CHECK_RC(decode_unsubscribe_bytes(past, sizeof past, &u), SG_E_MALFORMED);
}

/* ---- PINGREQ, PINGRESP, DISCONNECT ---- */

static sg_rc decode_empty_bytes(const uint8_t *b, size_t n)
{
    sg_mqtt_packet_t pkt;
    SG_GUARD(frame_exact(b, n, &pkt));
    return sg_mqtt_decode_empty(&pkt);
}

static void test_empty(void)
{
    static const struct {
        sg_mqtt_type_t type;
        uint8_t first;
    } types[] = {{SG_MQTT_PINGREQ, 0xC0}, {SG_MQTT_PINGRESP, 0xD0}, {SG_MQTT_DISCONNECT, 0xE0}};

    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const uint8_t hand[] = {types[i].first, 0x00};
        CHECK_RC(decode_empty_bytes(hand, sizeof hand), SG_OK);
        sg_wbuf_t w;
        sg_wbuf_init(&w, 16);
        CHECK_RC(sg_mqtt_encode_empty(&w, types[i].type), SG_OK);
        CHECK(w.len == 2 && memcmp(w.data, hand, 2) == 0);
        CHECK_RC(decode_empty_bytes(w.data, w.len), SG_OK);
        sg_wbuf_fini(&w);

        const uint8_t body[] = {types[i].first, 0x01, 0x00};
        CHECK_RC(decode_empty_bytes(body, sizeof body), SG_E_MALFORMED);
        const uint8_t flags[] = {(uint8_t)(types[i].first | 0x01), 0x00};
        CHECK_RC(decode_empty_bytes(flags, sizeof flags), SG_E_MALFORMED);
    }
    static const uint8_t puback[] = {0x40, 0x02, 0x00, 0x01};
    CHECK_RC(decode_empty_bytes(puback, sizeof puback), SG_E_INVALID);
    sg_wbuf_t w;
    sg_wbuf_init(&w, 16);
    CHECK_RC(sg_mqtt_encode_empty(&w, SG_MQTT_PUBACK), SG_E_INVALID);
    CHECK(w.len == 0);
    sg_wbuf_fini(&w);
}

static void test_type_names(void)
{
    CHECK_STR(sg_mqtt_type_name(SG_MQTT_CONNECT), "CONNECT");
    CHECK_STR(sg_mqtt_type_name(SG_MQTT_PUBLISH), "PUBLISH");
    CHECK_STR(sg_mqtt_type_name(SG_MQTT_PUBREL), "PUBREL");
    CHECK_STR(sg_mqtt_type_name(SG_MQTT_UNSUBSCRIBE), "UNSUBSCRIBE");
    CHECK_STR(sg_mqtt_type_name(SG_MQTT_DISCONNECT), "DISCONNECT");
    CHECK_STR(sg_mqtt_type_name(0), "UNKNOWN");
    CHECK_STR(sg_mqtt_type_name(15), "UNKNOWN");
    CHECK_STR(sg_mqtt_type_name(200), "UNKNOWN");
}

int main(void)
{
    test_frame_basics();
    test_frame_remaining_length();
    test_frame_errors();
    test_frame_byte_at_a_time();
    test_utf8();
    test_connect();
    test_connect_malformed();
    test_connect_other_protocols();
    test_connect_encode_errors();
    test_connack();
    test_publish();
    test_publish_malformed();
    test_publish_encode();
    test_acks();
    test_subscribe();
    test_subscribe_malformed();
    test_suback();
    test_unsubscribe();
    test_empty();
    test_type_names();
    TEST_DONE();
}
