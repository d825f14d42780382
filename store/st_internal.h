/* st_internal.h — what a shard's net actor, writer and readers share: the database, the
 * settings, the inproc endpoints between them, and a few statistics the writer publishes.
 *
 * Inproc protocol (all multipart):
 *   net -> writer/reader:  [router][peer][frame]                   (+ [deadline u64] to readers)
 *   writer/reader -> net:  ['R'][router][peer][frame]              answer or push ("" router = any)
 *                          ['P'][router][peer][frame][deadline][seen]  park a long-poll read (seen:
 *                                   stat_tele_next and stat_fb_next, two u64, as the read looked)
 *                          ['A']                                    telemetry or feedback was appended
 *   writer -> readers:     ['L'][id]...                             read these devices' records ahead
 *   reader -> writer:      ['L'] then per device [id][found][registry][session][meta]  (st_wahead.c) */
#ifndef ST_INTERNAL_H
#define ST_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include "rt_ring.h"
#include "st_db.h"
#include "st_space.h"

typedef struct {
    char name[64];
    unsigned partition;
    st_db_t db;
    bool sync;
    int readers;
    int max_batch;
    int queue_limit;        /* frames waiting for the writer (or the readers) at most */
    int64_t max_queued_messages;
    int64_t max_queued_bytes;
    int64_t max_message_bytes;
    int64_t default_ttl;
    int64_t max_ttl;
    int delivery_window;
    uint64_t credit;        /* cluster.credit: bytes of deliveries on their way to one frontend loop at most */
    uint64_t hold_bytes;    /* store.hold_bytes: frames held for a busy writer before device frames get BUSY */
    int max_delivery_count;
    int64_t delivery_lock_ms;
    int64_t cache_devices;
    int64_t read_ahead;             /* devices being read ahead for the writer at most (0: off) */
    int64_t read_ahead_delay_ms;    /* tests only: each read-ahead sleeps this long first */
    int64_t peer_timeout_ms;
    int64_t tele_retention_ms;      /* telemetry older than this is dropped */
    int64_t tele_max_bytes;         /* ...and beyond this much on disk (0: no limit) */
    int64_t fb_retention_ms;        /* the same for feedback */
    int64_t fb_max_bytes;
    int64_t dead_retention_ms;      /* dead letters */
    int64_t retention_interval_ms;  /* how often the retention thread looks */
    int notify_slice;               /* registry entries a notification fan-out looks at per commit */
    int64_t inquiry_timeout_ms;     /* an unanswered inquiry gets 504 after this */
    int64_t inquiry_lease_ms;       /* a claimed inquiry is claimable again after this */
    int64_t inquiry_max;            /* open inquiries a shard keeps at most */
    int64_t inquiry_max_bytes;      /* ...and payload bytes */
    rt_ring_t *ring;        /* cluster.shards on the ring every router builds: which devices are ours */
    uint64_t incarnation;   /* random, new at every start of the shard (PONG, routers, frontends) */
    st_space_t space;       /* the data volume's room (the writer's, after start) */
    char ep_writer[128];    /* net PUSH -> writer PULL */
    char ep_readers[128];   /* net PUSH -> readers PULL */
    char ep_out[128];       /* writer/readers PUSH -> net PULL */
    char ep_ahead[128];     /* writer PUSH -> readers PULL: devices to read ahead (st_wahead.c) */
    _Atomic bool writer_ready;
    /* published by the writer */
    _Atomic uint64_t stat_devices;
    _Atomic uint64_t stat_sessions;
    _Atomic uint64_t stat_tele_next;
    _Atomic uint64_t stat_fb_next;
    _Atomic uint64_t stat_mcalls_pending;   /* direct method calls held (st_wmethod.c) */
    _Atomic uint64_t stat_mcalls_done[4];   /* ended: answered, gateway timeout, not online, other */
    /* published by the retention thread (loaded before the writer starts) */
    _Atomic uint64_t stat_tele_oldest;
    _Atomic uint64_t stat_fb_oldest;
    _Atomic uint64_t stat_retired_tele;
    _Atomic uint64_t stat_retired_fb;
    _Atomic uint64_t stat_retired_dead;
    _Atomic uint64_t stat_queued;
    _Atomic uint64_t stat_batches;
    _Atomic uint64_t stat_batch_ops;
    _Atomic uint64_t stat_loads_ahead;    /* devices a reader loaded for the writer */
    _Atomic uint64_t stat_loads_inline;   /* devices the writer read itself */
    _Atomic uint64_t stat_credit_waits;   /* sessions whose deliveries waited for their loop's credit */
    _Atomic uint64_t stat_held_bytes;     /* frames the net actor holds for the writer (its queue is full) */
    _Atomic uint64_t writer_batch_bytes;  /* routers' BATCHes net passed to the writer whole, not yet read */
    _Atomic uint64_t stat_parked_at_once; /* log reads the net actor parked without a reader (st_shard.c) */
    _Atomic uint64_t stat_parked_reader;  /* log reads a reader found short and sent back to be parked */
    _Atomic uint64_t stat_busy;           /* frames refused BUSY (held past store.hold_bytes, or readers full) */
    _Atomic uint64_t stat_dropped;        /* frames lost on the way out (a router gone with no other) */
    _Atomic int64_t stat_disk_free;
    _Atomic bool stat_disk_full;
} st_ctx_t;

/* Thread bodies (zactor functions); args is the st_ctx_t. */
#include <czmq.h>
void st_writer_actor(zsock_t *pipe, void *args);
void st_reader_actor(zsock_t *pipe, void *args);
void st_retain_actor(zsock_t *pipe, void *args);   /* st_retain.c */
/* A reader's half of the read-ahead (st_wahead.c): read the devices the writer asked for in req
 * (['L'][id]...) and send their records to the writer. */
void st_ahead_serve(st_ctx_t *c, zmsg_t *req, zsock_t *to_writer);

/* A log read's query (GET /v1/telemetry and /v1/feedback, st_reader.c), checked once for both
 * its users: a reader that runs the read, and the net actor that parks a read that can only wait
 * without sending it to a reader first. */
#include <jansson.h>
typedef struct {
    int64_t after;         /* the last offset the caller has (-1: none); a group read's comes from the group */
    int64_t max, min;      /* records an answer holds at most, and waits for (within wait_ms) */
    int64_t wait_ms;       /* 0: answer at once */
    bool feedback;         /* the feedback log, else telemetry */
    const char *group;     /* a consumer group's name (inside the query's JSON), or NULL */
} st_logq_t;
/* false: the query is malformed (a reader answers 400). */
bool st_logq_parse(json_t *q, st_logq_t *lq);
/* The first offset a read after `after` finds: the oldest retained record when `after` is older
 * (those before it are gone, or going: a range delete is under way); *oldest gets that offset. */
uint64_t st_logq_from(st_ctx_t *c, const st_logq_t *lq, int64_t after, uint64_t *oldest);
/* Whether the log holds fewer than min records from `from` on (its offsets are dense, so the log's
 * next offset tells without reading); need gets what the read waits for, as st_shard.c parks it. */
bool st_logq_short(st_ctx_t *c, const st_logq_t *lq, uint64_t from, uint64_t need[2]);

/* The oldest retained telemetry offset and feedback sequence of the previous start, into
 * stat_tele_oldest and stat_fb_oldest (before the writer starts: it numbers on from them). */
SG_WUR sg_rc st_retain_load(st_ctx_t *c);

/* The ring of a cluster.shards list (names, or name=endpoint pairs, comma-separated) with vnodes
 * points per shard: the one every router builds from the same settings. NULL when it cannot be
 * built (no names, a name twice). Defined in st_import.c, its user. */
rt_ring_t *st_import_ring(const char *shards, unsigned vnodes);

#endif
