/* adm_import.c — streamed bulk import of registry entries; see adm_import.h.
 * The HTTP thread splits lines, checks them and fills one open batch per shard; a full batch
 * goes out as one SG_ADM_DEVICE_IMPORT frame in a free slot of the window. The bridge thread
 * only marks a slot answered (and resumes the connection if it waits); the HTTP thread merges
 * the answers, so outcome counters and lists have one writer. */
#include "adm_import.h"
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "adm_ndjson.h"
#include "sg_log.h"
#include "sg_sas.h"
#include "sg_wire.h"

#define WINDOW 8                        /* frames in flight per import */
#define BATCH_ENTRIES 1000              /* store/st_import.c refuses frames of more */
#define BATCH_BYTES (1u << 20)          /* a batch is sent once its JSON reaches this */
#define MAX_ERRORS 1000                 /* errors listed in the answer; `failed` counts all */
#define KEYS_MAX_BYTES (1u << 30)       /* generated keys kept for the answer */

enum { SLOT_FREE, SLOT_SENT, SLOT_ANSWERED };

/* One generated key object in adm_import.keys, by its line. */
typedef struct {
    uint64_t line;
    size_t off, len;
} keyref_t;

/* One listed failure: its line (the answer lists them in line order) and its JSON object. */
typedef struct {
    uint64_t line;
    char *json;
} failure_t;

/* The entries bound for one shard, and what is needed to report their lines if it fails. */
typedef struct {
    sg_wbuf_t text;        /* the frame's body: {"line":n,"entry":{...the line as sent...}}\n each */
    uint32_t n;
    uint64_t lines[BATCH_ENTRIES];
    sg_wbuf_t ids;         /* n NUL-terminated device ids */
} batch_t;

typedef struct {
    adm_import_t *im;
    _Atomic int state;     /* FREE -> SENT (HTTP thread) -> ANSWERED (bridge) -> FREE (HTTP) */
    int shard;
    adm_part_t part;
    batch_t *b;
} slot_t;

struct adm_import {
    adm_bridge_t *bridge;
    struct MHD_Connection *conn;
    size_t max_line;
    int64_t timeout_ms;
    adm_ndjson_t split;
    batch_t **open;        /* per shard, created on first use */
    int nshards;
    int ready;             /* shard whose full batch waits for a free slot, -1 = none */
    bool ended;            /* the last line of the body was taken */
    slot_t slots[WINDOW];
    pthread_mutex_t lock;  /* suspended and abandoned, against the bridge's done callbacks */
    bool suspended;
    bool abandoned;
    uint64_t lines, created, updated, failed;
    size_t n_errors;
    failure_t errors[MAX_ERRORS];
    sg_wbuf_t keys;        /* the answer's generatedKeys objects, one after the other */
    keyref_t *krefs;       /* where each is in keys: shards answer in any order, the answer is by line */
    size_t n_krefs, cap_krefs;
    bool keys_dropped;
};

/* ---------- outcomes ---------- */

/* A generated key's object into the answer, found again by its line when the answer is made. One
 * that does not fit (out of memory) is dropped as those past KEYS_MAX_BYTES are: compose logs it. */
static void key_add(adm_import_t *im, json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    uint64_t line = (uint64_t)json_integer_value(json_object_get(obj, "line"));
    json_decref(obj);
    size_t off = im->keys.len, len = text ? strlen(text) : 0;
    if (im->n_krefs == im->cap_krefs) {
        size_t cap = im->cap_krefs ? im->cap_krefs * 2 : 256;
        keyref_t *k = realloc(im->krefs, cap * sizeof *k);
        if (k)
            im->krefs = k, im->cap_krefs = cap;
    }
    if (!text || im->n_krefs == im->cap_krefs || sg_wbuf_bytes(&im->keys, text, len) != SG_OK)
        im->keys_dropped = true;
    else
        im->krefs[im->n_krefs++] = (keyref_t){line, off, len};
    free(text);
}

/* The answer lists the failures of the MAX_ERRORS lowest lines, whatever order they come in (a
 * line's own failure at once, a shard's when its batch returns). Once the list is full it is a
 * max-heap on the line, so a failure of a lower line replaces the highest in O(log n); compose
 * sorts it. */
static void errors_sift_down(failure_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, top = i;
        if (l < n && h[l].line > h[top].line)
            top = l;
        if (r < n && h[r].line > h[top].line)
            top = r;
        if (top == i)
            return;
        failure_t t = h[i];
        h[i] = h[top];
        h[top] = t;
        i = top;
    }
}

/* Would a failure of this line be listed? (`failed` counts it either way.) */
static bool error_wanted(const adm_import_t *im, uint64_t line)
{
    return im->n_errors < MAX_ERRORS || line < im->errors[0].line;
}

/* Keep a failure for the answer (`failed` is counted by the caller). */
static void error_add(adm_import_t *im, uint64_t line, json_t *obj)
{
    if (!error_wanted(im, line)) {
        json_decref(obj);
        return;
    }
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!text)
        return;
    if (im->n_errors < MAX_ERRORS) {
        im->errors[im->n_errors++] = (failure_t){line, text};
        if (im->n_errors == MAX_ERRORS)   /* full: from now on a heap */
            for (size_t i = MAX_ERRORS / 2; i-- > 0;)
                errors_sift_down(im->errors, MAX_ERRORS, i);
        return;
    }
    free(im->errors[0].json);
    im->errors[0] = (failure_t){line, text};
    errors_sift_down(im->errors, MAX_ERRORS, 0);
}

static void fail_line(adm_import_t *im, uint64_t line, const char *id, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void fail_line(adm_import_t *im, uint64_t line, const char *id, const char *name, const char *fmt, ...)
{
    im->failed++;
    if (!error_wanted(im, line))
        return;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    error_add(im, line, json_pack("{s:I,s:s?,s:s,s:s}", "line", (json_int_t)line, "deviceId", id, "error", name,
                                  "message", msg));
}

/* Every line of a batch the shard did not process (timeout, refusal, no link). */
static void fail_batch(adm_import_t *im, const batch_t *b, int shard, const adm_part_t *p)
{
    json_t *e = p && p->len ? json_loadb(p->json, p->len, 0, NULL) : NULL;
    const char *ename = json_string_value(json_object_get(e, "error"));
    const char *emsg = json_string_value(json_object_get(e, "message"));
    bool timeout = p && p->status == 504;
    const char *id = (const char *)b->ids.data;
    for (uint32_t i = 0; i < b->n; i++, id += strlen(id) + 1) {
        if (timeout)
            fail_line(im, b->lines[i], id, "Timeout", "shard %d did not answer in time; this entry may or may not have "
                      "been applied: check it, or import it again", shard);
        else
            fail_line(im, b->lines[i], id, "Unavailable", "shard %d could not take the batch (%s: %s); this entry may "
                      "or may not have been applied: check it, or import it again", shard, ename ? ename : "Error",
                      emsg ? emsg : "no answer");
    }
    json_decref(e);
}

/* A shard's answer to one frame: {"created","updated","errors":[...],"generatedKeys":[...]}. */
static void merge(adm_import_t *im, slot_t *s)
{
    adm_part_t *p = &s->part;
    json_t *a = p->status == 200 ? json_loadb(p->json, p->len, 0, NULL) : NULL;
    json_int_t created = json_integer_value(json_object_get(a, "created"));
    json_int_t updated = json_integer_value(json_object_get(a, "updated"));
    if (!a || created < 0 || updated < 0 || created + updated > (json_int_t)s->b->n) {
        if (a)
            SG_WARN("admin", "import.bad_answer", "shard=%d status=%d", s->shard, p->status);
        fail_batch(im, s->b, s->shard, p);
        json_decref(a);
        return;
    }
    im->created += (uint64_t)created;
    im->updated += (uint64_t)updated;
    /* Whatever the shard did not count as written failed, listed or not. */
    im->failed += s->b->n - (uint64_t)(created + updated);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(a, "errors"), i, v)
        error_add(im, (uint64_t)json_integer_value(json_object_get(v, "line")), json_incref(v));
    json_array_foreach(json_object_get(a, "generatedKeys"), i, v) {
        if (im->keys.len >= KEYS_MAX_BYTES - 4096) {
            im->keys_dropped = true;
            break;
        }
        key_add(im, json_incref(v));
    }
    json_decref(a);
}

/* ---------- the window ---------- */

static void free_all(adm_import_t *im)
{
    for (int i = 0; i < WINDOW; i++) {
        free(im->slots[i].part.json);
        if (im->slots[i].b) {
            sg_wbuf_fini(&im->slots[i].b->text);
            sg_wbuf_fini(&im->slots[i].b->ids);
            free(im->slots[i].b);
        }
    }
    for (int i = 0; i < im->nshards; i++)
        if (im->open[i]) {
            sg_wbuf_fini(&im->open[i]->text);
            sg_wbuf_fini(&im->open[i]->ids);
            free(im->open[i]);
        }
    free(im->open);
    adm_ndjson_fini(&im->split);
    for (size_t i = 0; i < im->n_errors; i++)
        free(im->errors[i].json);
    sg_wbuf_fini(&im->keys);
    free(im->krefs);
    pthread_mutex_destroy(&im->lock);
    free(im);
}

static int in_flight(adm_import_t *im)
{
    int n = 0;
    for (int i = 0; i < WINDOW; i++)
        n += atomic_load(&im->slots[i].state) != SLOT_FREE;
    return n;
}

/* Bridge thread: a frame is answered (or timed out). */
static void slot_done(void *arg)
{
    slot_t *s = arg;
    adm_import_t *im = s->im;
    pthread_mutex_lock(&im->lock);
    atomic_store(&s->state, SLOT_ANSWERED);
    bool gone = im->abandoned;
    bool last = false;
    if (gone) {
        last = true;
        for (int i = 0; i < WINDOW; i++)
            if (atomic_load(&im->slots[i].state) == SLOT_SENT)
                last = false;
    } else if (im->suspended) {
        im->suspended = false;
        MHD_resume_connection(im->conn);
    }
    pthread_mutex_unlock(&im->lock);
    if (gone && last)
        free_all(im);   /* the request ended while frames were out; this was the last one */
}

/* HTTP thread: fold answered frames into the outcome and free their slots. */
static void harvest(adm_import_t *im)
{
    for (int i = 0; i < WINDOW; i++) {
        slot_t *s = &im->slots[i];
        if (atomic_load(&s->state) != SLOT_ANSWERED)
            continue;
        merge(im, s);
        free(s->part.json);
        memset(&s->part, 0, sizeof s->part);
        sg_wbuf_reset(&s->b->text);
        sg_wbuf_reset(&s->b->ids);
        s->b->n = 0;
        atomic_store(&s->state, SLOT_FREE);
    }
}

/* Suspend the connection until a frame is answered, unless one already was. True when
 * suspended. Only called with frames in flight, so an answer (or the deadline) resumes it. */
static bool wait_for_answer(adm_import_t *im)
{
    pthread_mutex_lock(&im->lock);
    bool answered = false;
    for (int i = 0; i < WINDOW; i++)
        answered = answered || atomic_load(&im->slots[i].state) == SLOT_ANSWERED;
    if (!answered) {
        im->suspended = true;
        MHD_suspend_connection(im->conn);
    }
    pthread_mutex_unlock(&im->lock);
    return !answered;
}

static bool is_suspended(adm_import_t *im)
{
    pthread_mutex_lock(&im->lock);
    bool s = im->suspended;
    pthread_mutex_unlock(&im->lock);
    return s;
}

static batch_t *batch_new(void)
{
    batch_t *b = calloc(1, sizeof *b);
    if (b) {
        /* one line of up to 4 MiB can follow a batch just under BATCH_BYTES: below a frame */
        sg_wbuf_init(&b->text, SG_WIRE_MAX_FRAME - 4096);
        sg_wbuf_init(&b->ids, BATCH_ENTRIES * (SG_DEVICE_ID_MAX + 1));
    }
    return b;
}

/* Send shard's open batch in a free slot. False when the window is full. */
static bool send_batch(adm_import_t *im, int shard)
{
    batch_t *b = im->open[shard];
    if (!b || b->n == 0) {
        im->ready = -1;
        return true;
    }
    slot_t *s = NULL;
    for (int i = 0; i < WINDOW && !s; i++)
        if (atomic_load(&im->slots[i].state) == SLOT_FREE)
            s = &im->slots[i];
    if (!s)
        return false;
    im->ready = -1;
    /* The slot takes the batch; the shard gets the slot's emptied one (buffers are reused). */
    if (!s->b && !(s->b = batch_new())) {
        fail_batch(im, b, shard, NULL);
        b->n = 0;
        sg_wbuf_reset(&b->text);
        sg_wbuf_reset(&b->ids);
        return true;
    }
    im->open[shard] = s->b;
    s->b = b;
    s->shard = shard;
    zframe_t *f = adm_bridge_admin_frame(NULL, (uint32_t)shard, SG_ADM_DEVICE_IMPORT, (const char *)b->text.data,
                                         b->text.len);
    atomic_store(&s->state, SLOT_SENT);
    if (!f || adm_bridge_submit_retrying(im->bridge, &f, &s->part, 1, im->timeout_ms, slot_done, s) != SG_OK) {
        const char *why = f ? "{\"error\":\"Unavailable\",\"message\":\"the cluster link is down\"}"
                            : "{\"error\":\"Internal\",\"message\":\"the batch could not be encoded\"}";
        zframe_destroy(&f);
        s->part.status = 503;
        s->part.json = strdup(why);
        s->part.len = s->part.json ? strlen(why) : 0;
        atomic_store(&s->state, SLOT_ANSWERED);   /* merged as failed by the next harvest */
    }
    return true;
}

/* ---------- lines ---------- */

static bool valid_mode(const json_t *m)
{
    const char *s = json_string_value(m);
    return s && (strcmp(s, "createOrUpdate") == 0 || strcmp(s, "create") == 0 || strcmp(s, "update") == 0);
}

static sg_rc append(adm_import_t *im, int shard, uint64_t line, const char *id, size_t id_len, const char *text,
                    size_t len)
{
    if (shard >= im->nshards) {
        batch_t **grown = realloc(im->open, (size_t)(shard + 1) * sizeof *grown);
        SG_ENSURE(grown != NULL, SG_E_NOMEM);
        for (int i = im->nshards; i <= shard; i++)
            grown[i] = NULL;
        im->open = grown;
        im->nshards = shard + 1;
    }
    if (!im->open[shard])
        SG_ENSURE((im->open[shard] = batch_new()) != NULL, SG_E_NOMEM);
    batch_t *b = im->open[shard];
    char head[48];
    int hl = snprintf(head, sizeof head, "{\"line\":%llu,\"entry\":", (unsigned long long)line);
    size_t mark = b->text.len;
    /* The line is valid JSON without a raw newline (it was parsed, and it was a line): it goes
     * in as it came, not re-serialised, and the shard parses entry by entry. */
    sg_rc rc = sg_wbuf_bytes(&b->text, head, (size_t)hl);
    if (rc == SG_OK)
        rc = sg_wbuf_bytes(&b->text, text, len);
    if (rc == SG_OK)
        rc = sg_wbuf_bytes(&b->text, "}\n", 2);
    if (rc == SG_OK)
        rc = sg_wbuf_bytes(&b->ids, id, id_len);
    if (rc == SG_OK)
        rc = sg_wbuf_u8(&b->ids, 0);
    if (rc != SG_OK) {
        b->text.len = mark;
        return rc;
    }
    b->lines[b->n++] = line;
    if (b->n >= BATCH_ENTRIES || b->text.len >= BATCH_BYTES)
        im->ready = shard;
    return SG_OK;
}

static void take_line(adm_import_t *im, const adm_line_t *ln)
{
    im->lines++;
    if (ln->too_long) {
        fail_line(im, ln->number, NULL, "LineTooLong", "the line is longer than %zu bytes (admin.max_body); it was "
                  "skipped", im->max_line);
        return;
    }
    json_error_t jerr;
    json_t *e = json_loadb(ln->data, ln->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!e) {
        fail_line(im, ln->number, NULL, "InvalidJson", "the line is not valid JSON: %s (column %d)", jerr.text,
                  jerr.column);
        return;
    }
    json_t *jid = json_object_get(e, "deviceId");
    const char *id = json_string_value(jid);
    size_t id_len = id ? json_string_length(jid) : 0;
    int shard = -1;
    if (!json_is_object(e)) {
        fail_line(im, ln->number, NULL, "InvalidJson", "each line must be a JSON object (a device entry with its "
                  "deviceId)");
    } else if (!id) {
        fail_line(im, ln->number, NULL, "InvalidDeviceId", "deviceId is required: a string of 1-128 characters of "
                  "A-Z a-z 0-9 - . %% _ * ? ! ( ) , : = @ $ '");
    } else if (!sg_device_id_valid(id, id_len)) {
        fail_line(im, ln->number, id_len <= 2 * SG_DEVICE_ID_MAX ? id : NULL, "InvalidDeviceId",
                  "device ids are 1-128 characters of A-Z a-z 0-9 - . %% _ * ? ! ( ) , : = @ $ '");
    } else if (json_object_get(e, "importMode") && !valid_mode(json_object_get(e, "importMode"))) {
        fail_line(im, ln->number, id, "InvalidImportMode", "importMode must be \"createOrUpdate\" (the default), "
                  "\"create\" or \"update\"");
    } else if ((shard = adm_bridge_shard_of(im->bridge, id, id_len)) < 0) {
        fail_line(im, ln->number, id, "Unavailable", "the cluster's ring is not known; the entry was not applied");
    } else if (append(im, shard, ln->number, id, id_len, ln->data, ln->len) != SG_OK) {
        fail_line(im, ln->number, id, "Internal", "out of memory; the entry was not applied");
    }
    json_decref(e);
}

/* ---------- API ---------- */

adm_import_t *adm_import_new(adm_bridge_t *bridge, struct MHD_Connection *conn, size_t max_line, int64_t timeout_ms)
{
    adm_import_t *im = calloc(1, sizeof *im);
    if (!im)
        return NULL;
    im->bridge = bridge;
    im->conn = conn;
    /* A line travels inside one frame, next to up to BATCH_BYTES of others. */
    im->max_line = max_line < SG_WIRE_MAX_FRAME / 2 ? max_line : SG_WIRE_MAX_FRAME / 2;
    im->timeout_ms = timeout_ms;
    im->ready = -1;
    adm_ndjson_init(&im->split, im->max_line);
    sg_wbuf_init(&im->keys, KEYS_MAX_BYTES);
    pthread_mutex_init(&im->lock, NULL);
    for (int i = 0; i < WINDOW; i++)
        im->slots[i].im = im;
    return im;
}

void adm_import_destroy(adm_import_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    adm_import_t *im = *self_p;
    *self_p = NULL;
    /* Answered slots are done with; frames still out are freed by their answers. */
    pthread_mutex_lock(&im->lock);
    im->abandoned = true;
    bool out = false;
    for (int i = 0; i < WINDOW; i++)
        out = out || atomic_load(&im->slots[i].state) == SLOT_SENT;
    pthread_mutex_unlock(&im->lock);
    if (!out)
        free_all(im);
}

/* libmicrohttpd (0.9.75, connection.c process_request_body) keeps the bytes an access handler
 * leaves in *upload_data_size in the connection's read buffer and hands them again, from where
 * the handler stopped, once the connection is resumed; nothing more is read from the socket
 * meanwhile, so the unread rest of a large body waits in the kernel. The same round may still
 * call the handler with the next piece of a chunked upload after it suspended (its body loop
 * stops only on unconsumed bytes): such a call takes nothing. */
size_t adm_import_feed(adm_import_t *im, const char *data, size_t len)
{
    size_t done = 0;
    if (is_suspended(im))
        return 0;
    for (;;) {
        harvest(im);
        if (im->ready >= 0 && !send_batch(im, im->ready)) {
            if (wait_for_answer(im))
                return done;
            continue;
        }
        if (done == len)
            return done;
        adm_line_t line;
        size_t used = 0;
        sg_rc rc = adm_ndjson_next(&im->split, data + done, len - done, &used, &line);
        done += used;
        if (rc == SG_OK)
            take_line(im, &line);
    }
}

static int by_line(const void *a, const void *b)
{
    uint64_t x = ((const failure_t *)a)->line, y = ((const failure_t *)b)->line;
    return x < y ? -1 : x > y;
}

static int key_by_line(const void *a, const void *b)
{
    uint64_t x = ((const keyref_t *)a)->line, y = ((const keyref_t *)b)->line;
    return x < y ? -1 : x > y;
}

static char *compose(adm_import_t *im)
{
    if (im->keys_dropped)
        SG_ERROR("admin", "import.keys_dropped", "reason=\"generated keys beyond %u bytes (or memory) could not be "
                 "returned; those devices need new keys (PUT with auth)\"", KEYS_MAX_BYTES);
    qsort(im->errors, im->n_errors, sizeof im->errors[0], by_line);
    if (im->n_krefs)
        qsort(im->krefs, im->n_krefs, sizeof im->krefs[0], key_by_line);
    sg_wbuf_t out;
    sg_wbuf_init(&out, SIZE_MAX / 2);
    char head[256];
    int hl = snprintf(head, sizeof head, "{\"lines\":%llu,\"created\":%llu,\"updated\":%llu,\"failed\":%llu,\"errors\":[",
                      (unsigned long long)im->lines, (unsigned long long)im->created, (unsigned long long)im->updated,
                      (unsigned long long)im->failed);
    sg_rc rc = sg_wbuf_bytes(&out, head, (size_t)hl);
    for (size_t i = 0; rc == SG_OK && i < im->n_errors; i++) {
        if (i)
            rc = sg_wbuf_u8(&out, ',');
        if (rc == SG_OK)
            rc = sg_wbuf_bytes(&out, im->errors[i].json, strlen(im->errors[i].json));
    }
    const char *mid = im->failed > im->n_errors ? "],\"errorsTruncated\":true,\"generatedKeys\":["
                                                : "],\"errorsTruncated\":false,\"generatedKeys\":[";
    if (rc == SG_OK)
        rc = sg_wbuf_bytes(&out, mid, strlen(mid));
    for (size_t i = 0; rc == SG_OK && i < im->n_krefs; i++) {
        if (i)
            rc = sg_wbuf_u8(&out, ',');
        if (rc == SG_OK)
            rc = sg_wbuf_bytes(&out, im->keys.data + im->krefs[i].off, im->krefs[i].len);
    }
    if (rc == SG_OK)
        rc = sg_wbuf_bytes(&out, "]}", 3);   /* with the NUL: the answer is a C string */
    size_t len;
    char *text = rc == SG_OK ? (char *)sg_wbuf_detach(&out, &len) : NULL;
    sg_wbuf_fini(&out);
    return text;
}

bool adm_import_finish(adm_import_t *im, char **answer)
{
    if (is_suspended(im))
        return false;
    for (;;) {
        harvest(im);
        if (im->ready >= 0 && !send_batch(im, im->ready)) {
            if (wait_for_answer(im))
                return false;
            continue;
        }
        if (!im->ended) {
            im->ended = true;
            adm_line_t line;
            if (adm_ndjson_end(&im->split, &line) == SG_OK)
                take_line(im, &line);
            continue;
        }
        for (int i = 0; i < im->nshards && im->ready < 0; i++)
            if (im->open[i] && im->open[i]->n > 0)
                im->ready = i;
        if (im->ready >= 0)
            continue;
        if (in_flight(im) == 0) {
            SG_INFO("admin", "import.done", "lines=%llu created=%llu updated=%llu failed=%llu",
                    (unsigned long long)im->lines, (unsigned long long)im->created, (unsigned long long)im->updated,
                    (unsigned long long)im->failed);
            *answer = compose(im);
            return true;
        }
        if (wait_for_answer(im))
            return false;
    }
}
