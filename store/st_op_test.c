/* st_op_test.c — a writer operation's bytes: views into the message it came in, copied out by
 * stw_op_move when it is kept for later (the message is released when the writer takes the next
 * one). The copy must carry the envelope and the frame, and the decoded header must point into
 * the copy, not into the message it came from. */
#include <stdlib.h>
#include <string.h>
#include "sg_test.h"
#include "st_writer_int.h"

/* A TELEMETRY frame of device `dev` whose body is `body`. */
static void frame_of(sg_wbuf_t *w, const char *dev, const char *body)
{
    sg_wire_hdr_t h = {.type = SG_MSG_TELEMETRY, .flags = SG_WIRE_F_QOS1, .corr = 7, .epoch = 9, .device = dev,
                       .device_len = strlen(dev)};
    CHECK_RC(sg_wire_encode_hdr(w, &h), SG_OK);
    CHECK_RC(sg_wbuf_bytes(w, body, strlen(body)), SG_OK);
}

/* An operation viewing the bytes of a received message (as recv_op makes it). */
static op_t view_of(const uint8_t *msg, size_t router_len, size_t peer_len, size_t frame_len)
{
    op_t op = {.router = msg, .router_len = router_len, .peer = msg + router_len, .peer_len = peer_len,
               .frame = msg + router_len + peer_len, .frame_len = frame_len};
    CHECK_RC(sg_wire_decode(op.frame, op.frame_len, &op.h), SG_OK);
    return op;
}

static void test_a_kept_view_is_copied_and_the_header_points_into_the_copy(void)
{
    sg_wbuf_t f;
    sg_wbuf_init(&f, 1024);
    frame_of(&f, "dev-1", "payload bytes");
    /* the received message: [router][peer][frame] back to back, as in one zmsg's frames */
    size_t rl = 8, pl = 6, n = rl + pl + f.len;
    uint8_t *msg = malloc(n);
    memcpy(msg, "router-0", rl);
    memcpy(msg + rl, "fe-0-0", pl);
    memcpy(msg + rl + pl, f.data, f.len);

    op_t op = view_of(msg, rl, pl, f.len), kept;
    CHECK(op.own == NULL);
    stw_op_move(&kept, &op);
    /* the source is empty: its caller's stw_op_free frees nothing */
    CHECK(op.own == NULL && op.frame == NULL && op.router == NULL && op.peer == NULL);
    CHECK(kept.own != NULL);
    /* the message goes (the writer takes the next one): the kept operation must not need it */
    memset(msg, 0xEE, n);
    free(msg);
    CHECK(kept.router_len == rl && memcmp(kept.router, "router-0", rl) == 0);
    CHECK(kept.peer_len == pl && memcmp(kept.peer, "fe-0-0", pl) == 0);
    CHECK(kept.frame_len == f.len && memcmp(kept.frame, f.data, f.len) == 0);
    CHECK(kept.h.type == SG_MSG_TELEMETRY && kept.h.corr == 7 && kept.h.epoch == 9);
    CHECK(kept.h.device_len == 5 && memcmp(kept.h.device, "dev-1", 5) == 0);
    CHECK((const uint8_t *)kept.h.device > kept.frame && (const uint8_t *)kept.h.device < kept.frame + kept.frame_len);
    CHECK(kept.h.body_len == strlen("payload bytes") && memcmp(kept.h.body, "payload bytes", kept.h.body_len) == 0);
    CHECK(kept.h.body >= kept.frame && kept.h.body + kept.h.body_len == kept.frame + kept.frame_len);

    /* moved again (a parked operation taken over once more): the same bytes, no second copy */
    uint8_t *own = kept.own;
    op_t again;
    stw_op_move(&again, &kept);
    CHECK(again.own == own && again.frame == own + rl + pl);
    CHECK(kept.own == NULL);
    stw_op_free(&kept);   /* empty: nothing to free */
    stw_op_free(&again);
    CHECK(again.own == NULL && again.frame == NULL);
    sg_wbuf_fini(&f);
}

static void test_an_envelope_without_a_peer_or_router(void)
{
    /* a session loaded from disk answers through any router: empty envelope parts are kept empty */
    sg_wbuf_t f;
    sg_wbuf_init(&f, 256);
    frame_of(&f, "d", "");
    op_t op = view_of(f.data, 0, 0, f.len), kept;
    stw_op_move(&kept, &op);
    CHECK(kept.own != NULL && kept.router_len == 0 && kept.peer_len == 0);
    CHECK(kept.frame_len == f.len && memcmp(kept.frame, f.data, f.len) == 0);
    CHECK(kept.h.body_len == 0 && kept.h.device_len == 1 && kept.h.device[0] == 'd');
    stw_op_free(&kept);
    sg_wbuf_fini(&f);
}

static void test_moving_an_empty_operation(void)
{
    /* a notification loaded from disk has no asker: moving and freeing nothing is harmless */
    op_t none = {0}, to;
    stw_op_move(&to, &none);
    CHECK(to.own == NULL && to.frame == NULL);
    stw_op_free(&to);
}

int main(void)
{
    test_a_kept_view_is_copied_and_the_header_points_into_the_copy();
    test_an_envelope_without_a_peer_or_router();
    test_moving_an_empty_operation();
    TEST_DONE();
}
