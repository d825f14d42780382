/* sg_frame.h — whole inter-tier frames: one builder per frame type that routers, shards, admins
 * and frontend loops make up themselves. Each appends a complete frame (header and body) to w,
 * so a caller never fills a header field by hand: answers take the frame they answer (its
 * device, correlation id and session epoch, sg_wire_reply), pushes to a session take the
 * session, and a tier's own frames take what they carry. The readers stay in sg_wire.h beside
 * the body writers these use. */
#ifndef SG_FRAME_H
#define SG_FRAME_H

#include "sg_wire.h"

/* ---- answers to frame `in` ---- */
/* TELEMETRY_ACK (status SG_TELE_*) for a publish or inquiry with packet id pid. */
SG_WUR sg_rc sg_frame_tele_ack(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint16_t status, uint16_t pid);
/* SUBSCRIBE_RES to the SUBSCRIBE in that asked (SG_WIRE_F_ANSWER): its packet id. */
SG_WUR sg_rc sg_frame_subscribe_res(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint16_t status, uint16_t pid);
/* AUTH_RES (status SG_AUTH_*) from shard `shard` (the frontend learns where the session's
 * publishes go; SG_WIRE_SHARD_BY_DEVICE: not said), starting session `epoch` (0: none) with
 * flags SG_WIRE_F_*. */
SG_WUR sg_rc sg_frame_auth_res(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint16_t status, uint32_t shard,
                               uint64_t epoch, uint8_t flags, const sg_wire_auth_res_t *res);
/* PSK_RES (status SG_PSK_*), with the key when SG_PSK_OK. */
SG_WUR sg_rc sg_frame_psk_res(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint16_t status, const uint8_t *key,
                              size_t key_len);
/* A JSON answer (ADMIN_RES, RING_RES) with an HTTP status. */
SG_WUR sg_rc sg_frame_json_res(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint8_t type, uint16_t status,
                               const char *json, size_t len);
/* A shard's PONG to a router's probe: it takes batches, and says which start of it answers. */
SG_WUR sg_rc sg_frame_shard_pong(sg_wbuf_t *w, const sg_wire_hdr_t *in, const char *name, uint64_t incarnation);

/* ---- pushes to one device session ---- */
typedef struct {
    const char *device;     /* NUL-terminated */
    uint64_t handle;        /* the connection inside its frontend loop */
    uint64_t epoch;         /* the session's */
} sg_frame_session_t;
/* The header of any other frame from or to one session (a frontend's device frames: AUTH,
 * TELEMETRY, SUBSCRIBE, COMPLETE, SESSION_END, METHOD_RES, INQUIRY, PSK) with its flags and
 * status; the caller appends the type's body (sg_wire.h). */
SG_WUR sg_rc sg_frame_session_head(sg_wbuf_t *w, uint8_t type, const sg_frame_session_t *s, uint8_t flags,
                                   uint16_t status);
SG_WUR sg_rc sg_frame_kick(sg_wbuf_t *w, const sg_frame_session_t *s, uint8_t reason);
SG_WUR sg_rc sg_frame_method(sg_wbuf_t *w, const sg_frame_session_t *s, const sg_wire_method_t *m);
/* INQUIRY_RES: the answer's status (100-599), its request id and payload. */
SG_WUR sg_rc sg_frame_inquiry_res(sg_wbuf_t *w, const sg_frame_session_t *s, uint16_t status, const char *rid,
                                  size_t rid_len, const void *payload, size_t len);
/* DELIVER up to its property count: the caller then appends nprops pairs and the payload
 * (sg_wire_put_prop or stored wire-form pairs, sg_wire_put_payload). */
SG_WUR sg_rc sg_frame_deliver_head(sg_wbuf_t *w, const sg_frame_session_t *s, const sg_wire_deliver_t *d,
                                   uint16_t nprops);

/* ---- a router's own ---- */
/* PONG to a frontend loop's heartbeat: this router's incarnation and the n shards' as last heard. */
SG_WUR sg_rc sg_frame_router_pong(sg_wbuf_t *w, uint64_t boot, const uint64_t *incarnations, uint16_t n);
/* PING probing a shard (the router takes batches). */
SG_WUR sg_rc sg_frame_probe(sg_wbuf_t *w);
/* ALIVE: a frontend loop's heartbeat passed on to a shard (the envelope names the loop). */
SG_WUR sg_rc sg_frame_alive(sg_wbuf_t *w);
/* SHARD_STATE: shard `shard` answers as this incarnation now. */
SG_WUR sg_rc sg_frame_shard_state(sg_wbuf_t *w, uint32_t shard, uint64_t incarnation);
/* PEER_GONE: the push `about` found its frontend loop gone (same device, connection, epoch). */
SG_WUR sg_rc sg_frame_peer_gone(sg_wbuf_t *w, const sg_wire_hdr_t *about);

/* ---- an admin's ---- */
/* RING: asks a router to describe the ring (corr matches the answer). */
SG_WUR sg_rc sg_frame_ring(sg_wbuf_t *w, uint64_t corr);
/* ADMIN: operation op with its JSON, for the shard of device (NULL: the shard numbered `shard`). */
SG_WUR sg_rc sg_frame_admin(sg_wbuf_t *w, const char *device, uint32_t shard, uint16_t op, const char *json,
                            size_t len);

/* ---- a frontend loop's own ---- */
/* PING heartbeat to its router with its JSON state (the loop takes batches). */
SG_WUR sg_rc sg_frame_heartbeat(sg_wbuf_t *w, const char *json, size_t len);
/* HELLO: this loop (re)started under `name`; its earlier sessions are gone. */
SG_WUR sg_rc sg_frame_hello(sg_wbuf_t *w, const char *name);

#endif
