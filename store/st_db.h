/* st_db.h — one shard's RocksDB database: opening it with its column families (see st_keys.h)
 * and the few typed helpers the writer and readers share. Only store threads call into here;
 * no network event loop ever does. */
#ifndef ST_DB_H
#define ST_DB_H

#include <rocksdb/c.h>
#include <stdbool.h>
#include <stdint.h>
#include "sg_result.h"

typedef enum { ST_CF_DEFAULT = 0, ST_CF_DEV, ST_CF_TELE, ST_CF_EXP, ST_CF_FB, ST_CF_DLX, ST_CF_COUNT } st_cf_t;

typedef struct {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_column_family_handle_t *cf[ST_CF_COUNT];
    rocksdb_options_t *cf_opts[ST_CF_COUNT];
    rocksdb_readoptions_t *ro;
    rocksdb_writeoptions_t *wo_sync;     /* per store.sync */
    rocksdb_writeoptions_t *wo_nosync;   /* for bookkeeping that needs no fsync */
    rocksdb_block_based_table_options_t *table;
    rocksdb_block_based_table_options_t *dev_table;   /* "dev" only: with bloom filters */
    rocksdb_cache_t *cache;
    char *path;
    bool dlx_created;   /* the database existed without the dead-letter index ("dlx") */
} st_db_t;

typedef struct {
    bool sync;             /* fsync every acknowledged batch */
    const char *log_dir;   /* RocksDB's own LOG files (NULL or "": the data directory); bounded to
                              4 files of 4 MiB so they never grow onto a volume with none to spare */
    int64_t write_buffer;  /* bytes of a column family's memtable before it becomes a table file;
                              the WAL preallocates 1.1 times this (0: RocksDB's 64 MiB) */
    int64_t memory;        /* RocksDB's memory budget (0: 512 MiB): the block cache's capacity, with
                              the memtables of every column family charged to it; they are
                              flushed at half of it together, blocks have the rest */
} st_db_opts_t;

/* RocksDB's own figures, for /metrics. */
typedef struct {
    uint64_t memtable_bytes;              /* every column family's memtables */
    uint64_t memtable_capacity;           /* memtable bytes at which flushes start (half the budget) */
    uint64_t block_cache_bytes, block_cache_capacity;   /* usage counts the memtables' charge */
    uint64_t block_cache_memtable_bytes;  /* of block_cache_bytes, held for memtables */
    uint64_t block_cache_hits, block_cache_misses;
    uint64_t table_bytes;                 /* live table files */
    uint64_t pending_compaction_bytes;    /* compaction debt */
    uint64_t running_compactions;
    uint64_t stall_micros;                /* writes held back (slowed or stopped), in all */
    uint64_t delayed_write_rate;          /* bytes/s while writes are slowed, 0 when not */
    uint64_t write_stopped;               /* 1 while writes are stopped */
    uint64_t wal_syncs, wal_sync_micros;  /* fsyncs of the WAL: count and time in all */
    double wal_sync_p99_micros;
} st_db_stats_t;

void st_db_stats(st_db_t *db, st_db_stats_t *out);

/* Open (creating if missing) the database at path. */
SG_WUR sg_rc st_db_open(st_db_t *db, const char *path, const st_db_opts_t *o);
void st_db_close(st_db_t *db);

/* Point read. *val is malloc'd (free with rocksdb_free) or NULL when absent. */
SG_WUR sg_rc st_db_get(st_db_t *db, const rocksdb_readoptions_t *ro, st_cf_t cf, const void *key,
                       size_t klen, char **val, size_t *vlen);

/* Records of kinds kinds[0..per-1] (in key order, at most ST_DB_KINDS_MAX) of each of n devices
 * with one batched MultiGet: each(arg, i, v, vl) for device ids[i] with v[k] the record of
 * kinds[k], NULL where absent (the views last until each returns). sorted: ids are in ascending
 * order (faster). SG_E_IO on a read error (each not called then). */
#define ST_DB_KINDS_MAX 8
SG_WUR sg_rc st_db_dev_multi_get(st_db_t *db, const char *const *ids, size_t n, bool sorted, const char *kinds,
                                 size_t per, void (*each)(void *arg, size_t i, const char *const *v, const size_t *vl),
                                 void *arg);
/* The three records of each of n devices (registry entry, session, queue counters; see
 * st_keys.h) with one batched MultiGet: each(arg, i, v, vl) for device ids[i] with v[k] NULL
 * where a record is absent (k: 0 registry, 1 session, 2 meta; the views last until each
 * returns). sorted: ids are in ascending order (faster). SG_E_IO on a read error (each not
 * called then). */
SG_WUR sg_rc st_db_dev_records(st_db_t *db, const char *const *ids, size_t n, bool sorted,
                               void (*each)(void *arg, size_t i, const char *const v[3], const size_t vl[3]), void *arg);

/* Write a batch; sync selects wo_sync or wo_nosync. A failed write is fatal for a shard (its
 * memory no longer matches the disk): the caller logs and exits. */
SG_WUR sg_rc st_db_write(st_db_t *db, rocksdb_writebatch_t *b, bool sync);

/* A device's queue counters rebuilt from its records, for counters that do not decode (a bad
 * disk, say): zeros would give the next command the sequence number of one still queued, or of a
 * dead letter, and overwrite it. (An expiry index entry left behind by a record that is gone as
 * well is not looked at: a new message could take its number and expire at its time.) *count and *bytes from the queued messages (bytes as an enqueue
 * counts them: the stored record), *next_seq past the highest sequence number queued or
 * dead-lettered (a dead letter keeps its message's). ro: NULL for the database's own. SG_E_IO on
 * a read error. */
SG_WUR sg_rc st_db_queue_rebuild(st_db_t *db, const rocksdb_readoptions_t *ro, const char *id, size_t id_len,
                                 uint64_t *next_seq, uint32_t *count, uint64_t *bytes);

/* Largest key in a column family whose keys are be64 numbers, +1 (0 when empty). */
uint64_t st_db_next_seq(st_db_t *db, st_cf_t cf);

#endif
