/* sg_wire_test.c — inter-tier frames: every body round-trips, and a malformed frame from a peer
 * (bad version, unknown type, truncated header, bad device id, trailing bytes) is refused. */
#include "sg_frame.h"
#include "sg_test.h"
#include "sg_wire.h"

static sg_wbuf_t frame(uint8_t type, const char *device)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, SG_WIRE_MAX_FRAME);
    sg_wire_hdr_t h = sg_wire_hdr(type, device);
    h.corr = 0x1122334455667788ull;
    h.epoch = 42;
    h.status = 7;
    h.flags = SG_WIRE_F_QOS1;
    if (sg_wire_encode_hdr(&w, &h) != SG_OK)
        abort();
    return w;
}

static void test_header(void)
{
    sg_wbuf_t w = frame(SG_MSG_SESSION_END, "dev-1");
    sg_wire_hdr_t h;
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK(h.type == SG_MSG_SESSION_END && h.corr == 0x1122334455667788ull && h.epoch == 42 && h.status == 7);
    CHECK(h.flags == SG_WIRE_F_QOS1 && h.shard == SG_WIRE_SHARD_BY_DEVICE);
    CHECK(h.device_len == 5 && memcmp(h.device, "dev-1", 5) == 0);
    CHECK(h.body_len == 0);
    CHECK_STR(sg_wire_type_name(h.type), "SESSION_END");
    CHECK_STR(sg_wire_type_name(0), "UNKNOWN");

    /* the correlation id is set in place, nothing else moves */
    CHECK_RC(sg_wire_set_corr(w.data, w.len, 0x0102030405060708ull), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK(h.corr == 0x0102030405060708ull && h.epoch == 42 && h.status == 7 && h.device_len == 5);
    CHECK_RC(sg_wire_set_corr(w.data, 16, 1), SG_E_MALFORMED);

    /* an answer carries the request's device, correlation id and epoch, nothing else of it */
    sg_wire_hdr_t a = sg_wire_reply(&h, SG_MSG_TELEMETRY_ACK, SG_TELE_FULL);
    CHECK(a.type == SG_MSG_TELEMETRY_ACK && a.status == SG_TELE_FULL && a.corr == h.corr && a.epoch == 42);
    CHECK(a.device == h.device && a.device_len == 5 && a.flags == 0 && a.shard == SG_WIRE_SHARD_BY_DEVICE);

    /* every prefix of a header is truncated, never accepted */
    for (size_t n = 0; n < w.len; n++)
        CHECK(sg_wire_decode(w.data, n, &h) != SG_OK);

    uint8_t bad[64];
    memcpy(bad, w.data, w.len);
    bad[0] = 2;   /* version */
    CHECK_RC(sg_wire_decode(bad, w.len, &h), SG_E_MALFORMED);
    memcpy(bad, w.data, w.len);
    bad[1] = SG_MSG_TYPE_MAX;   /* type */
    CHECK_RC(sg_wire_decode(bad, w.len, &h), SG_E_MALFORMED);
    bad[1] = 0;
    CHECK_RC(sg_wire_decode(bad, w.len, &h), SG_E_MALFORMED);
    memcpy(bad, w.data, w.len);
    bad[w.len - 1] = '/';   /* device id outside the id alphabet */
    CHECK_RC(sg_wire_decode(bad, w.len, &h), SG_E_MALFORMED);
    sg_wbuf_fini(&w);

    /* a device id over 128 bytes cannot be encoded or decoded */
    char longid[130];
    memset(longid, 'a', 129);
    longid[129] = 0;
    sg_wire_hdr_t big = sg_wire_hdr(SG_MSG_AUTH, longid);
    sg_wbuf_init(&w, 1024);
    CHECK_RC(sg_wire_encode_hdr(&w, &big), SG_E_TOO_BIG);
    sg_wbuf_fini(&w);
    uint8_t raw[200] = {SG_WIRE_VERSION, SG_MSG_AUTH};
    raw[25] = 129;   /* the device id length byte */
    memset(raw + 26, 'a', 129);
    CHECK_RC(sg_wire_decode(raw, 26 + 129, &h), SG_E_TOO_BIG);
    CHECK_RC(sg_wire_decode(raw, SG_WIRE_MAX_FRAME + 1, &h), SG_E_TOO_BIG);
}

static void test_auth(void)
{
    sg_wbuf_t w = frame(SG_MSG_AUTH, "d");
    sg_wire_auth_t a = {.method = SG_CRED_SAS, .credential = (const uint8_t *)"token", .credential_len = 5}, b;
    CHECK_RC(sg_wire_put_auth(&w, &a), SG_OK);
    sg_wire_hdr_t h;
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_auth(&h, &b), SG_OK);
    CHECK(b.method == SG_CRED_SAS && b.credential_len == 5 && memcmp(b.credential, "token", 5) == 0);
    /* trailing bytes and an unknown credential kind are refused */
    CHECK_RC(sg_wbuf_u8(&w, 0), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_auth(&h, &b), SG_E_MALFORMED);
    sg_wbuf_fini(&w);
    w = frame(SG_MSG_AUTH, "d");
    CHECK_RC(sg_wbuf_u8(&w, 9), SG_OK);
    CHECK_RC(sg_wbuf_str16(&w, "x", 1), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_auth(&h, &b), SG_E_MALFORMED);
    sg_wbuf_fini(&w);

    /* an X.509 chain: str16 DER items, 1 to SG_WIRE_MAX_CHAIN of them, none empty */
    {
        sg_wbuf_t c;
        sg_wbuf_init(&c, 1024);
        const uint8_t *ders[SG_WIRE_MAX_CHAIN];
        size_t lens[SG_WIRE_MAX_CHAIN], n;
        CHECK_RC(sg_wire_get_chain(c.data, 0, ders, lens, &n), SG_E_MALFORMED);
        CHECK_RC(sg_wire_put_cert(&c, (const uint8_t *)"leaf", 4), SG_OK);
        CHECK_RC(sg_wire_put_cert(&c, (const uint8_t *)"ca", 2), SG_OK);
        CHECK_RC(sg_wire_put_cert(&c, (const uint8_t *)"", 0), SG_E_MALFORMED);
        CHECK_RC(sg_wire_get_chain(c.data, c.len, ders, lens, &n), SG_OK);
        CHECK(n == 2 && lens[0] == 4 && memcmp(ders[0], "leaf", 4) == 0 && lens[1] == 2);
        CHECK_RC(sg_wire_get_chain(c.data, c.len - 1, ders, lens, &n), SG_E_TRUNCATED);
        CHECK_RC(sg_wbuf_u16(&c, 0), SG_OK);   /* an empty certificate */
        CHECK_RC(sg_wire_get_chain(c.data, c.len, ders, lens, &n), SG_E_MALFORMED);
        sg_wbuf_reset(&c);
        for (int i = 0; i <= SG_WIRE_MAX_CHAIN; i++)
            CHECK_RC(sg_wire_put_cert(&c, (const uint8_t *)"x", 1), SG_OK);
        CHECK_RC(sg_wire_get_chain(c.data, c.len, ders, lens, &n), SG_E_MALFORMED);
        sg_wbuf_fini(&c);
    }

    /* PSK_RES: a key of at most SG_WIRE_MAX_PSK bytes and nothing after */
    {
        uint8_t key[SG_WIRE_MAX_PSK + 1] = {1, 2, 3};
        const uint8_t *k;
        size_t kl;
        w = frame(SG_MSG_PSK_RES, "d");
        CHECK_RC(sg_wire_put_psk(&w, key, 3), SG_OK);
        CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
        CHECK_RC(sg_wire_get_psk(&h, &k, &kl), SG_OK);
        CHECK(kl == 3 && k[2] == 3);
        CHECK_RC(sg_wire_put_psk(&w, key, sizeof key), SG_E_TOO_BIG);
        CHECK_RC(sg_wbuf_u8(&w, 0), SG_OK);
        CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
        CHECK_RC(sg_wire_get_psk(&h, &k, &kl), SG_E_MALFORMED);
        sg_wbuf_fini(&w);
    }

    w = frame(SG_MSG_AUTH_RES, "d");
    sg_wire_auth_res_t r = {.expires = 2000000000, .generation = 3}, r2;
    CHECK_RC(sg_wire_put_auth_res(&w, &r), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_auth_res(&h, &r2), SG_OK);
    CHECK(r2.expires == 2000000000 && r2.generation == 3);
    CHECK_RC(sg_wire_decode(w.data, w.len - 1, &h), SG_OK);
    CHECK_RC(sg_wire_get_auth_res(&h, &r2), SG_E_TRUNCATED);
    sg_wbuf_fini(&w);
}

static void test_telemetry(void)
{
    sg_wbuf_t w = frame(SG_MSG_TELEMETRY, "dev");
    CHECK_RC(sg_wire_put_telemetry_head(&w, 77, 2), SG_OK);
    CHECK_RC(sg_wire_put_prop(&w, "a", 1, "1", 1), SG_OK);
    CHECK_RC(sg_wire_put_prop(&w, "$.ct", 4, "", 0), SG_OK);
    CHECK_RC(sg_wire_put_payload(&w, "hello", 5), SG_OK);
    sg_wire_hdr_t h;
    sg_wire_telemetry_t t;
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_telemetry(&h, &t), SG_OK);
    CHECK(t.packet_id == 77 && t.props.count == 2 && t.payload_len == 5 && memcmp(t.payload, "hello", 5) == 0);
    const char *k, *v;
    size_t kl, vl;
    CHECK(sg_wire_props_next(&t.props, &k, &kl, &v, &vl) && kl == 1 && *k == 'a' && vl == 1 && *v == '1');
    CHECK(sg_wire_props_next(&t.props, &k, &kl, &v, &vl) && kl == 4 && vl == 0);
    CHECK(!sg_wire_props_next(&t.props, &k, &kl, &v, &vl));

    /* a refusal names the publish (so its frontend can send it again); other refusals none */
    sg_wbuf_t e;
    sg_wbuf_init(&e, 256);
    sg_wire_hdr_t eh;
    uint8_t about;
    uint16_t pid = 1;
    bool named = false;
    CHECK_RC(sg_wire_put_error(&e, &h, SG_WIRE_ERR_BUSY), SG_OK);
    CHECK_RC(sg_wire_decode(e.data, e.len, &eh), SG_OK);
    CHECK_RC(sg_wire_get_error(&eh, &about, &pid, &named), SG_OK);
    CHECK(eh.type == SG_MSG_ERROR && eh.status == SG_WIRE_ERR_BUSY && about == SG_MSG_TELEMETRY && pid == 77 && named);
    sg_wbuf_fini(&e);
    sg_wbuf_t a = frame(SG_MSG_AUTH, "dev");
    sg_wire_hdr_t ah;
    CHECK_RC(sg_wire_decode(a.data, a.len, &ah), SG_OK);
    sg_wbuf_init(&e, 256);
    CHECK_RC(sg_wire_put_error(&e, &ah, SG_WIRE_ERR_BUSY), SG_OK);
    CHECK_RC(sg_wire_decode(e.data, e.len, &eh), SG_OK);
    CHECK_RC(sg_wire_get_error(&eh, &about, &pid, &named), SG_OK);
    CHECK(about == SG_MSG_AUTH && pid == 0 && !named);
    sg_wbuf_fini(&e);
    sg_wbuf_fini(&a);
    /* ...and a completion, by its delivery's packet id (sent again, the connection stays) */
    a = frame(SG_MSG_COMPLETE, "dev");
    CHECK_RC(sg_wire_put_pid(&a, 4242), SG_OK);
    CHECK_RC(sg_wire_decode(a.data, a.len, &ah), SG_OK);
    sg_wbuf_init(&e, 256);
    CHECK_RC(sg_wire_put_error(&e, &ah, SG_WIRE_ERR_BUSY), SG_OK);
    CHECK_RC(sg_wire_decode(e.data, e.len, &eh), SG_OK);
    CHECK_RC(sg_wire_get_error(&eh, &about, &pid, &named), SG_OK);
    CHECK(about == SG_MSG_COMPLETE && pid == 4242 && named);
    sg_wbuf_fini(&e);
    sg_wbuf_fini(&a);
    sg_wbuf_fini(&w);

    /* a property count larger than the pairs present, and an empty key, are refused */
    w = frame(SG_MSG_TELEMETRY, "dev");
    CHECK_RC(sg_wire_put_telemetry_head(&w, 1, 3), SG_OK);
    CHECK_RC(sg_wire_put_prop(&w, "a", 1, "1", 1), SG_OK);
    CHECK_RC(sg_wire_put_payload(&w, "x", 1), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK(sg_wire_get_telemetry(&h, &t) != SG_OK);
    sg_wbuf_fini(&w);
    w = frame(SG_MSG_TELEMETRY, "dev");
    CHECK_RC(sg_wire_put_telemetry_head(&w, 1, 1), SG_OK);
    CHECK_RC(sg_wire_put_prop(&w, "", 0, "1", 1), SG_OK);
    CHECK_RC(sg_wire_put_payload(&w, "x", 1), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_telemetry(&h, &t), SG_E_MALFORMED);
    sg_wbuf_fini(&w);
    /* a payload length pointing past the frame */
    w = frame(SG_MSG_TELEMETRY, "dev");
    CHECK_RC(sg_wire_put_telemetry_head(&w, 1, 0), SG_OK);
    CHECK_RC(sg_wbuf_u32(&w, 1000), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_telemetry(&h, &t), SG_E_TRUNCATED);
    sg_wbuf_fini(&w);
}

static void test_deliver_and_small_bodies(void)
{
    sg_wbuf_t w = frame(SG_MSG_DELIVER, "dev");
    sg_wire_deliver_t d = {.packet_id = 5, .delivery_count = 2, .enqueued_ms = 1000, .expires_ms = 2000,
                           .message_id = "m-1", .message_id_len = 3},
                      e;
    CHECK_RC(sg_wire_put_deliver_head(&w, &d, 1), SG_OK);
    CHECK_RC(sg_wire_put_prop(&w, "k", 1, "v", 1), SG_OK);
    CHECK_RC(sg_wire_put_payload(&w, "cmd", 3), SG_OK);
    sg_wire_hdr_t h;
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_deliver(&h, &e), SG_OK);
    CHECK(e.packet_id == 5 && e.delivery_count == 2 && e.enqueued_ms == 1000 && e.expires_ms == 2000);
    CHECK(e.message_id_len == 3 && memcmp(e.message_id, "m-1", 3) == 0 && e.props.count == 1);
    CHECK(e.payload_len == 3 && memcmp(e.payload, "cmd", 3) == 0);
    sg_wbuf_fini(&w);

    w = frame(SG_MSG_SUBSCRIBE, "dev");   /* (frame() sets flag 0x01: SG_WIRE_F_ANSWER for a SUBSCRIBE) */
    uint8_t chan, mode;
    uint16_t spid = 1;
    CHECK_RC(sg_wire_put_subscribe(&w, SG_CHAN_C2D, SG_SUB_QOS0), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_subscribe(&h, &chan, &mode, &spid), SG_E_TRUNCATED);   /* an answer asked, no pid */
    CHECK_RC(sg_wire_put_pid(&w, 513), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_subscribe(&h, &chan, &mode, &spid), SG_OK);
    CHECK(chan == SG_CHAN_C2D && mode == SG_SUB_QOS0 && spid == 513);
    h.flags = 0;   /* no answer asked: the pid is one byte pair too many */
    CHECK_RC(sg_wire_get_subscribe(&h, &chan, &mode, &spid), SG_E_MALFORMED);
    h.body_len -= 2;
    CHECK_RC(sg_wire_get_subscribe(&h, &chan, &mode, &spid), SG_OK);
    CHECK(chan == SG_CHAN_C2D && mode == SG_SUB_QOS0 && spid == 0);
    sg_wbuf_fini(&w);
    /* its answer names the pid */
    w = frame(SG_MSG_SUBSCRIBE, "dev");
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    sg_wbuf_t rw;
    sg_wbuf_init(&rw, 256);
    CHECK_RC(sg_frame_subscribe_res(&rw, &h, 0, 513), SG_OK);
    sg_wire_hdr_t rh;
    CHECK_RC(sg_wire_decode(rw.data, rw.len, &rh), SG_OK);
    CHECK_RC(sg_wire_get_pid(&rh, &spid), SG_OK);
    CHECK(rh.type == SG_MSG_SUBSCRIBE_RES && rh.corr == h.corr && rh.epoch == h.epoch && spid == 513);
    sg_wbuf_fini(&rw);
    sg_wbuf_fini(&w);
    w = frame(SG_MSG_SUBSCRIBE, "dev");
    CHECK_RC(sg_wire_put_subscribe(&w, 9, SG_SUB_QOS1), SG_OK);   /* unknown channel */
    CHECK_RC(sg_wire_put_pid(&w, 1), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_subscribe(&h, &chan, &mode, &spid), SG_E_MALFORMED);
    sg_wbuf_fini(&w);
    w = frame(SG_MSG_SUBSCRIBE, "dev");
    CHECK_RC(sg_wire_put_subscribe(&w, SG_CHAN_C2D, 3), SG_OK);   /* unknown mode */
    CHECK_RC(sg_wire_put_pid(&w, 1), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_subscribe(&h, &chan, &mode, &spid), SG_E_MALFORMED);
    sg_wbuf_fini(&w);

    w = frame(SG_MSG_ADMIN, "dev");
    uint16_t op;
    const char *json;
    size_t len;
    CHECK_RC(sg_wire_put_admin(&w, SG_ADM_MSG_ENQUEUE, "{}", 2), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_admin(&h, &op, &json, &len), SG_OK);
    CHECK(op == SG_ADM_MSG_ENQUEUE && len == 2 && sg_adm_op_writes(op) && !sg_adm_op_writes(SG_ADM_DEVICE_GET));
    CHECK(sg_adm_op_writes(SG_ADM_GROUP_COMMIT) && !sg_adm_op_writes(SG_ADM_TELEMETRY_READ) &&
          !sg_adm_op_writes(SG_ADM_DEADLETTER_LIST));
    CHECK(sg_group_valid("billing-2.eu_west", 17) && sg_group_valid("g", 1));
    CHECK(!sg_group_valid("", 0) && !sg_group_valid("a:b", 3) && !sg_group_valid("a/b", 3) &&
          !sg_group_valid("a b", 3) && !sg_group_valid("\xc3\xa9", 2) && !sg_group_valid("a\0b", 3));
    char long_group[SG_GROUP_MAX + 1];
    memset(long_group, 'g', sizeof long_group);
    CHECK(sg_group_valid(long_group, SG_GROUP_MAX) && !sg_group_valid(long_group, SG_GROUP_MAX + 1));
    sg_wbuf_fini(&w);
    w = frame(SG_MSG_ADMIN, "dev");
    CHECK_RC(sg_wire_put_admin(&w, SG_ADM_OP_MAX, "{}", 2), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_admin(&h, &op, &json, &len), SG_E_MALFORMED);
    sg_wbuf_fini(&w);

    w = frame(SG_MSG_HELLO, NULL);
    const char *name;
    CHECK_RC(sg_wire_put_name(&w, "fe-0/1/abc"), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_name(&h, &name, &len), SG_OK);
    CHECK(len == 10 && memcmp(name, "fe-0/1/abc", 10) == 0);
    sg_wbuf_fini(&w);

    w = frame(SG_MSG_TELEMETRY_ACK, "dev");
    uint16_t pid;
    CHECK_RC(sg_wire_put_pid(&w, 9), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_pid(&h, &pid), SG_OK);
    CHECK(pid == 9);
    sg_wbuf_fini(&w);
}

/* Direct methods: the call to the frontend and the device's answer round-trip; a name or rid
 * outside the method alphabet (topic separators, wildcards, a query), an empty or long one,
 * and trailing bytes are refused on both sides. */
static void test_methods(void)
{
    sg_wire_hdr_t h;
    sg_wire_method_t m = {.rid = "00ff00ff00ff00ff", .rid_len = 16, .name = "reboot.now", .name_len = 10,
                          .payload = (const uint8_t *)"{\"a\":1}", .payload_len = 7},
                     e;
    sg_wbuf_t w = frame(SG_MSG_METHOD, "dev");
    CHECK_RC(sg_wire_put_method(&w, &m), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK(h.type == SG_MSG_METHOD && strcmp(sg_wire_type_name(h.type), "METHOD") == 0);
    CHECK_RC(sg_wire_get_method(&h, &e), SG_OK);
    CHECK(e.rid_len == 16 && memcmp(e.rid, m.rid, 16) == 0 && e.name_len == 10 && memcmp(e.name, "reboot.now", 10) == 0);
    CHECK(e.payload_len == 7 && memcmp(e.payload, "{\"a\":1}", 7) == 0);
    /* a METHOD_RES body is not a METHOD body, nor the other way round */
    CHECK(sg_wire_get_method_res(&h, &e) != SG_OK);
    CHECK_RC(sg_wbuf_u8(&w, 0), SG_OK);   /* trailing byte */
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_method(&h, &e), SG_E_MALFORMED);
    sg_wbuf_fini(&w);

    w = frame(SG_MSG_METHOD_RES, "dev");
    m.status = -404;
    CHECK_RC(sg_wire_put_method_res(&w, &m), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK(strcmp(sg_wire_type_name(h.type), "METHOD_RES") == 0);
    CHECK_RC(sg_wire_get_method_res(&h, &e), SG_OK);
    CHECK(e.status == -404 && e.rid_len == 16 && e.name_len == 0 && e.payload_len == 7);
    sg_wbuf_fini(&w);
    w = frame(SG_MSG_METHOD_RES, "dev");   /* an empty body answers too (payload null) */
    m.payload_len = 0;
    CHECK_RC(sg_wire_put_method_res(&w, &m), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_method_res(&h, &e), SG_OK);
    CHECK(e.payload_len == 0 && e.status == -404);
    /* truncated anywhere */
    for (size_t cut = 1; cut < h.body_len; cut++) {
        sg_wire_hdr_t t = h;
        t.body_len = cut;
        CHECK(sg_wire_get_method_res(&t, &e) != SG_OK);
    }
    sg_wbuf_fini(&w);

    /* writers refuse what readers would */
    static const char *const bad[] = {"a/b", "a#", "a+b", "a?b", "a&b", "a b", "a%b", "\xc3\xa9", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(!sg_method_name_valid(bad[i], strlen(bad[i]), SG_METHOD_NAME_MAX));
        sg_wire_method_t b = m;
        b.name = bad[i];
        b.name_len = strlen(bad[i]);
        w = frame(SG_MSG_METHOD, "dev");
        CHECK_RC(sg_wire_put_method(&w, &b), SG_E_MALFORMED);
        sg_wbuf_fini(&w);
        b = m;
        b.rid = bad[i];
        b.rid_len = strlen(bad[i]);
        w = frame(SG_MSG_METHOD_RES, "dev");
        CHECK_RC(sg_wire_put_method_res(&w, &b), SG_E_MALFORMED);
        sg_wbuf_fini(&w);
    }
    CHECK(!sg_method_name_valid("a\0b", 3, SG_METHOD_NAME_MAX));
    CHECK(sg_method_name_valid("Az09-._~:@!$'()*,;=", 19, SG_METHOD_NAME_MAX));
    char longname[SG_METHOD_NAME_MAX + 1];
    memset(longname, 'n', sizeof longname);
    CHECK(sg_method_name_valid(longname, SG_METHOD_NAME_MAX, SG_METHOD_NAME_MAX) &&
          !sg_method_name_valid(longname, SG_METHOD_NAME_MAX + 1, SG_METHOD_NAME_MAX));
    /* a frame from a peer with a bad name is refused by the reader: the name written by hand */
    w = frame(SG_MSG_METHOD, "dev");
    CHECK_RC(sg_wbuf_str8(&w, "r", 1), SG_OK);
    CHECK_RC(sg_wbuf_str8(&w, "a/b", 3), SG_OK);
    CHECK_RC(sg_wbuf_str32(&w, "{}", 2), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_method(&h, &e), SG_E_MALFORMED);
    sg_wbuf_fini(&w);
    w = frame(SG_MSG_METHOD_RES, "dev");   /* an rid over SG_METHOD_RID_MAX */
    CHECK_RC(sg_wbuf_u32(&w, 200), SG_OK);
    CHECK_RC(sg_wbuf_str8(&w, longname, SG_METHOD_RID_MAX + 1), SG_OK);
    CHECK_RC(sg_wbuf_str32(&w, "{}", 2), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_method_res(&h, &e), SG_E_MALFORMED);
    sg_wbuf_fini(&w);

    /* the method channel subscribes at QoS 0 only */
    uint8_t chan, mode;
    uint16_t spid;
    w = frame(SG_MSG_SUBSCRIBE, "dev");
    CHECK_RC(sg_wire_put_subscribe(&w, SG_CHAN_METHODS, SG_SUB_QOS0), SG_OK);
    CHECK_RC(sg_wire_put_pid(&w, 3), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_subscribe(&h, &chan, &mode, &spid), SG_OK);
    CHECK(chan == SG_CHAN_METHODS && mode == SG_SUB_QOS0 && spid == 3);
    sg_wbuf_fini(&w);
    w = frame(SG_MSG_SUBSCRIBE, "dev");
    CHECK_RC(sg_wire_put_subscribe(&w, SG_CHAN_METHODS, SG_SUB_QOS1), SG_OK);
    CHECK_RC(sg_wire_put_pid(&w, 3), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_subscribe(&h, &chan, &mode, &spid), SG_E_MALFORMED);
    sg_wbuf_fini(&w);
    CHECK(sg_adm_op_writes(SG_ADM_METHOD_INVOKE));
}

static bool res_topic(const char *t, int32_t *status, char *rid)
{
    const char *r;
    size_t n;
    if (!sg_method_res_topic((const uint8_t *)t, strlen(t), status, &r, &n))
        return false;
    memcpy(rid, r, n);
    rid[n] = 0;
    return true;
}

/* The device's answer topic after "$iothub/methods/res/": what SDKs send is read, every other
 * shape is refused (the frontend closes the connection then). */
static void test_method_res_topic(void)
{
    int32_t st;
    char rid[256];
    CHECK(res_topic("200/?$rid=1f", &st, rid) && st == 200 && strcmp(rid, "1f") == 0);
    CHECK(res_topic("-1/?x=y&$rid=ab&z", &st, rid) && st == -1 && strcmp(rid, "ab") == 0);
    CHECK(res_topic("2147483647/?%24rid=r", &st, rid) && st == INT32_MAX && strcmp(rid, "r") == 0);
    CHECK(res_topic("-2147483648/?$rid=r", &st, rid) && st == INT32_MIN);
    CHECK(res_topic("0/?$rid=a/b", &st, rid) && strcmp(rid, "a/b") == 0);   /* shape only: the rid is checked later */
    static const char *const bad[] = {"", "200", "200/", "200/?", "200?$rid=1", "/?$rid=1", "-/?$rid=1", "x/?$rid=1",
                                      "2147483648/?$rid=1", "-2147483649/?$rid=1", "99999999999/?$rid=1",
                                      "200/?$rid=", "200/?rid=1", "200/x?$rid=1", "200/?$ri=1&$rid"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(!res_topic(bad[i], &st, rid));
}

/* Liveness bodies: a shard's incarnation in its PONG, every shard's in a router's PONG, one in
 * SHARD_STATE; short or long bodies are refused. */
static void test_incarnations(void)
{
    sg_wbuf_t w = frame(SG_MSG_PONG, NULL);
    sg_wire_hdr_t h;
    CHECK_RC(sg_wire_put_shard_pong(&w, "store-1", 0xabcdef0123456789ull), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    const char *name;
    size_t len;
    uint64_t inc = 0;
    CHECK_RC(sg_wire_get_shard_pong(&h, &name, &len, &inc), SG_OK);
    CHECK(len == 7 && memcmp(name, "store-1", 7) == 0 && inc == 0xabcdef0123456789ull);
    h.body_len--;
    CHECK_RC(sg_wire_get_shard_pong(&h, &name, &len, &inc), SG_E_TRUNCATED);
    sg_wbuf_fini(&w);

    uint64_t incs[3] = {11, 0, 33};
    w = frame(SG_MSG_PONG, NULL);
    CHECK_RC(sg_wire_put_router_pong(&w, 0x77, incs, 3), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    sg_wire_router_pong_t p;
    CHECK_RC(sg_wire_get_router_pong(&h, &p), SG_OK);
    CHECK(p.router == 0x77 && p.n == 3);
    uint64_t got[4] = {0};
    size_t n = 0;
    while (n < 4 && sg_wire_router_pong_next(&p, &got[n]))
        n++;
    CHECK(n == 3 && got[0] == 11 && got[1] == 0 && got[2] == 33);
    h.body_len -= 8;   /* n says 3, two follow */
    CHECK_RC(sg_wire_get_router_pong(&h, &p), SG_E_TRUNCATED);
    h.body_len += 9;   /* a byte too many */
    sg_wbuf_t longer = frame(SG_MSG_PONG, NULL);
    CHECK_RC(sg_wire_put_router_pong(&longer, 0x77, incs, 3), SG_OK);
    CHECK_RC(sg_wbuf_u8(&longer, 0), SG_OK);
    CHECK_RC(sg_wire_decode(longer.data, longer.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_router_pong(&h, &p), SG_E_MALFORMED);
    CHECK_RC(sg_wire_put_router_pong(&longer, 1, incs, SG_WIRE_MAX_SHARDS + 1), SG_E_TOO_BIG);
    sg_wbuf_fini(&longer);
    sg_wbuf_fini(&w);

    w = frame(SG_MSG_SHARD_STATE, NULL);
    CHECK_RC(sg_wire_put_u64(&w, 5), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_STR(sg_wire_type_name(h.type), "SHARD_STATE");
    CHECK_RC(sg_wire_get_u64(&h, &inc), SG_OK);
    CHECK(inc == 5);
    sg_wbuf_fini(&w);
}

/* Batches: items come back in order with their peers; one item goes out alone; the caps hold;
 * a damaged batch or a batch inside a batch is refused at that item. */
static void test_batch(void)
{
    sg_wire_batch_t b;
    sg_wire_batch_init(&b);
    sg_wbuf_t f1 = frame(SG_MSG_TELEMETRY, "dev-1"), f2 = frame(SG_MSG_COMPLETE, "dev-2");
    const uint8_t *out, *peer;
    size_t len, plen;

    /* one item: sent as it is, with its peer */
    CHECK_RC(sg_wire_batch_add(&b, "fe-0/1/x", 8, f1.data, f1.len), SG_OK);
    sg_wire_batch_out(&b, &out, &len, &peer, &plen);
    CHECK(len == f1.len && memcmp(out, f1.data, len) == 0);
    CHECK(plen == 8 && memcmp(peer, "fe-0/1/x", 8) == 0);

    /* more: one BATCH frame, read back item by item */
    CHECK_RC(sg_wire_batch_add(&b, NULL, 0, f2.data, f2.len), SG_OK);
    CHECK_RC(sg_wire_batch_add(&b, "p", 1, f1.data, f1.len), SG_OK);
    CHECK(b.n == 3);
    sg_wire_batch_out(&b, &out, &len, &peer, &plen);
    CHECK(plen == 0);
    sg_wire_hdr_t h;
    CHECK_RC(sg_wire_decode(out, len, &h), SG_OK);
    CHECK(h.type == SG_MSG_BATCH && h.device_len == 0);
    CHECK_STR(sg_wire_type_name(h.type), "BATCH");
    sg_cur_t c;
    const uint8_t *item;
    size_t ilen;
    sg_wire_batch_begin(&h, &c);
    CHECK_RC(sg_wire_batch_next(&c, &peer, &plen, &item, &ilen), SG_OK);
    CHECK(plen == 8 && ilen == f1.len && memcmp(item, f1.data, ilen) == 0);
    CHECK_RC(sg_wire_batch_next(&c, &peer, &plen, &item, &ilen), SG_OK);
    CHECK(plen == 0 && ilen == f2.len && memcmp(item, f2.data, ilen) == 0);
    CHECK_RC(sg_wire_batch_next(&c, &peer, &plen, &item, &ilen), SG_OK);
    CHECK(plen == 1 && peer[0] == 'p' && ilen == f1.len);
    CHECK_RC(sg_wire_batch_next(&c, &peer, &plen, &item, &ilen), SG_E_AGAIN);

    /* every truncation of the batch is refused at the item it cuts (never read past the end) */
    for (size_t n = h.body_len; n-- > 0;) {
        sg_wire_hdr_t t = h;
        t.body_len = n;
        sg_wire_batch_begin(&t, &c);
        sg_rc rc;
        int items = 0;
        while ((rc = sg_wire_batch_next(&c, &peer, &plen, &item, &ilen)) == SG_OK)
            items++;
        CHECK(rc == SG_E_TRUNCATED || (rc == SG_E_AGAIN && items < 3) || rc == SG_E_MALFORMED);
    }

    /* a batch inside a batch is refused */
    sg_wbuf_t inner;
    sg_wbuf_init(&inner, 1024);
    CHECK_RC(sg_wbuf_bytes(&inner, out, len), SG_OK);
    sg_wire_batch_clear(&b);
    CHECK(b.n == 0);
    CHECK_RC(sg_wire_batch_add(&b, NULL, 0, f1.data, f1.len), SG_OK);
    CHECK_RC(sg_wire_batch_add(&b, NULL, 0, inner.data, inner.len), SG_OK);
    sg_wire_batch_out(&b, &out, &len, &peer, &plen);
    CHECK_RC(sg_wire_decode(out, len, &h), SG_OK);
    sg_wire_batch_begin(&h, &c);
    CHECK_RC(sg_wire_batch_next(&c, &peer, &plen, &item, &ilen), SG_OK);
    CHECK_RC(sg_wire_batch_next(&c, &peer, &plen, &item, &ilen), SG_E_MALFORMED);

    /* caps: an item over SG_WIRE_BATCH_ITEM_MAX is not batchable; a full batch takes no more */
    CHECK(!sg_wire_batchable(0, SG_WIRE_BATCH_ITEM_MAX + 1));
    CHECK(!sg_wire_batchable(256, 10));
    static uint8_t big[SG_WIRE_BATCH_ITEM_MAX];
    memcpy(big, f1.data, f1.len);
    sg_wire_batch_clear(&b);
    int added = 0;
    while (sg_wire_batch_fits(&b, 0, sizeof big)) {
        CHECK_RC(sg_wire_batch_add(&b, NULL, 0, big, sizeof big), SG_OK);
        added++;
    }
    CHECK(added == (int)(SG_WIRE_BATCH_MAX / (SG_WIRE_BATCH_ITEM_MAX + 5)));
    CHECK(b.w.len <= SG_WIRE_BATCH_MAX);
    CHECK_RC(sg_wire_batch_add(&b, NULL, 0, big, sizeof big), SG_E_TOO_BIG);
    CHECK(b.n == (uint32_t)added);
    sg_wbuf_fini(&inner);
    sg_wbuf_fini(&f1);
    sg_wbuf_fini(&f2);
    sg_wire_batch_fini(&b);
}

/* INQUIRY and INQUIRY_RES round-trip; bad names, rids, statuses and lengths are refused. */
static void test_inquiry(void)
{
    sg_wbuf_t w = frame(SG_MSG_INQUIRY, "dev");
    sg_wire_inquiry_t q = {.packet_id = 7, .name = "getConfig", .name_len = 9, .rid = "42", .rid_len = 2,
                           .payload = (const uint8_t *)"{}", .payload_len = 2},
                      r;
    CHECK_RC(sg_wire_put_inquiry(&w, &q), SG_OK);
    sg_wire_hdr_t h;
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_inquiry(&h, &r), SG_OK);
    CHECK(r.packet_id == 7 && r.name_len == 9 && memcmp(r.name, "getConfig", 9) == 0 && r.rid_len == 2 &&
          memcmp(r.rid, "42", 2) == 0 && r.payload_len == 2 && memcmp(r.payload, "{}", 2) == 0);
    /* every cut of the body is truncated */
    for (size_t n = h.body_len; n-- > 0;) {
        sg_wire_hdr_t cut = h;
        cut.body_len = n;
        CHECK(sg_wire_get_inquiry(&cut, &r) != SG_OK);
    }
    /* a trailing byte: another format */
    CHECK_RC(sg_wbuf_u8(&w, 0), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_inquiry(&h, &r), SG_E_MALFORMED);
    sg_wbuf_fini(&w);

    /* the error naming a refused inquiry carries its packet id */
    w = frame(SG_MSG_INQUIRY, "dev");
    CHECK_RC(sg_wire_put_inquiry(&w, &q), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    sg_wbuf_t e;
    sg_wbuf_init(&e, 256);
    CHECK_RC(sg_wire_put_error(&e, &h, SG_WIRE_ERR_BUSY), SG_OK);
    sg_wire_hdr_t eh;
    uint8_t about;
    uint16_t pid;
    bool named;
    CHECK_RC(sg_wire_decode(e.data, e.len, &eh), SG_OK);
    CHECK_RC(sg_wire_get_error(&eh, &about, &pid, &named), SG_OK);
    CHECK(about == SG_MSG_INQUIRY && pid == 7 && named);
    sg_wbuf_fini(&e);
    sg_wbuf_fini(&w);

    const char *bad_names[] = {"", "res", "a/b", "a b", "a+b", "a#", "\xc3\xa9", "a$"};
    for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
        w = frame(SG_MSG_INQUIRY, "dev");
        sg_wire_inquiry_t b = q;
        b.name = bad_names[i];
        b.name_len = strlen(bad_names[i]);
        CHECK_RC(sg_wire_put_inquiry(&w, &b), SG_OK);
        CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
        CHECK_RC(sg_wire_get_inquiry(&h, &r), SG_E_MALFORMED);
        sg_wbuf_fini(&w);
    }
    char name[SG_INQUIRY_NAME_MAX + 1];
    memset(name, 'n', sizeof name);
    CHECK(sg_inquiry_name_valid(name, SG_INQUIRY_NAME_MAX) && !sg_inquiry_name_valid(name, SG_INQUIRY_NAME_MAX + 1));
    CHECK(sg_inquiry_name_valid("res2", 4) && sg_inquiry_name_valid("a.b_c-D9", 8) && !sg_inquiry_name_valid("a\0b", 3));
    CHECK(sg_inquiry_rid_valid("a~b.c_d-1", 9) && !sg_inquiry_rid_valid("", 0) && !sg_inquiry_rid_valid("a&b", 3) &&
          !sg_inquiry_rid_valid("a=b", 3) && !sg_inquiry_rid_valid("a/b", 3));
    /* a name too long for the reader's cap */
    w = frame(SG_MSG_INQUIRY, "dev");
    sg_wire_inquiry_t b = q;
    b.name = name;
    b.name_len = SG_INQUIRY_NAME_MAX + 1;
    CHECK_RC(sg_wire_put_inquiry(&w, &b), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    CHECK_RC(sg_wire_get_inquiry(&h, &r), SG_E_TOO_BIG);
    sg_wbuf_fini(&w);

    /* INQUIRY_RES: status in the header, 100-599 */
    const char *rid;
    const uint8_t *payload;
    size_t rid_len, len;
    w = frame(SG_MSG_INQUIRY_RES, "dev");
    CHECK_RC(sg_wire_put_inquiry_res(&w, "r-1", 3, "{\"a\":1}", 7), SG_OK);
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    h.status = 200;
    CHECK_RC(sg_wire_get_inquiry_res(&h, &rid, &rid_len, &payload, &len), SG_OK);
    CHECK(rid_len == 3 && memcmp(rid, "r-1", 3) == 0 && len == 7 && memcmp(payload, "{\"a\":1}", 7) == 0);
    h.status = 99;
    CHECK_RC(sg_wire_get_inquiry_res(&h, &rid, &rid_len, &payload, &len), SG_E_MALFORMED);
    h.status = 600;
    CHECK_RC(sg_wire_get_inquiry_res(&h, &rid, &rid_len, &payload, &len), SG_E_MALFORMED);
    h.status = 504;
    h.body_len--;
    CHECK_RC(sg_wire_get_inquiry_res(&h, &rid, &rid_len, &payload, &len), SG_E_TRUNCATED);
    sg_wbuf_fini(&w);
    w = frame(SG_MSG_INQUIRY_RES, "dev");
    CHECK_RC(sg_wire_put_inquiry_res(&w, "a/b", 3, "", 0), SG_OK);   /* a rid that would break the topic */
    CHECK_RC(sg_wire_decode(w.data, w.len, &h), SG_OK);
    h.status = 200;
    CHECK_RC(sg_wire_get_inquiry_res(&h, &rid, &rid_len, &payload, &len), SG_E_MALFORMED);
    sg_wbuf_fini(&w);
    CHECK(sg_adm_op_writes(SG_ADM_INQUIRY_CLAIM) && sg_adm_op_writes(SG_ADM_INQUIRY_WATCH) &&
          sg_adm_op_writes(SG_ADM_INQUIRY_ANSWER));
    CHECK_STR(sg_wire_type_name(SG_MSG_INQUIRY), "INQUIRY");
    CHECK_STR(sg_wire_type_name(SG_MSG_INQUIRY_RES), "INQUIRY_RES");
}

int main(void)
{
    test_inquiry();
    test_batch();
    test_incarnations();
    test_header();
    test_auth();
    test_telemetry();
    test_deliver_and_small_bodies();
    test_methods();
    test_method_res_topic();
    TEST_DONE();
}
