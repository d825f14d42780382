/* sim_http.c — device import and the iothub back-end over sacgate's HTTP API; see sim_http.h.
 * libcurl does HTTP (connection reuse, chunked uploads, many transfers on one thread through
 * its multi interface); jansson reads the answers. */
#include "sim_http.h"
#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include "sg_buf.h"
#include "sg_codec.h"
#include "sim_cred.h"

#define IMPORT_CHUNK 100000        /* devices per request: progress, and a bounded answer */
#define POLL_MAX 1000
#define READ_RETRY_MS 200          /* pause before a failed long-poll is sent again */
#define MAX_COMMANDS_IN_FLIGHT 64
#define MAX_PARTITIONS 1024

sg_rc sim_http_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? SG_OK : SG_E_IO; }

void sim_http_cleanup(void) { curl_global_cleanup(); }

void sim_derive_secondary(const char *seed, const char *device_id, uint8_t out[32])
{
    char id2[256];
    snprintf(id2, sizeof id2, "%s#secondary", device_id);
    sim_derive_key(seed, id2, out);
}

/* ---------- small helpers ---------- */

typedef struct {
    sg_wbuf_t body;
} sink_t;

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    sink_t *s = arg;
    return sg_wbuf_bytes(&s->body, p, size * n) == SG_OK ? size * n : 0;
}

static struct curl_slist *auth_headers(const sim_opts_t *o, const char *ctype)
{
    char h[600];
    snprintf(h, sizeof h, "Authorization: Bearer %s", o->token);
    struct curl_slist *l = curl_slist_append(NULL, h);
    if (ctype) {
        snprintf(h, sizeof h, "Content-Type: %s", ctype);
        l = curl_slist_append(l, h);
    }
    /* no "Expect: 100-continue" round trip before bodies */
    return curl_slist_append(l, "Expect:");
}

/* ---------- import ---------- */

typedef struct {
    const sim_opts_t *o;
    uint64_t next, end;        /* device numbers still to write */
    const char *thumbprint;    /* --cert's SHA-256 (hex): devices registered as x509, or NULL */
    char line[1024];
    size_t line_len, line_off;
} import_src_t;

/* The registry entry's auth for the credential the devices will present: the PSK (--psk-derive:
 * the same derivation the handshake uses; --psk-hex), the thumbprint of --cert (every device
 * presents that one certificate), or SAS keys. 0 when none of those applies. */
static int import_other_auth(import_src_t *s, const char *id)
{
    const sim_opts_t *o = s->o;
    char hex[2 * SIM_KEY_LEN + 1];
    if (o->psk_derive) {
        uint8_t key[SIM_KEY_LEN];
        sim_derive_key(o->key_seed, id, key);
        sg_hex_encode(key, sizeof key, hex);
        return snprintf(s->line, sizeof s->line, "{\"deviceId\":\"%s\",\"auth\":{\"type\":\"psk\",\"key\":\"%s\"}}\n",
                        id, hex);
    }
    if (o->psk_hex[0])
        return snprintf(s->line, sizeof s->line, "{\"deviceId\":\"%s\",\"auth\":{\"type\":\"psk\",\"key\":\"%s\"}}\n",
                        id, o->psk_hex);
    if (s->thumbprint)
        return snprintf(s->line, sizeof s->line,
                        "{\"deviceId\":\"%s\",\"auth\":{\"type\":\"x509\",\"thumbprints\":[\"%s\"]}}\n", id, s->thumbprint);
    return 0;
}

static void import_line(import_src_t *s)
{
    char id[192], k1[64], k2[64];
    uint8_t key[32];
    if (sim_device_name(id, sizeof id, s->o->prefix, s->next) != SG_OK)
        snprintf(id, sizeof id, "invalid");
    int other = import_other_auth(s, id);
    if (other > 0) {
        s->line_len = (size_t)other < sizeof s->line ? (size_t)other : 0;
        s->line_off = 0;
        s->next++;
        return;
    }
    sim_derive_key(s->o->key_seed, id, key);
    sg_b64_encode(key, sizeof key, k1);
    sim_derive_secondary(s->o->key_seed, id, key);
    sg_b64_encode(key, sizeof key, k2);
    int n = snprintf(s->line, sizeof s->line,
                     "{\"deviceId\":\"%s\",\"auth\":{\"type\":\"sas\",\"primaryKey\":\"%s\",\"secondaryKey\":\"%s\"}}\n",
                     id, k1, k2);
    s->line_len = n > 0 && (size_t)n < sizeof s->line ? (size_t)n : 0;
    s->line_off = 0;
    s->next++;
}

static size_t import_read(char *buf, size_t size, size_t nitems, void *arg)
{
    import_src_t *s = arg;
    size_t cap = size * nitems, n = 0;
    while (n < cap) {
        if (s->line_off == s->line_len) {
            if (s->next >= s->end)
                break;
            import_line(s);
        }
        size_t k = s->line_len - s->line_off;
        if (k > cap - n)
            k = cap - n;
        memcpy(buf + n, s->line + s->line_off, k);
        s->line_off += k;
        n += k;
    }
    return n;
}

/* Hex SHA-256 of the DER of the first certificate in a PEM file. */
static sg_rc cert_thumbprint(const char *path, char out[65])
{
    FILE *f = fopen(path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    unsigned char *der = NULL;
    int n = x ? i2d_X509(x, &der) : -1;
    X509_free(x);
    if (n <= 0)
        return SG_E_INVALID;
    uint8_t md[32];
    unsigned int mdlen = 0;
    EVP_Digest(der, (size_t)n, md, &mdlen, EVP_sha256(), NULL);
    OPENSSL_free(der);
    sg_hex_encode(md, sizeof md, out);
    return SG_OK;
}

sg_rc sim_provision_import(const sim_opts_t *o, sim_tstats_t *st, FILE *out, char *err, size_t err_len)
{
    char url[512];
    snprintf(url, sizeof url, "%s/v1/devices:import", o->admin_url);
    int64_t t0 = sim_mono_us();
    uint64_t done = 0;
    char thumb[65] = "";
    if (o->cert[0] && cert_thumbprint(o->cert, thumb) != SG_OK) {
        snprintf(err, err_len, "--cert %s: no PEM certificate to register the devices with", o->cert);
        return SG_E_INVALID;
    }
    for (uint64_t first = o->slice_first; first < o->slice_first + o->slice_n; first += IMPORT_CHUNK) {
        uint64_t end = first + IMPORT_CHUNK;
        if (end > o->slice_first + o->slice_n)
            end = o->slice_first + o->slice_n;
        import_src_t src = {.o = o, .next = first, .end = end, .thumbprint = thumb[0] ? thumb : NULL};
        sink_t sink;
        sg_wbuf_init(&sink.body, 64u << 20);
        CURL *c = curl_easy_init();
        struct curl_slist *h = auth_headers(o, "application/x-ndjson");
        if (!c) {
            snprintf(err, err_len, "curl_easy_init failed");
            sg_wbuf_fini(&sink.body);
            curl_slist_free_all(h);
            return SG_E_NOMEM;
        }
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, import_read);
        curl_easy_setopt(c, CURLOPT_READDATA, &src);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
        /* a stalled gateway fails the import instead of hanging the run */
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 120L);
        CURLcode rc = curl_easy_perform(c);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(c);
        curl_slist_free_all(h);
        json_t *ans = rc == CURLE_OK && status == 200 ? json_loadb((const char *)sink.body.data, sink.body.len, 0, NULL) : NULL;
        if (!ans) {
            if (rc != CURLE_OK)
                snprintf(err, err_len, "POST %s: %s", url, curl_easy_strerror(rc));
            else
                snprintf(err, err_len, "POST %s: HTTP %ld: %.*s", url, status,
                         (int)(sink.body.len > 300 ? 300 : sink.body.len), (const char *)sink.body.data);
            sg_wbuf_fini(&sink.body);
            return SG_E_IO;
        }
        uint64_t ok = (uint64_t)(json_integer_value(json_object_get(ans, "created")) +
                                 json_integer_value(json_object_get(ans, "updated")));
        uint64_t failed = (uint64_t)json_integer_value(json_object_get(ans, "failed"));
        sim_count(st, SIM_C_IMPORTED, ok);
        sim_count(st, SIM_C_IMPORT_FAILED, failed);
        json_t *errors = json_object_get(ans, "errors");
        size_t i;
        json_t *e;
        json_array_foreach(errors, i, e) {
            if (i >= 3)
                break;
            fprintf(out, "import: line %lld device %s: %s: %s\n", (long long)json_integer_value(json_object_get(e, "line")),
                    json_string_value(json_object_get(e, "deviceId")) ? json_string_value(json_object_get(e, "deviceId")) : "-",
                    json_string_value(json_object_get(e, "error")), json_string_value(json_object_get(e, "message")));
        }
        json_decref(ans);
        sg_wbuf_fini(&sink.body);
        done += end - first;
        double secs = (double)(sim_mono_us() - t0) / 1e6;
        if (!o->quiet)
            fprintf(out, "import: %" PRIu64 "/%" PRIu64 " devices in %.1f s (%.0f/s)\n", done, o->slice_n, secs,
                    secs > 0 ? (double)done / secs : 0.0);
    }
    return SG_OK;
}

/* ---------- the back-end ---------- */

typedef struct {
    CURL *c;
    sink_t sink;
    int kind;                  /* 0 telemetry poll, 1 command */
    int partition;
    int64_t retry_at_us;   /* a long-poll that failed: started again then (0: under way) */
    char url[512];
    char *body;
} xfer_t;

typedef struct {
    const sim_backend_cfg_t *cfg;
    const sim_opts_t *o;
    CURLM *m;
    struct curl_slist *hdr_get, *hdr_post;
    int partitions;
    int64_t after[MAX_PARTITIONS];
    xfer_t *polls;
    int commands_in_flight;
    double commands_sent;
    uint64_t rng;
    int64_t t0_us;
    bool read_failed_said;   /* the first failed read was reported on stderr */
} backend_t;

static void xfer_reset_sink(xfer_t *x)
{
    sg_wbuf_reset(&x->sink.body);
}

static void poll_start(backend_t *b, int p)
{
    xfer_t *x = &b->polls[p];
    /* wait in seconds with three decimals; min only when asked (an older gateway refuses no
     * parameter it does not know, but says nothing of one either) */
    int n = snprintf(x->url, sizeof x->url, "%s/v1/telemetry?partition=%d&after=%" PRId64 "&max=%d&wait=%d.%03d",
                     b->o->admin_url, p, b->after[p], POLL_MAX, b->o->backend_wait_ms / 1000, b->o->backend_wait_ms % 1000);
    if (b->o->backend_min > 1 && n > 0 && (size_t)n < sizeof x->url)
        snprintf(x->url + n, sizeof x->url - (size_t)n, "&min=%d", b->o->backend_min);
    xfer_reset_sink(x);
    curl_easy_setopt(x->c, CURLOPT_URL, x->url);
    curl_multi_add_handle(b->m, x->c);
}

static void on_records(backend_t *b, int p, json_t *ans)
{
    json_t *recs = json_object_get(ans, "records");
    if (json_array_size(recs) > 0)
        sim_count(b->cfg->st, SIM_C_TELE_PAGES, 1);
    size_t i;
    json_t *r;
    int64_t now = sim_real_us();
    uint8_t *buf = NULL;
    size_t cap = 0;
    json_array_foreach(recs, i, r) {
        const char *p64 = json_string_value(json_object_get(r, "payload"));
        size_t l = p64 ? strlen(p64) : 0, n;
        if (l / 4 * 3 + 3 > cap) {
            cap = l / 4 * 3 + 3;
            uint8_t *nb = realloc(buf, cap);
            if (!nb)
                break;
            buf = nb;
        }
        int64_t t = -1;
        if (p64 && sg_b64_decode(p64, l, buf, &n) == SG_OK)
            t = sim_stamp_time(buf, n, b->o->prefix);
        if (t >= b->cfg->start_real_us) {
            sim_count(b->cfg->st, SIM_C_TELE_READ, 1);
            sim_hist_record(&b->cfg->st->h[SIM_H_TELEMETRY], (uint64_t)(now > t ? now - t : 0));
        } else {
            sim_count(b->cfg->st, SIM_C_TELE_FOREIGN, 1);
        }
    }
    free(buf);
    json_t *next = json_object_get(ans, "next");
    if (json_is_integer(next) && json_integer_value(next) > b->after[p])
        b->after[p] = json_integer_value(next);
}

static void command_start(backend_t *b)
{
    const sim_opts_t *o = b->o;
    xfer_t *x = calloc(1, sizeof *x);
    char id[192];
    uint64_t target = o->slice_first + sim_rand(&b->rng) % o->slice_n;
    if (!x || sim_device_name(id, sizeof id, o->prefix, target) != SG_OK) {
        free(x);
        return;
    }
    uint8_t *payload = malloc((size_t)o->command_size + 1);
    if (!payload) {
        free(x);
        return;
    }
    sim_stamp_payload(payload, (size_t)o->command_size, o->prefix, sim_real_us(), target, (uint64_t)b->commands_sent);
    json_t *body = json_pack("{s:s%,s:i}", "payload", (const char *)payload, (size_t)o->command_size, "ttlSeconds",
                             o->command_ttl);
    free(payload);
    x->body = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    x->c = curl_easy_init();
    if (!x->body || !x->c) {
        free(x->body);
        if (x->c)
            curl_easy_cleanup(x->c);
        free(x);
        return;
    }
    x->kind = 1;
    sg_wbuf_init(&x->sink.body, 1u << 20);
    /* ids of this simulator need no URL escaping: [A-Za-z0-9-] */
    snprintf(x->url, sizeof x->url, "%s/v1/devices/%s/messages", o->admin_url, id);
    curl_easy_setopt(x->c, CURLOPT_URL, x->url);
    curl_easy_setopt(x->c, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(x->c, CURLOPT_HTTPHEADER, b->hdr_post);
    curl_easy_setopt(x->c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(x->c, CURLOPT_WRITEDATA, &x->sink);
    curl_easy_setopt(x->c, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->c, CURLOPT_TIMEOUT, 30L);
    curl_multi_add_handle(b->m, x->c);
    b->commands_in_flight++;
    sim_count(b->cfg->st, SIM_C_CMD_SENT, 1);
}

static void on_done(backend_t *b, CURLMsg *msg)
{
    xfer_t *x = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    long status = 0;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(b->m, msg->easy_handle);
    sim_tstats_t *st = b->cfg->st;
    if (x->kind == 1) {
        if (msg->data.result == CURLE_OK && status == 201)
            sim_count(st, SIM_C_CMD_ACCEPTED, 1);
        else if (msg->data.result == CURLE_OK && status == 429)
            sim_count(st, SIM_C_CMD_REJECTED, 1);
        else
            sim_count(st, SIM_C_CMD_FAILED, 1);
        curl_easy_cleanup(x->c);
        sg_wbuf_fini(&x->sink.body);
        free(x->body);
        free(x);
        b->commands_in_flight--;
        return;
    }
    json_t *ans = NULL;
    if (msg->data.result == CURLE_OK && status == 200)
        ans = json_loadb((const char *)x->sink.body.data, x->sink.body.len, 0, NULL);
    if (ans) {
        on_records(b, x->partition, ans);
        json_decref(ans);
        if (atomic_load(&b->cfg->ctl->phase) != SIM_PHASE_STOP)
            poll_start(b, x->partition);
        return;
    }
    /* A read that failed is tried again after a pause, as a back-end would: a gateway that
     * refuses every read (a bad token, a query it does not take, a shard that is down) is not
     * asked again at once, over and over. The first failure says why. */
    sim_count(st, SIM_C_HTTP_ERRORS, 1);
    if (!b->read_failed_said) {
        b->read_failed_said = true;
        fprintf(stderr, "sacgate-sim: back-end: GET %s: %s %ld: %.*s (retried every %d ms)\n", x->url,
                msg->data.result == CURLE_OK ? "HTTP" : curl_easy_strerror(msg->data.result), status,
                (int)(x->sink.body.len < 300 ? x->sink.body.len : 300), (const char *)x->sink.body.data,
                READ_RETRY_MS);
    }
    x->retry_at_us = sim_mono_us() + READ_RETRY_MS * 1000;
}

/* Start again the long-polls whose pause after a failure is over. */
static void retry_reads(backend_t *b)
{
    int64_t now = sim_mono_us();
    for (int p = 0; b->polls && p < b->partitions; p++)
        if (b->polls[p].retry_at_us && now >= b->polls[p].retry_at_us) {
            b->polls[p].retry_at_us = 0;
            poll_start(b, p);
        }
}

/* Run the transfers for a moment (at most 10 ms of waiting) and handle those that ended. */
static void pump(backend_t *b)
{
    int running = 0;
    curl_multi_perform(b->m, &running);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(b->m, &left)))
        if (msg->msg == CURLMSG_DONE)
            on_done(b, msg);
    curl_multi_poll(b->m, NULL, 0, 10, NULL);
}

/* Partitions and where each log ends now (GET /v1/cluster, admin role); the back-end reads what
 * is written from here on. */
static void discover(backend_t *b)
{
    const sim_opts_t *o = b->o;
    b->partitions = o->partitions > 0 ? o->partitions : 0;
    for (int p = 0; p < MAX_PARTITIONS; p++)
        b->after[p] = -1;
    CURL *c = curl_easy_init();
    if (!c)
        return;
    char url[512];
    snprintf(url, sizeof url, "%s/v1/cluster", o->admin_url);
    sink_t sink;
    sg_wbuf_init(&sink.body, 16u << 20);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, b->hdr_get);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    long status = 0;
    json_t *ans = NULL;
    if (curl_easy_perform(c) == CURLE_OK && curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
        status == 200)
        ans = json_loadb((const char *)sink.body.data, sink.body.len, 0, NULL);
    json_t *shards = json_object_get(ans, "shards");
    size_t i;
    json_t *s;
    json_array_foreach(shards, i, s) {
        json_t *p = json_object_get(s, "partition"), *last = json_object_get(s, "telemetryLast");
        if (json_is_integer(p) && json_integer_value(p) >= 0 && json_integer_value(p) < MAX_PARTITIONS &&
            json_is_integer(last))
            b->after[json_integer_value(p)] = json_integer_value(last);
    }
    if (b->partitions == 0)
        b->partitions = (int)json_array_size(shards);
    if (b->partitions == 0) {
        fprintf(stderr, "sacgate-sim: back-end: GET /v1/cluster gave no partitions (HTTP %ld); reading partition 0 "
                        "(use --partitions N with a token without the admin role)\n", status);
        b->partitions = 1;
    }
    if (b->partitions > MAX_PARTITIONS)
        b->partitions = MAX_PARTITIONS;
    json_decref(ans);
    sg_wbuf_fini(&sink.body);
    curl_easy_cleanup(c);
}

void *sim_http_backend_main(void *arg)
{
    const sim_backend_cfg_t *cfg = arg;
    backend_t b = {.cfg = cfg, .o = cfg->o, .t0_us = sim_mono_us()};
    b.rng = (uint64_t)sim_mono_us() | 1;
    b.m = curl_multi_init();
    b.hdr_get = auth_headers(cfg->o, NULL);
    b.hdr_post = auth_headers(cfg->o, "application/json");
    if (!b.m)
        return NULL;
    discover(&b);
    atomic_store(&cfg->ctl->backend_ready, 1);   /* the reads start where the logs end now */
    b.polls = calloc((size_t)b.partitions, sizeof *b.polls);
    for (int p = 0; b.polls && p < b.partitions; p++) {
        xfer_t *x = &b.polls[p];
        x->c = curl_easy_init();
        x->partition = p;
        sg_wbuf_init(&x->sink.body, 64u << 20);
        curl_easy_setopt(x->c, CURLOPT_HTTPHEADER, b.hdr_get);
        curl_easy_setopt(x->c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(x->c, CURLOPT_WRITEDATA, &x->sink);
        curl_easy_setopt(x->c, CURLOPT_PRIVATE, x);
        curl_easy_setopt(x->c, CURLOPT_TIMEOUT, (long)(b.o->backend_wait_ms / 1000 + 30));
        poll_start(&b, p);
    }
    while (atomic_load(&cfg->ctl->phase) != SIM_PHASE_STOP) {
        /* while draining, reads go on and no new command goes out */
        bool running = atomic_load(&cfg->ctl->phase) == SIM_PHASE_RUN;
        if (running && !atomic_load(&cfg->ctl->all_online))
            b.t0_us = sim_mono_us();   /* commands begin once every device can take them */
        else if (running && cfg->o->command_rate > 0) {
            double want = cfg->o->command_rate * (double)(sim_mono_us() - b.t0_us) / 1e6;
            while (b.commands_sent + 1 <= want && b.commands_in_flight < MAX_COMMANDS_IN_FLIGHT) {
                command_start(&b);
                b.commands_sent += 1;
            }
            if (b.commands_sent + 1 <= want)
                b.commands_sent = want;   /* the gateway is behind: do not build a backlog here */
        }
        retry_reads(&b);
        pump(&b);
    }
    /* stop: abandon the long-polls, let commands under way finish briefly */
    for (int p = 0; b.polls && p < b.partitions; p++) {
        curl_multi_remove_handle(b.m, b.polls[p].c);
        curl_easy_cleanup(b.polls[p].c);
        sg_wbuf_fini(&b.polls[p].sink.body);
    }
    int64_t until = sim_mono_us() + 5000000;
    while (b.commands_in_flight > 0 && sim_mono_us() < until) {
        pump(&b);
    }
    free(b.polls);
    curl_multi_cleanup(b.m);
    curl_slist_free_all(b.hdr_get);
    curl_slist_free_all(b.hdr_post);
    return NULL;
}
