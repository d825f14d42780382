/* sim_summary.h — what a run measured, as the JSON summary every report is built from (the
 * schema is in docs/simulator.md), the one-screen text summary, and the merge of several
 * slices' summaries into one (counters summed, histograms merged bucket by bucket, series
 * aligned on wall-clock seconds). */
#ifndef SIM_SUMMARY_H
#define SIM_SUMMARY_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include "sg_result.h"
#include "sim_opts.h"
#include "sim_stats.h"

/* One second of the run. Percentiles are of that second's records only (NAN: none). */
typedef struct {
    double t;                     /* seconds since the start */
    int64_t online, connecting;
    double connects_ps, published_ps, acked_ps, commands_ps, telemetry_ps, drops_ps, failures_ps;
    double connect_p50_ms, connect_p99_ms, puback_p50_ms, puback_p99_ms;
    double sim_rss_mb, sim_cpu_pct;
    double server_rss_mb, server_cpu_pct;   /* NAN without server processes */
} sim_sample_t;

typedef struct {
    int processes;
    uint64_t start_rss;           /* at the first sample */
    uint64_t peak_rss;
    uint64_t rss_at_peak_online;  /* at the (last) sample with the most sessions online */
    uint64_t start_pss;           /* the same as proportional set sizes (shared pages counted once) */
    uint64_t pss_at_peak_online;
    double cpu_seconds;
    int64_t pids[64];             /* server: the processes seen (first 64) */
    int n_pids;
} sim_resources_t;

typedef struct {
    const sim_opts_t *o;
    int64_t started_real_ms, ended_real_ms;
    double seconds;
    uint64_t c[SIM_C_COUNT];
    int64_t g[SIM_G_COUNT];       /* at the end of the run phase, before goodbyes */
    int64_t peak_online;
    double all_online_after;      /* seconds from the start until every device had been online; < 0: never */
    double storm_at;              /* < 0: no storm */
    int64_t storm_devices;
    uint64_t storm_back;
    double storm_all_back_after;  /* < 0: not all came back */
    double disrupt_at;            /* < 0: no disruption */
    int disrupt_status;           /* exit status of the command (-1: could not run it) */
    int64_t disrupt_dropped;      /* the fewest devices online after it, below the target */
    double disrupt_all_back_after;   /* from the command until every device was online again; < 0: never */
    double ramp_seconds;          /* first connect to the last device's first CONNACK (connect rate) */
    double publish_seconds;       /* first telemetry PUBLISH to the last PUBACK (message rates) */
    sim_hist_t *h;                /* SIM_H_COUNT merged histograms */
    sim_sample_t *series;
    size_t n_series;
    sim_resources_t sim;
    sim_resources_t server;
    bool has_server;
} sim_result_t;

/* The JSON summary of a run (new reference). */
json_t *sim_summary_json(const sim_result_t *r);
/* Write it to path (pretty enough to read, compact series). */
SG_WUR sg_rc sim_summary_write(json_t *summary, const char *path, char *err, size_t err_len);
/* The human summary of a JSON summary (run or merged). */
void sim_summary_print(FILE *out, const json_t *summary);

/* Merge summaries (each a JSON object of tool "sacgate-sim") into a new one. SG_E_INVALID with a
 * reason when one is not a simulator summary or its histograms have another layout. */
SG_WUR sg_rc sim_summary_merge(json_t *const *in, size_t n, json_t **out, char *err, size_t err_len);

#endif
