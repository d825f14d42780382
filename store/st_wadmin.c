/* st_wadmin.c — HTTP writes the admin tier sends to a device's shard: registry put and delete,
 * SAS key regeneration, command enqueue (with the queue limits that answer 429) and purge,
 * consumer group commits. Each answer goes out once the batch is durable. */
#include <czmq.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>
#include <strings.h>
#include "sg_codec.h"
#include "sg_log.h"
#include "sg_propbag.h"
#include "sg_time.h"
#include "st_keys.h"
#include "st_writer_int.h"

static json_t *load_entry(writer_t *w, wdev_t *d)
{
    /* Loaded or put in this batch (then the database does not have it yet). */
    if (d->reg_text)
        return json_loads(d->reg_text, 0, NULL);
    char key[ST_KEY_MAX], *val;
    size_t vlen, klen = st_key_dev(key, d->id, d->id_len, ST_K_REGISTRY);
    if (st_db_get(&w->ctx->db, NULL, ST_CF_DEV, key, klen, &val, &vlen) != SG_OK)
        stw_fatal_io("registry-read");
    if (!val)
        return NULL;
    json_t *e = json_loadb(val, vlen, 0, NULL);
    rocksdb_free(val);
    return e;
}

/* Write put->stored as d's entry into the open batch (and d->reg, d->reg_text); *answer (when
 * asked) gets the caller's view of it. put->stored is consumed. */
static void put_entry(writer_t *w, wdev_t *d, st_reg_put_t *put, json_t **answer)
{
    char *text = json_dumps(put->stored, JSON_COMPACT);
    if (!text || st_reg_from_json(put->stored, &d->reg) != SG_OK)
        stw_fatal_io("registry-encode");
    if (answer) {
        st_limits_t defaults = {w->ctx->max_queued_messages, w->ctx->max_queued_bytes};
        *answer = st_reg_put_answer(put, &defaults);
    }
    json_decref(put->stored);
    put->stored = NULL;
    char key[ST_KEY_MAX];
    size_t klen = st_key_dev(key, d->id, d->id_len, ST_K_REGISTRY);
    rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEV], key, klen, text, strlen(text));
    if (!d->reg_text)
        zlist_append(w->reg_texts, d);
    free(d->reg_text);
    d->reg_text = text;
}

sg_rc st_writer_device_put(writer_t *w, wdev_t *d, const json_t *body, int64_t now, st_reg_put_t *put, json_t **answer,
                           const char **err_name, char *err_msg, size_t err_len)
{
    json_t *existing = d->exists ? load_entry(w, d) : NULL;
    sg_rc rc = st_reg_put(d->id, body, existing, now, put, err_name, err_msg, err_len);
    json_decref(existing);
    SG_GUARD(rc);
    put_entry(w, d, put, answer);
    if (put->created) {
        d->exists = true;
        w->counters.devices++;
        w->counters_dirty = true;
    }
    if (put->revoke && d->sess.live) {
        SG_INFO("store", "session.revoked", "device=%s generation=%u", d->id, d->reg.generation);
        stw_send_kick(w, d, SG_KICK_REVOKED);
        stw_session_end(w, d);
    }
    if (!d->reg.enabled)
        stw_methods_end(w, d, 403, st_error_json("DeviceDisabled", "device '%s' was disabled", d->id));
    return SG_OK;
}

static void adm_device_put(writer_t *w, op_t *op, wdev_t *d, json_t *body, int64_t now)
{
    st_reg_put_t put;
    json_t *reply = NULL;
    const char *ename = "InvalidDevice";
    char emsg[300];
    if (st_writer_device_put(w, d, body, now, &put, &reply, &ename, emsg, sizeof emsg) != SG_OK) {
        st_writer_answer_admin(w, op, 400, st_error_json(ename, "%s", emsg));
        return;
    }
    json_decref(put.generated);
    st_writer_answer_admin(w, op, put.created ? 201 : 200, reply);
}

/* POST /v1/devices/{id}/keys:regenerate: new SAS keys through the group commit, answered once
 * durable with the keys (shown this once). A credential change like a PUT's (the generation goes
 * up), except that a live session stays when it authenticated with the key that is kept: rotating
 * one key at a time is how a fleet moves to new keys without dropping its devices. */
static void adm_keys_regenerate(writer_t *w, op_t *op, wdev_t *d, const json_t *body)
{
    char emsg[400];
    const char *ename = "InvalidKeyName";
    int which;
    if (!d->exists) {
        st_writer_answer_admin(w, op, 404, st_error_json("DeviceNotFound", "device '%s' is not registered", d->id));
        return;
    }
    if (st_reg_regen_parse(body, &which, emsg, sizeof emsg) != SG_OK) {
        st_writer_answer_admin(w, op, 400, st_error_json(ename, "%s", emsg));
        return;
    }
    json_t *existing = load_entry(w, d);
    if (!existing) {
        st_writer_answer_admin(w, op, 500, st_error_json("Internal", "device '%s': its registry entry is unreadable",
                                                         d->id));
        return;
    }
    st_reg_put_t put;
    sg_rc rc = st_reg_regenerate(existing, which, &put, &ename, emsg, sizeof emsg);
    json_decref(existing);
    if (rc != SG_OK) {
        st_writer_answer_admin(w, op, strcmp(ename, "Internal") == 0 ? 500 : 400, st_error_json(ename, "%s", emsg));
        return;
    }
    json_t *reply = NULL;
    put_entry(w, d, &put, &reply);
    json_decref(put.generated);
    bool kick = d->sess.live && (which == ST_REGEN_BOTH || d->sess.sas_key == 0 || (d->sess.sas_key & which));
    SG_INFO("store", "keys.regenerated", "device=%s keys=%s generation=%u session=%s", d->id,
            which == ST_REGEN_BOTH ? "both" : which == ST_REGEN_PRIMARY ? "primary" : "secondary", d->reg.generation,
            !d->sess.live ? "none" : kick ? "revoked" : "kept");
    if (kick) {
        stw_send_kick(w, d, SG_KICK_REVOKED);
        stw_session_end(w, d);
    }
    st_writer_answer_admin(w, op, 200, reply);
}

/* Take every queued message of d out with `outcome` (they are read from the database: the batch
 * must not hold messages of d, see needs_fresh_batch). Returns how many. */
static size_t finish_all(writer_t *w, wdev_t *d, uint8_t outcome, int64_t now)
{
    st_db_t *db = &w->ctx->db;
    char prefix[ST_KEY_MAX];
    size_t n = 0, plen = st_key_dev(prefix, d->id, d->id_len, ST_K_QUEUE);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_DEV]);
    for (rocksdb_iter_seek(it, prefix, plen); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl != plen + 8 || memcmp(k, prefix, plen) != 0)
            break;
        const char *v = rocksdb_iter_value(it, &vl);
        stw_finish_msg(w, d, st_get_be64((const uint8_t *)k + plen), v, vl, outcome, now);
        n++;
    }
    rocksdb_iter_destroy(it);
    return n;
}

static void adm_msg_purge(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    if (!d->exists) {
        st_writer_answer_admin(w, op, 404, st_error_json("DeviceNotFound", "device '%s' is not registered", d->id));
        return;
    }
    size_t n = finish_all(w, d, ST_OUT_PURGED, now);
    stw_inflight_clear(w, d);   /* purged deliveries no longer hold the window */
    SG_INFO("store", "queue.purged", "device=%s messages=%zu", d->id, n);
    st_writer_answer_admin(w, op, 200, json_pack("{s:I}", "purged", (json_int_t)n));
}

static void adm_device_delete(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    if (!d->exists) {
        st_writer_answer_admin(w, op, 404, st_error_json("DeviceNotFound", "device '%s' is not registered", d->id));
        return;
    }
    st_db_t *db = &w->ctx->db;
    char key[ST_KEY_MAX];
    size_t klen;
    finish_all(w, d, ST_OUT_REVOKED, now);   /* everything still queued is dead-lettered as revoked */
    stw_methods_end(w, d, 404, st_error_json("DeviceNotFound", "device '%s' was deleted", d->id));
    if (d->sess.live) {
        stw_send_kick(w, d, SG_KICK_REVOKED);
        stw_session_end(w, d);
    }
    /* A device created again under this id starts without the old subscription (its epochs
     * come from the clock, so they still outrank the old session's). */
    stw_sess_clear(w, &d->sess);
    klen = st_key_dev(key, d->id, d->id_len, ST_K_SESSION);
    rocksdb_writebatch_delete_cf(w->batch, db->cf[ST_CF_DEV], key, klen);
    klen = st_key_dev(key, d->id, d->id_len, ST_K_REGISTRY);
    rocksdb_writebatch_delete_cf(w->batch, db->cf[ST_CF_DEV], key, klen);
    d->exists = false;
    memset(&d->reg, 0, sizeof d->reg);
    /* The counters stay (emptied): a device created again under this id continues the sequence,
     * so its messages never overwrite the dead letters of this one. */
    d->meta.count = 0;
    d->meta.bytes = 0;
    stw_save_meta(w, d);
    if (w->counters.devices > 0)
        w->counters.devices--;
    w->counters_dirty = true;
    SG_INFO("store", "device.deleted", "device=%s", d->id);
    st_writer_answer_admin(w, op, 204, NULL);
}

void stw_uuid4(char out[37])
{
    uint8_t b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        stw_fatal_io("random");
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static int ack_parse(const char *s)
{
    static const char *const names[] = {"none", "positive", "negative", "full"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

#define MAX_USER_PROPS 64

/* Refuse op with status and an InvalidMessage (or MessageTooLarge) error; false for the caller
 * to return. */
static bool msg_refuse(writer_t *w, op_t *op, int status, json_t *err, uint8_t *decoded)
{
    free(decoded);
    st_writer_answer_admin(w, op, status, err);
    return false;
}

bool stw_msg_build(writer_t *w, op_t *op, const json_t *body, const char *mid, const char *sys_key,
                   const char *sys_val, int64_t now, sg_wbuf_t *out, st_msg_t *m)
{
    st_ctx_t *ctx = w->ctx;
    if (!json_is_object(body))
        return msg_refuse(w, op, 400, st_error_json("InvalidMessage", "the body must be a JSON object"), NULL);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
        if (strcmp(k, "payload") && strcmp(k, "payloadEncoding") && strcmp(k, "properties") &&
            strcmp(k, "ttlSeconds") && strcmp(k, "ack"))
            return msg_refuse(w, op, 400, st_error_json("InvalidMessage", "unknown member '%s'", k), NULL);
    }
    json_t *jp = json_object_get(body, "payload");
    const char *enc = "utf8";
    if (json_object_get(body, "payloadEncoding")) {
        enc = json_string_value(json_object_get(body, "payloadEncoding"));
        if (!enc || (strcmp(enc, "utf8") && strcmp(enc, "base64")))
            return msg_refuse(w, op, 400, st_error_json("InvalidMessage", "payloadEncoding must be \"utf8\" or \"base64\""),
                              NULL);
    }
    if (jp && !json_is_string(jp))
        return msg_refuse(w, op, 400, st_error_json("InvalidMessage", "payload must be a string (utf8 text or base64)"),
                          NULL);
    const char *ptext = jp ? json_string_value(jp) : "";
    size_t plen = jp ? json_string_length(jp) : 0;
    uint8_t *payload = (uint8_t *)ptext;
    uint8_t *decoded = NULL;
    if (strcmp(enc, "base64") == 0) {
        decoded = malloc(plen / 4 * 3 + 3);
        size_t n;
        if (!decoded || sg_b64_decode(ptext, plen, decoded, &n) != SG_OK)
            return msg_refuse(w, op, 400, st_error_json("InvalidMessage", "payload is not valid base64"), decoded);
        payload = decoded;
        plen = n;
    }
    int64_t ttl = ctx->default_ttl;
    json_t *jt = json_object_get(body, "ttlSeconds");
    if (jt && (!json_is_integer(jt) || json_integer_value(jt) < 1 || json_integer_value(jt) > ctx->max_ttl))
        return msg_refuse(w, op, 400, st_error_json("InvalidMessage", "ttlSeconds must be an integer from 1 to %lld",
                                                    (long long)ctx->max_ttl), decoded);
    if (jt)
        ttl = json_integer_value(jt);
    int ack = ST_ACK_NONE;
    if (json_object_get(body, "ack")) {
        const char *a = json_string_value(json_object_get(body, "ack"));
        ack = a ? ack_parse(a) : -1;
        if (ack < 0)
            return msg_refuse(w, op, 400, st_error_json("InvalidMessage", "ack must be none, positive, negative or full"),
                              decoded);
    }
    json_t *props = json_object_get(body, "properties");
    if (props && (!json_is_object(props) || json_object_size(props) > MAX_USER_PROPS))
        return msg_refuse(w, op, 400, st_error_json("InvalidMessage", "properties must be an object of at most %d string "
                                                    "values", MAX_USER_PROPS), decoded);
    size_t props_bytes = 0;
    json_object_foreach(props, k, v) {
        if (!json_is_string(v) || !*k || strncmp(k, "$.", 2) == 0 || strncasecmp(k, "iothub-", 7) == 0 ||
            strlen(k) > 256 || json_string_length(v) > 4096)
            return msg_refuse(w, op, 400, st_error_json("InvalidMessage",
                "property '%s' is not allowed: values are strings (<= 4096 bytes), keys 1-256 bytes and not "
                "starting with '$.' or 'iothub-'", k), decoded);
        props_bytes += strlen(k) + json_string_length(v);
    }
    /* The properties travel URL-encoded in the devicebound topic, which MQTT caps at 65535 bytes
     * (minus room for the id and the system properties): refuse now what could never be
     * delivered. */
    if (props && json_object_size(props) > 0) {
        sg_prop_t pv[MAX_USER_PROPS];
        size_t np = 0;
        json_object_foreach(props, k, v) {
            pv[np].key = k;
            pv[np++].value = json_string_value(v);
        }
        sg_wbuf_t bag;
        sg_wbuf_init(&bag, 65535 - 1024);
        sg_rc brc = sg_propbag_encode(&bag, pv, np);
        sg_wbuf_fini(&bag);
        if (brc != SG_OK)
            return msg_refuse(w, op, 400, st_error_json("InvalidMessage", "the properties do not fit in an MQTT topic "
                                                        "(at most 64 KiB once URL-encoded, with the system properties)"),
                              decoded);
    }
    if ((int64_t)(plen + props_bytes) > ctx->max_message_bytes)
        return msg_refuse(w, op, 413, st_error_json("MessageTooLarge", "message is %zu bytes; the limit is %lld",
                                                    plen + props_bytes, (long long)ctx->max_message_bytes), decoded);
    *m = (st_msg_t){.message_id = mid, .message_id_len = strlen(mid), .enqueued_ms = now,
                    .expires_ms = now + ttl * 1000, .ack = (uint8_t)ack, .payload_len = plen};
    sg_wbuf_reset(out);
    sg_rc rc = st_msg_put_head(out, m, (uint16_t)(json_object_size(props) + (sys_key ? 1 : 0)));
    if (rc == SG_OK && sys_key)
        rc = sg_wire_put_prop(out, sys_key, strlen(sys_key), sys_val, strlen(sys_val));
    json_object_foreach(props, k, v) {
        if (rc == SG_OK)
            rc = sg_wire_put_prop(out, k, strlen(k), json_string_value(v), json_string_length(v));
    }
    if (rc == SG_OK)
        rc = st_msg_put_tail(out, payload, plen);
    free(decoded);
    if (rc != SG_OK)
        stw_fatal_io("message-encode");
    return true;
}

bool stw_queue_room(writer_t *w, const wdev_t *d, size_t rlen, int64_t *limit, int64_t *blimit)
{
    *limit = d->reg.max_messages > 0 ? d->reg.max_messages : w->ctx->max_queued_messages;
    *blimit = d->reg.max_bytes > 0 ? d->reg.max_bytes : w->ctx->max_queued_bytes;
    return (int64_t)d->meta.count < *limit && (int64_t)(d->meta.bytes + rlen) <= *blimit;
}

void stw_queue_put(writer_t *w, wdev_t *d, const st_msg_t *m, const sg_wbuf_t *rec)
{
    st_ctx_t *ctx = w->ctx;
    uint64_t seq = d->meta.next_seq++;
    char key[ST_KEY_MAX];
    size_t klen = st_key_dev_seq(key, d->id, d->id_len, ST_K_QUEUE, seq);
    rocksdb_writebatch_put_cf(w->batch, ctx->db.cf[ST_CF_DEV], key, klen, (const char *)rec->data, rec->len);
    klen = st_key_exp(key, m->expires_ms, d->id, d->id_len, seq);
    rocksdb_writebatch_put_cf(w->batch, ctx->db.cf[ST_CF_EXP], key, klen, "", 0);
    d->meta.count++;
    d->meta.bytes += rec->len;   /* everything stored counts, not only the payload */
    w->queued++;
    stw_save_meta(w, d);
    stw_want_delivery(w, d);
}

bool stw_adm_device_enabled(writer_t *w, op_t *op, wdev_t *d)
{
    if (!d->exists) {
        st_writer_answer_admin(w, op, 404, st_error_json("DeviceNotFound", "device '%s' is not registered", d->id));
        return false;
    }
    if (!d->reg.enabled) {
        st_writer_answer_admin(w, op, 403, st_error_json("DeviceDisabled", "device '%s' is disabled", d->id));
        return false;
    }
    return true;
}

void stw_adm_enqueue(writer_t *w, op_t *op, wdev_t *d, json_t *body, int64_t now, bool fallback)
{
    if (!stw_adm_device_enabled(w, op, d))
        return;
    char mid[37];
    stw_uuid4(mid);
    st_msg_t m;
    if (!stw_msg_build(w, op, body, mid, NULL, NULL, now, &w->scratch, &m))
        return;
    int64_t limit, blimit;
    if (!stw_queue_room(w, d, w->scratch.len, &limit, &blimit)) {
        json_t *e = st_error_json("DeviceQueueFull", "device '%s' has %u messages (%llu bytes) queued; limits are %lld "
                                  "messages and %lld bytes", d->id, d->meta.count, (unsigned long long)d->meta.bytes,
                                  (long long)limit, (long long)blimit);
        json_object_set_new(e, "queued", json_integer(d->meta.count));
        json_object_set_new(e, "limit", json_integer(limit));
        json_object_set_new(e, "retryAfter", json_integer(d->sess.live && d->sess.subscribed ? 1 : 30));
        st_writer_answer_admin(w, op, 429, e);
        return;
    }
    stw_queue_put(w, d, &m, &w->scratch);
    char exp[25];
    sg_rfc3339(m.expires_ms, exp);
    if (fallback)
        st_writer_answer_admin(w, op, 202, json_pack("{s:b,s:s,s:s}", "queued", true, "messageId", mid, "expiresAt", exp));
    else
        st_writer_answer_admin(w, op, 201, json_pack("{s:s,s:s}", "messageId", mid, "expiresAt", exp));
}
bool stw_owns(writer_t *w, const wdev_t *d)
{
    const st_ctx_t *c = w->ctx;
    size_t owner = rt_ring_lookup(c->ring, d->id, d->id_len);
    if (owner == c->partition)
        return true;
    SG_WARN("store", "device.wrong_shard", "device=%s owner=%s shard=%s reason=\"a router's ring differs from this "
            "shard's (cluster.shards, cluster.vnodes): refused\"", d->id,
            owner == RT_RING_NONE ? "?" : rt_ring_name(c->ring, owner), c->name);
    return false;
}

void stw_op_admin(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    uint16_t aop;
    const char *json;
    size_t len;
    if (sg_wire_get_admin(&op->h, &aop, &json, &len) != SG_OK) {
        st_writer_answer_admin(w, op, 400, st_error_json("BadRequest", "malformed admin frame"));
        return;
    }
    if (!stw_owns(w, d)) {
        st_writer_answer_admin(w, op, 503, st_error_json("WrongShard", "device '%s' does not belong to shard %s on "
                                                         "its ring: the routers' configuration differs from the "
                                                         "shards' (cluster.shards, cluster.vnodes); nothing was "
                                                         "written", d->id, w->ctx->name));
        return;
    }
    json_error_t jerr;
    json_t *body = len ? json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr) : json_object();
    if (!body) {
        st_writer_answer_admin(w, op, 400, st_error_json("InvalidJson", "the body is not valid JSON: %s (line %d, column %d)",
                                               jerr.text, jerr.line, jerr.column));
        return;
    }
    switch (aop) {
    case SG_ADM_DEVICE_PUT: adm_device_put(w, op, d, body, now); break;
    case SG_ADM_DEVICE_DELETE: adm_device_delete(w, op, d, now); break;
    case SG_ADM_MSG_PURGE: adm_msg_purge(w, op, d, now); break;
    case SG_ADM_MSG_ENQUEUE: stw_adm_enqueue(w, op, d, body, now, false); break;
    case SG_ADM_METHOD_INVOKE: stw_op_method_invoke(w, op, d, body, now); break;
    case SG_ADM_KEYS_REGENERATE: adm_keys_regenerate(w, op, d, len ? body : NULL); break;
    default: st_writer_answer_admin(w, op, 400, st_error_json("BadRequest", "operation %u is not a write", aop)); break;
    }
    json_decref(body);
}

/* A consumer group's position in this partition: {"group", "offset", "log"}, the last offset it
 * has read (-1: none) in the telemetry log, or in the feedback log with "log": "feedback" (a key
 * space of its own: st_keys.h). Written through the group commit like everything else, answered
 * when durable. */
void stw_adm_group_commit(writer_t *w, op_t *op, const char *json, size_t len)
{
    json_t *b = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    const char *g = json_string_value(json_object_get(b, "group"));
    json_t *off = json_object_get(b, "offset"), *jlog = json_object_get(b, "log");
    const char *log = jlog ? json_string_value(jlog) : "telemetry";
    bool fb = log && strcmp(log, "feedback") == 0;
    int64_t last = (int64_t)(fb ? w->counters.feedback_next : w->tele_next) - 1;
    if (!g || !sg_group_valid(g, strlen(g)) || !json_is_integer(off) || !log ||
        (!fb && strcmp(log, "telemetry") != 0)) {
        st_writer_answer_admin(w, op, 400, st_error_json("BadRequest", "a commit names a valid group, an integer offset "
                                                         "and the log: telemetry or feedback"));
    } else if (json_integer_value(off) < -1 || json_integer_value(off) > last) {
        st_writer_answer_admin(w, op, 400, st_error_json("OffsetOutOfRange", "offset %lld is not in this partition's %s: "
                                               "offsets run to %lld (-1: nothing read)",
                                               (long long)json_integer_value(off), fb ? "feedback" : "telemetry",
                                               (long long)last));
    } else {
        char key[1 + ST_GROUP_MAX];
        uint8_t v[8];
        st_be64(v, (uint64_t)(json_integer_value(off) + 1));
        size_t klen = fb ? st_key_fb_group(key, g, strlen(g)) : st_key_group(key, g, strlen(g));
        rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, klen, (const char *)v, sizeof v);
        st_writer_answer_admin(w, op, 204, NULL);
    }
    json_decref(b);
}

/* A shard's certificate authorities: {"name", "certificate"} to register (201 new, 200
 * replaced), {"name"} to read one or delete it, {} to list them. The admin endpoint sends puts
 * and deletes to every shard (a device may live on any of them) and reads from one. Written
 * through the group commit, in memory at once: a device connecting in this batch already sees
 * the change, and its answer leaves only when the batch is durable, like the operator's. */
void stw_adm_ca(writer_t *w, op_t *op, uint16_t aop, const char *json, size_t len)
{
    json_t *b = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    const char *name = json_string_value(json_object_get(b, "name"));
    if (!b || (aop != SG_ADM_CA_GET && !name) || (name && !sg_device_id_valid(name, strlen(name)))) {
        st_writer_answer_admin(w, op, 400, st_error_json("InvalidName", "a certificate authority's name is 1-128 "
                                                         "characters of the device id alphabet"));
        json_decref(b);
        return;
    }
    char key[1 + SG_DEVICE_ID_MAX];
    size_t klen = name ? st_cert_key(key, name, strlen(name)) : 0;
    if (aop == SG_ADM_CA_GET) {
        json_t *one = name ? st_cert_json(w->certs, name) : NULL;
        if (!name)
            st_writer_answer_admin(w, op, 200, json_pack("{s:o}", "certificateAuthorities", st_cert_list(w->certs)));
        else if (one)
            st_writer_answer_admin(w, op, 200, one);
        else
            st_writer_answer_admin(w, op, 404, st_error_json("CertificateAuthorityNotFound", "no certificate authority "
                                                             "named '%s' is registered", name));
    } else if (aop == SG_ADM_CA_DELETE) {
        if (st_cert_del(w->certs, name)) {
            rocksdb_writebatch_delete_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, klen);
            SG_INFO("store", "ca.deleted", "name=%s", name);
            st_writer_answer_admin(w, op, 204, NULL);
        } else {
            st_writer_answer_admin(w, op, 404, st_error_json("CertificateAuthorityNotFound", "no certificate authority "
                                                             "named '%s' is registered", name));
        }
    } else {
        const char *pem = json_string_value(json_object_get(b, "certificate"));
        char msg[200];
        bool replaced = false;
        sg_rc rc = SG_E_INVALID;
        if (!pem)
            snprintf(msg, sizeof msg, "certificate (a PEM string) is required");
        else if ((rc = st_cert_check_ca(pem, strlen(pem), msg, sizeof msg)) == SG_OK)
            rc = st_cert_put(w->certs, name, pem, strlen(pem), &replaced);
        if (rc == SG_OK) {
            rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_DEFAULT], key, klen, pem, strlen(pem));
            SG_INFO("store", "ca.registered", "name=%s replaced=%d", name, replaced);
            st_writer_answer_admin(w, op, replaced ? 200 : 201, st_cert_json(w->certs, name));
        } else if (rc == SG_E_FULL) {
            st_writer_answer_admin(w, op, 409, st_error_json("TooManyCertificateAuthorities", "at most %d certificate "
                                                             "authorities can be registered", ST_CA_MAX));
        } else {
            st_writer_answer_admin(w, op, 400, st_error_json("InvalidCertificate", "%s", msg));
        }
    }
    json_decref(b);
}
