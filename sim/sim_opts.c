/* sim_opts.c — the simulator's flags in one table (name, kind, where it goes, default, help);
 * parsing, derived settings and --help all come from it. See sim_opts.h. */
#include "sim_opts.h"
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { K_STR, K_INT, K_U64, K_DBL, K_BOOL, K_SPECIAL } kind_t;

typedef struct {
    const char *flag;
    kind_t kind;
    size_t off;        /* offsetof in sim_opts_t (K_SPECIAL: unused) */
    size_t size;       /* K_STR: buffer size */
    double lo, hi;     /* numeric bounds */
    const char *def;   /* shown in --help */
    const char *group;
    const char *help;
} flag_t;

#define STR(f, field, def, grp, help) {f, K_STR, offsetof(sim_opts_t, field), sizeof(((sim_opts_t *)0)->field), 0, 0, def, grp, help}
#define INT(f, field, lo, hi, def, grp, help) {f, K_INT, offsetof(sim_opts_t, field), 0, lo, hi, def, grp, help}
#define U64(f, field, lo, hi, def, grp, help) {f, K_U64, offsetof(sim_opts_t, field), 0, lo, hi, def, grp, help}
#define DBL(f, field, lo, hi, def, grp, help) {f, K_DBL, offsetof(sim_opts_t, field), 0, lo, hi, def, grp, help}
#define BOOL(f, field, def, grp, help) {f, K_BOOL, offsetof(sim_opts_t, field), 0, 0, 0, def, grp, help}
#define SPECIAL(f, def, grp, help) {f, K_SPECIAL, 0, 0, 0, 0, def, grp, help}

static const flag_t k_flags[] = {
    SPECIAL("--mode", "iothub", "target", "iothub: the Azure IoT Hub device dialect of sacgate (SAS tokens, "
            "devices/{id}/... topics, HTTP back-end); plain: any MQTT 3.1.1 broker (topics, username/password, "
            "PSK or certificates as given, an MQTT subscriber as back-end)"),
    STR("--host", host, "127.0.0.1", "target", "broker or frontend address (name or numeric IPv4/IPv6)"),
    SPECIAL("--port", "8883", "target", "MQTT port(s), comma-separated: devices are spread over all of them (one "
            "per frontend process); a device whose port refuses moves on to the next"),
    STR("--ports-env", ports_env, "", "target", "read MQTT_PORTS (and ADMIN_PORT) from a ports.env written by "
        "deploy/local/cluster.sh"),
    SPECIAL("--source", "", "target", "source addresses for client sockets, comma-separated a.b.c.d[/len] blocks "
            "(e.g. 127.0.1.0/24): sockets are spread over them so ephemeral ports never run out"),
    BOOL("--tls", tls, "on", "target", "TLS to the broker (on/off; sacgate has no plaintext listener)"),
    STR("--cafile", cafile, "", "target", "CA certificate(s) that verify the server (PEM)"),
    BOOL("--insecure", insecure, "off", "target", "do not verify the server certificate"),
    BOOL("--tls-resume", tls_resume, "off", "target", "keep each device's TLS session ticket and resume with it when "
         "the device reconnects (off: every connect is a full handshake)"),
    STR("--server-name", server_name, "localhost", "target", "TLS server name: SNI and the name verified in the "
        "certificate"),
    STR("--cert", cert, "", "target", "client certificate chain (PEM) every device presents"),
    STR("--key", key, "", "target", "private key (PEM) of --cert"),
    STR("--psk-hex", psk_hex, "", "target", "TLS pre-shared key (hex) every device uses, no certificates"),
    BOOL("--psk-derive", psk_derive, "off", "target", "per-device TLS PSK: HMAC-SHA256(--key-seed, device id)"),
    STR("--psk-identity", psk_identity, "{id}", "target", "PSK identity template ({id} = device id)"),
    STR("--tls-version", tls_version, "any", "target", "1.2, 1.3 or any"),

    U64("--devices", devices, 1, 100000000, "1000", "devices", "devices in the whole run (all slices together)"),
    U64("--first", first, 0, 1e15, "0", "devices", "number of the first device"),
    STR("--prefix", prefix, "sim", "devices", "devices are named {prefix}-{n}: runs with other prefixes or "
        "slices never collide"),
    SPECIAL("--slice", "0/1", "devices", "I/N: simulate the I-th of N disjoint slices of the device range (one "
            "per machine or Kubernetes Job pod); `merge` combines their reports"),
    STR("--credentials", credentials, "", "devices", "file of 'deviceId base64key' lines (iothub) instead of keys "
        "derived from --key-seed; lines starting with # are ignored"),
    STR("--key-seed", key_seed, "sacgate-sim", "devices", "secret from which each device's SAS key is derived "
        "(HMAC-SHA256(seed, id)); use your own on a shared cluster"),
    STR("--key-seed-file", key_seed_file, "", "devices", "read --key-seed from this file (keeps it off the command "
        "line)"),
    SPECIAL("--provision", "none", "devices", "none: devices exist already; import: register this slice's devices "
            "first through POST /v1/devices:import (streamed NDJSON)"),
    STR("--admin", admin_url, "http://127.0.0.1:8080", "devices", "sacgate admin endpoint (import, back-end)"),
    STR("--token", token, "", "devices", "admin API token"),
    STR("--token-file", token_file, "", "devices", "file holding the admin API token"),
    STR("--sas-host", sas_host, "localhost", "devices", "host part of the SAS resource and MQTT username"),
    INT("--token-ttl", token_ttl, 60, 1e9, "86400", "devices", "SAS token lifetime (s)"),
    STR("--username", username, "", "devices", "plain mode: MQTT username template ({id} = device id)"),
    STR("--password", password, "", "devices", "plain mode: MQTT password template"),
    BOOL("--clean-session", clean_session, "on", "devices", "MQTT CleanSession flag"),

    DBL("--rate", rate, 0, 1e7, "1000", "behaviour", "connects per second over the whole run (0 = as fast as "
        "--max-connecting allows)"),
    DBL("--jitter", jitter, 0, 1, "0.5", "behaviour", "random spread of each device's start, as a fraction of the "
        "interval between two starts"),
    INT("--max-connecting", max_connecting, 1, 100000, "256", "behaviour", "connects under way at once per thread"),
    INT("--keepalive", keepalive, 0, 65535, "60", "behaviour", "MQTT keep-alive (s); devices PINGREQ when idle that "
        "long and drop a connection that does not answer"),
    INT("--connect-timeout", connect_timeout, 1, 3600, "30", "behaviour", "seconds from TCP connect to CONNACK"),
    BOOL("--reconnect", reconnect, "on", "behaviour", "reconnect dropped or refused devices with backoff"),
    INT("--backoff-min", backoff_min_ms, 0, 3600000, "1000", "behaviour", "first reconnect delay (ms), doubled per "
        "failure, +-50% jitter"),
    INT("--backoff-max", backoff_max_ms, 0, 3600000, "30000", "behaviour", "largest reconnect delay (ms)"),
    DBL("--publish-rate", publish_rate, 0, 1e6, "0", "behaviour", "telemetry messages per second per device (0 = "
        "none, or as fast as --window allows when --messages is set)"),
    U64("--messages", messages, 0, 1e15, "0", "behaviour", "telemetry messages per device, then it stops publishing "
        "(0 = until the run ends)"),
    INT("--qos", qos, 0, 1, "1", "behaviour", "telemetry QoS"),
    INT("--size", size, 1, 262144, "100", "behaviour", "telemetry payload bytes (from about 70 on, it carries a "
        "send timestamp for publish-to-readable latency)"),
    INT("--window", window, 1, 65535, "16", "behaviour", "QoS 1 publishes in flight per device"),
    STR("--topic", topic, "", "behaviour", "telemetry topic template ({id}); default devices/{id}/messages/events/ "
        "(iothub) or sim/{id}/telemetry (plain)"),
    BOOL("--subscribe", subscribe, "off", "behaviour", "subscribe to commands and PUBACK them"),
    STR("--command-topic", command_topic, "", "behaviour", "subscription template; default "
        "devices/{id}/messages/devicebound/# (iothub) or sim/{id}/commands (plain)"),
    INT("--sub-qos", sub_qos, 0, 1, "1", "behaviour", "QoS asked for the command subscription"),
    BOOL("--backend", backend, "off", "behaviour", "also act as the back-end: read telemetry (GET /v1/telemetry "
        "long-polls, or an MQTT subscriber in plain mode) for publish-to-readable latency, and send commands"),
    DBL("--command-rate", command_rate, 0, 1e6, "0", "behaviour", "back-end commands per second to random devices of "
        "this slice (POST /v1/devices/{id}/messages, or QoS 1 publishes in plain mode)"),
    INT("--command-size", command_size, 1, 65536, "100", "behaviour", "command payload bytes (stamped from about "
        "70 on, for command-to-device latency)"),
    INT("--command-ttl", command_ttl, 1, 172800, "600", "behaviour", "command time-to-live (s)"),
    STR("--backend-topic", backend_topic, "", "behaviour", "plain mode: the back-end's subscription (default: "
        "--topic with {id} as +)"),
    INT("--backend-min", backend_min, 1, 1000, "1", "behaviour", "iothub mode: a telemetry read waits for this many "
        "records (GET /v1/telemetry min), or --backend-wait-ms"),
    INT("--backend-wait-ms", backend_wait_ms, 1, 60000, "2000", "behaviour", "iothub mode: how long a telemetry read "
        "waits (for its first record, or for --backend-min records)"),
    INT("--partitions", partitions, 0, 65536, "0", "behaviour", "telemetry partitions to read (0 = ask GET /v1/cluster)"),
    DBL("--storm-after", storm_after, -1, 1e7, "-1", "behaviour", "this many seconds after every device has been "
        "online, every online device drops its connection and reconnects at once: a reconnect storm (-1 = never)"),
    DBL("--disrupt-after", disrupt_after, -1, 1e7, "-1", "behaviour", "this many seconds after every device has "
        "been online, run --disrupt-command (e.g. kill a frontend) and measure how long until every device is online "
        "again (-1 = never)"),
    STR("--disrupt-command", disrupt_command, "", "behaviour", "shell command of --disrupt-after"),
    DBL("--duration", duration, 0.1, 1e7, "60", "run", "longest run (s), ramp included"),
    DBL("--hold", hold, -1, 1e7, "-1", "run", "end the run this many seconds after every device has been online "
        "once (after a storm: after every device is back) (-1 = run for --duration, or until every device has sent "
        "--messages)"),
    INT("--processes", processes, 0, 4096, "0", "run", "worker processes (0 = enough for --sessions-per-process, "
        "at least one per core)"),
    INT("--threads", threads, 0, 64, "0", "run", "event-loop threads per worker process (0 = 1)"),
    INT("--sessions-per-process", sessions_per_process, 100, 1000000, "18000", "run", "devices per worker process "
        "when --processes is 0 (each process may hold at most 20000 open files here)"),
    STR("--report", report, "", "output", "write PREFIX.json (summary) and PREFIX.html (charts)"),
    STR("--json", json, "", "output", "write the JSON summary here; '-' prints it on standard output as one line "
        "starting 'SACGATE-SIM-SUMMARY ' (how a Kubernetes Job pod hands its slice's summary to `merge`)"),
    STR("--html", html, "", "output", "write the HTML report here"),
    STR("--label", label, "", "output", "scenario name shown in reports"),
    BOOL("--quiet", quiet, "off", "output", "no progress line each second"),
    BOOL("--dry-run", dry_run, "off", "output", "check the flags, print the settings this run would use, and exit"),
    STR("--server-pids", server_pids, "", "output", "server process ids (comma-separated) whose memory and CPU are "
        "reported beside the simulator's"),
    STR("--server-pids-dir", server_pids_dir, "", "output", "the same, from every *.pid file in this directory "
        "(read each second: restarted members are followed)"),
    STR("--server-comm", server_comm, "", "output", "the same, every process with one of these names (comma-separated, "
        "e.g. sacgate,mosquitto)"),
};

#define N_FLAGS (sizeof k_flags / sizeof k_flags[0])

/* The index of v among names, -1 when it is none of them. */
static int choose(const char *v, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i]))
            return i;
    return -1;
}

/* Set one flag from its textual value (also used for the defaults). */
static sg_rc set_flag(sim_opts_t *o, const flag_t *f, const char *v, char *err, size_t err_len)
{
    char *end = NULL;
    switch (f->kind) {
    case K_STR: {
        char *dst = (char *)o + f->off;
        if (strlen(v) >= f->size) {
            snprintf(err, err_len, "%s: value longer than %zu characters", f->flag, f->size - 1);
            return SG_E_INVALID;
        }
        memcpy(dst, v, strlen(v) + 1);
        return SG_OK;
    }
    case K_INT:
    case K_U64:
    case K_DBL: {
        errno = 0;
        double d = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(d) || d < f->lo || d > f->hi ||
            (f->kind != K_DBL && d != floor(d))) {
            snprintf(err, err_len, "%s: '%s' is not %s from %.15g to %.15g", f->flag, v,
                     f->kind == K_DBL ? "a number" : "a whole number", f->lo, f->hi);
            return SG_E_INVALID;
        }
        if (f->kind == K_INT)
            *(int *)((char *)o + f->off) = (int)d;
        else if (f->kind == K_U64)
            *(uint64_t *)((char *)o + f->off) = (uint64_t)d;
        else
            *(double *)((char *)o + f->off) = d;
        return SG_OK;
    }
    case K_BOOL: {
        bool *b = (bool *)((char *)o + f->off);
        if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
            *b = true;
        else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
            *b = false;
        else {
            snprintf(err, err_len, "%s: '%s' is not on or off", f->flag, v);
            return SG_E_INVALID;
        }
        return SG_OK;
    }
    case K_SPECIAL:
        break;
    }
    if (!strcmp(f->flag, "--mode")) {
        static const char *const modes[] = {"iothub", "plain"};   /* index = sim_mode_t */
        int m = choose(v, modes, 2);
        if (m < 0) {
            snprintf(err, err_len, "--mode: '%s' is not iothub or plain", v);
            return SG_E_INVALID;
        }
        o->mode = (sim_mode_t)m;
    } else if (!strcmp(f->flag, "--provision")) {
        static const char *const provs[] = {"none", "import"};    /* index = sim_prov_t */
        int m = choose(v, provs, 2);
        if (m < 0) {
            snprintf(err, err_len, "--provision: '%s' is not none or import", v);
            return SG_E_INVALID;
        }
        o->provision = (sim_prov_t)m;
    } else if (!strcmp(f->flag, "--slice")) {
        if (sim_parse_slice(v, &o->slice_index, &o->slice_count) != SG_OK) {
            snprintf(err, err_len, "--slice: '%s' is not I/N with 0 <= I < N", v);
            return SG_E_INVALID;
        }
    } else if (!strcmp(f->flag, "--port")) {
        o->n_ports = 0;
        char buf[2048];
        snprintf(buf, sizeof buf, "%s", v);
        char *save = NULL;
        for (char *p = strtok_r(buf, ", ", &save); p; p = strtok_r(NULL, ", ", &save)) {
            long port = strtol(p, &end, 10);
            if (*end || port < 1 || port > 65535 || o->n_ports == SIM_MAX_PORTS) {
                snprintf(err, err_len, "--port: '%s' is not a port from 1 to 65535 (at most %d ports)", p, SIM_MAX_PORTS);
                return SG_E_INVALID;
            }
            o->ports[o->n_ports++] = (int)port;
        }
        if (o->n_ports == 0) {
            snprintf(err, err_len, "--port: no port given");
            return SG_E_INVALID;
        }
    } else if (!strcmp(f->flag, "--source")) {
        o->n_sources = 0;
        o->n_source_addrs = 0;
        char buf[2048];
        snprintf(buf, sizeof buf, "%s", v);
        char *save = NULL;
        for (char *p = strtok_r(buf, ", ", &save); p; p = strtok_r(NULL, ", ", &save)) {
            if (o->n_sources == SIM_MAX_SOURCES || sim_parse_source(p, &o->sources[o->n_sources]) != SG_OK) {
                snprintf(err, err_len, "--source: '%s' is not an IPv4 address or a.b.c.d/len block (at most %d)", p,
                         SIM_MAX_SOURCES);
                return SG_E_INVALID;
            }
            o->n_source_addrs += o->sources[o->n_sources++].count;
        }
    }
    return SG_OK;
}

void sim_opts_defaults(sim_opts_t *o)
{
    memset(o, 0, sizeof *o);
    char err[256];
    for (size_t i = 0; i < N_FLAGS; i++)
        if (set_flag(o, &k_flags[i], k_flags[i].def, err, sizeof err) != SG_OK && k_flags[i].def[0]) {
            fprintf(stderr, "sacgate-sim: bad default: %s\n", err);
            abort();
        }
}

static const flag_t *find_flag(const char *name)
{
    for (size_t i = 0; i < N_FLAGS; i++)
        if (!strcmp(k_flags[i].flag, name))
            return &k_flags[i];
    return NULL;
}

/* Flags whose values are secrets: the command line recorded in reports shows them redacted. */
static bool secret_flag(const char *arg)
{
    static const char *const secret[] = {"--token", "--key-seed", "--psk-hex", "--password"};
    for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++) {
        size_t l = strlen(secret[i]);
        if (!strncmp(arg, secret[i], l) && (arg[l] == 0 || arg[l] == '='))
            return true;
    }
    return false;
}

sg_rc sim_opts_parse(sim_opts_t *o, int argc, char **argv, char *err, size_t err_len)
{
    size_t used = 0;
    for (int i = 0; i < argc; i++) {
        const char *shown = argv[i];
        char buf[64];
        if (i > 0 && secret_flag(argv[i - 1]) && !strchr(argv[i - 1], '='))
            shown = "<redacted>";
        else if (secret_flag(argv[i]) && strchr(argv[i], '=')) {
            snprintf(buf, sizeof buf, "%.*s=<redacted>", (int)(strchr(argv[i], '=') - argv[i]), argv[i]);
            shown = buf;
        }
        int n = snprintf(o->command_line + used, sizeof o->command_line - used, "%s%s", i ? " " : "", shown);
        if (n > 0 && used + (size_t)n < sizeof o->command_line)
            used += (size_t)n;
    }
    for (int i = 0; i < argc; i++) {
        char name[64];
        const char *arg = argv[i], *val = NULL;
        const char *eq = strchr(arg, '=');
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, err_len, "unexpected argument '%s' (see sacgate-sim --help)", arg);
            return SG_E_INVALID;
        }
        if (eq && (size_t)(eq - arg) < sizeof name) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - arg), arg);
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", arg);
        }
        const flag_t *f = find_flag(name);
        if (!f) {
            snprintf(err, err_len, "unknown flag '%s' (see sacgate-sim --help)", name);
            return SG_E_INVALID;
        }
        if (!val) {
            /* a bool flag alone means on; every other flag takes the next argument */
            if (f->kind == K_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0 ||
                                      !strchr("ofty01n", argv[i + 1][0]))) {
                val = "on";
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                snprintf(err, err_len, "%s needs a value", name);
                return SG_E_INVALID;
            }
        }
        SG_GUARD(set_flag(o, f, val, err, err_len));
    }
    return SG_OK;
}

sg_rc sim_parse_slice(const char *s, unsigned *index, unsigned *count)
{
    char *end;
    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        return SG_E_INVALID;
    unsigned long i = strtoul(s, &end, 10);
    if (end == s || *end != '/' || errno)
        return SG_E_INVALID;
    const char *n_s = end + 1;
    unsigned long n = strtoul(n_s, &end, 10);
    if (end == n_s || *end || errno || n == 0 || n > 1000000 || i >= n || n_s[0] < '0' || n_s[0] > '9')
        return SG_E_INVALID;
    *index = (unsigned)i;
    *count = (unsigned)n;
    return SG_OK;
}

void sim_slice_range(uint64_t first, uint64_t devices, unsigned index, unsigned count, uint64_t *slice_first,
                     uint64_t *slice_n)
{
    /* slice i covers [floor(i*D/N), floor((i+1)*D/N)): disjoint, contiguous, complete */
    unsigned __int128 d = devices;
    uint64_t a = (uint64_t)(d * index / count), b = (uint64_t)(d * (index + 1) / count);
    *slice_first = first + a;
    *slice_n = b - a;
}

sg_rc sim_parse_source(const char *s, sim_source_t *out)
{
    char buf[64];
    if (strlen(s) >= sizeof buf)
        return SG_E_INVALID;
    snprintf(buf, sizeof buf, "%s", s);
    int len = 32;
    char *slash = strchr(buf, '/');
    if (slash) {
        char *end;
        long l = strtol(slash + 1, &end, 10);
        if (slash[1] == 0 || *end || l < 8 || l > 32)
            return SG_E_INVALID;
        len = (int)l;
        *slash = 0;
    }
    struct in_addr a;
    if (inet_pton(AF_INET, buf, &a) != 1)
        return SG_E_INVALID;
    uint32_t host = ntohl(a.s_addr);
    uint32_t mask = len == 32 ? 0xffffffffu : ~((1u << (32 - len)) - 1);
    uint32_t net = host & mask;
    uint64_t n = (uint64_t)1 << (32 - len);
    if (len == 32) {
        out->base = host;
        out->count = 1;
    } else if (len == 31) {
        out->base = net;
        out->count = 2;
    } else {
        out->base = net + 1;   /* no network or broadcast address */
        out->count = (uint32_t)(n - 2);
    }
    return SG_OK;
}

sg_rc sim_read_ports_env(const char *path, int *ports, int *n_ports, int max, int *admin_port)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return SG_E_IO;
    char line[4096];
    *n_ports = 0;
    sg_rc rc = SG_E_MALFORMED;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "MQTT_PORTS=", 11)) {
            char *p = line + 11, *end;
            rc = SG_OK;
            for (;;) {
                while (*p == '"' || *p == ' ' || *p == '\'')
                    p++;
                if (*p < '0' || *p > '9')
                    break;
                long port = strtol(p, &end, 10);
                if (port < 1 || port > 65535 || *n_ports == max) {
                    rc = SG_E_MALFORMED;
                    break;
                }
                ports[(*n_ports)++] = (int)port;
                p = end;
            }
        } else if (!strncmp(line, "ADMIN_PORT=", 11) && admin_port) {
            long port = strtol(line + 11, NULL, 10);
            if (port > 0 && port <= 65535)
                *admin_port = (int)port;
        }
    }
    fclose(f);
    if (rc == SG_OK && *n_ports == 0)
        rc = SG_E_MALFORMED;
    return rc;
}

static sg_rc resolve(sim_opts_t *o, char *err, size_t err_len)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(o->host, "1", &hints, &res);
    if (rc != 0) {
        snprintf(err, err_len, "--host %s: %s", o->host, gai_strerror(rc));
        return SG_E_INVALID;
    }
    memcpy(&o->addr, res->ai_addr, res->ai_addrlen);
    o->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    if (o->n_sources && o->addr.ss_family != AF_INET) {
        snprintf(err, err_len, "--source takes IPv4 blocks, but --host %s is not IPv4", o->host);
        return SG_E_INVALID;
    }
    return SG_OK;
}

sg_rc sim_opts_finish(sim_opts_t *o, char *err, size_t err_len)
{
    if (o->ports_env[0]) {
        int admin = 0;
        if (sim_read_ports_env(o->ports_env, o->ports, &o->n_ports, SIM_MAX_PORTS, &admin) != SG_OK) {
            snprintf(err, err_len, "--ports-env %s: no readable MQTT_PORTS line", o->ports_env);
            return SG_E_INVALID;
        }
        if (admin && !strcmp(o->admin_url, "http://127.0.0.1:8080"))
            snprintf(o->admin_url, sizeof o->admin_url, "http://127.0.0.1:%d", admin);
    }
    if (!o->topic[0])
        snprintf(o->topic, sizeof o->topic, "%s",
                 o->mode == SIM_MODE_IOTHUB ? "devices/{id}/messages/events/" : "sim/{id}/telemetry");
    if (!o->command_topic[0])
        snprintf(o->command_topic, sizeof o->command_topic, "%s",
                 o->mode == SIM_MODE_IOTHUB ? "devices/{id}/messages/devicebound/#" : "sim/{id}/commands");
    if (!o->backend_topic[0]) {
        /* the telemetry template with the device id as a single-level wildcard */
        char *id = strstr(o->topic, "{id}");
        if (id)
            snprintf(o->backend_topic, sizeof o->backend_topic, "%.*s+%s", (int)(id - o->topic), o->topic, id + 4);
        else
            snprintf(o->backend_topic, sizeof o->backend_topic, "%s", o->topic);
        /* a trailing '/' (IoT Hub's empty property bag) cannot be matched by a filter ending in '/' alone */
        size_t l = strlen(o->backend_topic);
        if (l && o->backend_topic[l - 1] == '/' && l + 1 < sizeof o->backend_topic)
            strcat(o->backend_topic, "#");
    }
    if (o->key_seed_file[0]) {
        FILE *f = fopen(o->key_seed_file, "r");
        if (!f || !fgets(o->key_seed, sizeof o->key_seed, f) || (o->key_seed[strcspn(o->key_seed, "\r\n")] = 0,
                                                               o->key_seed[0] == 0)) {
            snprintf(err, err_len, "--key-seed-file %s: cannot read a seed from it", o->key_seed_file);
            if (f)
                fclose(f);
            return SG_E_INVALID;
        }
        fclose(f);
    }
    if (o->token_file[0]) {
        FILE *f = fopen(o->token_file, "r");
        if (!f || !fgets(o->token, sizeof o->token, f)) {
            snprintf(err, err_len, "--token-file %s: cannot read it", o->token_file);
            if (f)
                fclose(f);
            return SG_E_INVALID;
        }
        fclose(f);
        o->token[strcspn(o->token, "\r\n")] = 0;
    }
    if (o->report[0]) {
        if (!o->json[0])
            snprintf(o->json, sizeof o->json, "%.500s.json", o->report);
        if (!o->html[0])
            snprintf(o->html, sizeof o->html, "%.500s.html", o->report);
    }
    sim_slice_range(o->first, o->devices, o->slice_index, o->slice_count ? o->slice_count : 1, &o->slice_first,
                    &o->slice_n);
    if (o->slice_count == 0)
        o->slice_count = 1;
    if (o->mode == SIM_MODE_IOTHUB && o->provision == SIM_PROV_IMPORT && o->credentials[0]) {
        snprintf(err, err_len, "--provision import registers keys derived from --key-seed; it cannot be used with "
                               "--credentials");
        return SG_E_INVALID;
    }
    if ((o->provision == SIM_PROV_IMPORT || (o->backend && o->mode == SIM_MODE_IOTHUB)) && !o->token[0]) {
        snprintf(err, err_len, "--provision import and the iothub back-end call the admin API: give --token or "
                               "--token-file");
        return SG_E_INVALID;
    }
    if (o->mode == SIM_MODE_PLAIN && o->provision == SIM_PROV_IMPORT) {
        snprintf(err, err_len, "--provision import is for sacgate (--mode iothub)");
        return SG_E_INVALID;
    }
    if ((o->disrupt_after >= 0) != (o->disrupt_command[0] != 0)) {
        snprintf(err, err_len, "--disrupt-after and --disrupt-command go together");
        return SG_E_INVALID;
    }
    if (o->command_rate > 0 && !o->backend) {
        snprintf(err, err_len, "--command-rate needs --backend (the back-end sends the commands)");
        return SG_E_INVALID;
    }
    if (o->command_rate > 0 && !o->subscribe)
        o->subscribe = true;   /* commands need a subscriber to arrive at */
    if (o->tls && !o->insecure && !o->cafile[0] && !o->psk_hex[0] && !o->psk_derive) {
        snprintf(err, err_len, "give --cafile to verify the server (or --insecure)");
        return SG_E_INVALID;
    }
    if ((o->cert[0] != 0) != (o->key[0] != 0)) {
        snprintf(err, err_len, "--cert and --key go together");
        return SG_E_INVALID;
    }
    if (strcmp(o->tls_version, "1.2") && strcmp(o->tls_version, "1.3") && strcmp(o->tls_version, "any")) {
        snprintf(err, err_len, "--tls-version: '%s' is not 1.2, 1.3 or any", o->tls_version);
        return SG_E_INVALID;
    }
    if (o->backoff_max_ms < o->backoff_min_ms)
        o->backoff_max_ms = o->backoff_min_ms;
    SG_GUARD(resolve(o, err, err_len));
    if (o->threads == 0)
        o->threads = 1;
    if (o->processes == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        uint64_t per = (uint64_t)o->sessions_per_process * (uint64_t)o->threads;
        uint64_t need = (o->slice_n + per - 1) / per;
        o->processes = (int)(need > (uint64_t)(cpus > 0 ? cpus : 1) ? need : (uint64_t)(cpus > 0 ? cpus : 1));
    }
    /* never more threads than devices */
    while (o->processes > 1 && (uint64_t)o->processes * (uint64_t)o->threads > o->slice_n)
        o->processes--;
    if ((uint64_t)o->processes * (uint64_t)o->threads > o->slice_n && o->slice_n > 0)
        o->threads = (int)o->slice_n;
    return SG_OK;
}

void sim_opts_help(FILE *out)
{
    fprintf(out,
            "usage: sacgate-sim [run] [flags]           simulate devices (below)\n"
            "       sacgate-sim merge [--json OUT.json] [--html OUT.html] IN.json...\n"
            "                                           merge slice reports (histograms are merged, not averaged)\n"
            "       sacgate-sim report IN.json OUT.html write the HTML report of a JSON summary\n"
            "       sacgate-sim keys [--devices N --first N --prefix P --key-seed S]\n"
            "                                           print 'deviceId base64key' lines (a --credentials file)\n\n"
            "Flags take a value as '--flag value' or '--flag=value'; on/off flags alone mean on.\n");
    const char *group = "";
    for (size_t i = 0; i < N_FLAGS; i++) {
        const flag_t *f = &k_flags[i];
        if (strcmp(group, f->group)) {
            group = f->group;
            fprintf(out, "\n%s:\n", group);
        }
        char text[1024];
        snprintf(text, sizeof text, "%s%s%s%s", f->help, f->def[0] ? " [" : "", f->def, f->def[0] ? "]" : "");
        fprintf(out, "  %-24s ", f->flag);
        /* wrap the text at 100 columns under its first line */
        const char *p = text;
        int col = 27;
        bool first = true;
        while (*p) {
            while (*p == ' ')
                p++;
            size_t word = strcspn(p, " ");
            if (word == 0)
                break;
            if (!first && col + 1 + (int)word > 100) {
                fprintf(out, "\n%27s", "");
                col = 27;
            } else if (!first) {
                fputc(' ', out);
                col++;
            }
            fwrite(p, 1, word, out);
            col += (int)word;
            p += word;
            first = false;
        }
        fputc('\n', out);
    }
    fprintf(out,
            "\nEvery second a progress line; at the end a summary (and --json/--html/--report files) with sessions,\n"
            "failures and drops by reason, rates, and latency percentiles (p50/p90/p99/p99.9/max) of connect,\n"
            "publish-to-PUBACK, command-to-device and telemetry publish-to-readable, plus the memory and CPU of the\n"
            "simulator and of the server processes named by --server-*.\n");
}
