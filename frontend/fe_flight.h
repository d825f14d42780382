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
    uint16_t pid;
    uint32_t at;          /* loop second it went to the shard */
} fe_flight_t;

/* Append pid sent at `at` (the caller keeps *n below the array's size). */
static inline void fe_flight_add(fe_flight_t *f, uint16_t *n, uint16_t pid, uint32_t at)
{
    f[(*n)++] = (fe_flight_t){pid, at};
}

/* Its acknowledgement came: take out the oldest entry with pid (a device may send one again
 * before the acknowledgement). False when pid is not waiting. f[0] stays the oldest. */
static inline bool fe_flight_remove(fe_flight_t *f, uint16_t *n, uint16_t pid)
{
    uint16_t k = 0;
    while (k < *n && f[k].pid != pid)
        k++;
    if (k == *n)
        return false;
    memmove(&f[k], &f[k + 1], (size_t)(*n - k - 1) * sizeof *f);
    (*n)--;
    return true;
}

#endif
