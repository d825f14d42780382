/* adm_deadline.h — the admin endpoint's deadline for request headers. A connection that has not
 * sent a complete request line and headers within the limit after it was accepted (or, kept
 * alive, after its previous answer) is shut down. libmicrohttpd's own timeout counts idleness, which
 * a client trickling a byte every few seconds never reaches (slowloris); this one counts wall time.
 * The TLS handshake, if any, falls under it too. One thread looks at the waiting connections four
 * times a second; libmicrohttpd's threads only mark connections waiting or not. */
#ifndef ADM_DEADLINE_H
#define ADM_DEADLINE_H

#include <microhttpd.h>
#include <stdint.h>

typedef struct adm_deadline adm_deadline_t;

/* NULL with a log line on failure (no thread). */
adm_deadline_t *adm_deadline_new(int64_t timeout_ms);
/* Call after the HTTP daemon has stopped (its last close notifications come from there). */
void adm_deadline_destroy(adm_deadline_t **self_p);

/* MHD_OPTION_NOTIFY_CONNECTION callback, cls = the deadline: every connection is watched from
 * accept, and forgotten on close (before libmicrohttpd closes its socket, so the socket the
 * deadline shuts down is always that connection's). */
void adm_deadline_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                         enum MHD_ConnectionNotificationCode toe);

/* conn's request headers are complete: no deadline until adm_deadline_rearm. */
void adm_deadline_headers_done(adm_deadline_t *self, struct MHD_Connection *conn);
/* conn's request is over; its next request's headers are due within the limit from now. */
void adm_deadline_rearm(adm_deadline_t *self, struct MHD_Connection *conn);

#endif
