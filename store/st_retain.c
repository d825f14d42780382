/* st_retain.c — a shard's retention thread: drops telemetry and feedback older than their
 * retention (or beyond their size per partition) and dead letters older than theirs, off the
 * writer's path.
 *
 * Telemetry and feedback are append-only logs keyed by a number whose records get older towards
 * the front, so the part to drop is one range [oldest, cutoff): the cutoff is found with a
 * binary search of seeks (by age) or of approximate sizes (by size), the range goes with one
 * DeleteRange written together with the new oldest number (default CF "retained", so a restart
 * neither serves nor renumbers what was dropped), table files wholly inside it are deleted at
 * once, and what is left of it on disk is compacted away. Dead letters live under their devices
 * (one key range per device), so they are reached through their index by time ("dlx"), read from
 * its start up to the cutoff, and deleted in batches. */
#include <pthread.h>
#include <czmq.h>
#include <stdlib.h>
#include <string.h>
#include "sg_log.h"
#include "sg_zmq.h"
#include "sg_sas.h"
#include "sg_time.h"
#include "st_internal.h"
#include "st_keys.h"
#include "st_record.h"

/* Dead letters deleted in one write, and at most in one pass (the rest wait for the next). */
#define DEAD_BATCH 1000
#define DEAD_PASS 100000
/* What is left on disk of a dropped range (in files that also hold retained records) before it
 * is compacted away: a compaction rewrites those files, so not for every small step. */
#define COMPACT_BYTES (16u << 20)

typedef struct {
    const char *name;          /* for logs and metrics */
    st_cf_t cf;
    int64_t retention_ms;
    int64_t max_bytes;         /* 0: no limit by size */
    _Atomic uint64_t *oldest;  /* published: the oldest retained number */
    _Atomic uint64_t *next;    /* published by the writer: the next number it will write */
    _Atomic uint64_t *retired; /* records dropped (numbers, counted over the range) */
    bool (*time_of)(const char *v, size_t n, int64_t *ms);
} rlog_t;

static bool tele_time(const char *v, size_t n, int64_t *ms)
{
    st_tele_t t;
    if (st_tele_get(v, n, &t) != SG_OK)
        return false;
    *ms = t.enqueued_ms;
    return true;
}

static bool fb_time(const char *v, size_t n, int64_t *ms)
{
    st_feedback_t f;
    if (st_feedback_get(v, n, &f) != SG_OK)
        return false;
    *ms = f.at_ms;
    return true;
}

/* Records looked at past one that cannot be read, for a time to go by. */
#define DAMAGED_LOOKAHEAD 64

/* The first record at number x or later, below hi: its number and time. A record that cannot be
 * read takes the time of the next one that can (it is as old as its neighbours; counting it as
 * new would keep everything after it for ever, as old would drop records still retained). */
static bool first_at(rocksdb_iterator_t *it, const rlog_t *l, uint64_t x, uint64_t hi, uint64_t *num, int64_t *ms)
{
    uint8_t key[8];
    st_be64(key, x);
    rocksdb_iter_seek(it, (const char *)key, 8);
    int looked = 0;
    for (; rocksdb_iter_valid(it) && looked <= DAMAGED_LOOKAHEAD; looked++, rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        uint64_t n = kl == 8 ? st_get_be64((const uint8_t *)k) : hi;
        if (n >= hi)
            break;
        if (looked == 0)
            *num = n;
        const char *v = rocksdb_iter_value(it, &vl);
        if (l->time_of(v, vl, ms))
            return true;
    }
    if (looked == 0)
        return false;
    *ms = INT64_MAX;   /* nothing readable near it: kept (with what follows) until something is */
    return true;
}

/* The first number in [lo, hi) whose record is not older than before_ms (hi when all are).
 * Records are appended in time order, so one binary search of seeks finds it. */
static uint64_t age_cutoff(st_db_t *db, const rlog_t *l, uint64_t lo, uint64_t hi, int64_t before_ms)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[l->cf]);
    uint64_t top = hi;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2, num = mid;
        int64_t ms;
        if (!first_at(it, l, mid, top, &num, &ms) || ms >= before_ms)
            hi = mid;   /* nothing old from mid on: the cut is at or before it */
        else
            lo = num + 1;
    }
    rocksdb_iter_destroy(it);
    return lo;
}

static uint64_t approx_bytes(st_db_t *db, st_cf_t cf, uint64_t from, uint64_t to)
{
    uint8_t a[8], b[8];
    st_be64(a, from);
    st_be64(b, to);
    const char *starts[1] = {(const char *)a}, *limits[1] = {(const char *)b};
    size_t lens[1] = {8};
    uint64_t size = 0;
    char *err = NULL;
    rocksdb_approximate_sizes_cf(db->db, db->cf[cf], 1, starts, lens, limits, lens, &size, &err);
    if (err) {
        rocksdb_free(err);
        return 0;
    }
    return size;
}

/* The first number in [lo, hi) from which the rest takes at most max_bytes of table files. */
static uint64_t size_cutoff(st_db_t *db, const rlog_t *l, uint64_t lo, uint64_t hi)
{
    uint64_t top = hi;
    if (approx_bytes(db, l->cf, lo, top) <= (uint64_t)l->max_bytes)
        return lo;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (approx_bytes(db, l->cf, mid, top) <= (uint64_t)l->max_bytes)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void put_retained(rocksdb_writebatch_t *b, st_ctx_t *c, uint64_t tele, uint64_t fb)
{
    uint8_t v[16];
    st_be64(v, tele);
    st_be64(v + 8, fb);
    rocksdb_writebatch_put_cf(b, c->db.cf[ST_CF_DEFAULT], ST_RETAINED_KEY, strlen(ST_RETAINED_KEY), (const char *)v,
                              sizeof v);
}

/* Drop what l no longer retains. Returns false when the database refused the write. */
static bool retain_log(st_ctx_t *c, rlog_t *l, rlog_t *other, int64_t now)
{
    st_db_t *db = &c->db;
    uint64_t oldest = atomic_load(l->oldest), next = atomic_load(l->next);
    if (next <= oldest)
        return true;
    uint64_t cut = age_cutoff(db, l, oldest, next, now - l->retention_ms);
    if (l->max_bytes > 0 && cut < next) {
        uint64_t by_size = size_cutoff(db, l, cut, next);
        if (by_size > cut)
            cut = by_size;
    }
    if (cut <= oldest)
        return true;
    uint8_t from[8], to[8];
    st_be64(from, oldest);
    st_be64(to, cut);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_delete_range_cf(b, db->cf[l->cf], (const char *)from, 8, (const char *)to, 8);
    bool is_tele = l->cf == ST_CF_TELE;
    put_retained(b, c, is_tele ? cut : atomic_load(other->oldest), is_tele ? atomic_load(other->oldest) : cut);
    /* Synced (store.sync): the table files deleted below are gone for good once the MANIFEST
     * says so, and the oldest number must not be older than that after a power loss, or the
     * writer would number from it again. */
    bool ok = st_db_write(db, b, true) == SG_OK;
    rocksdb_writebatch_destroy(b);
    if (!ok)
        return false;
    atomic_store(l->oldest, cut);
    atomic_fetch_add(l->retired, cut - oldest);
    SG_INFO("store", "retention.dropped", "shard=%s log=%s from=%llu to=%llu", c->name, l->name,
            (unsigned long long)oldest, (unsigned long long)cut);
    /* The table files wholly inside the range go at once, without writing anything; the rest
     * (files that also hold retained records) by a compaction, unless the volume is short of
     * room: a compaction writes its output before it frees its input. */
    char *err = NULL;
    uint8_t last[8];
    st_be64(last, cut - 1);   /* DeleteFilesInRange includes its end: the last dropped number */
    rocksdb_delete_file_in_range_cf(db->db, db->cf[l->cf], (const char *)from, 8, (const char *)last, 8, &err);
    if (err) {
        SG_WARN("store", "retention.delete_files_failed", "shard=%s log=%s reason=\"%s\"", c->name, l->name, err);
        rocksdb_free(err);
    }
    if (!atomic_load(&c->stat_disk_full) && approx_bytes(db, l->cf, 0, cut) >= COMPACT_BYTES) {
        /* Not exclusive (automatic compactions of every family go on meanwhile); the bottom level
         * too, where the range tombstone and the files it covers end up. */
        rocksdb_compactoptions_t *co = rocksdb_compactoptions_create();
        rocksdb_compactoptions_set_exclusive_manual_compaction(co, 0);
        rocksdb_compactoptions_set_bottommost_level_compaction(co, 3);   /* kForceOptimized */
        uint8_t zero[8] = {0};
        rocksdb_compact_range_cf_opt(db->db, db->cf[l->cf], co, (const char *)zero, 8, (const char *)last, 8);
        rocksdb_compactoptions_destroy(co);
    }
    return true;
}

/* Write b (and empty it) once it holds at least `count` operations; false when the write failed. */
static bool write_from(st_db_t *db, rocksdb_writebatch_t *b, int count)
{
    if (rocksdb_writebatch_count(b) < count)
        return true;
    bool ok = st_db_write(db, b, false) == SG_OK;
    rocksdb_writebatch_clear(b);
    return ok;
}

/* Delete dead letters dead-lettered before before_ms, oldest first, with their index entries. */
static bool retain_dead(st_ctx_t *c, int64_t before_ms)
{
    st_db_t *db = &c->db;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_DLX]);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    size_t total = 0;
    bool ok = true;
    for (rocksdb_iter_seek_to_first(it); ok && rocksdb_iter_valid(it) && total < DEAD_PASS; rocksdb_iter_next(it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl < 18 || (int64_t)st_get_be64((const uint8_t *)k) >= before_ms)
            break;
        /* {dead_ms}{id}\0{seq} -> {id}\0D{seq} */
        size_t id_len = kl - 17;
        char dkey[ST_KEY_MAX];
        if (id_len <= SG_DEVICE_ID_MAX && k[8 + id_len] == 0) {
            size_t dl = st_key_dev_seq(dkey, k + 8, id_len, ST_K_DEAD, st_get_be64((const uint8_t *)k + 9 + id_len));
            rocksdb_writebatch_delete_cf(b, db->cf[ST_CF_DEV], dkey, dl);
        }
        rocksdb_writebatch_delete_cf(b, db->cf[ST_CF_DLX], k, kl);
        total++;
        ok = write_from(db, b, 2 * DEAD_BATCH);
    }
    ok = ok && write_from(db, b, 1);
    rocksdb_writebatch_destroy(b);
    rocksdb_iter_destroy(it);
    if (ok && total > 0) {
        atomic_fetch_add(&c->stat_retired_dead, total);
        SG_INFO("store", "retention.dropped", "shard=%s log=deadletters count=%zu", c->name, total);
    }
    return ok;
}

/* A database from before the dead-letter index: index the dead letters it holds (once, here,
 * off the writer's path; the writer indexes every new one itself). */
static void index_old_dead_letters(st_ctx_t *c)
{
    st_db_t *db = &c->db;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_DEV]);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    size_t indexed = 0;
    bool ok = true;
    for (rocksdb_iter_seek_to_first(it); ok && rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        /* {id}\0D{seq}: the NUL is the first one in the key */
        const char *nul = memchr(k, 0, kl);
        if (!nul || (size_t)(nul - k) + 10 != kl || nul[1] != ST_K_DEAD)
            continue;
        const char *v = rocksdb_iter_value(it, &vl);
        uint8_t reason;
        int64_t at;
        const uint8_t *msg;
        size_t msg_len;
        /* only the time counts here: a dead letter of a damaged message ages like any other */
        if (st_dead_head(v, vl, &reason, &at, &msg, &msg_len) != SG_OK)
            at = 0;   /* not even its time can be read: first to go */
        char key[ST_KEY_MAX];
        size_t id_len = (size_t)(nul - k);
        size_t n = st_key_exp(key, at, k, id_len, st_get_be64((const uint8_t *)nul + 2));
        rocksdb_writebatch_put_cf(b, db->cf[ST_CF_DLX], key, n, "", 0);
        indexed++;
        ok = write_from(db, b, DEAD_BATCH);
    }
    ok = ok && write_from(db, b, 1);
    rocksdb_writebatch_destroy(b);
    rocksdb_iter_destroy(it);
    SG_INFO("store", "retention.indexed", "shard=%s dead_letters=%zu complete=%s", c->name, indexed,
            ok ? "yes" : "no");
}

/* The oldest numbers a previous start retained (0 and 0 on a new database). */
sg_rc st_retain_load(st_ctx_t *c)
{
    char *v = NULL;
    size_t n = 0;
    SG_GUARD(st_db_get(&c->db, NULL, ST_CF_DEFAULT, ST_RETAINED_KEY, strlen(ST_RETAINED_KEY), &v, &n));
    uint64_t tele = 0, fb = 0;
    if (v && n == 16) {
        tele = st_get_be64((const uint8_t *)v);
        fb = st_get_be64((const uint8_t *)v + 8);
    }
    rocksdb_free(v);
    atomic_store(&c->stat_tele_oldest, tele);
    atomic_store(&c->stat_fb_oldest, fb);
    return SG_OK;
}

void st_retain_actor(zsock_t *pipe, void *args)
{
    pthread_setname_np(pthread_self(), "sg-st-retain");   /* top -H, perf and /proc show it */
    st_ctx_t *c = args;
    rlog_t tele = {"telemetry", ST_CF_TELE, c->tele_retention_ms, c->tele_max_bytes, &c->stat_tele_oldest,
                   &c->stat_tele_next, &c->stat_retired_tele, tele_time};
    rlog_t fb = {"feedback", ST_CF_FB, c->fb_retention_ms, c->fb_max_bytes, &c->stat_fb_oldest, &c->stat_fb_next,
                 &c->stat_retired_fb, fb_time};
    zsock_signal(pipe, 0);
    if (c->db.dlx_created)
        index_old_dead_letters(c);
    zpoller_t *poller = zpoller_new(pipe, NULL);
    bool warned = false;
    for (;;) {
        void *which = zpoller_wait(poller, (int)c->retention_interval_ms);
        if (which == pipe || (!which && zpoller_terminated(poller)))
            break;
        /* The writer publishes where its logs end once it has started. */
        if (!atomic_load(&c->writer_ready))
            continue;
        int64_t now = sg_now_ms();
        bool ok = retain_log(c, &tele, &fb, now) && retain_log(c, &fb, &tele, now) &&
                  retain_dead(c, now - c->dead_retention_ms);
        if (!ok && !warned)
            SG_ERROR("store", "retention.write_failed", "shard=%s reason=\"the database refused a delete; retried "
                     "every %lld ms\"", c->name, (long long)c->retention_interval_ms);
        warned = !ok;
    }
    zpoller_destroy(&poller);
    sg_actor_end();
}
