/* adm_bridge.h — the admin tier's link to the routers: an actor that owns the DEALER socket,
 * gives every outgoing frame a fresh correlation id, matches answers (and timeouts) to the
 * waiting HTTP request, and calls the request's done callback once every part is answered.
 * Submissions come from the HTTP threads over one inproc socket, which a mutex hands to one
 * thread at a time. The only other thing shared is what the routers report about the ring (shard
 * count, and the ring itself, behind a mutex), so the HTTP threads can address a device's shard
 * explicitly (streamed imports). */
#ifndef ADM_BRIDGE_H
#define ADM_BRIDGE_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>
#include "sg_result.h"

typedef struct adm_bridge adm_bridge_t;

/* One answered part: HTTP-like status and the JSON text (malloc'd, owned by the request); or,
 * with page set, the body of a compact telemetry page for the request to render (sg_page.h). */
typedef struct {
    int status;
    char *json;
    size_t len;
    bool page;
} adm_part_t;

typedef void (*adm_done_fn)(void *arg);

adm_bridge_t *adm_bridge_new(const char *routers, const char *name, int hwm);
/* Stop talking to the cluster: every request waiting for it is answered 504 Timeout (its outcome
 * unknown: a write may have been applied), one not sent yet 503 Unavailable, and later
 * submissions fail at once (503). The HTTP server may still call submit until it is stopped;
 * then destroy. */
void adm_bridge_stop(adm_bridge_t *self);
void adm_bridge_destroy(adm_bridge_t **self_p);

/* Send frames[0..n) (wire frames; their corr is overwritten) and fill parts[0..n) as answers
 * come, or with status 504 at the deadline; then call done(arg) from the bridge thread.
 * Safe from any thread (submissions are serialised). Takes the frames on success. */
SG_WUR sg_rc adm_bridge_submit(adm_bridge_t *self, zframe_t **frames, adm_part_t *parts, int n, int64_t timeout_ms,
                               adm_done_fn done, void *arg);

/* As adm_bridge_submit, but a part the cluster refuses as busy (a shard's or router's queue is
 * full: nothing was applied) is sent again after 20 ms, doubling up to 1 s, until its deadline;
 * only then is it answered, as 503 {"error":"Busy"}. */
SG_WUR sg_rc adm_bridge_submit_retrying(adm_bridge_t *self, zframe_t **frames, adm_part_t *parts, int n,
                                        int64_t timeout_ms, adm_done_fn done, void *arg);

/* As adm_bridge_submit, but done at the first answer (or the first part's deadline): the other
 * parts stay unanswered (status 0) and their answers, when they come, are dropped. For waits on
 * several shards where any one of them is news (GET /v1/inquiries). */
SG_WUR sg_rc adm_bridge_submit_any(adm_bridge_t *self, zframe_t **frames, adm_part_t *parts, int n, int64_t timeout_ms,
                                   adm_done_fn done, void *arg);

/* Number of shards the routers last reported (0 until the first answer). */
int adm_bridge_shards(const adm_bridge_t *self);

/* Partition index of the shard owning device id (len bytes) on the ring the routers last
 * reported (built from their shard names and vnodes, as every router builds it), or -1 while no
 * router has answered. Safe from any thread. */
int adm_bridge_shard_of(adm_bridge_t *self, const char *id, size_t len);

/* An ADMIN frame: op with a JSON body, to device id's shard (shard SG_WIRE_SHARD_BY_DEVICE) or
 * to an explicit partition (id NULL). NULL when it does not fit in a frame. */
zframe_t *adm_bridge_admin_frame(const char *id, uint32_t shard, uint16_t op, const char *json, size_t len);

#endif
