/* fe_ws_test.c — unit tests of the WebSocket layer alone (fe_ws.h): the upgrade parser with valid
 * requests and every refusal (asserting the status), then the frame layer driven through its
 * callbacks: MQTT bytes split over frames and frames holding several packets, byte-at-a-time
 * input, ping, close, and each protocol violation answered by the right close code. */
#include <stdint.h>
#include "fe_ws.h"
#include "sg_test.h"

#define KEY "dGhlIHNhbXBsZSBub25jZQ=="   /* RFC 6455 section 1.3's example */
#define KEY_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define HDRS "Host: gw\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
#define REQ(path) "GET " path " HTTP/1.1\r\n" HDRS "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"

static int parse(const char *req, fe_ws_upgrade_t *u) { return fe_ws_upgrade_parse(req, strlen(req), u) == SG_OK ? 101 : u->status; }

static void test_upgrade_parse(void)
{
    fe_ws_upgrade_t u;
    CHECK(parse(REQ("/$iothub/websocket"), &u) == 101);
    CHECK_STR(u.accept, KEY_ACCEPT);
    CHECK(u.error == NULL);
    CHECK(parse(REQ("/mqtt"), &u) == 101);
    CHECK(parse(REQ("/$iothub/websocket?iothub-no-client-cert=true"), &u) == 101);
    /* case-insensitive header names and tokens; protocol offered among others */
    CHECK(parse("GET /mqtt HTTP/1.1\r\nupgrade: WebSocket\r\nCONNECTION: upgrade\r\nsec-websocket-version:13\r\n"
                "sec-websocket-key:   " KEY "  \r\nSec-WebSocket-Protocol: mqttv3.1, mqtt\r\n\r\n", &u) == 101);

    CHECK(parse(REQ("/"), &u) == 404);
    CHECK_RC(fe_ws_upgrade_parse(REQ("/other"), strlen(REQ("/other")), &u), SG_E_NOT_FOUND);
    CHECK(parse(REQ("/mqttx"), &u) == 404);
    CHECK(parse(REQ("/$iothub/websocket/"), &u) == 404);
    CHECK(parse("POST /mqtt HTTP/1.1\r\n" HDRS "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", &u) == 405);
    CHECK(parse("GET /mqtt HTTP/1.0\r\n" HDRS "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", &u) == 505);
    CHECK(parse("GET /mqtt HTTP/1.1\r\nHost: gw\r\n\r\n", &u) == 426);   /* a plain GET */
    CHECK(parse("GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " KEY
                "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", &u) == 426);   /* no Connection: Upgrade */
    CHECK(parse("GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
                "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", &u) == 426);
    CHECK(parse("GET /mqtt HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", &u) == 426);   /* no version */
    CHECK(parse("GET /mqtt HTTP/1.1\r\n" HDRS "Sec-WebSocket-Protocol: mqtt\r\n\r\n", &u) == 400);   /* no key */
    CHECK(parse("GET /mqtt HTTP/1.1\r\n" HDRS "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", &u) == 400);
    CHECK(parse("GET /mqtt HTTP/1.1\r\n" HDRS "Sec-WebSocket-Key: ************************\r\n"
                "Sec-WebSocket-Protocol: mqtt\r\n\r\n", &u) == 400);
    CHECK(parse("GET /mqtt HTTP/1.1\r\n" HDRS "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Key: " KEY
                "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", &u) == 400);   /* twice */
    CHECK(parse("GET /mqtt HTTP/1.1\r\n" HDRS "Sec-WebSocket-Key: " KEY "\r\n\r\n", &u) == 400);   /* no subprotocol */
    CHECK_STR(u.error, "Sec-WebSocket-Protocol must offer mqtt");
    CHECK(parse("GET /mqtt HTTP/1.1\r\n" HDRS "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Protocol: MQTT, mqttv3.1\r\n\r\n",
                &u) == 400);
    CHECK(parse("GET /mqtt HTTP/1.1\r\n" HDRS " folded\r\nSec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                &u) == 400);
    CHECK(parse("GET /mqtt HTTP/1.1\n" HDRS "Sec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", &u) == 400);
    CHECK(parse("GET /mqtt HTTP/1.1\r\n" HDRS "X: a\x01z\r\nSec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                &u) == 400);
    CHECK(parse("GET /mqtt HTTP/1.1\r\n" HDRS "Bad Name: x\r\nSec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                &u) == 400);
    CHECK(parse("GET /mqtt HTTP/1.1\r\n" HDRS ": x\r\nSec-WebSocket-Key: " KEY "\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", &u) == 400);
    CHECK(parse(REQ("/mqtt") "body", &u) == 400);   /* bytes after the blank line */
    CHECK(parse("GET /mqtt HTTP/1.1\r\n" HDRS, &u) == 400);   /* no blank line */
    CHECK(parse("GET  HTTP/1.1\r\n\r\n", &u) == 400);
    CHECK(parse("GET mqtt HTTP/1.1\r\n\r\n", &u) == 400);
    CHECK(parse("GET\r\n\r\n", &u) == 400);
    CHECK(parse("", &u) == 400);
}

/* ---- the frame layer through its callbacks ---- */

typedef struct {
    uint8_t data[70000];
    size_t n_data;
    uint8_t out[70000];
    size_t n_out;
    uint32_t max_frame;
    bool gone;
} peer_t;

static bool t_data(void *arg, const uint8_t *p, size_t n)
{
    peer_t *t = arg;
    CHECK(t->n_data + n <= sizeof t->data);
    memcpy(t->data + t->n_data, p, n);
    t->n_data += n;
    return !t->gone;
}

static bool t_write(void *arg, const uint8_t *p, size_t n)
{
    peer_t *t = arg;
    CHECK(t->n_out + n <= sizeof t->out);
    memcpy(t->out + t->n_out, p, n);
    t->n_out += n;
    return true;
}

static uint32_t t_max(void *arg) { return ((peer_t *)arg)->max_frame; }

static const fe_ws_io_t IO = {t_data, t_write, t_max};

/* A client frame: masked unless told otherwise. */
static size_t frame(uint8_t *b, uint8_t first, bool mask, const void *payload, uint64_t n, uint64_t claimed)
{
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    size_t h = 0;
    b[h++] = first;
    uint8_t m = mask ? 0x80 : 0;
    if (claimed < 126) {
        b[h++] = m | (uint8_t)claimed;
    } else if (claimed < 65536) {
        b[h++] = m | 126;
        b[h++] = (uint8_t)(claimed >> 8);
        b[h++] = (uint8_t)claimed;
    } else {
        b[h++] = m | 127;
        for (int i = 7; i >= 0; i--)
            b[h++] = (uint8_t)(claimed >> (8 * i));
    }
    if (mask) {
        memcpy(b + h, key, 4);
        h += 4;
    }
    for (uint64_t i = 0; i < n; i++)
        b[h + i] = ((const uint8_t *)payload)[i] ^ (mask ? key[i % 4] : 0);
    return h + (size_t)n;
}

static fe_ws_t *opened(peer_t *t)
{
    memset(t, 0, sizeof *t);
    t->max_frame = 8192;
    fe_ws_t *ws = fe_ws_new(&IO, t);
    const char *req = REQ("/mqtt"), *why = "x";
    /* one byte at a time: the end of the request is found across reads */
    for (size_t i = 0; i < strlen(req); i++)
        CHECK(fe_ws_input(ws, (const uint8_t *)req + i, 1, &why) == FE_WS_OK);
    CHECK(fe_ws_open(ws));
    t->out[t->n_out] = 0;
    CHECK(strstr((char *)t->out, "HTTP/1.1 101 Switching Protocols\r\n") == (char *)t->out);
    CHECK(strstr((char *)t->out, "Sec-WebSocket-Accept: " KEY_ACCEPT "\r\n") != NULL);
    CHECK(strstr((char *)t->out, "Sec-WebSocket-Protocol: mqtt\r\n") != NULL);
    t->n_out = 0;
    return ws;
}

/* The close frame the layer answered with carries code. */
static void expect_close(peer_t *t, uint16_t code)
{
    CHECK(t->n_out >= 4);
    CHECK(t->out[0] == 0x88);
    CHECK(t->out[1] >= 2 && t->out[1] <= 125 && (size_t)t->out[1] + 2 == t->n_out);
    CHECK(((t->out[2] << 8) | t->out[3]) == code);
}

static const uint8_t CONNECT_ISH[] = {0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0};
static const uint8_t PINGREQ[] = {0xC0, 0x00};

static void test_binary_stream(void)
{
    peer_t t;
    fe_ws_t *ws = opened(&t);
    uint8_t b[256], all[256];
    const char *why;
    /* one packet over two frames of one message (fin 0, then a continuation) */
    size_t n = frame(b, 0x02, true, CONNECT_ISH, 5, 5);
    n += frame(b + n, 0x80, true, CONNECT_ISH + 5, sizeof CONNECT_ISH - 5, sizeof CONNECT_ISH - 5);
    /* two packets in one frame */
    memcpy(all, PINGREQ, 2);
    memcpy(all + 2, PINGREQ, 2);
    n += frame(b + n, 0x82, true, all, 4, 4);
    /* an empty binary frame is fine */
    n += frame(b + n, 0x82, true, NULL, 0, 0);
    for (size_t i = 0; i < n; i++)   /* byte at a time */
        CHECK(fe_ws_input(ws, b + i, 1, &why) == FE_WS_OK);
    CHECK(t.n_data == sizeof CONNECT_ISH + 4);
    CHECK(memcmp(t.data, CONNECT_ISH, sizeof CONNECT_ISH) == 0);
    CHECK(memcmp(t.data + sizeof CONNECT_ISH, all, 4) == 0);
    CHECK(t.n_out == 0);
    /* all at once too */
    t.n_data = 0;
    CHECK(fe_ws_input(ws, b, n, &why) == FE_WS_OK);
    CHECK(t.n_data == sizeof CONNECT_ISH + 4);

    /* sending: one unmasked binary frame, 7-bit and 16-bit lengths */
    CHECK(fe_ws_send(ws, PINGREQ, 2));
    CHECK(t.n_out == 4 && t.out[0] == 0x82 && t.out[1] == 2 && t.out[2] == 0xC0);
    t.n_out = 0;
    uint8_t big[300] = {0};
    CHECK(fe_ws_send(ws, big, sizeof big));
    CHECK(t.n_out == 304 && t.out[0] == 0x82 && t.out[1] == 126 && t.out[2] == 1 && t.out[3] == 44);
    fe_ws_destroy(&ws);
    CHECK(ws == NULL);
    fe_ws_destroy(&ws);
}

static void test_control(void)
{
    peer_t t;
    fe_ws_t *ws = opened(&t);
    uint8_t b[256];
    const char *why;
    size_t n = frame(b, 0x89, true, "hi", 2, 2);   /* ping */
    CHECK(fe_ws_input(ws, b, n, &why) == FE_WS_OK);
    CHECK(t.n_out == 4 && t.out[0] == 0x8A && t.out[1] == 2 && memcmp(t.out + 2, "hi", 2) == 0);
    t.n_out = 0;
    n = frame(b, 0x8A, true, "x", 1, 1);   /* an unsolicited pong is ignored */
    CHECK(fe_ws_input(ws, b, n, &why) == FE_WS_OK && t.n_out == 0);
    /* a ping between the two frames of a fragmented message */
    n = frame(b, 0x02, true, PINGREQ, 1, 1);
    n += frame(b + n, 0x89, true, NULL, 0, 0);
    n += frame(b + n, 0x80, true, PINGREQ + 1, 1, 1);
    CHECK(fe_ws_input(ws, b, n, &why) == FE_WS_OK);
    CHECK(t.n_data == 2 && t.n_out == 2 && t.out[0] == 0x8A);
    t.n_out = 0;
    /* close: echoed, then the layer says close; input after it is ignored */
    uint8_t code[] = {0x03, 0xE8, 'b', 'y', 'e'};
    n = frame(b, 0x88, true, code, sizeof code, sizeof code);
    CHECK(fe_ws_input(ws, b, n, &why) == FE_WS_CLOSE);
    CHECK_STR(why, "websocket-close");
    CHECK(t.n_out == 4 && t.out[0] == 0x88 && t.out[1] == 2 && t.out[2] == 0x03 && t.out[3] == 0xE8);
    n = frame(b, 0x82, true, PINGREQ, 2, 2);
    CHECK(fe_ws_input(ws, b, n, &why) == FE_WS_OK);
    CHECK(t.n_data == 2);
    fe_ws_destroy(&ws);
}

/* Each violation: the frame bytes, the close code answered. */
static void violation_after(const uint8_t *b, size_t n, uint16_t code, uint32_t max_frame, size_t data_before)
{
    peer_t t;
    fe_ws_t *ws = opened(&t);
    t.max_frame = max_frame;
    const char *why = NULL;
    CHECK(fe_ws_input(ws, b, n, &why) == FE_WS_CLOSE);
    CHECK(why != NULL);
    expect_close(&t, code);
    CHECK(t.n_data == data_before);
    fe_ws_destroy(&ws);
}

static void violation(const uint8_t *b, size_t n, uint16_t code, uint32_t max_frame)
{
    violation_after(b, n, code, max_frame, 0);
}

static void test_violations(void)
{
    uint8_t b[512];
    violation(b, frame(b, 0x82, false, PINGREQ, 2, 2), 1002, 8192);        /* unmasked */
    violation(b, frame(b, 0x81, true, "{}", 2, 2), 1003, 8192);            /* text */
    violation(b, frame(b, 0x80, true, PINGREQ, 2, 2), 1002, 8192);         /* continuation alone */
    violation(b, frame(b, 0xC2, true, PINGREQ, 2, 2), 1002, 8192);         /* RSV1 */
    violation(b, frame(b, 0x83, true, PINGREQ, 2, 2), 1002, 8192);         /* opcode 3 */
    violation(b, frame(b, 0x09, true, NULL, 0, 0), 1002, 8192);            /* fragmented ping */
    violation(b, frame(b, 0x89, true, b, 0, 126), 1002, 8192);             /* ping over 125 bytes */
    violation(b, frame(b, 0x82, true, PINGREQ, 2, 1ull << 62), 1009, 8192);   /* huge length */
    violation(b, frame(b, 0x82, true, b, 200, 200), 1009, 100);            /* over the packet cap */
    size_t n = frame(b, 0x02, true, PINGREQ, 1, 1);
    violation_after(b, n + frame(b + n, 0x82, true, PINGREQ, 1, 1), 1002, 8192, 1);   /* new message inside one */
    /* a 16-bit length that fits 7 bits is not minimal */
    uint8_t nm[] = {0x82, 0xFE, 0x00, 0x02, 1, 2, 3, 4, 0, 0};
    violation(nm, sizeof nm, 1002, 8192);
    uint8_t c1[] = {0x88, 0x81, 0, 0, 0, 0, 0x03};   /* close with a one-byte payload */
    violation(c1, sizeof c1, 1002, 8192);
}

static void test_upgrade_stream(void)
{
    peer_t t;
    const char *why;
    /* refused requests are answered with their status, then closed */
    memset(&t, 0, sizeof t);
    fe_ws_t *ws = fe_ws_new(&IO, &t);
    const char *get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    CHECK(fe_ws_input(ws, (const uint8_t *)get, strlen(get), &why) == FE_WS_CLOSE);
    t.out[t.n_out] = 0;
    CHECK(strncmp((char *)t.out, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
    CHECK(strstr((char *)t.out, "Connection: close\r\n") != NULL);
    fe_ws_destroy(&ws);

    /* over FE_WS_MAX_REQUEST without an end: 431 */
    memset(&t, 0, sizeof t);
    ws = fe_ws_new(&IO, &t);
    char big[FE_WS_MAX_REQUEST + 100];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET /mqtt HTTP/1.1\r\nX: ", 23);
    CHECK(fe_ws_input(ws, (const uint8_t *)big, 1000, &why) == FE_WS_OK);
    CHECK(fe_ws_input(ws, (const uint8_t *)big + 1000, sizeof big - 1000, &why) == FE_WS_CLOSE);
    t.out[t.n_out] = 0;
    CHECK(strncmp((char *)t.out, "HTTP/1.1 431 ", 13) == 0);
    fe_ws_destroy(&ws);

    /* not HTTP at all (an MQTT CONNECT on the wrong port): refused at once */
    memset(&t, 0, sizeof t);
    ws = fe_ws_new(&IO, &t);
    CHECK(fe_ws_input(ws, CONNECT_ISH, sizeof CONNECT_ISH, &why) == FE_WS_CLOSE);
    t.out[t.n_out] = 0;
    CHECK(strncmp((char *)t.out, "HTTP/1.1 400 ", 13) == 0);
    fe_ws_destroy(&ws);

    /* a frame right behind the request, in the same read, is not lost */
    memset(&t, 0, sizeof t);
    t.max_frame = 8192;
    ws = fe_ws_new(&IO, &t);
    uint8_t b[512];
    const char *req = REQ("/$iothub/websocket?a=b");
    size_t n = strlen(req);
    memcpy(b, req, n);
    n += frame(b + n, 0x82, true, PINGREQ, 2, 2);
    CHECK(fe_ws_input(ws, b, n, &why) == FE_WS_OK);
    CHECK(fe_ws_open(ws) && t.n_data == 2 && t.data[0] == 0xC0);

    /* the owner goes away inside the data callback: the layer stops there */
    t.gone = true;
    n = frame(b, 0x82, true, PINGREQ, 2, 2);
    n += frame(b + n, 0x81, true, "x", 1, 1);
    size_t out_before = t.n_out;
    CHECK(fe_ws_input(ws, b, n, &why) == FE_WS_GONE);
    CHECK(t.n_out == out_before);   /* the text frame behind it was not looked at */
    fe_ws_destroy(&ws);
}

int main(void)
{
    test_upgrade_parse();
    test_binary_stream();
    test_control();
    test_violations();
    test_upgrade_stream();
    TEST_DONE();
}
