/* st_db_test.c — one memory budget per shard, on a real RocksDB database in a temporary
 * directory: the block cache's capacity is the whole of store.memory, and memtables filled by a
 * write burst (nothing read, nothing flushed) show in the cache's usage, since they are charged to
 * it, while the usage stays within the capacity. Without the charge the usage stays near 0.
 * Also st_db_budget_attach on its own: the arguments it refuses and the limit it sets. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sg_test.h"
#include "st_db.h"
#include "st_db_budget.h"
#include "st_keys.h"

#define MIB (1024 * 1024)
#define BUDGET (32 * MIB)
#define RECORD 4096
#define RECORDS 1536   /* 6 MiB of values: below one column family's memtable (8 MiB) and below
                          the memtables' share of the budget (16 MiB), so nothing is flushed */

static void print_stats(const char *when, const st_db_stats_t *s)
{
    printf("%s: memtables %llu (flushed at %llu), cache %llu of %llu (%llu charged for memtables)\n", when,
           (unsigned long long)s->memtable_bytes, (unsigned long long)s->memtable_capacity,
           (unsigned long long)s->block_cache_bytes, (unsigned long long)s->block_cache_capacity,
           (unsigned long long)s->block_cache_memtable_bytes);
}

/* The attach call alone: what it refuses, what it sets. */
static void attach_alone(void)
{
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_cache_t *c = rocksdb_cache_create_lru(4 * MIB);
    CHECK_RC(st_db_budget_attach(o, c, 0), SG_E_INVALID);
    CHECK_RC(st_db_budget_attach(o, NULL, MIB), SG_E_INVALID);
    CHECK(st_db_budget_memtable_limit(o) == 0 && st_db_budget_charged(o) == 0);
    CHECK_RC(st_db_budget_attach(o, c, 2 * MIB), SG_OK);
    CHECK(st_db_budget_memtable_limit(o) == 2 * MIB);
    CHECK(rocksdb_options_get_db_write_buffer_size(o) == 2 * MIB);   /* kept the same figure */
    CHECK(st_db_budget_charged(o) == 0);   /* no memtable yet */
    rocksdb_cache_destroy(c);   /* the options still share it */
    rocksdb_options_destroy(o);
}

int main(void)
{
    attach_alone();
    char dir[] = "/tmp/st-db-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    st_db_t db;
    CHECK_RC(st_db_open(&db, dir, &(st_db_opts_t){.sync = false, .write_buffer = 8 * MIB, .memory = BUDGET}), SG_OK);

    st_db_stats_t before, after;
    st_db_stats(&db, &before);
    print_stats("opened", &before);
    CHECK(before.block_cache_capacity == BUDGET);
    CHECK(before.memtable_capacity == BUDGET / 2);

    char *value = malloc(RECORD);
    CHECK(value != NULL);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    for (uint64_t off = 0; value && off < RECORDS; off++) {
        uint8_t key[8];
        st_be64(key, off);
        memset(value, 'a' + (int)(off % 26), RECORD);   /* no matter: memtables are not compressed */
        rocksdb_writebatch_put_cf(b, db.cf[ST_CF_TELE], (const char *)key, sizeof key, value, RECORD);
        if (off % 64 == 63) {
            CHECK_RC(st_db_write(&db, b, false), SG_OK);
            rocksdb_writebatch_clear(b);
        }
    }
    rocksdb_writebatch_destroy(b);
    free(value);

    st_db_stats(&db, &after);
    print_stats("after the burst", &after);
    uint64_t grew = after.memtable_bytes - before.memtable_bytes;
    CHECK(after.memtable_bytes >= before.memtable_bytes && grew >= (uint64_t)RECORDS * RECORD * 9 / 10);
    CHECK(after.table_bytes == 0);   /* still all in memtables */
    CHECK(after.block_cache_misses == 0 && after.block_cache_hits == 0);   /* nothing read */
    /* The cache's usage rose by (at least most of) the memtables' growth: the charge is rounded
     * up to whole dummy entries, and nothing else went into the cache. */
    CHECK(after.block_cache_bytes >= before.block_cache_bytes + grew * 9 / 10);
    CHECK(after.block_cache_memtable_bytes >= after.memtable_bytes * 9 / 10);
    CHECK(after.block_cache_memtable_bytes <= after.block_cache_bytes);
    CHECK(after.block_cache_bytes <= after.block_cache_capacity);

    st_db_close(&db);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    TEST_DONE();
}
