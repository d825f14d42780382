/* rt_ring.h — consistent-hash ring from device id to storage shard.
 * Each shard contributes vnodes points, hashed with XXH3-64 over "{shard name}#{i}", so every
 * router (and the admin) computes the same ring from the configured shard names alone. A device
 * maps to the first point clockwise from XXH3-64(device id). Shards are referred to by their
 * index in the configured list (which is also their telemetry partition number). */
#ifndef RT_RING_H
#define RT_RING_H

#include <stddef.h>
#include <stdint.h>

typedef struct rt_ring rt_ring_t;

/* A shard's share of keys deviates from even by about 1/sqrt(vnodes): 128 left store-0..store-3
 * up to 7.6% off over 1,000,000 device ids (256 and 512 still up to 8%); 1024 keeps 2 to 16
 * shards within 5% (4 shards: 3%) for 16 bytes a point. */
#define RT_RING_DEFAULT_VNODES 1024

/* Returned by rt_ring_lookup when there is no ring to look in. */
#define RT_RING_NONE SIZE_MAX

/* names: n shard names (copied). Returns NULL on allocation failure, n == 0, vnodes == 0, a NULL
 * name, or a name listed twice (two shards with one name would share every point). */
rt_ring_t *rt_ring_new(const char *const *names, size_t n, unsigned vnodes);
void rt_ring_destroy(rt_ring_t **self_p);
/* Index of the shard owning key (len bytes); RT_RING_NONE when self is NULL, or key is NULL with
 * len > 0. Points with equal hashes are ordered by shard name, so the owner does not depend on
 * the order the names were configured in. */
size_t rt_ring_lookup(const rt_ring_t *self, const void *key, size_t len);
size_t rt_ring_size(const rt_ring_t *self);
const char *rt_ring_name(const rt_ring_t *self, size_t index);
unsigned rt_ring_vnodes(const rt_ring_t *self);
/* rt_ring_size and rt_ring_vnodes return 0 and rt_ring_name returns NULL for a NULL ring;
 * rt_ring_name also returns NULL for an index >= rt_ring_size. */

#endif
