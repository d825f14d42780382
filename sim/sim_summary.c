/* sim_summary.c — the JSON summary of a run, its text form, and merging slices; see
 * sim_summary.h. */
#include "sim_summary.h"
#include <math.h>
#include <string.h>
#include "sg_time.h"

#define SUMMARY_VERSION 1
/* Slices of one run start within moments of each other; the merged series has one point per
 * second of the whole span, so a span beyond this is refused rather than allocated. */
#define MAX_MERGE_SPAN_MS ((int64_t)2 * 86400 * 1000)

static json_t *num_or_null(double v) { return isnan(v) ? json_null() : json_real(round(v * 1000) / 1000); }

static json_t *series_json(const sim_result_t *r)
{
    json_t *s = json_object();
    static const char *const names[] = {"t", "online", "connecting", "connectsPerSec", "publishedPerSec", "ackedPerSec",
                                        "commandsReceivedPerSec", "telemetryReadPerSec", "dropsPerSec", "failuresPerSec",
                                        "connectP50Ms", "connectP99Ms", "publishAckP50Ms", "publishAckP99Ms", "simRssMB",
                                        "simCpuPct", "serverRssMB", "serverCpuPct"};
    json_t *arr[sizeof names / sizeof names[0]];
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        arr[k] = json_array();
        json_object_set_new(s, names[k], arr[k]);
    }
    for (size_t i = 0; i < r->n_series; i++) {
        const sim_sample_t *x = &r->series[i];
        double v[] = {x->t, (double)x->online, (double)x->connecting, x->connects_ps, x->published_ps, x->acked_ps,
                      x->commands_ps, x->telemetry_ps, x->drops_ps, x->failures_ps, x->connect_p50_ms, x->connect_p99_ms,
                      x->puback_p50_ms, x->puback_p99_ms, x->sim_rss_mb, x->sim_cpu_pct,
                      r->has_server ? x->server_rss_mb : NAN, r->has_server ? x->server_cpu_pct : NAN};
        for (size_t k = 0; k < sizeof v / sizeof v[0]; k++)
            json_array_append_new(arr[k], k <= 2 ? json_integer((json_int_t)v[k]) : num_or_null(v[k]));
    }
    return s;
}

static json_t *resources_json(const sim_resources_t *res, bool with_pids)
{
    json_t *o = json_pack("{s:i,s:I,s:I,s:I,s:I,s:I,s:f}", "processes", res->processes, "startRssBytes",
                          (json_int_t)res->start_rss, "peakRssBytes", (json_int_t)res->peak_rss, "rssAtPeakOnlineBytes",
                          (json_int_t)res->rss_at_peak_online, "startPssBytes", (json_int_t)res->start_pss,
                          "pssAtPeakOnlineBytes", (json_int_t)res->pss_at_peak_online, "cpuSeconds",
                          round(res->cpu_seconds * 100) / 100);
    if (with_pids) {
        json_t *p = json_array();
        for (int i = 0; i < res->n_pids; i++)
            json_array_append_new(p, json_integer(res->pids[i]));
        json_object_set_new(o, "pids", p);
    }
    return o;
}

static json_t *time_json(int64_t ms)
{
    char buf[25];
    sg_rfc3339(ms, buf);
    return json_string(buf);
}

json_t *sim_summary_json(const sim_result_t *r)
{
    const sim_opts_t *o = r->o;
    json_t *s = json_object();
    json_object_set_new(s, "tool", json_string("sacgate-sim"));
    json_object_set_new(s, "version", json_integer(SUMMARY_VERSION));
    json_object_set_new(s, "label", json_string(o->label));
    json_object_set_new(s, "command", json_string(o->command_line));
    json_object_set_new(s, "startedAt", time_json(r->started_real_ms));
    json_object_set_new(s, "endedAt", time_json(r->ended_real_ms));
    json_object_set_new(s, "seconds", json_real(round(r->seconds * 1000) / 1000));
    json_t *ports = json_array();
    for (int i = 0; i < o->n_ports; i++)
        json_array_append_new(ports, json_integer(o->ports[i]));
    json_object_set_new(s, "target", json_pack("{s:s,s:s,s:o,s:b}", "mode", o->mode == SIM_MODE_IOTHUB ? "iothub" : "plain",
                                               "host", o->host, "ports", ports, "tls", o->tls));
    json_object_set_new(s, "slices", json_pack("[{s:i,s:i,s:I,s:I}]", "index", (int)o->slice_index, "count",
                                               (int)o->slice_count, "first", (json_int_t)o->slice_first, "devices",
                                               (json_int_t)o->slice_n));
    json_object_set_new(s, "config",
                        json_pack("{s:I,s:s,s:f,s:i,s:f,s:I,s:i,s:i,s:i,s:b,s:b,s:f,s:i,s:i,s:f,s:f,s:f,s:s}", "devices",
                                  (json_int_t)o->devices, "prefix", o->prefix, "rate", o->rate, "keepalive", o->keepalive,
                                  "publishRate", o->publish_rate, "messages", (json_int_t)o->messages, "qos", o->qos,
                                  "size", o->size, "window", o->window, "subscribe", o->subscribe, "backend", o->backend,
                                  "commandRate", o->command_rate, "processes", o->processes, "threads", o->threads,
                                  "duration", o->duration, "hold", o->hold, "stormAfter", o->storm_after, "provision",
                                  o->provision == SIM_PROV_IMPORT ? "import" : "none"));
    json_t *failed = json_object(), *dropped = json_object(), *counters = json_object();
    for (int i = 0; i < SIM_C_COUNT; i++) {
        const char *n = sim_counter_names[i];
        json_object_set_new(counters, n, json_integer((json_int_t)r->c[i]));
        if (!strncmp(n, "fail.", 5))
            json_object_set_new(failed, n + 5, json_integer((json_int_t)r->c[i]));
        else if (!strncmp(n, "drop.", 5))
            json_object_set_new(dropped, n + 5, json_integer((json_int_t)r->c[i]));
    }
    json_object_set_new(s, "sessions",
                        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:o}", "target", (json_int_t)o->slice_n, "online",
                                  (json_int_t)r->g[SIM_G_ONLINE], "peakOnline", (json_int_t)r->peak_online, "everOnline",
                                  (json_int_t)r->g[SIM_G_EVER_ONLINE], "connects", (json_int_t)r->c[SIM_C_CONNECTS],
                                  "reconnects", (json_int_t)r->c[SIM_C_RECONNECTS], "connectAttempts",
                                  (json_int_t)r->c[SIM_C_CONNECT_ATTEMPTS], "allOnlineAfterSeconds",
                                  r->all_online_after >= 0 ? json_real(round(r->all_online_after * 1000) / 1000) : json_null(),
                                  "failed", failed, "dropped", dropped));
    if (r->storm_at >= 0)
        json_object_set_new(s, "storm", json_pack("{s:f,s:I,s:I,s:o}", "atSeconds", r->storm_at, "devices",
                                                  (json_int_t)r->storm_devices, "back", (json_int_t)r->storm_back,
                                                  "allBackAfterSeconds",
                                                  r->storm_all_back_after >= 0
                                                      ? json_real(round(r->storm_all_back_after * 1000) / 1000)
                                                      : json_null()));
    else
        json_object_set_new(s, "storm", json_null());
    if (r->disrupt_at >= 0)
        json_object_set_new(s, "disruption",
                            json_pack("{s:s,s:f,s:i,s:I,s:o}", "command", o->disrupt_command, "atSeconds", r->disrupt_at,
                                      "exitStatus", r->disrupt_status, "devicesDown", (json_int_t)r->disrupt_dropped,
                                      "allBackAfterSeconds",
                                      r->disrupt_all_back_after >= 0
                                          ? json_real(round(r->disrupt_all_back_after * 1000) / 1000)
                                          : json_null()));
    else
        json_object_set_new(s, "disruption", json_null());
    json_object_set_new(s, "counters", counters);
    double secs = r->seconds > 0 ? r->seconds : 1;
    double ramp = r->ramp_seconds > 0 ? r->ramp_seconds : secs;
    double pub_secs = r->publish_seconds > 0 ? r->publish_seconds : secs;
    json_object_set_new(s, "rates",
                        json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "rampSeconds", round(ramp * 1000) / 1000,
                                  "publishSeconds", round(pub_secs * 1000) / 1000, "connectsPerSecond",
                                  round((r->all_online_after >= 0 ? (double)r->g[SIM_G_EVER_ONLINE] / ramp
                                                                  : (double)r->c[SIM_C_CONNECTS] / secs) * 10) / 10,
                                  "publishedPerSecond", round((double)r->c[SIM_C_PUBLISHED] / pub_secs * 10) / 10,
                                  "ackedPerSecond", round((double)r->c[SIM_C_ACKED] / pub_secs * 10) / 10,
                                  "commandsReceivedPerSecond", round((double)r->c[SIM_C_C2D_RECEIVED] / secs * 10) / 10,
                                  "telemetryReadPerSecond", round((double)r->c[SIM_C_TELE_READ] / secs * 10) / 10));
    json_t *lat = json_object();
    for (int i = 0; i < SIM_H_COUNT; i++)
        json_object_set_new(lat, sim_hist_names[i], sim_hist_to_json(&r->h[i]));
    json_object_set_new(s, "latency", lat);
    json_object_set_new(s, "resources", json_pack("{s:o,s:o}", "simulator", resources_json(&r->sim, false), "server",
                                                  r->has_server ? resources_json(&r->server, true) : json_null()));
    json_object_set_new(s, "series", series_json(r));
    return s;
}

sg_rc sim_summary_write(json_t *summary, const char *path, char *err, size_t err_len)
{
    if (json_dump_file(summary, path, JSON_COMPACT) != 0) {
        snprintf(err, err_len, "cannot write %s", path);
        return SG_E_IO;
    }
    return SG_OK;
}

/* ---------- text ---------- */

static double jnum(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : 0;
}

static void print_reasons(FILE *out, const char *what, const json_t *obj)
{
    fprintf(out, "%-10s", what);
    const char *k;
    json_t *v;
    int n = 0;
    json_object_foreach((json_t *)obj, k, v) {
        if (json_integer_value(v) > 0) {
            fprintf(out, "%s %s %lld", n ? "," : "", k, (long long)json_integer_value(v));
            n++;
        }
    }
    fprintf(out, "%s\n", n ? "" : " none");
}

static void print_hist(FILE *out, const char *what, const json_t *h)
{
    if (!h || jnum(h, "count") == 0)
        return;
    fprintf(out, "%-22s n %-9.0f p50 %8.2f  p90 %8.2f  p99 %8.2f  p99.9 %8.2f  max %8.2f ms\n", what, jnum(h, "count"),
            jnum(h, "p50") / 1000, jnum(h, "p90") / 1000, jnum(h, "p99") / 1000, jnum(h, "p999") / 1000,
            jnum(h, "max") / 1000);
}

void sim_summary_print(FILE *out, const json_t *s)
{
    const json_t *ses = json_object_get(s, "sessions"), *c = json_object_get(s, "counters"),
                 *rates = json_object_get(s, "rates"), *lat = json_object_get(s, "latency"),
                 *res = json_object_get(s, "resources");
    const char *label = json_string_value(json_object_get(s, "label"));
    fprintf(out, "== sacgate-sim%s%s: %.1f s\n", label && *label ? " " : "", label ? label : "", jnum(s, "seconds"));
    json_t *after = json_object_get(ses, "allOnlineAfterSeconds");
    fprintf(out, "sessions  target %.0f, online %.0f (peak %.0f, ever %.0f), connects %.0f, reconnects %.0f", jnum(ses, "target"),
            jnum(ses, "online"), jnum(ses, "peakOnline"), jnum(ses, "everOnline"), jnum(ses, "connects"),
            jnum(ses, "reconnects"));
    if (json_is_number(after))
        fprintf(out, "; all online after %.2f s (%.0f connects/s)\n", json_number_value(after),
                jnum(rates, "connectsPerSecond"));
    else
        fprintf(out, "; not all online\n");
    print_reasons(out, "failed", json_object_get(ses, "failed"));
    print_reasons(out, "dropped", json_object_get(ses, "dropped"));
    const json_t *storm = json_object_get(s, "storm");
    if (json_is_object(storm)) {
        json_t *ab = json_object_get(storm, "allBackAfterSeconds");
        fprintf(out, "storm     at %.1f s: %.0f sessions dropped, %.0f back", jnum(storm, "atSeconds"),
                jnum(storm, "devices"), jnum(storm, "back"));
        if (json_is_number(ab))
            fprintf(out, ", all back after %.2f s\n", json_number_value(ab));
        else
            fprintf(out, ", not all back\n");
    }
    const json_t *dis = json_object_get(s, "disruption");
    if (json_is_object(dis)) {
        json_t *ab = json_object_get(dis, "allBackAfterSeconds");
        fprintf(out, "disrupted at %.1f s by '%s' (exit %.0f): %.0f sessions went down", jnum(dis, "atSeconds"),
                json_string_value(json_object_get(dis, "command")), jnum(dis, "exitStatus"), jnum(dis, "devicesDown"));
        if (json_is_number(ab))
            fprintf(out, ", all back after %.2f s\n", json_number_value(ab));
        else
            fprintf(out, ", not all back\n");
    }
    if (jnum(c, "published") > 0)
        fprintf(out, "telemetry published %.0f, acked %.0f (%.0f/s)\n", jnum(c, "published"), jnum(c, "acked"),
                jnum(rates, "ackedPerSecond"));
    if (jnum(c, "commandsSent") > 0 || jnum(c, "commandsReceived") > 0)
        fprintf(out, "commands  sent %.0f, accepted %.0f, rejected (queue full) %.0f, failed %.0f, received %.0f (%.0f dup)\n",
                jnum(c, "commandsSent"), jnum(c, "commandsAccepted"), jnum(c, "commandsRejected"),
                jnum(c, "commandsFailed"), jnum(c, "commandsReceived"), jnum(c, "commandsReceivedDup"));
    if (jnum(c, "telemetryRead") > 0)
        fprintf(out, "back-end  read %.0f telemetry records\n", jnum(c, "telemetryRead"));
    print_hist(out, "connect", json_object_get(lat, "connect"));
    print_hist(out, "publish-to-PUBACK", json_object_get(lat, "publishAck"));
    print_hist(out, "command-to-device", json_object_get(lat, "command"));
    print_hist(out, "publish-to-readable", json_object_get(lat, "telemetry"));
    const json_t *sim = json_object_get(res, "simulator"), *srv = json_object_get(res, "server");
    fprintf(out, "simulator %.0f processes, peak RSS %.1f MB, CPU %.1f s\n", jnum(sim, "processes"),
            jnum(sim, "peakRssBytes") / 1e6, jnum(sim, "cpuSeconds"));
    if (json_is_object(srv))
        fprintf(out, "server    %.0f processes, peak RSS %.1f MB (%.1f MB at start), CPU %.1f s\n", jnum(srv, "processes"),
                jnum(srv, "peakRssBytes") / 1e6, jnum(srv, "startRssBytes") / 1e6, jnum(srv, "cpuSeconds"));
}

/* ---------- merge ---------- */

static int64_t parse_time_ms(const char *s)
{
    struct tm tm = {0};
    int ms = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                     &tm.tm_sec, &ms) != 7 || tm.tm_year < 1970 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour < 0 || tm.tm_hour > 23 || tm.tm_min < 0 || tm.tm_min > 59 || tm.tm_sec < 0 ||
        tm.tm_sec > 60 || ms < 0)
        return 0;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

/* dst[k] += src[k] for every integer/real member. */
static void add_numbers(json_t *dst, const json_t *src)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)src, k, v) {
        json_t *d = json_object_get(dst, k);
        json_int_t sum;
        if (json_is_integer(v) &&
            !__builtin_add_overflow(json_integer_value(v), json_is_integer(d) ? json_integer_value(d) : 0, &sum))
            json_object_set_new(dst, k, json_integer(sum));
        else if (json_is_real(v))
            json_object_set_new(dst, k, json_real(json_real_value(v) + (json_is_number(d) ? json_number_value(d) : 0)));
    }
}

static const char *const k_additive_series[] = {"online", "connecting", "connectsPerSec", "publishedPerSec", "ackedPerSec",
                                                "commandsReceivedPerSec", "telemetryReadPerSec", "dropsPerSec",
                                                "failuresPerSec", "simRssMB", "simCpuPct"};

sg_rc sim_summary_merge(json_t *const *in, size_t n, json_t **out, char *err, size_t err_len)
{
    SG_ENSURE(n > 0, SG_E_INVALID);
    int64_t start = INT64_MAX, end = 0;
    for (size_t i = 0; i < n; i++) {
        const char *tool = json_string_value(json_object_get(in[i], "tool"));
        if (!tool || strcmp(tool, "sacgate-sim") != 0 || json_integer_value(json_object_get(in[i], "version")) != SUMMARY_VERSION) {
            snprintf(err, err_len, "input %zu is not a sacgate-sim summary of version %d", i + 1, SUMMARY_VERSION);
            return SG_E_INVALID;
        }
        int64_t a = parse_time_ms(json_string_value(json_object_get(in[i], "startedAt")));
        int64_t b = parse_time_ms(json_string_value(json_object_get(in[i], "endedAt")));
        if (!a || !b) {
            snprintf(err, err_len, "input %zu has no valid startedAt/endedAt", i + 1);
            return SG_E_INVALID;
        }
        start = a < start ? a : start;
        end = b > end ? b : end;
    }
    if (end - start > MAX_MERGE_SPAN_MS || end < start) {
        snprintf(err, err_len, "the summaries span more than 2 days: these are not slices of one run");
        return SG_E_INVALID;
    }
    /* histograms first: a layout mismatch refuses the merge before anything is built */
    sim_hist_t *h = calloc(SIM_H_COUNT, sizeof *h);
    if (!h)
        return SG_E_NOMEM;
    for (int k = 0; k < SIM_H_COUNT; k++)
        sim_hist_init(&h[k]);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < SIM_H_COUNT; k++) {
            json_t *hj = json_object_get(json_object_get(in[i], "latency"), sim_hist_names[k]);
            if (hj && sim_hist_add_json(&h[k], hj) != SG_OK) {
                snprintf(err, err_len, "input %zu: histogram %s has another layout or bad counts", i + 1,
                         sim_hist_names[k]);
                free(h);
                return SG_E_INVALID;
            }
        }
    json_t *m = json_deep_copy(in[0]);
    json_object_set_new(m, "startedAt", time_json(start));
    json_object_set_new(m, "endedAt", time_json(end));
    json_object_set_new(m, "seconds", json_real((double)(end - start) / 1000));
    json_t *cmds = json_array(), *slices = json_array();
    json_t *ses = json_object(), *failed = json_object(), *dropped = json_object(), *counters = json_object(),
           *rates = json_object(), *simres = json_object();
    json_t *storm = json_null();
    double all_online = 0;
    bool all_online_known = true;
    json_t *server = json_null(), *server_series_rss = NULL, *server_series_cpu = NULL;
    int64_t server_start = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *s = in[i];
        int64_t a = parse_time_ms(json_string_value(json_object_get(s, "startedAt")));
        json_array_append(cmds, json_object_get(s, "command"));
        size_t k;
        json_t *v;
        json_array_foreach(json_object_get(s, "slices"), k, v) json_array_append(slices, v);
        const json_t *si = json_object_get(s, "sessions");
        json_t *copy = json_deep_copy(si);
        json_object_del(copy, "failed");
        json_object_del(copy, "dropped");
        json_object_del(copy, "allOnlineAfterSeconds");
        add_numbers(ses, copy);
        json_decref(copy);
        add_numbers(failed, json_object_get(si, "failed"));
        add_numbers(dropped, json_object_get(si, "dropped"));
        json_t *ao = json_object_get(si, "allOnlineAfterSeconds");
        if (json_is_number(ao)) {
            double t = (double)(a - start) / 1000 + json_number_value(ao);
            all_online = t > all_online ? t : all_online;
        } else {
            all_online_known = false;
        }
        add_numbers(counters, json_object_get(s, "counters"));
        add_numbers(rates, json_object_get(s, "rates"));
        json_t *res = json_object_get(s, "resources");
        add_numbers(simres, json_object_get(res, "simulator"));
        if (json_is_null(server) && json_is_object(json_object_get(res, "server"))) {
            /* several slices on one machine watch the same server: take one view, never a sum */
            server = json_deep_copy(json_object_get(res, "server"));
            server_series_rss = json_object_get(json_object_get(s, "series"), "serverRssMB");
            server_series_cpu = json_object_get(json_object_get(s, "series"), "serverCpuPct");
            server_start = a;
        }
        json_t *st = json_object_get(s, "storm");
        if (json_is_object(st)) {
            if (json_is_null(storm)) {
                storm = json_deep_copy(st);
            } else {
                json_t *counts = json_pack("{s:O?,s:O?}", "devices", json_object_get(st, "devices"), "back",
                                           json_object_get(st, "back"));
                add_numbers(storm, counts);
                json_decref(counts);
                json_t *x = json_object_get(storm, "allBackAfterSeconds"), *y = json_object_get(st, "allBackAfterSeconds");
                json_object_set_new(storm, "allBackAfterSeconds",
                                    json_is_number(x) && json_is_number(y)
                                        ? json_real(fmax(json_number_value(x), json_number_value(y)))
                                        : json_null());
            }
        }
    }
    json_object_set_new(ses, "failed", failed);
    json_object_set_new(ses, "dropped", dropped);
    json_object_set_new(ses, "allOnlineAfterSeconds", all_online_known ? json_real(all_online) : json_null());
    json_object_set_new(m, "command", cmds);
    json_object_set_new(m, "slices", slices);
    json_object_set_new(m, "sessions", ses);
    json_object_set_new(m, "storm", storm);
    json_object_set_new(m, "counters", counters);
    json_object_set_new(m, "rates", rates);
    json_object_set_new(m, "merged", json_integer((json_int_t)n));
    json_t *lat = json_object();
    for (int k = 0; k < SIM_H_COUNT; k++)
        json_object_set_new(lat, sim_hist_names[k], sim_hist_to_json(&h[k]));
    free(h);
    json_object_set_new(m, "latency", lat);
    json_object_set_new(m, "resources", json_pack("{s:o,s:o}", "simulator", simres, "server", server));
    /* series: sum the additive ones on aligned wall-clock seconds; per-second percentiles of
     * different slices cannot be combined, so they are left out (the merged histograms above
     * hold the run's percentiles) */
    size_t len = (size_t)((end - start + 999) / 1000) + 1;
    json_t *series = json_object();
    json_t *t = json_array();
    for (size_t i = 1; i <= len; i++)
        json_array_append_new(t, json_integer((json_int_t)i));
    json_object_set_new(series, "t", t);
    for (size_t k = 0; k < sizeof k_additive_series / sizeof k_additive_series[0]; k++) {
        double *acc = calloc(len + 1, sizeof *acc);
        bool *has = calloc(len + 1, sizeof *has);
        for (size_t i = 0; acc && has && i < n; i++) {
            const json_t *ser = json_object_get(in[i], "series");
            const json_t *ts = json_object_get(ser, "t"), *vs = json_object_get(ser, k_additive_series[k]);
            int64_t a = parse_time_ms(json_string_value(json_object_get(in[i], "startedAt")));
            for (size_t j = 0; j < json_array_size(ts) && j < json_array_size(vs); j++) {
                double sec = (double)(a - start) / 1000 + json_number_value(json_array_get(ts, j));
                long idx = lround(sec) - 1;
                if (idx >= 0 && (size_t)idx < len && json_is_number(json_array_get(vs, j))) {
                    acc[idx] += json_number_value(json_array_get(vs, j));
                    has[idx] = true;
                }
            }
        }
        json_t *arr = json_array();
        for (size_t i = 0; acc && has && i < len; i++)
            json_array_append_new(arr, has[i] ? json_real(round(acc[i] * 1000) / 1000) : json_null());
        json_object_set_new(series, k_additive_series[k], arr);
        free(acc);
        free(has);
    }
    static const char *const pct[] = {"connectP50Ms", "connectP99Ms", "publishAckP50Ms", "publishAckP99Ms"};
    for (size_t k = 0; k < sizeof pct / sizeof pct[0]; k++) {
        json_t *arr = json_array();
        for (size_t i = 0; i < len; i++)
            json_array_append_new(arr, json_null());
        json_object_set_new(series, pct[k], arr);
    }
    static const char *const srv_names[] = {"serverRssMB", "serverCpuPct"};
    json_t *srv_src[] = {server_series_rss, server_series_cpu};
    for (size_t k = 0; k < 2; k++) {
        json_t *arr = json_array();
        for (size_t i = 0; i < len; i++)
            json_array_append_new(arr, json_null());
        for (size_t j = 0; srv_src[k] && j < json_array_size(srv_src[k]); j++) {
            long idx = lround((double)(server_start - start) / 1000) + (long)j;
            if (idx >= 0 && (size_t)idx < len)
                json_array_set(arr, (size_t)idx, json_array_get(srv_src[k], j));
        }
        json_object_set_new(series, srv_names[k], arr);
    }
    json_object_set_new(m, "series", series);
    *out = m;
    return SG_OK;
}
