/* st_db.c — RocksDB set-up for a shard; see st_db.h.
 * Options: one memory budget (store.memory), the capacity of an LRU block cache that the
 * memtables of every column family are charged to (st_db_budget.cc): they are flushed when they
 * reach half of it together, and table blocks have the rest, all of it while the memtables are
 * empty. Background jobs one per core, statistics on (st_db_stats, /metrics),
 * the WAL is on (durability comes from it), fsync per group commit when sync=always,
 * a bounded number of open files (a process here may hold 20,000 descriptors and the frontend
 * needs most of them in `sacgate all`), LZ4 for the device and telemetry data. The device
 * column family has bloom filters, in its tables and its memtables: most of its point reads ask
 * for keys that are not there (the session and queue counters of a device never connected, every
 * key of a device being created), and a filter answers those without a search. */
#include "st_db.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sg_log.h"
#include "st_db_budget.h"
#include "st_keys.h"

static const char *const k_cf_names[ST_CF_COUNT] = {"default", "dev", "tele", "exp", "fb", "dlx"};

sg_rc st_db_open(st_db_t *db, const char *path, const st_db_opts_t *o)
{
    char *err = NULL;
    memset(db, 0, sizeof *db);
    db->path = strdup(path);
    SG_ENSURE(db->path != NULL, SG_E_NOMEM);

    uint64_t memory = o->memory > 0 ? (uint64_t)o->memory : 512u << 20;
    db->cache = rocksdb_cache_create_lru(memory);
    db->table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(db->table, db->cache);

    db->dev_table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(db->dev_table, db->cache);
    rocksdb_block_based_options_set_filter_policy(db->dev_table, rocksdb_filterpolicy_create_bloom_full(10));

    db->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(db->opts, 1);
    rocksdb_options_set_create_missing_column_families(db->opts, 1);
    rocksdb_options_set_max_open_files(db->opts, 256);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    rocksdb_options_increase_parallelism(db->opts, cores > 2 ? (int)cores : 2);
    rocksdb_options_set_max_background_jobs(db->opts, cores > 2 ? (int)cores : 2);
    /* Past half the budget in every column family's memtables together, the family with the
     * oldest memtable is flushed; what the memtables hold is charged to the block cache, which
     * keeps that much fewer blocks: one figure bounds both. Before the column family copies
     * below, which share it. */
    sg_rc rc = st_db_budget_attach(db->opts, db->cache, memory / 2);
    if (rc != SG_OK) {
        SG_ERROR("store", "db.budget_failed", "path=%s reason=%s", path, sg_strerror(rc));
        st_db_close(db);
        return rc;
    }
    /* Each group commit's fsync then writes the data, not also the WAL file's new size, nor
     * the conversion of its blocks from preallocated to written. */
    if ((rc = st_db_wal_presize(db->opts, o->sync)) != SG_OK) {
        SG_ERROR("store", "db.options_failed", "path=%s reason=%s", path, sg_strerror(rc));
        st_db_close(db);
        return rc;
    }
    rocksdb_options_enable_statistics(db->opts);
    rocksdb_options_set_keep_log_file_num(db->opts, 4);
    rocksdb_options_set_max_log_file_size(db->opts, 4u << 20);
    if (o->log_dir && *o->log_dir)
        rocksdb_options_set_db_log_dir(db->opts, o->log_dir);
    if (o->write_buffer > 0)
        rocksdb_options_set_write_buffer_size(db->opts, (size_t)o->write_buffer);
    /* A WAL file stays until every column family with data in it has flushed; the quiet ones
     * (sessions, counters) would keep the busy telemetry's WAL files for ever (RocksDB's default
     * bound is four times all memtables together, gigabytes). Past twice one memtable, the
     * families holding the oldest WAL file are flushed. */
    rocksdb_options_set_max_total_wal_size(db->opts, 2 * (uint64_t)(o->write_buffer > 0 ? o->write_buffer : 64 << 20));
    for (int i = 0; i < ST_CF_COUNT; i++) {
        db->cf_opts[i] = rocksdb_options_create_copy(db->opts);
        rocksdb_options_set_block_based_table_factory(db->cf_opts[i], i == ST_CF_DEV ? db->dev_table : db->table);
        rocksdb_options_set_compression(db->cf_opts[i], rocksdb_lz4_compression);
    }
    rocksdb_options_set_memtable_whole_key_filtering(db->cf_opts[ST_CF_DEV], 1);
    rocksdb_options_set_memtable_prefix_bloom_size_ratio(db->cf_opts[ST_CF_DEV], 0.02);
    /* An existing database without the dead-letter index gets it now; its dead letters are
     * indexed by the retention thread. */
    size_t n_cf = 0;
    char **have = rocksdb_list_column_families(db->opts, path, &n_cf, &err);
    if (err) {
        rocksdb_free(err);   /* no database there yet */
        err = NULL;
    } else {
        db->dlx_created = true;
        for (size_t i = 0; i < n_cf; i++)
            if (strcmp(have[i], k_cf_names[ST_CF_DLX]) == 0)
                db->dlx_created = false;
    }
    rocksdb_list_column_families_destroy(have, n_cf);   /* an array even on error */
    const rocksdb_options_t *cfo[ST_CF_COUNT];
    for (int i = 0; i < ST_CF_COUNT; i++)
        cfo[i] = db->cf_opts[i];
    db->db = rocksdb_open_column_families(db->opts, path, ST_CF_COUNT, (const char *const *)k_cf_names,
                                          cfo, db->cf, &err);
    if (err) {
        SG_ERROR("store", "db.open_failed", "path=%s reason=\"%s\"", path, err);
        rocksdb_free(err);
        db->db = NULL;
        st_db_close(db);
        return SG_E_IO;
    }
    db->ro = rocksdb_readoptions_create();
    db->wo_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(db->wo_sync, o->sync ? 1 : 0);
    db->wo_nosync = rocksdb_writeoptions_create();
    return SG_OK;
}

void st_db_close(st_db_t *db)
{
    if (db->db) {
        for (int i = 0; i < ST_CF_COUNT; i++)
            if (db->cf[i])
                rocksdb_column_family_handle_destroy(db->cf[i]);
        rocksdb_close(db->db);
    }
    for (int i = 0; i < ST_CF_COUNT; i++)
        if (db->cf_opts[i])
            rocksdb_options_destroy(db->cf_opts[i]);
    if (db->opts)
        rocksdb_options_destroy(db->opts);
    if (db->table)
        rocksdb_block_based_options_destroy(db->table);
    if (db->dev_table)
        rocksdb_block_based_options_destroy(db->dev_table);
    if (db->cache)
        rocksdb_cache_destroy(db->cache);
    if (db->ro)
        rocksdb_readoptions_destroy(db->ro);
    if (db->wo_sync)
        rocksdb_writeoptions_destroy(db->wo_sync);
    if (db->wo_nosync)
        rocksdb_writeoptions_destroy(db->wo_nosync);
    free(db->path);
    memset(db, 0, sizeof *db);
}

sg_rc st_db_get(st_db_t *db, const rocksdb_readoptions_t *ro, st_cf_t cf, const void *key, size_t klen,
                char **val, size_t *vlen)
{
    char *err = NULL;
    *val = rocksdb_get_cf(db->db, ro ? ro : db->ro, db->cf[cf], key, klen, vlen, &err);
    if (err) {
        SG_ERROR("store", "db.read_failed", "reason=\"%s\"", err);
        rocksdb_free(err);
        return SG_E_IO;
    }
    return SG_OK;
}

sg_rc st_db_dev_multi_get(st_db_t *db, const char *const *ids, size_t n, bool sorted, const char *kinds, size_t per,
                          void (*each)(void *arg, size_t i, const char *const *v, const size_t *vl), void *arg)
{
    SG_ENSURE(per >= 1 && per <= ST_DB_KINDS_MAX, SG_E_INVALID);
    size_t nk = per * n;
    char *keys = malloc(nk * ST_KEY_MAX);
    const char **kp = calloc(nk, sizeof *kp);
    size_t *ks = calloc(nk, sizeof *ks);
    rocksdb_pinnableslice_t **vals = calloc(nk, sizeof *vals);
    char **errs = calloc(nk, sizeof *errs);
    sg_rc rc = keys && kp && ks && vals && errs ? SG_OK : SG_E_NOMEM;
    for (size_t i = 0; rc == SG_OK && i < nk; i++) {
        kp[i] = keys + i * ST_KEY_MAX;
        ks[i] = st_key_dev(keys + i * ST_KEY_MAX, ids[i / per], strlen(ids[i / per]), kinds[i % per]);
    }
    if (rc == SG_OK && n > 0)
        rocksdb_batched_multi_get_cf(db->db, db->ro, db->cf[ST_CF_DEV], nk, kp, ks, vals, errs, sorted);
    for (size_t i = 0; rc == SG_OK && i < nk; i++)
        if (errs[i]) {
            SG_ERROR("store", "db.read_failed", "reason=\"%s\"", errs[i]);
            rc = SG_E_IO;
        }
    for (size_t i = 0; rc == SG_OK && i < n; i++) {
        const char *v[ST_DB_KINDS_MAX] = {NULL};
        size_t vl[ST_DB_KINDS_MAX] = {0};
        for (size_t k = 0; k < per; k++)
            if (vals[per * i + k])
                v[k] = rocksdb_pinnableslice_value(vals[per * i + k], &vl[k]);
        each(arg, i, v, vl);
    }
    for (size_t i = 0; errs && vals && i < nk; i++) {
        free(errs[i]);
        if (vals[i])
            rocksdb_pinnableslice_destroy(vals[i]);
    }
    free(keys);
    free(kp);
    free(ks);
    free(vals);
    free(errs);
    return rc;
}

typedef struct {
    void (*each)(void *arg, size_t i, const char *const v[3], const size_t vl[3]);
    void *arg;
} dev_records_t;

/* M, R, S as read (key order) to registry, session, meta as st_db_dev_records gives them. */
static void dev_records_each(void *arg, size_t i, const char *const *v, const size_t *vl)
{
    const dev_records_t *d = arg;
    const char *r[3] = {v[1], v[2], v[0]};
    size_t rl[3] = {vl[1], vl[2], vl[0]};
    d->each(d->arg, i, r, rl);
}

sg_rc st_db_dev_records(st_db_t *db, const char *const *ids, size_t n, bool sorted,
                        void (*each)(void *arg, size_t i, const char *const v[3], const size_t vl[3]), void *arg)
{
    /* A device's keys in key order are {id}\0M, R, S (st_keys.h), so sorted ids give sorted keys. */
    static const char kinds[3] = {ST_K_META, ST_K_REGISTRY, ST_K_SESSION};
    dev_records_t d = {each, arg};
    return st_db_dev_multi_get(db, ids, n, sorted, kinds, 3, dev_records_each, &d);
}

sg_rc st_db_write(st_db_t *db, rocksdb_writebatch_t *b, bool sync)
{
    char *err = NULL;
    rocksdb_write(db->db, sync ? db->wo_sync : db->wo_nosync, b, &err);
    if (err) {
        SG_ERROR("store", "db.write_failed", "path=%s reason=\"%s\"", db->path, err);
        rocksdb_free(err);
        return SG_E_IO;
    }
    return SG_OK;
}

/* Past the last {id}\0{kind}{seq} key of a device (0 when none); with count and bytes, how many
 * and their values' size. */
static sg_rc dev_range_scan(st_db_t *db, const rocksdb_readoptions_t *ro, const char *id, size_t id_len, char kind,
                            uint64_t *next, uint32_t *count, uint64_t *bytes)
{
    char prefix[ST_KEY_MAX];
    size_t plen = st_key_dev(prefix, id, id_len, kind);
    char *err = NULL;
    *next = 0;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, ro ? ro : db->ro, db->cf[ST_CF_DEV]);
    for (rocksdb_iter_seek(it, prefix, plen); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl != plen + 8 || memcmp(k, prefix, plen) != 0)
            break;
        uint64_t seq = st_get_be64((const uint8_t *)k + plen);
        if (seq >= *next)
            *next = seq + 1;
        rocksdb_iter_value(it, &vl);
        if (count)
            (*count)++;
        if (bytes)
            *bytes += vl;
    }
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err) {
        SG_ERROR("store", "db.read_failed", "path=%s reason=\"%s\"", db->path, err);
        rocksdb_free(err);
        return SG_E_IO;
    }
    return SG_OK;
}

sg_rc st_db_queue_rebuild(st_db_t *db, const rocksdb_readoptions_t *ro, const char *id, size_t id_len,
                          uint64_t *next_seq, uint32_t *count, uint64_t *bytes)
{
    uint64_t next_q, next_d;
    *count = 0;
    *bytes = 0;
    SG_GUARD(dev_range_scan(db, ro, id, id_len, ST_K_QUEUE, &next_q, count, bytes));
    SG_GUARD(dev_range_scan(db, ro, id, id_len, ST_K_DEAD, &next_d, NULL, NULL));
    *next_seq = next_q > next_d ? next_q : next_d;
    return SG_OK;
}

uint64_t st_db_next_seq(st_db_t *db, st_cf_t cf)
{
    uint64_t next = 0;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[cf]);
    rocksdb_iter_seek_to_last(it);
    if (rocksdb_iter_valid(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen == 8)
            next = st_get_be64((const uint8_t *)k) + 1;
    }
    rocksdb_iter_destroy(it);
    return next;
}

static uint64_t prop_sum(st_db_t *db, const char *name)
{
    uint64_t sum = 0, v;
    for (int i = 0; i < ST_CF_COUNT; i++)
        if (rocksdb_property_int_cf(db->db, db->cf[i], name, &v) == 0)
            sum += v;
    return sum;
}

static uint64_t prop(st_db_t *db, const char *name)
{
    uint64_t v = 0;
    return rocksdb_property_int(db->db, name, &v) == 0 ? v : 0;
}

/* "NAME COUNT : n" (tickers) or "NAME P50 : a P95 : b P99 : c P100 : d COUNT : n SUM : s"
 * (histograms) in RocksDB's statistics text; field is "COUNT", "SUM", "P99". */
static double stat_field(const char *text, const char *name, const char *field)
{
    size_t n = strlen(name);
    for (const char *p = text; (p = strstr(p, name)) != NULL; p += n) {
        if ((p != text && p[-1] != '\n') || p[n] != ' ')
            continue;
        const char *eol = strchr(p, '\n');
        char key[16];
        snprintf(key, sizeof key, " %s : ", field);
        const char *f = strstr(p, key);
        if (f && (!eol || f < eol))
            return strtod(f + strlen(key), NULL);
        return 0;
    }
    return 0;
}

void st_db_stats(st_db_t *db, st_db_stats_t *o)
{
    memset(o, 0, sizeof *o);
    o->memtable_bytes = prop_sum(db, "rocksdb.cur-size-all-mem-tables");
    o->table_bytes = prop_sum(db, "rocksdb.live-sst-files-size");
    o->pending_compaction_bytes = prop_sum(db, "rocksdb.estimate-pending-compaction-bytes");
    o->running_compactions = prop(db, "rocksdb.num-running-compactions");
    o->delayed_write_rate = prop(db, "rocksdb.actual-delayed-write-rate");
    o->write_stopped = prop(db, "rocksdb.is-write-stopped");
    o->block_cache_bytes = rocksdb_cache_get_usage(db->cache);
    o->block_cache_capacity = rocksdb_cache_get_capacity(db->cache);
    o->block_cache_memtable_bytes = st_db_budget_charged(db->opts);
    o->memtable_capacity = st_db_budget_memtable_limit(db->opts);
    char *text = rocksdb_options_statistics_get_string(db->opts);
    if (text) {
        o->block_cache_hits = (uint64_t)stat_field(text, "rocksdb.block.cache.hit", "COUNT");
        o->block_cache_misses = (uint64_t)stat_field(text, "rocksdb.block.cache.miss", "COUNT");
        o->stall_micros = (uint64_t)stat_field(text, "rocksdb.stall.micros", "COUNT");
        o->wal_syncs = (uint64_t)stat_field(text, "rocksdb.wal.file.sync.micros", "COUNT");
        o->wal_sync_micros = (uint64_t)stat_field(text, "rocksdb.wal.file.sync.micros", "SUM");
        o->wal_sync_p99_micros = stat_field(text, "rocksdb.wal.file.sync.micros", "P99");
        rocksdb_free(text);
    }
}
