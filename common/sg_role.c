/* sg_role.c — see sg_role.h. Least privilege: a frontend pod faces the internet, so its key
 * opens the device frames only; operator frames (ADMIN, RING) need the admin's key. */
#include "sg_role.h"
#include <stddef.h>
#include <string.h>
#include "sg_wire.h"

#define FE (1u << SG_ROLE_FRONTEND)
#define ADM (1u << SG_ROLE_ADMIN)
#define RT (1u << SG_ROLE_ROUTER)

/* Who may send each frame type upstream: to a router (frontends, admins) or through a router to
 * a shard (RT: a router relays what frontends and admins sent it and adds its own frames).
 * Frames that only flow downstream (answers, pushes) are listed by nobody. ONE LINE PER TYPE. */
static const uint8_t k_may_send[SG_MSG_TYPE_MAX] = {
    [SG_MSG_AUTH] = FE | RT,
    [SG_MSG_SESSION_END] = FE | RT,
    [SG_MSG_TELEMETRY] = FE | RT,
    [SG_MSG_SUBSCRIBE] = FE | RT,
    [SG_MSG_COMPLETE] = FE | RT,
    [SG_MSG_METHOD_RES] = FE | RT,   /* a device's answer to a direct method */
    [SG_MSG_PSK] = FE | RT,          /* a TLS handshake's pre-shared key, looked up in the device's shard */
    [SG_MSG_HELLO] = FE | RT,      /* a frontend (re)booted; a router announcing itself */
    [SG_MSG_PING] = FE | RT,       /* a frontend loop's heartbeat; a router's probe */
    [SG_MSG_BATCH] = FE | RT,      /* each item is checked on its own */
    [SG_MSG_ADMIN] = ADM | RT,
    [SG_MSG_RING] = ADM,           /* answered by the router itself */
    [SG_MSG_PEER_GONE] = RT,
    [SG_MSG_ALIVE] = RT,
    [SG_MSG_INQUIRY] = FE | RT,
};

static const char *const k_names[SG_ROLE_MAX] = {
    [SG_ROLE_NONE] = "none",         [SG_ROLE_FRONTEND] = "frontend", [SG_ROLE_ROUTER] = "router",
    [SG_ROLE_STORE] = "store",       [SG_ROLE_ADMIN] = "admin",       [SG_ROLE_CLUSTER] = "cluster",
    [SG_ROLE_LOCAL] = "local",
};

const char *sg_role_name(sg_role_t role)
{
    return (unsigned)role < SG_ROLE_MAX ? k_names[role] : "none";
}

sg_role_t sg_role_parse(const char *name, size_t len)
{
    for (int r = SG_ROLE_FRONTEND; name && r < SG_ROLE_MAX; r++)
        if (strlen(k_names[r]) == len && memcmp(k_names[r], name, len) == 0)
            return (sg_role_t)r;
    return SG_ROLE_NONE;
}

bool sg_role_may_send(sg_role_t role, uint8_t type)
{
    if (role == SG_ROLE_CLUSTER || role == SG_ROLE_LOCAL)
        return true;
    if (type >= SG_MSG_TYPE_MAX || (unsigned)role >= SG_ROLE_MAX || role == SG_ROLE_NONE)
        return false;
    return (k_may_send[type] & (1u << role)) != 0;
}

sg_role_t sg_role_upstream(sg_role_t role)
{
    switch (role) {
    case SG_ROLE_FRONTEND:
    case SG_ROLE_ADMIN:
        return SG_ROLE_ROUTER;
    case SG_ROLE_ROUTER:
        return SG_ROLE_STORE;
    default:
        return SG_ROLE_NONE;
    }
}

bool sg_role_may_connect(sg_role_t client, sg_role_t server)
{
    if (client == SG_ROLE_CLUSTER || server == SG_ROLE_CLUSTER)
        return client == server;   /* the shared key admits only itself */
    return client != SG_ROLE_NONE && sg_role_upstream(client) == server;
}
