/* rt_ring.c — consistent-hash ring from device id to storage shard; see rt_ring.h.
 * The ring is a sorted array of (XXH3-64 point, shard) built once from the configured names;
 * a lookup is one hash and one binary search, with no allocation and no locking. */
#include "rt_ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

typedef struct {
    uint64_t hash;
    uint32_t shard; /* index in the configured list */
    uint32_t rank;  /* position of the shard's name in byte order: the tie-breaker */
} rt_point_t;

struct rt_ring {
    char **names;
    size_t n;
    unsigned vnodes;
    rt_point_t *points;
    size_t npoints;
};

typedef struct {
    const char *name;
    uint32_t index;
} rt_named_t;

static int named_cmp(const void *a, const void *b)
{
    return strcmp(((const rt_named_t *)a)->name, ((const rt_named_t *)b)->name);
}

/* Equal hashes are ordered by shard name, not by configured position, so every process puts
 * the same shard first whatever order its configuration lists the shards in. */
static int point_cmp(const void *a, const void *b)
{
    const rt_point_t *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return (x->rank > y->rank) - (x->rank < y->rank);
}

/* Fills rank[i] with the position of names[i] in sorted order. Fails (returns -1) on a
 * duplicate name: two shards with one name would share every point and one would never own
 * a key. */
static int rank_names(const char *const *names, size_t n, uint32_t *rank)
{
    rt_named_t *sorted = malloc(n * sizeof *sorted);
    if (!sorted)
        return -1;
    for (size_t i = 0; i < n; i++)
        sorted[i] = (rt_named_t){names[i], (uint32_t)i};
    qsort(sorted, n, sizeof *sorted, named_cmp);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(sorted[i - 1].name, sorted[i].name) == 0)
            rc = -1;
        rank[sorted[i].index] = (uint32_t)i;
    }
    free(sorted);
    return rc;
}

/* Hashes "{name}#{i}" for every vnode of one shard into points. */
static int add_points(rt_point_t *points, const char *name, uint32_t shard, uint32_t rank,
                      unsigned vnodes)
{
    size_t len = strlen(name);
    size_t cap = len + sizeof "#4294967295";
    char *buf = malloc(cap);
    if (!buf)
        return -1;
    memcpy(buf, name, len);
    for (unsigned i = 0; i < vnodes; i++) {
        int m = snprintf(buf + len, cap - len, "#%u", i);
        points[i] = (rt_point_t){XXH3_64bits(buf, len + (size_t)m), shard, rank};
    }
    free(buf);
    return 0;
}

rt_ring_t *rt_ring_new(const char *const *names, size_t n, unsigned vnodes)
{
    if (!names || n == 0 || vnodes == 0 || n > UINT32_MAX || n > SIZE_MAX / vnodes ||
        n * vnodes > SIZE_MAX / sizeof(rt_point_t))
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!names[i])
            return NULL;

    rt_ring_t *self = calloc(1, sizeof *self);
    uint32_t *rank = malloc(n * sizeof *rank);
    if (!self || !rank)
        goto fail;
    self->vnodes = vnodes;
    self->npoints = n * vnodes;
    self->names = calloc(n, sizeof *self->names);
    self->points = malloc(self->npoints * sizeof *self->points);
    if (!self->names || !self->points)
        goto fail;
    self->n = n; /* set once names[] is allocated so destroy frees what exists */
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        self->names[i] = malloc(len + 1);
        if (!self->names[i])
            goto fail;
        memcpy(self->names[i], names[i], len + 1);
    }
    if (rank_names(names, n, rank) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (add_points(self->points + i * vnodes, names[i], (uint32_t)i, rank[i], vnodes) != 0)
            goto fail;
    qsort(self->points, self->npoints, sizeof *self->points, point_cmp);
    free(rank);
    return self;

fail:
    free(rank);
    rt_ring_destroy(&self);
    return NULL;
}

void rt_ring_destroy(rt_ring_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    rt_ring_t *self = *self_p;
    for (size_t i = 0; i < self->n; i++)
        free(self->names[i]);
    free(self->names);
    free(self->points);
    free(self);
    *self_p = NULL;
}

size_t rt_ring_lookup(const rt_ring_t *self, const void *key, size_t len)
{
    if (!self || (!key && len > 0))
        return RT_RING_NONE;
    uint64_t h = XXH3_64bits(key, len);
    /* First point with hash >= h; equal hashes are already in name order, so the lowest
     * index among them is the agreed owner. */
    size_t lo = 0, hi = self->npoints;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (self->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == self->npoints)
        lo = 0; /* past the last point: wrap around to the first */
    return self->points[lo].shard;
}

size_t rt_ring_size(const rt_ring_t *self) { return self ? self->n : 0; }

const char *rt_ring_name(const rt_ring_t *self, size_t index)
{
    return self && index < self->n ? self->names[index] : NULL;
}

unsigned rt_ring_vnodes(const rt_ring_t *self) { return self ? self->vnodes : 0; }
