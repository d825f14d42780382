/* st_space.h — a shard's room on its data volume. A full volume must be an outage a shard rides
 * out, not a crash loop: once RocksDB has failed a write for lack of space, every later use of
 * that file trips an assertion inside Debian's RocksDB (built with them on), closing the database
 * included. So the shard never lets it get there: the writer asks before each write whether the
 * batch fits above store.disk_min_free, and refuses new data (telemetry, sessions, commands,
 * registry entries) while it does not, serving reads and bookkeeping on; and a preallocated file,
 * `reserve` (store.disk_reserve), is given back when the volume is all but full anyway (another
 * process filled it), so RocksDB can flush, recover and start again. The writer thread owns it. */
#ifndef ST_SPACE_H
#define ST_SPACE_H

#include <stdbool.h>
#include <stdint.h>
#include "sg_result.h"

typedef struct {
    char dir[512];
    char reserve_path[600];
    int64_t min_free;        /* store.disk_min_free */
    int64_t reserve_size;    /* store.disk_reserve (0: none) */
    bool reserve_held;       /* the reserve file exists at its size */
    bool full;               /* new data is refused */
    int64_t free;            /* bytes free at the last look */
    int64_t looked_ms;       /* sg_mono_ms of the last look */
} st_space_t;

/* Look at dir's volume; release a reserve left from an earlier run when the volume is all but
 * full (so the database can open), else make sure the reserve exists. Never fails for space:
 * a volume too full for a reserve just has none until space returns. */
SG_WUR sg_rc st_space_init(st_space_t *s, const char *dir, int64_t min_free, int64_t reserve_size);

/* Can the database open on this volume? Logs the free space when it is below the floor; refuses
 * (SG_E_IO, with a line saying why) a volume with less than 1 MiB free while RocksDB's own LOG is
 * on it: RocksDB would abort on its first LOG line, leaving nothing in sacgate's log. */
SG_WUR sg_rc st_space_may_open(const st_space_t *s, bool log_on_volume);

/* May `bytes` more go to the volume now? Looks at the volume again every 100 ms (every call
 * while full or close to it), logs entering and leaving the full state, gives the reserve back
 * when the volume is all but full and takes it again once there is room. */
bool st_space_room(st_space_t *s, int64_t bytes);

/* A write failed for lack of space anyway: give the reserve back so a restart can open the
 * database (the caller then ends the process). */
void st_space_release(st_space_t *s);

#endif
