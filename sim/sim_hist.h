/* sim_hist.h — latency histograms for the simulator: HdrHistogram's log-linear layout in a fixed
 * array (values in microseconds from 1 µs to 2^32 µs, about 71 minutes, at two significant
 * digits: every recorded value lands in a bucket no wider than 1/128 of its magnitude).
 * Histograms of the same layout merge by adding counts, so per-thread, per-process and
 * per-slice histograms combine exactly; percentiles are read from the merged counts, never
 * averaged. One thread records into a histogram while another may read it (the simulator's
 * parent reads workers' histograms in shared memory): counts are relaxed atomics, so a reader
 * sees each count whole, possibly a few records behind. */
#ifndef SIM_HIST_H
#define SIM_HIST_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "sg_result.h"

/* Layout: sub-buckets of 256 values (half of them new per bucket), 26 buckets up to 2^33. */
#define SIM_HIST_SUB_BITS 8
#define SIM_HIST_SUB_COUNT (1u << SIM_HIST_SUB_BITS)
#define SIM_HIST_HALF_BITS (SIM_HIST_SUB_BITS - 1)
#define SIM_HIST_HALF_COUNT (1u << SIM_HIST_HALF_BITS)
#define SIM_HIST_BUCKETS 26
#define SIM_HIST_LEN ((SIM_HIST_BUCKETS + 1) * SIM_HIST_HALF_COUNT)
#define SIM_HIST_MAX_VALUE ((uint64_t)1 << 32)   /* larger values are recorded as this */
/* Names the layout in JSON so that only compatible histograms are merged. */
#define SIM_HIST_LAYOUT "hdr-log-linear/us/sub256/buckets26"

typedef struct {
    _Atomic uint64_t total;
    _Atomic uint64_t sum;     /* of recorded values, for the mean */
    _Atomic uint64_t min;     /* UINT64_MAX while empty */
    _Atomic uint64_t max;
    _Atomic uint64_t counts[SIM_HIST_LEN];
} sim_hist_t;

void sim_hist_init(sim_hist_t *h);
/* Record one value (µs). Single writer per histogram. */
void sim_hist_record(sim_hist_t *h, uint64_t value_us);
/* Add every count of src into dst (dst may have a different writer than src; dst's own writer
 * must be the caller). */
void sim_hist_add(sim_hist_t *dst, const sim_hist_t *src);
/* dst = a - b (a taken after b from the same histogram): the records of an interval. min and
 * max of the interval are approximated from its lowest and highest non-empty buckets. */
void sim_hist_delta(sim_hist_t *dst, const sim_hist_t *a, const sim_hist_t *b);
uint64_t sim_hist_count(const sim_hist_t *h);
/* The value at percentile p (0-100]: the highest value equivalent to the bucket holding the
 * ceil(p% of count)-th record, capped at the maximum recorded; 0 when empty. */
uint64_t sim_hist_percentile(const sim_hist_t *h, double p);
double sim_hist_mean(const sim_hist_t *h);

/* Index <-> value helpers (exported for tests). */
size_t sim_hist_index(uint64_t value_us);
uint64_t sim_hist_lowest_equivalent(size_t index);
uint64_t sim_hist_highest_equivalent(size_t index);

/* JSON: {"unit":"us","layout":SIM_HIST_LAYOUT,"count","min","max","sum","mean","p50","p90",
 * "p99","p999","counts":[[index,count],...]} with only non-empty buckets listed (jansson
 * object, new reference; NULL when out of memory). */
struct json_t;
struct json_t *sim_hist_to_json(const sim_hist_t *h);
/* Add the counts of a JSON histogram (an object as written above) into h. SG_E_INVALID for
 * another layout, SG_E_MALFORMED for bad counts; h is unchanged then. */
SG_WUR sg_rc sim_hist_add_json(sim_hist_t *h, const struct json_t *obj);

#endif
