/* main.c — the `sacgate` binary: one command per tier (frontend, router, store, admin), `all`
 * (every tier in this process over inproc://, the embedded default), and tools (`init`, `token`).
 * Configuration comes from defaults, then --config FILE (ZPL), then SACGATE_* environment
 * variables, then flags; `sacgate --help` lists every key. */
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "adm_http.h"
#include "adm_tokens.h"
#include "app_health.h"
#include "fe_frontend.h"
#include "fe_tickets.h"
#include "rt_router.h"
#include "sg_zmq.h"
#include "sg_codec.h"
#include "sg_config.h"
#include "sg_curve.h"
#include "sg_log.h"
#include "sg_pki.h"
#include "sg_sas.h"
#include "sg_time.h"
#include "sg_wire.h"
#include "st_shard.h"

#define DEMO_DEVICE "demo-device"

#ifndef SACGATE_VERSION
#error "SACGATE_VERSION comes from project(VERSION) in the top CMakeLists.txt (app/CMakeLists.txt)"
#endif

/* Flags per command: --flag VALUE sets the configuration key, or (key NULL) is an argument of a
 * tool that the tool reads itself. */
typedef struct {
    const char *cmd;     /* NULL = every tier command (all, store, router, frontend, admin); "*" = every command */
    const char *flag;
    const char *key;
    const char *help;
} alias_t;

static const alias_t k_aliases[] = {
    {"*", "--log-level", "log.level", "debug, info, warn or error"},
    {NULL, "--shards", "cluster.shards", "shard names, or name=endpoint pairs, comma-separated"},
    {NULL, "--routers", "cluster.routers", "router endpoints, comma-separated"},
    {NULL, "--health-port", "health.port", "port of /healthz and /readyz (0 = off)"},
    {"all", "--data-dir", "all.data_dir", "directory for shards, TLS files and tokens"},
    {"all", "--shard-count", "all.shards", "number of in-process shards"},
    {"all", "--mqtt-port", "frontend.mqtt_port", "MQTT over TLS port (0 = pick a free port)"},
    {"all", "--ws-port", "frontend.ws_port", "MQTT over WebSocket port (0 = pick a free port)"},
    {"all", "--admin-port", "admin.port", "admin HTTP port (0 = pick a free port)"},
    {"all", "--admin-bind", "admin.bind", "admin HTTP address"},
    {"all", "--sync", "store.sync", "always or never"},
    {"store", "--name", "store.name", "this shard's name (one of --shards)"},
    {"store", "--bind", "store.bind", "endpoint routers connect to"},
    {"store", "--data-dir", "store.data_dir", "database directory"},
    {"store", "--sync", "store.sync", "always or never"},
    {"router", "--name", "router.name", "router name"},
    {"router", "--bind", "router.bind", "endpoint frontends and admins connect to"},
    {"frontend", "--name", "frontend.name", "frontend name"},
    {"frontend", "--bind", "frontend.bind", "listen address"},
    {"frontend", "--mqtt-port", "frontend.mqtt_port", "MQTT over TLS port"},
    {"frontend", "--ws-port", "frontend.ws_port", "MQTT over WebSocket port"},
    {"frontend", "--cert", "frontend.cert", "server certificate chain (PEM)"},
    {"frontend", "--key", "frontend.key", "server private key (PEM)"},
    {"frontend", "--threads", "frontend.threads", "event-loop threads (0 = one per core)"},
    {"admin", "--bind", "admin.bind", "HTTP address"},
    {"admin", "--admin-port", "admin.port", "HTTP port"},
    {"admin", "--port", "admin.port", "HTTP port"},
    {"admin", "--tokens", "admin.tokens", "API token file"},
    {"init", "--data-dir", NULL, "directory to write the files into (required; created if missing)"},
    {"init", "--names", NULL, "more names for the server certificate, comma-separated (DNS names or IPs); on an "
                              "existing directory the server certificate is issued again for them by its CA"},
    {"token", "--device", NULL, "device id (required)"},
    {"token", "--key", NULL, "the device's SAS key, base64 (required)"},
    {"token", "--host", NULL, "host part of the token's resource (default localhost; not checked by sacgate)"},
    {"token", "--ttl", NULL, "seconds the token stays valid (default 3600)"},
};

/* The commands: what each does, and which configuration sections it reads (NULL = every one). */
typedef struct {
    const char *name;
    const char *summary;
    const char *sections[5];
} command_t;

static const command_t k_commands[] = {
    {"all", "every tier in one process over inproc:// (the embedded default); on first start writes a dev CA,\n"
            "a server certificate and an admin token into --data-dir and registers demo-device",
     {NULL}},
    {"store", "one storage shard (RocksDB) of a cluster", {"cluster", "store", "health", "log", NULL}},
    {"router", "the consistent-hash router between frontends, admins and shards", {"cluster", "router", "health", "log", NULL}},
    {"frontend", "the MQTT/TLS device frontend", {"cluster", "frontend", "health", "log", NULL}},
    {"admin", "the HTTP API (docs/openapi.yaml)", {"cluster", "admin", "log", NULL}},
    {"init", "write the dev CA, server certificate, admin token, TLS ticket keys and a CURVE key pair per tier into --data-dir",
     {"", NULL}},
    {"token", "print a device SAS token signed with its key", {"", NULL}},
};

static const command_t *command_find(const char *name)
{
    for (size_t i = 0; i < sizeof k_commands / sizeof k_commands[0]; i++)
        if (strcmp(k_commands[i].name, name) == 0)
            return &k_commands[i];
    return NULL;
}

static bool is_tier(const char *cmd)
{
    return strcmp(cmd, "init") != 0 && strcmp(cmd, "token") != 0;
}

static bool alias_applies(const alias_t *a, const char *cmd)
{
    if (!a->cmd)
        return is_tier(cmd);
    return strcmp(a->cmd, "*") == 0 || strcmp(a->cmd, cmd) == 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: sacgate COMMAND [--config FILE] [--set section.key=value ...] [flags]\n"
            "       sacgate COMMAND --help     that command's flags and configuration keys\n"
            "       sacgate --version\n\n"
            "commands:\n"
            "  all        every tier in one process (embedded default); writes a dev CA, server\n"
            "             certificate and admin token into --data-dir on first start\n"
            "  store      one storage shard        router     the consistent-hash router\n"
            "  frontend   MQTT/TLS device frontend admin      the HTTP API\n"
            "  init       write the dev CA, server certificate and admin token into --data-dir\n"
            "             (--names a,b: a server certificate for those names too, issued again\n"
            "             by the same CA when DIR has one; running frontends pick it up)\n"
            "  token      print a device SAS token: --device ID --key BASE64 [--host H] [--ttl SECONDS]\n\n"
            "flags:\n");
    for (size_t i = 0; i < sizeof k_aliases / sizeof k_aliases[0]; i++) {
        const alias_t *a = &k_aliases[i];
        fprintf(out, "  %-9s %-15s %s", !a->cmd ? "tiers" : strcmp(a->cmd, "*") == 0 ? "any" : a->cmd, a->flag, a->help);
        fprintf(out, a->key ? " (%s)\n" : "\n", a->key);
    }
    fprintf(out, "\nconfiguration keys (file: sections as ZPL blocks; environment: SACGATE_SECTION_KEY):\n");
    sg_config_print_help(out, "");
}

/* `sacgate CMD --help`: that command's flags, then the configuration keys it reads. */
static void command_usage(FILE *out, const command_t *c)
{
    bool tool = !is_tier(c->name);
    fprintf(out, "usage: sacgate %s [flags]%s\n\n%s\n\nflags:\n", c->name,
            tool ? "" : " [--config FILE] [--set section.key=value ...]", c->summary);
    for (size_t i = 0; i < sizeof k_aliases / sizeof k_aliases[0]; i++) {
        const alias_t *a = &k_aliases[i];
        if (!alias_applies(a, c->name))
            continue;
        fprintf(out, "  %-15s %s", a->flag, a->help);
        fprintf(out, a->key ? " (%s)\n" : "\n", a->key);
    }
    fprintf(out, "  %-15s %s\n  %-15s %s\n  %-15s %s\n", "--config FILE", "read configuration from FILE (ZPL)",
            "--set K=V", "set configuration key K (section.key) to V", "--help", "this text");
    if (c->sections[0] && !*c->sections[0])
        return;   /* a tool: no configuration keys */
    fprintf(out, "\nconfiguration keys it reads (file: sections as ZPL blocks; environment: SACGATE_SECTION_KEY):\n");
    if (!c->sections[0])
        sg_config_print_help(out, "");
    for (size_t i = 0; i < sizeof c->sections / sizeof c->sections[0] && c->sections[i]; i++)
        sg_config_print_help(out, c->sections[i]);
}

static int fail(const char *what)
{
    fprintf(stderr, "sacgate: %s\n", what);
    return 2;
}

/* Apply --config, environment and flags for cmd. Leftover tool arguments are returned in *rest. */
static int load_config(sg_config_t *cfg, const char *cmd, int argc, char **argv, zhashx_t *rest)
{
    char err[300];
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            if (sg_config_load_file(cfg, argv[i + 1], err, sizeof err) != SG_OK)
                return fail(err);
        }
    if (sg_config_load_env(cfg, err, sizeof err) != SG_OK)
        return fail(err);
    for (int i = 2; i < argc; i++) {
        char *arg = argv[i], *val = NULL, flag[64];
        char *eq = strchr(arg, '=');
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, sizeof err, "unexpected argument '%s' for '%s' (see sacgate %s --help)", arg, cmd, cmd);
            return fail(err);
        }
        if (eq && (size_t)(eq - arg) < sizeof flag) {
            snprintf(flag, sizeof flag, "%.*s", (int)(eq - arg), arg);
            val = eq + 1;
        } else {
            snprintf(flag, sizeof flag, "%s", arg);
            if (i + 1 >= argc) {
                snprintf(err, sizeof err, "%s needs a value", flag);
                return fail(err);
            }
            val = argv[++i];
        }
        if (strcmp(flag, "--config") == 0)
            continue;
        if (strcmp(flag, "--set") == 0) {
            char *kv = strdup(val), *e = strchr(kv, '=');
            sg_rc rc = SG_E_INVALID;
            if (e) {
                *e = 0;
                rc = sg_config_set(cfg, kv, e + 1, err, sizeof err);
            } else {
                snprintf(err, sizeof err, "--set takes section.key=value");
            }
            free(kv);
            if (rc != SG_OK)
                return fail(err);
            continue;
        }
        const alias_t *alias = NULL;
        for (size_t k = 0; k < sizeof k_aliases / sizeof k_aliases[0] && !alias; k++)
            if (alias_applies(&k_aliases[k], cmd) && strcmp(k_aliases[k].flag, flag) == 0)
                alias = &k_aliases[k];
        if (!alias) {
            snprintf(err, sizeof err, "unknown flag '%s' for '%s' (see sacgate %s --help)", flag, cmd, cmd);
            return fail(err);
        }
        if (alias->key) {
            if (sg_config_set(cfg, alias->key, val, err, sizeof err) != SG_OK)
                return fail(err);
        } else if (rest) {
            zhashx_update(rest, flag, val);
        }
    }
    int level = sg_log_parse_level(sg_config_str(cfg, "log.level"));
    sg_log_set_level(level < 0 ? SG_LOG_INFO : (sg_log_level_t)level);
    return 0;
}

/* ---------- files of the data directory ---------- */

static char *path_in(const char *dir, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return NULL;
    return p;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Write a secret file (0600) only if it does not exist yet. */
static int write_new(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? 0 : -1;
    size_t n = strlen(text);
    int rc = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0 ? 0 : -1;
    close(fd);
    return rc;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    buf[strcspn(buf, "\r\n")] = 0;
    return strdup(buf);
}

/* Dev CA + server certificate, and an admin API token (admin.token plain, tokens hashed). */
static int init_dir(const char *dir, const char *names)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "sacgate: cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    if (sg_pki_ensure_dev(dir, names) != SG_OK) {
        fprintf(stderr, "sacgate: cannot write the development certificates into %s (see the log above)\n", dir);
        return -1;
    }
    char *tok_path = path_in(dir, "admin.token"), *tokens_path = path_in(dir, "tokens");
    int rc = 0;
    if (!exists(tok_path)) {
        uint8_t raw[24];
        char hex[49], token[64], line[256];
        if (RAND_bytes(raw, sizeof raw) != 1) {
            rc = -1;
        } else {
            sg_hex_encode(raw, sizeof raw, hex);
            snprintf(token, sizeof token, "sgt_%s", hex);
            char tline[80];
            snprintf(tline, sizeof tline, "%s\n", token);
            if (adm_tokens_line("admin", "admin", token, line, sizeof line) != SG_OK || write_new(tok_path, tline) != 0)
                rc = -1;
            /* tokens may already hold other tokens: append ours */
            int fd = rc == 0 ? open(tokens_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
            if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line) || fsync(fd) != 0)
                rc = -1;
            if (fd >= 0)
                close(fd);
        }
    }
    char *curve = path_in(dir, "curve");
    if (rc == 0 && sg_curve_make(curve) != SG_OK)
        rc = -1;
    free(curve);
    /* TLS session-ticket keys every frontend of the cluster shares (fe_tickets.h) */
    char *tickets = path_in(dir, "ticket.keys");
    if (rc == 0 && !exists(tickets) && fe_tickets_generate(tickets) != SG_OK) {
        fprintf(stderr, "sacgate: cannot write %s: %s\n", tickets, strerror(errno));
        rc = -1;
    }
    free(tickets);
    char *demo = path_in(dir, DEMO_DEVICE ".key");
    if (rc == 0 && !exists(demo)) {
        uint8_t raw[32];
        char b64[64];
        if (RAND_bytes(raw, sizeof raw) != 1) {
            rc = -1;
        } else {
            sg_b64_encode(raw, sizeof raw, b64);
            strcat(b64, "\n");
            rc = write_new(demo, b64);
        }
    }
    if (rc != 0)
        fprintf(stderr, "sacgate: cannot write the token files into %s\n", dir);
    free(demo);
    free(tok_path);
    free(tokens_path);
    return rc;
}

/* ---------- one synchronous request through a router (for start-up tasks) ---------- */

static int cluster_call(const char *routers, zframe_t *frame, int timeout_ms, int *status)
{
    zsock_t *s = zsock_new(ZMQ_DEALER);
    char *list = strdup(routers), *save = NULL;
    for (char *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save))
        zsock_connect(s, "%s", ep);
    free(list);
    int rc = -1;
    int64_t end = sg_mono_ms() + timeout_ms;
    /* The router may not have reached the shard yet: retry until the deadline. */
    while (rc != 0 && sg_mono_ms() < end) {
        zframe_t *copy = zframe_dup(frame);
        zframe_send(&copy, s, 0);
        zpoller_t *p = zpoller_new(s, NULL);
        if (zpoller_wait(p, 1000) == s) {
            zframe_t *ans = zframe_recv(s);
            sg_wire_hdr_t h;
            if (ans && sg_wire_decode(zframe_data(ans), zframe_size(ans), &h) == SG_OK && h.type == SG_MSG_ADMIN_RES) {
                *status = h.status;
                rc = 0;
            }
            zframe_destroy(&ans);
        }
        zpoller_destroy(&p);
    }
    zsock_destroy(&s);
    return rc;
}

/* Register the demo device with the key in DIR/demo-device.key (idempotent). */
static int ensure_demo_device(const char *dir, const char *routers, char **key_out)
{
    char *kpath = path_in(dir, DEMO_DEVICE ".key");
    char *key = read_text(kpath);
    free(kpath);
    if (!key)
        return -1;
    char json[256];
    snprintf(json, sizeof json, "{\"tags\":{\"purpose\":\"demo\"},\"auth\":{\"type\":\"sas\",\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}",
             key, key);
    sg_wire_hdr_t h = sg_wire_hdr(SG_MSG_ADMIN, DEMO_DEVICE);
    sg_wbuf_t w;
    sg_wbuf_init(&w, 4096);
    int status = 0, rc = -1;
    if (sg_wire_encode_hdr(&w, &h) == SG_OK && sg_wire_put_admin(&w, SG_ADM_DEVICE_PUT, json, strlen(json)) == SG_OK) {
        zframe_t *f = zframe_new(w.data, w.len);
        rc = cluster_call(routers, f, 10000, &status) == 0 && (status == 200 || status == 201) ? 0 : -1;
        zframe_destroy(&f);
        if (rc != 0 && status == 507) {
            /* a restart on a full volume still comes up and serves reads; the device is
             * registered again at the next start with room (it is kept from an earlier one) */
            SG_WARN("sacgate", "demo.not_registered", "reason=\"the data volume is full\"");
            rc = 0;
        }
    }
    sg_wbuf_fini(&w);
    *key_out = key;
    return rc;
}

static void print_banner(const char *dir, int mqtt_port, int admin_port, const char *admin_bind, const char *key,
                         int shards, int ws_port, bool admin_tls)
{
    /* With admin.tls_cert/admin.tls_key the admin speaks HTTPS; curl then needs the CA (the dev
     * certificate names localhost and 127.0.0.1). */
    char admin_url[160], curl_ca[4200] = "";
    snprintf(admin_url, sizeof admin_url, "%s://%s:%d", admin_tls ? "https" : "http", admin_bind, admin_port);
    if (admin_tls)
        snprintf(curl_ca, sizeof curl_ca, "--cacert %s/ca.crt ", dir);
    uint8_t raw[64];
    size_t rawlen = 0;
    char token[1024] = "";
    int64_t se = sg_now_ms() / 1000 + 24 * 3600;
    if (sg_b64_decode(key, strlen(key), raw, &rawlen) != SG_OK ||
        sg_sas_make(token, sizeof token, "localhost", DEMO_DEVICE, raw, rawlen, se) != SG_OK)
        snprintf(token, sizeof token, "(could not make a token)");
    printf("sacgate all: ready (%d shard%s)\n"
           "  MQTT over TLS    localhost:%d\n"
           "  MQTT over WSS    wss://localhost:%d/$iothub/websocket  (subprotocol mqtt)\n"
           "  admin HTTP       %s   (token in %s/admin.token)\n"
           "  dev CA           %s/ca.crt\n"
           "  data             %s\n\n"
           "Send telemetry as the demo device (token valid 24 h; `sacgate token` makes more):\n"
           "  mosquitto_pub -h localhost -p %d --cafile %s/ca.crt -V mqttv311 -i " DEMO_DEVICE " \\\n"
           "    -u 'localhost/" DEMO_DEVICE "/?api-version=2021-04-12' \\\n"
           "    -P '%s' \\\n"
           "    -t 'devices/" DEMO_DEVICE "/messages/events/' -q 1 -m 'hello'\n\n"
           "Read it back, and queue a command for the device:\n"
           "  curl -s %s-H \"Authorization: Bearer $(cat %s/admin.token)\" '%s/v1/telemetry?partition=0'\n"
           "  curl -s %s-X POST -H \"Authorization: Bearer $(cat %s/admin.token)\" -d '{\"payload\":\"open valve\"}' \\\n"
           "    %s/v1/devices/" DEMO_DEVICE "/messages\n\n"
           "Stop with Ctrl-C.\n",
           shards, shards == 1 ? "" : "s", mqtt_port, ws_port, admin_url, dir, dir, dir, mqtt_port, dir,
           token, curl_ca, dir, admin_url, curl_ca, dir, admin_url);
    fflush(stdout);
}

/* ---------- running ---------- */

static sigset_t g_stop_signals;

/* A frontend holds one descriptor per device: use the whole hard limit we are given. */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            SG_WARN("sacgate", "nofile.raise_failed", "reason=\"%s\"", strerror(errno));
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096)
        SG_WARN("sacgate", "nofile.low", "limit=%llu reason=\"a frontend can hold only about this many devices\"",
                (unsigned long long)rl.rlim_cur);
}

static void block_signals(void)
{
    sigemptyset(&g_stop_signals);
    sigaddset(&g_stop_signals, SIGINT);
    sigaddset(&g_stop_signals, SIGTERM);
    sigaddset(&g_stop_signals, SIGHUP);   /* reload the server certificate (frontends) */
    /* Blocked before any thread starts, so every thread inherits the mask and only sigwait
     * in the main thread sees them. */
    pthread_sigmask(SIG_BLOCK, &g_stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Until SIGINT or SIGTERM. SIGHUP makes frontend `fe` (when this process has one) read its
 * certificate and key again; elsewhere it is logged and otherwise ignored. */
static void wait_for_stop(fe_frontend_t *fe)
{
    int sig = 0;
    for (;;) {
        sigwait(&g_stop_signals, &sig);
        if (sig != SIGHUP)
            break;
        if (fe)
            (void)fe_frontend_reload_tls(fe, "SIGHUP");
        else
            SG_INFO("sacgate", "sighup.ignored", "reason=\"nothing to reload in this tier\"");
    }
    SG_INFO("sacgate", "stopping", "signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
}

static int shard_index(const sg_config_t *cfg, const char *name, char **endpoint)
{
    char **names, **eps;
    size_t n;
    int idx = -1;
    if (rt_shard_list(cfg, &names, &eps, &n) == 0)
        for (size_t i = 0; i < n; i++)
            if (strcmp(names[i], name) == 0) {
                idx = (int)i;
                *endpoint = strdup(eps[i]);
            }
    rt_shard_list_free(names, eps, n);
    return idx;
}

static int cmd_store(sg_config_t *cfg)
{
    const char *name = sg_config_str(cfg, "store.name");
    char *ep = NULL;
    int partition = shard_index(cfg, name, &ep);
    free(ep);
    if (partition < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "shard '%s' is not in cluster.shards ('%s'); every shard must be listed, in the same order everywhere",
                 name, sg_config_str(cfg, "cluster.shards"));
        return fail(msg);
    }
    const char *dir = sg_config_str(cfg, "store.data_dir");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return fail("cannot create store.data_dir");
    st_shard_t *s = st_shard_new(cfg, name, (unsigned)partition, sg_config_str(cfg, "store.bind"), dir);
    if (!s)
        return 1;
    app_health_t *h = app_health_new(sg_config_str(cfg, "health.bind"), (int)sg_config_int(cfg, "health.port"), "store", NULL, NULL);
    wait_for_stop(NULL);
    app_health_destroy(&h);
    st_shard_destroy(&s);
    return 0;
}

static int cmd_router(sg_config_t *cfg)
{
    rt_router_t *r = rt_router_new(cfg, sg_config_str(cfg, "router.name"), sg_config_str(cfg, "router.bind"));
    if (!r)
        return 1;
    app_health_t *h = app_health_new(sg_config_str(cfg, "health.bind"), (int)sg_config_int(cfg, "health.port"), "router",
                                     rt_router_ready, r);
    wait_for_stop(NULL);
    app_health_destroy(&h);
    rt_router_destroy(&r);
    return 0;
}

static int cmd_frontend(sg_config_t *cfg)
{
    fe_frontend_t *f = fe_frontend_new(cfg, sg_config_str(cfg, "frontend.name"), sg_config_str(cfg, "cluster.routers"));
    if (!f)
        return 1;
    app_health_t *h = app_health_new(sg_config_str(cfg, "health.bind"), (int)sg_config_int(cfg, "health.port"), "frontend",
                                     fe_frontend_ready, f);
    wait_for_stop(f);
    app_health_destroy(&h);
    fe_frontend_destroy(&f);
    return 0;
}

static int cmd_admin(sg_config_t *cfg)
{
    /* Routers tell peers apart by routing id: host name plus a random part keeps several admin
     * replicas (same pid in every container) distinct. */
    char name[SG_WIRE_MAX_PEER + 1], host[40] = "admin";
    uint8_t rnd[8];   /* unguessable: a peer cannot take the admin's id over to receive its answers */
    char hex[17];
    gethostname(host, sizeof host - 1);
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return fail("no random source");
    sg_hex_encode(rnd, sizeof rnd, hex);
    snprintf(name, sizeof name, "admin/%.40s/%s", host, hex);
    adm_http_t *a = adm_http_new(cfg, name, sg_config_str(cfg, "cluster.routers"));
    if (!a)
        return 1;
    wait_for_stop(NULL);
    adm_http_destroy(&a);
    return 0;
}

static int cmd_all(sg_config_t *cfg)
{
    char err[300];
    const char *dir = sg_config_str(cfg, "all.data_dir");
    if (init_dir(dir, NULL) != 0)
        return 1;
    char *cert = path_in(dir, "server.crt"), *key = path_in(dir, "server.key"), *tokens = path_in(dir, "tokens");
    char *tickets = path_in(dir, "ticket.keys");
    if (!sg_config_is_set(cfg, "frontend.ticket_keys") &&
        sg_config_set(cfg, "frontend.ticket_keys", tickets, err, sizeof err) != SG_OK)
        return fail(err);
    free(tickets);
    if (!sg_config_is_set(cfg, "frontend.cert") && sg_config_set(cfg, "frontend.cert", cert, err, sizeof err) != SG_OK)
        return fail(err);
    if (!sg_config_is_set(cfg, "frontend.key") && sg_config_set(cfg, "frontend.key", key, err, sizeof err) != SG_OK)
        return fail(err);
    if (!sg_config_is_set(cfg, "admin.tokens") && sg_config_set(cfg, "admin.tokens", tokens, err, sizeof err) != SG_OK)
        return fail(err);
    free(cert);
    free(key);
    free(tokens);

    int n = (int)sg_config_int(cfg, "all.shards");   /* 1-64, checked by the configuration */
    char list[4096] = "";
    for (int i = 0; i < n; i++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%sstore-%d=inproc://sacgate-store-%d", i ? "," : "", i, i);
    }
    const char *router_ep = "inproc://sacgate-router";
    if (sg_config_set(cfg, "cluster.shards", list, err, sizeof err) != SG_OK)
        return fail(err);

    st_shard_t **shards = calloc(n > 0 ? (size_t)n : 1, sizeof *shards);
    int rc = 1;
    rt_router_t *router = NULL;
    fe_frontend_t *fe = NULL;
    adm_http_t *adm = NULL;
    char *demo_key = NULL;
    for (int i = 0; i < n; i++) {
        char name[32], sdir[4096], ep[64];
        snprintf(name, sizeof name, "store-%d", i);
        snprintf(sdir, sizeof sdir, "%s/%s", dir, name);
        snprintf(ep, sizeof ep, "inproc://sacgate-store-%d", i);
        if (mkdir(sdir, 0700) != 0 && errno != EEXIST)
            goto out;
        if (!(shards[i] = st_shard_new(cfg, name, (unsigned)i, ep, sdir)))
            goto out;
    }
    if (!(router = rt_router_new(cfg, "router-0", router_ep)))
        goto out;
    if (!(fe = fe_frontend_new(cfg, "fe-0", router_ep)))
        goto out;
    if (!(adm = adm_http_new(cfg, "admin-0", router_ep)))
        goto out;
    if (ensure_demo_device(dir, router_ep, &demo_key) != 0) {
        SG_ERROR("sacgate", "demo.failed", "reason=\"could not register " DEMO_DEVICE "\"");
        goto out;
    }
    print_banner(dir, fe_frontend_mqtt_port(fe), adm_http_port(adm), sg_config_str(cfg, "admin.bind"), demo_key, n,
                 fe_frontend_ws_port(fe), adm_http_tls(adm));
    wait_for_stop(fe);
    rc = 0;
out:
    free(demo_key);
    fe_frontend_destroy(&fe);   /* first: its SESSION_ENDs reach the shards */
    adm_http_destroy(&adm);
    rt_router_destroy(&router);
    for (int i = 0; i < n; i++)
        st_shard_destroy(&shards[i]);
    free(shards);
    return rc;
}

static int cmd_init(sg_config_t *cfg, zhashx_t *rest)
{
    (void)cfg;
    const char *dir = zhashx_lookup(rest, "--data-dir");
    if (!dir)
        return fail("init needs --data-dir DIR");
    if (init_dir(dir, zhashx_lookup(rest, "--names")) != 0)
        return 1;
    printf("wrote %s/ca.crt, server.crt, server.key, admin.token, tokens, ticket.keys, "
           "curve/{frontend,router,store,admin}.cert (+ _secret), curve/public/\n", dir);
    return 0;
}

static int cmd_token(zhashx_t *rest)
{
    const char *dev = zhashx_lookup(rest, "--device"), *key = zhashx_lookup(rest, "--key");
    const char *host = zhashx_lookup(rest, "--host"), *ttl = zhashx_lookup(rest, "--ttl");
    if (!dev || !key)
        return fail("token needs --device ID --key BASE64 [--host HOST] [--ttl SECONDS]");
    uint8_t raw[128];
    size_t n;
    if (strlen(key) > 170 || sg_b64_decode(key, strlen(key), raw, &n) != SG_OK)
        return fail("--key must be the device's base64 key");
    long long t = ttl ? atoll(ttl) : 3600;
    if (t <= 0)
        return fail("--ttl must be a positive number of seconds");
    char token[2048];
    if (sg_sas_make(token, sizeof token, host ? host : "localhost", dev, raw, n, sg_now_ms() / 1000 + t) != SG_OK)
        return fail("could not make a token (is the device id valid?)");
    printf("%s\n", token);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
        printf("sacgate %s\n", SACGATE_VERSION);
        return 0;
    }
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    const command_t *command = command_find(cmd);
    if (!command) {
        fprintf(stderr, "sacgate: unknown command '%s'\n\n", cmd);
        usage(stderr);
        return 2;
    }
    bool clustered = strcmp(cmd, "store") == 0 || strcmp(cmd, "router") == 0 || strcmp(cmd, "frontend") == 0 ||
                     strcmp(cmd, "admin") == 0;
    bool tier = is_tier(cmd), tool = !tier;
    /* Flags take a value each: only a --help or -h where a flag may stand asks for help. */
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            command_usage(stdout, command);
            return 0;
        }
        if (strncmp(argv[i], "--", 2) == 0 && !strchr(argv[i], '='))
            i++;   /* its value */
    }
    sg_config_t *cfg = sg_config_new();
    zhashx_t *rest = tool ? zhashx_new() : NULL;
    int rc = load_config(cfg, cmd, argc, argv, rest);
    if (rc == 0) {
        if (tier) {
            raise_nofile();
            block_signals();
            /* Before the first socket: ZeroMQ fixes its I/O threads when its context starts. */
            zsys_set_io_threads((size_t)sg_config_int(cfg, "cluster.io_threads"));
            zsys_init();
            zsys_handler_set(NULL);   /* signals are ours (sigwait), not czmq's */
            zsys_set_linger(0);
            sg_zmq_set_link_timeout((int)sg_config_int(cfg, "cluster.link_timeout"));
        }
        if (rc == 0 && clustered) {
            /* Links between processes are CURVE-encrypted and authenticated unless the operator
             * explicitly accepts plaintext (e.g. on a network nobody else can reach). */
            const char *cert = sg_config_str(cfg, "cluster.curve_cert");
            sg_role_t role = sg_role_parse(cmd, strlen(cmd));   /* the tier commands are the roles */
            if (*cert)
                rc = sg_curve_init(cert, sg_config_str(cfg, "cluster.curve_public"), role) == SG_OK ? 0 : 1;
            else if (!sg_config_bool(cfg, "cluster.insecure"))
                rc = fail("links between tiers need CURVE: set cluster.curve_cert to this tier's certificate "
                          "(`sacgate init --data-dir DIR` writes DIR/curve/{role}.cert for every tier), or "
                          "cluster.insecure=true to accept plaintext tcp://");
            else
                SG_WARN("sacgate", "links.plaintext", "reason=\"cluster.insecure=true: inter-tier links are not encrypted\"");
        }
        if (rc != 0)
            ;
        else if (strcmp(cmd, "all") == 0)
            rc = cmd_all(cfg);
        else if (strcmp(cmd, "store") == 0)
            rc = cmd_store(cfg);
        else if (strcmp(cmd, "router") == 0)
            rc = cmd_router(cfg);
        else if (strcmp(cmd, "frontend") == 0)
            rc = cmd_frontend(cfg);
        else if (strcmp(cmd, "admin") == 0)
            rc = cmd_admin(cfg);
        else if (strcmp(cmd, "init") == 0)
            rc = cmd_init(cfg, rest);
        else
            rc = cmd_token(rest);
        sg_curve_shutdown();
    }
    zhashx_destroy(&rest);
    sg_config_destroy(&cfg);
    return rc;
}
