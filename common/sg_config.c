/* sg_config.c — the key table and its loaders; see sg_config.h. */
#include "sg_config.h"
#include <ctype.h>
#include <czmq.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef enum { T_STR, T_INT, T_BOOL, T_ENUM } kind_t;

typedef struct {
    const char *key;
    kind_t kind;
    const char *def;
    int64_t min, max;        /* T_INT range */
    const char *choices;     /* T_ENUM: "a|b|c" */
    const char *help;
} spec_t;

#define I(k, d, lo, hi, h) {k, T_INT, d, lo, hi, NULL, h}
#define S(k, d, h) {k, T_STR, d, 0, 0, NULL, h}
#define B(k, d, h) {k, T_BOOL, d, 0, 0, NULL, h}
#define E(k, d, c, h) {k, T_ENUM, d, 0, 0, c, h}

static const spec_t k_specs[] = {
    E("log.level", "info", "debug|info|warn|error", "log threshold"),

    S("cluster.shards", "store-0", "comma-separated shard names; their order numbers the telemetry partitions"),
    S("cluster.shard_endpoint", "tcp://{name}:9200",
      "ZeroMQ endpoint of a shard; {name} is replaced by the shard name (or give name=endpoint pairs in cluster.shards)"),
    S("cluster.routers", "tcp://127.0.0.1:9100", "comma-separated router endpoints that frontends and admins connect to"),
    I("cluster.vnodes", "1024", 1, 65536, "virtual nodes per shard on the hash ring"),
    I("cluster.request_timeout", "10", 1, 600, "seconds a tier waits for a shard's answer"),
    I("cluster.hwm", "100000", 100, 10000000, "ZeroMQ high-water mark (messages) of the sockets into a router, a "
      "shard and a frontend's link: a backstop behind cluster.credit, which keeps the queues far below it"),
    I("cluster.link_timeout", "60", 0, 3600, "seconds a link between tiers may stay silent before it is dropped "
      "and made again by the side that connected (ZeroMQ heartbeats every sixth of it): a peer that vanished "
      "without closing its connection, a lost node or a partition, is found; 0: never (the kernel's TCP timeout, "
      "about 15 minutes)"),
    I("cluster.credit", "1048576", 4096, 1073741824, "bytes of QoS 1 publishes a frontend loop may have on their way "
      "to one shard without its acknowledgement (and of deliveries a shard may have on their way to one frontend "
      "loop); past it the loop reads no more publishes of that shard's devices until acknowledgements return"),
    I("cluster.io_threads", "1", 1, 64, "ZeroMQ I/O threads of this process: they move every inter-tier message and "
      "run its CURVE encryption, so a router relaying for many frontends wants about one per core it may use"),
    S("cluster.curve_cert", "", "this tier's CURVE certificate, {role} standing for the tier (its secret in the "
                                "same path + _secret); `sacgate init` writes DIR/curve/{role}.cert for every tier"),
    S("cluster.curve_public", "", "directory of every tier's public CURVE certificate (the keys this process "
                                  "trusts); empty: the `public` directory beside cluster.curve_cert"),
    B("cluster.insecure", "false", "allow plaintext tcp:// links between tiers when no curve_cert is set"),

    S("frontend.name", "fe-0", "name of this frontend instance (unique in the cluster)"),
    S("frontend.bind", "0.0.0.0", "address the MQTT listeners bind to"),
    I("frontend.mqtt_port", "8883", 0, 65535, "MQTT over TLS port (0 = pick a free port)"),
    I("frontend.ws_port", "443", 0, 65535, "MQTT over secure WebSocket port (0 = pick a free port)"),
    I("frontend.threads", "0", 0, 256, "event-loop threads (0 = one per CPU core)"),
    S("frontend.cert", "/etc/sacgate/tls/server.crt", "server certificate chain (PEM)"),
    S("frontend.key", "/etc/sacgate/tls/server.key", "server private key (PEM)"),
    I("frontend.cert_reload", "5", 0, 3600, "seconds between checks of frontend.cert/key (and frontend.ticket_keys) for "
      "new files (0 = only on SIGHUP)"),
    S("frontend.ticket_keys", "", "file of TLS session-ticket keys shared by every frontend (one `openssl rand -hex 80` "
      "a line, oldest first, the last encrypts; `sacgate init` writes DIR/ticket.keys): devices resume their TLS "
      "session on any frontend; empty = no tickets, every connect is a full handshake"),
    I("frontend.ticket_lifetime", "7200", 60, 604800, "seconds a session ticket may be used to resume (at most 7 days)"),
    I("frontend.max_connections", "18000", 1, 1000000, "device connections per frontend process"),
    /* The caps keep every record inside one inter-tier frame (SG_WIRE_MAX_FRAME, 8 MiB) even as
     * base64 JSON with escaped properties: a larger setting would make records unreadable. */
    I("frontend.max_packet", "266240", 1024, 2097152, "largest MQTT packet accepted (bytes)"),
    I("frontend.max_connect_packet", "8192", 512, 65536, "largest packet accepted before the CONNACK (the CONNECT "
      "with its will; bytes)"),
    I("frontend.max_will", "4096", 0, 65536, "largest will message (bytes); a CONNECT with a larger one is refused"),
    I("frontend.max_connections_per_ip", "10000", 0, 1000000, "device connections open at once from one client "
      "address (0 = no limit)"),
    I("frontend.connect_rate_per_ip", "5000", 0, 1000000, "new connections a second from one client address, in "
      "bursts of twice that (0 = no limit)"),
    S("frontend.share_port", "", "group name: frontend processes with the same group may share the MQTT port "
      "(SO_REUSEPORT); empty = this process must be the port's only listener"),
    I("frontend.max_outbuf", "2097152", 65536, 67108864, "per-connection unsent bytes before the device is disconnected"),
    I("frontend.keepalive_cap", "1767", 5, 65535, "keep-alive (s) used when a device asks for 0 or more"),
    I("frontend.connect_timeout", "10", 1, 600, "seconds from TCP accept to a complete CONNECT"),
    I("frontend.inflight_window", "16", 1, 1024, "telemetry QoS 1 publishes awaiting durable acks before reading pauses"),
    I("frontend.ack_timeout", "30", 1, 3600, "seconds to wait for a durable ack before the connection is closed"),
    I("frontend.max_telemetry", "262144", 1, 2097152, "largest telemetry payload (bytes)"),
    I("frontend.max_method_response", "131072", 0, 2097152, "largest direct method response body (bytes); a larger one is refused to the caller (502)"),
    I("frontend.telemetry_rate", "100", 1, 65535, "telemetry messages per second per device (token bucket refill)"),
    B("frontend.psk_ke", "false", "also accept TLS 1.3 PSK devices without an (EC)DHE exchange (psk_ke: no forward "
      "secrecy, less CPU and fewer bytes); psk_dhe_ke is always accepted"),
    I("frontend.telemetry_burst", "100", 1, 65535, "telemetry messages a device may send at once (bucket size)"),

    S("router.name", "router-0", "name of this router instance"),
    S("router.bind", "tcp://*:9100", "endpoint frontends and admins connect to"),

    S("store.name", "store-0", "this shard's name; must be one of cluster.shards"),
    S("store.bind", "tcp://*:9200", "endpoint routers connect to"),
    S("store.data_dir", "/var/lib/sacgate", "directory of this shard's RocksDB database"),
    E("store.sync", "always", "always|never", "fsync each group commit before acknowledging (always) or not (never)"),
    I("store.readers", "2", 1, 64, "reader threads"),
    I("store.max_batch", "1024", 1, 100000, "most operations committed in one write batch"),
    I("store.hold_bytes", "268435456", 65536, 17179869184, "bytes of frames a shard holds while its writer's queue is "
      "full; frontends keep within cluster.credit, so size it above frontend loops x cluster.credit. Past it, "
      "publishes and operator writes are refused BUSY (sent again later, 503)"),
    I("store.max_queued_messages", "50", 1, 100000, "default per-device cloud-to-device queue length"),
    I("store.max_queued_bytes", "1048576", 1024, 1073741824, "default per-device queue size (bytes as stored)"),
    I("store.max_message_bytes", "65536", 1, 1048576, "largest cloud-to-device message (bytes)"),
    I("store.default_ttl", "3600", 1, 172800, "cloud-to-device time-to-live when none is given (s)"),
    I("store.max_ttl", "172800", 1, 31536000, "largest cloud-to-device time-to-live (s)"),
    /* at most FE_Q0_MAX: a frontend tracks that many QoS 0 deliveries waiting to be written */
    I("store.delivery_window", "10", 1, 64, "cloud-to-device messages in flight per device"),
    I("store.max_delivery_count", "10", 1, 1000, "delivery attempts before a message is dead-lettered (deliveryCountExceeded)"),
    I("store.delivery_lock", "60", 1, 86400, "seconds a delivery may stay unacknowledged before it is handed out again"),
    I("store.peer_timeout", "30", 3, 3600, "seconds without a heartbeat after which a frontend loop's sessions are ended"),
    I("store.cache_devices", "200000", 1000, 100000000, "device entries kept in memory by the writer"),
    I("store.read_ahead", "4096", 0, 1000000, "devices a reader thread may be loading for the writer at once: a "
      "device's first frame waits for its records while the writer commits others (0: the writer reads them itself)"),
    I("store.read_ahead_delay_ms", "0", 0, 60000, "fault injection for tests: each read-ahead waits this long first"),
    I("store.disk_min_free", "268435456", 16777216, 1099511627776, "bytes the data volume keeps free: below, the shard "
      "refuses new data (CONNACK 3, telemetry refused, HTTP 507) and serves reads until space returns; keep it above a "
      "memtable flush (store.write_buffer) plus what a compaction writes before it frees its input: RocksDB aborts on "
      "a write that finds the volume full"),
    I("store.disk_reserve", "67108864", 0, 1099511627776, "bytes preallocated in the data directory (file 'reserve') and "
      "given back when the volume is all but full, so RocksDB can still flush, recover and start"),
    I("store.write_buffer", "67108864", 1048576, 1073741824, "bytes of a column family's memtable before it is "
      "flushed to a table file; the write-ahead log preallocates 1.1 times this on the data volume"),
    I("store.telemetry_retention", "86400", 1, 604800, "seconds telemetry is kept (at most 7 days)"),
    I("store.telemetry_max_bytes", "0", 0, 1125899906842624, "bytes of telemetry table files kept per partition, "
      "oldest dropped first (0: no limit but the age); the newest store.write_buffer bytes come on top"),
    I("store.feedback_retention", "86400", 1, 604800, "seconds feedback records are kept (at most 7 days)"),
    I("store.feedback_max_bytes", "0", 0, 1125899906842624, "bytes of feedback table files kept per shard (0: no limit "
      "but the age)"),
    I("store.deadletter_retention", "86400", 1, 604800, "seconds dead-lettered messages are kept (at most 7 days)"),
    I("store.notify_slice", "1000", 1, 100000, "registry entries a notification fan-out looks at per commit "
      "(the shard's other work goes on between two slices)"),
    I("store.inquiry_timeout", "60", 1, 3600, "seconds an inquiry waits for its answer before the device gets 504"),
    I("store.inquiry_lease", "30", 1, 3600, "seconds a claimed inquiry stays with its claimant before GET "
      "/v1/inquiries hands it out again"),
    I("store.inquiry_max", "10000", 1, 10000000, "open inquiries a shard keeps (in memory and on disk); beyond, a new "
      "one is answered 503"),
    I("store.inquiry_max_bytes", "67108864", 1024, 1099511627776, "payload bytes of the open inquiries a shard keeps"),
    I("store.retention_interval", "10", 1, 3600, "seconds between two looks of the retention thread"),
    I("store.memory", "536870912", 16777216, 1099511627776, "RocksDB's memory budget per shard: the block cache's "
      "capacity, with the memtables of all column families charged to it (flushed at half of it together)"),
    S("store.log_dir", "", "directory of RocksDB's own LOG files (empty: the data directory); at most 4 files of 4 MiB"),

    S("admin.bind", "127.0.0.1", "address of the HTTP endpoint"),
    I("admin.port", "8080", 0, 65535, "HTTP port (0 = pick a free port)"),
    S("admin.tokens", "/etc/sacgate/tokens", "file of API tokens: one 'name roles sha256hex' per line"),
    I("admin.max_body", "262144", 1024, 67108864, "largest request body (bytes)"),
    I("admin.notification_timeout", "60", 1, 3600, "seconds POST /v1/notifications waits for every shard to queue "
      "its copies (the fan-out goes on after a timeout)"),
    I("admin.threads", "2", 1, 64, "HTTP worker threads (libmicrohttpd's thread pool; each serves its own connections)"),
    I("admin.max_connections", "1024", 16, 100000, "open HTTP connections in all; beyond, new ones wait in the listen backlog"),
    I("admin.max_connections_per_ip", "64", 0, 100000, "open HTTP connections per client address, beyond which new "
      "ones are closed at once (0 = no limit); clients behind one proxy share its address"),
    I("admin.header_timeout", "20", 1, 3600, "seconds from accept (or from the previous answer on a kept-alive "
      "connection) to complete request headers, TLS handshake included; later, the connection is closed"),
    I("admin.idle_timeout", "60", 1, 86400, "seconds an HTTP connection may send or read nothing (a long-poll waiting "
      "for data does not count)"),
    S("admin.tls_cert", "", "serve HTTPS with this certificate chain (PEM; with admin.tls_key; empty: plain HTTP)"),
    S("admin.tls_key", "", "private key (PEM) of admin.tls_cert"),

    S("health.bind", "0.0.0.0", "address of the /healthz and /readyz endpoint of frontend, router and store"),
    I("health.port", "0", 0, 65535, "that endpoint's port (0 = off)"),

    S("all.data_dir", "./var", "sacgate all: directory for shards, TLS files and tokens"),
    I("all.shards", "1", 1, 64, "sacgate all: number of in-process shards"),
};

#define N_SPECS (sizeof k_specs / sizeof k_specs[0])

struct sg_config {
    char *values[N_SPECS];
    bool set[N_SPECS];
};

static int find(const char *key)
{
    for (size_t i = 0; i < N_SPECS; i++)
        if (strcmp(k_specs[i].key, key) == 0)
            return (int)i;
    return -1;
}

sg_config_t *sg_config_new(void)
{
    sg_config_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    for (size_t i = 0; i < N_SPECS; i++) {
        self->values[i] = strdup(k_specs[i].def);
        if (!self->values[i]) {
            sg_config_destroy(&self);
            return NULL;
        }
    }
    return self;
}

void sg_config_destroy(sg_config_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    for (size_t i = 0; i < N_SPECS; i++)
        free((*self_p)->values[i]);
    free(*self_p);
    *self_p = NULL;
}

static bool parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    if (!strcmp(s, "1") || !strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on"))
        *out = true;
    else if (!strcmp(s, "0") || !strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off"))
        *out = false;
    else
        return false;
    return true;
}

static bool in_choices(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

sg_rc sg_config_set(sg_config_t *self, const char *key, const char *value, char *err, size_t errlen)
{
    int i = find(key);
    if (i < 0) {
        snprintf(err, errlen, "unknown configuration key '%s' (see sacgate --help)", key);
        return SG_E_NOT_FOUND;
    }
    const spec_t *s = &k_specs[i];
    int64_t iv;
    bool bv;
    switch (s->kind) {
    case T_INT:
        if (!parse_int(value, &iv) || iv < s->min || iv > s->max) {
            snprintf(err, errlen, "%s must be an integer from %lld to %lld, not '%s'", key,
                     (long long)s->min, (long long)s->max, value);
            return SG_E_INVALID;
        }
        break;
    case T_BOOL:
        if (!parse_bool(value, &bv)) {
            snprintf(err, errlen, "%s must be true or false, not '%s'", key, value);
            return SG_E_INVALID;
        }
        break;
    case T_ENUM:
        if (!in_choices(s->choices, value)) {
            snprintf(err, errlen, "%s must be one of %s, not '%s'", key, s->choices, value);
            return SG_E_INVALID;
        }
        break;
    case T_STR:
        break;
    }
    char *copy = strdup(value);
    SG_ENSURE(copy != NULL, SG_E_NOMEM);
    free(self->values[i]);
    self->values[i] = copy;
    self->set[i] = true;
    return SG_OK;
}

/* Walk a zconfig tree: sections of "key = value" lines ("section.key"), or a whole
 * "section.key = value" at the top (ZPL allows dots in names). Anything else is refused with the
 * name it found: a setting the gateway would not read (a key at the top without its section, a
 * section with a value, a block nested one level deeper) must not be taken for a default. */
static sg_rc load_tree(sg_config_t *self, zconfig_t *root, char *err, size_t errlen)
{
    for (zconfig_t *sec = zconfig_child(root); sec; sec = zconfig_next(sec)) {
        const char *name = zconfig_name(sec), *v = zconfig_value(sec);
        if (!zconfig_child(sec)) {
            if (strchr(name, '.')) {
                SG_GUARD(sg_config_set(self, name, v ? v : "", err, errlen));
            } else if (v && *v) {
                snprintf(err, errlen, "'%s' at the top of the configuration file is not a setting: write "
                         "'section.key = value', or the key indented under its section", name);
                return SG_E_INVALID;
            }   /* else a section with nothing in it (its keys commented out, say) */
            continue;
        }
        if (v && *v) {
            snprintf(err, errlen, "section '%s' of the configuration file has a value of its own ('%s')", name, v);
            return SG_E_INVALID;
        }
        for (zconfig_t *leaf = zconfig_child(sec); leaf; leaf = zconfig_next(leaf)) {
            char key[128];
            snprintf(key, sizeof key, "%s.%s", name, zconfig_name(leaf));
            if (zconfig_child(leaf)) {
                snprintf(err, errlen, "'%s' of the configuration file has keys under it: settings are "
                         "a section and a key, two levels", key);
                return SG_E_INVALID;
            }
            const char *lv = zconfig_value(leaf);
            SG_GUARD(sg_config_set(self, key, lv ? lv : "", err, errlen));
        }
    }
    return SG_OK;
}

sg_rc sg_config_load_file(sg_config_t *self, const char *path, char *err, size_t errlen)
{
    zconfig_t *root = zconfig_load(path);
    if (!root) {
        snprintf(err, errlen, "cannot read configuration file '%s' (missing or not ZPL)", path);
        return SG_E_IO;
    }
    sg_rc rc = load_tree(self, root, err, errlen);
    zconfig_destroy(&root);
    return rc;
}

sg_rc sg_config_load_env(sg_config_t *self, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_SPECS; i++) {
        char name[128] = "SACGATE_";
        size_t n = strlen(name);
        for (const char *p = k_specs[i].key; *p && n < sizeof name - 1; p++)
            name[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
        name[n] = 0;
        const char *v = getenv(name);
        if (v)
            SG_GUARD(sg_config_set(self, k_specs[i].key, v, err, errlen));
    }
    return SG_OK;
}

const char *sg_config_str(const sg_config_t *self, const char *key)
{
    int i = find(key);
    return i < 0 ? "" : self->values[i];
}

int64_t sg_config_int(const sg_config_t *self, const char *key)
{
    int64_t v = 0;
    return parse_int(sg_config_str(self, key), &v) ? v : 0;
}

bool sg_config_bool(const sg_config_t *self, const char *key)
{
    bool v = false;
    return parse_bool(sg_config_str(self, key), &v) && v;
}

bool sg_config_is_set(const sg_config_t *self, const char *key)
{
    int i = find(key);
    return i >= 0 && self->set[i];
}

void sg_config_print_help(FILE *out, const char *section)
{
    size_t sl = strlen(section);
    for (size_t i = 0; i < N_SPECS; i++) {
        const spec_t *s = &k_specs[i];
        if (sl && (strncmp(s->key, section, sl) != 0 || s->key[sl] != '.'))
            continue;
        fprintf(out, "  %-28s %s (default: %s)\n", s->key, s->help, *s->def ? s->def : "\"\"");
    }
}
