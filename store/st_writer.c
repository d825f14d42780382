/* st_writer.c — a shard's single writer: every state change of the shard happens here.
 * It takes all pending operations (up to store.max_batch), applies them to its in-memory device
 * state and one RocksDB WriteBatch, writes that batch once (fsynced with sync=always: group
 * commit), and only then sends the answers and starts deliveries. One thread owning all mutable
 * state keeps per-device rules (queue limits, session epochs, delivery windows) race-free
 * without locks; readers see only committed data through their own RocksDB reads. This file is
 * the commit loop; what each operation does is in the st_w*.c files (see st_writer_int.h). */
#include <pthread.h>
#include <czmq.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "sg_frame.h"
#include "sg_log.h"
#include "sg_time.h"
#include "sg_zmq.h"
#include "st_keys.h"
#include "st_writer_int.h"

/* The shard's memory no longer matches its disk: end the process so it restarts from its WAL.
 * _exit, not exit: after a failed write, RocksDB's own clean-up (run by exit's destructors) trips
 * an assertion in Debian's build and the process would die of SIGABRT instead. */
void stw_fatal_io(const char *what)
{
    SG_ERROR("store", "writer.fatal", "what=%s reason=\"storage write failed; exiting so the shard restarts from its WAL\"", what);
    fflush(NULL);
    _exit(70);
}

/* A batch the volume had no room for after all (something else filled it between our look and
 * the write): the reserve goes back so the restart can open the database. */
static void fatal_full(writer_t *w, const char *what)
{
    st_space_release(&w->ctx->space);
    SG_ERROR("store", "writer.disk_full", "what=%s free=%lld reason=\"the volume filled under a write; exiting so the "
             "shard restarts from its WAL with its reserve given back\"", what, (long long)w->ctx->space.free);
    fflush(NULL);
    _exit(75);
}

/* Double the capacity of a growing array (first: the capacity of a new one). */
void *stw_grow(void *arr, size_t *cap, size_t elem, size_t first)
{
    size_t n = *cap ? *cap * 2 : first;
    void *p = realloc(arr, n * elem);
    if (!p)
        stw_fatal_io("oom");
    *cap = n;
    return p;
}

/* The frames gathered for router go on the answer list: ['B'][router][BATCH] (the net actor
 * passes it on whole to a router that takes batches, one by one to another), or with only one
 * ['R'][router][peer][frame]. */
static void close_batch(writer_t *w, const char *router, sg_wire_batch_t *b)
{
    if (b->n == 0)
        return;
    const uint8_t *f, *peer;
    size_t len, peer_len;
    sg_wire_batch_out(b, &f, &len, &peer, &peer_len);
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, b->n == 1 ? "R" : "B");
    zmsg_addstr(m, router);
    if (b->n == 1)
        zmsg_addmem(m, peer, peer_len);
    zmsg_addmem(m, f, len);
    zlist_append(w->answers, m);
    sg_wire_batch_clear(b);
}

static void batch_free(void **item)
{
    sg_wire_batch_t *b = *item;
    if (b) {
        sg_wire_batch_fini(b);
        free(b);
    }
    *item = NULL;
}

/* Frame for peer through router (rlen bytes; empty: any router), kept in order with everything
 * else for that router. */
static void queue_frame(writer_t *w, const char *router, size_t rlen, const void *peer, size_t peer_len,
                        const void *frame, size_t len)
{
    char key[SG_WIRE_MAX_PEER + 1] = "";
    sg_wire_batch_t *b = NULL;
    if (rlen > 0 && rlen <= SG_WIRE_MAX_PEER) {
        memcpy(key, router, rlen);
        key[rlen] = 0;
        if (!(b = zhashx_lookup(w->outs, key)) && (b = malloc(sizeof *b))) {
            sg_wire_batch_init(b);
            zhashx_insert(w->outs, key, b);
        }
    }
    if (b && sg_wire_batchable(peer_len, len)) {
        if (!sg_wire_batch_fits(b, peer_len, len))
            close_batch(w, key, b);
        if (sg_wire_batch_add(b, peer, peer_len, frame, len) == SG_OK)
            return;
    }
    if (b)
        close_batch(w, key, b);   /* older than this one */
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, "R");
    zmsg_addmem(m, router, rlen);
    zmsg_addmem(m, peer, peer_len);
    zmsg_addmem(m, frame, len);
    zlist_append(w->answers, m);
}

void stw_answer_raw(writer_t *w, const char *router, const char *peer, size_t peer_len, const sg_wbuf_t *frame)
{
    queue_frame(w, router, strlen(router), peer, peer_len, frame->data, frame->len);
}

void stw_answer(writer_t *w, const op_t *op, const sg_wbuf_t *frame)
{
    queue_frame(w, (const char *)op->router, op->router_len, op->peer, op->peer_len, frame->data, frame->len);
}

void st_writer_answer_admin(writer_t *w, const op_t *op, int status, json_t *body)
{
    if (st_admin_answer(&w->scratch2, &op->h, status, body) != SG_OK)
        stw_fatal_io("answer-encode");
    stw_answer(w, op, &w->scratch2);
}

/* Does op bring new data (rather than bookkeeping of what is there)? Those wait for room. */
static bool brings_data(const op_t *op)
{
    uint16_t aop;
    const char *json;
    size_t len;
    if (op->h.type == SG_MSG_TELEMETRY || op->h.type == SG_MSG_AUTH || op->h.type == SG_MSG_INQUIRY)
        return true;
    return op->h.type == SG_MSG_ADMIN && sg_wire_get_admin(&op->h, &aop, &json, &len) == SG_OK &&
           (aop == SG_ADM_DEVICE_PUT || aop == SG_ADM_MSG_ENQUEUE || aop == SG_ADM_DEVICE_IMPORT ||
            aop == SG_ADM_KEYS_REGENERATE || aop == SG_ADM_NOTIFY || aop == SG_ADM_CA_PUT);
}

/* The volume has no room for op: answer it as refused, change nothing. */
static void refuse_full(writer_t *w, op_t *op)
{
    switch (op->h.type) {
    case SG_MSG_INQUIRY:
    case SG_MSG_TELEMETRY: {
        sg_wire_telemetry_t t;
        sg_wire_inquiry_t q;
        if (op->h.type == SG_MSG_INQUIRY && sg_wire_get_inquiry(&op->h, &q) == SG_OK)
            t.packet_id = q.packet_id;
        else if (op->h.type == SG_MSG_INQUIRY || sg_wire_get_telemetry(&op->h, &t) != SG_OK)
            return;
        if (!(op->h.flags & (SG_WIRE_F_QOS1 | SG_WIRE_F_ACK0)))
            return;   /* QoS 0 whose frontend keeps no credit for it: nothing to answer, it is not kept */
        sg_wbuf_reset(&w->scratch);
        if (sg_frame_tele_ack(&w->scratch, &op->h, SG_TELE_FULL, t.packet_id) != SG_OK)
            stw_fatal_io("ack-encode");
        break;
    }
    case SG_MSG_AUTH: {
        sg_wire_auth_res_t res = {0};
        sg_wbuf_reset(&w->scratch);   /* CONNACK 3, no session */
        if (sg_frame_auth_res(&w->scratch, &op->h, SG_AUTH_UNAVAILABLE, SG_WIRE_SHARD_BY_DEVICE, 0, 0, &res) != SG_OK)
            stw_fatal_io("auth-encode");
        break;
    }
    default:
        st_writer_answer_admin(w, op, 507, st_error_json("InsufficientStorage", "shard %s: its data volume is full (%lld bytes "
                     "free, store.disk_min_free is %lld): new data is refused until space is freed; reads work",
                     w->ctx->name, (long long)w->ctx->space.free, (long long)w->ctx->space.min_free));
        return;
    }
    stw_answer(w, op, &w->scratch);
}

/* Until resume_at, remember which routers operations came through (they are there). */
static void note_router(writer_t *w, const op_t *op, int64_t now)
{
    size_t rn = op->router_len;
    if (now >= w->resume_at || rn == 0 || rn > SG_WIRE_MAX_PEER)
        return;
    char r[SG_WIRE_MAX_PEER + 1];
    memcpy(r, op->router, rn);
    r[rn] = 0;
    if (!zhashx_lookup(w->routers_heard, r))
        zhashx_insert(w->routers_heard, r, (void *)1);
}

static void apply(writer_t *w, op_t *op, int64_t now)
{
    uint16_t aop;
    const char *json;
    size_t len;
    /* Operations for no one device, or that name their devices in the body, not the header. */
    if (op->h.type == SG_MSG_ADMIN && sg_wire_get_admin(&op->h, &aop, &json, &len) == SG_OK) {
        switch (aop) {
        case SG_ADM_DEVICE_IMPORT: st_import_apply(w, op, json, len, now); return;
        case SG_ADM_GROUP_COMMIT: stw_adm_group_commit(w, op, json, len); return;
        case SG_ADM_NOTIFY: stw_notify_start(w, op, json, len, now); return;
        case SG_ADM_INQUIRY_CLAIM:
        case SG_ADM_INQUIRY_WATCH:
        case SG_ADM_INQUIRY_ANSWER: stw_inquiry_admin(w, op, aop, json, len, now); return;
        case SG_ADM_CA_PUT:
        case SG_ADM_CA_GET:
        case SG_ADM_CA_DELETE: stw_adm_ca(w, op, aop, json, len); return;
        default: break;   /* about the device in the header */
        }
    }
    if (op->h.device_len == 0) {
        SG_WARN("store", "op.no_device", "type=%s", sg_wire_type_name(op->h.type));
        return;
    }
    char key[SG_DEVICE_ID_MAX + 1];
    memcpy(key, op->h.device, op->h.device_len);
    key[op->h.device_len] = 0;
    if (stw_ahead_park(w, op, key))
        return;   /* applied when a reader has loaded the device (st_wahead.c) */
    wdev_t *d = stw_dev_get(w, op->h.device, op->h.device_len);
    if (!d)
        stw_fatal_io("device-load");
    if (op->h.type != SG_MSG_AUTH && op->h.type != SG_MSG_PSK && op->h.type != SG_MSG_ADMIN)
        stw_track_router(w, d, op);
    switch (op->h.type) {
    case SG_MSG_AUTH: stw_op_auth(w, op, d, now); break;
    case SG_MSG_PSK: stw_op_psk(w, op, d); break;
    case SG_MSG_TELEMETRY: stw_op_telemetry(w, op, d, now); break;
    case SG_MSG_INQUIRY: stw_op_inquiry(w, op, d, now); break;
    case SG_MSG_SESSION_END:
    case SG_MSG_PEER_GONE: stw_op_session_end(w, op, d); break;
    case SG_MSG_SUBSCRIBE: stw_op_subscribe(w, op, d, now); break;
    case SG_MSG_METHOD_RES: stw_op_method_res(w, op, d); break;
    case SG_MSG_COMPLETE: stw_op_complete(w, op, d, now); break;
    case SG_MSG_ADMIN: stw_op_admin(w, op, d, now); break;
    default: SG_WARN("store", "op.unexpected", "type=%s", sg_wire_type_name(op->h.type)); break;
    }
}

void stw_op_move(op_t *to, op_t *from)
{
    if (!from->own && from->frame) {
        size_t n = from->router_len + from->peer_len + from->frame_len;
        uint8_t *own = malloc(n ? n : 1);
        if (!own)
            stw_fatal_io("oom");
        memcpy(own, from->router, from->router_len);
        memcpy(own + from->router_len, from->peer, from->peer_len);
        memcpy(own + from->router_len + from->peer_len, from->frame, from->frame_len);
        from->own = own;
        from->router = own;
        from->peer = own + from->router_len;
        from->frame = own + from->router_len + from->peer_len;
        /* The header's views pointed into the old frame: decoded again from the copy (it decoded
         * when the operation was taken, so it does again). */
        if (sg_wire_decode(from->frame, from->frame_len, &from->h) != SG_OK)
            abort();
    }
    *to = *from;
    memset(from, 0, sizeof *from);
}

void stw_op_free(op_t *op)
{
    free(op->own);
    memset(op, 0, sizeof *op);
}

/* An operation of these bytes (views, see op_t); false for a frame that does not decode. */
static bool op_view(op_t *op, const uint8_t *router, size_t router_len, const uint8_t *peer, size_t peer_len,
                    const uint8_t *frame, size_t len)
{
    *op = (op_t){.router = router, .router_len = router_len, .peer = peer, .peer_len = peer_len, .frame = frame,
                 .frame_len = len};
    if (sg_wire_decode(frame, len, &op->h) == SG_OK)
        return true;
    SG_WARN("store", "frame.malformed", "bytes=%zu", len);
    return false;
}

/* Done with the message the last operations were read from. */
static void in_release(writer_t *w)
{
    if (w->in_batch_bytes)
        atomic_fetch_sub(&w->ctx->writer_batch_bytes, w->in_batch_bytes);
    w->in_batch_bytes = 0;
    w->in_items = false;
    zmsg_destroy(&w->in_msg);
}

/* The next operation waiting, if any (never blocks: the poller, or in_items, says when there are
 * some). Its bytes are views into w->in_msg, which the next call releases. A router's BATCH that
 * net passed on whole ("B", st_shard.c) is read item by item in place; a reader's read-ahead
 * answer on the way is applied (*applied: how many frames that ran). */
static bool recv_op(writer_t *w, op_t *op, int64_t now, int *applied)
{
    for (;;) {
        if (w->in_items) {
            const uint8_t *peer, *frame;
            size_t peer_len, len;
            sg_rc rc = sg_wire_batch_next(&w->in_cur, &peer, &peer_len, &frame, &len);
            if (rc == SG_OK) {
                if (op_view(op, w->in_router, w->in_router_len, peer, peer_len, frame, len))
                    return true;
                continue;
            }
            if (rc != SG_E_AGAIN)
                SG_WARN("store", "frame.malformed", "bytes=%zu reason=\"a damaged batch\"", w->in_batch_bytes);
        }
        in_release(w);
        zmsg_t *m = sg_zmq_recv_nowait(w->in);
        if (!m)
            return false;
        zframe_t *first = zmsg_first(m);
        if (first && zframe_streq(first, "L")) {
            zframe_t *tag = zmsg_pop(m);
            zframe_destroy(&tag);
            *applied += stw_ahead_loaded(w, m, now);
            zmsg_destroy(&m);
            continue;
        }
        w->in_msg = m;
        if (first && zframe_streq(first, "B") && zmsg_size(m) == 4) {   /* [B][router][peer][BATCH] */
            zframe_t *router = zmsg_next(m);
            zmsg_next(m);
            zframe_t *batch = zmsg_next(m);
            sg_wire_hdr_t h;
            w->in_batch_bytes = zframe_size(batch);
            if (sg_wire_decode(zframe_data(batch), zframe_size(batch), &h) == SG_OK && h.type == SG_MSG_BATCH) {
                sg_wire_batch_begin(&h, &w->in_cur);
                w->in_router = zframe_data(router);
                w->in_router_len = zframe_size(router);
                w->in_items = true;
            } else {
                SG_WARN("store", "frame.malformed", "bytes=%zu reason=\"not a batch\"", zframe_size(batch));
            }
            continue;
        }
        if (zmsg_size(m) != 3)
            continue;
        zframe_t *router = first, *peer = zmsg_next(m), *frame = zmsg_next(m);
        if (op_view(op, zframe_data(router), zframe_size(router), zframe_data(peer), zframe_size(peer),
                    zframe_data(frame), zframe_size(frame)))
            return true;
    }
}

/* A device delete or queue purge finds the device's queued messages by reading the database, so
 * what the open batch holds for it (a message enqueued just before) must be committed first. */
static bool needs_fresh_batch(const op_t *op)
{
    uint16_t aop;
    const char *json;
    size_t len;
    return op->h.type == SG_MSG_ADMIN && sg_wire_get_admin(&op->h, &aop, &json, &len) == SG_OK &&
           (aop == SG_ADM_DEVICE_DELETE || aop == SG_ADM_MSG_PURGE);
}

void stw_take(writer_t *w, op_t *op, int64_t now)
{
    size_t batch_bytes = 0;
    note_router(w, op, now);
    if (brings_data(op) && (rocksdb_writebatch_data(w->batch, &batch_bytes),
                            !st_space_room(&w->ctx->space, (int64_t)(batch_bytes + op->frame_len))))
        refuse_full(w, op);
    else if (op->h.type == SG_MSG_HELLO)
        stw_frontend_hello(w, op);
    else if (op->h.type == SG_MSG_ALIVE)
        stw_peer_heard(w, op);
    else
        apply(w, op, now);
}

/* Take what is waiting (first, when given, before anything received), up to store.max_batch
 * operations; stops early at an operation that needs a batch of its own (kept in w->held). */
static int take_waiting(writer_t *w, op_t *first, int64_t now)
{
    op_t op, held;
    int n = 0;
    if (w->has_held) {   /* the caller runs this cycle before taking anything new */
        held = w->held;
        w->has_held = false;
        first = &held;
    }
    for (bool have = first != NULL; have || (n < w->ctx->max_batch && recv_op(w, &op, now, &n)); have = false) {
        op_t *cur = have ? first : &op;
        if (n > 0 && needs_fresh_batch(cur) && rocksdb_writebatch_count(w->batch) > 0) {
            stw_op_move(&w->held, cur);   /* kept: it outlives the message it came in */
            w->has_held = true;
            break;
        }
        stw_take(w, cur, now);
        stw_op_free(cur);
        n++;
    }
    stw_ahead_send(w);   /* the devices parked meanwhile: read while this batch commits */
    return n;
}

/* Write the open batch (fsynced): after this, everything it answers is durable. */
static void commit(writer_t *w, int n)
{
    st_ctx_t *ctx = w->ctx;
    if (w->counters_dirty) {
        sg_wbuf_reset(&w->scratch);
        if (st_counters_put(&w->scratch, &w->counters) != SG_OK)
            stw_fatal_io("counters-encode");
        rocksdb_writebatch_put_cf(w->batch, ctx->db.cf[ST_CF_DEFAULT], "shard", 5, (const char *)w->scratch.data,
                                  w->scratch.len);
        w->counters_dirty = false;
    }
    if (rocksdb_writebatch_count(w->batch) > 0) {
        if (st_db_write(&ctx->db, w->batch, true) != SG_OK) {
            if (!st_space_room(&ctx->space, 0))
                fatal_full(w, "commit");
            stw_fatal_io("commit");
        }
        rocksdb_writebatch_clear(w->batch);
        zhashx_purge(w->finished);
        atomic_fetch_add(&ctx->stat_batches, 1);
        atomic_fetch_add(&ctx->stat_batch_ops, (uint64_t)n);
    }
    /* The database has every entry now: reads go to it again. */
    for (wdev_t *d; (d = zlist_pop(w->reg_texts));) {
        free(d->reg_text);
        d->reg_text = NULL;
    }
}

/* The figures readers and /metrics show, as of the commit (an operator who got an answer may
 * look at them next). */
static void publish_stats(writer_t *w)
{
    st_ctx_t *ctx = w->ctx;
    atomic_store(&ctx->stat_devices, w->counters.devices);
    atomic_store(&ctx->stat_sessions, w->sessions);
    /* A look at the volume now and then without new data too: the figures stay true and the full
     * state ends as soon as space is back. */
    st_space_room(&ctx->space, 0);
    atomic_store(&ctx->stat_disk_free, ctx->space.free);
    atomic_store(&ctx->stat_disk_full, ctx->space.full);
    atomic_store(&ctx->stat_tele_next, w->tele_next);   /* before the append signal: see st_shard.c */
    atomic_store(&ctx->stat_fb_next, w->counters.feedback_next);
}

/* Everything queued goes to the net actor: one message per router for what it gathered. */
static void send_answers(writer_t *w)
{
    for (sg_wire_batch_t *b = zhashx_first(w->outs); b; b = zhashx_next(w->outs))
        close_batch(w, zhashx_cursor(w->outs), b);
    zmsg_t *m;
    while ((m = zlist_pop(w->answers)))
        zmsg_send(&m, w->out);
    if (w->tele_appended || w->fb_appended) {
        zstr_send(w->out, "A");   /* wakes the telemetry and feedback long-polls */
        w->tele_appended = w->fb_appended = false;
    }
}

/* Right after a start, pushes through a router that has not spoken yet would wait a whole
 * delivery lock: they wait until it has, or until resume_at. A session made since the start
 * came through a router that is there, so its deliveries go at once. */
static void run_deliveries(writer_t *w, int64_t now)
{
    wdev_t *d;
    zlist_t *later = NULL;
    while ((d = zlist_pop(w->deliver))) {
        if (now < w->resume_at && !zhashx_lookup(w->routers_heard, d->sess.router)) {
            if (!later && !(later = zlist_new()))
                stw_fatal_io("oom");
            zlist_append(later, d);
            continue;
        }
        stw_deliver(w, d, now);
    }
    for (; later && (d = zlist_pop(later));)
        zlist_append(w->deliver, d);
    zlist_destroy(&later);
}

/* Delivery counts, written after the deliveries without waiting for the disk (a crash loses at
 * most one count per delivery). */
static void write_carry(writer_t *w)
{
    if (rocksdb_writebatch_count(w->carry) == 0)
        return;
    if (st_db_write(&w->ctx->db, w->carry, false) != SG_OK) {
        if (!st_space_room(&w->ctx->space, 0))
            fatal_full(w, "carry");
        stw_fatal_io("carry");
    }
    rocksdb_writebatch_clear(w->carry);
}

/* One group commit: apply what is waiting (at least `first` when given), write once, answer,
 * deliver. */
static void cycle(writer_t *w, op_t *first)
{
    int64_t now = sg_now_ms();
    stw_expire_due(w, now);
    int n = stw_ahead_overdue(w, now);
    n += take_waiting(w, first, now);
    stw_notify_step(w, now);   /* one slice of a fan-out between the operations */
    stw_methods_tick(w, now);
    stw_inquiry_step(w, now);
    commit(w, n);
    publish_stats(w);
    send_answers(w);
    run_deliveries(w, now);
    send_answers(w);   /* the deliveries */
    write_carry(w);
    stw_dev_evict(w);
}

/* Devices read at once when the live sessions are loaded at start. */
#define LOAD_BATCH 1024

static sg_rc writer_init(writer_t *w, st_ctx_t *ctx)
{
    memset(w, 0, sizeof *w);
    w->ctx = ctx;
    w->in = zsock_new_pull(NULL);
    w->out = zsock_new_push(NULL);
    SG_ENSURE(w->in && w->out, SG_E_IO);
    zsock_set_rcvhwm(w->in, w->ctx->queue_limit);
    zsock_set_sndhwm(w->out, 0);
    SG_ENSURE(zsock_bind(w->in, "%s", ctx->ep_writer) == 0, SG_E_IO);
    SG_ENSURE(zsock_connect(w->out, "%s", ctx->ep_out) == 0, SG_E_IO);
    w->devs = zhashx_new();
    zhashx_set_destructor(w->devs, stw_dev_free);
    w->finished = zhashx_new();
    w->peers = zhashx_new();
    stw_methods_init(w);
    zhashx_set_destructor(w->peers, stw_wpeer_free);
    w->started_mono = sg_mono_ms();
    w->answers = zlist_new();
    w->outs = zhashx_new();
    zhashx_set_destructor(w->outs, batch_free);
    w->deliver = zlist_new();
    w->reg_texts = zlist_new();
    w->routers_heard = zhashx_new();
    w->names = zhashx_new();
    zhashx_set_destructor(w->names, (zhashx_destructor_fn *)zstr_free);
    SG_GUARD(stw_ahead_init(w));
    w->batch = rocksdb_writebatch_create();
    w->carry = rocksdb_writebatch_create();
    sg_wbuf_init(&w->scratch, SG_WIRE_MAX_FRAME);
    sg_wbuf_init(&w->scratch2, SG_WIRE_MAX_FRAME);
    w->certs = st_cert_new();
    SG_ENSURE(w->certs, SG_E_NOMEM);
    SG_GUARD(st_cert_load(w->certs, &ctx->db));
    char *val;
    size_t vlen;
    SG_GUARD(st_db_get(&ctx->db, NULL, ST_CF_DEFAULT, "shard", 5, &val, &vlen));
    if (val) {
        sg_rc rc = st_counters_get(val, vlen, &w->counters);
        rocksdb_free(val);
        SG_GUARD(rc);
    }
    /* Numbering goes on after the newest record, or after the oldest retained one when
     * retention dropped them all: an offset is never given twice. */
    w->tele_next = st_db_next_seq(&ctx->db, ST_CF_TELE);
    if (w->tele_next < atomic_load(&ctx->stat_tele_oldest))
        w->tele_next = atomic_load(&ctx->stat_tele_oldest);
    if (w->counters.feedback_next < atomic_load(&ctx->stat_fb_oldest))
        w->counters.feedback_next = atomic_load(&ctx->stat_fb_oldest);
    /* Sessions that were live when the shard stopped: load them, which restarts their deliveries
     * (what was in flight goes out again, DUP) even if the device stays silent. The live index
     * gives their ids in key order: loaded LOAD_BATCH at a time with one batched read each. */
    int64_t t0 = sg_mono_ms();
    char *ids[LOAD_BATCH];
    size_t n = 0, resumed = 0;
    sg_rc rc = SG_OK;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(ctx->db.db, ctx->db.ro, ctx->db.cf[ST_CF_DEFAULT]);
    for (rocksdb_iter_seek(it, ST_LIVE_PREFIX, 1); rc == SG_OK; rocksdb_iter_next(it)) {
        size_t kl = 0;
        const char *k = rocksdb_iter_valid(it) ? rocksdb_iter_key(it, &kl) : NULL;
        bool more = k && kl >= 2 && k[0] == ST_LIVE_PREFIX[0] && kl - 1 <= SG_DEVICE_ID_MAX;
        if (more && !(ids[n++] = strndup(k + 1, kl - 1)))
            rc = SG_E_NOMEM;
        if (rc == SG_OK && n > 0 && (n == LOAD_BATCH || !more)) {
            rc = stw_dev_load_sorted(w, ids, n);
            resumed += n;
        }
        if (n == LOAD_BATCH || !more || rc != SG_OK) {
            for (size_t i = 0; i < n; i++)
                free(ids[i]);
            n = 0;
        }
        if (!more)
            break;
    }
    rocksdb_iter_destroy(it);
    SG_GUARD(rc);
    if (resumed)
        SG_INFO("store", "sessions.resumed", "shard=%s sessions=%zu ms=%lld", ctx->name, resumed,
                (long long)(sg_mono_ms() - t0));
    /* Routers probe every second; pushes sent before one has reconnected would wait a whole
     * delivery lock. */
    w->resume_at = sg_now_ms() + 2500;
    SG_GUARD(stw_notify_load(w));
    SG_GUARD(stw_inquiry_load(w));
    /* as of the load, before the ready signal: /v1/cluster and readiness probes may ask at once,
     * before the first commit publishes them again (a restarted shard showed 0 sessions) */
    atomic_store(&ctx->stat_devices, w->counters.devices);
    atomic_store(&ctx->stat_sessions, w->sessions);
    atomic_store(&ctx->stat_tele_next, w->tele_next);
    atomic_store(&ctx->stat_fb_next, w->counters.feedback_next);
    return SG_OK;
}

static void writer_fini(writer_t *w)
{
    zmsg_t *m;
    while (w->answers && (m = zlist_pop(w->answers)))
        zmsg_destroy(&m);
    if (w->has_held)
        stw_op_free(&w->held);
    in_release(w);
    zlist_destroy(&w->answers);
    zhashx_destroy(&w->outs);
    zlist_destroy(&w->deliver);
    zlist_destroy(&w->reg_texts);
    zhashx_destroy(&w->routers_heard);
    zhashx_destroy(&w->names);
    zhashx_destroy(&w->devs);
    zhashx_destroy(&w->finished);
    zhashx_destroy(&w->peers);
    stw_ahead_fini(w);
    stw_methods_fini(w);
    if (w->batch)
        rocksdb_writebatch_destroy(w->batch);
    if (w->carry)
        rocksdb_writebatch_destroy(w->carry);
    free(w->expired);
    stw_notify_free(w);
    stw_inquiry_free(w);
    sg_wbuf_fini(&w->scratch);
    sg_wbuf_fini(&w->scratch2);
    st_cert_destroy(&w->certs);
    zsock_destroy(&w->in);
    zsock_destroy(&w->out);
}

void st_writer_actor(zsock_t *pipe, void *args)
{
    pthread_setname_np(pthread_self(), "sg-st-writer");   /* top -H, perf and /proc show it */
    writer_t w;
    if (writer_init(&w, args) != SG_OK) {
        SG_ERROR("store", "writer.init_failed", "shard=%s", ((st_ctx_t *)args)->name);
        writer_fini(&w);
        zsock_signal(pipe, 1);
        return;
    }
    atomic_store(&w.ctx->writer_ready, true);
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, w.in, NULL);
    for (;;) {
        /* An unfinished fan-out or expiry backlog goes on at once (a slice a cycle) unless operations
         * wait. */
        void *which = zpoller_wait(poller, stw_notify_busy(&w) || w.sweep_more || w.in_items ? 0 : 100);
        if (which == pipe) {
            char *cmd = zstr_recv(pipe);
            bool term = !cmd || streq(cmd, "$TERM");
            zstr_free(&cmd);
            if (term)
                break;
            continue;
        }
        if (zpoller_terminated(poller))
            break;
        op_t op;
        int applied = 0;
        if ((which == w.in || w.in_items) && recv_op(&w, &op, sg_now_ms(), &applied))
            cycle(&w, &op);
        else
            cycle(&w, NULL);   /* timer: expiry sweep and delayed work */
        while (w.has_held)
            cycle(&w, NULL);   /* an op that needed a batch of its own: before anything newer */
    }
    zpoller_destroy(&poller);
    writer_fini(&w);
    sg_actor_end();
}
