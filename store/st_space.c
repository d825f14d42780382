/* st_space.c — watching a shard's data volume and holding its reserve; see st_space.h. */
#include "st_space.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include "sg_log.h"
#include "sg_time.h"

#define LOOK_EVERY_MS 100
#define MIB (1024 * 1024)

static int64_t volume_free(const char *dir)
{
    struct statvfs v;
    if (statvfs(dir, &v) != 0)
        return -1;
    return (int64_t)v.f_bavail * (int64_t)v.f_frsize;
}

static void look(st_space_t *s)
{
    int64_t f = volume_free(s->dir);
    if (f >= 0)
        s->free = f;
    else if (s->looked_ms == 0)
        s->free = INT64_MAX / 4;   /* cannot tell (yet): assume room rather than refuse everything */
    s->looked_ms = sg_mono_ms();
}

static void release_because(st_space_t *s, const char *why)
{
    if (!s->reserve_held)
        return;
    if (unlink(s->reserve_path) != 0 && errno != ENOENT)
        SG_ERROR("store", "disk.reserve_release_failed", "path=%s reason=\"%s\"", s->reserve_path, strerror(errno));
    s->reserve_held = false;
    look(s);
    SG_WARN("store", "disk.reserve_released", "path=%s bytes=%lld free=%lld reason=\"%s\"", s->reserve_path,
            (long long)s->reserve_size, (long long)s->free, why);
}

void st_space_release(st_space_t *s)
{
    release_because(s, "a write failed for lack of space: the reserve goes to the database");
}

/* Preallocate the reserve; a volume without room for it keeps none for now. */
static void take_reserve(st_space_t *s)
{
    if (s->reserve_size <= 0 || s->reserve_held)
        return;
    int fd = open(s->reserve_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    int rc = fd < 0 ? errno : posix_fallocate(fd, 0, (off_t)s->reserve_size);
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        unlink(s->reserve_path);
        SG_WARN("store", "disk.reserve_unavailable", "path=%s bytes=%lld reason=\"%s\"", s->reserve_path,
                (long long)s->reserve_size, strerror(rc));
        look(s);
        return;
    }
    s->reserve_held = true;
    look(s);
}

sg_rc st_space_init(st_space_t *s, const char *dir, int64_t min_free, int64_t reserve_size)
{
    memset(s, 0, sizeof *s);
    SG_ENSURE(strlen(dir) < sizeof s->dir, SG_E_INVALID);
    snprintf(s->dir, sizeof s->dir, "%s", dir);
    snprintf(s->reserve_path, sizeof s->reserve_path, "%s/reserve", dir);
    s->min_free = min_free;
    s->reserve_size = reserve_size;
    look(s);
    struct stat st;
    bool exists = stat(s->reserve_path, &st) == 0;
    s->reserve_held = exists && st.st_size >= reserve_size && reserve_size > 0;
    if (exists && (reserve_size <= 0 || s->free < s->min_free)) {
        /* no reserve wanted any more, or a full volume: give it back before the database opens
         * (replaying its log, it writes tables) */
        s->reserve_held = true;
        release_because(s, reserve_size <= 0 ? "store.disk_reserve is 0"
                                              : "the volume is below its floor: the reserve goes to the database");
    } else if (s->free >= s->min_free + reserve_size) {
        take_reserve(s);
    }
    s->full = s->free < s->min_free;   /* st_space_may_open says so in the log */
    return SG_OK;
}

sg_rc st_space_may_open(const st_space_t *s, bool log_on_volume)
{
    if (s->free >= s->min_free)
        return SG_OK;
    if (log_on_volume && s->free < MIB) {
        SG_ERROR("store", "disk.exhausted", "dir=%s free=%lld reason=\"the data volume is full to the last MiB and "
                 "RocksDB's LOG is on it: the database would abort opening; free space (or set store.log_dir to "
                 "another volume) and start again\"", s->dir, (long long)s->free);
        return SG_E_IO;
    }
    SG_WARN("store", "disk.opening_full", "dir=%s free=%lld min_free=%lld reason=\"opening on a full volume: reads "
            "are served, new data is refused until space is freed\"", s->dir, (long long)s->free,
            (long long)s->min_free);
    return SG_OK;
}

bool st_space_room(st_space_t *s, int64_t bytes)
{
    int64_t now = sg_mono_ms();
    bool close_to_full = s->full || s->free < 4 * s->min_free + bytes;
    if (close_to_full || now - s->looked_ms >= LOOK_EVERY_MS)
        look(s);
    /* all but full despite the refusals (something else writes there): the reserve goes first */
    if (s->reserve_held && s->free < s->min_free / 2)
        release_because(s, "the volume is all but full: the reserve goes to the database");
    bool room = s->free - bytes >= s->min_free;
    int64_t hysteresis = s->min_free / 4 > 4 * MIB ? s->min_free / 4 : 4 * MIB;
    if (!room && !s->full) {
        s->full = true;
        SG_ERROR("store", "disk.full", "dir=%s free=%lld min_free=%lld reason=\"the data volume is full: new data is "
                 "refused (devices get CONNACK 3, their telemetry is refused, HTTP writes get 507) until space is "
                 "freed; reads and deliveries go on\"", s->dir, (long long)s->free, (long long)s->min_free);
    } else if (s->full && s->free - bytes >= s->min_free + hysteresis) {
        s->full = false;
        SG_INFO("store", "disk.ok", "dir=%s free=%lld reason=\"space is back: new data is taken again\"", s->dir,
                (long long)s->free);
    }
    if (!s->full && !s->reserve_held && s->reserve_size > 0 &&
        s->free >= s->min_free + s->reserve_size + hysteresis)
        take_reserve(s);
    return !s->full;
}
