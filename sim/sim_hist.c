/* sim_hist.c — HdrHistogram-layout latency histograms; see sim_hist.h.
 * Hand-rolled rather than linking libhdr_histogram: Debian 12 does not package the C library,
 * and the simulator needs the counts in a fixed array it can place in shared memory. The index
 * arithmetic follows HdrHistogram's (unit 1 µs, sub-bucket magnitude 8). */
#include "sim_hist.h"
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define STORE(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)

void sim_hist_init(sim_hist_t *h)
{
    memset(h, 0, sizeof *h);
    STORE(h->min, UINT64_MAX);
}

size_t sim_hist_index(uint64_t v)
{
    if (v > SIM_HIST_MAX_VALUE)
        v = SIM_HIST_MAX_VALUE;
    /* the bucket: how far above the first sub-bucket range the value's top bit lies */
    int pow2ceil = 64 - __builtin_clzll(v | (SIM_HIST_SUB_COUNT - 1));
    int bucket = pow2ceil - (SIM_HIST_HALF_BITS + 1);
    size_t sub = (size_t)(v >> bucket);
    return ((size_t)(bucket + 1) << SIM_HIST_HALF_BITS) + (sub - SIM_HIST_HALF_COUNT);
}

static void split(size_t index, int *bucket, size_t *sub)
{
    int b = (int)(index >> SIM_HIST_HALF_BITS) - 1;
    size_t s = (index & (SIM_HIST_HALF_COUNT - 1)) + SIM_HIST_HALF_COUNT;
    if (b < 0) {
        s -= SIM_HIST_HALF_COUNT;
        b = 0;
    }
    *bucket = b;
    *sub = s;
}

uint64_t sim_hist_lowest_equivalent(size_t index)
{
    int b;
    size_t s;
    split(index, &b, &s);
    return (uint64_t)s << b;
}

uint64_t sim_hist_highest_equivalent(size_t index)
{
    int b;
    size_t s;
    split(index, &b, &s);
    return ((uint64_t)s << b) + ((uint64_t)1 << b) - 1;
}

void sim_hist_record(sim_hist_t *h, uint64_t v)
{
    if (v > SIM_HIST_MAX_VALUE)
        v = SIM_HIST_MAX_VALUE;
    size_t i = sim_hist_index(v);
    /* single writer: load + store is enough (no lock prefix on the hot path) */
    STORE(h->counts[i], LOAD(h->counts[i]) + 1);
    STORE(h->total, LOAD(h->total) + 1);
    STORE(h->sum, LOAD(h->sum) + v);
    if (v < LOAD(h->min))
        STORE(h->min, v);
    if (v > LOAD(h->max))
        STORE(h->max, v);
}

void sim_hist_add(sim_hist_t *dst, const sim_hist_t *src)
{
    for (size_t i = 0; i < SIM_HIST_LEN; i++) {
        uint64_t c = LOAD(src->counts[i]);
        if (c)
            STORE(dst->counts[i], LOAD(dst->counts[i]) + c);
    }
    STORE(dst->total, LOAD(dst->total) + LOAD(src->total));
    STORE(dst->sum, LOAD(dst->sum) + LOAD(src->sum));
    if (LOAD(src->min) < LOAD(dst->min))
        STORE(dst->min, LOAD(src->min));
    if (LOAD(src->max) > LOAD(dst->max))
        STORE(dst->max, LOAD(src->max));
}

void sim_hist_delta(sim_hist_t *dst, const sim_hist_t *a, const sim_hist_t *b)
{
    sim_hist_init(dst);
    uint64_t total = 0;
    size_t lo = SIZE_MAX, hi = 0;
    for (size_t i = 0; i < SIM_HIST_LEN; i++) {
        uint64_t ca = LOAD(a->counts[i]), cb = LOAD(b->counts[i]);
        uint64_t c = ca > cb ? ca - cb : 0;
        STORE(dst->counts[i], c);
        total += c;
        if (c) {
            if (lo == SIZE_MAX)
                lo = i;
            hi = i;
        }
    }
    /* total from the counts themselves: the writer may be between two stores */
    STORE(dst->total, total);
    uint64_t sa = LOAD(a->sum), sb = LOAD(b->sum);
    STORE(dst->sum, sa > sb ? sa - sb : 0);
    if (total) {
        uint64_t mn = sim_hist_lowest_equivalent(lo), mx = sim_hist_highest_equivalent(hi);
        if (mx > LOAD(a->max))
            mx = LOAD(a->max);
        if (mn < LOAD(a->min))
            mn = LOAD(a->min);
        STORE(dst->min, mn);
        STORE(dst->max, mx);
    }
}

uint64_t sim_hist_count(const sim_hist_t *h) { return LOAD(h->total); }

uint64_t sim_hist_percentile(const sim_hist_t *h, double p)
{
    uint64_t total = 0;
    for (size_t i = 0; i < SIM_HIST_LEN; i++)
        total += LOAD(h->counts[i]);
    if (total == 0)
        return 0;
    if (p > 100)
        p = 100;
    /* the rank, in integers: p/100*total in floating point can land just above a whole
     * number (99.9% of 1000 is 999.0000000000001) and take the next record */
    uint64_t milli = (uint64_t)llround(p * 1000.0);   /* percentile in thousandths of a percent */
    unsigned __int128 scaled = (unsigned __int128)milli * total;
    uint64_t want = (uint64_t)((scaled + 100000 - 1) / 100000);
    if (want == 0)
        want = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < SIM_HIST_LEN; i++) {
        seen += LOAD(h->counts[i]);
        if (seen >= want) {
            uint64_t v = sim_hist_highest_equivalent(i), mx = LOAD(h->max);
            return v > mx ? mx : v;
        }
    }
    return LOAD(h->max);
}

double sim_hist_mean(const sim_hist_t *h)
{
    uint64_t n = LOAD(h->total);
    return n ? (double)LOAD(h->sum) / (double)n : 0.0;
}

json_t *sim_hist_to_json(const sim_hist_t *h)
{
    uint64_t n = sim_hist_count(h), mn = LOAD(h->min);
    json_t *counts = json_array();
    for (size_t i = 0; counts && i < SIM_HIST_LEN; i++) {
        uint64_t c = LOAD(h->counts[i]);
        if (c)
            json_array_append_new(counts, json_pack("[I,I]", (json_int_t)i, (json_int_t)c));
    }
    return json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:f,s:I,s:I,s:I,s:I,s:o*}", "unit", "us", "layout", SIM_HIST_LAYOUT,
                     "count", (json_int_t)n, "min", (json_int_t)(n ? mn : 0), "max", (json_int_t)LOAD(h->max), "sum",
                     (json_int_t)LOAD(h->sum), "mean", sim_hist_mean(h), "p50",
                     (json_int_t)sim_hist_percentile(h, 50), "p90", (json_int_t)sim_hist_percentile(h, 90), "p99",
                     (json_int_t)sim_hist_percentile(h, 99), "p999", (json_int_t)sim_hist_percentile(h, 99.9),
                     "counts", counts);
}

sg_rc sim_hist_add_json(sim_hist_t *h, const json_t *obj)
{
    const char *layout = json_string_value(json_object_get(obj, "layout"));
    json_t *counts = json_object_get(obj, "counts");
    SG_ENSURE(layout && strcmp(layout, SIM_HIST_LAYOUT) == 0, SG_E_INVALID);
    SG_ENSURE(json_is_array(counts), SG_E_MALFORMED);
    /* validate everything before adding anything, so a bad histogram changes nothing */
    size_t i;
    json_t *pair;
    uint64_t total = 0;
    json_array_foreach(counts, i, pair) {
        json_t *ji = json_array_get(pair, 0), *jc = json_array_get(pair, 1);
        SG_ENSURE(json_array_size(pair) == 2 && json_is_integer(ji) && json_is_integer(jc), SG_E_MALFORMED);
        SG_ENSURE(json_integer_value(ji) >= 0 && json_integer_value(ji) < (json_int_t)SIM_HIST_LEN, SG_E_MALFORMED);
        SG_ENSURE(json_integer_value(jc) >= 0, SG_E_MALFORMED);
        total += (uint64_t)json_integer_value(jc);
    }
    json_array_foreach(counts, i, pair) {
        size_t k = (size_t)json_integer_value(json_array_get(pair, 0));
        STORE(h->counts[k], LOAD(h->counts[k]) + (uint64_t)json_integer_value(json_array_get(pair, 1)));
    }
    STORE(h->total, LOAD(h->total) + total);
    json_t *js = json_object_get(obj, "sum"), *jmin = json_object_get(obj, "min"), *jmax = json_object_get(obj, "max");
    if (json_is_integer(js) && json_integer_value(js) > 0)
        STORE(h->sum, LOAD(h->sum) + (uint64_t)json_integer_value(js));
    if (total && json_is_integer(jmin) && (uint64_t)json_integer_value(jmin) < LOAD(h->min))
        STORE(h->min, (uint64_t)json_integer_value(jmin));
    if (total && json_is_integer(jmax) && (uint64_t)json_integer_value(jmax) > LOAD(h->max))
        STORE(h->max, (uint64_t)json_integer_value(jmax));
    return SG_OK;
}
