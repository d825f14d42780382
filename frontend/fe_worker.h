/* fe_worker.h — starting and stopping one frontend event-loop thread (see fe_internal.h). */
#ifndef FE_WORKER_H
#define FE_WORKER_H

#include "fe_internal.h"

/* Starts the thread. listen_fd is the thread's own SO_REUSEPORT listener, ws_fd its listener on
 * the MQTT-over-WebSocket port (-1: none) (the worker closes nothing it was given: the frontend
 * owns listen_fd, ws_fd and tls). */
fe_worker_t *fe_worker_new(int index, const fe_settings_t *set, fe_tls_t *tls, int listen_fd, int ws_fd, const char *peer_id,
                           const char *routers, int hwm, _Atomic uint32_t *open);
/* Stops the thread (closing its connections first) and frees it. */
void fe_worker_destroy(fe_worker_t **self_p);

#endif
