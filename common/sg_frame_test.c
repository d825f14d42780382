/* sg_frame_test.c — every frame builder gives a frame that decodes with the fields its readers
 * expect: answers carry the request's device, correlation id and epoch; pushes name the session;
 * a tier's own frames carry their flags and bodies. */
#include "sg_frame.h"
#include "sg_test.h"

static sg_wire_hdr_t request(void)
{
    sg_wire_hdr_t in = sg_wire_hdr(SG_MSG_TELEMETRY, "dev-7");
    in.corr = 0x1122334455667788ull;
    in.epoch = 99;
    in.status = 5;
    in.flags = SG_WIRE_F_QOS1;
    return in;
}

/* Decodes w as one frame of `type`; w is reset for the next builder. */
static sg_wire_hdr_t decoded(sg_wbuf_t *w, uint8_t type)
{
    sg_wire_hdr_t h;
    CHECK_RC(sg_wire_decode(w->data, w->len, &h), SG_OK);
    CHECK(h.type == type);
    return h;
}

static bool is_answer(const sg_wire_hdr_t *h, const sg_wire_hdr_t *in)
{
    return h->corr == in->corr && h->epoch == in->epoch && h->device_len == in->device_len &&
           memcmp(h->device, in->device, in->device_len) == 0;
}

static void test_answers(void)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, SG_WIRE_MAX_FRAME);
    sg_wire_hdr_t in = request(), h;
    uint16_t pid;

    CHECK_RC(sg_frame_tele_ack(&w, &in, SG_TELE_FULL, 513), SG_OK);
    h = decoded(&w, SG_MSG_TELEMETRY_ACK);
    CHECK(is_answer(&h, &in) && h.status == SG_TELE_FULL && h.flags == 0);
    CHECK_RC(sg_wire_get_pid(&h, &pid), SG_OK);
    CHECK(pid == 513);

    sg_wbuf_reset(&w);
    sg_wire_auth_res_t res = {.expires = 1700000000, .generation = 4}, got;
    CHECK_RC(sg_frame_auth_res(&w, &in, SG_AUTH_OK, 2, 1234, SG_WIRE_F_SESSION_PRESENT, &res), SG_OK);
    h = decoded(&w, SG_MSG_AUTH_RES);
    CHECK(h.corr == in.corr && h.epoch == 1234 && h.flags == SG_WIRE_F_SESSION_PRESENT && h.status == SG_AUTH_OK);
    CHECK(h.shard == 2);
    CHECK_RC(sg_wire_get_auth_res(&h, &got), SG_OK);
    CHECK(got.expires == res.expires && got.generation == 4);

    sg_wbuf_reset(&w);
    const uint8_t key[3] = {1, 2, 3};
    const uint8_t *k;
    size_t kl;
    CHECK_RC(sg_frame_psk_res(&w, &in, SG_PSK_OK, key, sizeof key), SG_OK);
    h = decoded(&w, SG_MSG_PSK_RES);
    CHECK(is_answer(&h, &in) && h.status == SG_PSK_OK);
    CHECK_RC(sg_wire_get_psk(&h, &k, &kl), SG_OK);
    CHECK(kl == 3 && memcmp(k, key, 3) == 0);

    sg_wbuf_reset(&w);
    const char *json;
    size_t jl;
    CHECK_RC(sg_frame_json_res(&w, &in, SG_MSG_ADMIN_RES, 404, "{\"a\":1}", 7), SG_OK);
    h = decoded(&w, SG_MSG_ADMIN_RES);
    CHECK(is_answer(&h, &in) && h.status == 404);
    CHECK_RC(sg_wire_get_json(&h, &json, &jl), SG_OK);
    CHECK(jl == 7 && memcmp(json, "{\"a\":1}", 7) == 0);

    sg_wbuf_reset(&w);
    const char *name;
    size_t nl;
    uint64_t inc;
    CHECK_RC(sg_frame_shard_pong(&w, &in, "store-3", 77), SG_OK);
    h = decoded(&w, SG_MSG_PONG);
    CHECK(h.flags == SG_WIRE_F_BATCH && h.corr == in.corr);
    CHECK_RC(sg_wire_get_shard_pong(&h, &name, &nl, &inc), SG_OK);
    CHECK(nl == 7 && memcmp(name, "store-3", 7) == 0 && inc == 77);
    sg_wbuf_fini(&w);
}

static void test_pushes(void)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, SG_WIRE_MAX_FRAME);
    sg_frame_session_t s = {.device = "dev-9", .handle = 0xabcdefull, .epoch = 31};
    sg_wire_hdr_t h;
#define IS_SESSION(h) ((h).corr == s.handle && (h).epoch == s.epoch && (h).device_len == 5 && \
                       memcmp((h).device, "dev-9", 5) == 0)

    CHECK_RC(sg_frame_session_head(&w, SG_MSG_TELEMETRY, &s, SG_WIRE_F_QOS1, 3), SG_OK);
    h = decoded(&w, SG_MSG_TELEMETRY);
    CHECK(IS_SESSION(h) && h.flags == SG_WIRE_F_QOS1 && h.status == 3 && h.body_len == 0);

    sg_wbuf_reset(&w);
    uint8_t reason;
    CHECK_RC(sg_frame_kick(&w, &s, SG_KICK_REVOKED), SG_OK);
    h = decoded(&w, SG_MSG_KICK);
    CHECK(IS_SESSION(h));
    CHECK_RC(sg_wire_get_u8(&h, &reason), SG_OK);
    CHECK(reason == SG_KICK_REVOKED);

    sg_wbuf_reset(&w);
    sg_wire_method_t m = {.rid = "r1", .rid_len = 2, .name = "reboot", .name_len = 6,
                          .payload = (const uint8_t *)"{}", .payload_len = 2}, gm;
    CHECK_RC(sg_frame_method(&w, &s, &m), SG_OK);
    h = decoded(&w, SG_MSG_METHOD);
    CHECK(IS_SESSION(h));
    CHECK_RC(sg_wire_get_method(&h, &gm), SG_OK);
    CHECK(gm.name_len == 6 && memcmp(gm.name, "reboot", 6) == 0 && gm.payload_len == 2);

    sg_wbuf_reset(&w);
    const char *rid;
    size_t rl, pl;
    const uint8_t *p;
    CHECK_RC(sg_frame_inquiry_res(&w, &s, 504, "q-1", 3, "", 0), SG_OK);
    h = decoded(&w, SG_MSG_INQUIRY_RES);
    CHECK(IS_SESSION(h) && h.status == 504);
    CHECK_RC(sg_wire_get_inquiry_res(&h, &rid, &rl, &p, &pl), SG_OK);
    CHECK(rl == 3 && memcmp(rid, "q-1", 3) == 0 && pl == 0);

    sg_wbuf_reset(&w);
    sg_wire_deliver_t d = {.packet_id = 12, .delivery_count = 2, .enqueued_ms = 5, .expires_ms = 9,
                           .message_id = "m-1", .message_id_len = 3}, gd;
    CHECK_RC(sg_frame_deliver_head(&w, &s, &d, 1), SG_OK);
    CHECK_RC(sg_wire_put_prop(&w, "k", 1, "v", 1), SG_OK);
    CHECK_RC(sg_wire_put_payload(&w, "hi", 2), SG_OK);
    h = decoded(&w, SG_MSG_DELIVER);
    CHECK(IS_SESSION(h));
    CHECK_RC(sg_wire_get_deliver(&h, &gd), SG_OK);
    CHECK(gd.packet_id == 12 && gd.delivery_count == 2 && gd.props.count == 1 && gd.payload_len == 2);
#undef IS_SESSION
    sg_wbuf_fini(&w);
}

static void test_tier_frames(void)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, SG_WIRE_MAX_FRAME);
    sg_wire_hdr_t h;

    const uint64_t incs[3] = {0, 5, 6};
    sg_wire_router_pong_t rp;
    uint64_t inc;
    CHECK_RC(sg_frame_router_pong(&w, 42, incs, 3), SG_OK);
    h = decoded(&w, SG_MSG_PONG);
    CHECK(h.flags == SG_WIRE_F_BATCH);
    CHECK_RC(sg_wire_get_router_pong(&h, &rp), SG_OK);
    CHECK(rp.router == 42);
    int n = 0;
    while (sg_wire_router_pong_next(&rp, &inc))
        CHECK(inc == incs[n++]);
    CHECK(n == 3);

    sg_wbuf_reset(&w);
    CHECK_RC(sg_frame_probe(&w), SG_OK);
    h = decoded(&w, SG_MSG_PING);
    CHECK(h.flags == SG_WIRE_F_BATCH && h.body_len == 0);

    sg_wbuf_reset(&w);
    CHECK_RC(sg_frame_alive(&w), SG_OK);
    h = decoded(&w, SG_MSG_ALIVE);
    CHECK(h.body_len == 0 && h.device_len == 0);

    sg_wbuf_reset(&w);
    uint64_t got;
    CHECK_RC(sg_frame_shard_state(&w, 3, 0x55), SG_OK);
    h = decoded(&w, SG_MSG_SHARD_STATE);
    CHECK(h.shard == 3);
    CHECK_RC(sg_wire_get_u64(&h, &got), SG_OK);
    CHECK(got == 0x55);

    sg_wbuf_reset(&w);
    sg_wire_hdr_t about = request();
    about.type = SG_MSG_DELIVER;
    CHECK_RC(sg_frame_peer_gone(&w, &about), SG_OK);
    h = decoded(&w, SG_MSG_PEER_GONE);
    CHECK(is_answer(&h, &about) && h.shard == SG_WIRE_SHARD_BY_DEVICE && h.body_len == 0);

    sg_wbuf_reset(&w);
    CHECK_RC(sg_frame_ring(&w, 17), SG_OK);
    h = decoded(&w, SG_MSG_RING);
    CHECK(h.corr == 17);

    sg_wbuf_reset(&w);
    uint16_t op;
    const char *json;
    size_t jl;
    CHECK_RC(sg_frame_admin(&w, "dev-1", SG_WIRE_SHARD_BY_DEVICE, SG_ADM_INQUIRY_CLAIM, "{}", 2), SG_OK);
    h = decoded(&w, SG_MSG_ADMIN);
    CHECK(h.device_len == 5 && h.shard == SG_WIRE_SHARD_BY_DEVICE);
    CHECK_RC(sg_wire_get_admin(&h, &op, &json, &jl), SG_OK);
    CHECK(op == SG_ADM_INQUIRY_CLAIM && jl == 2);
    sg_wbuf_reset(&w);
    CHECK_RC(sg_frame_admin(&w, NULL, 1, SG_ADM_INQUIRY_CLAIM, "{}", 2), SG_OK);
    h = decoded(&w, SG_MSG_ADMIN);
    CHECK(h.device_len == 0 && h.shard == 1);

    sg_wbuf_reset(&w);
    CHECK_RC(sg_frame_heartbeat(&w, "{\"connections\":1}", 17), SG_OK);
    h = decoded(&w, SG_MSG_PING);
    CHECK(h.flags == SG_WIRE_F_BATCH);
    CHECK_RC(sg_wire_get_json(&h, &json, &jl), SG_OK);
    CHECK(jl == 17);

    sg_wbuf_reset(&w);
    const char *name;
    CHECK_RC(sg_frame_hello(&w, "fe-0/1/abc"), SG_OK);
    h = decoded(&w, SG_MSG_HELLO);
    CHECK_RC(sg_wire_get_name(&h, &name, &jl), SG_OK);
    CHECK(jl == 10 && memcmp(name, "fe-0/1/abc", 10) == 0);

    /* a body that does not fit is refused, not cut */
    sg_wbuf_fini(&w);
    sg_wbuf_init(&w, 64);
    w.max = 64;
    CHECK(sg_frame_admin(&w, "dev-1", SG_WIRE_SHARD_BY_DEVICE, SG_ADM_INQUIRY_CLAIM, "{\"x\":\"0123456789012345678901234567890123456789\"}", 48) != SG_OK);
    sg_wbuf_fini(&w);
}

int main(void)
{
    test_answers();
    test_pushes();
    test_tier_frames();
    TEST_DONE();
}
