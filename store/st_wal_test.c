/* st_wal_test.c — a shard's WAL file on a real RocksDB database in a directory of the build tree
 * (the file system the shards' data would be on, not a tmpfs):
 *   - its size is preallocated (set, so an fsync does not also write a new size);
 *   - the first MiB past what it holds has been written (zeros), so an fdatasync of the next
 *     appends converts no "unwritten" extent, while the rest of the preallocation is still only
 *     allocated (the write-ahead stays a MiB ahead, not the whole file);
 *   - a shard that dies without closing the database (no trim of the file, zeros after the last
 *     record) opens again with every record it had acknowledged.
 * The extent checks read FIEMAP; on a file system without it (or without unwritten extents) they
 * say so and check only the rest. */
#include <dirent.h>
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
#define RECORDS 200   /* about 200 KB of log: well inside the first MiB */
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

/* Whether [0, end) of the file is all in written extents (no hole, none unwritten): 1 yes, 0 no,
 * -1 FIEMAP not supported here. *unwritten_after is set when some extent past end is unwritten. */
static int written_up_to(const char *path, uint64_t end, int *unwritten_after)
{
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    struct fiemap *fm = calloc(1, sizeof *fm + EXTENTS * sizeof(struct fiemap_extent));
    CHECK(fm != NULL);
    fm->fm_start = 0;
    fm->fm_length = FIEMAP_MAX_OFFSET;
    fm->fm_extent_count = EXTENTS;
    int r = fm && ioctl(fd, FS_IOC_FIEMAP, fm) == 0 ? 1 : -1;
    uint64_t covered = 0;   /* contiguous written bytes from 0 */
    *unwritten_after = 0;
    for (uint32_t i = 0; r == 1 && i < fm->fm_mapped_extents; i++) {
        const struct fiemap_extent *x = &fm->fm_extents[i];
        int unwritten = (x->fe_flags & FIEMAP_EXTENT_UNWRITTEN) != 0;
        printf("  extent %u: %llu +%llu%s\n", i, (unsigned long long)x->fe_logical, (unsigned long long)x->fe_length,
               unwritten ? " unwritten" : "");
        if (x->fe_logical + x->fe_length > end && unwritten)
            *unwritten_after = 1;
        if (x->fe_logical == covered && !unwritten)
            covered = x->fe_logical + x->fe_length;
    }
    if (r == 1 && covered < end)
        r = 0;
    free(fm);
    close(fd);
    return r;
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
        put_records(&db, 0, RECORDS);
        wal_path(dir, wal, sizeof wal);
        struct stat st;
        CHECK(stat(wal, &st) == 0);
        printf("WAL %s: %lld bytes (preallocated) after %d records\n", wal, (long long)st.st_size, RECORDS);
        CHECK(st.st_size >= 8 * MIB);   /* 1.1 times write_buffer, the size set */
        int unwritten_after = 0;
        int w = written_up_to(wal, MIB, &unwritten_after);
        if (w < 0) {
            printf("FIEMAP is not supported on this file system: the extents are not checked\n");
        } else {
            CHECK(w == 1);   /* the first MiB: records, then zeros written ahead */
            CHECK(unwritten_after);   /* the rest of the preallocation is not written in advance */
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

    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    TEST_DONE();
}
