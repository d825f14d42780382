/* st_retain_test.c — the retention thread on a real RocksDB database in a temporary directory:
 * telemetry older than its retention goes (a damaged record among the old ones with them, one
 * among the new ones keeping its place), the oldest offset is published and stored, table files
 * of the dropped range are deleted without losing the first retained record, and a database from
 * before the dead-letter index gets its old dead letters indexed and aged out. */
#include <czmq.h>
#include <stdlib.h>
#include <string.h>
#include "sg_test.h"
#include "sg_time.h"
#include "st_internal.h"
#include "st_keys.h"
#include "st_record.h"

#define RECORDS 200
#define OLD 120          /* offsets 0..OLD-1 are a minute old, the rest new */
#define DAMAGED_OLD 7
#define DAMAGED_NEW 150

static void put_tele(st_db_t *db, uint64_t off, int64_t at, bool damaged)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 4096);
    uint8_t key[8];
    st_be64(key, off);
    if (damaged) {
        CHECK_RC(sg_wbuf_bytes(&w, "\x01garbage", 8), SG_OK);
    } else {
        CHECK_RC(st_tele_put_head(&w, at, "dev-1", 5, SG_CRED_SAS, 0), SG_OK);
        char payload[1024];
        memset(payload, 'a' + (int)(off % 26), sizeof payload);
        CHECK_RC(sg_wbuf_u32(&w, sizeof payload), SG_OK);
        CHECK_RC(sg_wbuf_bytes(&w, payload, sizeof payload), SG_OK);
    }
    char *err = NULL;
    rocksdb_put_cf(db->db, db->wo_nosync, db->cf[ST_CF_TELE], (const char *)key, 8, (const char *)w.data, w.len,
                   &err);
    CHECK(err == NULL);
    sg_wbuf_fini(&w);
}

static bool tele_exists(st_db_t *db, uint64_t off)
{
    uint8_t key[8];
    st_be64(key, off);
    char *v = NULL;
    size_t n;
    CHECK_RC(st_db_get(db, NULL, ST_CF_TELE, key, 8, &v, &n), SG_OK);
    rocksdb_free(v);
    return v != NULL;
}

static void put_dead(st_db_t *db, const char *id, uint64_t seq, int64_t at)
{
    sg_wbuf_t msg, rec;
    sg_wbuf_init(&msg, 1024);
    sg_wbuf_init(&rec, 1024);
    st_msg_t m = {.message_id = "m1", .message_id_len = 2, .enqueued_ms = at - 1000, .expires_ms = at};
    CHECK_RC(st_msg_put_head(&msg, &m, 0), SG_OK);
    CHECK_RC(st_msg_put_tail(&msg, "cmd", 3), SG_OK);
    CHECK_RC(st_dead_put(&rec, ST_OUT_EXPIRED, at, msg.data, msg.len), SG_OK);
    char key[ST_KEY_MAX], *err = NULL;
    size_t klen = st_key_dev_seq(key, id, strlen(id), ST_K_DEAD, seq);
    rocksdb_put_cf(db->db, db->wo_nosync, db->cf[ST_CF_DEV], key, klen, (const char *)rec.data, rec.len, &err);
    CHECK(err == NULL);
    sg_wbuf_fini(&msg);
    sg_wbuf_fini(&rec);
}

static bool dead_exists(st_db_t *db, const char *id, uint64_t seq)
{
    char key[ST_KEY_MAX], *v = NULL;
    size_t n, klen = st_key_dev_seq(key, id, strlen(id), ST_K_DEAD, seq);
    CHECK_RC(st_db_get(db, NULL, ST_CF_DEV, key, klen, &v, &n), SG_OK);
    rocksdb_free(v);
    return v != NULL;
}

/* A database as shards made it before the dead-letter index: every column family but "dlx". */
static void make_old_database(const char *path, int64_t now)
{
    static const char *const names[] = {"default", "dev", "tele", "exp", "fb"};
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_create_missing_column_families(o, 1);
    const rocksdb_options_t *cfo[5] = {o, o, o, o, o};
    rocksdb_column_family_handle_t *cf[5];
    char *err = NULL;
    rocksdb_t *db = rocksdb_open_column_families(o, path, 5, names, cfo, cf, &err);
    CHECK(db != NULL && err == NULL);
    st_db_t view = {.db = db};
    view.cf[ST_CF_DEV] = cf[1];
    view.wo_nosync = rocksdb_writeoptions_create();
    put_dead(&view, "old-dev", 3, now - 60000);   /* a minute old */
    put_dead(&view, "old-dev", 4, now);           /* just now */
    rocksdb_writeoptions_destroy(view.wo_nosync);
    for (int i = 0; i < 5; i++)
        rocksdb_column_family_handle_destroy(cf[i]);
    rocksdb_close(db);
    rocksdb_options_destroy(o);
}

static bool wait_for(bool (*done)(st_ctx_t *), st_ctx_t *c)
{
    for (int i = 0; i < 200; i++) {
        if (done(c))
            return true;
        zclock_sleep(25);
    }
    return false;
}

static bool tele_dropped(st_ctx_t *c) { return atomic_load(&c->stat_tele_oldest) > 0; }
static bool old_dead_dropped(st_ctx_t *c) { return !dead_exists(&c->db, "old-dev", 3); }

int main(void)
{
    char dir[] = "/tmp/st-retain-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    int64_t now = sg_now_ms();
    make_old_database(dir, now);

    st_ctx_t *c = calloc(1, sizeof *c);
    snprintf(c->name, sizeof c->name, "test-0");
    CHECK_RC(st_db_open(&c->db, dir, &(st_db_opts_t){.sync = false, .write_buffer = 1 << 20}), SG_OK);
    CHECK(c->db.dlx_created);
    CHECK_RC(st_retain_load(c), SG_OK);
    CHECK(atomic_load(&c->stat_tele_oldest) == 0 && atomic_load(&c->stat_fb_oldest) == 0);
    /* Two table files: offsets 0..OLD (the first new record last in it), then the rest. The cut
     * falls on the first file's last key, which a deletion of files must leave alone. */
    for (uint64_t off = 0; off < RECORDS; off++) {
        put_tele(&c->db, off, off < OLD ? now - 60000 : now, off == DAMAGED_OLD || off == DAMAGED_NEW);
        if (off == OLD || off == RECORDS - 1)
            rocksdb_compact_range_cf(c->db.db, c->db.cf[ST_CF_TELE], NULL, 0, NULL, 0);
    }
    atomic_store(&c->stat_tele_next, RECORDS);
    c->tele_retention_ms = 30000;
    c->fb_retention_ms = 30000;
    c->dead_retention_ms = 30000;
    c->retention_interval_ms = 50;
    atomic_store(&c->writer_ready, true);

    zactor_t *retainer = zactor_new(st_retain_actor, c);
    CHECK(retainer != NULL);
    CHECK(wait_for(tele_dropped, c));
    CHECK(atomic_load(&c->stat_tele_oldest) == OLD);
    CHECK(atomic_load(&c->stat_retired_tele) == OLD);
    CHECK(!tele_exists(&c->db, 0) && !tele_exists(&c->db, DAMAGED_OLD) && !tele_exists(&c->db, OLD - 1));
    CHECK(tele_exists(&c->db, OLD));   /* the first retained record survives the file deletion */
    CHECK(tele_exists(&c->db, DAMAGED_NEW) && tele_exists(&c->db, RECORDS - 1));
    /* the old database's dead letters were indexed and the old one aged out */
    CHECK(wait_for(old_dead_dropped, c));
    CHECK(dead_exists(&c->db, "old-dev", 4));
    CHECK(atomic_load(&c->stat_retired_dead) == 1);
    zactor_destroy(&retainer);

    /* stored: a restart starts from it */
    atomic_store(&c->stat_tele_oldest, 0);
    CHECK_RC(st_retain_load(c), SG_OK);
    CHECK(atomic_load(&c->stat_tele_oldest) == OLD);
    st_db_close(&c->db);
    free(c);
    zsys_shutdown();
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    TEST_DONE();
}
