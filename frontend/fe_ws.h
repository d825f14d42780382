/* fe_ws.h — MQTT over WebSocket (RFC 6455) on the frontend's ws port: the HTTP/1.1 upgrade and
 * the frame layer (libwslay's frame API) between the TLS byte stream and the MQTT byte stream.
 * The layer itself knows nothing of connections: it reads bytes given to fe_ws_input and talks to
 * its owner through three callbacks (fe_ws_io_t), so unit tests and the fuzz harness drive it
 * alone; fe_ws_conn_* at the end tie it to a frontend connection (fe_conn.c calls them). */
#ifndef FE_WS_H
#define FE_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sg_result.h"

/* The upgrade request (request line and headers) may not exceed this: devices send a few hundred
 * bytes; a larger one is answered 431 and closed. */
#define FE_WS_MAX_REQUEST 4096

/* ---------- the upgrade request ---------- */

typedef struct {
    int status;          /* 101 when the upgrade is valid, else the HTTP status to answer */
    const char *error;   /* why not (for the answer's body and the log); NULL on success */
    char accept[29];     /* Sec-WebSocket-Accept for the request's key (valid on success) */
} fe_ws_upgrade_t;

/* Parse one complete request (everything up to and including the blank line ending its headers):
 * GET {/$iothub/websocket or /mqtt}[?query] HTTP/1.1 with Upgrade: websocket, Connection: upgrade,
 * Sec-WebSocket-Version: 13, a Sec-WebSocket-Key of 16 bytes in base64 and Sec-WebSocket-Protocol
 * offering mqtt. SG_OK and u->status 101, or an error with u->status (400, 404, 405, 426, 505)
 * and u->error saying what was wrong. */
SG_WUR sg_rc fe_ws_upgrade_parse(const char *req, size_t len, fe_ws_upgrade_t *u);

/* ---------- the frame layer ---------- */

typedef struct {
    /* MQTT bytes carried by binary frames, in order; false when the owner is gone (closed): the
     * layer then stops at once and touches nothing more. */
    bool (*data)(void *arg, const uint8_t *p, size_t n);
    /* Bytes for the peer (upgrade answer, frames); false when they could not be queued (the owner
     * closed: nothing more is sent). */
    bool (*write)(void *arg, const uint8_t *p, size_t n);
    /* The largest data frame payload the peer may send now (the MQTT packet cap that applies). */
    uint32_t (*max_frame)(void *arg);
} fe_ws_io_t;

typedef struct fe_ws fe_ws_t;

typedef enum {
    FE_WS_OK = 0,    /* all input taken; go on */
    FE_WS_CLOSE,     /* the layer answered (HTTP error, close frame): close once the output is written */
    FE_WS_GONE,      /* a callback said the owner is gone */
} fe_ws_rc_t;

/* A layer waiting for the upgrade request; io is copied, arg given to every callback. */
fe_ws_t *fe_ws_new(const fe_ws_io_t *io, void *arg);
void fe_ws_destroy(fe_ws_t **self_p);
/* Bytes from the peer. On FE_WS_CLOSE *why names the reason (a static string). */
fe_ws_rc_t fe_ws_input(fe_ws_t *self, const uint8_t *p, size_t n, const char **why);
/* Send p as one binary frame; false when the owner's write refused it. */
SG_WUR bool fe_ws_send(fe_ws_t *self, const uint8_t *p, size_t n);
/* True once the upgrade has been answered 101 (MQTT may flow). */
bool fe_ws_open(const fe_ws_t *self);

/* ---------- a frontend connection over WebSocket (fe_internal.h) ---------- */
struct fe_conn;
/* Give a newly accepted connection of the ws port its layer; false on no memory. */
SG_WUR bool fe_ws_conn_start(struct fe_conn *c);
/* Decrypted bytes read from the device. */
void fe_ws_conn_input(struct fe_conn *c, const uint8_t *p, size_t n);
/* MQTT bytes for the device, as one binary frame. */
void fe_ws_conn_send(struct fe_conn *c, const uint8_t *p, size_t n);

#endif
