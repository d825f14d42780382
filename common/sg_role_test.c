/* sg_role_test.c — the role table: a frontend's key opens the device frames only, an admin's the
 * operator frames, a router's what it relays plus its own; answers and pushes (which only flow
 * downstream) and unknown types are refused from everyone; who may connect to whom. */
#include <string.h>
#include "sg_role.h"
#include "sg_test.h"
#include "sg_wire.h"

static const uint8_t k_device[] = {SG_MSG_AUTH,     SG_MSG_SESSION_END, SG_MSG_TELEMETRY, SG_MSG_SUBSCRIBE,
                                   SG_MSG_COMPLETE, SG_MSG_HELLO,       SG_MSG_PING,      SG_MSG_BATCH,
                                   SG_MSG_METHOD_RES, SG_MSG_INQUIRY, SG_MSG_PSK};
static const uint8_t k_downstream[] = {SG_MSG_AUTH_RES, SG_MSG_KICK,    SG_MSG_TELEMETRY_ACK, SG_MSG_DELIVER,
                                       SG_MSG_ADMIN_RES, SG_MSG_RING_RES, SG_MSG_PONG,         SG_MSG_ERROR,
                                       SG_MSG_SHARD_STATE, SG_MSG_INQUIRY_RES, SG_MSG_METHOD, SG_MSG_PSK_RES,
                                       SG_MSG_SUBSCRIBE_RES};

static bool in(const uint8_t *list, size_t n, uint8_t t)
{
    return memchr(list, t, n) != NULL;
}

static void test_frontend(void)
{
    for (uint8_t t = 1; t < SG_MSG_TYPE_MAX; t++)
        CHECK(sg_role_may_send(SG_ROLE_FRONTEND, t) == in(k_device, sizeof k_device, t));
    /* the frames a compromised frontend would want: refused */
    CHECK(!sg_role_may_send(SG_ROLE_FRONTEND, SG_MSG_ADMIN));
    CHECK(!sg_role_may_send(SG_ROLE_FRONTEND, SG_MSG_RING));
    CHECK(!sg_role_may_send(SG_ROLE_FRONTEND, SG_MSG_PEER_GONE));
    CHECK(!sg_role_may_send(SG_ROLE_FRONTEND, SG_MSG_ALIVE));
}

static void test_admin_router_store(void)
{
    for (uint8_t t = 1; t < SG_MSG_TYPE_MAX; t++) {
        CHECK(sg_role_may_send(SG_ROLE_ADMIN, t) == (t == SG_MSG_ADMIN || t == SG_MSG_RING));
        /* a router relays frontends' and admins' frames (not RING: it answers that itself) */
        bool relayed = (in(k_device, sizeof k_device, t) || t == SG_MSG_ADMIN || t == SG_MSG_PEER_GONE ||
                        t == SG_MSG_ALIVE);
        CHECK(sg_role_may_send(SG_ROLE_ROUTER, t) == relayed);
        CHECK(!sg_role_may_send(SG_ROLE_STORE, t));
        CHECK(!sg_role_may_send(SG_ROLE_NONE, t));
        if (in(k_downstream, sizeof k_downstream, t))
            CHECK(!sg_role_may_send(SG_ROLE_FRONTEND, t) && !sg_role_may_send(SG_ROLE_ADMIN, t) &&
                  !sg_role_may_send(SG_ROLE_ROUTER, t));
    }
    /* out of range: never */
    CHECK(!sg_role_may_send(SG_ROLE_ROUTER, 0));
    CHECK(!sg_role_may_send(SG_ROLE_ROUTER, SG_MSG_TYPE_MAX));
    CHECK(!sg_role_may_send(SG_ROLE_FRONTEND, 255));
    CHECK(!sg_role_may_send((sg_role_t)99, SG_MSG_TELEMETRY));
    /* the shared key of old and links without CURVE: everything, as before */
    CHECK(sg_role_may_send(SG_ROLE_CLUSTER, SG_MSG_ADMIN) && sg_role_may_send(SG_ROLE_LOCAL, SG_MSG_RING));
}

static void test_connect_and_names(void)
{
    CHECK(sg_role_may_connect(SG_ROLE_FRONTEND, SG_ROLE_ROUTER));
    CHECK(sg_role_may_connect(SG_ROLE_ADMIN, SG_ROLE_ROUTER));
    CHECK(sg_role_may_connect(SG_ROLE_ROUTER, SG_ROLE_STORE));
    CHECK(!sg_role_may_connect(SG_ROLE_FRONTEND, SG_ROLE_STORE));   /* straight to a shard: no */
    CHECK(!sg_role_may_connect(SG_ROLE_ADMIN, SG_ROLE_STORE));
    CHECK(!sg_role_may_connect(SG_ROLE_STORE, SG_ROLE_ROUTER));
    CHECK(!sg_role_may_connect(SG_ROLE_ROUTER, SG_ROLE_ROUTER));
    CHECK(!sg_role_may_connect(SG_ROLE_NONE, SG_ROLE_ROUTER));
    CHECK(!sg_role_may_connect(SG_ROLE_CLUSTER, SG_ROLE_ROUTER));   /* the old key at a new router */
    CHECK(!sg_role_may_connect(SG_ROLE_FRONTEND, SG_ROLE_CLUSTER)); /* a new key at an old-mode tier */
    CHECK(sg_role_may_connect(SG_ROLE_CLUSTER, SG_ROLE_CLUSTER));
    CHECK(sg_role_upstream(SG_ROLE_FRONTEND) == SG_ROLE_ROUTER && sg_role_upstream(SG_ROLE_ROUTER) == SG_ROLE_STORE);
    CHECK(sg_role_upstream(SG_ROLE_STORE) == SG_ROLE_NONE);
    for (int r = SG_ROLE_FRONTEND; r < SG_ROLE_MAX; r++) {
        const char *n = sg_role_name((sg_role_t)r);
        CHECK((int)sg_role_parse(n, strlen(n)) == r);
    }
    CHECK(sg_role_parse("front", 5) == SG_ROLE_NONE);
    CHECK(sg_role_parse("frontendx", 9) == SG_ROLE_NONE);
    CHECK(sg_role_parse("none", 4) == SG_ROLE_NONE);
    CHECK(sg_role_parse(NULL, 0) == SG_ROLE_NONE);
    CHECK(sg_role_parse("", 0) == SG_ROLE_NONE);
    CHECK_STR(sg_role_name((sg_role_t)77), "none");
}

int main(void)
{
    test_frontend();
    test_admin_router_store();
    test_connect_and_names();
    TEST_DONE();
}
