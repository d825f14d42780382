/* st_wnotify.c — notifications (POST /v1/notifications): one message fanned out into the queue of
 * every device of this shard whose tags match, in slices, so a fan-out to a whole fleet never
 * holds up the shard's other work.
 *
 * The request's first commit records the notification (what it sends, its tags, its progress:
 * st_keys.h "n{nid}" and "N{nid}"). Every writer cycle after that looks at store.notify_slice
 * registry entries from the notification's cursor (the last device id looked at) and enqueues a
 * copy for each enabled device whose tags match; the copies, the counts and the new cursor go in
 * the same batch, so a shard killed mid-fan-out resumes at its start from the last durable cursor
 * and no device gets a copy twice or none. The shard answers its part of the request once its
 * fan-out is done (not after a restart: the caller's request has timed out by then, and
 * GET /v1/notifications/{id} tells the progress). Devices with a full queue count as "rejected"
 * and get a `rejected` feedback record as their ack mode asks. Fan-outs run one after the other,
 * oldest first. */
#include <czmq.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "sg_log.h"
#include "st_keys.h"
#include "st_writer_int.h"

typedef struct notif notif_t;
struct notif {
    char id[ST_NOTIFY_ID_MAX + 1];
    json_t *tags;                       /* {k: v}: a device must have every one */
    sg_wbuf_t rec;                      /* the queue record every target gets */
    st_msg_t m;                         /* its fields (message_id = id) */
    char cursor[SG_DEVICE_ID_MAX + 1];  /* the last device id looked at; "" = none yet */
    size_t cursor_len;
    uint64_t targets, rejected;
    int64_t created_ms;
    op_t op;                            /* the request to answer when done (frames NULL: none) */
    notif_t *next;
};

struct st_wnotify {
    notif_t *head, *tail;
};

static void notif_free(notif_t *n)
{
    json_decref(n->tags);
    sg_wbuf_fini(&n->rec);
    stw_op_free(&n->op);
    free(n);
}

static void notif_push(writer_t *w, notif_t *n)
{
    if (!w->notify && !(w->notify = calloc(1, sizeof *w->notify)))
        stw_fatal_io("oom");
    if (w->notify->tail)
        w->notify->tail->next = n;
    else
        w->notify->head = n;
    w->notify->tail = n;
}

bool stw_notify_busy(const writer_t *w) { return w->notify && w->notify->head; }

void stw_notify_free(writer_t *w)
{
    if (!w->notify)
        return;
    for (notif_t *n = w->notify->head, *next; n; n = next) {
        next = n->next;
        notif_free(n);
    }
    free(w->notify);
    w->notify = NULL;
}

/* The progress record N{nid} into the open batch. */
static void save_progress(writer_t *w, const notif_t *n, bool done)
{
    json_t *p = json_pack("{s:s,s:I,s:I,s:s%,s:b,s:I,s:I}", "notificationId", n->id, "targets", (json_int_t)n->targets,
                          "rejected", (json_int_t)n->rejected, "cursor", n->cursor, n->cursor_len, "done", done,
                          "createdAt", (json_int_t)n->created_ms, "expiresAt", (json_int_t)n->m.expires_ms);
    char *text = p ? json_dumps(p, JSON_COMPACT) : NULL;
    json_decref(p);
    if (!text)
        stw_fatal_io("notify-encode");
    char key[1 + ST_NOTIFY_ID_MAX];
    size_t klen = st_key_notify(key, ST_NOTIFY_PREFIX[0], n->id, strlen(n->id));
    rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, klen, text, strlen(text));
    free(text);
}

/* A notification's tags: 1 to ST_TAGS_MAX, each as a device's tag may be. */
static bool tags_valid(const json_t *tags, char *msg, size_t len)
{
    if (!json_is_object(tags) || json_object_size(tags) == 0) {
        snprintf(msg, len, "tags must be an object of at least one tag, e.g. {\"site\": \"north\"}: a notification "
                 "goes to the devices that have every one of them");
        return false;
    }
    return st_reg_tags_check(tags, msg, len) == SG_OK;
}

void stw_notify_start(writer_t *w, op_t *op, const char *json, size_t len, int64_t now)
{
    json_error_t jerr;
    json_t *q = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *nid = json_string_value(json_object_get(q, "notificationId"));
    json_t *body = json_object_get(q, "body");
    char msg[300];
    if (!nid || strlen(nid) == 0 || strlen(nid) > ST_NOTIFY_ID_MAX || !sg_device_id_valid(nid, strlen(nid)) ||
        !json_is_object(body)) {
        st_writer_answer_admin(w, op, 400, st_error_json("BadRequest", "malformed notification request"));
        json_decref(q);
        return;
    }
    json_t *tags = json_object_get(body, "tags");
    if (!tags_valid(tags, msg, sizeof msg)) {
        st_writer_answer_admin(w, op, 400, st_error_json("InvalidNotification", "%s", msg));
        json_decref(q);
        return;
    }
    notif_t *n = calloc(1, sizeof *n);
    if (!n)
        stw_fatal_io("oom");
    snprintf(n->id, sizeof n->id, "%s", nid);
    n->tags = json_incref(tags);
    n->created_ms = now;
    sg_wbuf_init(&n->rec, SG_WIRE_MAX_FRAME);
    /* The message members are checked as for one device's message (the same errors). */
    json_t *mbody = json_copy(body);
    json_object_del(mbody, "tags");
    bool ok = stw_msg_build(w, op, mbody, n->id, "$.nid", n->id, now, &n->rec, &n->m);
    json_decref(mbody);
    json_decref(q);
    if (!ok) {
        notif_free(n);
        return;
    }
    char *ttext = json_dumps(n->tags, JSON_COMPACT | JSON_SORT_KEYS);
    sg_wbuf_t def;
    sg_wbuf_init(&def, SG_WIRE_MAX_FRAME);
    if (!ttext || sg_wbuf_bytes(&def, ttext, strlen(ttext) + 1) != SG_OK ||
        sg_wbuf_bytes(&def, n->rec.data, n->rec.len) != SG_OK)
        stw_fatal_io("notify-encode");
    free(ttext);
    char key[1 + ST_NOTIFY_ID_MAX];
    size_t klen = st_key_notify(key, ST_NOTIFY_DEF_PREFIX[0], n->id, strlen(n->id));
    rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, klen, (const char *)def.data, def.len);
    sg_wbuf_fini(&def);
    save_progress(w, n, false);
    /* Taken over: answered when the fan-out is done. */
    stw_op_move(&n->op, op);
    SG_INFO("store", "notify.started", "shard=%s notification=%s", w->ctx->name, n->id);
    notif_push(w, n);
}

/* Whether the registry entry (JSON text) is enabled and has every tag of n. */
static bool entry_matches(const notif_t *n, const char *v, size_t vl)
{
    json_t *e = json_loadb(v, vl, 0, NULL);
    json_t *dtags = json_object_get(e, "tags");
    bool ok = e != NULL;
    const char *k;
    json_t *want;
    json_object_foreach(n->tags, k, want) {
        if (!ok)
            break;
        ok = json_equal(json_object_get(dtags, k), want);
    }
    json_decref(e);
    return ok;
}

/* Queue n's message for the device (id, il) whose registry entry matched. */
static void fan_to(writer_t *w, notif_t *n, const char *id, size_t il, int64_t now)
{
    wdev_t *d = stw_dev_get(w, id, il);
    if (!d)
        stw_fatal_io("device-load");
    /* The cache may know newer than the committed entry: it decides. */
    if (!d->exists || !d->reg.enabled)
        return;
    int64_t limit, blimit;
    if (!stw_queue_room(w, d, n->rec.len, &limit, &blimit)) {
        n->rejected++;
        stw_feedback(w, d, &n->m, ST_OUT_REJECTED, now);
        return;
    }
    stw_queue_put(w, d, &n->m, &n->rec);
    n->targets++;
}

static void finish(writer_t *w, notif_t *n)
{
    save_progress(w, n, true);
    char key[1 + ST_NOTIFY_ID_MAX];
    size_t klen = st_key_notify(key, ST_NOTIFY_DEF_PREFIX[0], n->id, strlen(n->id));
    rocksdb_writebatch_delete_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, klen);
    SG_INFO("store", "notify.done", "shard=%s notification=%s targets=%llu rejected=%llu", w->ctx->name, n->id,
            (unsigned long long)n->targets, (unsigned long long)n->rejected);
    if (n->op.frame)
        st_writer_answer_admin(w, &n->op, 200, json_pack("{s:s,s:I,s:I}", "notificationId", n->id, "targets",
                                                         (json_int_t)n->targets, "rejected", (json_int_t)n->rejected));
    w->notify->head = n->next;
    if (!w->notify->head)
        w->notify->tail = NULL;
    notif_free(n);
}

void stw_notify_step(writer_t *w, int64_t now)
{
    if (!stw_notify_busy(w))
        return;
    notif_t *n = w->notify->head;
    st_db_t *db = &w->ctx->db;
    char seek[ST_KEY_MAX];
    int examined = 0;
    bool end = true;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_DEV]);
    if (n->cursor_len) {
        memcpy(seek, n->cursor, n->cursor_len);
        seek[n->cursor_len] = 1;   /* past every "{cursor}\0..." key */
        rocksdb_iter_seek(it, seek, n->cursor_len + 1);
    } else {
        rocksdb_iter_seek_to_first(it);
    }
    while (rocksdb_iter_valid(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *z = memchr(k, 0, kl < SG_DEVICE_ID_MAX + 1 ? kl : SG_DEVICE_ID_MAX + 1);
        size_t il = z ? (size_t)(z - k) : 0;
        if (il == 0 || il + 1 >= kl) {   /* not a device key: never written by this shard */
            rocksdb_iter_next(it);
            continue;
        }
        if (examined == w->ctx->notify_slice) {
            end = false;   /* another device: the next slice starts at it */
            break;
        }
        if (k[il + 1] < ST_K_REGISTRY) {   /* its dead letters or counters: on to its entry */
            char id[SG_DEVICE_ID_MAX + 1];
            memcpy(id, k, il);
            rocksdb_iter_seek(it, seek, st_key_dev(seek, id, il, ST_K_REGISTRY));
            continue;
        }
        memcpy(n->cursor, k, il);
        n->cursor_len = il;
        n->cursor[il] = 0;
        examined++;
        if (k[il + 1] == ST_K_REGISTRY && kl == il + 2) {
            const char *v = rocksdb_iter_value(it, &vl);
            if (entry_matches(n, v, vl))
                fan_to(w, n, n->cursor, il, now);
        }
        memcpy(seek, n->cursor, il);
        seek[il] = 1;   /* the next device */
        rocksdb_iter_seek(it, seek, il + 1);
    }
    rocksdb_iter_destroy(it);
    if (end)
        finish(w, n);
    else
        save_progress(w, n, false);
}

/* n{nid} -> a notification to resume (value: tags JSON, NUL, queue record). */
static sg_rc load_one(writer_t *w, const char *k, size_t kl, const char *v, size_t vl)
{
    const char *z = memchr(v, 0, vl);
    if (kl < 2 || kl - 1 > ST_NOTIFY_ID_MAX || !z) {
        /* Not one this shard wrote (a bad disk, say): logged and left, like the damaged ones
         * below. Failing here would keep the whole shard from starting. */
        SG_ERROR("store", "notify.damaged", "shard=%s keyBytes=%zu bytes=%zu", w->ctx->name, kl, vl);
        return SG_OK;
    }
    notif_t *n = calloc(1, sizeof *n);
    SG_ENSURE(n, SG_E_NOMEM);
    memcpy(n->id, k + 1, kl - 1);
    sg_wbuf_init(&n->rec, SG_WIRE_MAX_FRAME);
    n->tags = json_loadb(v, (size_t)(z - v), 0, NULL);
    char key[1 + ST_NOTIFY_ID_MAX], *pv = NULL;
    size_t pl = 0;
    sg_rc rc = n->tags && sg_wbuf_bytes(&n->rec, z + 1, vl - (size_t)(z - v) - 1) == SG_OK &&
                       st_msg_get(n->rec.data, n->rec.len, &n->m) == SG_OK
                   ? SG_OK
                   : SG_E_MALFORMED;
    if (rc == SG_OK)
        rc = st_db_get(&w->ctx->db, NULL, ST_CF_DEFAULT, key, st_key_notify(key, ST_NOTIFY_PREFIX[0], n->id, kl - 1), &pv,
                       &pl);
    json_t *p = pv ? json_loadb(pv, pl, 0, NULL) : NULL;
    rocksdb_free(pv);
    const char *cur = json_string_value(json_object_get(p, "cursor"));
    if (rc == SG_OK && (!cur || json_string_length(json_object_get(p, "cursor")) > SG_DEVICE_ID_MAX))
        rc = SG_E_MALFORMED;
    if (rc == SG_OK) {
        n->cursor_len = json_string_length(json_object_get(p, "cursor"));
        memcpy(n->cursor, cur, n->cursor_len);
        n->targets = (uint64_t)json_integer_value(json_object_get(p, "targets"));
        n->rejected = (uint64_t)json_integer_value(json_object_get(p, "rejected"));
        n->created_ms = json_integer_value(json_object_get(p, "createdAt"));
        SG_INFO("store", "notify.resumed", "shard=%s notification=%s after=\"%s\" targets=%llu", w->ctx->name, n->id,
                n->cursor, (unsigned long long)n->targets);
        notif_push(w, n);
    } else {
        SG_ERROR("store", "notify.damaged", "shard=%s notification=%s", w->ctx->name, n->id);
        notif_free(n);
    }
    json_decref(p);
    return SG_OK;   /* a damaged one is logged and left: the others still resume */
}

sg_rc stw_notify_load(writer_t *w)
{
    st_db_t *db = &w->ctx->db;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_DEFAULT]);
    sg_rc rc = SG_OK;
    for (rocksdb_iter_seek(it, ST_NOTIFY_DEF_PREFIX, 1); rc == SG_OK && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl < 1 || k[0] != ST_NOTIFY_DEF_PREFIX[0])
            break;
        const char *v = rocksdb_iter_value(it, &vl);
        rc = load_one(w, k, kl, v, vl);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err) {
        SG_ERROR("store", "notify.load_failed", "shard=%s error=\"%s\"", w->ctx->name, err);
        rocksdb_free(err);
        return SG_E_IO;
    }
    return rc;
}
