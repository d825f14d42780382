/* fe_flight.h — the QoS 1 publishes of one connection that went to the shard and wait for their
 * durable acknowledgement, in the order they went. The ack timeout runs per publish, from when it
 * went out: a publish lost in a shard that died must not hide behind the acknowledgements of later
 * ones (each of which used to restart a single per-connection timer). The array holds at most the
 * in-flight window; the connection allocates it only while publishes wait. */
#ifndef FE_FLIGHT_H
#define FE_FLIGHT_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint8_t *frame;       /* the wire frame as it went, to send again if a tier refused it (BUSY) */
    uint32_t len;
    uint32_t at;          /* loop second it first went to the shard (the ack timeout runs from it) */
    uint32_t retry_at;    /* loop millisecond to send it again, 0 while it is not refused */
    uint16_t pid;
    uint8_t refusals;     /* times a tier refused it (the wait before the next try doubles) */
    bool acked;           /* durable; its PUBACK waits for the ones before it */
} fe_flight_t;

/* Append pid sent at `at` with its frame (the caller keeps *n below the array's size). */
static inline void fe_flight_add(fe_flight_t *f, uint16_t *n, uint16_t pid, uint32_t at, uint8_t *frame,
                                 uint32_t len)
{
    f[(*n)++] = (fe_flight_t){.frame = frame, .len = len, .at = at, .pid = pid};
}

/* The oldest entry with pid not acknowledged yet (a device may send one again before the
 * acknowledgement), or NULL. */
static inline fe_flight_t *fe_flight_find(fe_flight_t *f, uint16_t n, uint16_t pid)
{
    for (uint16_t k = 0; k < n; k++)
        if (f[k].pid == pid && !f[k].acked)
            return &f[k];
    return NULL;
}

/* Take out the oldest entry into *out if it is acknowledged: PUBACKs leave in the order the
 * publishes came (MQTT 3.1.1 4.6), also when a refused one was sent again after later ones.
 * Its frame is the caller's to free. f[0] stays the oldest. */
static inline bool fe_flight_pop_acked(fe_flight_t *f, uint16_t *n, fe_flight_t *out)
{
    if (*n == 0 || !f[0].acked)
        return false;
    *out = f[0];
    memmove(f, f + 1, (size_t)(*n - 1) * sizeof *f);
    (*n)--;
    return true;
}

#endif
