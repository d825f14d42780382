/* st_keys.h — how a shard lays out its RocksDB keys.
 * Column family "dev" keeps everything about one device in one contiguous key range
 * ("{id}\0" prefix) so a device can later be handed to another shard with one range scan:
 *   {id}\0R             registry entry (JSON, with secrets)
 *   {id}\0S             session: epoch, where it lives, subscriptions   (st_session_t)
 *   {id}\0M             queue counters                                 (st_qmeta_t)
 *   {id}\0Q{seq:be64}   one queued cloud-to-device message             (st_msg_t)
 *   {id}\0D{seq:be64}   one dead-lettered message                      (reason, at, st_msg_t)
 * Column family "tele": {offset:be64} -> telemetry record (this shard's partition).
 * Column family "exp":  {expires_ms:be64}{id}\0{seq:be64} -> "" (expiry order, swept from the start).
 * Column family "fb":   {seq:be64} -> feedback record.
 * Column family "dlx":  {dead_ms:be64}{id}\0{seq:be64} -> "" (dead letters in the order they age
 *                       out: the retention sweep reads it from the start and stops at its cutoff).
 * Default column family: "shard" -> shard counters; "L{id}" -> "" while the device has a live
 * session (so a restarted shard finds its sessions without a scan); "G{group}" -> the consumer
 * group's committed telemetry position (be64 of offset + 1: 0 is "nothing read yet");
 * "F{group}" -> the same for the group's feedback position (a key space of its own: a telemetry
 * group and a feedback group of one name are independent); "retained" -> the oldest retained
 * telemetry offset and feedback sequence (two be64); "N{notificationId}" -> a notification's
 * progress in this shard (JSON: targets, rejected, cursor, done; kept after it is done, for
 * GET /v1/notifications/{id}); "n{notificationId}" -> what it sends, while its fan-out is
 * unfinished (its tags as JSON, a NUL, then the queue record every target gets): a restarted
 * shard resumes every fan-out it finds there (st_wnotify.c); "I{seq:be64}" -> an open inquiry
 * (received, expires, device, name, rid, payload) and "inquiry_next" -> the next inquiry's seq
 * (be64), so an id is never given twice (st_winquiry.c). */
#ifndef ST_KEYS_H
#define ST_KEYS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "sg_wire.h"

#define ST_KEY_MAX (128 + 2 + 8 + 8)

enum { ST_K_REGISTRY = 'R', ST_K_SESSION = 'S', ST_K_META = 'M', ST_K_QUEUE = 'Q', ST_K_DEAD = 'D' };

static inline void st_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t st_get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* {id}\0{kind}; returns the length. out holds ST_KEY_MAX bytes. */
static inline size_t st_key_dev(char *out, const char *id, size_t id_len, char kind)
{
    memcpy(out, id, id_len);
    out[id_len] = 0;
    out[id_len + 1] = kind;
    return id_len + 2;
}

/* {id}\0{kind}{seq}. */
static inline size_t st_key_dev_seq(char *out, const char *id, size_t id_len, char kind, uint64_t seq)
{
    size_t n = st_key_dev(out, id, id_len, kind);
    st_be64((uint8_t *)out + n, seq);
    return n + 8;
}

/* {expires}{id}\0{seq}; the dead-letter index ("dlx") has the same shape with the time it was
 * dead-lettered in front. */
static inline size_t st_key_exp(char *out, int64_t expires_ms, const char *id, size_t id_len, uint64_t seq)
{
    st_be64((uint8_t *)out, (uint64_t)expires_ms);
    memcpy(out + 8, id, id_len);
    out[8 + id_len] = 0;
    st_be64((uint8_t *)out + 9 + id_len, seq);
    return 17 + id_len;
}

#define ST_LIVE_PREFIX "L"
#define ST_GROUP_PREFIX "G"
#define ST_FB_GROUP_PREFIX "F"
#define ST_GROUP_MAX SG_GROUP_MAX
#define ST_RETAINED_KEY "retained"
#define ST_NOTIFY_PREFIX "N"
#define ST_NOTIFY_DEF_PREFIX "n"
#define ST_NOTIFY_ID_MAX 36
#define ST_INQUIRY_PREFIX "I"
#define ST_INQUIRY_NEXT_KEY "inquiry_next"

/* N{nid} (prefix ST_NOTIFY_PREFIX) or n{nid} (ST_NOTIFY_DEF_PREFIX). out holds 1 + ST_NOTIFY_ID_MAX bytes. */
static inline size_t st_key_notify(char *out, char prefix, const char *nid, size_t len)
{
    out[0] = prefix;
    memcpy(out + 1, nid, len);
    return len + 1;
}

/* G{group}: a consumer group's telemetry position. out holds 1 + ST_GROUP_MAX bytes. */
static inline size_t st_key_group(char *out, const char *group, size_t len)
{
    out[0] = ST_GROUP_PREFIX[0];
    memcpy(out + 1, group, len);
    return len + 1;
}

/* F{group}: a consumer group's feedback position. out holds 1 + ST_GROUP_MAX bytes. */
static inline size_t st_key_fb_group(char *out, const char *group, size_t len)
{
    out[0] = ST_FB_GROUP_PREFIX[0];
    memcpy(out + 1, group, len);
    return len + 1;
}


/* L{id} */
static inline size_t st_key_live(char *out, const char *id, size_t id_len)
{
    out[0] = ST_LIVE_PREFIX[0];
    memcpy(out + 1, id, id_len);
    return id_len + 1;
}

#endif
