/* adm_http.c — routes, authentication, request bodies and answers of the HTTP API; see
 * adm_http.h. Shards produce the JSON of device and message operations; this file checks the
 * caller, shapes queries into shard requests, and composes cluster-wide answers (readiness,
 * metrics, cluster view) from several shards' parts.
 *
 * Limits a client cannot get around: the route, token, role, device id and declared body size
 * are checked when the headers are complete, before any of the body is read; a request refused
 * there that announced a body is answered at once and libmicrohttpd closes the connection after
 * the answer without reading the body. Bodies are capped per route (none, admin.max_body, or a
 * stream for imports). Connections are capped in all and per client address, their request
 * headers have a wall-clock deadline (adm_deadline.h) and idle connections time out; suspended
 * requests (long-polls, imports waiting for shards) do not count as idle.
 *
 * Threads: libmicrohttpd runs admin.threads workers, each serving its own connections, so the
 * handlers run on several threads at once. A request's state belongs to its connection's worker
 * (and, while suspended, to the bridge thread that fills its parts and resumes it); what requests
 * share is read-only (tokens, limits), atomic (answer counters) or the bridge, whose submissions
 * and ring are behind its own mutexes. */
#include "adm_http.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "adm_bridge.h"
#include "adm_deadline.h"
#include "adm_import.h"
#include "adm_tokens.h"
#include "sg_frame.h"
#include "sg_codec.h"
#include "sg_log.h"
#include "sg_page.h"
#include "sg_net.h"
#include "sg_sas.h"
#include "sg_time.h"
#include "sg_wire.h"

#define MAX_PARTS 66
#define ANY_ROLE (-1)
#define IMPORT_PATH "/v1/devices:import"

struct adm_http {
    struct MHD_Daemon *mhd;
    adm_bridge_t *bridge;
    adm_tokens_t *tokens;
    adm_deadline_t *deadline;
    size_t max_body;
    int64_t timeout_ms;
    int64_t notify_timeout_ms;      /* POST /v1/notifications waits for every shard's fan-out */
    int port;
    char *tls_cert, *tls_key;       /* PEM, kept for the daemon's lifetime (libmicrohttpd does not copy) */
    size_t tls_key_len;
    bool tls;
    _Atomic uint64_t by_class[6];   /* answers by status class 1xx..5xx */
};

/* What a route takes as a request body. */
typedef enum {
    BODY_NONE,     /* nothing: a declared body is refused (413) */
    BODY_JSON,     /* a JSON object of at most admin.max_body bytes, buffered */
    BODY_STREAM,   /* any length, taken as it arrives (imports) */
} body_t;

typedef struct req req_t;
typedef void (*finish_fn)(req_t *r);
typedef struct route route_t;

struct req {
    adm_http_t *adm;
    struct MHD_Connection *conn;
    const char *method;
    const char *url;
    const route_t *route;  /* set once admitted (admit) */
    char id[SG_DEVICE_ID_MAX + 2];   /* the route's '*' segment */
    char name[SG_METHOD_NAME_MAX + 2];   /* a second '*' segment: the method name */
    bool has_body;         /* a Content-Length above 0 or a Transfer-Encoding was declared */
    sg_wbuf_t body;
    bool too_big;
    bool submitted;
    unsigned submits;   /* submissions so far: a finish that submits again changes it */
    _Atomic bool done;
    finish_fn finish;
    int n;
    adm_part_t parts[MAX_PARTS];
    long long list_limit;  /* GET /v1/devices: the page size the parts are merged into */
    int status;            /* the answer, once composed */
    char *text;
    const char *ctype;     /* NULL = application/json */
    const char *retry_after;
    char retry_buf[24];
    const char *who;
    int64_t start;
    adm_import_t *import;  /* POST /v1/devices:import: its body is streamed, never buffered */
    struct {               /* GET /v1/inquiries: claims gathered shard by shard */
        json_t *list;
        int64_t deadline;  /* sg_mono_ms the long-poll ends */
        long long max;
        int first, asked, shards;
    } inq;
};

struct route {
    const char *method;
    const char *pattern;   /* '*' matches one path segment: the device id */
    int role;              /* ADM_ROLE_*, 0 = no authentication, ANY_ROLE = any valid token */
    body_t body;
    void (*fn)(req_t *r, const char *id);
    const char *query;     /* the query parameters it reads, space-separated: any other is refused
                            * (a misspelt one would otherwise read as absent: ?parition=1 read
                            * partition 0); NULL: not checked */
};

/* ---------- answers ---------- */

static void set_answer(req_t *r, int status, json_t *body)
{
    r->status = status;
    free(r->text);
    r->text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
}

static void error(req_t *r, int status, const char *name, const char *msg)
{
    set_answer(r, status, json_pack("{s:s,s:s}", "error", name, "message", msg));
}

static enum MHD_Result respond(req_t *r)
{
    const char *text = r->text ? r->text : "";
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    if (r->text)
        MHD_add_response_header(resp, "Content-Type", r->ctype ? r->ctype : "application/json");
    if (r->retry_after)
        MHD_add_response_header(resp, "Retry-After", r->retry_after);
    if (r->status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    enum MHD_Result ok = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    int cls = r->status / 100;
    if (cls >= 1 && cls <= 5)
        atomic_fetch_add(&r->adm->by_class[cls], 1);
    char path[256];
    sg_log_clean(path, sizeof path, r->url, strlen(r->url));   /* decoded from the request: untrusted */
    SG_INFO("admin", "http.request", "method=%s path=\"%s\" status=%d ms=%lld token=%s", r->method, path, r->status,
            (long long)(sg_mono_ms() - r->start), r->who ? r->who : "-");
    return ok;
}

/* ---------- talking to the cluster ---------- */

static void on_done(void *arg)
{
    req_t *r = arg;
    atomic_store(&r->done, true);
    MHD_resume_connection(r->conn);
}

static zframe_t *admin_frame(const char *id, uint32_t shard, uint16_t op, const char *json)
{
    return adm_bridge_admin_frame(id, shard, op, json, strlen(json));
}

static zframe_t *ring_frame(void)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 256);
    zframe_t *f = sg_frame_ring(&w, 0) == SG_OK ? zframe_new(w.data, w.len) : NULL;   /* the bridge sets corr */
    sg_wbuf_fini(&w);
    return f;
}

/* How submit_with waits: for every part; for every part, sending again a part a shard refuses as
 * busy (nothing applied) until the deadline; for the first answer only (adm_bridge_submit_any). */
enum { WAIT_ALL = 0, WAIT_ALL_RETRYING = 1, WAIT_FIRST = 2 };

/* Send frames and suspend the connection until they are answered as `how` says. */
static void submit_with(req_t *r, zframe_t **frames, int n, int64_t timeout_ms, finish_fn finish, int how)
{
    for (int i = 0; i < n; i++)
        if (!frames[i]) {
            for (int k = 0; k < n; k++)
                zframe_destroy(&frames[k]);
            error(r, 500, "Internal", "could not encode the request");
            return;
        }
    r->n = n;
    r->finish = finish;
    r->submitted = true;
    r->submits++;
    /* Suspend before the bridge can answer, so its resume never comes first. */
    MHD_suspend_connection(r->conn);
    sg_rc rc = how == WAIT_ALL_RETRYING ? adm_bridge_submit_retrying(r->adm->bridge, frames, r->parts, n, timeout_ms, on_done, r)
               : how == WAIT_FIRST     ? adm_bridge_submit_any(r->adm->bridge, frames, r->parts, n, timeout_ms, on_done, r)
                                       : adm_bridge_submit(r->adm->bridge, frames, r->parts, n, timeout_ms, on_done, r);
    if (rc != SG_OK) {
        for (int k = 0; k < n; k++)
            zframe_destroy(&frames[k]);
        r->n = 0;
        r->finish = NULL;
        error(r, 503, "Unavailable", "the cluster link is down");
        on_done(r);
    }
}

static void submit(req_t *r, zframe_t **frames, int n, int64_t timeout_ms, finish_fn finish)
{
    submit_with(r, frames, n, timeout_ms, finish, WAIT_ALL);
}

/* Part i's answer as it is, with Retry-After on 429. */
static void finish_passthrough_part(req_t *r, int i)
{
    adm_part_t *p = &r->parts[i];
    r->status = p->status ? p->status : 502;
    free(r->text);
    r->text = p->len ? strndup(p->json, p->len) : NULL;
    if (r->status == 429) {
        json_t *b = json_loadb(p->json, p->len, 0, NULL);
        json_int_t ra = json_integer_value(json_object_get(b, "retryAfter"));
        snprintf(r->retry_buf, sizeof r->retry_buf, "%lld", (long long)(ra > 0 ? ra : 5));
        r->retry_after = r->retry_buf;
        json_decref(b);
    }
}

/* The request q (its reference is taken) as operation op to each of shards 0..shards-1. */
static void submit_shards(req_t *r, int shards, uint16_t op, json_t *q, finish_fn finish)
{
    char *text = json_dumps(q, JSON_COMPACT);
    json_decref(q);
    zframe_t *frames[MAX_PARTS];
    for (int i = 0; i < shards; i++)
        frames[i] = text ? admin_frame(NULL, (uint32_t)i, op, text) : NULL;
    free(text);
    submit(r, frames, shards, r->adm->timeout_ms, finish);
}

/* The single part's answer as it is. */
static void finish_passthrough(req_t *r) { finish_passthrough_part(r, 0); }

static void device_op(req_t *r, const char *id, uint16_t op, const char *json)
{
    zframe_t *f = admin_frame(id, SG_WIRE_SHARD_BY_DEVICE, op, json);
    submit(r, &f, 1, r->adm->timeout_ms, finish_passthrough);
}

/* ---------- handlers ---------- */

static void h_healthz(req_t *r, const char *id)
{
    (void)id;
    set_answer(r, 200, json_pack("{s:s}", "status", "ok"));
}

static json_t *part_json(const adm_part_t *p) { return p->status == 200 ? json_loadb(p->json, p->len, 0, NULL) : NULL; }
/* A part's JSON whatever its status (NULL when it has none). */
static json_t *part_json_any(const adm_part_t *p) { return p->len ? json_loadb(p->json, p->len, 0, NULL) : NULL; }

static void finish_readyz(req_t *r)
{
    json_t *ring = part_json(&r->parts[0]);
    bool ready = ring && json_is_true(json_object_get(ring, "ready"));
    json_t *shards = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(ring, "shards"), i, s)
        json_array_append_new(shards, json_pack("{s:O,s:O}", "name", json_object_get(s, "name"), "reachable",
                                                json_object_get(s, "reachable")));
    set_answer(r, ready ? 200 : 503,
               json_pack("{s:s,s:o}", "status", ready ? "ready" : ring ? "shards unreachable" : "router unreachable",
                         "shards", shards));
    json_decref(ring);
}

static void h_readyz(req_t *r, const char *id)
{
    (void)id;
    zframe_t *f = ring_frame();
    submit(r, &f, 1, 2000, finish_readyz);
}

/* RING plus SHARD_STATS from every shard: the input of /metrics and /v1/cluster. */
static void submit_cluster(req_t *r, finish_fn finish)
{
    int n = adm_bridge_shards(r->adm->bridge);
    if (n > MAX_PARTS - 1)
        n = MAX_PARTS - 1;
    zframe_t *frames[MAX_PARTS];
    frames[0] = ring_frame();
    for (int i = 0; i < n; i++)
        frames[i + 1] = admin_frame(NULL, (uint32_t)i, SG_ADM_SHARD_STATS, "{}");
    submit(r, frames, n + 1, 3000, finish);
}

static void finish_cluster(req_t *r)
{
    json_t *ring = part_json(&r->parts[0]);
    if (!ring) {
        error(r, 503, "RouterUnavailable", "no router answered");
        return;
    }
    json_t *shards = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(ring, "shards"), i, s) {
        json_t *o = json_deep_copy(s);
        json_t *st = (int)i + 1 < r->n ? part_json(&r->parts[i + 1]) : NULL;
        if (st) {
            json_object_set(o, "devices", json_object_get(st, "devices"));
            json_object_set(o, "sessions", json_object_get(st, "sessions"));
            static const char *const keys[] = {"telemetryOldest", "telemetryLast", "feedbackOldest", "feedbackLast",
                                               "retention",       "rocksdb",       "batches",        "batchedOps",
                                               "deviceLoads",     "parkedReads",   "flow"};
            for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
                json_object_set(o, keys[k], json_object_get(st, keys[k]));
            json_object_set(o, "diskFull", json_object_get(st, "diskFull"));
            json_object_set(o, "sync", json_object_get(st, "sync"));
            json_object_set(o, "diskFreeBytes", json_object_get(st, "diskFreeBytes"));
        }
        json_decref(st);
        json_array_append_new(shards, o);
    }
    json_t *frontends = json_object_get(ring, "frontends");
    json_t *body = json_pack("{s:o,s:o,s:{s:O,s:I},s:[{s:O,s:O,s:O,s:I,s:I}]}", "frontends",
                             frontends ? json_incref(frontends) : json_array(), "shards", shards, "ring", "vnodes",
                             json_object_get(ring, "vnodes"), "partitions", (json_int_t)json_array_size(shards),
                             "routers", "name", json_object_get(ring, "router"), "relayedIn",
                             json_object_get(ring, "relayedIn"), "relayedOut", json_object_get(ring, "relayedOut"),
                             "batchesIn", json_integer_value(json_object_get(ring, "batchesIn")), "batchesOut",
                             json_integer_value(json_object_get(ring, "batchesOut")));
    json_decref(ring);
    set_answer(r, 200, body);
}

static void h_cluster(req_t *r, const char *id)
{
    (void)id;
    submit_cluster(r, finish_cluster);
}

static void metric(sg_wbuf_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void metric(sg_wbuf_t *w, const char *fmt, ...)
{
    char line[512], *text = line;
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof line && (text = malloc((size_t)n + 1)) != NULL)   /* a long HELP block: never cut */
        vsnprintf(text, (size_t)n + 1, fmt, again);
    va_end(again);
    if (n > 0 && text && sg_wbuf_bytes(w, text, (size_t)n) != SG_OK)
        SG_WARN("admin", "metrics.too_big", "bytes=%zu", w->len);
    if (text != line)
        free(text);
}

/* RocksDB's figures of a shard (its SHARD_STATS "rocksdb" object) as metrics. */
static const struct {
    const char *name, *field, *help;
    bool counter;
} k_rocksdb_metrics[] = {
    {"memtable_bytes", "memtableBytes", "Bytes in the memtables of every column family.", false},
    {"memtable_capacity_bytes", "memtableCapacity",
     "Memtable bytes (every column family together) at which flushes start: half of store.memory.", false},
    {"block_cache_bytes", "blockCacheBytes", "Bytes in the block cache: table blocks and the memtables' charge.", false},
    {"block_cache_memtable_bytes", "blockCacheMemtableBytes", "Of the block cache's bytes, those charged for memtables.",
     false},
    {"block_cache_capacity_bytes", "blockCacheCapacity",
     "The block cache's capacity: store.memory, memtables charged to it.", false},
    {"block_cache_hits_total", "blockCacheHits", "Block cache hits.", true},
    {"block_cache_misses_total", "blockCacheMisses", "Block cache misses.", true},
    {"table_bytes", "tableBytes", "Bytes of live table files.", false},
    {"pending_compaction_bytes", "pendingCompactionBytes", "Compaction debt: bytes compactions still have to rewrite.",
     false},
    {"running_compactions", "runningCompactions", "Compactions running now.", false},
    {"stall_micros_total", "stallMicros", "Microseconds writes were held back (slowed or stopped).", true},
    {"delayed_write_rate", "delayedWriteRate", "Bytes a second writes are slowed to (0: not slowed).", false},
    {"write_stopped", "writeStopped", "1 while RocksDB stops writes.", false},
    {"wal_syncs_total", "walSyncs", "fsyncs of the write-ahead log.", true},
    {"wal_sync_micros_total", "walSyncMicros", "Microseconds spent in fsyncs of the write-ahead log.", true},
    {"wal_sync_p99_micros", "walSyncP99Micros", "99th percentile of a write-ahead log fsync, microseconds.", false},
};

static void finish_metrics(req_t *r)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 4u << 20);
    adm_http_t *a = r->adm;
    metric(&w, "# HELP sacgate_admin_responses_total HTTP answers of the admin endpoint by status class.\n"
               "# TYPE sacgate_admin_responses_total counter\n");
    for (int c = 1; c <= 5; c++)
        metric(&w, "sacgate_admin_responses_total{class=\"%dxx\"} %llu\n", c,
               (unsigned long long)atomic_load(&a->by_class[c]));
    json_t *ring = part_json(&r->parts[0]);
    metric(&w, "# HELP sacgate_router_up Whether a router answered.\n# TYPE sacgate_router_up gauge\n"
               "sacgate_router_up %d\n", ring ? 1 : 0);
    if (ring) {
        const char *rn = json_string_value(json_object_get(ring, "router"));
        metric(&w, "# TYPE sacgate_router_frames_total counter\n");
        metric(&w, "sacgate_router_frames_total{router=\"%s\",direction=\"in\"} %lld\n", rn,
               (long long)json_integer_value(json_object_get(ring, "relayedIn")));
        metric(&w, "sacgate_router_frames_total{router=\"%s\",direction=\"out\"} %lld\n", rn,
               (long long)json_integer_value(json_object_get(ring, "relayedOut")));
        metric(&w, "# HELP sacgate_router_batches_total BATCH messages (many frames in one) taken in and sent.\n"
                   "# TYPE sacgate_router_batches_total counter\n");
        metric(&w, "sacgate_router_batches_total{router=\"%s\",direction=\"in\"} %lld\n", rn,
               (long long)json_integer_value(json_object_get(ring, "batchesIn")));
        metric(&w, "sacgate_router_batches_total{router=\"%s\",direction=\"out\"} %lld\n", rn,
               (long long)json_integer_value(json_object_get(ring, "batchesOut")));
        size_t i;
        json_t *f;
        metric(&w, "# HELP sacgate_router_refused_frames_total Frames refused because the sender's role (its CURVE "
                   "key) may not send that type.\n# TYPE sacgate_router_refused_frames_total counter\n");
        json_array_foreach(json_object_get(ring, "forbidden"), i, f)
            metric(&w, "sacgate_router_refused_frames_total{router=\"%s\",role=\"%s\",type=\"%s\"} %lld\n", rn,
                   json_string_value(json_object_get(f, "role")), json_string_value(json_object_get(f, "type")),
                   (long long)json_integer_value(json_object_get(f, "count")));
        /* per frontend, summed over its loops by the router: {metric, help, type, field} */
        static const char *const per_frontend[][4] = {
            {"sacgate_frontend_connections", "Open device connections per frontend.", "gauge", "connections"},
            {"sacgate_frontend_credit_waits_total", "Times a device connection stopped being read because its shard's "
             "credit (cluster.credit) on a loop of that frontend was spent.", "counter", "creditWaits"},
            {"sacgate_frontend_credit_bytes", "Bytes of QoS 1 publishes on their way to shards and not acknowledged "
             "yet (credit in use).", "gauge", "creditBytes"},
            {"sacgate_frontend_link_backlog", "Session bookkeeping frames (session ends, subscription changes, "
             "completions) waiting in order for room on a full router link.", "gauge", "linkBacklog"},
            {"sacgate_frontend_link_backlog_peak", "The most bookkeeping frames that waited at once on one loop of "
             "the frontend since it started.", "gauge", "linkBacklogPeak"},
        };
        for (size_t k = 0; k < sizeof per_frontend / sizeof per_frontend[0]; k++) {
            const char *const *m = per_frontend[k];
            metric(&w, "# HELP %s %s\n# TYPE %s %s\n", m[0], m[1], m[0], m[2]);
            json_array_foreach(json_object_get(ring, "frontends"), i, f)
                metric(&w, "%s{frontend=\"%s\"} %lld\n", m[0], json_string_value(json_object_get(f, "name")),
                       (long long)json_integer_value(json_object_get(f, m[3])));
        }
        json_t *s;
        metric(&w, "# TYPE sacgate_shard_up gauge\n# TYPE sacgate_shard_devices gauge\n"
                   "# TYPE sacgate_shard_sessions gauge\n# TYPE sacgate_shard_telemetry_records_total counter\n"
                   "# TYPE sacgate_shard_commits_total counter\n# TYPE sacgate_shard_committed_ops_total counter\n"
                   "# HELP sacgate_shard_disk_full 1 while the shard refuses new data for lack of space.\n"
                   "# TYPE sacgate_shard_disk_full gauge\n# TYPE sacgate_shard_disk_free_bytes gauge\n"
                   "# HELP sacgate_shard_sync_always 1 when the shard acknowledges only what an fdatasync made "
                   "durable (store.sync=always); 0 when it does not wait for the disk (never: a crash of the "
                   "machine can lose acknowledged data).\n# TYPE sacgate_shard_sync_always gauge\n"
                   "# HELP sacgate_shard_device_loads_total Devices brought into the writer's cache, read ahead by "
                   "a reader thread or by the writer itself.\n# TYPE sacgate_shard_device_loads_total counter\n"
                   "# HELP sacgate_shard_credit_waits_total Sessions whose deliveries waited for their frontend "
                   "loop's credit (cluster.credit).\n# TYPE sacgate_shard_credit_waits_total counter\n"
                   "# HELP sacgate_shard_held_bytes Frames held for the writer while its queue is full.\n"
                   "# TYPE sacgate_shard_held_bytes gauge\n"
                   "# HELP sacgate_shard_batch_bytes Routers' batches handed to the writer whole and not read yet.\n"
                   "# TYPE sacgate_shard_batch_bytes gauge\n"
                   "# HELP sacgate_shard_parked_reads_total Long-poll log reads parked to wait for records, by "
                   "who parked them (net: at once, past the end of the log; reader: found too few).\n"
                   "# TYPE sacgate_shard_parked_reads_total counter\n"
                   "# HELP sacgate_shard_refused_busy_total Frames refused with BUSY (held past store.hold_bytes, "
                   "or the readers' queue full).\n# TYPE sacgate_shard_refused_busy_total counter\n"
                   "# HELP sacgate_shard_dropped_frames_total Answers and pushes that found no router to take them.\n"
                   "# TYPE sacgate_shard_dropped_frames_total counter\n");
        metric(&w, "# HELP sacgate_shard_telemetry_oldest_offset The oldest telemetry offset retention kept.\n"
                   "# TYPE sacgate_shard_telemetry_oldest_offset gauge\n"
                   "# HELP sacgate_shard_retention_dropped_total Records dropped by retention (age or size).\n"
                   "# TYPE sacgate_shard_retention_dropped_total counter\n"
                   "# HELP sacgate_shard_method_calls_pending Direct method calls the shard holds (waiting for the device).\n"
                   "# TYPE sacgate_shard_method_calls_pending gauge\n"
                   "# HELP sacgate_shard_method_calls_total Direct method calls ended, by outcome.\n"
                   "# TYPE sacgate_shard_method_calls_total counter\n");
        for (size_t k = 0; k < sizeof k_rocksdb_metrics / sizeof k_rocksdb_metrics[0]; k++)
            metric(&w, "# HELP sacgate_shard_rocksdb_%s %s\n# TYPE sacgate_shard_rocksdb_%s %s\n",
                   k_rocksdb_metrics[k].name, k_rocksdb_metrics[k].help, k_rocksdb_metrics[k].name,
                   k_rocksdb_metrics[k].counter ? "counter" : "gauge");
        json_array_foreach(json_object_get(ring, "shards"), i, s) {
            const char *sn = json_string_value(json_object_get(s, "name"));
            json_t *st = (int)i + 1 < r->n ? part_json(&r->parts[i + 1]) : NULL;
            metric(&w, "sacgate_shard_up{shard=\"%s\"} %d\n", sn, st ? 1 : 0);
            if (st) {
                metric(&w, "sacgate_shard_devices{shard=\"%s\"} %lld\n", sn, (long long)json_integer_value(json_object_get(st, "devices")));
                const char *sync = json_string_value(json_object_get(st, "sync"));
                if (sync)   /* a shard of an older build does not say: no sample rather than a false 0 */
                    metric(&w, "sacgate_shard_sync_always{shard=\"%s\"} %d\n", sn, strcmp(sync, "always") == 0);
                metric(&w, "sacgate_shard_sessions{shard=\"%s\"} %lld\n", sn, (long long)json_integer_value(json_object_get(st, "sessions")));
                metric(&w, "sacgate_shard_telemetry_records_total{shard=\"%s\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(st, "telemetryLast")) + 1);
                metric(&w, "sacgate_shard_telemetry_oldest_offset{shard=\"%s\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(st, "telemetryOldest")));
                json_t *ret = json_object_get(st, "retention");
                static const char *const logs[][2] = {{"telemetry", "telemetry"}, {"feedback", "feedback"},
                                                      {"deadLetters", "deadletters"}};
                for (size_t k = 0; k < 3; k++)
                    metric(&w, "sacgate_shard_retention_dropped_total{shard=\"%s\",log=\"%s\"} %lld\n", sn, logs[k][1],
                           (long long)json_integer_value(json_object_get(json_object_get(ret, logs[k][0]), "dropped")));
                json_t *mc = json_object_get(st, "methodCalls");
                metric(&w, "sacgate_shard_method_calls_pending{shard=\"%s\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(mc, "pending")));
                static const char *const outcomes[][2] = {{"answered", "answered"}, {"timedOut", "timed_out"},
                                                          {"notOnline", "not_online"}, {"other", "other"}};
                for (size_t k = 0; k < 4; k++)
                    metric(&w, "sacgate_shard_method_calls_total{shard=\"%s\",outcome=\"%s\"} %lld\n", sn,
                           outcomes[k][1], (long long)json_integer_value(json_object_get(mc, outcomes[k][0])));
                json_t *rdb = json_object_get(st, "rocksdb");
                for (size_t k = 0; k < sizeof k_rocksdb_metrics / sizeof k_rocksdb_metrics[0]; k++) {
                    json_t *v = json_object_get(rdb, k_rocksdb_metrics[k].field);
                    metric(&w, "sacgate_shard_rocksdb_%s{shard=\"%s\"} %.17g\n", k_rocksdb_metrics[k].name, sn,
                           json_is_boolean(v) ? (double)json_is_true(v) : json_number_value(v));
                }
                metric(&w, "sacgate_shard_commits_total{shard=\"%s\"} %lld\n", sn, (long long)json_integer_value(json_object_get(st, "batches")));
                metric(&w, "sacgate_shard_committed_ops_total{shard=\"%s\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(st, "batchedOps")));
                json_t *loads = json_object_get(st, "deviceLoads");
                metric(&w, "sacgate_shard_device_loads_total{shard=\"%s\",on=\"reader\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(loads, "readAhead")));
                metric(&w, "sacgate_shard_device_loads_total{shard=\"%s\",on=\"writer\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(loads, "writer")));
                json_t *parked = json_object_get(st, "parkedReads");
                metric(&w, "sacgate_shard_parked_reads_total{shard=\"%s\",by=\"net\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(parked, "atOnce")));
                metric(&w, "sacgate_shard_parked_reads_total{shard=\"%s\",by=\"reader\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(parked, "byReader")));
                json_t *flow = json_object_get(st, "flow");
                metric(&w, "sacgate_shard_credit_waits_total{shard=\"%s\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(flow, "deliveryCreditWaits")));
                metric(&w, "sacgate_shard_held_bytes{shard=\"%s\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(flow, "heldBytes")));
                metric(&w, "sacgate_shard_batch_bytes{shard=\"%s\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(flow, "batchBytes")));
                metric(&w, "sacgate_shard_refused_busy_total{shard=\"%s\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(flow, "refusedBusy")));
                metric(&w, "sacgate_shard_dropped_frames_total{shard=\"%s\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(flow, "dropped")));
                metric(&w, "sacgate_shard_disk_full{shard=\"%s\"} %d\n", sn, json_is_true(json_object_get(st, "diskFull")));
                metric(&w, "sacgate_shard_disk_free_bytes{shard=\"%s\"} %lld\n", sn,
                       (long long)json_integer_value(json_object_get(st, "diskFreeBytes")));
            }
            json_decref(st);
        }
    }
    json_decref(ring);
    r->status = 200;
    free(r->text);
    r->text = strndup((const char *)w.data, w.len);
    r->ctype = "text/plain; version=0.0.4";
    sg_wbuf_fini(&w);
}

static void h_metrics(req_t *r, const char *id)
{
    (void)id;
    submit_cluster(r, finish_metrics);
}

static json_t *body_json(req_t *r)
{
    json_error_t jerr;
    if (r->body.len == 0) {
        error(r, 400, "InvalidJson", "a JSON body is required");
        return NULL;
    }
    json_t *b = json_loadb((const char *)r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!b) {
        char msg[300];
        snprintf(msg, sizeof msg, "the body is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        error(r, 400, "InvalidJson", msg);
    } else if (!json_is_object(b)) {
        error(r, 400, "InvalidJson", "the body must be a JSON object");
        json_decref(b);
        b = NULL;
    }
    return b;
}

static void body_op(req_t *r, const char *id, uint16_t op)
{
    json_t *b = body_json(r);
    if (!b)
        return;
    char *text = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    if (!text) {
        error(r, 500, "Internal", "out of memory");
        return;
    }
    device_op(r, id, op, text);
    free(text);
}

static void h_device_put(req_t *r, const char *id) { body_op(r, id, SG_ADM_DEVICE_PUT); }
static void h_device_get(req_t *r, const char *id) { device_op(r, id, SG_ADM_DEVICE_GET, "{}"); }
static void h_device_delete(req_t *r, const char *id) { device_op(r, id, SG_ADM_DEVICE_DELETE, "{}"); }
static void h_enqueue(req_t *r, const char *id) { body_op(r, id, SG_ADM_MSG_ENQUEUE); }
static void h_msg_list(req_t *r, const char *id) { device_op(r, id, SG_ADM_MSG_LIST, "{}"); }
static void h_msg_purge(req_t *r, const char *id) { device_op(r, id, SG_ADM_MSG_PURGE, "{}"); }
static void h_dead_list(req_t *r, const char *id) { device_op(r, id, SG_ADM_DEADLETTER_LIST, "{}"); }

static void h_keys_regenerate(req_t *r, const char *id)
{
    if (r->body.len == 0)   /* no body: both keys */
        device_op(r, id, SG_ADM_KEYS_REGENERATE, "{}");
    else
        body_op(r, id, SG_ADM_KEYS_REGENERATE);
}

static bool query_int(req_t *r, const char *name, long long lo, long long hi, long long *out)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!v)
        return true;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        char msg[160];
        snprintf(msg, sizeof msg, "query parameter '%s' must be an integer from %lld to %lld", name, lo, hi);
        error(r, 400, "InvalidQuery", msg);
        return false;
    }
    *out = x;
    return true;
}

/* A duration query parameter in seconds, from 0 to hi, with up to three decimals ("0.05"):
 * *ms in milliseconds (sg_seconds_ms). */
static bool query_seconds(req_t *r, const char *name, long long hi, long long *ms)
{
    const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
    if (!v)
        return true;
    int64_t x;
    if (sg_seconds_ms(v, strlen(v), hi * 1000, &x) != SG_OK) {
        char msg[160];
        snprintf(msg, sizeof msg, "query parameter '%s' must be seconds from 0 to %lld, with at most three decimals",
                 name, hi);
        error(r, 400, "InvalidQuery", msg);
        return false;
    }
    *ms = x;
    return true;
}

/* Whether partition is one of the cluster's (answers the request when not). */
static bool partition_known(req_t *r, long long partition)
{
    int shards = adm_bridge_shards(r->adm->bridge);
    if (shards == 0) {
        error(r, 503, "RouterUnavailable", "the cluster's partitions are not known yet; retry");
        return false;
    }
    if (partition >= shards) {
        char msg[120];
        snprintf(msg, sizeof msg, "partition %lld does not exist; partitions are 0 to %d", partition, shards - 1);
        error(r, 404, "PartitionNotFound", msg);
        return false;
    }
    return true;
}

static bool group_valid(req_t *r, const char *g)
{
    if (sg_group_valid(g, strlen(g)))
        return true;
    error(r, 400, "InvalidGroup", "a consumer group's name is 1-64 of A-Z a-z 0-9 . _ -");
    return false;
}

/* A log read's answer: a compact telemetry page as its JSON (sg_page.h), else as it is. */
static void finish_log(req_t *r)
{
    adm_part_t *p = &r->parts[0];
    if (!p->page) {
        finish_passthrough(r);
        return;
    }
    sg_wbuf_t w;
    sg_wbuf_init(&w, SG_WIRE_MAX_FRAME);
    size_t len;
    if (sg_page_render((const uint8_t *)p->json, p->len, &w) == SG_OK && sg_wbuf_u8(&w, 0) == SG_OK) {
        r->status = 200;
        free(r->text);
        r->text = (char *)sg_wbuf_detach(&w, &len);
    } else {
        error(r, 502, "Internal", "malformed answer from the cluster");
    }
    sg_wbuf_fini(&w);
}

/* GET /v1/telemetry and GET /v1/feedback: one partition (shard) of a log kept by offset, after
 * `after` or after a consumer group's committed position. The shard tells the logs apart by the
 * query's "log" (absent: telemetry), so both go as the same read operation. */
static void read_log(req_t *r, const char *log)
{
    long long partition = 0, after = -1, max = 100, wait_ms = 0, min = 1;
    if (!query_int(r, "partition", 0, 1 << 20, &partition) || !query_int(r, "after", -1, INT64_MAX - 1, &after) ||
        !query_int(r, "max", 1, 1000, &max) || !query_seconds(r, "wait", 60, &wait_ms) ||
        !query_int(r, "min", 1, 1000, &min))
        return;
    if (min > max) {
        error(r, 400, "InvalidQuery", "query parameter 'min' must not be larger than 'max'");
        return;
    }
    const char *group = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "group");
    if (group && MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "after")) {
        error(r, 400, "InvalidQuery", "a read names either a consumer group or an 'after' offset, not both");
        return;
    }
    if ((group && !group_valid(r, group)) || !partition_known(r, partition))
        return;
    /* "wait" in whole seconds (rounded up) for shards that know no "waitMs"; they ignore "min" */
    json_t *q = json_pack("{s:I,s:I,s:I,s:I,s:I}", "after", (json_int_t)after, "max", (json_int_t)max, "wait",
                          (json_int_t)((wait_ms + 999) / 1000), "waitMs", (json_int_t)wait_ms, "min", (json_int_t)min);
    if (group)
        json_object_set_new(q, "group", json_string(group));
    if (log)
        json_object_set_new(q, "log", json_string(log));
    char *text = json_dumps(q, JSON_COMPACT);
    json_decref(q);
    zframe_t *f = text ? admin_frame(NULL, (uint32_t)partition, SG_ADM_TELEMETRY_READ, text) : NULL;
    free(text);
    /* Telemetry comes as records, rendered here (finish_log): less than half the bytes of its JSON
     * to box and send between the tiers (sg_page.h). */
    if (f && !log && sg_wire_add_flags(zframe_data(f), zframe_size(f), SG_WIRE_F_PAGE | SG_WIRE_F_STAMPED) != SG_OK)
        zframe_destroy(&f);
    submit(r, &f, 1, wait_ms + r->adm->timeout_ms, finish_log);
}

static void h_telemetry(req_t *r, const char *id)
{
    (void)id;
    read_log(r, NULL);
}

/* GET /v1/feedback: what became of the messages that asked for feedback (their `ack`), one
 * partition per shard as telemetry (docs/feedback.md). */
static void h_feedback(req_t *r, const char *id)
{
    (void)id;
    read_log(r, "feedback");
}

/* POST /v1/{telemetry,feedback}/groups/{group}/commit {"partition", "offset"}: the group's
 * position in that log, durable in the partition's shard before the 204. */
static void commit_group(req_t *r, const char *group, const char *log)
{
    json_t *b = body_json(r);
    if (!b)
        return;
    json_t *p = json_object_get(b, "partition"), *o = json_object_get(b, "offset");
    if (!json_is_integer(p) || !json_is_integer(o) || json_integer_value(p) < 0 || json_integer_value(o) < -1) {
        error(r, 400, "InvalidCommit", "a commit is {\"partition\": n >= 0, \"offset\": the last offset read, or -1}");
    } else if (group_valid(r, group) && partition_known(r, json_integer_value(p))) {
        json_t *q = json_pack("{s:s,s:O}", "group", group, "offset", o);
        if (log)
            json_object_set_new(q, "log", json_string(log));
        char *text = json_dumps(q, JSON_COMPACT);
        json_decref(q);
        zframe_t *f = text ? admin_frame(NULL, (uint32_t)json_integer_value(p), SG_ADM_GROUP_COMMIT, text) : NULL;
        free(text);
        submit(r, &f, 1, r->adm->timeout_ms, finish_passthrough);
    }
    json_decref(b);
}

static void h_group_commit(req_t *r, const char *group) { commit_group(r, group, NULL); }
static void h_feedback_commit(req_t *r, const char *group) { commit_group(r, group, "feedback"); }

static const char *device_id_of(const json_t *entry) { return json_string_value(json_object_get(entry, "deviceId")); }

static int by_device_id(const void *a, const void *b)
{
    const char *x = device_id_of(*(json_t *const *)a), *y = device_id_of(*(json_t *const *)b);
    return strcmp(x ? x : "", y ? y : "");
}

/* Every shard's part of a registry page, merged. A shard has looked at its ids up to its "last"
 * (to its end when it has no more): below the lowest "last" of all shards nothing is missing, so
 * the page is the entries up to there, in id order, cut at the limit. `next` is the last id of a
 * full page, or that lowest "last" when a shard stopped short (its scan cap: a page may then
 * hold fewer entries, even none), or null when every shard has shown everything. */
static void finish_device_list(req_t *r)
{
    for (int i = 0; i < r->n; i++)
        if (r->parts[i].status != 200) {
            adm_part_t first = r->parts[0];   /* swapped: on_completed frees every part */
            r->parts[0] = r->parts[i];
            r->parts[i] = first;
            finish_passthrough(r);
            return;
        }
    json_t *parts[MAX_PARTS] = {0};
    const char *horizon = NULL;
    size_t total = 0;
    bool ok = true;
    for (int i = 0; i < r->n && ok; i++) {
        parts[i] = part_json(&r->parts[i]);
        json_t *last = json_object_get(parts[i], "last");
        ok = parts[i] && json_is_array(json_object_get(parts[i], "devices")) &&
             (!json_is_true(json_object_get(parts[i], "more")) || json_is_string(last));
        if (ok && json_is_string(last) && (!horizon || strcmp(json_string_value(last), horizon) < 0))
            horizon = json_string_value(last);
        if (ok)
            total += json_array_size(json_object_get(parts[i], "devices"));
    }
    json_t **all = ok ? calloc(total + 1, sizeof *all) : NULL;
    if (!all) {
        for (int i = 0; i < r->n; i++)
            json_decref(parts[i]);
        error(r, ok ? 500 : 502, "Internal",
              ok ? "out of memory composing the answer" : "malformed answer from a shard");
        return;
    }
    size_t n = 0, k;
    json_t *e;
    for (int i = 0; i < r->n; i++)
        json_array_foreach(json_object_get(parts[i], "devices"), k, e) {
            const char *id = device_id_of(e);
            if (id && (!horizon || strcmp(id, horizon) <= 0))
                all[n++] = e;
        }
    qsort(all, n, sizeof *all, by_device_id);
    json_t *page = json_array();
    const char *prev = NULL;
    size_t j = 0;
    for (; j < n && (long long)json_array_size(page) < r->list_limit; j++) {
        if (prev && strcmp(prev, device_id_of(all[j])) == 0)
            continue;   /* an entry left behind on another shard by a change of the ring */
        prev = device_id_of(all[j]);
        json_array_append(page, all[j]);
    }
    while (j < n && strcmp(prev, device_id_of(all[j])) == 0)
        j++;
    json_t *next = json_null();
    if (j < n)
        next = json_string(prev);   /* a full page with more after it */
    else if (horizon)
        next = json_string(horizon);
    set_answer(r, 200, json_pack("{s:o,s:o}", "devices", page, "next", next));
    free(all);
    for (int i = 0; i < r->n; i++)
        json_decref(parts[i]);
}

/* GET /v1/devices?limit=&after=&tag=: one page of the registry across every shard, in id order. */
static void h_device_list(req_t *r, const char *id)
{
    (void)id;
    long long limit = 100;
    if (!query_int(r, "limit", 1, 1000, &limit))
        return;
    const char *after = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "after");
    const char *tag = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "tag");
    if (after && *after && !sg_device_id_valid(after, strlen(after))) {
        error(r, 400, "InvalidQuery", "query parameter 'after' must be a device id: the 'next' of the previous page");
        return;
    }
    int shards = adm_bridge_shards(r->adm->bridge);
    if (shards == 0) {
        error(r, 503, "RouterUnavailable", "the cluster's shards are not known yet; retry");
        return;
    }
    if (shards > MAX_PARTS) {
        error(r, 500, "Internal", "the cluster has more shards than one listing can ask");
        return;
    }
    json_t *q = json_pack("{s:I}", "limit", (json_int_t)limit);
    if (after && *after)
        json_object_set_new(q, "after", json_string(after));
    json_t *jtag = tag ? json_string(tag) : NULL;
    if (tag && !jtag) {
        json_decref(q);
        error(r, 400, "InvalidQuery", "query parameter 'tag' must be UTF-8 text: KEY or KEY:VALUE");
        return;
    }
    if (jtag)
        json_object_set_new(q, "tag", jtag);   /* checked by the shards, which answer 400 InvalidQuery */
    r->list_limit = limit;
    submit_shards(r, shards, SG_ADM_DEVICE_LIST, q, finish_device_list);
}

/* ---------- certificate authorities (x509-ca devices) ----------
 * Every shard decides the CONNECTs of its own devices, so every shard keeps every CA: a put or
 * delete goes to all of them and succeeds only when all answered; a read asks shard 0. */

/* The answers of every shard to a CA put or delete: the first failure (its status and error
 * name, and a message saying the change may be partial), or else the strongest success (201 over
 * 200; 204 when some shard deleted it, 404 when none had it). */
static void finish_ca_all(req_t *r)
{
    int best = -1;
    for (int i = 0; i < r->n; i++) {
        int st = r->parts[i].status;
        if (st != 200 && st != 201 && st != 204 && st != 404) {
            json_t *e = part_json_any(&r->parts[i]);
            const char *name = json_string_value(json_object_get(e, "error"));
            const char *msg = json_string_value(json_object_get(e, "message"));
            char text[400];
            snprintf(text, sizeof text, "shard %d: %s; the other shards may have taken the change: repeat the call once "
                     "every shard is up", i, msg ? msg : "no answer");
            error(r, st >= 400 ? st : 503, name ? name : "ShardUnavailable", text);
            json_decref(e);
            return;
        }
        if (best < 0 || st == 201 || st == 204)
            best = i;
    }
    finish_passthrough_part(r, best < 0 ? 0 : best);
}

static void ca_all(req_t *r, const char *name, uint16_t op, json_t *q)
{
    int shards = adm_bridge_shards(r->adm->bridge);
    if (shards == 0 || shards > MAX_PARTS) {
        json_decref(q);
        error(r, 503, "RouterUnavailable", "the cluster's shards are not known yet; retry");
        return;
    }
    json_object_set_new(q, "name", json_string(name));
    submit_shards(r, shards, op, q, finish_ca_all);
}

static void h_ca_put(req_t *r, const char *name)
{
    json_t *b = body_json(r);
    if (!b)
        return;
    if (!json_is_string(json_object_get(b, "certificate"))) {
        json_decref(b);
        error(r, 400, "InvalidCertificate", "the body is {\"certificate\": \"-----BEGIN CERTIFICATE-----...\"} (PEM)");
        return;
    }
    ca_all(r, name, SG_ADM_CA_PUT, b);
}

static void h_ca_delete(req_t *r, const char *name) { ca_all(r, name, SG_ADM_CA_DELETE, json_object()); }

static void h_ca_get(req_t *r, const char *name)
{
    json_t *q = json_pack("{s:s}", "name", name);
    char *text = q ? json_dumps(q, JSON_COMPACT) : NULL;
    json_decref(q);
    zframe_t *f = text ? admin_frame(NULL, 0, SG_ADM_CA_GET, text) : NULL;
    free(text);
    submit(r, &f, 1, r->adm->timeout_ms, finish_passthrough);
}

static void h_ca_list(req_t *r, const char *id)
{
    (void)id;
    zframe_t *f = admin_frame(NULL, 0, SG_ADM_CA_GET, "{}");
    submit(r, &f, 1, r->adm->timeout_ms, finish_passthrough);
}

/* ---------- notifications (docs/notifications.md) ---------- */

/* Every shard's part of POST /v1/notifications: 202 with the sums once every shard has queued
 * its copies; otherwise the first failure as it is, with the notificationId when the failure
 * is the cluster's (a shard that did not answer in time may still finish its fan-out:
 * GET /v1/notifications/{id} tells). r->id holds the notification's id. */
static void finish_notify(req_t *r)
{
    json_int_t targets = 0, rejected = 0;
    for (int i = 0; i < r->n; i++) {
        json_t *p = json_loadb(r->parts[i].json ? r->parts[i].json : "", r->parts[i].len, 0, NULL);
        if (r->parts[i].status != 200 || !p) {
            int status = r->parts[i].status && p ? r->parts[i].status : 502;
            if (!p)
                p = json_pack("{s:s,s:s}", "error", "Internal", "message", "malformed answer from a shard");
            if (status >= 500)
                json_object_set_new(p, "notificationId", json_string(r->id));
            set_answer(r, status, p);
            return;
        }
        targets += json_integer_value(json_object_get(p, "targets"));
        rejected += json_integer_value(json_object_get(p, "rejected"));
        json_decref(p);
    }
    set_answer(r, 202, json_pack("{s:s,s:I,s:I}", "notificationId", r->id, "targets", targets, "rejected", rejected));
}

static void h_notify(req_t *r, const char *id)
{
    (void)id;
    json_t *b = body_json(r);
    if (!b)
        return;
    int shards = adm_bridge_shards(r->adm->bridge);
    if (shards == 0 || shards > MAX_PARTS) {
        json_decref(b);
        error(r, 503, "RouterUnavailable", "the cluster's shards are not known yet; retry");
        return;
    }
    uint8_t u[16];
    if (RAND_bytes(u, sizeof u) != 1) {
        json_decref(b);
        error(r, 500, "Internal", "no random source");
        return;
    }
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
    snprintf(r->id, sizeof r->id, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
    json_t *q = json_pack("{s:s,s:o}", "notificationId", r->id, "body", b);
    char *text = q ? json_dumps(q, JSON_COMPACT) : NULL;
    json_decref(q);
    zframe_t *frames[MAX_PARTS];
    for (int i = 0; i < shards; i++)
        frames[i] = text ? admin_frame(NULL, (uint32_t)i, SG_ADM_NOTIFY, text) : NULL;
    free(text);
    /* Every shard records it and answers when its fan-out is done; a shard refusing it as busy
     * has applied nothing and is asked again. */
    submit_with(r, frames, shards, r->adm->notify_timeout_ms, finish_notify, WAIT_ALL_RETRYING);
}

/* GET /v1/notifications/{id}: the shards' progress summed. */
static void finish_notify_get(req_t *r)
{
    json_int_t targets = 0, rejected = 0, created = 0, expires = 0;
    int found = 0, done = 0;
    for (int i = 0; i < r->n; i++) {
        if (r->parts[i].status == 404)
            continue;
        json_t *p = part_json(&r->parts[i]);
        if (!p) {
            adm_part_t first = r->parts[0];   /* swapped: on_completed frees every part */
            r->parts[0] = r->parts[i];
            r->parts[i] = first;
            finish_passthrough(r);
            return;
        }
        found++;
        done += json_is_true(json_object_get(p, "done"));
        targets += json_integer_value(json_object_get(p, "targets"));
        rejected += json_integer_value(json_object_get(p, "rejected"));
        created = json_integer_value(json_object_get(p, "createdAt"));
        expires = json_integer_value(json_object_get(p, "expiresAt"));
        json_decref(p);
    }
    if (!found) {
        error(r, 404, "NotificationNotFound", "no shard knows this notification");
        return;
    }
    char c[25], e[25];
    sg_rfc3339(created, c);
    sg_rfc3339(expires, e);
    set_answer(r, 200, json_pack("{s:s,s:I,s:I,s:i,s:i,s:b,s:s,s:s}", "notificationId", r->id, "targets", targets,
                                 "rejected", rejected, "shards", r->n, "shardsDone", done, "complete",
                                 found == r->n && done == r->n, "createdAt", c, "expiresAt", e));
}

static void h_notify_get(req_t *r, const char *id)
{
    if (strlen(id) > 36 || strspn(id, "0123456789abcdef-") != strlen(id)) {   /* never one of ours */
        error(r, 404, "NotificationNotFound", "no notification has this id");
        return;
    }
    int shards = adm_bridge_shards(r->adm->bridge);
    if (shards == 0 || shards > MAX_PARTS) {
        error(r, 503, "RouterUnavailable", "the cluster's shards are not known yet; retry");
        return;
    }
    submit_shards(r, shards, SG_ADM_NOTIFY_GET, json_pack("{s:s}", "notificationId", id), finish_notify_get);
}

/* ---------- inquiries (docs/inquiries.md) ---------- */

/* From a finish: the parts answered so far are dropped and the request waits for the cluster
 * again (on_request sees it is not done). */
static void ask_again(req_t *r)
{
    for (int i = 0; i < r->n; i++) {
        free(r->parts[i].json);
        r->parts[i] = (adm_part_t){0};
    }
    r->n = 0;
    atomic_store(&r->done, false);
}

static void finish_inquiry_claim(req_t *r);
static void finish_inquiry_watch(req_t *r);

/* Claim what is left of max from the next shard. */
static void inquiry_claim_next(req_t *r)
{
    int shard = (r->inq.first + r->inq.asked) % r->inq.shards;
    char q[64];
    snprintf(q, sizeof q, "{\"max\":%lld}", r->inq.max - (long long)json_array_size(r->inq.list));
    zframe_t *f = admin_frame(NULL, (uint32_t)shard, SG_ADM_INQUIRY_CLAIM, q);
    submit(r, &f, 1, r->adm->timeout_ms, finish_inquiry_claim);
}

/* Shards are asked one after the other, so an answer never holds more than max inquiries (each
 * claimed one is the caller's until its lease ends); with nothing anywhere and time left, every
 * shard is watched and the first that has something starts another pass. */
static void finish_inquiry_claim(req_t *r)
{
    adm_part_t *p = &r->parts[0];
    json_t *part = part_json(p);
    json_t *got = json_object_get(part, "inquiries");
    if (!json_is_array(got) && json_array_size(r->inq.list) == 0) {
        json_decref(part);
        finish_passthrough(r);   /* a shard that cannot claim: its error as it is */
        return;
    }
    json_array_extend(r->inq.list, got);
    json_decref(part);
    r->inq.asked++;
    long long have = (long long)json_array_size(r->inq.list);
    int64_t left = r->inq.deadline - sg_mono_ms();
    if (have < r->inq.max && r->inq.asked < r->inq.shards) {
        ask_again(r);
        inquiry_claim_next(r);
    } else if (have > 0 || left <= 0) {
        set_answer(r, 200, json_pack("{s:O}", "inquiries", r->inq.list));
    } else {
        ask_again(r);
        char q[48];
        snprintf(q, sizeof q, "{\"wait\":%lld}", (long long)((left + 999) / 1000));
        zframe_t *frames[MAX_PARTS];
        for (int i = 0; i < r->inq.shards; i++)
            frames[i] = admin_frame(NULL, (uint32_t)i, SG_ADM_INQUIRY_WATCH, q);
        submit_with(r, frames, r->inq.shards, left + r->adm->timeout_ms, finish_inquiry_watch, WAIT_FIRST);
    }
}

/* Has the client of a suspended request gone (closed or reset its connection)? libmicrohttpd
 * does not watch a suspended connection, so it cannot say: a one-byte peek at the socket can (0:
 * its end was closed; an error other than "nothing to read": reset). Bytes waiting (a pipelined
 * request) count as there. Limits: over HTTPS a client that closes cleanly first sends a TLS
 * close_notify, which is such bytes, so only a reset or a close without it is seen; a client
 * that half-closes its end after its request counts as gone. */
static bool client_gone(req_t *r)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    char b;
    ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* A shard has something claimable (or the wait is over): one more pass of claims. */
static void finish_inquiry_watch(req_t *r)
{
    for (int i = 0; i < r->n; i++)
        if (r->parts[i].status != 0 && r->parts[i].status != 200) {
            adm_part_t first = r->parts[0];   /* swapped: on_completed frees every part */
            r->parts[0] = r->parts[i];
            r->parts[i] = first;
            finish_passthrough(r);
            return;
        }
    /* A claim leases the inquiries to this request's client for store.inquiry_lease: one that
     * has gone while it waited (a consumer restarted, or its HTTP timeout was shorter than its
     * wait) would hide them from live consumers for the whole lease. Nothing is claimed for it. */
    if (client_gone(r)) {
        SG_INFO("admin", "inquiry.poll_abandoned", "reason=\"the client closed its connection while it waited; "
                "nothing claimed\"");
        set_answer(r, 200, json_pack("{s:[]}", "inquiries"));
        return;
    }
    ask_again(r);
    r->inq.asked = 0;
    inquiry_claim_next(r);
}

static _Atomic unsigned g_inquiry_turn;

/* GET /v1/inquiries?wait=&max=: claim up to max open inquiries, waiting up to wait s for one. */
static void h_inquiries(req_t *r, const char *id)
{
    (void)id;
    long long wait = 0, max = 10;
    if (!query_int(r, "wait", 0, 60, &wait) || !query_int(r, "max", 1, 100, &max))
        return;
    int shards = adm_bridge_shards(r->adm->bridge);
    if (shards == 0 || shards > MAX_PARTS) {
        error(r, 503, "RouterUnavailable", "the cluster's shards are not known yet; retry");
        return;
    }
    if (!(r->inq.list = json_array())) {
        error(r, 500, "Internal", "out of memory");
        return;
    }
    r->inq.deadline = sg_mono_ms() + wait * 1000;
    r->inq.max = max;
    r->inq.shards = shards;
    r->inq.first = (int)(atomic_fetch_add(&g_inquiry_turn, 1) % (unsigned)shards);   /* no shard always first */
    inquiry_claim_next(r);
}

/* POST /v1/inquiries/{partition}-{seq}/response {"status", "payload"}: to the inquiry's shard. */
static void h_inquiry_answer(req_t *r, const char *id)
{
    unsigned long long part, seq;
    int used = 0;
    /* digits, '-', digits and nothing else: %llu alone would also take a sign or spaces */
    size_t np = strspn(id, "0123456789"), ns = id[np] == '-' ? strspn(id + np + 1, "0123456789") : 0;
    bool shape = np > 0 && np <= 20 && ns > 0 && ns <= 20 && id[np + 1 + ns] == 0;
    if (!shape || sscanf(id, "%llu-%llu%n", &part, &seq, &used) != 2 || (size_t)used != strlen(id) ||
        part >= (unsigned long long)adm_bridge_shards(r->adm->bridge)) {
        error(r, 404, "InquiryNotFound", "no open inquiry has this id: it never existed, was answered already, or "
              "timed out");
        return;
    }
    json_t *b = body_json(r);
    if (!b)
        return;
    json_t *status = json_object_get(b, "status"), *payload = json_object_get(b, "payload");
    if (!json_is_integer(status) || json_integer_value(status) < 100 || json_integer_value(status) > 599) {
        error(r, 400, "InvalidAnswer", "an answer is {\"status\": 100-599, \"payload\": any JSON value}");
    } else {
        json_t *q = json_pack("{s:I,s:O,s:O}", "seq", (json_int_t)seq, "status", status, "payload",
                              payload ? payload : json_null());
        char *text = q ? json_dumps(q, JSON_COMPACT) : NULL;
        json_decref(q);
        zframe_t *f = text ? admin_frame(NULL, (uint32_t)part, SG_ADM_INQUIRY_ANSWER, text) : NULL;
        free(text);
        submit(r, &f, 1, r->adm->timeout_ms, finish_passthrough);
    }
    json_decref(b);
}

/* Starts at the request's headers (see on_request); lines are taken as the body arrives. */
static void h_import(req_t *r, const char *id)
{
    (void)id;
    adm_bridge_t *b = r->adm->bridge;
    /* Lines are addressed to their shards by the ring: without it (any key has an owner once it
     * is known) nothing could be sent. */
    if (adm_bridge_shards(b) == 0 || adm_bridge_shard_of(b, "", 0) < 0) {
        error(r, 503, "RouterUnavailable", "the cluster's ring is not known yet; retry");
        return;
    }
    if (!(r->import = adm_import_new(b, r->conn, r->adm->max_body, r->adm->timeout_ms)))
        error(r, 500, "Internal", "out of memory");
}

/* POST /v1/devices/{id}/methods/{name}[?fallback=queue] {"payload", "responseTimeoutSeconds",
 * "connectTimeoutSeconds", "ttlSeconds"}: a direct method, run by the device's shard (it knows the
 * session: store/st_wmethod.c), which answers with the device's response or at a deadline; this
 * request waits (suspended) for at most both timeouts plus admin.timeout. With fallback=queue, a
 * device that cannot answer now gets the request as a queued cloud-to-device message instead
 * (202). */
static void h_method(req_t *r, const char *id)
{
    const char *fb = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "fallback");
    if (fb && strcmp(fb, "queue") != 0) {
        error(r, 400, "InvalidQuery", "query parameter 'fallback' may only be 'queue'");
        return;
    }
    json_t *b = r->body.len == 0 ? json_object() : body_json(r);   /* no body: payload null, default timeouts */
    if (!b)
        return;
    const char *k, *why = NULL;
    char unknown[160];
    json_t *v;
    json_object_foreach(b, k, v) {
        if (strcmp(k, "payload") && strcmp(k, "responseTimeoutSeconds") && strcmp(k, "connectTimeoutSeconds") &&
            !(fb && strcmp(k, "ttlSeconds") == 0)) {
            snprintf(unknown, sizeof unknown, strcmp(k, "ttlSeconds") == 0 ? "'ttlSeconds' needs ?fallback=queue"
                                                                            : "unknown member '%.100s'", k);
            why = unknown;
            break;
        }
    }
    json_t *rt = json_object_get(b, "responseTimeoutSeconds"), *ct = json_object_get(b, "connectTimeoutSeconds");
    json_t *ttl = json_object_get(b, "ttlSeconds");
    if (!why && rt && (!json_is_integer(rt) || json_integer_value(rt) < 5 || json_integer_value(rt) > 300))
        why = "'responseTimeoutSeconds' must be an integer from 5 to 300";
    else if (!why && ct && (!json_is_integer(ct) || json_integer_value(ct) < 0 || json_integer_value(ct) > 300))
        why = "'connectTimeoutSeconds' must be an integer from 0 to 300";
    else if (!why && fb && ct && json_integer_value(ct) != 0)
        why = "with ?fallback=queue a call does not wait for a connection: 'connectTimeoutSeconds' must be 0";
    if (why) {
        error(r, 400, "InvalidMethodRequest", why);
        json_decref(b);
        return;
    }
    long long resp = rt ? json_integer_value(rt) : 30, conn = ct ? json_integer_value(ct) : 0;
    json_t *q = json_pack("{s:s,s:O?,s:I,s:I}", "name", r->name, "payload", json_object_get(b, "payload"),
                          "responseTimeoutSeconds", (json_int_t)resp, "connectTimeoutSeconds", (json_int_t)conn);
    if (fb) {
        /* the queued message: the method's payload as JSON text, named by a property; the store
         * checks ttlSeconds as it does for POST /v1/devices/{id}/messages */
        json_t *p = json_object_get(b, "payload");
        char *text = p ? json_dumps(p, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("null");
        json_t *m = json_pack("{s:s?,s:{s:s}}", "payload", text, "properties", "method", r->name);
        if (ttl)
            json_object_set(m, "ttlSeconds", ttl);
        json_object_set_new(q, "fallback", m);
        free(text);
    }
    json_decref(b);
    char *text = q ? json_dumps(q, JSON_COMPACT) : NULL;
    json_decref(q);
    zframe_t *f = text ? admin_frame(id, SG_WIRE_SHARD_BY_DEVICE, SG_ADM_METHOD_INVOKE, text) : NULL;
    free(text);
    submit(r, &f, 1, (resp + conn) * 1000 + r->adm->timeout_ms, finish_passthrough);
}

static const route_t k_routes[] = {
    /* probes and scrapers may add parameters of their own: not checked (NULL) */
    {"GET", "/healthz", 0, BODY_NONE, h_healthz, NULL},
    {"GET", "/readyz", 0, BODY_NONE, h_readyz, NULL},
    {"GET", "/metrics", ANY_ROLE, BODY_NONE, h_metrics, NULL},
    {"GET", "/v1/cluster", ADM_ROLE_ADMIN, BODY_NONE, h_cluster, ""},
    {"GET", "/v1/telemetry", ADM_ROLE_SERVICE, BODY_NONE, h_telemetry, "partition after max wait min group"},
    {"POST", "/v1/telemetry/groups/*/commit", ADM_ROLE_SERVICE, BODY_JSON, h_group_commit, ""},
    {"GET", "/v1/feedback", ADM_ROLE_SERVICE, BODY_NONE, h_feedback, "partition after max wait min group"},
    {"POST", "/v1/feedback/groups/*/commit", ADM_ROLE_SERVICE, BODY_JSON, h_feedback_commit, ""},
    {"POST", IMPORT_PATH, ADM_ROLE_REGISTRY_WRITE, BODY_STREAM, h_import, ""},
    {"GET", "/v1/devices", ADM_ROLE_REGISTRY_READ, BODY_NONE, h_device_list, "limit after tag"},
    {"PUT", "/v1/devices/*", ADM_ROLE_REGISTRY_WRITE, BODY_JSON, h_device_put, ""},
    {"GET", "/v1/devices/*", ADM_ROLE_REGISTRY_READ, BODY_NONE, h_device_get, ""},
    {"DELETE", "/v1/devices/*", ADM_ROLE_REGISTRY_WRITE, BODY_NONE, h_device_delete, ""},
    {"POST", "/v1/devices/*/keys:regenerate", ADM_ROLE_REGISTRY_WRITE, BODY_JSON, h_keys_regenerate, ""},
    {"POST", "/v1/devices/*/messages", ADM_ROLE_SERVICE, BODY_JSON, h_enqueue, ""},
    {"GET", "/v1/devices/*/messages", ADM_ROLE_SERVICE, BODY_NONE, h_msg_list, ""},
    {"DELETE", "/v1/devices/*/messages", ADM_ROLE_SERVICE, BODY_NONE, h_msg_purge, ""},
    {"GET", "/v1/devices/*/deadletters", ADM_ROLE_SERVICE, BODY_NONE, h_dead_list, ""},
    {"POST", "/v1/notifications", ADM_ROLE_SERVICE, BODY_JSON, h_notify, ""},
    {"GET", "/v1/notifications/*", ADM_ROLE_SERVICE, BODY_NONE, h_notify_get, ""},
    {"POST", "/v1/devices/*/methods/*", ADM_ROLE_SERVICE, BODY_JSON, h_method, "fallback"},
    {"GET", "/v1/inquiries", ADM_ROLE_SERVICE, BODY_NONE, h_inquiries, "wait max"},
    {"POST", "/v1/inquiries/*/response", ADM_ROLE_SERVICE, BODY_JSON, h_inquiry_answer, ""},
    {"GET", "/v1/certificateAuthorities", ADM_ROLE_REGISTRY_READ, BODY_NONE, h_ca_list, ""},
    {"PUT", "/v1/certificateAuthorities/*", ADM_ROLE_REGISTRY_WRITE, BODY_JSON, h_ca_put, ""},
    {"GET", "/v1/certificateAuthorities/*", ADM_ROLE_REGISTRY_READ, BODY_NONE, h_ca_get, ""},
    {"DELETE", "/v1/certificateAuthorities/*", ADM_ROLE_REGISTRY_WRITE, BODY_NONE, h_ca_delete, ""},
};

typedef struct {
    const char *allowed;   /* space-separated names */
    bool unknown;
    char bad[72];          /* the first name not among them, cleaned for the answer */
} query_check_t;

static enum MHD_Result query_name_known(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    query_check_t *q = cls;
    (void)kind;
    (void)value;
    size_t n = strlen(key);
    for (const char *p = q->allowed; *p;) {
        size_t w = strcspn(p, " ");
        if (w == n && memcmp(p, key, n) == 0)
            return MHD_YES;
        p += w + (p[w] == ' ');
    }
    q->unknown = true;
    sg_log_clean(q->bad, sizeof q->bad, key, n);
    return MHD_NO;
}

/* Every query parameter of the request is one the route reads; else 400 InvalidQuery. */
static bool query_known(req_t *r, const char *allowed)
{
    query_check_t q = {allowed, false, ""};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, query_name_known, &q);
    if (!q.unknown)
        return true;
    char msg[256];
    snprintf(msg, sizeof msg, "query parameter '%s' is not one this endpoint reads (%s)", q.bad,
             *allowed ? allowed : "it reads none");
    error(r, 400, "InvalidQuery", msg);
    return false;
}

/* Match url against pattern; the first '*' segment is copied to id, a second one to name. */
static bool match(const char *pattern, const char *url, char *id, size_t idcap, char *name, size_t namecap)
{
    while (*pattern && *url) {
        if (*pattern == '*') {
            size_t n = strcspn(url, "/");
            if (n == 0 || n >= idcap)
                return false;
            memcpy(id, url, n);
            id[n] = 0;
            id = name;   /* the next '*' */
            idcap = namecap;
            url += n;
            pattern++;
            continue;
        }
        if (*pattern++ != *url++)
            return false;
    }
    return !*pattern && !*url;
}

/* Percent-decoding of the path and query (MHD's own, except that %00 becomes 0x7f): a NUL would
 * cut "victim%00x" to the id "victim" for every string function after this, while 0x7f is
 * refused by the device id rules (400) and by every number parser. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    (void)cls;
    (void)conn;
    char *o = s;
    for (const char *p = s; *p; p++) {
        if (p[0] == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], 0};
            unsigned long v = strtoul(hex, NULL, 16);
            *o++ = v == 0 ? 0x7f : (char)v;
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return (size_t)(o - s);
}

/* The body the headers announce: Content-Length (libmicrohttpd has checked its syntax) or a
 * Transfer-Encoding, whose length is known only at its end. */
static uint64_t declared_body(req_t *r, bool *chunked)
{
    *chunked = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    return cl ? strtoull(cl, NULL, 10) : 0;
}

static void too_large(req_t *r, size_t limit)
{
    char msg[120];
    if (limit == 0)
        snprintf(msg, sizeof msg, "this call takes no request body");
    else
        snprintf(msg, sizeof msg, "request bodies are limited to %zu bytes", limit);
    error(r, 413, "BodyTooLarge", msg);
}

/* Everything the request line and headers decide: the route, the caller's token and role, the
 * declared body size, the device id. Runs when the headers are complete and before any of the
 * body is read. False with the answer set when the request is refused. */
static bool admit(req_t *r)
{
    bool chunked;
    uint64_t declared = declared_body(r, &chunked);
    r->has_body = declared > 0 || chunked;   /* first: every refusal below is answered at once with it */
    const route_t *route = NULL;
    bool path_known = false;
    for (size_t i = 0; i < sizeof k_routes / sizeof k_routes[0]; i++) {
        if (!match(k_routes[i].pattern, r->url, r->id, sizeof r->id, r->name, sizeof r->name))
            continue;
        path_known = true;
        if (strcmp(k_routes[i].method, r->method) == 0) {
            route = &k_routes[i];
            break;
        }
    }
    if (!route) {
        if (path_known)
            error(r, 405, "MethodNotAllowed", "this path does not take that method");
        else
            error(r, 404, "NotFound", "no such endpoint; see the HTTP API in the README");
        return false;
    }
    if (route->role != 0) {
        const char *auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        int roles = 0;
        if (auth && strncasecmp(auth, "Bearer ", 7) == 0)
            roles = adm_tokens_check(r->adm->tokens, auth + 7, strlen(auth + 7), &r->who);
        if (!roles) {
            error(r, 401, "Unauthorized", "send 'Authorization: Bearer <token>' with a valid API token");
            return false;
        }
        if (route->role != ANY_ROLE && !(roles & route->role)) {
            error(r, 403, "Forbidden", "the token lacks the role this call needs");
            return false;
        }
    }
    if (route->query && !query_known(r, route->query))
        return false;
    if (route->body == BODY_NONE && r->has_body) {
        too_large(r, 0);
        return false;
    }
    if (route->body == BODY_JSON && declared > r->adm->max_body) {
        too_large(r, r->adm->max_body);
        return false;
    }
    if (strchr(route->pattern, '*') && route->fn != h_notify_get && route->fn != h_inquiry_answer &&
        !sg_device_id_valid(r->id, strlen(r->id))) {
        error(r, 400, "InvalidDeviceId", "device ids are 1-128 characters of A-Z a-z 0-9 - . % _ * ? ! ( ) , : = @ $ '");
        return false;
    }
    const char *star = strchr(route->pattern, '*');
    if (star && strchr(star + 1, '*') && !sg_method_name_valid(r->name, strlen(r->name), SG_METHOD_NAME_MAX)) {
        error(r, 400, "InvalidMethodName", "method names are 1-128 characters of A-Z a-z 0-9 - . _ ~ : @ ! $ ' ( ) * , ; =");
        return false;
    }
    r->route = route;
    return true;
}

/* The whole body is in (or there was none): run the admitted route. */
static void dispatch(req_t *r)
{
    if (r->too_big) {   /* a chunked body that grew past the limit: read to its end, not kept */
        too_large(r, r->adm->max_body);
        return;
    }
    r->route->fn(r, r->id);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    adm_http_t *a = cls;
    (void)version;
    req_t *r = *con_cls;
    if (!r) {
        /* The headers are complete; nothing of the body has been read yet. */
        adm_deadline_headers_done(a->deadline, conn);
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->adm = a;
        r->conn = conn;
        r->method = method;
        r->url = url;
        r->start = sg_mono_ms();
        sg_wbuf_init(&r->body, a->max_body);
        *con_cls = r;
        /* An import starts at its headers, so its body is taken as a stream. */
        if (admit(r) && r->route->body == BODY_STREAM)
            r->route->fn(r, r->id);
        /* Refused (or the import could not start): with a body announced, answer now. The body
         * is never read: libmicrohttpd, given an answer at the headers, sends it with
         * "Connection: close" and closes (no 100 Continue goes out either). Without one, the
         * answer waits for libmicrohttpd's next call, so the connection can be kept alive. */
        if (r->status && r->has_body)
            return respond(r);
        return MHD_YES;
    }
    if (r->import) {
        if (*upload_size) {
            *upload_size -= adm_import_feed(r->import, upload, *upload_size);
            return MHD_YES;
        }
        char *answer = NULL;
        if (!adm_import_finish(r->import, &answer))
            return MHD_YES;   /* suspended until the shards answer */
        if (answer) {
            r->status = 200;
            free(r->text);
            r->text = answer;
        } else {
            error(r, 500, "Internal", "out of memory composing the answer");
        }
        return respond(r);
    }
    if (*upload_size) {
        /* Only admitted JSON routes get here (a refused request with a body was answered at its
         * headers): past the limit the rest is read and dropped, and answered 413. */
        if (!r->too_big && sg_wbuf_bytes(&r->body, upload, *upload_size) != SG_OK)
            r->too_big = true;
        *upload_size = 0;
        return MHD_YES;
    }
    if (r->submitted) {
        if (!atomic_load(&r->done))
            return MHD_YES;
        unsigned submits = r->submits;
        if (r->finish)
            r->finish(r);
        /* The finish asked the cluster again (ask_again): its answer resumes the connection and
         * runs the next finish. That answer may have come already (done set again while the
         * finish ran), so `done` cannot tell; the count of submissions can. */
        if (r->submits != submits)
            return MHD_YES;
        return respond(r);
    }
    if (!r->status)
        dispatch(r);
    if (r->submitted)
        return MHD_YES;
    return respond(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    adm_http_t *a = cls;
    (void)toe;
    /* Kept alive, the connection now waits for its next request's headers. */
    adm_deadline_rearm(a->deadline, conn);
    req_t *r = *con_cls;
    if (!r)
        return;
    for (int i = 0; i < r->n; i++)
        free(r->parts[i].json);
    json_decref(r->inq.list);
    adm_import_destroy(&r->import);
    sg_wbuf_fini(&r->body);
    free(r->text);
    free(r);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = 0;
    SG_WARN("admin", "mhd", "reason=\"%s\"", msg);
}

#define PEM_MAX (1u << 20)

/* A PEM file as a C string (libmicrohttpd takes certificate and key in memory); *len (if len)
 * gets its size with the NUL. NULL with a log line naming the key. */
static char *read_pem(const char *key, const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        SG_ERROR("admin", "tls.unreadable", "key=%s path=\"%s\" reason=\"%s\"", key, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(PEM_MAX + 1);
    size_t got = buf ? fread(buf, 1, PEM_MAX + 1, f) : 0;
    bool failed = ferror(f);
    fclose(f);
    if (buf && !failed && got <= PEM_MAX) {
        buf[got] = 0;
        if (strstr(buf, "-----BEGIN ")) {
            if (len)
                *len = got + 1;
            return buf;
        }
    }
    SG_ERROR("admin", "tls.invalid", "key=%s path=\"%s\" reason=\"%s\"", key, path,
             !buf ? "out of memory" : failed ? "read error" : got > PEM_MAX ? "larger than 1 MiB" : "not a PEM file");
    if (buf)
        OPENSSL_clear_free(buf, PEM_MAX + 1);
    return NULL;
}

/* admin.tls_cert and admin.tls_key, both or neither. */
static sg_rc tls_load(adm_http_t *a, const sg_config_t *cfg)
{
    const char *cert = sg_config_str(cfg, "admin.tls_cert"), *key = sg_config_str(cfg, "admin.tls_key");
    if (!*cert || !*key) {
        SG_ERROR("admin", "tls.incomplete", "reason=\"set both admin.tls_cert and admin.tls_key (PEM files) for HTTPS, "
                 "or neither for plain HTTP\"");
        return SG_E_INVALID;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        SG_ERROR("admin", "tls.unsupported", "reason=\"this libmicrohttpd has no TLS (GnuTLS); unset admin.tls_cert "
                 "and admin.tls_key, or install a build with TLS\"");
        return SG_E_INVALID;
    }
    SG_ENSURE((a->tls_cert = read_pem("admin.tls_cert", cert, NULL)) != NULL, SG_E_INVALID);
    SG_ENSURE((a->tls_key = read_pem("admin.tls_key", key, &a->tls_key_len)) != NULL, SG_E_INVALID);
    return SG_OK;
}

adm_http_t *adm_http_new(const sg_config_t *cfg, const char *name, const char *routers)
{
    adm_http_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    char err[300];
    a->tokens = adm_tokens_load(sg_config_str(cfg, "admin.tokens"), err, sizeof err);
    if (!a->tokens) {
        SG_ERROR("admin", "tokens.invalid", "reason=\"%s\"", err);
        free(a);
        return NULL;
    }
    a->max_body = (size_t)sg_config_int(cfg, "admin.max_body");
    a->timeout_ms = sg_config_int(cfg, "cluster.request_timeout") * 1000;
    a->notify_timeout_ms = sg_config_int(cfg, "admin.notification_timeout") * 1000;
    a->bridge = adm_bridge_new(routers, name, (int)sg_config_int(cfg, "cluster.hwm"));
    if (!a->bridge) {
        adm_http_destroy(&a);
        return NULL;
    }
    const char *host = sg_config_str(cfg, "admin.bind");
    int port = (int)sg_config_int(cfg, "admin.port");
    struct sockaddr_storage ss;
    bool v6;
    if (sg_sockaddr(host, port, &ss, &v6) != SG_OK) {
        SG_ERROR("admin", "bind.invalid", "address=%s reason=\"admin.bind must be a numeric IPv4 or IPv6 address\"", host);
        adm_http_destroy(&a);
        return NULL;
    }
    unsigned threads = (unsigned)sg_config_int(cfg, "admin.threads");
    unsigned max_conn = (unsigned)sg_config_int(cfg, "admin.max_connections");
    if (max_conn < threads) {   /* libmicrohttpd gives each thread its share of the limit */
        SG_ERROR("admin", "config.invalid", "reason=\"admin.max_connections (%u) must be at least admin.threads (%u)\"",
                 max_conn, threads);
        adm_http_destroy(&a);
        return NULL;
    }
    bool tls = *sg_config_str(cfg, "admin.tls_cert") || *sg_config_str(cfg, "admin.tls_key");
    if (tls && tls_load(a, cfg) != SG_OK) {
        adm_http_destroy(&a);
        return NULL;
    }
    if (!(a->deadline = adm_deadline_new(sg_config_int(cfg, "admin.header_timeout") * 1000))) {
        adm_http_destroy(&a);
        return NULL;
    }
    /* The options that depend on the configuration; the rest follow in the call. */
    struct MHD_OptionItem opts[8];
    size_t n = 0;
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, max_conn, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                        (intptr_t)sg_config_int(cfg, "admin.max_connections_per_ip"), NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT,
                                        (intptr_t)sg_config_int(cfg, "admin.idle_timeout"), NULL};
    if (threads > 1)
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
    if (tls) {
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, a->tls_cert};
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, a->tls_key};
    }
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     (v6 ? MHD_USE_IPv6 : 0) | (tls ? MHD_USE_TLS : 0);
    a->mhd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, a, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, a,
                              MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
                              MHD_OPTION_SOCK_ADDR, &ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
                              MHD_OPTION_NOTIFY_CONNECTION, adm_deadline_notify, a->deadline,
                              MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!a->mhd) {
        SG_ERROR("admin", "listen.failed", "address=%s port=%d%s", host, port,
                 tls ? " reason=\"or admin.tls_cert/admin.tls_key are not a certificate and its key (see the mhd line "
                       "above)\"" : "");
        adm_http_destroy(&a);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_BIND_PORT);
    a->port = info ? info->port : port;
    a->tls = tls;
    SG_INFO("admin", "ready", "address=%s port=%d scheme=%s threads=%u routers=%s tokens=%zu", host, a->port,
            tls ? "https" : "http", threads, routers, adm_tokens_count(a->tokens));
    return a;
}

void adm_http_destroy(adm_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    adm_http_t *a = *self_p;
    /* The bridge answers every waiting request first (no connection stays suspended) and then
     * refuses new ones, while MHD may still call it; only after MHD has stopped does it go. */
    adm_bridge_stop(a->bridge);
    if (a->mhd)
        MHD_stop_daemon(a->mhd);
    adm_deadline_destroy(&a->deadline);
    adm_bridge_destroy(&a->bridge);
    adm_tokens_destroy(&a->tokens);
    free(a->tls_cert);
    if (a->tls_key)
        OPENSSL_clear_free(a->tls_key, a->tls_key_len);
    free(a);
    *self_p = NULL;
}

int adm_http_port(const adm_http_t *self) { return self->port; }

bool adm_http_tls(const adm_http_t *self) { return self->tls; }
