/* sim_hist_test.c — the simulator's histograms: bucket layout, percentiles against a sorted
 * reference, merging (by addition, equal to recording everything in one), interval deltas, and
 * the JSON form that slice reports are merged from (including refusing other layouts). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include "sg_test.h"
#include "sim_hist.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Relative error of a bucket's highest value against the exact value: under 1/128. */
static void check_close(uint64_t got, uint64_t want)
{
    double err = want ? fabs((double)got - (double)want) / (double)want : (double)got;
    if (err > 1.0 / 128 + 1e-9) {
        fprintf(stderr, "value %llu vs exact %llu: error %.4f\n", (unsigned long long)got, (unsigned long long)want, err);
        CHECK(0);
    }
}

static void test_layout(void)
{
    /* exact below 256, then every index maps back to a range containing the value */
    for (uint64_t v = 0; v < 256; v++) {
        CHECK(sim_hist_index(v) == v);
        CHECK(sim_hist_lowest_equivalent(sim_hist_index(v)) == v);
    }
    for (uint64_t v = 256; v < ((uint64_t)1 << 33); v = v * 3 / 2 + 7) {
        size_t i = sim_hist_index(v);
        CHECK(i < SIM_HIST_LEN);
        if (v <= SIM_HIST_MAX_VALUE) {
            CHECK(sim_hist_lowest_equivalent(i) <= v);
            CHECK(sim_hist_highest_equivalent(i) >= v);
        }
    }
    /* monotonic and contiguous: bucket i+1 starts right after bucket i ends */
    for (size_t i = 0; i + 1 < SIM_HIST_LEN; i++)
        CHECK(sim_hist_highest_equivalent(i) + 1 == sim_hist_lowest_equivalent(i + 1));
    CHECK(sim_hist_index(SIM_HIST_MAX_VALUE * 4) == sim_hist_index(SIM_HIST_MAX_VALUE));
}

static void test_percentiles(void)
{
    sim_hist_t *h = malloc(sizeof *h);
    enum { N = 100000 };
    uint64_t *v = malloc(N * sizeof *v);
    sim_hist_init(h);
    CHECK(sim_hist_percentile(h, 50) == 0);
    CHECK(sim_hist_count(h) == 0);
    srand(7);
    for (int i = 0; i < N; i++) {
        /* a long tail: mostly ~1 ms, some up to seconds */
        uint64_t x = 200 + (uint64_t)(rand() % 2000);
        if (i % 100 == 0)
            x = 100000 + (uint64_t)rand() % 3000000;
        v[i] = x;
        sim_hist_record(h, x);
    }
    qsort(v, N, sizeof *v, cmp_u64);
    double ps[] = {1, 50, 90, 99, 99.9, 100};
    for (size_t k = 0; k < sizeof ps / sizeof ps[0]; k++) {
        size_t rank = (size_t)ceil(ps[k] / 100.0 * N);
        check_close(sim_hist_percentile(h, ps[k]), v[rank - 1]);
    }
    CHECK(sim_hist_percentile(h, 100) == v[N - 1]);   /* capped at the recorded maximum */
    /* ranks in whole numbers: p99.9 of 1000 exact values is the 999th, not the 1000th */
    sim_hist_t *small = malloc(sizeof *small);
    sim_hist_init(small);
    for (uint64_t i = 1; i <= 1000; i++)
        sim_hist_record(small, i < 1000 ? 100 : 200);
    CHECK(sim_hist_percentile(small, 99.9) == 100);
    CHECK(sim_hist_percentile(small, 99.95) == 200);
    free(small);
    CHECK(sim_hist_count(h) == N);
    double sum = 0;
    for (int i = 0; i < N; i++)
        sum += (double)v[i];
    CHECK(fabs(sim_hist_mean(h) - sum / N) < 1e-6 * sum / N);
    free(v);
    free(h);
}

static void test_merge_and_delta(void)
{
    sim_hist_t *a = malloc(sizeof *a), *b = malloc(sizeof *b), *all = malloc(sizeof *all), *m = malloc(sizeof *m),
               *snap = malloc(sizeof *snap), *d = malloc(sizeof *d);
    sim_hist_init(a);
    sim_hist_init(b);
    sim_hist_init(all);
    sim_hist_init(m);
    for (uint64_t i = 1; i <= 5000; i++) {
        sim_hist_record(i % 3 ? a : b, i * 37);
        sim_hist_record(all, i * 37);
    }
    sim_hist_add(m, a);
    sim_hist_add(m, b);
    CHECK(sim_hist_count(m) == sim_hist_count(all));
    for (size_t i = 0; i < SIM_HIST_LEN; i++)
        CHECK(atomic_load(&m->counts[i]) == atomic_load(&all->counts[i]));
    CHECK(atomic_load(&m->min) == 37 && atomic_load(&m->max) == 5000 * 37);
    CHECK(sim_hist_percentile(m, 99) == sim_hist_percentile(all, 99));
    /* an interval: what was recorded after the snapshot */
    *snap = *a;
    for (int i = 0; i < 100; i++)
        sim_hist_record(a, 1000000);
    sim_hist_delta(d, a, snap);
    CHECK(sim_hist_count(d) == 100);
    check_close(sim_hist_percentile(d, 50), 1000000);
    free(a);
    free(b);
    free(all);
    free(m);
    free(snap);
    free(d);
}

static void test_json(void)
{
    sim_hist_t *h = malloc(sizeof *h), *back = malloc(sizeof *back);
    sim_hist_init(h);
    sim_hist_init(back);
    for (uint64_t i = 0; i < 1000; i++)
        sim_hist_record(h, i * i);
    json_t *j = sim_hist_to_json(h);
    CHECK(j != NULL);
    CHECK(json_integer_value(json_object_get(j, "count")) == 1000);
    CHECK(json_integer_value(json_object_get(j, "p99")) == (json_int_t)sim_hist_percentile(h, 99));
    /* through text, as merge reads files */
    char *text = json_dumps(j, JSON_COMPACT);
    json_t *again = json_loads(text, 0, NULL);
    CHECK_RC(sim_hist_add_json(back, again), SG_OK);
    CHECK_RC(sim_hist_add_json(back, again), SG_OK);   /* twice: counts add */
    CHECK(sim_hist_count(back) == 2000);
    CHECK(sim_hist_percentile(back, 50) == sim_hist_percentile(h, 50));
    CHECK(atomic_load(&back->max) == atomic_load(&h->max));
    /* another layout, bad indexes and negative counts are refused and change nothing */
    json_t *bad = json_deep_copy(again);
    json_object_set_new(bad, "layout", json_string("hdr/other"));
    CHECK_RC(sim_hist_add_json(back, bad), SG_E_INVALID);
    json_decref(bad);
    bad = json_pack("{s:s,s:[[i,i]]}", "layout", SIM_HIST_LAYOUT, "counts", (int)SIM_HIST_LEN, 1);
    CHECK_RC(sim_hist_add_json(back, bad), SG_E_MALFORMED);
    json_decref(bad);
    bad = json_pack("{s:s,s:[[i,i],[i,i]]}", "layout", SIM_HIST_LAYOUT, "counts", 3, 1, 4, -1);
    CHECK_RC(sim_hist_add_json(back, bad), SG_E_MALFORMED);
    json_decref(bad);
    bad = json_pack("{s:s,s:[[i]]}", "layout", SIM_HIST_LAYOUT, "counts", 3);
    CHECK_RC(sim_hist_add_json(back, bad), SG_E_MALFORMED);
    json_decref(bad);
    bad = json_pack("{s:s,s:i}", "layout", SIM_HIST_LAYOUT, "counts", 3);
    CHECK_RC(sim_hist_add_json(back, bad), SG_E_MALFORMED);
    json_decref(bad);
    CHECK(sim_hist_count(back) == 2000);
    free(text);
    json_decref(j);
    json_decref(again);
    free(h);
    free(back);
}

int main(void)
{
    test_layout();
    test_percentiles();
    test_merge_and_delta();
    test_json();
    TEST_DONE();
}
