/* sim_stats.c — the JSON names of the simulator's counters, gauges and histograms. */
#include "sim_stats.h"

#define SIM_NAME(name, json) json,
const char *const sim_counter_names[SIM_C_COUNT] = {SIM_COUNTERS(SIM_NAME)};
const char *const sim_gauge_names[SIM_G_COUNT] = {SIM_GAUGES(SIM_NAME)};
#undef SIM_NAME
const char *const sim_hist_names[SIM_H_COUNT] = {"connect", "publishAck", "command", "telemetry"};
