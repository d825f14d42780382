/* sg_curve.h — CURVE security for the inter-tier ZeroMQ links of a cluster (czmq zcert).
 * Each tier has its own key pair: `sacgate init` writes DIR/curve/{frontend,router,store,admin}.cert
 * (public key, metadata role = the tier) with a `_secret` beside each (0600), and the public
 * halves alone into DIR/curve/public/. A process loads only its own secret (cluster.curve_cert,
 * where {role} stands for its tier) and the public certificates (cluster.curve_public, by default
 * the `public` directory beside it). Servers (router front, shard sockets) run a ZAP handler
 * that admits a client only when its key is in a public certificate whose role may connect here
 * (frontends and admins at routers, routers at shards) and hands that role to every message the
 * connection brings (its User-Id): routers and shards then check each frame against the role's
 * frames (sg_role.h). Clients take the server's key from the public certificate of its role.
 *
 * A certificate without a role (the cluster.cert of clusters set up before per-tier keys) runs
 * the process in the shared-key mode of then: every holder of that key may send every frame.
 * Off until sg_curve_init is called (inproc:// links in `sacgate all` need none). */
#ifndef SG_CURVE_H
#define SG_CURVE_H

#include <czmq.h>
#include <stdbool.h>
#include "sg_result.h"
#include "sg_role.h"

/* Load this process's certificate (cert_path with {role} replaced by self's name; its secret at
 * that path + "_secret"), the public key of the server it connects to from public_dir (NULL or
 * "": the `public` directory beside the certificate) and, for routers and stores, start the ZAP
 * handler over public_dir. SG_E_INVALID with a log line saying what is missing or wrong. Once
 * per process. */
SG_WUR sg_rc sg_curve_init(const char *cert_path, const char *public_dir, sg_role_t self);
void sg_curve_shutdown(void);
bool sg_curve_enabled(void);

/* Configure a socket before bind/connect. No-ops when CURVE is off. */
void sg_curve_server(zsock_t *sock);
void sg_curve_client(zsock_t *sock);

/* The role of the peer whose message carried this User-Id property (NULL: none):
 * SG_ROLE_LOCAL when CURVE is off, SG_ROLE_NONE when the id names no role. */
sg_role_t sg_curve_peer_role(const char *user_id);

/* Write a key pair per tier into dir (dir/ROLE.cert, dir/ROLE.cert_secret 0600) and the public
 * certificates into dir/public/ROLE.cert, keeping every one that exists. */
SG_WUR sg_rc sg_curve_make(const char *dir);

#endif
