/* st_db_budget.h — one memory budget per shard: the memtables of every column family are charged
 * to the block cache (RocksDB's WriteBufferManager with a cache), so the cache's capacity bounds
 * both. RocksDB's C API has no setter for this; st_db_budget.cc reaches the C++ options behind
 * the C handles. The only C++ in the project; st_db.c calls it. It also holds the other option
 * the C API cannot set: WAL files preallocated with their size (st_db_wal_presize). */
#ifndef ST_DB_BUDGET_H
#define ST_DB_BUDGET_H

#include <rocksdb/c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sg_result.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Give opts a write buffer manager that flushes once the memtables of every column family
 * together reach memtable_bytes and charges their memory to cache (dummy entries, 256 KiB each,
 * pinned while the memtables hold the memory), so cache's usage counts memtables and blocks
 * alike. Call before the database is opened and before opts is copied into column family
 * options. The options share the cache (it stays alive after rocksdb_cache_destroy until the
 * options and the database are gone). SG_E_INVALID when a handle does not look like the
 * installed RocksDB's (a library other than the one the build checked). */
SG_WUR sg_rc st_db_budget_attach(rocksdb_options_t *opts, rocksdb_cache_t *cache, size_t memtable_bytes);

/* Bytes of the block cache held for memtables by opts' write buffer manager (0 without one). */
uint64_t st_db_budget_charged(const rocksdb_options_t *opts);

/* The memtable share st_db_budget_attach set (0 without one). */
uint64_t st_db_budget_memtable_limit(const rocksdb_options_t *opts);

/* Give opts a file system that preallocates WAL files with their size set, so an fsync after an
 * append need not also write the file's new size, and with write_ahead (a database that fsyncs
 * its commits) writes their blocks a MiB ahead of the appends, so an fsync need not convert them
 * either (see st_db_budget.cc). Before the database opens. */
SG_WUR sg_rc st_db_wal_presize(rocksdb_options_t *opts, bool write_ahead);

#ifdef __cplusplus
}
#endif

#endif
