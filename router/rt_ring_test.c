/* rt_ring_test.c — unit test of the consistent-hash ring: balance over the default vnodes,
 * the consistent-hashing property when a shard is added or removed, independence from the
 * configured order, agreement with a brute-force reference, and NULL/0 arguments. */
#include "rt_ring.h"

#include <stdio.h>
#include <xxhash.h>

#include "sg_test.h"

#define N_IDS 1000000

static const char *const k_four[] = {"store-0", "store-1", "store-2", "store-3"};

static size_t device_id(int i, char *buf, size_t cap)
{
    return (size_t)snprintf(buf, cap, "device-%07d", i);
}

/* The name of the shard owning device i. */
static const char *owner(const rt_ring_t *ring, int i)
{
    char id[32];
    size_t len = device_id(i, id, sizeof id);
    return rt_ring_name(ring, rt_ring_lookup(ring, id, len));
}

/* (a) every shard of store-0..store-3 holds within 5% of an even share of 1,000,000 ids. */
static void test_balance(void)
{
    rt_ring_t *ring = rt_ring_new(k_four, 4, RT_RING_DEFAULT_VNODES);
    CHECK(ring);
    if (!ring)
        return;
    CHECK(rt_ring_size(ring) == 4);
    CHECK(rt_ring_vnodes(ring) == RT_RING_DEFAULT_VNODES);
    long count[4] = {0};
    char id[32];
    for (int i = 0; i < N_IDS; i++) {
        size_t s = rt_ring_lookup(ring, id, device_id(i, id, sizeof id));
        CHECK(s < 4);
        if (s < 4)
            count[s]++;
    }
    printf("balance: %d ids, %u vnodes:", N_IDS, RT_RING_DEFAULT_VNODES);
    for (int s = 0; s < 4; s++)
        printf(" %s=%ld (%+.2f%%)", k_four[s], count[s], (count[s] - N_IDS / 4.0) * 100.0 / (N_IDS / 4.0));
    printf("\n");
    for (int s = 0; s < 4; s++) {
        CHECK(count[s] >= 237500);
        CHECK(count[s] <= 262500);
    }
    rt_ring_destroy(&ring);
    CHECK(ring == NULL);
}

/* (b) adding store-4 moves about a fifth of the ids, and only onto store-4. */
static void test_add_shard(void)
{
    static const char *const five[] = {"store-0", "store-1", "store-2", "store-3", "store-4"};
    rt_ring_t *before = rt_ring_new(k_four, 4, RT_RING_DEFAULT_VNODES);
    rt_ring_t *after = rt_ring_new(five, 5, RT_RING_DEFAULT_VNODES);
    CHECK(before && after);
    if (before && after) {
        long moved = 0, moved_elsewhere = 0;
        for (int i = 0; i < N_IDS; i++) {
            const char *a = owner(before, i), *b = owner(after, i);
            if (strcmp(a, b) != 0) {
                moved++;
                if (strcmp(b, "store-4") != 0)
                    moved_elsewhere++;
            }
        }
        double fraction = (double)moved / N_IDS;
        printf("add store-4: moved %ld of %d ids (%.4f), %ld not to store-4\n", moved, N_IDS,
               fraction, moved_elsewhere);
        CHECK(fraction >= 0.15 && fraction <= 0.25);
        CHECK(moved_elsewhere == 0);
    }
    rt_ring_destroy(&before);
    rt_ring_destroy(&after);
}

/* (c) removing store-1 moves exactly the ids store-1 owned, and nothing else. */
static void test_remove_shard(void)
{
    static const char *const three[] = {"store-0", "store-2", "store-3"};
    rt_ring_t *before = rt_ring_new(k_four, 4, RT_RING_DEFAULT_VNODES);
    rt_ring_t *after = rt_ring_new(three, 3, RT_RING_DEFAULT_VNODES);
    CHECK(before && after);
    if (before && after) {
        long owned = 0, moved = 0, wrongly_moved = 0, stayed = 0;
        for (int i = 0; i < N_IDS; i++) {
            const char *a = owner(before, i), *b = owner(after, i);
            int was_removed = strcmp(a, "store-1") == 0;
            owned += was_removed;
            if (strcmp(a, b) != 0) {
                moved++;
                wrongly_moved += !was_removed;
            } else if (was_removed) {
                stayed++; /* impossible: store-1 is gone */
            }
        }
        printf("remove store-1: it owned %ld ids, %ld moved, %ld others moved\n", owned, moved,
               wrongly_moved);
        CHECK(owned > 0);
        CHECK(moved == owned);
        CHECK(wrongly_moved == 0);
        CHECK(stayed == 0);
    }
    rt_ring_destroy(&before);
    rt_ring_destroy(&after);
}

/* (d) indexes follow the configured order, but the name owning each key does not. */
static void test_order_independent(void)
{
    static const char *const reversed[] = {"store-3", "store-2", "store-1", "store-0"};
    static const char *const shuffled[] = {"store-2", "store-0", "store-3", "store-1"};
    rt_ring_t *a = rt_ring_new(k_four, 4, RT_RING_DEFAULT_VNODES);
    rt_ring_t *b = rt_ring_new(reversed, 4, RT_RING_DEFAULT_VNODES);
    rt_ring_t *c = rt_ring_new(shuffled, 4, RT_RING_DEFAULT_VNODES);
    CHECK(a && b && c);
    if (a && b && c) {
        CHECK_STR(rt_ring_name(b, 0), "store-3");
        CHECK_STR(rt_ring_name(c, 3), "store-1");
        long differ = 0;
        for (int i = 0; i < N_IDS; i++) {
            const char *na = owner(a, i);
            differ += strcmp(na, owner(b, i)) != 0 || strcmp(na, owner(c, i)) != 0;
        }
        printf("order: %ld of %d ids differ between orderings\n", differ, N_IDS);
        CHECK(differ == 0);
    }
    rt_ring_destroy(&a);
    rt_ring_destroy(&b);
    rt_ring_destroy(&c);
}

/* The ring as the header defines it, by linear scan: the point with the smallest hash >= h
 * (ties to the smaller name), else the smallest point overall. */
static const char *reference_owner(const char *const *names, size_t n, unsigned vnodes,
                                   const char *key)
{
    uint64_t h = XXH3_64bits(key, strlen(key));
    const char *best = NULL, *lowest = NULL;
    uint64_t best_h = 0, lowest_h = 0;
    for (size_t s = 0; s < n; s++) {
        for (unsigned v = 0; v < vnodes; v++) {
            char buf[64];
            int m = snprintf(buf, sizeof buf, "%s#%u", names[s], v);
            uint64_t p = XXH3_64bits(buf, (size_t)m);
            if (p >= h && (!best || p < best_h || (p == best_h && strcmp(names[s], best) < 0))) {
                best = names[s];
                best_h = p;
            }
            if (!lowest || p < lowest_h || (p == lowest_h && strcmp(names[s], lowest) < 0)) {
                lowest = names[s];
                lowest_h = p;
            }
        }
    }
    return best ? best : lowest;
}

/* The ring agrees with the reference; few points make wrap-around past the last point common. */
static void test_reference(void)
{
    static const char *const names[] = {"store-a", "store-b", "store-c"};
    static const unsigned vnodes_list[] = {1, 2, 16};
    for (size_t t = 0; t < sizeof vnodes_list / sizeof vnodes_list[0]; t++) {
        unsigned vnodes = vnodes_list[t];
        rt_ring_t *ring = rt_ring_new(names, 3, vnodes);
        CHECK(ring);
        if (!ring)
            continue;
        long mismatches = 0;
        for (int i = 0; i < 20000; i++) {
            char id[32];
            device_id(i, id, sizeof id);
            mismatches += strcmp(owner(ring, i), reference_owner(names, 3, vnodes, id)) != 0;
        }
        CHECK(mismatches == 0);
        rt_ring_destroy(&ring);
    }

    /* The empty key is a key like any other. */
    rt_ring_t *ring = rt_ring_new(names, 3, 16);
    CHECK(ring);
    CHECK(rt_ring_lookup(ring, "", 0) < 3);
    CHECK(rt_ring_lookup(ring, NULL, 0) == rt_ring_lookup(ring, "", 0));
    CHECK_STR(rt_ring_name(ring, rt_ring_lookup(ring, "", 0)), reference_owner(names, 3, 16, ""));
    rt_ring_destroy(&ring);
}

/* Names are copied: the caller's buffers may change or go away after rt_ring_new. */
static void test_names_copied(void)
{
    char n0[] = "store-0", n1[] = "store-1";
    const char *names[] = {n0, n1};
    rt_ring_t *ring = rt_ring_new(names, 2, 8);
    CHECK(ring);
    n0[6] = 'x';
    n1[0] = '\0';
    CHECK_STR(rt_ring_name(ring, 0), "store-0");
    CHECK_STR(rt_ring_name(ring, 1), "store-1");
    rt_ring_destroy(&ring);
}

/* (e) NULL and 0 arguments. */
static void test_bad_arguments(void)
{
    static const char *const with_null[] = {"store-0", NULL};
    static const char *const twice[] = {"store-0", "store-1", "store-0"};
    CHECK(rt_ring_new(NULL, 4, 128) == NULL);
    CHECK(rt_ring_new(k_four, 0, 128) == NULL);
    CHECK(rt_ring_new(k_four, 4, 0) == NULL);
    CHECK(rt_ring_new(with_null, 2, 128) == NULL);
    CHECK(rt_ring_new(twice, 3, 128) == NULL);

    CHECK(rt_ring_lookup(NULL, "device-1", 8) == RT_RING_NONE);
    CHECK(rt_ring_size(NULL) == 0);
    CHECK(rt_ring_vnodes(NULL) == 0);
    CHECK(rt_ring_name(NULL, 0) == NULL);

    rt_ring_t *ring = rt_ring_new(k_four, 4, 1);
    CHECK(ring);
    CHECK(rt_ring_lookup(ring, NULL, 5) == RT_RING_NONE);
    CHECK(rt_ring_name(ring, 4) == NULL);
    CHECK(rt_ring_name(ring, RT_RING_NONE) == NULL);
    CHECK_STR(rt_ring_name(ring, 3), "store-3");
    rt_ring_destroy(&ring);
    CHECK(ring == NULL);
    rt_ring_destroy(&ring); /* already NULL: no-op */
    rt_ring_destroy(NULL);
}

int main(void)
{
    test_balance();
    test_add_shard();
    test_remove_shard();
    test_order_independent();
    test_reference();
    test_names_copied();
    test_bad_arguments();
    TEST_DONE();
}
