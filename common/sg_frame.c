/* sg_frame.c — whole inter-tier frames, one builder per type; see sg_frame.h. */
#include "sg_frame.h"
#include <string.h>

static sg_wire_hdr_t session_hdr(uint8_t type, const sg_frame_session_t *s)
{
    sg_wire_hdr_t h = sg_wire_hdr(type, s->device);
    h.corr = s->handle;
    h.epoch = s->epoch;
    return h;
}

sg_rc sg_frame_tele_ack(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint16_t status, uint16_t pid)
{
    sg_wire_hdr_t h = sg_wire_reply(in, SG_MSG_TELEMETRY_ACK, status);
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_pid(w, pid);
}

sg_rc sg_frame_subscribe_res(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint16_t status, uint16_t pid)
{
    sg_wire_hdr_t h = sg_wire_reply(in, SG_MSG_SUBSCRIBE_RES, status);
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_pid(w, pid);
}

sg_rc sg_frame_auth_res(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint16_t status, uint32_t shard, uint64_t epoch,
                        uint8_t flags, const sg_wire_auth_res_t *res)
{
    sg_wire_hdr_t h = sg_wire_reply(in, SG_MSG_AUTH_RES, status);
    h.shard = shard;
    h.epoch = epoch;
    h.flags = flags;
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_auth_res(w, res);
}

sg_rc sg_frame_psk_res(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint16_t status, const uint8_t *key, size_t key_len)
{
    sg_wire_hdr_t h = sg_wire_reply(in, SG_MSG_PSK_RES, status);
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_psk(w, key, key_len);
}

sg_rc sg_frame_json_res(sg_wbuf_t *w, const sg_wire_hdr_t *in, uint8_t type, uint16_t status, const char *json,
                        size_t len)
{
    sg_wire_hdr_t h = sg_wire_reply(in, type, status);
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_json(w, json, len);
}

sg_rc sg_frame_shard_pong(sg_wbuf_t *w, const sg_wire_hdr_t *in, const char *name, uint64_t incarnation)
{
    sg_wire_hdr_t h = sg_wire_reply(in, SG_MSG_PONG, 0);
    h.flags = SG_WIRE_F_BATCH;   /* the router may batch what it sends to this shard */
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_shard_pong(w, name, incarnation);
}

sg_rc sg_frame_session_head(sg_wbuf_t *w, uint8_t type, const sg_frame_session_t *s, uint8_t flags, uint16_t status)
{
    sg_wire_hdr_t h = session_hdr(type, s);
    h.flags = flags;
    h.status = status;
    return sg_wire_encode_hdr(w, &h);
}

sg_rc sg_frame_kick(sg_wbuf_t *w, const sg_frame_session_t *s, uint8_t reason)
{
    sg_wire_hdr_t h = session_hdr(SG_MSG_KICK, s);
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_u8(w, reason);
}

sg_rc sg_frame_method(sg_wbuf_t *w, const sg_frame_session_t *s, const sg_wire_method_t *m)
{
    sg_wire_hdr_t h = session_hdr(SG_MSG_METHOD, s);
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_method(w, m);
}

sg_rc sg_frame_inquiry_res(sg_wbuf_t *w, const sg_frame_session_t *s, uint16_t status, const char *rid,
                           size_t rid_len, const void *payload, size_t len)
{
    sg_wire_hdr_t h = session_hdr(SG_MSG_INQUIRY_RES, s);
    h.status = status;
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_inquiry_res(w, rid, rid_len, payload, len);
}

sg_rc sg_frame_deliver_head(sg_wbuf_t *w, const sg_frame_session_t *s, const sg_wire_deliver_t *d, uint16_t nprops)
{
    sg_wire_hdr_t h = session_hdr(SG_MSG_DELIVER, s);
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_deliver_head(w, d, nprops);
}

sg_rc sg_frame_router_pong(sg_wbuf_t *w, uint64_t boot, const uint64_t *incarnations, uint16_t n)
{
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_PONG, NULL);
    h.flags = SG_WIRE_F_BATCH;   /* the frontend may batch what it sends to this router */
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_router_pong(w, boot, incarnations, n);
}

sg_rc sg_frame_probe(sg_wbuf_t *w)
{
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_PING, NULL);
    h.flags = SG_WIRE_F_BATCH;   /* the shard may batch what it sends to this router */
    return sg_wire_encode_hdr(w, &h);
}

sg_rc sg_frame_alive(sg_wbuf_t *w)
{
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_ALIVE, NULL);
    return sg_wire_encode_hdr(w, &h);
}

sg_rc sg_frame_shard_state(sg_wbuf_t *w, uint32_t shard, uint64_t incarnation)
{
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_SHARD_STATE, NULL);
    h.shard = shard;
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_u64(w, incarnation);
}

sg_rc sg_frame_peer_gone(sg_wbuf_t *w, const sg_wire_hdr_t *about)
{
    return sg_wire_encode_hdr(w, &(sg_wire_hdr_t){.type = SG_MSG_PEER_GONE, .shard = SG_WIRE_SHARD_BY_DEVICE,
                                                  .device = about->device, .device_len = about->device_len,
                                                  .corr = about->corr, .epoch = about->epoch});
}

sg_rc sg_frame_ring(sg_wbuf_t *w, uint64_t corr)
{
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_RING, NULL);
    h.corr = corr;
    return sg_wire_encode_hdr(w, &h);
}

sg_rc sg_frame_admin(sg_wbuf_t *w, const char *device, uint32_t shard, uint16_t op, const char *json, size_t len)
{
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_ADMIN, device);
    h.shard = shard;
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_admin(w, op, json, len);
}

sg_rc sg_frame_heartbeat(sg_wbuf_t *w, const char *json, size_t len)
{
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_PING, NULL);
    h.flags = SG_WIRE_F_BATCH;   /* the router may send this loop batches */
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_json(w, json, len);
}

sg_rc sg_frame_hello(sg_wbuf_t *w, const char *name)
{
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_HELLO, NULL);
    SG_GUARD(sg_wire_encode_hdr(w, &h));
    return sg_wire_put_name(w, name);
}
