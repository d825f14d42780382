/* st_wqueue.c — a device's command queue on its way out: deliveries to the live session up to
 * the window (after each commit), messages leaving the queue (delivered, expired, dead-lettered,
 * with feedback as each asked), the expiry sweep and the delivery lock. */
#include <czmq.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "sg_frame.h"
#include "sg_log.h"
#include "st_keys.h"
#include "st_writer_int.h"

#define SWEEP_EVERY_MS 1000
#define SWEEP_MAX 1000

void stw_feedback(writer_t *w, wdev_t *d, const st_msg_t *m, uint8_t outcome, int64_t now)
{
    bool positive = outcome == ST_OUT_DELIVERED;
    bool wanted = m->ack == ST_ACK_FULL || (positive && m->ack == ST_ACK_POSITIVE) ||
                  (!positive && m->ack == ST_ACK_NEGATIVE);
    if (!wanted)
        return;
    uint8_t key[8];
    st_be64(key, w->counters.feedback_next++);
    w->counters_dirty = true;
    w->fb_appended = true;
    sg_wbuf_reset(&w->scratch);
    if (st_feedback_put(&w->scratch, m->message_id, m->message_id_len, d->id, d->id_len, outcome, now) != SG_OK)
        stw_fatal_io("feedback-encode");
    rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_FB], (const char *)key, 8,
                              (const char *)w->scratch.data, w->scratch.len);
}

/* Remove message seq (record rec) from the queue; dead-letter it unless it was delivered. A
 * record that cannot be read is dead-lettered as damaged whatever the outcome: it leaves the
 * queue and the device's counters as stored, its bytes are kept for the operator, and it gives no
 * feedback (neither a message id nor the ack mode can be trusted). Its expiry index entry cannot
 * be found without the expiry it held: the sweep drops it when it comes to it. */
void stw_finish_msg(writer_t *w, wdev_t *d, uint64_t seq, const char *rec, size_t rlen, uint8_t outcome,
                       int64_t now)
{
    /* Reads see committed data only: a message finished earlier in this batch (completed,
     * expired, revoked) is still there, and must not be finished twice. */
    char fkey[SG_DEVICE_ID_MAX + 24];
    snprintf(fkey, sizeof fkey, "%s/%llx", d->id, (unsigned long long)seq);
    if (zhashx_lookup(w->finished, fkey))
        return;
    zhashx_insert(w->finished, fkey, (void *)1);
    st_msg_t m;
    char key[ST_KEY_MAX];
    size_t klen;
    st_db_t *db = &w->ctx->db;
    bool damaged = st_msg_get(rec, rlen, &m) != SG_OK;
    if (damaged) {
        SG_ERROR("store", "message.damaged", "device=%s seq=%llu bytes=%zu was=%s action=dead-lettered", d->id,
                 (unsigned long long)seq, rlen, st_outcome_name(outcome));
        outcome = ST_OUT_DAMAGED;
    } else {
        klen = st_key_exp(key, m.expires_ms, d->id, d->id_len, seq);
        rocksdb_writebatch_delete_cf(w->batch, db->cf[ST_CF_EXP], key, klen);
    }
    klen = st_key_dev_seq(key, d->id, d->id_len, ST_K_QUEUE, seq);
    rocksdb_writebatch_delete_cf(w->batch, db->cf[ST_CF_DEV], key, klen);
    if (outcome != ST_OUT_DELIVERED) {
        sg_wbuf_reset(&w->scratch2);
        if (st_dead_put(&w->scratch2, outcome, now, rec, rlen) != SG_OK)
            stw_fatal_io("dead-encode");
        klen = st_key_dev_seq(key, d->id, d->id_len, ST_K_DEAD, seq);
        rocksdb_writebatch_put_cf(w->batch, db->cf[ST_CF_DEV], key, klen, (const char *)w->scratch2.data,
                                  w->scratch2.len);
        klen = st_key_exp(key, now, d->id, d->id_len, seq);   /* the retention thread's way to it */
        rocksdb_writebatch_put_cf(w->batch, db->cf[ST_CF_DLX], key, klen, "", 0);
    }
    if (d->meta.count > 0)
        d->meta.count--;
    d->meta.bytes = d->meta.bytes >= rlen ? d->meta.bytes - rlen : 0;   /* as stw_queue_put() counted it */
    if (w->queued > 0)
        w->queued--;
    stw_save_meta(w, d);
    if (!damaged)
        stw_feedback(w, d, &m, outcome, now);
}

/* Finish message seq of d with outcome if it is still queued; false when it is not. */
bool stw_finish_seq(writer_t *w, wdev_t *d, uint64_t seq, uint8_t outcome, int64_t now)
{
    char key[ST_KEY_MAX], *rec;
    size_t klen = st_key_dev_seq(key, d->id, d->id_len, ST_K_QUEUE, seq), rlen;
    if (st_db_get(&w->ctx->db, NULL, ST_CF_DEV, key, klen, &rec, &rlen) != SG_OK)
        stw_fatal_io("queue-read");
    if (!rec)
        return false;
    stw_finish_msg(w, d, seq, rec, rlen, outcome, now);
    rocksdb_free(rec);
    return true;
}

/* Hand queued messages to the live session, up to the in-flight window. Runs after commit. */
void stw_deliver(writer_t *w, wdev_t *d, int64_t now)
{
    st_ctx_t *ctx = w->ctx;
    d->deliver_queued = false;
    if (!d->sess.live || !d->sess.subscribed || d->n_inflight >= ctx->delivery_window || d->meta.count == 0)
        return;
    if (!d->inflight && !(d->inflight = calloc((size_t)ctx->delivery_window, sizeof *d->inflight)))
        stw_fatal_io("oom");
    char key[ST_KEY_MAX];
    size_t plen = st_key_dev(key, d->id, d->id_len, ST_K_QUEUE);
    size_t klen = st_key_dev_seq(key, d->id, d->id_len, ST_K_QUEUE, d->next_deliver);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(ctx->db.db, ctx->db.ro, ctx->db.cf[ST_CF_DEV]);
    for (rocksdb_iter_seek(it, key, klen); rocksdb_iter_valid(it) && d->n_inflight < ctx->delivery_window;
         rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl != plen + 8 || memcmp(k, key, plen) != 0)
            break;
        uint64_t seq = st_get_be64((const uint8_t *)k + plen);
        if (stw_inflight_has(d, seq))
            continue;   /* still in flight (only its neighbours were handed out again) */
        const char *v = rocksdb_iter_value(it, &vl);
        st_msg_t m;
        d->next_deliver = seq + 1;
        /* A record that cannot be read is not sent: it is dead-lettered (stw_finish_msg) and the
         * next one goes out in its place, in order. */
        uint8_t out = st_msg_get(v, vl, &m) != SG_OK                           ? ST_OUT_DAMAGED
                      : m.expires_ms <= now                                   ? ST_OUT_EXPIRED
                      : m.delivery_count >= (uint32_t)ctx->max_delivery_count ? ST_OUT_DELIVERY_COUNT_EXCEEDED
                                                                               : 0;
        if (out) {
            /* dead-lettered at the start of the next batch (this runs after a commit) */
            if (w->n_expired == w->cap_expired)
                w->expired = stw_grow(w->expired, &w->cap_expired, sizeof *w->expired, 64);
            w->expired[w->n_expired++] = (expire_t){d, seq, out};
            continue;
        }
        if (d->loop && d->loop->out_bytes >= ctx->credit) {
            /* the loop's credit is spent: this one goes when completions bring it back */
            d->next_deliver = seq;
            stw_credit_wait(w, d);
            break;
        }
        uint32_t count = m.delivery_count + 1;
        sg_wire_deliver_t dv = {.packet_id = stw_pid_of(seq), .delivery_count = count, .enqueued_ms = m.enqueued_ms,
                                .expires_ms = m.expires_ms, .message_id = m.message_id,
                                .message_id_len = m.message_id_len};
        sg_wbuf_reset(&w->scratch);
        sg_rc rc = sg_frame_deliver_head(&w->scratch, &(sg_frame_session_t){d->id, d->sess.handle, d->sess.epoch}, &dv,
                                         m.props.count);
        /* The property pairs are stored in wire form already: copy them as they are. */
        if (rc == SG_OK)
            rc = sg_wbuf_bytes(&w->scratch, m.props.rest.data, m.props.rest.len);
        if (rc == SG_OK)
            rc = sg_wire_put_payload(&w->scratch, m.payload, m.payload_len);
        if (rc != SG_OK)
            stw_fatal_io("deliver-encode");
        stw_answer_raw(w, d->sess.router, d->sess.peer, strlen(d->sess.peer), &w->scratch);   /* sent after the run */
        if (d->n_inflight == 0)
            stw_busy_add(w, d);
        d->inflight[d->n_inflight++] = (flight_t){seq, now, (uint32_t)w->scratch.len, d->loop};
        if (d->loop)
            d->loop->out_bytes += w->scratch.len;
        /* Count the attempt; losing this update in a crash only under-counts by one. */
        if (st_msg_with_count(v, vl, count, &w->scratch2) != SG_OK)
            stw_fatal_io("count-encode");
        rocksdb_writebatch_put_cf(w->carry, ctx->db.cf[ST_CF_DEV], k, kl, (const char *)w->scratch2.data,
                                  w->scratch2.len);
    }
    rocksdb_iter_destroy(it);
}

static void sweep_tick(writer_t *w, int64_t now);

/* Messages whose time ran out: found while delivering, or by the sweep over the expiry index. */
void stw_expire_due(writer_t *w, int64_t now)
{
    for (size_t i = 0; i < w->n_expired; i++) {
        wdev_t *d = w->expired[i].dev;
        stw_inflight_remove(w, d, w->expired[i].seq);
        stw_finish_seq(w, d, w->expired[i].seq, w->expired[i].outcome, now);
        stw_want_delivery(w, d);
    }
    w->n_expired = 0;
    bool tick = now - w->last_sweep >= SWEEP_EVERY_MS;
    if (!tick && !w->sweep_more)
        return;
    if (tick)
        sweep_tick(w, now);
    /* In a backlog, from where the last slice stopped: the entries deleted before it (tombstones
     * until compaction) are not walked again slice after slice. Otherwise from the start, so
     * entries skipped while in flight are seen again. */
    st_db_t *db = &w->ctx->db;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_EXP]);
    if (w->sweep_more)
        rocksdb_iter_seek(it, w->sweep_from, w->sweep_from_len);
    else
        rocksdb_iter_seek_to_first(it);
    int n = 0;
    for (; rocksdb_iter_valid(it) && n < SWEEP_MAX; rocksdb_iter_next(it), n++) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl < 18 || kl > ST_KEY_MAX || (int64_t)st_get_be64((const uint8_t *)k) > now)
            break;
        size_t id_len = kl - 17;
        wdev_t *d = stw_dev_get(w, k + 8, id_len);
        if (!d)
            stw_fatal_io("device-load");
        uint64_t seq = st_get_be64((const uint8_t *)k + 9 + id_len);
        if (stw_inflight_has(d, seq))
            continue;   /* the device may still acknowledge it; it expires when it comes back */
        /* The entry goes whatever became of its message: finishing a readable record deletes it
         * too, but one whose record is gone, or was damaged (finished before, with its expiry
         * unreadable), would otherwise stay for ever. */
        stw_finish_seq(w, d, seq, ST_OUT_EXPIRED, now);
        rocksdb_writebatch_delete_cf(w->batch, db->cf[ST_CF_EXP], k, kl);
    }
    /* A full slice: more may be due, and the next cycle goes on at once from where this one
     * stopped. One slice a batch, so operations arriving meanwhile wait for one slice, not the
     * backlog. Also when every entry of the slice was skipped as in flight: starting from the
     * first again would meet the same entries each time, and due ones behind them (devices that
     * are offline) would wait until the delivery lock freed those. The walk ends at the first
     * entry not yet due; the next tick starts from the first entry again. */
    w->sweep_more = n == SWEEP_MAX && rocksdb_iter_valid(it);
    if (w->sweep_more) {
        const char *k = rocksdb_iter_key(it, &w->sweep_from_len);
        if (w->sweep_from_len > sizeof w->sweep_from)
            w->sweep_more = false;
        else
            memcpy(w->sweep_from, k, w->sweep_from_len);
    }
    rocksdb_iter_destroy(it);
}

/* Once a second: peer liveness and deliveries whose lock ran out. */
static void sweep_tick(writer_t *w, int64_t now)
{
    w->last_sweep = now;
    /* Only with nothing waiting: heartbeats still queued behind a backlog must count first. */
    if (!(zsock_events(w->in) & ZMQ_POLLIN))
        stw_check_peers(w);
    /* Deliveries not acknowledged within the lock time (lost on the way, or a device that does
     * not answer) are handed out again; after max_delivery_count attempts they are dead-lettered. */
    for (wdev_t *d = w->busy, *next; d; d = next) {
        next = d->busy_next;
        /* Only the deliveries that are overdue go out again, from the oldest on; the others stay
         * in flight (stw_deliver() skips them). */
        uint64_t lowest = UINT64_MAX;
        for (uint16_t i = 0; i < d->n_inflight;) {
            if (now - d->inflight[i].sent_ms >= w->ctx->delivery_lock_ms) {
                if (d->inflight[i].seq < lowest)
                    lowest = d->inflight[i].seq;
                stw_flight_done(w, &d->inflight[i]);
                d->inflight[i] = d->inflight[--d->n_inflight];
            } else {
                i++;
            }
        }
        if (lowest != UINT64_MAX) {
            SG_INFO("store", "delivery.lock_expired", "device=%s from_seq=%llu", d->id, (unsigned long long)lowest);
            if (lowest < d->next_deliver)
                d->next_deliver = lowest;
            if (d->n_inflight == 0)
                stw_busy_del(w, d);
            stw_want_delivery(w, d);
        }
    }
}
