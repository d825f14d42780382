/* st_wal_test.c — a shard's WAL file on a real RocksDB database in a directory of the build tree
 * (the file system the shards' data would be on, not a tmpfs), after 2,500 commits of 1 KB, each
 * fsynced (about 2.6 MB of log, so the write-ahead ran a few times, each just above live
 * records):
 *   - its size is preallocated (set, so an fsync does not also write a new size);
 *   - every block from the start to the last record has been written (records, or zeros written
 *     ahead of them), so an fdatasync of an append converts no "unwritten" extent, while the end
 *     of the preallocation is still only allocated (the write-ahead stays a MiB ahead, it does
 *     not write the whole file);
 *   - every record reads back after the shard died without closing the database (no trim of
 *     the file, zeros after the last record): zeros written over a record would lose it;
 *   - a database that does not fsync (store.sync = never) gets no write-ahead.
 * The extent checks need a preallocated file and FIEMAP; where the file system has neither
 * (tmpfs has no FIEMAP, some have no fallocate) the test says so and checks only the records. */
#include <dirent.h>
#include <stdbool.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "sg_test.h"
#include "st_db.h"
#include "st_keys.h"

#define MIB (1024 * 1024)
#define RECORD 1000
#define RECORDS 2500   /* about 2.6 MB of log: the write-ahead (a MiB at a time) runs a few times */
#define FIRST 10
#define EXTENTS 64

static const st_db_opts_t OPTS = {.sync = true, .write_buffer = 8 * MIB, .memory = 32 * MIB};

/* The path of the directory's one WAL file (NNNNNN.log) into out. */
static void wal_path(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int found = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n > 4 && strcmp(e->d_name + n - 4, ".log") == 0) {
            snprintf(out, cap, "%s/%s", dir, e->d_name);
            found++;
        }
    }
    if (d)
        closedir(d);
    CHECK(found == 1);
}

static void put_records(st_db_t *db, uint64_t from, uint64_t n)
{
    char value[RECORD];
    for (uint64_t off = from; off < from + n; off++) {
        rocksdb_writebatch_t *b = rocksdb_writebatch_create();
        uint8_t key[8];
        st_be64(key, off);
        memset(value, 'a' + (int)(off % 26), sizeof value);
        rocksdb_writebatch_put_cf(b, db->cf[ST_CF_TELE], (const char *)key, sizeof key, value, sizeof value);
        CHECK_RC(st_db_write(db, b, true), SG_OK);   /* one fsynced commit each, as at one device */
        rocksdb_writebatch_destroy(b);
    }
}

/* Where the last non-zero byte of the file ends: the end of its last record. */
static uint64_t data_end(const char *path)
{
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    uint64_t end = 0, at = 0;
    char buf[65536];
    for (size_t n; f && (n = fread(buf, 1, sizeof buf, f)) > 0; at += n)
        for (size_t i = 0; i < n; i++)
            if (buf[i])
                end = at + i + 1;
    if (f)
        fclose(f);
    return end;
}

/* From FIEMAP: *written, how far the written extents reach without a gap from the start; and
 * *unwritten, whether any extent is flagged unwritten. false: FIEMAP not supported here. */
static bool extents(const char *path, uint64_t *written, bool *unwritten)
{
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    struct fiemap *fm = calloc(1, sizeof *fm + EXTENTS * sizeof(struct fiemap_extent));
    CHECK(fm != NULL);
    if (fd < 0 || !fm) {
        free(fm);
        if (fd >= 0)
            close(fd);
        return false;
    }
    fm->fm_start = 0;
    fm->fm_length = FIEMAP_MAX_OFFSET;
    fm->fm_extent_count = EXTENTS;
    bool ok = ioctl(fd, FS_IOC_FIEMAP, fm) == 0;
    *written = 0;
    *unwritten = false;
    for (uint32_t i = 0; ok && i < fm->fm_mapped_extents; i++) {
        const struct fiemap_extent *x = &fm->fm_extents[i];
        bool u = (x->fe_flags & FIEMAP_EXTENT_UNWRITTEN) != 0;
        printf("  extent %u: %llu +%llu%s\n", i, (unsigned long long)x->fe_logical, (unsigned long long)x->fe_length,
               u ? " unwritten" : "");
        *unwritten |= u;
        if (x->fe_logical == *written && !u)
            *written = x->fe_logical + x->fe_length;
    }
    free(fm);
    close(fd);
    return ok;
}

/* Records [0, n) all there, each with its own value. */
static void check_records(st_db_t *db, uint64_t n)
{
    uint64_t found = 0;
    for (uint64_t off = 0; off < n; off++) {
        uint8_t key[8];
        st_be64(key, off);
        size_t len = 0;
        char *err = NULL;
        char *v = rocksdb_get_cf(db->db, db->ro, db->cf[ST_CF_TELE], (const char *)key, sizeof key, &len, &err);
        if (v && !err && len == RECORD && v[0] == 'a' + (int)(off % 26) && v[RECORD - 1] == v[0])
            found++;
        rocksdb_free(v);
        rocksdb_free(err);
    }
    printf("records read back: %llu of %llu\n", (unsigned long long)found, (unsigned long long)n);
    CHECK(found == n);
}

int main(void)
{
    char dir[] = "st-wal-XXXXXX";   /* in the build tree: the disk, as the shards' data would be */
    CHECK(mkdtemp(dir) != NULL);
    char wal[512];

    /* A shard that writes, then dies (the child exits without closing the database). */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        st_db_t db;
        if (st_db_open(&db, dir, &OPTS) != SG_OK)
            _exit(2);
        /* After the first commits the blocks are written a MiB past them (an fsync of the
         * records alone would have written only their own few KB). */
        put_records(&db, 0, FIRST);
        wal_path(dir, wal, sizeof wal);
        struct stat st;
        CHECK(stat(wal, &st) == 0);
        uint64_t end = data_end(wal), written = 0;
        bool unwritten = false;
        bool checkable = st.st_size >= 8 * MIB && extents(wal, &written, &unwritten);
        printf("after %d commits: records up to %llu, written from the start %llu\n", FIRST,
               (unsigned long long)end, (unsigned long long)written);
        if (checkable)
            CHECK(end < 64 * 1024 && written >= MIB);   /* the first commit wrote a MiB ahead */
        put_records(&db, FIRST, RECORDS - FIRST);
        CHECK(stat(wal, &st) == 0);
        end = data_end(wal);
        printf("WAL %s: %lld bytes, records up to %llu, after %d commits\n", wal, (long long)st.st_size,
               (unsigned long long)end, RECORDS);
        CHECK(end > 2 * MIB);   /* the write-ahead ran more than once */
        if (st.st_size < 8 * MIB) {
            printf("not preallocated on this file system (no fallocate): the extents are not checked\n");
        } else if (!extents(wal, &written, &unwritten)) {
            printf("FIEMAP is not supported on this file system: the extents are not checked\n");
        } else {
            printf("written from the start: %llu bytes\n", (unsigned long long)written);
            CHECK(written >= end);   /* every block up to the last record: no fsync converts one */
            if (unwritten)
                CHECK(written + MIB < (uint64_t)st.st_size);   /* ...but not the whole preallocation */
            else
                printf("this file system flags no extent unwritten: how far ahead is not checked\n");
        }
        fflush(stdout);
        _exit(sg_test_failures ? 1 : 0);   /* no st_db_close: the file is left as a crash leaves it */
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* Open again: every record back, and writing goes on in a new WAL file. */
    st_db_t db;
    CHECK_RC(st_db_open(&db, dir, &OPTS), SG_OK);
    check_records(&db, RECORDS);
    put_records(&db, RECORDS, 10);
    check_records(&db, RECORDS + 10);
    st_db_close(&db);

    /* A database that does not fsync its commits (store.sync = never) gets no write-ahead: its
     * WAL's blocks past the records stay only allocated, and no fsync is spent on zeros. */
    char dir2[] = "st-wal-nosync-XXXXXX";
    CHECK(mkdtemp(dir2) != NULL);
    st_db_opts_t nosync = OPTS;
    nosync.sync = false;
    CHECK_RC(st_db_open(&db, dir2, &nosync), SG_OK);
    put_records(&db, 0, FIRST);
    wal_path(dir2, wal, sizeof wal);
    struct stat st;
    CHECK(stat(wal, &st) == 0);
    uint64_t written = 0;
    bool unwritten = false;
    if (st.st_size >= 8 * MIB && extents(wal, &written, &unwritten)) {
        printf("store.sync = never, after %d commits: written from the start %llu\n", FIRST,
               (unsigned long long)written);
        CHECK(written < MIB);
    }
    st_db_close(&db);

    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s %s", dir, dir2);
    CHECK(system(cmd) == 0);
    TEST_DONE();
}
