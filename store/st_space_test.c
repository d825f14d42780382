/* st_space_test.c — the shard's room on its volume, on a real directory of the build machine's
 * disk: minimums far below and far above what is free there stand for a roomy and a full volume
 * (the full volume itself, with RocksDB on it, is tests/integration/test_disk_full.py's). */
#include "st_space.h"
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include "sg_test.h"

#define MIB (1024 * 1024)

static int64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

int main(void)
{
    char dir[] = "/tmp/st-space-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    struct statvfs v;
    CHECK(statvfs(dir, &v) == 0);
    int64_t free_now = (int64_t)v.f_bavail * (int64_t)v.f_frsize;
    if (free_now < 256 * MIB) {
        fprintf(stderr, "st_space_test: only %lld bytes free in /tmp, skipped\n", (long long)free_now);
        rmdir(dir);
        return 0;
    }
    int64_t beyond = free_now + ((int64_t)64 << 30);   /* more than the volume will ever have free */
    st_space_t s;

    /* a roomy volume: the reserve is taken, writes have room */
    CHECK_RC(st_space_init(&s, dir, 16 * MIB, 2 * MIB), SG_OK);
    CHECK(s.reserve_held && file_size(s.reserve_path) == 2 * MIB);
    CHECK(st_space_room(&s, 4096));
    CHECK(!s.full);
    CHECK(s.free > 0);

    /* a batch bigger than what is free above the minimum is refused */
    CHECK(!st_space_room(&s, s.free));
    CHECK(s.full);
    /* and once refusing, a small one needs the minimum plus the hysteresis back: here it is */
    CHECK(st_space_room(&s, 4096));
    CHECK(!s.full);

    /* a restart onto a volume below its minimum gives the reserve back before the database opens */
    CHECK_RC(st_space_init(&s, dir, beyond, 2 * MIB), SG_OK);
    CHECK(!s.reserve_held && file_size(s.reserve_path) == -1);
    CHECK(!st_space_room(&s, 1));
    CHECK(s.full);
    CHECK(!st_space_room(&s, 1));   /* stays full, looks every call */
    CHECK_RC(st_space_may_open(&s, true), SG_OK);   /* below the floor, not out of space */
    st_space_t empty = s;
    empty.free = 4096;              /* as a volume full to the last page would report */
    CHECK_RC(st_space_may_open(&empty, true), SG_E_IO);
    CHECK_RC(st_space_may_open(&empty, false), SG_OK);   /* LOG elsewhere: RocksDB fails cleanly */

    /* space comes back (here: the operator lowers the minimum): writes resume, the reserve returns */
    s.min_free = 16 * MIB;
    CHECK(st_space_room(&s, 4096));
    CHECK(!s.full);
    CHECK(s.reserve_held && file_size(s.reserve_path) == 2 * MIB);

    /* release after a failed write */
    st_space_release(&s);
    CHECK(!s.reserve_held && file_size(s.reserve_path) == -1);
    st_space_release(&s);   /* twice is harmless */

    /* a reserve no longer wanted (size 0) is removed at start */
    CHECK_RC(st_space_init(&s, dir, 16 * MIB, 2 * MIB), SG_OK);
    CHECK(file_size(s.reserve_path) == 2 * MIB);
    CHECK_RC(st_space_init(&s, dir, 16 * MIB, 0), SG_OK);
    CHECK(!s.reserve_held && file_size(s.reserve_path) == -1);
    CHECK(st_space_room(&s, 4096));
    CHECK(file_size(s.reserve_path) == -1);

    /* a directory too long for the bookkeeping is refused, not cut */
    char longdir[700];
    memset(longdir, 'a', sizeof longdir - 1);
    longdir[sizeof longdir - 1] = '\0';
    CHECK_RC(st_space_init(&s, longdir, 16 * MIB, 0), SG_E_INVALID);

    rmdir(dir);
    TEST_DONE();
}
