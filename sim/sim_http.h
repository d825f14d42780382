/* sim_http.h — the simulator's side of sacgate's HTTP API (libcurl): registering the slice's
 * devices through POST /v1/devices:import as one streamed NDJSON body, and the iothub back-end,
 * which long-polls GET /v1/telemetry on every partition (publish-to-readable latency from the
 * stamps devices put in their payloads) and sends commands with POST /v1/devices/{id}/messages
 * at --command-rate (their latency is measured by the device that reads them). */
#ifndef SIM_HTTP_H
#define SIM_HTTP_H

#include <stdio.h>
#include "sim_opts.h"
#include "sim_stats.h"
#include "sim_worker.h"

/* Call once before any thread starts (libcurl's global init is not thread-safe). */
SG_WUR sg_rc sim_http_init(void);
void sim_http_cleanup(void);

/* Register the slice's devices (ids {prefix}-{n}, SAS keys derived from --key-seed) and count
 * them in st (IMPORTED / IMPORT_FAILED). Prints progress and the rate to out. SG_OK when the
 * gateway answered every batch (per-line failures are counted, not fatal). */
SG_WUR sg_rc sim_provision_import(const sim_opts_t *o, sim_tstats_t *st, FILE *out, char *err, size_t err_len);

typedef struct {
    const sim_opts_t *o;
    sim_ctl_t *ctl;
    sim_tstats_t *st;
    int64_t start_real_us;   /* stamps older than this are from earlier runs: not measured */
} sim_backend_cfg_t;

/* The iothub back-end (pthread body); runs until ctl->phase becomes SIM_PHASE_STOP. */
void *sim_http_backend_main(void *cfg);

/* The secondary key of a simulated device (the primary is sim_derive_key(seed, id)). */
void sim_derive_secondary(const char *seed, const char *device_id, uint8_t out[32]);

#endif
