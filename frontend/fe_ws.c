/* fe_ws.c — MQTT over WebSocket on the ws port (see fe_ws.h): the HTTP/1.1 upgrade, then
 * RFC 6455 frames whose binary payloads are the MQTT byte stream fe_conn frames packets from.
 *
 * The upgrade parser is hand-rolled on purpose: the gateway needs one request shape (a GET with a
 * handful of headers, no body, no keep-alive, no chunking) read from a buffer it already holds
 * and caps at FE_WS_MAX_REQUEST, on the connection's own event loop. libmicrohttpd (the admin's
 * server) owns its sockets and threads and cannot take over a TLS connection this loop holds;
 * a general HTTP parser would bring states this request never uses. So: one bounded pass over
 * CRLF-terminated lines, exact checks, and an HTTP answer that says what was wrong.
 *
 * Frames go through libwslay's frame API (wslay_frame_recv/send), not its event API: the event
 * API assembles whole messages in memory, while MQTT is a byte stream that fe_conn already frames
 * with its own caps, so payload chunks are passed on as they arrive and no message is buffered.
 * The frame context holds a 4 KiB input buffer; it is freed whenever the stream sits at a frame
 * boundary with nothing buffered, so an idle session keeps only this small struct. */
#include "fe_ws.h"
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>
#include "fe_internal.h"
#include "sg_codec.h"
#include "sg_log.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum { WS_UPGRADING = 0, WS_OPEN, WS_CLOSING };
enum { OP_CONT = 0x0, OP_TEXT = 0x1, OP_BINARY = 0x2, OP_CLOSE = 0x8, OP_PING = 0x9, OP_PONG = 0xA };

struct fe_ws {
    fe_ws_io_t io;
    void *arg;
    uint8_t state;
    bool in_frame;         /* the current frame's header has been seen, its payload is not all here */
    bool msg_open;         /* a binary message continues in the next frame (its last frame had fin 0) */
    bool busy;             /* inside frames_input: the frame context stays */
    uint8_t opcode;        /* of the current frame */
    uint8_t ctl_len;
    uint8_t ctl[125];      /* a control frame's payload (ping, close): at most 125 bytes */
    uint16_t req_len;
    char *req;             /* the upgrade request so far (FE_WS_MAX_REQUEST bytes); NULL otherwise */
    wslay_frame_context_ptr fr;   /* NULL while the stream sits at a frame boundary */
    const uint8_t *in;     /* input not yet handed to wslay */
    size_t in_len;
    uint64_t fed, used;    /* bytes handed to wslay / bytes of the frames it has completed */
    uint64_t frame_len, frame_off;
};

/* ---------- the upgrade request ---------- */

typedef struct {
    const char *p;
    size_t n;
} span_t;

static bool is_ows(char ch) { return ch == ' ' || ch == '\t'; }

static span_t span_trim(span_t s)
{
    while (s.n > 0 && is_ows(s.p[0])) {
        s.p++;
        s.n--;
    }
    while (s.n > 0 && is_ows(s.p[s.n - 1]))
        s.n--;
    return s;
}

static bool span_is(span_t s, const char *lit, bool exact)
{
    size_t l = strlen(lit);
    return s.n == l && (exact ? memcmp(s.p, lit, l) == 0 : strncasecmp(s.p, lit, l) == 0);
}

/* Does the comma-separated list hold tok? (Connection: keep-alive, Upgrade) */
static bool list_has(span_t s, const char *tok, bool exact)
{
    size_t i = 0;
    while (i <= s.n) {
        size_t j = i;
        while (j < s.n && s.p[j] != ',')
            j++;
        if (span_is(span_trim((span_t){s.p + i, j - i}), tok, exact))
            return true;
        i = j + 1;
    }
    return false;
}

/* The next CRLF-terminated line; false at the end or at a bare CR or LF. */
static bool next_line(const char **cur, const char *end, span_t *line)
{
    for (const char *q = *cur; q < end; q++) {
        if (*q == '\n' || (*q == '\r' && (q + 1 == end || q[1] != '\n')))
            return false;
        if (*q == '\r') {
            *line = (span_t){*cur, (size_t)(q - *cur)};
            *cur = q + 2;
            return true;
        }
    }
    return false;
}

static sg_rc refuse(fe_ws_upgrade_t *u, int status, const char *why)
{
    u->status = status;
    u->error = why;
    return status == 404 ? SG_E_NOT_FOUND : status == 400 ? SG_E_MALFORMED : SG_E_PROTOCOL;
}

static bool tchar(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch));
}

static sg_rc request_line(span_t l, fe_ws_upgrade_t *u)
{
    const char *sp1 = memchr(l.p, ' ', l.n);
    if (!sp1)
        return refuse(u, 400, "malformed request line");
    span_t method = {l.p, (size_t)(sp1 - l.p)};
    span_t rest = {sp1 + 1, l.n - method.n - 1};
    const char *sp2 = memchr(rest.p, ' ', rest.n);
    if (!sp2 || method.n == 0)
        return refuse(u, 400, "malformed request line");
    span_t target = {rest.p, (size_t)(sp2 - rest.p)};
    span_t version = {sp2 + 1, rest.n - target.n - 1};
    for (size_t i = 0; i < method.n; i++)
        if (!tchar(method.p[i]))
            return refuse(u, 400, "malformed request line");
    if (!span_is(version, "HTTP/1.1", true))
        return refuse(u, 505, "the WebSocket upgrade needs HTTP/1.1");
    if (!span_is(method, "GET", true))
        return refuse(u, 405, "only GET upgrades to a WebSocket");
    if (target.n == 0 || target.p[0] != '/')
        return refuse(u, 400, "the request target must be a path");
    for (size_t i = 0; i < target.n; i++)
        if ((unsigned char)target.p[i] <= 0x20 || (unsigned char)target.p[i] >= 0x7f)
            return refuse(u, 400, "malformed request target");
    const char *q = memchr(target.p, '?', target.n);
    span_t path = {target.p, q ? (size_t)(q - target.p) : target.n};
    if (!span_is(path, "/$iothub/websocket", true) && !span_is(path, "/mqtt", true))
        return refuse(u, 404, "MQTT over WebSocket is served on /$iothub/websocket and /mqtt");
    return SG_OK;
}

static void accept_key(span_t key, char out[29])
{
    char buf[24 + sizeof WS_GUID];
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    memcpy(buf, key.p, 24);
    memcpy(buf + 24, WS_GUID, sizeof WS_GUID - 1);
    if (EVP_Digest(buf, 24 + sizeof WS_GUID - 1, md, &md_len, EVP_sha1(), NULL) != 1 || md_len != 20) {
        out[0] = '\0';   /* the caller refuses an empty answer */
        return;
    }
    sg_b64_encode(md, 20, out);
}

sg_rc fe_ws_upgrade_parse(const char *req, size_t len, fe_ws_upgrade_t *u)
{
    memset(u, 0, sizeof *u);
    const char *cur = req, *end = req + len;
    span_t line;
    if (!next_line(&cur, end, &line))
        return refuse(u, 400, "malformed request line");
    SG_GUARD(request_line(line, u));
    bool upgrade = false, connection = false, version = false, mqtt = false, ended = false;
    span_t key = {NULL, 0};
    while (next_line(&cur, end, &line)) {
        if (line.n == 0) {
            ended = true;
            break;
        }
        if (is_ows(line.p[0]))
            return refuse(u, 400, "folded header lines are not accepted");
        const char *colon = memchr(line.p, ':', line.n);
        if (!colon || colon == line.p)
            return refuse(u, 400, "malformed header line");
        span_t name = {line.p, (size_t)(colon - line.p)};
        for (size_t i = 0; i < name.n; i++)
            if (!tchar(name.p[i]))
                return refuse(u, 400, "malformed header name");
        span_t value = span_trim((span_t){colon + 1, line.n - name.n - 1});
        for (size_t i = 0; i < value.n; i++)
            if (((unsigned char)value.p[i] < 0x20 && value.p[i] != '\t') || value.p[i] == 0x7f)
                return refuse(u, 400, "control character in a header value");
        if (span_is(name, "Upgrade", false)) {
            upgrade = upgrade || list_has(value, "websocket", false);
        } else if (span_is(name, "Connection", false)) {
            connection = connection || list_has(value, "upgrade", false);
        } else if (span_is(name, "Sec-WebSocket-Version", false)) {
            if (!span_is(value, "13", true))
                return refuse(u, 426, "Sec-WebSocket-Version 13 is the one supported");
            version = true;
        } else if (span_is(name, "Sec-WebSocket-Key", false)) {
            uint8_t raw[24];
            size_t raw_len = 0;
            if (key.p || value.n != 24 || sg_b64_decode(value.p, value.n, raw, &raw_len) != SG_OK || raw_len != 16)
                return refuse(u, 400, "Sec-WebSocket-Key must be given once, 16 bytes in base64");
            key = value;
        } else if (span_is(name, "Sec-WebSocket-Protocol", false)) {
            mqtt = mqtt || list_has(value, "mqtt", true);
        }
    }
    if (!ended || cur != end)
        return refuse(u, 400, "malformed request (headers must end with an empty line, and no body follows)");
    if (!upgrade || !connection)
        return refuse(u, 426, "this port speaks MQTT over WebSocket: send Upgrade: websocket and Connection: Upgrade");
    if (!version)
        return refuse(u, 426, "Sec-WebSocket-Version 13 is required");
    if (!key.p)
        return refuse(u, 400, "Sec-WebSocket-Key is required");
    if (!mqtt)
        return refuse(u, 400, "Sec-WebSocket-Protocol must offer mqtt");
    accept_key(key, u->accept);
    if (!u->accept[0])
        return refuse(u, 400, "could not compute Sec-WebSocket-Accept");
    u->status = 101;
    return SG_OK;
}

static const char *status_text(int status)
{
    switch (status) {
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 505: return "HTTP Version Not Supported";
    default: return "Bad Request";
    }
}

static bool answer(fe_ws_t *ws, const fe_ws_upgrade_t *u)
{
    char buf[768];
    int n;
    if (u->status == 101) {
        n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n", u->accept);
    } else {
        n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n%s\n",
                     u->status, status_text(u->status), strlen(u->error) + 1,
                     u->status == 426 ? "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                                      : u->status == 405 ? "Allow: GET\r\n" : "",
                     u->error);
    }
    return n > 0 && (size_t)n < sizeof buf && ws->io.write(ws->arg, (const uint8_t *)buf, (size_t)n);
}

/* Take upgrade bytes; *took says how many belong to the request (the rest are frames). */
static fe_ws_rc_t upgrade_input(fe_ws_t *ws, const uint8_t *p, size_t n, size_t *took, const char **why)
{
    fe_ws_upgrade_t u = {0};
    *took = n;
    if (!ws->req && !(ws->req = malloc(FE_WS_MAX_REQUEST))) {
        *why = "out-of-memory";
        return FE_WS_CLOSE;
    }
    size_t old = ws->req_len, room = FE_WS_MAX_REQUEST - old, k = n < room ? n : room;
    memcpy(ws->req + old, p, k);
    ws->req_len = (uint16_t)(old + k);
    size_t end = 0;
    for (size_t i = old; i < ws->req_len; i++) {
        unsigned char ch = (unsigned char)ws->req[i];
        if ((ch < 0x20 && ch != '\r' && ch != '\n' && ch != '\t') || ch >= 0x7f) {
            /* not HTTP (an MQTT client on the wrong port, say): no need to wait for more */
            u.status = 400;
            u.error = "not an HTTP request: this port takes MQTT over WebSocket (the MQTT/TLS port is another)";
            break;
        }
        if (i >= 3 && memcmp(ws->req + i - 3, "\r\n\r\n", 4) == 0) {
            end = i + 1;
            break;
        }
    }
    if (!u.status) {
        if (end) {
            *took = end - old;
            if (fe_ws_upgrade_parse(ws->req, end, &u) != SG_OK)
                SG_DEBUG("frontend", "ws.refused", "status=%d reason=\"%s\"", u.status, u.error);
        } else if (ws->req_len == FE_WS_MAX_REQUEST) {
            u.status = 431;
            u.error = "the upgrade request is larger than 4096 bytes";
        } else {
            return FE_WS_OK;   /* more to come (or the CONNECT deadline) */
        }
    }
    free(ws->req);
    ws->req = NULL;
    ws->req_len = 0;
    if (!answer(ws, &u))
        return FE_WS_GONE;
    if (u.status != 101) {
        ws->state = WS_CLOSING;
        *why = u.error;
        return FE_WS_CLOSE;
    }
    ws->state = WS_OPEN;
    return FE_WS_OK;
}

/* ---------- frames ---------- */

static ssize_t on_recv(uint8_t *buf, size_t len, int flags, void *user)
{
    fe_ws_t *ws = user;
    (void)flags;
    if (ws->in_len == 0)
        return -1;   /* wslay: WANT_READ */
    size_t k = len < ws->in_len ? len : ws->in_len;
    memcpy(buf, ws->in, k);
    ws->in += k;
    ws->in_len -= k;
    ws->fed += k;
    return (ssize_t)k;
}

static ssize_t on_send(const uint8_t *data, size_t len, int flags, void *user)
{
    fe_ws_t *ws = user;
    (void)flags;
    return ws->io.write(ws->arg, data, len) ? (ssize_t)len : -1;
}

static int on_genmask(uint8_t *buf, size_t len, void *user)
{
    (void)buf, (void)len, (void)user;
    return -1;   /* a server never masks its frames */
}

static bool ctx_ready(fe_ws_t *ws)
{
    static const struct wslay_frame_callbacks cb = {on_send, on_recv, on_genmask};
    return ws->fr || wslay_frame_context_init(&ws->fr, &cb, ws) == 0;
}

/* Nothing is held between frames: give the frame context's buffer back (an idle session keeps none). */
static void ctx_release(fe_ws_t *ws)
{
    if (ws->fr && !ws->busy && !ws->in_frame && ws->fed == ws->used && ws->in_len == 0) {
        wslay_frame_context_free(ws->fr);
        ws->fr = NULL;
    }
}

static bool send_frame(fe_ws_t *ws, uint8_t opcode, const uint8_t *p, size_t n)
{
    if (!ctx_ready(ws))
        return false;
    struct wslay_frame_iocb f = {.fin = 1, .opcode = opcode, .payload_length = n, .data = p, .data_length = n};
    ssize_t r = wslay_frame_send(ws->fr, &f);
    ctx_release(ws);
    return r >= 0 && (size_t)r == n;
}

/* Answer with a close frame (code and reason) and close once it is written. */
static fe_ws_rc_t fail(fe_ws_t *ws, uint16_t code, const char *reason, const char **why)
{
    uint8_t b[125];
    size_t l = strlen(reason);
    if (l > sizeof b - 2)
        l = sizeof b - 2;
    b[0] = (uint8_t)(code >> 8);
    b[1] = (uint8_t)code;
    memcpy(b + 2, reason, l);
    ws->state = WS_CLOSING;
    *why = reason;
    SG_DEBUG("frontend", "ws.closing", "code=%u reason=\"%s\"", code, reason);
    return send_frame(ws, OP_CLOSE, b, l + 2) ? FE_WS_CLOSE : FE_WS_GONE;
}

static fe_ws_rc_t frame_start(fe_ws_t *ws, const struct wslay_frame_iocb *f, const char **why)
{
    if (f->rsv)
        return fail(ws, WSLAY_CODE_PROTOCOL_ERROR, "reserved bits set (no extension was agreed)", why);
    if (!f->mask)
        return fail(ws, WSLAY_CODE_PROTOCOL_ERROR, "client frames must be masked", why);
    switch (f->opcode) {
    case OP_TEXT:
        return fail(ws, WSLAY_CODE_UNSUPPORTED_DATA, "text frames are not accepted: MQTT travels in binary frames", why);
    case OP_CONT:
        if (!ws->msg_open)
            return fail(ws, WSLAY_CODE_PROTOCOL_ERROR, "continuation frame outside a message", why);
        break;
    case OP_BINARY:
        if (ws->msg_open)
            return fail(ws, WSLAY_CODE_PROTOCOL_ERROR, "new message inside a fragmented one", why);
        break;
    case OP_CLOSE:
    case OP_PING:
    case OP_PONG:
        break;   /* wslay checked: at most 125 bytes, not fragmented */
    default:
        return fail(ws, WSLAY_CODE_PROTOCOL_ERROR, "unknown opcode", why);
    }
    if ((f->opcode == OP_CONT || f->opcode == OP_BINARY)) {
        if (f->payload_length > ws->io.max_frame(ws->arg))
            return fail(ws, WSLAY_CODE_MESSAGE_TOO_BIG, "frame larger than the MQTT packet cap", why);
        ws->msg_open = !f->fin;
    }
    ws->in_frame = true;
    ws->opcode = f->opcode;
    ws->frame_len = f->payload_length;
    ws->frame_off = 0;
    ws->ctl_len = 0;
    return FE_WS_OK;
}

/* A whole control frame is in ws->ctl. */
static fe_ws_rc_t control(fe_ws_t *ws, const char **why)
{
    if (ws->opcode == OP_PING)
        return send_frame(ws, OP_PONG, ws->ctl, ws->ctl_len) ? FE_WS_OK : FE_WS_GONE;
    if (ws->opcode != OP_CLOSE)
        return FE_WS_OK;   /* pong */
    if (ws->ctl_len == 1)
        return fail(ws, WSLAY_CODE_PROTOCOL_ERROR, "close frame with a one-byte payload", why);
    /* echo the status code (RFC 6455 5.5.1), then close */
    ws->state = WS_CLOSING;
    *why = "websocket-close";
    return send_frame(ws, OP_CLOSE, ws->ctl, ws->ctl_len >= 2 ? 2 : 0) ? FE_WS_CLOSE : FE_WS_GONE;
}

static uint64_t header_len(uint64_t payload)
{
    return 2 + 4 + (payload < 126 ? 0 : payload < 65536 ? 2 : 8);   /* masked: 4 key bytes */
}

static fe_ws_rc_t frames_loop(fe_ws_t *ws, const char **why);

static fe_ws_rc_t frames_input(fe_ws_t *ws, const uint8_t *p, size_t n, const char **why)
{
    if (n == 0)
        return FE_WS_OK;
    ws->in = p;
    ws->in_len = n;
    if (!ctx_ready(ws)) {
        *why = "out-of-memory";
        return FE_WS_CLOSE;
    }
    ws->busy = true;
    fe_ws_rc_t rc = frames_loop(ws, why);
    ws->busy = false;
    if (rc == FE_WS_OK)
        ctx_release(ws);
    return rc;
}

static fe_ws_rc_t frames_loop(fe_ws_t *ws, const char **why)
{
    for (;;) {
        struct wslay_frame_iocb f;
        memset(&f, 0, sizeof f);
        ssize_t r = wslay_frame_recv(ws->fr, &f);
        if (r == WSLAY_ERR_WANT_READ)
            break;
        if (r < 0)
            return fail(ws, WSLAY_CODE_PROTOCOL_ERROR, "malformed frame header", why);
        fe_ws_rc_t rc;
        if (!ws->in_frame && (rc = frame_start(ws, &f, why)) != FE_WS_OK)
            return rc;
        ws->frame_off += f.data_length;
        bool end = ws->frame_off == ws->frame_len;
        if (ws->opcode == OP_BINARY || ws->opcode == OP_CONT) {
            if (f.data_length > 0 && !ws->io.data(ws->arg, f.data, f.data_length))
                return FE_WS_GONE;
        } else {
            memcpy(ws->ctl + ws->ctl_len, f.data, f.data_length);   /* frame_len <= 125 */
            ws->ctl_len = (uint8_t)(ws->ctl_len + f.data_length);
        }
        if (!end)
            continue;
        ws->in_frame = false;
        ws->used += header_len(ws->frame_len) + ws->frame_len;
        if (ws->opcode >= OP_CLOSE && (rc = control(ws, why)) != FE_WS_OK)
            return rc;
    }
    return FE_WS_OK;
}

fe_ws_t *fe_ws_new(const fe_ws_io_t *io, void *arg)
{
    fe_ws_t *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->io = *io;
    ws->arg = arg;
    return ws;
}

void fe_ws_destroy(fe_ws_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fe_ws_t *ws = *self_p;
    if (ws->fr)
        wslay_frame_context_free(ws->fr);
    free(ws->req);
    free(ws);
    *self_p = NULL;
}

fe_ws_rc_t fe_ws_input(fe_ws_t *self, const uint8_t *p, size_t n, const char **why)
{
    *why = NULL;
    if (self->state == WS_CLOSING)
        return FE_WS_OK;   /* answered already: what follows is discarded */
    if (self->state == WS_UPGRADING) {
        size_t took = 0;
        fe_ws_rc_t rc = upgrade_input(self, p, n, &took, why);
        if (rc != FE_WS_OK || self->state != WS_OPEN)
            return rc;
        p += took;
        n -= took;
    }
    return frames_input(self, p, n, why);
}

bool fe_ws_send(fe_ws_t *self, const uint8_t *p, size_t n)
{
    if (self->state == WS_CLOSING)
        return true;   /* a close frame went out: nothing may follow it, and the connection is ending */
    return self->state == WS_OPEN && send_frame(self, OP_BINARY, p, n);
}

bool fe_ws_open(const fe_ws_t *self) { return self->state == WS_OPEN; }

/* ---------- a frontend connection over WebSocket ---------- */

static bool conn_data(void *arg, const uint8_t *p, size_t n)
{
    fe_conn_t *c = arg;
    fe_conn_feed(c, p, n);
    return c->state != FE_CLOSED;
}

static bool conn_write(void *arg, const uint8_t *p, size_t n) { return fe_conn_queue(arg, p, n); }

/* Until a CONNECT has been read, frontend.max_connect_packet; after it, the largest MQTT packet
 * even before the CONNACK: a device may send publishes right behind its CONNECT (MQTT allows
 * it, and the MQTT/TLS port takes them), and their frame's header comes before the shard has
 * decided. What an undecided connection makes this process hold stays bounded where the MQTT
 * stream is read: it is not read further until the shard decides (conn_feed buffers one read). */
static uint32_t conn_max_frame(void *arg)
{
    const fe_conn_t *c = arg;
    return c->state < FE_ONLINE && !c->device ? c->w->set->max_connect_packet : c->w->set->max_packet;
}

bool fe_ws_conn_start(fe_conn_t *c)
{
    static const fe_ws_io_t io = {conn_data, conn_write, conn_max_frame};
    c->ws = fe_ws_new(&io, c);
    return c->ws != NULL;
}

void fe_ws_conn_input(fe_conn_t *c, const uint8_t *p, size_t n)
{
    const char *why = NULL;
    fe_ws_rc_t rc = fe_ws_input(c->ws, p, n, &why);
    if (rc == FE_WS_GONE || c->state == FE_CLOSED)
        return;
    fe_conn_flush(c);   /* the upgrade answer, pongs, a close frame */
    if (rc == FE_WS_CLOSE && c->state != FE_CLOSED) {
        SG_INFO("frontend", "ws.closed", "device=%s reason=\"%s\"", c->device ? c->device : "-", why);
        fe_conn_send_and_close(c, NULL, 0, why);
    }
}

void fe_ws_conn_send(fe_conn_t *c, const uint8_t *p, size_t n)
{
    if (!fe_ws_send(c->ws, p, n)) {
        if (c->state != FE_CLOSED)
            fe_conn_close(c, "websocket-send-failed");
        return;
    }
    fe_conn_flush(c);
}
