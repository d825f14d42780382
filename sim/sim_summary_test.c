/* sim_summary_test.c — the JSON summary and the merge of slice summaries: counters and sessions
 * add up, histograms merge bucket by bucket (the merged p99 is the p99 of all records, not an
 * average of p99s), series align on wall-clock seconds, and foreign input is refused. */
#include <math.h>
#include <stdlib.h>
#include "sg_test.h"
#include "sim_summary.h"

static json_t *make(sim_opts_t *o, unsigned slice, int64_t start_ms, uint64_t base_us, uint64_t n)
{
    sim_opts_defaults(o);
    o->devices = 100;
    o->insecure = true;
    o->slice_index = slice;
    o->slice_count = 2;
    char err[128];
    if (sim_opts_finish(o, err, sizeof err) != SG_OK)
        return NULL;
    sim_result_t r = {.o = o, .started_real_ms = start_ms, .ended_real_ms = start_ms + 10000, .seconds = 10,
                      .all_online_after = 2.0 + slice, .storm_at = -1, .storm_all_back_after = -1, .peak_online = 50};
    r.c[SIM_C_CONNECTS] = 50;
    r.c[SIM_C_PUBLISHED] = n;
    r.c[SIM_C_FAIL_TLS] = slice;
    r.g[SIM_G_ONLINE] = 50;
    r.g[SIM_G_EVER_ONLINE] = 50;
    r.h = calloc(SIM_H_COUNT, sizeof *r.h);
    for (int k = 0; k < SIM_H_COUNT; k++)
        sim_hist_init(&r.h[k]);
    for (uint64_t i = 0; i < n; i++)
        sim_hist_record(&r.h[SIM_H_PUBACK], base_us + i);
    sim_sample_t s[3];
    for (int i = 0; i < 3; i++)
        s[i] = (sim_sample_t){.t = i + 1, .online = 10 * (i + 1), .acked_ps = 100, .connect_p50_ms = NAN,
                              .connect_p99_ms = NAN, .puback_p50_ms = 1, .puback_p99_ms = 2, .sim_rss_mb = 5};
    r.series = s;
    r.n_series = 3;
    json_t *j = sim_summary_json(&r);
    free(r.h);
    return j;
}

int main(void)
{
    sim_opts_t *o = malloc(sizeof *o);
    json_t *a = make(o, 0, 1764000000000, 1000, 1000);
    json_t *b = make(o, 1, 1764000002000, 100000, 9000);   /* started 2 s later, much slower */
    CHECK(a && b);
    CHECK_STR(json_string_value(json_object_get(a, "tool")), "sacgate-sim");
    CHECK(json_integer_value(json_object_get(json_object_get(a, "sessions"), "target")) == 50);
    CHECK(json_integer_value(json_object_get(json_object_get(json_object_get(b, "sessions"), "failed"), "tls")) == 1);
    json_t *in[] = {a, b}, *m = NULL;
    char err[256];
    CHECK_RC(sim_summary_merge(in, 2, &m, err, sizeof err), SG_OK);
    json_t *ses = json_object_get(m, "sessions");
    CHECK(json_integer_value(json_object_get(ses, "target")) == 100);
    CHECK(json_integer_value(json_object_get(ses, "online")) == 100);
    CHECK(json_integer_value(json_object_get(json_object_get(ses, "failed"), "tls")) == 1);
    /* all online once the later slice was: 2 s later start + 3 s */
    CHECK(fabs(json_number_value(json_object_get(ses, "allOnlineAfterSeconds")) - 5.0) < 1e-9);
    CHECK(json_integer_value(json_object_get(json_object_get(m, "counters"), "published")) == 10000);
    json_t *h = json_object_get(json_object_get(m, "latency"), "publishAck");
    CHECK(json_integer_value(json_object_get(h, "count")) == 10000);
    /* 90% of the records are the slow slice's: the merged median is slow, an average of the
     * two medians would not be */
    CHECK(json_integer_value(json_object_get(h, "p50")) > 100000);
    CHECK(json_integer_value(json_object_get(h, "min")) == 1000);
    json_t *ser = json_object_get(m, "series");
    json_t *online = json_object_get(ser, "online");
    CHECK(json_array_size(online) == json_array_size(json_object_get(ser, "t")));
    /* second 1: only slice 0 (10); second 3: slice 0's 30 + slice 1's first 10 */
    CHECK(json_number_value(json_array_get(online, 0)) == 10);
    CHECK(json_number_value(json_array_get(online, 2)) == 40);
    CHECK(json_is_null(json_array_get(json_object_get(ser, "publishAckP99Ms"), 0)));
    CHECK(json_integer_value(json_object_get(m, "merged")) == 2);
    CHECK(json_array_size(json_object_get(m, "slices")) == 2);
    /* refusals */
    json_t *foreign = json_pack("{s:s}", "tool", "other");
    json_t *in2[] = {a, foreign}, *m2 = NULL;
    CHECK_RC(sim_summary_merge(in2, 2, &m2, err, sizeof err), SG_E_INVALID);
    CHECK(strstr(err, "input 2") != NULL);
    json_t *odd = json_deep_copy(b);
    json_object_set_new(json_object_get(json_object_get(odd, "latency"), "publishAck"), "layout", json_string("x"));
    json_t *in3[] = {a, odd};
    CHECK_RC(sim_summary_merge(in3, 2, &m2, err, sizeof err), SG_E_INVALID);
    CHECK(strstr(err, "publishAck") != NULL);
    json_decref(odd);
    /* slices of one run: a year apart they are not (and a series that long is not built) */
    json_t *old = json_deep_copy(a);
    json_object_set_new(old, "startedAt", json_string("2024-11-29T16:00:00.000Z"));
    json_t *in4[] = {old, b};
    CHECK_RC(sim_summary_merge(in4, 2, &m2, err, sizeof err), SG_E_INVALID);
    CHECK(strstr(err, "2 days") != NULL);
    json_decref(old);
    json_decref(foreign);
    json_decref(m);
    json_decref(a);
    json_decref(b);
    free(o);
    TEST_DONE();
}
