/* app_health.h — /healthz and /readyz for the frontend, router and store processes, so
 * Kubernetes can probe every tier over HTTP (libmicrohttpd, one small thread). Both answer 200
 * once the process has started its tier; cluster readiness is the admin tier's /readyz. */
#ifndef APP_HEALTH_H
#define APP_HEALTH_H

typedef struct app_health app_health_t;

/* NULL when port is 0 (off) or the port cannot be bound (logged). */
app_health_t *app_health_new(const char *bind, int port, const char *tier);
void app_health_destroy(app_health_t **self_p);

#endif
