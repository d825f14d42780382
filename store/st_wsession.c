/* st_wsession.c — what frontends send about a device's session, applied by the writer:
 * AUTH (credentials checked against the registry: SAS tokens, X.509 chains through st_cert.c, the
 * hash of the PSK a handshake used; a new session epoch, a takeover kicks the older session), PSK
 * look-ups for handshakes, telemetry (stamped and appended to the log), SUBSCRIBE, COMPLETE, session end. */
#include <czmq.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include "sg_frame.h"
#include "sg_log.h"
#include "sg_sas.h"
#include "st_keys.h"
#include "st_writer_int.h"

/* Tell frontend loop `peer` (through `router`) to close the connection of that session. */
void stw_kick(writer_t *w, const char *router, const char *peer, const char *device, uint64_t handle,
                 uint64_t epoch, uint8_t reason)
{
    sg_wbuf_reset(&w->scratch);
    if (sg_frame_kick(&w->scratch, &(sg_frame_session_t){device, handle, epoch}, reason) != SG_OK)
        stw_fatal_io("kick-encode");
    stw_answer_raw(w, router, peer, strlen(peer), &w->scratch);
}

void stw_send_kick(writer_t *w, wdev_t *d, uint8_t reason)
{
    stw_kick(w, d->sess.router, d->sess.peer, d->id, d->sess.handle, d->sess.epoch, reason);
}

/* op belongs to d's live session: its epoch, from the frontend loop that holds the session (the
 * envelope's peer is the routing identity the router heard it from). Another loop, even one that
 * knows or guesses the epoch, cannot send telemetry, method answers or inquiries as the device,
 * complete its deliveries or end its session. A limit: frontends share their tier's CURVE key and
 * pick their loops' identities, so a process holding that key that connects under the identity
 * of a loop not connected to the same router passes this check; only keys per frontend, bound to
 * its names, would close that. */
bool stw_session_matches(const wdev_t *d, const op_t *op)
{
    return d->sess.live && d->sess.epoch == op->h.epoch && d->sess.peer && strlen(d->sess.peer) == op->peer_len &&
           memcmp(d->sess.peer, op->peer, op->peer_len) == 0;
}

/* Pushes for a session go back through the router its frontend loop uses; follow it when the
 * session's traffic arrives through another one (the loop reconnected elsewhere). */
void stw_track_router(writer_t *w, wdev_t *d, const op_t *op)
{
    size_t n = op->router_len;
    if (!stw_session_matches(d, op) || n == 0 || n > SG_WIRE_MAX_PEER ||
        (strlen(d->sess.router) == n && memcmp(d->sess.router, op->router, n) == 0))
        return;
    d->sess.router = stw_intern(w, (const char *)op->router, n);
    stw_save_session(w, d);
}

void stw_op_auth(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    sg_wire_auth_t a;
    sg_wire_auth_res_t res = {0};
    uint16_t status = SG_AUTH_BAD_CREDENTIALS;
    const char *why = "unknown-device";
    bool present = false;
    uint8_t sas_key = 0;

    if (sg_wire_get_auth(&op->h, &a) != SG_OK) {
        why = "malformed-request";
    } else if (!stw_owns(w, d)) {
        status = SG_AUTH_UNAVAILABLE;   /* CONNACK 3: the device tries again, not "not authorized" */
        why = "wrong-shard";
    } else if (!d->exists) {
        why = "unknown-device";
    } else if (!d->reg.enabled) {
        status = SG_AUTH_DISABLED;
        why = "disabled";
    } else if (a.method == SG_CRED_X509 &&
               (d->reg.auth_type == ST_AUTH_X509 || d->reg.auth_type == ST_AUTH_X509_CA)) {
        /* x509 compares thumbprints, x509-ca verifies the chain against this shard's CAs */
        size_t nt = d->reg.auth_type == ST_AUTH_X509 ? d->reg.n_thumbs : 0;
        if (st_cert_verify(w->certs, a.credential, a.credential_len, d->id, (const uint8_t(*)[32])d->reg.thumbs, nt,
                           now / 1000, &res.expires, &why) == SG_OK) {
            status = SG_AUTH_OK;
            why = "ok";
        }
    } else if (a.method == SG_CRED_PSK && d->reg.auth_type == ST_AUTH_PSK) {
        /* The handshake used a key this shard gave out; it must still be the registered one. */
        uint8_t md[32];
        unsigned int mdlen = 0;
        EVP_Digest(d->reg.key1, d->reg.key1_len, md, &mdlen, EVP_sha256(), NULL);
        if (a.credential_len == 32 && CRYPTO_memcmp(md, a.credential, 32) == 0)
            status = SG_AUTH_OK;
        else
            why = "psk-changed";
    } else if (a.method != SG_CRED_SAS || d->reg.auth_type != ST_AUTH_SAS) {
        why = "credential-kind-not-registered";
    } else {
        sg_sas_t t;
        sg_rc rc = sg_sas_parse((const char *)a.credential, a.credential_len, &t);
        if (rc == SG_OK) {
            rc = sg_sas_verify(&t, d->id, d->reg.key1, d->reg.key1_len, now / 1000);
            sas_key = ST_REGEN_PRIMARY;
            if (rc == SG_E_AUTH) {
                rc = sg_sas_verify(&t, d->id, d->reg.key2, d->reg.key2_len, now / 1000);
                sas_key = ST_REGEN_SECONDARY;
            }
        }
        if (rc == SG_OK) {
            status = SG_AUTH_OK;
            res.expires = t.se;
        }
        why = sg_strerror(rc);
    }
    if (status != SG_AUTH_OK) {
        SG_INFO("store", "auth.refused", "device=%s reason=%s", d->id, why);
    } else {
        if (d->sess.live) {
            stw_send_kick(w, d, SG_KICK_TAKEOVER);
            stw_session_end(w, d);
        }
        bool clean = (op->h.flags & SG_WIRE_F_CLEAN) != 0;
        present = !clean && d->sess.epoch != 0;
        uint64_t epoch = d->sess.epoch + 1;
        if (epoch < (uint64_t)now)
            epoch = (uint64_t)now;   /* survives a deleted-and-recreated device */
        d->sess.epoch = epoch;
        d->sess.live = true;
        d->sess.subscribed = present && d->sess.subscribed;
        d->sess.sub_qos0 = d->sess.subscribed && d->sess.sub_qos0;
        d->sess.methods = present && d->sess.methods;
        d->sess.method = a.method;
        d->sess.sas_key = sas_key;   /* a regeneration of the other key leaves the session up */
        d->sess.handle = op->h.corr;
        d->sess.since_ms = now;
        d->sess.peer = stw_intern(w, (const char *)op->peer, op->peer_len);
        d->sess.router = stw_intern(w, (const char *)op->router, op->router_len);
        stw_live_link(w, d);
        stw_inflight_clear(w, d);
        w->sessions++;
        stw_save_session(w, d);
        stw_peer_heard(w, op);
        res.generation = d->reg.generation;
        stw_want_delivery(w, d);
    }
    bool methods = status == SG_AUTH_OK && d->sess.methods;
    uint8_t flags = 0;
    if (status == SG_AUTH_OK)
        flags = (uint8_t)((present ? SG_WIRE_F_SESSION_PRESENT : 0) | (d->sess.subscribed ? SG_WIRE_F_SUBSCRIBED : 0) |
                          (d->sess.subscribed && d->sess.sub_qos0 ? SG_WIRE_F_SUBSCRIBED_QOS0 : 0) |
                          (d->sess.methods ? SG_WIRE_F_METHODS : 0) | SG_WIRE_F_ACK0 | SG_WIRE_F_ANSWER);
    sg_wbuf_reset(&w->scratch);
    if (sg_frame_auth_res(&w->scratch, &op->h, (uint16_t)status, w->ctx->partition,
                          status == SG_AUTH_OK ? d->sess.epoch : 0, flags, &res) != SG_OK)
        stw_fatal_io("auth-encode");
    stw_answer(w, op, &w->scratch);
    if (methods)
        stw_methods_online(w, d, now);   /* after the AUTH_RES: the frontend knows the session by then */
}

/* A TLS handshake offers the device's id as its PSK identity: hand the frontend the key (over
 * the CURVE-encrypted link in a cluster), which it holds only for that handshake. A device that
 * is unknown, disabled or not a PSK device gets none and its handshake fails. */
void stw_op_psk(writer_t *w, op_t *op, wdev_t *d)
{
    uint16_t status = SG_PSK_NONE;
    if (d->exists && d->reg.auth_type == ST_AUTH_PSK)
        status = d->reg.enabled ? SG_PSK_OK : SG_PSK_DISABLED;
    if (status != SG_PSK_OK)
        SG_INFO("store", "psk.refused", "device=%s reason=%s", d->id,
                status == SG_PSK_DISABLED ? "disabled" : d->exists ? "not-a-psk-device" : "unknown-device");
    sg_wbuf_reset(&w->scratch);
    if (sg_frame_psk_res(&w->scratch, &op->h, status, d->reg.key1, status == SG_PSK_OK ? d->reg.key1_len : 0) != SG_OK)
        stw_fatal_io("psk-encode");
    stw_answer(w, op, &w->scratch);
}

static bool is_stamped(const char *k, size_t kl)
{
    static const char a[] = SG_STAMP_DEVICE, b[] = SG_STAMP_AUTH;
    return (kl == sizeof a - 1 && strncasecmp(k, a, kl) == 0) || (kl == sizeof b - 1 && strncasecmp(k, b, kl) == 0);
}

static uint16_t unstamped_props(sg_wire_props_t p)
{
    const char *k, *v;
    size_t kl, vl;
    uint16_t n = 0;
    while (sg_wire_props_next(&p, &k, &kl, &v, &vl))
        n += !is_stamped(k, kl);
    return n;
}

void stw_op_telemetry(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    sg_wire_telemetry_t t;
    uint16_t status = 0;
    if (sg_wire_get_telemetry(&op->h, &t) != SG_OK) {
        status = SG_TELE_MALFORMED;
    } else if (!stw_session_matches(d, op)) {
        status = SG_TELE_STALE;   /* the frontend closes that connection */
    } else if (unstamped_props(t.props) + 2 > SG_WIRE_MAX_PROPS) {
        status = SG_TELE_MALFORMED;   /* with the stamped two it would not fit a page (frontends cap bags far lower) */
    } else {
        /* Drop whatever the device claims about its origin and stamp what the gateway knows: the
         * session's credential kind, spelled out as the two iothub-connection-* properties when
         * the record is read (st_record.h). */
        sg_wire_props_t p = t.props;
        const char *k, *v;
        size_t kl, vl;
        uint16_t n = unstamped_props(t.props);
        uint8_t kind = d->sess.method == SG_CRED_X509 || d->sess.method == SG_CRED_PSK ? d->sess.method : SG_CRED_SAS;
        sg_wbuf_reset(&w->scratch);
        if (st_tele_put_head(&w->scratch, now, d->id, d->id_len, kind, n) != SG_OK)
            stw_fatal_io("telemetry-encode");
        while (sg_wire_props_next(&p, &k, &kl, &v, &vl))
            if (!is_stamped(k, kl) && sg_wire_put_prop(&w->scratch, k, kl, v, vl) != SG_OK)
                stw_fatal_io("telemetry-encode");
        if (sg_wbuf_str32(&w->scratch, t.payload, t.payload_len) != SG_OK)
            stw_fatal_io("telemetry-encode");
        uint8_t key[8];
        st_be64(key, w->tele_next++);
        rocksdb_writebatch_put_cf(w->batch, w->ctx->db.cf[ST_CF_TELE], (const char *)key, 8,
                                  (const char *)w->scratch.data, w->scratch.len);
        w->tele_appended = true;
    }
    if (!(op->h.flags & (SG_WIRE_F_QOS1 | SG_WIRE_F_ACK0)) && status == 0)
        return;   /* QoS 0 whose frontend keeps no credit for it */
    stw_tele_ack(w, op, d, status, status == SG_TELE_MALFORMED ? 0 : t.packet_id);
}

void stw_tele_ack(writer_t *w, const op_t *op, const wdev_t *d, uint16_t status, uint16_t pid)
{
    sg_wbuf_reset(&w->scratch);
    if (sg_frame_tele_ack(&w->scratch, &op->h, status, pid) != SG_OK)
        stw_fatal_io("ack-encode");
    stw_answer(w, op, &w->scratch);
}

void stw_op_session_end(writer_t *w, op_t *op, wdev_t *d)
{
    if (stw_session_matches(d, op))
        stw_session_end(w, d);
}

void stw_op_subscribe(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    uint8_t chan, mode;
    uint16_t pid;
    if (sg_wire_get_subscribe(&op->h, &chan, &mode, &pid) != SG_OK)
        return;
    bool matches = stw_session_matches(d, op);
    /* Answered when asked, also for a session that is no longer current: its frontend holds the
     * device's SUBACK until then (the answer goes with this batch's, after the commit). */
    if (op->h.flags & SG_WIRE_F_ANSWER) {
        sg_wbuf_reset(&w->scratch);
        if (sg_frame_subscribe_res(&w->scratch, &op->h, matches ? 0 : SG_TELE_STALE, pid) != SG_OK)
            stw_fatal_io("subscribe-encode");
        stw_answer(w, op, &w->scratch);
    }
    if (!matches)
        return;
    if (chan == SG_CHAN_METHODS) {
        bool on = mode != SG_SUB_OFF;
        if (d->sess.methods != on) {
            d->sess.methods = on;
            stw_save_session(w, d);
        }
        stw_methods_online(w, d, now);
        return;
    }
    bool on = mode != SG_SUB_OFF, qos0 = mode == SG_SUB_QOS0;
    if (d->sess.subscribed == on && d->sess.sub_qos0 == qos0)
        return;
    d->sess.subscribed = on;
    d->sess.sub_qos0 = qos0;
    if (!on)
        stw_inflight_clear(w, d);
    stw_save_session(w, d);
    stw_want_delivery(w, d);
}

void stw_op_complete(writer_t *w, op_t *op, wdev_t *d, int64_t now)
{
    uint16_t pid;
    if (sg_wire_get_pid(&op->h, &pid) != SG_OK || !stw_session_matches(d, op))
        return;
    for (uint16_t i = 0; i < d->n_inflight; i++) {
        uint64_t seq = d->inflight[i].seq;
        if (stw_pid_of(seq) == pid) {
            stw_inflight_remove(w, d, seq);
            stw_finish_seq(w, d, seq, ST_OUT_DELIVERED, now);
            stw_want_delivery(w, d);
            return;
        }
    }
    /* An acknowledgement of a delivery this shard no longer tracks (it restarted, or the lock
     * ran out): the message stays queued and is delivered again, at least once. */
    SG_DEBUG("store", "complete.unknown", "device=%s pid=%u", d->id, pid);
    stw_want_delivery(w, d);
}
