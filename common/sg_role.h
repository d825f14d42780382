/* sg_role.h — the roles of a cluster's processes and which frames each may send upstream.
 * A router learns the role of every peer from its CURVE key (sg_curve: the ZAP handler puts the
 * role of the key's certificate into the connection's User-Id) and a shard does the same for
 * routers; both pass each frame (each item of a BATCH) through sg_role_may_send before acting on
 * it. The table is in sg_role.c, one line per frame type: a new frame type is refused from
 * everyone until its line says who may send it. */
#ifndef SG_ROLE_H
#define SG_ROLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    SG_ROLE_NONE = 0,   /* unknown: may send nothing */
    SG_ROLE_FRONTEND,
    SG_ROLE_ROUTER,
    SG_ROLE_STORE,
    SG_ROLE_ADMIN,
    SG_ROLE_CLUSTER,    /* the shared key of clusters set up before per-tier keys: everything */
    SG_ROLE_LOCAL,      /* no CURVE (inproc:// in `sacgate all`, cluster.insecure): everything */
    SG_ROLE_MAX
} sg_role_t;

/* "frontend", "router", "store", "admin", "cluster", "local"; "none" for anything else. */
const char *sg_role_name(sg_role_t role);
/* The role named by len bytes at name (not NUL-terminated); SG_ROLE_NONE when it names none. */
sg_role_t sg_role_parse(const char *name, size_t len);

/* May a peer of this role send a frame of this type to a router (or, role router, to a shard)? */
bool sg_role_may_send(sg_role_t role, uint8_t type);

/* The role a process of role `server` admits at the CURVE handshake (frontends and admins at a
 * router, routers at a shard; nobody at a frontend or admin, which only connect out). */
bool sg_role_may_connect(sg_role_t client, sg_role_t server);

/* The role of the server a process of this role connects to (router for frontends and admins,
 * store for routers); SG_ROLE_NONE for the others. */
sg_role_t sg_role_upstream(sg_role_t role);

#endif
