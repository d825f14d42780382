/* st_damage.c — fault injection for tests: overwrites one queued cloud-to-device message of a
 * device in a stopped shard's database with bytes no record decoder accepts, as a bad disk
 * would (same length, so the device's byte count still matches). Not part of sacgate; the
 * integration test test_damaged.py runs it between stopping and starting the gateway.
 *
 *   st_damage SHARD_DIR DEVICE_ID N          damage the device's Nth queued message (1: the oldest)
 *   st_damage SHARD_DIR DEVICE_ID meta       damage the device's queue counters ({id}\0M)
 *   st_damage SHARD_DIR NAME notify          write an unfinished notification "n{NAME}" that is
 *                                            not one (no NUL between its tags and its record)
 *   st_damage SHARD_DIR DEVICE_ID expiry     count the device's entries in the expiry index
 *
 * Prints "seq=S bytes=B" of the damaged record, "bytes=B" for counters, "written" or "expiry=N".
 * Exits 0 when done, 3 when the shard holds fewer than N queued messages of the device, or no
 * counters of it (try the next shard), 1 on an error, 2 on bad usage. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sg_sas.h"
#include "st_db.h"
#include "st_keys.h"

enum { EXIT_NOT_HERE = 3, EXIT_USAGE = 2 };

/* The key and length of the device's nth queued record; SG_E_NOT_FOUND when it has fewer. */
static sg_rc find_nth(st_db_t *db, const char *id, long nth, char *key, size_t *klen, size_t *vlen)
{
    char prefix[ST_KEY_MAX];
    size_t plen = st_key_dev(prefix, id, strlen(id), ST_K_QUEUE);
    sg_rc rc = SG_E_NOT_FOUND;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_DEV]);
    long i = 0;
    for (rocksdb_iter_seek(it, prefix, plen); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl != plen + 8 || memcmp(k, prefix, plen) != 0)
            break;
        if (++i == nth) {
            memcpy(key, k, kl);
            *klen = kl;
            rocksdb_iter_value(it, vlen);
            rc = SG_OK;
            break;
        }
    }
    rocksdb_iter_destroy(it);
    return rc;
}

/* Entries of the expiry index ({expires}{id}\0{seq}) that name the device. */
static size_t count_expiry(st_db_t *db, const char *id)
{
    size_t id_len = strlen(id), n = 0;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_EXP]);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl == 17 + id_len && memcmp(k + 8, id, id_len) == 0 && k[8 + id_len] == 0)
            n++;
    }
    rocksdb_iter_destroy(it);
    return n;
}

/* 0xff everywhere: the version byte alone makes every record decoder refuse it. */
static int put_junk(st_db_t *db, st_cf_t cf, const char *key, size_t klen, size_t vlen)
{
    char *junk = malloc(vlen ? vlen : 1);
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    if (junk) {
        memset(junk, 0xff, vlen);
        rocksdb_writebatch_put_cf(b, db->cf[cf], key, klen, junk, vlen);
    }
    int status = junk && st_db_write(db, b, true) == SG_OK ? EXIT_SUCCESS : EXIT_FAILURE;
    if (status != EXIT_SUCCESS)
        fprintf(stderr, "st_damage: could not write the damaged record\n");
    rocksdb_writebatch_destroy(b);
    free(junk);
    return status;
}

static int damage_meta(st_db_t *db, const char *id)
{
    char key[ST_KEY_MAX], *v = NULL;
    size_t vl = 0, kl = st_key_dev(key, id, strlen(id), ST_K_META);
    if (st_db_get(db, NULL, ST_CF_DEV, key, kl, &v, &vl) != SG_OK) {
        fprintf(stderr, "st_damage: cannot read the counters of %s\n", id);
        return EXIT_FAILURE;
    }
    if (!v)
        return EXIT_NOT_HERE;
    rocksdb_free(v);
    int status = put_junk(db, ST_CF_DEV, key, kl, vl);
    if (status == EXIT_SUCCESS)
        printf("bytes=%zu\n", vl);
    return status;
}

static int write_bad_notification(st_db_t *db, const char *name)
{
    char key[1 + ST_NOTIFY_ID_MAX];
    size_t kl = st_key_notify(key, ST_NOTIFY_DEF_PREFIX[0], name, strlen(name));
    static const char v[] = "{\"fleet\":\"x\"} and no NUL before the record";
    rocksdb_writebatch_t *b = rocksdb_writebatch_create();
    rocksdb_writebatch_put_cf(b, db->cf[ST_CF_DEFAULT], key, kl, v, sizeof v - 1);
    int status = st_db_write(db, b, true) == SG_OK ? EXIT_SUCCESS : EXIT_FAILURE;
    rocksdb_writebatch_destroy(b);
    if (status == EXIT_SUCCESS)
        printf("written\n");
    return status;
}

int main(int argc, char **argv)
{
    const char *mode = argc == 4 ? argv[3] : "";
    bool expiry = strcmp(mode, "expiry") == 0, meta = strcmp(mode, "meta") == 0, notify = strcmp(mode, "notify") == 0;
    long nth = argc == 4 && !expiry && !meta && !notify ? strtol(argv[3], NULL, 10) : 0;
    size_t id_len = argc == 4 ? strlen(argv[2]) : 0;
    if ((nth < 1 && !expiry && !meta && !notify) || id_len == 0 || id_len > SG_DEVICE_ID_MAX ||
        (notify && id_len > ST_NOTIFY_ID_MAX)) {
        fprintf(stderr, "usage: st_damage SHARD_DIR DEVICE_ID N|meta|expiry, or st_damage SHARD_DIR NAME notify "
                        "(N >= 1: the Nth queued message, oldest first; meta: the queue counters; expiry: count "
                        "the device's expiry index entries; notify: a damaged unfinished notification)\n");
        return EXIT_USAGE;
    }
    /* Only an existing database: opening anything else would create one. */
    char current[4096];
    snprintf(current, sizeof current, "%s/CURRENT", argv[1]);
    if (access(current, R_OK) != 0) {
        fprintf(stderr, "st_damage: %s is not a shard's database (no CURRENT file)\n", argv[1]);
        return EXIT_FAILURE;
    }
    st_db_t db;
    if (st_db_open(&db, argv[1], &(st_db_opts_t){.sync = true}) != SG_OK) {
        fprintf(stderr, "st_damage: cannot open %s (is its shard still running?)\n", argv[1]);
        return EXIT_FAILURE;
    }
    if (expiry || meta || notify) {
        int status = EXIT_SUCCESS;
        if (expiry)
            printf("expiry=%zu\n", count_expiry(&db, argv[2]));
        else if (meta)
            status = damage_meta(&db, argv[2]);
        else
            status = write_bad_notification(&db, argv[2]);
        st_db_close(&db);
        return status;
    }
    char key[ST_KEY_MAX];
    size_t klen = 0, vlen = 0;
    int status = EXIT_SUCCESS;
    sg_rc rc = find_nth(&db, argv[2], nth, key, &klen, &vlen);
    if (rc == SG_E_NOT_FOUND) {
        fprintf(stderr, "st_damage: %s holds fewer than %ld queued messages of %s\n", argv[1], nth, argv[2]);
        status = EXIT_NOT_HERE;
    } else if ((status = put_junk(&db, ST_CF_DEV, key, klen, vlen)) == EXIT_SUCCESS) {
        printf("seq=%llu bytes=%zu\n", (unsigned long long)st_get_be64((const uint8_t *)key + klen - 8), vlen);
    }
    st_db_close(&db);
    return status;
}
