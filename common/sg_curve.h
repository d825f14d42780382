/* sg_curve.h — CURVE security for the inter-tier ZeroMQ links of a cluster (czmq zcert/zauth).
 * Every process of a cluster holds the cluster's certificate (public + secret key, written by
 * `sacgate init` into DIR/curve/). Servers (router front, shard sockets) run as CURVE servers
 * with that key and a ZAP handler (zauth) that admits only clients presenting a public key found
 * in the certificate's directory; clients encrypt with the same key pair. Frames are then
 * encrypted and only holders of the cluster secret can talk to a router or a shard.
 * Off until sg_curve_init is called (inproc:// links in `sacgate all` need none). */
#ifndef SG_CURVE_H
#define SG_CURVE_H

#include <czmq.h>
#include <stdbool.h>
#include "sg_result.h"

/* Load the certificate at cert_path (its secret in cert_path + "_secret") and start the ZAP
 * handler admitting the public keys of the certificates in its directory. Once per process. */
SG_WUR sg_rc sg_curve_init(const char *cert_path);
void sg_curve_shutdown(void);
bool sg_curve_enabled(void);

/* Configure a socket before bind/connect. No-ops when CURVE is off. */
void sg_curve_server(zsock_t *sock);
void sg_curve_client(zsock_t *sock);

/* Write a new cluster certificate as dir/cluster.cert and dir/cluster.cert_secret (0600) unless
 * it exists. */
SG_WUR sg_rc sg_curve_make(const char *dir);

#endif
