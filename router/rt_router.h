/* rt_router.h — the router tier: a stateless relay between frontends/admins and shards.
 * Frontends and admins connect DEALER sockets to its ROUTER; it sends each frame to the shard
 * that owns the frame's device on the consistent-hash ring (or to an explicitly addressed
 * shard), and sends what shards answer or push back to the peer named in the envelope. It
 * probes every shard once a second and reports which are reachable. */
#ifndef RT_ROUTER_H
#define RT_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include "sg_config.h"

typedef struct rt_router rt_router_t;

/* Start router `name` bound at `bind` relaying to the shards of cluster.shards. NULL (and a log
 * line) when the configuration is invalid or the endpoint cannot be bound. */
rt_router_t *rt_router_new(const sg_config_t *cfg, const char *name, const char *bind);
void rt_router_destroy(rt_router_t **self_p);
const char *rt_router_endpoint(const rt_router_t *self);
/* Readiness (an app_health_ready_fn): at least one shard answered a probe within the last 3 s,
 * so the router's links work. Not "every shard": a shard restarting would make every router
 * unready at once and take the whole Service down with it; GET /v1/cluster (and the admin's
 * /readyz) say which shards are reachable. */
bool rt_router_ready(void *self, char *why, size_t why_len);

/* Parse cluster.shards / cluster.shard_endpoint into n names and endpoints (malloc'd arrays of
 * malloc'd strings; free with rt_shard_list_free). Entries are "name" or "name=endpoint". */
int rt_shard_list(const sg_config_t *cfg, char ***names, char ***endpoints, size_t *n);
void rt_shard_list_free(char **names, char **endpoints, size_t n);

#endif
