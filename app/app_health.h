/* app_health.h — /healthz and /readyz for the frontend, router and store processes, so
 * Kubernetes can probe every tier over HTTP (libmicrohttpd, one small thread). /healthz answers
 * 200 while the process runs; /readyz asks the tier (503 with the reason when it is not ready).
 * Cluster-wide readiness (every shard reachable) is the admin tier's /readyz. */
#ifndef APP_HEALTH_H
#define APP_HEALTH_H
#include <stdbool.h>
#include <stddef.h>

typedef struct app_health app_health_t;

/* Called on the probe thread: true when ready; otherwise false with a reason in why. */
typedef bool (*app_health_ready_fn)(void *arg, char *why, size_t why_len);

/* NULL when port is 0 (off) or the port cannot be bound (logged). ready may be NULL: always
 * ready once started. */
app_health_t *app_health_new(const char *bind, int port, const char *tier, app_health_ready_fn ready, void *arg);
void app_health_destroy(app_health_t **self_p);

#endif
