/* st_import.c — the writer's side of POST /v1/devices:import. One ADMIN frame carries up to a
 * thousand registry entries for this shard, one a line: {"line":n,"entry":{...}} where entry is
 * the line of the operator's body. Every entry is checked (its id, that this shard owns it, its
 * importMode against the registry) and put exactly as PUT /v1/devices/{id} puts one, in the open
 * batch; one answer per frame says what became of each line, and it goes out like every answer:
 * after the batch is committed. Entries are parsed one at a time, so the writer never holds the
 * JSON tree of a whole frame. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sg_log.h"
#include "sg_sas.h"
#include "st_writer.h"

/* admin/adm_import.c sends at most this many; 1000 answers with errors or keys stay far below
 * SG_WIRE_MAX_FRAME (each is under 1 KiB: ids are 128 bytes, messages at most 400). */
#define MAX_ENTRIES 1000

enum { MODE_CREATE_OR_UPDATE, MODE_CREATE, MODE_UPDATE };

rt_ring_t *st_import_ring(const char *shards, unsigned vnodes)
{
    char *copy = strdup(shards), *save = NULL;
    char **names = NULL;
    size_t n = 0;
    bool ok = copy != NULL;
    /* The same reading of the list as the routers' (router/rt_router.c rt_shard_list). */
    for (char *tok = ok ? strtok_r(copy, ",", &save) : NULL; ok && tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        char *eq = strchr(tok, '=');
        if (eq)
            *eq = 0;
        char **grown = realloc(names, (n + 1) * sizeof *grown);
        ok = grown != NULL;
        if (ok) {
            names = grown;
            names[n++] = tok;
        }
    }
    rt_ring_t *ring = ok && n ? rt_ring_new((const char *const *)names, n, vnodes) : NULL;
    free(names);
    free(copy);
    return ring;
}

static void entry_error(json_t *errors, json_int_t line, const char *id, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void entry_error(json_t *errors, json_int_t line, const char *id, const char *name, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(errors, json_pack("{s:I,s:s?,s:s,s:s}", "line", line, "deviceId", id, "error", name,
                                            "message", msg));
}

static int mode_of(const json_t *m)
{
    const char *s = m ? json_string_value(m) : "createOrUpdate";
    if (!s)
        return -1;
    return strcmp(s, "createOrUpdate") == 0 ? MODE_CREATE_OR_UPDATE
           : strcmp(s, "create") == 0       ? MODE_CREATE
           : strcmp(s, "update") == 0       ? MODE_UPDATE
                                            : -1;
}

/* The keys st_reg_put generated, for the import's answer (shown this once, as with PUT). */
static void note_generated(json_t *keys, json_int_t line, const char *id, const json_t *generated)
{
    if (json_object_size(generated) == 0)
        return;
    json_t *k = json_pack("{s:I,s:s}", "line", line, "deviceId", id);
    json_object_update(k, (json_t *)generated);
    json_array_append_new(keys, k);
}

/* One parsed entry {"line":n,"entry":{...}}; true when it was written (*created says how). */
static bool import_entry(st_writer_t *w, json_t *item, int64_t now, json_t *errors, json_t *keys, bool *created)
{
    const st_ctx_t *ctx = st_writer_ctx(w);
    json_int_t line = json_integer_value(json_object_get(item, "line"));
    json_t *e = json_object_get(item, "entry");
    json_t *jid = json_object_get(e, "deviceId");
    const char *id = json_string_value(jid);
    size_t id_len = id ? json_string_length(jid) : 0;
    if (!json_is_object(e) || !id || !sg_device_id_valid(id, id_len)) {
        entry_error(errors, line, NULL, "InvalidDeviceId", "the entry has no valid deviceId");
        return false;
    }
    int mode = mode_of(json_object_get(e, "importMode"));
    if (mode < 0) {
        entry_error(errors, line, id, "InvalidImportMode", "importMode must be \"createOrUpdate\", \"create\" or \"update\"");
        return false;
    }
    size_t owner = rt_ring_lookup(ctx->ring, id, id_len);
    if (owner != ctx->partition) {
        /* The admin addressed this shard from a ring other than the one our configuration gives:
         * written here, the device would be where no router looks for it. */
        entry_error(errors, line, id, "WrongShard", "device '%s' belongs to shard %s on this shard's ring "
                    "(cluster.shards, cluster.vnodes), not to %s: the admin's ring differs from the store's "
                    "configuration; nothing was written", id, owner == RT_RING_NONE ? "?" : rt_ring_name(ctx->ring, owner),
                    ctx->name);
        return false;
    }
    st_wdev_t *d = st_writer_dev(w, id, id_len);
    if (mode == MODE_CREATE && st_wdev_exists(d)) {
        entry_error(errors, line, id, "DeviceExists", "device '%s' is already registered (importMode create)", id);
        return false;
    }
    if (mode == MODE_UPDATE && !st_wdev_exists(d)) {
        entry_error(errors, line, id, "DeviceNotFound", "device '%s' is not registered (importMode update)", id);
        return false;
    }
    /* The rest is a PUT /v1/devices/{id} body. id points into the deviceId member: copy it
     * before the member goes. */
    char did[SG_DEVICE_ID_MAX + 1];
    memcpy(did, id, id_len);
    did[id_len] = 0;
    json_object_del(e, "deviceId");
    json_object_del(e, "importMode");
    st_reg_put_t put;
    const char *ename = "InvalidDevice";
    char emsg[300];
    if (st_writer_device_put(w, d, e, now, &put, NULL, &ename, emsg, sizeof emsg) != SG_OK) {
        entry_error(errors, line, did, ename, "%s", emsg);
        return false;
    }
    note_generated(keys, line, did, put.generated);
    json_decref(put.generated);
    *created = put.created;
    return true;
}

/* One line of the frame. */
static bool import_line(st_writer_t *w, const char *text, size_t len, int64_t now, json_t *errors, json_t *keys,
                        bool *created)
{
    json_error_t jerr;
    json_t *item = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!item) {
        entry_error(errors, 0, NULL, "BadRequest", "an entry of the import frame is not JSON: %s", jerr.text);
        return false;
    }
    bool ok = import_entry(w, item, now, errors, keys, created);
    json_decref(item);
    return ok;
}

void st_import_apply(st_writer_t *w, const st_op_t *op, const char *json, size_t len, int64_t now)
{
    size_t lines = len > 0 && json[len - 1] != '\n';   /* a last line without its newline */
    for (const char *p = json, *end = json + len; p < end && (p = memchr(p, '\n', (size_t)(end - p))); p++)
        lines++;
    if (lines > MAX_ENTRIES) {
        st_writer_answer_admin(w, op, 400, st_error_json("BadRequest", "an import frame holds at most %d entries, "
                                                         "one a line", MAX_ENTRIES));
        return;
    }
    json_t *errors = json_array(), *keys = json_array();
    json_int_t created = 0, updated = 0;
    size_t entries = 0;
    for (const char *p = json, *end = json + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        bool was_created = false;
        if (n > 0) {
            entries++;
            if (import_line(w, p, n, now, errors, keys, &was_created)) {
                created += was_created;
                updated += !was_created;
            }
        }
        p += n + 1;
    }
    SG_DEBUG("store", "import.batch", "shard=%s entries=%zu created=%lld updated=%lld failed=%zu",
             st_writer_ctx(w)->name, entries, (long long)created, (long long)updated, json_array_size(errors));
    st_writer_answer_admin(w, op, 200, json_pack("{s:I,s:I,s:o,s:o}", "created", created, "updated", updated,
                                                 "errors", errors, "generatedKeys", keys));
}
