/* st_damage.c — fault injection for tests: overwrites one queued cloud-to-device message of a
 * device in a stopped shard's database with bytes no record decoder accepts, as a bad disk
 * would (same length, so the device's byte count still matches). Not part of sacgate; the
 * integration test test_damaged.py runs it between stopping and starting the gateway.
 *
 *   st_damage SHARD_DIR DEVICE_ID N          damage the device's Nth queued message (1: the oldest)
 *   st_damage SHARD_DIR DEVICE_ID expiry     count the device's entries in the expiry index
 *
 * Prints "seq=S bytes=B" of the damaged record, or "expiry=N". Exits 0 when done, 3 when the
 * shard holds fewer than N queued messages of the device (try the next shard), 1 on an error,
 * 2 on bad usage. */
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

int main(int argc, char **argv)
{
    bool expiry = argc == 4 && strcmp(argv[3], "expiry") == 0;
    long nth = argc == 4 && !expiry ? strtol(argv[3], NULL, 10) : 0;
    size_t id_len = argc == 4 ? strlen(argv[2]) : 0;
    if ((nth < 1 && !expiry) || id_len == 0 || id_len > SG_DEVICE_ID_MAX) {
        fprintf(stderr, "usage: st_damage SHARD_DIR DEVICE_ID N|expiry (N >= 1: the Nth queued message, oldest "
                        "first; expiry: count the device's expiry index entries)\n");
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
    if (expiry) {
        printf("expiry=%zu\n", count_expiry(&db, argv[2]));
        st_db_close(&db);
        return EXIT_SUCCESS;
    }
    char key[ST_KEY_MAX];
    size_t klen = 0, vlen = 0;
    int status = EXIT_SUCCESS;
    sg_rc rc = find_nth(&db, argv[2], nth, key, &klen, &vlen);
    if (rc == SG_E_NOT_FOUND) {
        fprintf(stderr, "st_damage: %s holds fewer than %ld queued messages of %s\n", argv[1], nth, argv[2]);
        status = EXIT_NOT_HERE;
    } else {
        /* 0xff everywhere: the version byte alone makes every record decoder refuse it */
        char *junk = malloc(vlen ? vlen : 1);
        rocksdb_writebatch_t *b = rocksdb_writebatch_create();
        if (junk) {
            memset(junk, 0xff, vlen);
            rocksdb_writebatch_put_cf(b, db.cf[ST_CF_DEV], key, klen, junk, vlen);
        }
        if (!junk || st_db_write(&db, b, true) != SG_OK) {
            fprintf(stderr, "st_damage: could not write %s\n", argv[1]);
            status = EXIT_FAILURE;
        } else {
            printf("seq=%llu bytes=%zu\n", (unsigned long long)st_get_be64((const uint8_t *)key + klen - 8), vlen);
        }
        rocksdb_writebatch_destroy(b);
        free(junk);
    }
    st_db_close(&db);
    return status;
}
