/* fe_frontend.h — the frontend tier: terminates TLS from devices, speaks the IoT Hub MQTT
 * dialect, and relays everything that needs state to the shards through the routers.
 * One event-loop thread per core, each with its own SO_REUSEPORT listener, its own epoll loop
 * and its own ZeroMQ DEALER to the routers (routing id "{name}/{thread}/{boot}"), so threads
 * share nothing but the TLS context. */
#ifndef FE_FRONTEND_H
#define FE_FRONTEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sg_config.h"

typedef struct fe_frontend fe_frontend_t;

/* Start frontend `name` relaying to the comma-separated router endpoints `routers`.
 * Listens on frontend.bind:frontend.mqtt_port and frontend.bind:frontend.ws_port. NULL with a log line on failure. */
fe_frontend_t *fe_frontend_new(const sg_config_t *cfg, const char *name, const char *routers);
void fe_frontend_destroy(fe_frontend_t **self_p);
/* The MQTT/TLS port actually bound. */
int fe_frontend_mqtt_port(const fe_frontend_t *self);
/* The MQTT-over-WebSocket-over-TLS port actually bound (frontend.ws_port; fe_ws.h). */
int fe_frontend_ws_port(const fe_frontend_t *self);
/* Read frontend.cert and frontend.key (and frontend.ticket_keys) again (SIGHUP) and use them for
 * new connections; open connections keep the certificate they were made with. A file that cannot be used leaves the
 * current certificate in place, logged as an error, and gives false. Any thread. */
bool fe_frontend_reload_tls(fe_frontend_t *self, const char *why);
/* Connections currently open (all threads). */
uint64_t fe_frontend_connections(const fe_frontend_t *self);
/* Readiness (an app_health_ready_fn): every event loop has heard from its router lately, so a
 * device that connects here can be authenticated. */
bool fe_frontend_ready(void *self, char *why, size_t why_len);

#endif
