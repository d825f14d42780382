/* fe_session.c — the IoT Hub MQTT dialect on one connection (SPEC §2): which packet may come in
 * which state (a table), CONNECT checks and the round trip to the device's shard for its
 * credentials, telemetry relayed to the shard with PUBACK only after the shard's durable ack,
 * the devicebound subscription and deliveries, keep-alive/token/ack deadlines, and the shard's
 * pushes (deliveries, kicks). Anything outside the dialect closes the connection. */
#include <stdlib.h>
#include <string.h>
#include "fe_cred.h"
#include "fe_flight.h"
#include "fe_psk.h"
#include "fe_internal.h"
#include "fe_ws.h"
#include "sg_codec.h"
#include "sg_log.h"
#include "sg_propbag.h"
#include "sg_sas.h"
#include "sg_time.h"

typedef int (*packet_fn)(fe_conn_t *c, const sg_mqtt_packet_t *pkt);

static int on_connect(fe_conn_t *c, const sg_mqtt_packet_t *pkt);
static int on_publish(fe_conn_t *c, const sg_mqtt_packet_t *pkt);
static int on_puback(fe_conn_t *c, const sg_mqtt_packet_t *pkt);
static int on_subscribe(fe_conn_t *c, const sg_mqtt_packet_t *pkt);
static int on_unsubscribe(fe_conn_t *c, const sg_mqtt_packet_t *pkt);
static int on_pingreq(fe_conn_t *c, const sg_mqtt_packet_t *pkt);
static int on_disconnect(fe_conn_t *c, const sg_mqtt_packet_t *pkt);

/* Which packets a device may send in each state; everything else closes the connection. */
static const packet_fn k_table[FE_STATE_COUNT][16] = {
    [FE_WAIT_CONNECT] = {[SG_MQTT_CONNECT] = on_connect},
    [FE_ONLINE] = {[SG_MQTT_PUBLISH] = on_publish,
                   [SG_MQTT_PUBACK] = on_puback,
                   [SG_MQTT_SUBSCRIBE] = on_subscribe,
                   [SG_MQTT_UNSUBSCRIBE] = on_unsubscribe,
                   [SG_MQTT_PINGREQ] = on_pingreq,
                   [SG_MQTT_DISCONNECT] = on_disconnect},
};

static int violation(fe_conn_t *c, const char *what)
{
    atomic_fetch_add(&c->w->protocol_errors, 1);
    SG_INFO("frontend", "mqtt.violation", "device=%s reason=\"%s\"", c->device ? c->device : "-", what);
    fe_conn_close(c, "protocol-violation");
    return FE_PKT_DONE;
}

int fe_session_packet(fe_conn_t *c, const sg_mqtt_packet_t *pkt)
{
    packet_fn fn = c->state < FE_STATE_COUNT ? k_table[c->state][pkt->type & 15] : NULL;
    if (!fn) {
        char what[80];
        snprintf(what, sizeof what, "%s not allowed %s", sg_mqtt_type_name(pkt->type),
                 c->state == FE_WAIT_CONNECT ? "before CONNECT" : "here (second CONNECT?)");
        return violation(c, what);
    }
    return fn(c, pkt);
}

/* ---------- frames to the shard ---------- */

/* Send the frame in w->frame; on a full link the connection waits (FE_PKT_RETRY). */
static int link_send(fe_conn_t *c)
{
    sg_rc rc = fe_link_send(c->w, &c->w->frame);
    if (rc == SG_OK)
        return FE_PKT_DONE;
    if (rc == SG_E_FULL) {
        fe_conn_pause(c, FE_P_LINK);
        if (c->state != FE_CLOSED)
            fe_worker_block(c->w, c);
        return c->state == FE_CLOSED ? FE_PKT_DONE : FE_PKT_RETRY;
    }
    fe_conn_close(c, "router-link-failed");
    return FE_PKT_DONE;
}

void fe_session_send_bookkeeping(fe_conn_t *c, const sg_wbuf_t *f)
{
    if (fe_link_send_queued(c->w, f) != SG_E_FULL || c->state == FE_CLOSED)
        return;
    fe_conn_pause(c, FE_P_LINK);   /* the packet is done; the next ones wait for room */
    if (c->state != FE_CLOSED)
        fe_worker_block(c->w, c);
}

static void send_simple(fe_conn_t *c, uint8_t type, void (*body)(sg_wbuf_t *, const void *), const void *arg)
{
    sg_wbuf_t *f = &c->w->frame;
    sg_wbuf_reset(f);
    if (fe_conn_frame_head(c, f, type, 0, 0) != SG_OK)
        return;
    if (body)
        body(f, arg);
    /* Session bookkeeping must reach the shard: it waits in order when the link is full. */
    fe_session_send_bookkeeping(c, f);
}

/* ---------- CONNECT ---------- */

static void connack(fe_conn_t *c, bool present, uint8_t code)
{
    /* A refused connection answers once: a late decision from the shard must not answer again,
     * and a CONNECT waiting for the link is not retried. */
    if (code != SG_MQTT_CONNACK_ACCEPTED && c->state == FE_AUTHENTICATING)
        c->state = FE_WAIT_CONNECT;
    if (code != SG_MQTT_CONNACK_ACCEPTED && (c->flags & FE_F_BLOCKED)) {
        fe_worker_unblock_conn(c->w, c);
        c->paused &= (uint8_t)~FE_P_LINK;
    }
    sg_wbuf_t *t = &c->w->tx;
    sg_wbuf_reset(t);
    if (sg_mqtt_encode_connack(t, present, code) != SG_OK)
        return;
    if (code == SG_MQTT_CONNACK_ACCEPTED)
        fe_conn_send(c, t->data, t->len);
    else
        fe_conn_send_and_close(c, t->data, t->len, "connect-refused");
}

static bool str_eq(sg_mqtt_str_t s, const char *z, size_t zl) { return s.len == zl && memcmp(s.p, z, zl) == 0; }

/* Username "{host}/{deviceId}/?api-version=..." (older SDKs omit the '?'); the id must equal the
 * client id; the host is not checked. */
static bool username_ok(sg_mqtt_str_t u, sg_mqtt_str_t id)
{
    const uint8_t *slash = memchr(u.p, '/', u.len);
    if (!slash || slash == u.p)
        return false;
    size_t rest = u.len - (size_t)(slash + 1 - u.p);
    const uint8_t *dev = slash + 1;
    const uint8_t *end = memchr(dev, '/', rest);
    size_t dlen = end ? (size_t)(end - dev) : rest;
    return dlen == id.len && memcmp(dev, id.p, dlen) == 0;
}

static bool topic_is_telemetry(fe_conn_t *c, sg_mqtt_str_t t, const char **bag, size_t *bag_len);
static sg_rc telemetry_frame(fe_conn_t *c, uint8_t qos, uint16_t pid, const char *bag, size_t bag_len,
                             const uint8_t *payload, size_t payload_len);

static int on_connect(fe_conn_t *c, const sg_mqtt_packet_t *pkt)
{
    /* The CONNECT may be processed again after waiting for room on the router link. */
    free(c->device);
    free(c->will);
    c->device = NULL;
    c->will = NULL;
    sg_mqtt_connect_t m;
    sg_rc rc = sg_mqtt_decode_connect(pkt, &m);
    if (rc != SG_OK)
        return violation(c, "malformed CONNECT");
    if (!str_eq(m.protocol_name, "MQTT", 4) || m.protocol_level != 4) {
        connack(c, false, SG_MQTT_CONNACK_BAD_PROTOCOL);
        return FE_PKT_DONE;
    }
    if (!sg_device_id_valid((const char *)m.client_id.p, m.client_id.len)) {
        SG_INFO("frontend", "connect.refused", "reason=\"client id is not a valid device id\"");
        connack(c, false, SG_MQTT_CONNACK_ID_REJECTED);
        return FE_PKT_DONE;
    }
    c->device = malloc(m.client_id.len + 1);
    if (!c->device) {
        fe_conn_close(c, "out-of-memory");
        return FE_PKT_DONE;
    }
    memcpy(c->device, m.client_id.p, m.client_id.len);
    c->device[m.client_id.len] = 0;
    if (!m.has_username || !username_ok(m.username, m.client_id)) {
        SG_INFO("frontend", "connect.refused", "device=%s reason=\"username must be {host}/{deviceId}/?api-version=... with this device id\"",
                c->device);
        connack(c, false, SG_MQTT_CONNACK_BAD_USER_OR_PASSWORD);
        return FE_PKT_DONE;
    }
    /* Without a password the credential is what the TLS handshake carried: a pre-shared key
     * (for the identity it was looked up for only) or a certificate. */
    bool no_password = !m.has_password || m.password.len == 0;
    uint8_t psk_hash[32];
    const char *psk_id = no_password ? fe_psk_identity(c, psk_hash) : NULL;
    if (psk_id && strcmp(psk_id, c->device) != 0) {
        SG_INFO("frontend", "connect.refused", "device=%s reason=\"the TLS PSK identity is another device's\"", c->device);
        connack(c, false, SG_MQTT_CONNACK_NOT_AUTHORIZED);
        return FE_PKT_DONE;
    }
    bool x509 = no_password && !psk_id && fe_conn_has_client_cert(c);
    if (!x509 && !psk_id && no_password) {
        SG_INFO("frontend", "connect.refused", "device=%s reason=\"no SAS token in the password and no client "
                "certificate in the TLS handshake\"", c->device);
        connack(c, false, SG_MQTT_CONNACK_NOT_AUTHORIZED);
        return FE_PKT_DONE;
    }
    if (!x509 && !psk_id && m.password.len > SG_SAS_MAX_TOKEN) {
        SG_INFO("frontend", "connect.refused", "device=%s reason=\"SAS token over %d bytes\"", c->device, SG_SAS_MAX_TOKEN);
        connack(c, false, SG_MQTT_CONNACK_NOT_AUTHORIZED);
        return FE_PKT_DONE;
    }
    if (m.will) {
        /* IoT Hub semantics: the will is telemetry the gateway sends if the device vanishes. */
        const char *bag;
        size_t bag_len;
        if (m.will_message.len > c->w->set->max_will) {
            SG_INFO("frontend", "connect.refused", "device=%s reason=\"will of %zu bytes; frontend.max_will is %u\"",
                    c->device, m.will_message.len, c->w->set->max_will);
            return violation(c, "will too large");
        }
        if (m.will_retain || m.will_qos > 1 || !topic_is_telemetry(c, m.will_topic, &bag, &bag_len) ||
            m.will_message.len > c->w->set->max_telemetry ||
            telemetry_frame(c, 0, 0, bag, bag_len, m.will_message.p, m.will_message.len) != SG_OK) {
            SG_INFO("frontend", "connect.refused", "device=%s reason=\"will must be QoS 0/1 telemetry on devices/{id}/messages/events/\"",
                    c->device);
            connack(c, false, SG_MQTT_CONNACK_NOT_AUTHORIZED);
            return FE_PKT_DONE;
        }
        c->will = malloc(sizeof *c->will + m.will_topic.len + m.will_message.len);
        if (!c->will) {
            fe_conn_close(c, "out-of-memory");
            return FE_PKT_DONE;
        }
        c->will->qos = m.will_qos;
        c->will->topic_len = (uint16_t)m.will_topic.len;
        c->will->payload_len = (uint32_t)m.will_message.len;
        memcpy(c->will->data, m.will_topic.p, m.will_topic.len);
        memcpy(c->will->data + m.will_topic.len, m.will_message.p, m.will_message.len);
    }
    uint16_t cap = c->w->set->keepalive_cap;
    c->keepalive = (m.keep_alive == 0 || m.keep_alive > cap) ? cap : m.keep_alive;

    sg_wbuf_t *f = &c->w->frame;
    sg_wire_auth_t a = {.method = SG_CRED_SAS, .credential = m.password.p, .credential_len = m.password.len};
    sg_wbuf_t chain;
    sg_wbuf_init(&chain, SG_WIRE_MAX_CREDENTIAL);
    if (x509) {
        if (fe_conn_client_chain(c, &chain) != SG_OK) {
            sg_wbuf_fini(&chain);
            SG_INFO("frontend", "connect.refused", "device=%s reason=\"client certificate chain over %d certificates or "
                    "%d bytes\"", c->device, SG_WIRE_MAX_CHAIN, SG_WIRE_MAX_CREDENTIAL);
            connack(c, false, SG_MQTT_CONNACK_NOT_AUTHORIZED);
            return FE_PKT_DONE;
        }
        a = (sg_wire_auth_t){.method = SG_CRED_X509, .credential = chain.data, .credential_len = chain.len};
    } else if (psk_id) {
        a = (sg_wire_auth_t){.method = SG_CRED_PSK, .credential = psk_hash, .credential_len = sizeof psk_hash};
    }
    sg_wbuf_reset(f);
    sg_rc erc = fe_conn_frame_head(c, f, SG_MSG_AUTH, m.clean_session ? SG_WIRE_F_CLEAN : 0, 0);
    if (erc == SG_OK)
        erc = sg_wire_put_auth(f, &a);
    sg_wbuf_fini(&chain);
    if (erc != SG_OK) {
        connack(c, false, SG_MQTT_CONNACK_BAD_USER_OR_PASSWORD);
        return FE_PKT_DONE;
    }
    int r = link_send(c);   /* a full link: wait for room, the CONNECT deadline still runs */
    if (r == FE_PKT_RETRY)
        fe_conn_schedule(c);   /* CONNACK 3 if the link stays full */
    if (r != FE_PKT_DONE || c->state == FE_CLOSED)
        return r;
    c->state = FE_AUTHENTICATING;
    fe_conn_pause(c, FE_P_AUTH);
    fe_conn_schedule(c);
    return FE_PKT_DONE;
}

static void on_auth_res(fe_conn_t *c, const sg_wire_hdr_t *h)
{
    if (c->state != FE_AUTHENTICATING)
        return;
    sg_wire_auth_res_t res = {0};
    if (h->type == SG_MSG_ERROR || (h->status == SG_AUTH_OK && sg_wire_get_auth_res(h, &res) != SG_OK)) {
        SG_WARN("frontend", "connect.unavailable", "device=%s reason=\"no shard answered\"", c->device);
        connack(c, false, SG_MQTT_CONNACK_UNAVAILABLE);
        return;
    }
    switch (h->status) {
    case SG_AUTH_OK: {
        int64_t now_s = sg_now_ms() / 1000;
        uint32_t now = sg_loop_now(c->w->loop);
        c->epoch = h->epoch;
        c->shard = h->shard < FE_SHARD_UNKNOWN ? (uint16_t)h->shard : FE_SHARD_UNKNOWN;
        c->state = FE_ONLINE;
        c->last_rx = now;
        c->tokens = c->w->set->telemetry_burst;
        c->tokens_at = sg_loop_now_ms(c->w->loop);
        c->token_expires = 0;
        if (res.expires > 0)
            /* loop seconds are 32-bit: a token valid for longer than ~136 years is "never" */
            c->token_expires = res.expires <= now_s                             ? now
                               : (uint64_t)(res.expires - now_s) >= UINT32_MAX - now ? 0
                                                                                  : now + (uint32_t)(res.expires - now_s);
        if (h->flags & SG_WIRE_F_SUBSCRIBED)
            c->flags |= FE_F_C2D;
        if (h->flags & SG_WIRE_F_SUBSCRIBED_QOS0)
            c->flags |= FE_F_C2D_QOS0;
        if (h->flags & SG_WIRE_F_METHODS)
            c->flags |= FE_F_METHODS;   /* a resumed session keeps its method subscription */
        if (h->flags & SG_WIRE_F_ACK0)
            c->flags |= FE_F_ACK0;
        if (h->flags & SG_WIRE_F_ANSWER)
            c->flags |= FE_F_SUB_ANSWER;
        atomic_fetch_add(&c->w->online, 1);
        connack(c, (h->flags & SG_WIRE_F_SESSION_PRESENT) != 0, SG_MQTT_CONNACK_ACCEPTED);
        if (c->state == FE_CLOSED)
            return;
        SG_DEBUG("frontend", "device.online", "device=%s epoch=%llu", c->device, (unsigned long long)c->epoch);
        fe_conn_schedule(c);
        fe_conn_resume(c, FE_P_AUTH);
        return;
    }
    case SG_AUTH_DISABLED:
        atomic_fetch_add(&c->w->auth_failed, 1);
        connack(c, false, SG_MQTT_CONNACK_NOT_AUTHORIZED);
        return;
    case SG_AUTH_UNAVAILABLE:
        connack(c, false, SG_MQTT_CONNACK_UNAVAILABLE);
        return;
    default:
        atomic_fetch_add(&c->w->auth_failed, 1);
        connack(c, false, SG_MQTT_CONNACK_NOT_AUTHORIZED);
        return;
    }
}

/* ---------- telemetry ---------- */

/* "devices/{id}/messages/events" optionally followed by "/" and a property bag. */
static bool topic_is_telemetry(fe_conn_t *c, sg_mqtt_str_t t, const char **bag, size_t *bag_len)
{
    size_t idl = strlen(c->device);
    static const char pre[] = "devices/", mid[] = "/messages/events";
    size_t need = sizeof pre - 1 + idl + sizeof mid - 1;
    if (t.len < need || memcmp(t.p, pre, sizeof pre - 1) != 0 ||
        memcmp(t.p + sizeof pre - 1, c->device, idl) != 0 ||
        memcmp(t.p + sizeof pre - 1 + idl, mid, sizeof mid - 1) != 0)
        return false;
    if (t.len == need) {
        *bag = "";
        *bag_len = 0;
        return true;
    }
    if (t.p[need] != '/')
        return false;
    *bag = (const char *)t.p + need + 1;
    *bag_len = t.len - need - 1;
    return true;
}

/* Build a TELEMETRY frame in w->frame. Never closes the connection (it also runs while the
 * connection closes, for the will): the caller decides what a failure means. */
/* QoS 1; or QoS 0 asking for an answer (credit) when its shard gives them and the connection is
 * online (a will, sent as the connection closes, asks none). */
static uint8_t telemetry_flags(const fe_conn_t *c, uint8_t qos)
{
    if (qos)
        return SG_WIRE_F_QOS1;
    return (c->flags & FE_F_ACK0) && c->state == FE_ONLINE ? SG_WIRE_F_ACK0 : 0;
}

static sg_rc telemetry_frame(fe_conn_t *c, uint8_t qos, uint16_t pid, const char *bag, size_t bag_len,
                             const uint8_t *payload, size_t payload_len)
{
    sg_prop_t props[SG_PROPBAG_MAX_PROPS];
    size_t n = 0;
    char store[SG_PROPBAG_MAX_PROPS * 2 + 4096];
    char *heap = NULL, *st = store;
    size_t st_cap = bag_len + SG_PROPBAG_MAX_PROPS * 2;
    if (st_cap > sizeof store) {
        heap = malloc(st_cap);
        if (!heap)
            return SG_E_NOMEM;
        st = heap;
    } else {
        st_cap = sizeof store;
    }
    sg_rc rc = sg_propbag_parse(bag, bag_len, props, SG_PROPBAG_MAX_PROPS, &n, st, st_cap);
    for (size_t i = 0; rc == SG_OK && i < n; i++)
        if (!sg_mqtt_valid_utf8((const uint8_t *)props[i].key, strlen(props[i].key)) ||
            !sg_mqtt_valid_utf8((const uint8_t *)props[i].value, strlen(props[i].value)))
            rc = SG_E_MALFORMED;
    if (rc != SG_OK) {
        free(heap);
        return rc == SG_E_TOO_BIG ? SG_E_TOO_BIG : SG_E_MALFORMED;
    }
    sg_wbuf_t *f = &c->w->frame;
    sg_wbuf_reset(f);
    rc = fe_conn_frame_head(c, f, SG_MSG_TELEMETRY, telemetry_flags(c, qos), 0);
    if (rc == SG_OK)
        rc = sg_wire_put_telemetry_head(f, pid, (uint16_t)n);
    for (size_t i = 0; rc == SG_OK && i < n; i++)
        rc = sg_wire_put_prop(f, props[i].key, strlen(props[i].key), props[i].value, strlen(props[i].value));
    if (rc == SG_OK)
        rc = sg_wire_put_payload(f, payload, payload_len);
    free(heap);
    return rc == SG_OK ? SG_OK : SG_E_FULL;
}

static const char *telemetry_error(sg_rc rc)
{
    switch (rc) {
    case SG_E_TOO_BIG: return "more than 64 properties in the topic";
    case SG_E_MALFORMED: return "malformed property bag in the topic (bad %-escape, empty key or not UTF-8)";
    case SG_E_NOMEM: return "out of memory";
    }
    return "telemetry message too large";
}

/* ---------- publishes waiting for their durable acknowledgement ---------- */

/* ---------- credit ---------- */

static uint32_t credit_slot(const fe_conn_t *c)
{
    return c->shard < SG_WIRE_MAX_SHARDS ? c->shard : SG_WIRE_MAX_SHARDS;
}

static bool credit_spent(const fe_conn_t *c)
{
    return c->w->credit_used[credit_slot(c)] >= c->w->set->credit;
}

static void credit_take(fe_conn_t *c, uint32_t bytes)
{
    c->w->credit_used[credit_slot(c)] += bytes;
    atomic_fetch_add(&c->w->credit_bytes, bytes);
}

static void credit_give(fe_conn_t *c, uint32_t bytes)
{
    fe_worker_t *w = c->w;
    uint32_t *used = &w->credit_used[credit_slot(c)];
    bool was_spent = *used >= w->set->credit;
    *used = *used >= bytes ? *used - bytes : 0;
    atomic_fetch_sub(&w->credit_bytes, bytes);
    if (was_spent && *used < w->set->credit && w->n_credit_wait > 0)
        w->credit_back = true;
}

/* c reads no further packets until its shard's credit comes back. */
static void credit_wait(fe_conn_t *c)
{
    fe_worker_t *w = c->w;
    if (!(c->paused & FE_P_CREDIT))
        atomic_fetch_add(&w->credit_waits, 1);   /* a new wait, not one that goes on */
    fe_conn_pause(c, FE_P_CREDIT);
    if (c->flags & FE_F_CREDIT_WAIT)
        return;
    if (w->n_credit_wait == w->cap_credit_wait) {
        uint32_t cap = w->cap_credit_wait ? w->cap_credit_wait * 2 : 64;
        uint64_t *p = realloc(w->credit_wait, cap * sizeof *p);
        if (!p) {
            fe_conn_close(c, "out-of-memory");
            return;
        }
        w->credit_wait = p;
        w->cap_credit_wait = cap;
    }
    w->credit_wait[w->n_credit_wait++] = fe_conn_handle(c);
    c->flags |= FE_F_CREDIT_WAIT;
}

static void q0_reclaim(fe_conn_t *c);

void fe_session_credit_return(fe_conn_t *c)
{
    for (uint16_t i = 0; c->flight && i < c->pending; i++)
        credit_give(c, c->flight[i].len);
    q0_reclaim(c);
}

/* A QoS 0 publish sent asking for an answer takes credit until one comes. */
static void q0_sent(fe_conn_t *c, uint32_t bytes)
{
    credit_take(c, bytes);
    c->q0_at = sg_loop_now(c->w->loop);
    if (c->q0_n++ == 0)
        fe_conn_schedule(c);   /* the deadline of q0_reclaim */
    c->q0_bytes += bytes;
}

/* All QoS 0 credit of c back at once: answers that will not come (their shard or router was
 * lost, or the link to it dropped). An answer that still comes takes a share of later publishes'
 * credit, whose own answer then finds none: the sums balance. */
static void q0_reclaim(fe_conn_t *c)
{
    credit_give(c, c->q0_bytes);
    c->q0_bytes = 0;
    c->q0_n = 0;
}

/* One answered (stored, or refused by a full queue on the way). Answers can come in another order
 * than the publishes (a router's refusal overtakes a shard's answers), so each returns an equal
 * share and the last one the rest: the sum returned is the sum taken. */
static void q0_answered(fe_conn_t *c)
{
    if (c->q0_n == 0)
        return;
    uint32_t share = c->q0_n == 1 ? c->q0_bytes : c->q0_bytes / c->q0_n;
    c->q0_at = sg_loop_now(c->w->loop);
    c->q0_n--;
    c->q0_bytes -= share;
    credit_give(c, share);
}

void fe_session_credit_resume(fe_worker_t *w)
{
    if (!w->credit_back)
        return;
    w->credit_back = false;
    /* The list is taken whole: a resumed connection that reads into a spent credit again joins
     * the new list. */
    uint64_t *list = w->credit_wait;
    uint32_t n = w->n_credit_wait;
    w->credit_wait = NULL;
    w->n_credit_wait = w->cap_credit_wait = 0;
    for (uint32_t i = 0; i < n; i++) {
        fe_conn_t *c = fe_conn_by_handle(w, list[i]);
        if (!c || c->state == FE_CLOSED)
            continue;
        c->flags &= (uint16_t)~FE_F_CREDIT_WAIT;
        if (credit_spent(c))
            credit_wait(c);   /* another shard's credit came back: this one still waits */
        else
            fe_conn_resume(c, FE_P_CREDIT);
    }
    free(list);
}

/* pid went to the shard as the frame in w->frame: kept until acknowledged, so that it can be
 * sent again if a tier refuses it for a full queue. */
static bool flight_add(fe_conn_t *c, uint16_t pid)
{
    if (c->pending >= c->w->set->window)
        return false;   /* never past the array: a full window stops reading (FE_P_WINDOW) */
    if (!c->flight && !(c->flight = malloc(c->w->set->window * sizeof *c->flight)))
        return false;
    const sg_wbuf_t *f = &c->w->frame;
    uint8_t *copy = malloc(f->len);
    if (!copy)
        return false;
    memcpy(copy, f->data, f->len);
    fe_flight_add(c->flight, &c->pending, pid, sg_loop_now(c->w->loop), copy, (uint32_t)f->len);
    credit_take(c, (uint32_t)f->len);
    c->pending_since = c->flight[0].at;
    return true;
}

void fe_session_puback_in_order(fe_conn_t *c, uint16_t pid)
{
    /* Behind earlier publishes: an entry already acknowledged, without a frame or credit, leaves
     * with them (fe_flight_pop_acked). It takes a place in the window like a publish: a window it
     * fills stops reading as on_publish does, or the next publish would go past the array. A
     * full window is not read, so there is room; were there none, the PUBACK would go now, out of
     * order rather than lost. */
    if (c->pending > 0 && c->pending < c->w->set->window) {
        fe_flight_add(c->flight, &c->pending, pid, sg_loop_now(c->w->loop), NULL, 0);
        c->flight[c->pending - 1].acked = true;
        if (c->pending >= c->w->set->window)
            fe_conn_pause(c, FE_P_WINDOW);
        return;
    }
    sg_wbuf_t *t = &c->w->tx;
    sg_wbuf_reset(t);
    if (sg_mqtt_encode_ack(t, SG_MQTT_PUBACK, pid) == SG_OK)
        fe_conn_send(c, t->data, t->len);
}

/* After pops from the front: the ack deadline follows the oldest publish left. */
static void flight_settle(fe_conn_t *c)
{
    if (c->pending == 0) {
        free(c->flight);
        c->flight = NULL;
    } else {
        c->pending_since = c->flight[0].at;   /* the oldest one left */
    }
}

/* Telemetry token bucket (SPEC §5): a device over its rate is not read until the bucket refills,
 * so its PUBACKs slow down and nothing is dropped. */
static void refill(fe_conn_t *c)
{
    const fe_settings_t *s = c->w->set;
    uint32_t now = sg_loop_now_ms(c->w->loop), elapsed = now - c->tokens_at;
    uint64_t add = (uint64_t)elapsed * s->telemetry_rate / 1000;
    if (add == 0)
        return;   /* keep the fraction: tokens_at only moves by whole tokens */
    uint64_t t = c->tokens + add;
    if (t >= s->telemetry_burst) {
        c->tokens = s->telemetry_burst;
        c->tokens_at = now;
    } else {
        c->tokens = (uint16_t)t;
        /* rounded up: never credit the same milliseconds twice */
        c->tokens_at += (uint32_t)((add * 1000 + s->telemetry_rate - 1) / s->telemetry_rate);
    }
}

static bool take_token(fe_conn_t *c)
{
    refill(c);
    if (c->tokens == 0)
        return false;
    c->tokens--;
    return true;
}

static int on_publish(fe_conn_t *c, const sg_mqtt_packet_t *pkt)
{
    sg_mqtt_publish_t p;
    sg_rc rc = sg_mqtt_decode_publish(pkt, &p);
    if (rc != SG_OK)
        return violation(c, rc == SG_E_PROTOCOL ? "wildcard in a PUBLISH topic" : "malformed PUBLISH");
    if (p.qos > 1)
        return violation(c, "QoS 2 is not supported");
    if (p.retain)
        return violation(c, "RETAIN is not supported");
    /* a method response: its own checks (fe_methods.c), but it spends from the same rate bucket */
    bool method_res = fe_methods_is_response(p.topic);
    const char *bag = NULL;
    size_t bag_len = 0;
    fe_inquiry_topic_t inq;
    bool inquiry = false;
    if (!method_res && !topic_is_telemetry(c, p.topic, &bag, &bag_len) &&
        !(inquiry = fe_inquiry_topic(c->device, strlen(c->device), p.topic, &inq))) {
        char what[200], topic[128];
        sg_log_clean(topic, sizeof topic, p.topic.p, p.topic.len);
        snprintf(what, sizeof what, "topic '%s' is not this device's telemetry or inquiry topic", topic);
        return violation(c, what);
    }
    if (!method_res && p.payload.len > c->w->set->max_telemetry)
        return violation(c, "telemetry payload over the size limit");
    if (!method_res && credit_spent(c)) {
        credit_wait(c);   /* read again when acknowledgements bring credit back */
        return c->state == FE_CLOSED ? FE_PKT_DONE : FE_PKT_RETRY;
    }
    if (!take_token(c)) {
        fe_conn_pause(c, FE_P_RATE);
        if (c->state == FE_CLOSED)
            return FE_PKT_DONE;
        fe_conn_schedule(c);
        return FE_PKT_RETRY;
    }
    if (method_res)
        return fe_methods_response(c, &p);
    sg_rc trc = inquiry ? fe_inquiry_frame(c, &p, &inq)
                        : telemetry_frame(c, p.qos, p.packet_id, bag, bag_len, p.payload.p, p.payload.len);
    if (trc != SG_OK)
        return violation(c, telemetry_error(trc));
    int r = link_send(c);
    if (r == FE_PKT_RETRY)
        c->tokens++;   /* not sent: the retry takes its token again */
    if (r != FE_PKT_DONE || c->state == FE_CLOSED)
        return r;
    atomic_fetch_add(&c->w->telemetry_in, 1);
    if (p.qos == 0 && !inquiry && telemetry_flags(c, 0))
        q0_sent(c, (uint32_t)c->w->frame.len);
    if (p.qos == 1) {
        if (!flight_add(c, p.packet_id)) {
            fe_conn_close(c, c->pending >= c->w->set->window ? "window-overrun" : "out-of-memory");
            return FE_PKT_DONE;
        }
        if (c->pending == 1)
            fe_conn_schedule(c);
        if (c->pending >= c->w->set->window)
            fe_conn_pause(c, FE_P_WINDOW);
    }
    return FE_PKT_DONE;
}

/* Room for one more element in a worker's growing array (*arr of n used, *cap allocated; the
 * first allocation holds `first`); false when memory ran out. */
static bool room_for_one(void **arr, uint32_t n, uint32_t *cap, size_t elem, uint32_t first)
{
    if (n < *cap)
        return true;
    uint32_t c = *cap ? *cap * 2 : first;
    void *p = realloc(*arr, (size_t)c * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = c;
    return true;
}

/* A router or shard refused publish e for a full queue: it goes again after a wait that doubles
 * from 20 ms to 1.28 s with each refusal. Meanwhile the window stays as it is (no new publishes
 * are read beyond it), the PUBACK waits, and the ack timeout still runs from its first send. */
static void send_again_later(fe_conn_t *c, fe_flight_t *e)
{
    fe_worker_t *w = c->w;
    uint32_t wait = 20u << (e->refusals < 6 ? e->refusals : 6);
    if (e->refusals < UINT8_MAX)
        e->refusals++;
    e->retry_at = sg_loop_now_ms(w->loop) + wait;
    if (e->retry_at == 0)
        e->retry_at = 1;
    SG_INFO("frontend", "telemetry.busy", "device=%s pid=%u refusals=%u retry_ms=%u", c->device, e->pid, e->refusals,
            wait);
    if (c->flags & FE_F_RETRY)
        return;
    if (!room_for_one((void **)&w->retry, w->n_retry, &w->cap_retry, sizeof *w->retry, 64)) {
        fe_conn_close(c, "out-of-memory");
        return;
    }
    w->retry[w->n_retry++] = fe_conn_handle(c);
    c->flags |= FE_F_RETRY;
}

void fe_session_retry(fe_worker_t *w)
{
    uint32_t now = sg_loop_now_ms(w->loop), keep = 0;
    for (uint32_t i = 0; i < w->n_retry; i++) {
        fe_conn_t *c = fe_conn_by_handle(w, w->retry[i]);
        if (!c || c->state != FE_ONLINE)
            continue;   /* closed: its publishes went with it */
        bool waiting = false;
        for (uint16_t k = 0; k < c->pending && c->state == FE_ONLINE; k++) {
            fe_flight_t *e = &c->flight[k];
            if (e->retry_at == 0)
                continue;
            if ((int32_t)(now - e->retry_at) < 0) {
                waiting = true;
                continue;
            }
            sg_wbuf_t frame = {.data = e->frame, .len = e->len, .cap = e->len, .max = e->len};
            sg_rc rc = fe_link_send(w, &frame);
            if (rc == SG_OK) {
                e->retry_at = 0;
            } else if (rc == SG_E_FULL) {
                waiting = true;   /* the link itself is full: next pass */
                break;
            } else {
                fe_conn_close(c, "router-link-failed");
            }
        }
        if (waiting && c->state == FE_ONLINE)
            w->retry[keep++] = w->retry[i];
        else
            c->flags &= (uint16_t)~FE_F_RETRY;
    }
    w->n_retry = keep;
}

/* ---------- bookkeeping sent again ---------- */

#define OWED_WAIT_MS 50

static void resubscribe(fe_conn_t *c);
static void complete(fe_conn_t *c, uint16_t pid);

/* A subscription change or a completion was refused for a full queue on the way: it goes again
 * in OWED_WAIT_MS (refused again, it is owed again). The refusal does not say which channel a
 * SUBSCRIBE was for, so every channel's state at that time is sent (the shard ignores what does
 * not change it; a later change may have gone through meanwhile); a completion as it was. */
static void owe(fe_conn_t *c, uint8_t type, uint16_t pid)
{
    fe_worker_t *w = c->w;
    uint64_t handle = fe_conn_handle(c);
    SG_INFO("frontend", "bookkeeping.busy", "device=%s lost=%s pid=%u retry_ms=%d", c->device,
            sg_wire_type_name(type), pid, OWED_WAIT_MS);
    for (uint32_t i = 0; i < w->n_owed; i++)
        if (w->owed[i].handle == handle && w->owed[i].type == type && (type == SG_MSG_SUBSCRIBE || w->owed[i].pid == pid))
            return;   /* already owed */
    if (!room_for_one((void **)&w->owed, w->n_owed, &w->cap_owed, sizeof *w->owed, 16)) {
        fe_conn_close(c, "out-of-memory");
        return;
    }
    uint32_t at = sg_loop_now_ms(w->loop) + OWED_WAIT_MS;
    w->owed[w->n_owed++] = (fe_owed_t){.handle = handle, .epoch = c->epoch, .retry_at = at ? at : 1, .pid = pid,
                                       .type = type};
}

void fe_session_owed(fe_worker_t *w)
{
    uint32_t now = sg_loop_now_ms(w->loop), keep = 0, n = w->n_owed;
    for (uint32_t i = 0; i < n; i++) {
        fe_owed_t o = w->owed[i];
        if ((int32_t)(now - o.retry_at) < 0) {
            w->owed[keep++] = o;
            continue;
        }
        fe_conn_t *c = fe_conn_by_handle(w, o.handle);
        if (!c || c->state != FE_ONLINE || c->epoch != o.epoch)
            continue;   /* the session ended: what it owed went with it */
        if (o.type == SG_MSG_COMPLETE)
            complete(c, o.pid);
        else
            resubscribe(c);
    }
    /* sending queues (fe_link_send_queued) and adds nothing here */
    w->n_owed = keep;
}

static void on_telemetry_ack(fe_conn_t *c, const sg_wire_hdr_t *h)
{
    uint16_t pid;
    if (c->state != FE_ONLINE || h->epoch != c->epoch)
        return;
    if (h->type == SG_MSG_ERROR) {
        uint8_t about;
        uint16_t refused = 0;
        bool named = false;
        fe_flight_t *e = NULL;
        /* the oldest of that id on its way (one waiting to go again is not; a device may have
         * sent the id twice) */
        if (sg_wire_get_error(h, &about, &refused, &named) == SG_OK && refused != 0)
            for (uint16_t k = 0; k < c->pending && !e; k++)
                if (c->flight[k].pid == refused && !c->flight[k].acked && c->flight[k].retry_at == 0)
                    e = &c->flight[k];
        if (e && h->status == SG_WIRE_ERR_BUSY) {
            send_again_later(c, e);   /* a queue on the way was full: the connection stays */
            return;
        }
        /* A QoS 0 publish (named with id 0; an older router names none) is simply lost. */
        if (h->status == SG_WIRE_ERR_BUSY && refused == 0 && (named || c->pending == 0)) {
            q0_answered(c);
            SG_INFO("frontend", "telemetry.dropped", "device=%s reason=\"QoS 0 publish refused by a full queue\"",
                    c->device);
            return;
        }
        SG_WARN("frontend", "telemetry.unavailable", "device=%s reason=\"router could not reach the shard\"", c->device);
        fe_conn_close(c, "shard-unavailable");
        return;
    }
    if (h->status == SG_TELE_FULL) {
        /* not stored: the device sends it again after reconnecting (CONNACK 3 while the shard is
         * still full) */
        SG_WARN("frontend", "telemetry.refused", "device=%s reason=\"the device's shard has no room on its volume\"",
                c->device);
        fe_conn_close(c, "shard-storage-full");
        return;
    }
    if (h->status != SG_TELE_OK || sg_wire_get_pid(h, &pid) != SG_OK) {
        SG_INFO("frontend", "session.stale", "device=%s epoch=%llu", c->device, (unsigned long long)c->epoch);
        fe_conn_close(c, "stale-session");
        return;
    }
    fe_worker_t *w = c->w;
    if (pid == 0) {
        q0_answered(c);   /* a QoS 0 publish stored (packet ids of QoS 1 are never 0) */
        return;
    }
    fe_flight_t *e = c->flight ? fe_flight_find(c->flight, c->pending, pid) : NULL;
    if (!e)
        return;   /* nothing of that id waits (acknowledged already) */
    e->acked = true;
    e->retry_at = 0;
    /* PUBACKs in the order the publishes came: up to the first one that is not durable yet. */
    fe_flight_t done;
    bool popped = false;
    while (fe_flight_pop_acked(c->flight, &c->pending, &done)) {
        free(done.frame);
        credit_give(c, done.len);
        if (!room_for_one((void **)&w->acks, w->n_acks, &w->cap_acks, sizeof *w->acks, 256)) {
            fe_conn_close(c, "out-of-memory");
            return;
        }
        w->acks[w->n_acks] = (fe_ack_t){fe_conn_handle(c), w->n_acks, done.pid, false};
        w->n_acks++;
        popped = true;
    }
    if (!popped)
        return;   /* an earlier publish is not durable yet: these PUBACKs wait for it */
    flight_settle(c);
    /* Reading resumes after the PUBACKs are written (fe_session_flush_acks): a packet read now
     * could close the connection before durable publishes are acknowledged. */
    if ((c->paused & FE_P_WINDOW) && c->pending < w->set->window)
        w->acks[w->n_acks - 1].resume = true;
}

static int ack_order(const void *a, const void *b)
{
    const fe_ack_t *x = a, *y = b;
    if (x->handle != y->handle)
        return x->handle < y->handle ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

void fe_session_flush_acks(fe_worker_t *w)
{
    if (w->n_acks == 0)
        return;
    if (w->n_acks > 1)
        qsort(w->acks, w->n_acks, sizeof *w->acks, ack_order);   /* by connection, in order */
    sg_wbuf_t *t = &w->tx;
    uint32_t n = w->n_acks;
    for (uint32_t i = 0, j; i < n; i = j) {
        fe_conn_t *c = fe_conn_by_handle(w, w->acks[i].handle);   /* NULL once closed */
        bool resume = false;
        sg_wbuf_reset(t);
        for (j = i; j < n && w->acks[j].handle == w->acks[i].handle; j++) {
            resume |= w->acks[j].resume;
            if (!c || c->state == FE_CLOSED)
                continue;
            if (sg_mqtt_encode_ack(t, SG_MQTT_PUBACK, w->acks[j].pid) != SG_OK) {
                fe_conn_send(c, t->data, t->len);   /* full: what is there goes, then the rest */
                sg_wbuf_reset(t);
                if (c->state == FE_CLOSED || sg_mqtt_encode_ack(t, SG_MQTT_PUBACK, w->acks[j].pid) != SG_OK) {
                    SG_ERROR("frontend", "puback.failed", "device=%s pid=%u", c->device ? c->device : "-",
                             w->acks[j].pid);
                    fe_conn_close(c, "internal-error");
                }
            }
        }
        if (c && c->state != FE_CLOSED && t->len > 0)
            fe_conn_send(c, t->data, t->len);
        if (resume && c && c->state != FE_CLOSED && c->pending < w->set->window)
            fe_conn_resume(c, FE_P_WINDOW);   /* may read and send: entries past n wait for the next flush */
    }
    /* Acknowledgements that came while resumed connections were read stay for the next flush. */
    memmove(w->acks, w->acks + n, (w->n_acks - n) * sizeof *w->acks);
    w->n_acks -= n;
}

void fe_session_shard_lost(fe_worker_t *w, uint16_t shard, const char *why)
{
    uint32_t closed = 0;
    for (uint32_t i = 0; i < w->set->max_connections; i++) {
        fe_conn_t *c = w->slots[i];
        if (!c || c->state != FE_ONLINE || (shard != FE_SHARD_UNKNOWN && c->shard != shard))
            continue;
        /* QoS 0 publishes the lost shard (or router) took in are never answered: their credit
         * comes back now, or the loop would count it as spent for ever and stop reading the
         * shard's devices. They were at most once. */
        if (c->q0_n > 0)
            q0_reclaim(c);
        if (c->pending == 0)
            continue;
        SG_INFO("frontend", "conn.unacknowledged", "device=%s pending=%u reason=%s", c->device, c->pending, why);
        fe_conn_close(c, why);
        closed++;
    }
    if (closed)
        SG_WARN("frontend", "publishes.lost", "peer=%s shard=%d connections=%u reason=\"%s: their devices send "
                "again after reconnecting\"", w->peer_id, shard == FE_SHARD_UNKNOWN ? -1 : (int)shard, closed, why);
}

/* ---------- cloud-to-device ---------- */

static bool filter_is(fe_conn_t *c, sg_mqtt_str_t f, const char *pre, const char *post)
{
    size_t pl = strlen(pre), idl = strlen(c->device), ql = strlen(post);
    return f.len == pl + idl + ql && memcmp(f.p, pre, pl) == 0 && memcmp(f.p + pl, c->device, idl) == 0 &&
           memcmp(f.p + pl + idl, post, ql) == 0;
}

static void put_subscribe_body(sg_wbuf_t *f, const void *arg)
{
    if (sg_wire_put_subscribe(f, SG_CHAN_C2D, *(const uint8_t *)arg) != SG_OK)
        sg_wbuf_reset(f);
}


/* Tell the shard the devicebound subscription changed (its QoS is kept for resumed sessions). */
static void c2d_subscription(fe_conn_t *c, bool on)
{
    uint8_t mode = !on ? SG_SUB_OFF : (c->flags & FE_F_C2D_QOS0) ? SG_SUB_QOS0 : SG_SUB_QOS1;
    if (on)
        c->flags |= FE_F_C2D;
    else
        c->flags &= (uint16_t)~FE_F_C2D;
    send_simple(c, SG_MSG_SUBSCRIBE, put_subscribe_body, &mode);
}

/* ---------- SUBACKs held for the shard ---------- */

#define SUBACK_WAIT_S 10   /* longer without an answer (shard down, refused): the SUBACK goes anyway */

typedef struct fe_suback {
    uint64_t handle;
    uint64_t epoch;
    uint32_t since;        /* loop seconds */
    uint16_t pid;
    uint8_t n;
    uint8_t codes[64];
} fe_suback_t;

static fe_suback_t *suback_find(fe_worker_t *w, const fe_conn_t *c)
{
    uint64_t handle = fe_conn_handle(c);
    for (uint32_t i = 0; i < w->n_subacks; i++)
        if (w->subacks[i].handle == handle)
            return &w->subacks[i];
    return NULL;
}

/* Hold the SUBACK of packet pid until the shard answers (or SUBACK_WAIT_S): the connection's
 * input pauses meanwhile, so it holds at most one. Entries of closed connections are dropped
 * here. false when there is no memory (the connection is closed). */
static bool hold_suback(fe_conn_t *c, uint16_t pid, const uint8_t *codes, size_t n)
{
    fe_worker_t *w = c->w;
    uint32_t keep = 0;
    for (uint32_t i = 0; i < w->n_subacks; i++) {
        fe_conn_t *o = fe_conn_by_handle(w, w->subacks[i].handle);
        if (o && o->state == FE_ONLINE && o->epoch == w->subacks[i].epoch)
            w->subacks[keep++] = w->subacks[i];
    }
    w->n_subacks = keep;
    if (!room_for_one((void **)&w->subacks, w->n_subacks, &w->cap_subacks, sizeof *w->subacks, 16)) {
        fe_conn_close(c, "out-of-memory");
        return false;
    }
    fe_suback_t *e = &w->subacks[w->n_subacks++];
    *e = (fe_suback_t){.handle = fe_conn_handle(c), .epoch = c->epoch, .since = sg_loop_now(w->loop), .pid = pid,
                       .n = (uint8_t)n};
    memcpy(e->codes, codes, n);
    fe_conn_pause(c, FE_P_SUBACK);
    return true;
}

/* Send the held SUBACK (the shard answered, or it waited long enough) and read on. */
static void release_suback(fe_conn_t *c, fe_suback_t *e)
{
    fe_worker_t *w = c->w;
    sg_wbuf_t *t = &w->tx;
    sg_wbuf_reset(t);
    if (sg_mqtt_encode_suback(t, e->pid, e->codes, e->n) == SG_OK)
        fe_conn_send(c, t->data, t->len);
    *e = w->subacks[--w->n_subacks];
    if (c->state != FE_CLOSED)
        fe_conn_resume(c, FE_P_SUBACK);
}

static void on_subscribe_res(fe_conn_t *c, const sg_wire_hdr_t *h)
{
    uint16_t pid;
    fe_suback_t *e = c->state == FE_ONLINE && h->epoch == c->epoch ? suback_find(c->w, c) : NULL;
    if (e && sg_wire_get_pid(h, &pid) == SG_OK && pid == e->pid)
        release_suback(c, e);
}

/* Every channel's subscription state again (a SUBSCRIBE was refused for a full queue); a held
 * SUBACK is answered by the method subscription sent again. */
static void resubscribe(fe_conn_t *c)
{
    uint8_t mode = !(c->flags & FE_F_C2D) ? SG_SUB_OFF : (c->flags & FE_F_C2D_QOS0) ? SG_SUB_QOS0 : SG_SUB_QOS1;
    send_simple(c, SG_MSG_SUBSCRIBE, put_subscribe_body, &mode);
    fe_suback_t *e = suback_find(c->w, c);
    if (e && (c->flags & FE_F_METHODS))
        fe_methods_subscribe_answered(c, e->pid);
    else
        fe_methods_subscribe(c, c->flags & FE_F_METHODS);
}

static int on_subscribe(fe_conn_t *c, const sg_mqtt_packet_t *pkt)
{
    sg_mqtt_subscribe_t s;
    if (sg_mqtt_decode_subscribe(pkt, &s) != SG_OK)
        return violation(c, "malformed SUBSCRIBE");
    uint8_t codes[64];
    if (s.count > sizeof codes)
        return violation(c, "more than 64 filters in one SUBSCRIBE");
    sg_mqtt_str_t f;
    uint8_t qos;
    size_t i = 0;
    bool c2d = false, methods = false;
    while (sg_mqtt_subscribe_next(&s, &f, &qos)) {
        if (filter_is(c, f, "devices/", "/messages/devicebound/#")) {
            /* QoS 2 is granted as 1; a QoS 0 subscriber gets QoS 0 deliveries (MQTT forbids more
             * than granted), which the gateway completes as soon as they are written. */
            codes[i] = qos ? 1 : 0;
            if (qos)
                c->flags &= (uint16_t)~FE_F_C2D_QOS0;
            else
                c->flags |= FE_F_C2D_QOS0;
            c2d = true;
        } else if (fe_methods_is_filter(f)) {
            codes[i] = 0;   /* method requests go out at QoS 0 (IoT Hub grants the same) */
            methods = true;
        } else if (fe_inquiry_filter(c->device, strlen(c->device), f)) {
            codes[i] = 0;   /* answers go at QoS 0 to the live session */
            fe_inquiry_subscribed(c, true);
        } else {
            /* Foreign filters. */
            codes[i] = SG_MQTT_SUBACK_FAILURE;
            char filter[128];
            sg_log_clean(filter, sizeof filter, f.p, f.len);
            SG_INFO("frontend", "subscribe.refused", "device=%s filter=\"%s\"", c->device, filter);
        }
        i++;
    }
    if (methods && (c->flags & FE_F_SUB_ANSWER)) {
        /* A back-end may call a method as soon as the device has its SUBACK: that waits until the
         * shard has the subscription, and so does the rest of the device's input. */
        if (c2d)
            c2d_subscription(c, true);
        if (c->state != FE_CLOSED && hold_suback(c, s.packet_id, codes, i))
            fe_methods_subscribe_answered(c, s.packet_id);
        return FE_PKT_DONE;
    }
    sg_wbuf_t *t = &c->w->tx;
    sg_wbuf_reset(t);
    if (sg_mqtt_encode_suback(t, s.packet_id, codes, i) == SG_OK)
        fe_conn_send(c, t->data, t->len);
    if (c2d && c->state != FE_CLOSED)
        c2d_subscription(c, true);   /* also when already on: the granted QoS may have changed */
    if (methods && c->state != FE_CLOSED)
        fe_methods_subscribe(c, true);   /* also when already on: the shard delivers waiting calls */
    return FE_PKT_DONE;
}

static int on_unsubscribe(fe_conn_t *c, const sg_mqtt_packet_t *pkt)
{
    sg_mqtt_unsubscribe_t u;
    if (sg_mqtt_decode_unsubscribe(pkt, &u) != SG_OK)
        return violation(c, "malformed UNSUBSCRIBE");
    sg_mqtt_str_t f;
    bool c2d = false, methods = false;
    while (sg_mqtt_unsubscribe_next(&u, &f)) {
        c2d |= filter_is(c, f, "devices/", "/messages/devicebound/#");
        methods |= fe_methods_is_filter(f);
        if (fe_inquiry_filter(c->device, strlen(c->device), f))
            fe_inquiry_subscribed(c, false);
    }
    sg_wbuf_t *t = &c->w->tx;
    sg_wbuf_reset(t);
    if (sg_mqtt_encode_ack(t, SG_MQTT_UNSUBACK, u.packet_id) == SG_OK)
        fe_conn_send(c, t->data, t->len);
    if (c2d && c->state != FE_CLOSED && (c->flags & FE_F_C2D))
        c2d_subscription(c, false);
    if (methods && c->state != FE_CLOSED && (c->flags & FE_F_METHODS))
        fe_methods_subscribe(c, false);
    return FE_PKT_DONE;
}

static void put_pid_body(sg_wbuf_t *f, const void *arg)
{
    if (sg_wire_put_pid(f, *(const uint16_t *)arg) != SG_OK)
        sg_wbuf_reset(f);
}

/* A QoS 1 delivery with packet id pid went to the device: its PUBACK will be passed on. */
static void sent_add(fe_conn_t *c, uint16_t pid)
{
    if (!c->sent && !(c->sent = calloc(1, sizeof *c->sent)))
        return;
    for (uint8_t i = 0; i < c->sent->n; i++)
        if (c->sent->pid[i] == pid)
            return;   /* sent again (DUP) */
    if (c->sent->n < FE_SENT_MAX)
        c->sent->pid[c->sent->n++] = pid;
}

/* Take pid out of the deliveries awaiting a PUBACK; false if the connection never carried it. */
static bool sent_take(fe_conn_t *c, uint16_t pid)
{
    for (uint8_t i = 0; c->sent && i < c->sent->n; i++)
        if (c->sent->pid[i] == pid) {
            c->sent->pid[i] = c->sent->pid[--c->sent->n];
            if (c->sent->n == 0) {
                free(c->sent);
                c->sent = NULL;
            }
            return true;
        }
    return false;
}

static int on_puback(fe_conn_t *c, const sg_mqtt_packet_t *pkt)
{
    uint16_t pid;
    if (sg_mqtt_decode_ack(pkt, &pid) != SG_OK)
        return violation(c, "malformed PUBACK");
    /* Only the deliveries this connection carried are completed at the shard: an unsolicited
     * PUBACK (or one repeated) is dropped here, not turned into work for the shard. */
    if (!sent_take(c, pid)) {
        atomic_fetch_add(&c->w->protocol_errors, 1);
        SG_INFO("frontend", "mqtt.unsolicited_puback", "device=%s pid=%u reason=\"no delivery with this packet id "
                "awaits a PUBACK on this connection; dropped\"", c->device ? c->device : "-", pid);
        return FE_PKT_DONE;
    }
    /* Taken from the list above, so this PUBACK must not be read again: the completion waits in
     * order when the link is full, like the rest of a session's bookkeeping, instead of asking
     * for the packet again (FE_PKT_RETRY), which would find it no longer awaited and drop it. */
    complete(c, pid);
    return FE_PKT_DONE;
}

/* Complete a delivery at its shard: one the device acknowledged, or a QoS 0 one once written. */
static void complete(fe_conn_t *c, uint16_t pid)
{
    send_simple(c, SG_MSG_COMPLETE, put_pid_body, &pid);
}

void fe_session_written(fe_conn_t *c, uint16_t pid)
{
    if (c->state == FE_ONLINE)
        complete(c, pid);
}

/* "devices/{id}/messages/devicebound/" + "%24.mid=..&%24.to=..&%24.exp=..&user props" */
static void on_deliver(fe_conn_t *c, const sg_wire_hdr_t *h)
{
    sg_wire_deliver_t d;
    if (c->state != FE_ONLINE || h->epoch != c->epoch || !(c->flags & FE_F_C2D))
        return;
    if (sg_wire_get_deliver(h, &d) != SG_OK) {
        SG_WARN("frontend", "deliver.malformed", "device=%s", c->device);
        return;
    }
    sg_prop_t props[SG_PROPBAG_MAX_PROPS + 3];
    size_t n = 0;
    char mid[129], to[160], exp[25];
    snprintf(mid, sizeof mid, "%.*s", (int)d.message_id_len, d.message_id);
    snprintf(to, sizeof to, "/devices/%s/messages/devicebound", c->device);
    sg_rfc3339(d.expires_ms, exp);
    props[n++] = (sg_prop_t){"$.mid", mid};
    props[n++] = (sg_prop_t){"$.to", to};
    props[n++] = (sg_prop_t){"$.exp", exp};
    /* User properties arrive as length-prefixed pairs; the bag encoder wants C strings. */
    char *kv = malloc(d.props.rest.len + 2 * (size_t)d.props.count + 1), *o = kv;
    const char *k, *v;
    size_t kl, vl;
    while (kv && n < SG_PROPBAG_MAX_PROPS + 3 && sg_wire_props_next(&d.props, &k, &kl, &v, &vl)) {
        memcpy(o, k, kl);
        o[kl] = 0;
        props[n].key = o;
        o += kl + 1;
        memcpy(o, v, vl);
        o[vl] = 0;
        props[n++].value = o;
        o += vl + 1;
    }
    sg_wbuf_t bag;
    sg_wbuf_init(&bag, c->w->set->max_packet);
    static const char pre[] = "devices/", post[] = "/messages/devicebound/";
    sg_rc rc = kv ? sg_propbag_encode(&bag, props, n) : SG_E_NOMEM;
    free(kv);
    if (rc == SG_OK) {
        sg_mqtt_str_t topic[3] = {{(const uint8_t *)pre, sizeof pre - 1},
                                  {(const uint8_t *)c->device, strlen(c->device)},
                                  {NULL, 0}};
        /* the second half of the topic: "/messages/devicebound/" + bag */
        sg_wbuf_t tail;
        sg_wbuf_init(&tail, c->w->set->max_packet);
        rc = sg_wbuf_bytes(&tail, post, sizeof post - 1);
        if (rc == SG_OK)
            rc = sg_wbuf_bytes(&tail, bag.data, bag.len);
        topic[2] = (sg_mqtt_str_t){tail.data, tail.len};
        sg_wbuf_t *t = &c->w->tx;
        sg_wbuf_reset(t);
        bool qos0 = (c->flags & FE_F_C2D_QOS0) != 0;
        if (rc == SG_OK)
            rc = sg_mqtt_encode_publish3(t, qos0 ? 0 : 1, !qos0 && d.delivery_count > 1, false, qos0 ? 0 : d.packet_id,
                                         topic, d.payload, d.payload_len);
        if (rc == SG_OK) {
            fe_conn_send(c, t->data, t->len);
            atomic_fetch_add(&c->w->c2d_out, 1);
            /* completed once written: not when a closing WebSocket took nothing (after its close
             * frame), where the message stays queued for the next connection */
            if (qos0 && c->state == FE_ONLINE && (!c->ws || fe_ws_open(c->ws)))
                fe_conn_complete_when_written(c, d.packet_id);
            else if (!qos0)
                sent_add(c, d.packet_id);
        }
        sg_wbuf_fini(&tail);
    }
    sg_wbuf_fini(&bag);
    if (rc != SG_OK)
        SG_WARN("frontend", "deliver.encode_failed", "device=%s reason=%s", c->device, sg_strerror(rc));
}

/* ---------- the rest ---------- */

static int on_pingreq(fe_conn_t *c, const sg_mqtt_packet_t *pkt)
{
    if (sg_mqtt_decode_empty(pkt) != SG_OK)
        return violation(c, "malformed PINGREQ");
    sg_wbuf_t *t = &c->w->tx;
    sg_wbuf_reset(t);
    if (sg_mqtt_encode_empty(t, SG_MQTT_PINGRESP) == SG_OK)
        fe_conn_send(c, t->data, t->len);
    return FE_PKT_DONE;
}

static int on_disconnect(fe_conn_t *c, const sg_mqtt_packet_t *pkt)
{
    if (sg_mqtt_decode_empty(pkt) != SG_OK)
        return violation(c, "malformed DISCONNECT");
    c->flags |= FE_F_GRACEFUL;
    fe_conn_close(c, "disconnect");
    return FE_PKT_DONE;
}

void fe_session_closed(fe_conn_t *c, uint8_t was)
{
    if (was != FE_ONLINE)
        return;
    if (c->will && !(c->flags & FE_F_GRACEFUL)) {
        const char *bag;
        size_t bag_len;
        sg_mqtt_str_t topic = {c->will->data, c->will->topic_len};
        /* checked at CONNECT, so this builds; the will goes out before the session ends */
        if (topic_is_telemetry(c, topic, &bag, &bag_len) &&
            telemetry_frame(c, 0, 0, bag, bag_len, c->will->data + c->will->topic_len, c->will->payload_len) == SG_OK)
            (void)fe_link_send_queued(c->w, &c->w->frame);   /* waits in order when the link is full */
    }
    send_simple(c, SG_MSG_SESSION_END, NULL, NULL);
}

bool fe_session_timer(fe_conn_t *c, uint32_t now)
{
    const fe_settings_t *s = c->w->set;
    const char *why = NULL;
    if (fe_conn_connect_pending(c) && s->connect_timeout > 2) {   /* 1 s ticks: keep >= 1 s for the shard */
        if (now >= c->accepted_at + s->connect_timeout - 1) {
            /* The device's shard did not decide in time (down, unreachable, or the link stayed
             * full): say so. */
            SG_WARN("frontend", "connect.unavailable", "device=%s reason=\"no answer from the device's shard\"", c->device);
            connack(c, false, SG_MQTT_CONNACK_UNAVAILABLE);
            return c->state != FE_CLOSED;
        }
    } else if (c->state < FE_ONLINE) {
        if (now >= c->accepted_at + s->connect_timeout)
            why = "connect-timeout";
    } else if (!(c->paused & FE_P_HELD) && now >= c->last_rx + (uint32_t)c->keepalive * 3 / 2 + 1) {
        why = "keepalive-timeout";   /* not while the gateway itself holds the input back */
    } else if (c->token_expires && now >= c->token_expires) {
        why = "token-expired";
    } else if (c->pending && now >= c->pending_since + s->ack_timeout) {
        why = "ack-timeout";
    }
    if (!why) {
        if (c->q0_n > 0 && now >= c->q0_at + s->ack_timeout) {
            /* No answer to any of its QoS 0 publishes for the ack timeout: those on their way
             * were lost (a link dropped after cluster.link_timeout loses what it carried, without
             * a restart to tell). At most once: the connection stays, the credit comes back. */
            SG_WARN("frontend", "credit.reclaimed", "device=%s publishes=%u bytes=%u reason=\"QoS 0 publishes "
                    "unanswered for frontend.ack_timeout\"", c->device, c->q0_n, c->q0_bytes);
            q0_reclaim(c);
            if (c->state == FE_CLOSED)
                return false;
        }
        if (c->paused & FE_P_SUBACK) {
            fe_suback_t *e = suback_find(c->w, c);
            if (!e || now >= e->since + SUBACK_WAIT_S) {
                SG_WARN("frontend", "subscribe.unanswered", "device=%s reason=\"the shard did not confirm the method "
                        "subscription in %d s: SUBACK sent\"", c->device, SUBACK_WAIT_S);
                if (e)
                    release_suback(c, e);
                else
                    fe_conn_resume(c, FE_P_SUBACK);
                if (c->state == FE_CLOSED)
                    return false;
            }
        }
        if (c->paused & FE_P_RATE) {
            refill(c);
            if (c->tokens > 0) {
                fe_conn_resume(c, FE_P_RATE);   /* the bucket has refilled */
                return c->state != FE_CLOSED;
            }
        }
        return true;
    }
    SG_INFO("frontend", "conn.timeout", "device=%s reason=%s", c->device ? c->device : "-", why);
    fe_conn_close(c, why);
    return false;
}

/* A session the shard believes in but whose connection is gone (it closed while its CONNECT was
 * being decided, or before a delivery arrived): tell the shard to end it. */
static void end_orphan(fe_worker_t *w, const sg_wire_hdr_t *h)
{
    /* the header names the session as the frame about it did (h->device is not NUL-terminated) */
    char device[SG_DEVICE_ID_MAX + 1];
    snprintf(device, sizeof device, "%.*s", (int)h->device_len, h->device);
    sg_wbuf_reset(&w->frame);
    if (sg_frame_session_head(&w->frame, SG_MSG_SESSION_END, &(sg_frame_session_t){device, h->corr, h->epoch}, 0, 0) ==
        SG_OK)
        (void)fe_link_send_queued(w, &w->frame);   /* waits in order when the link is full */
}

void fe_session_frame(fe_worker_t *w, const sg_wire_hdr_t *h)
{
    if (fe_psk_is_frame(h)) {   /* for a handshake: the connection has no device yet */
        fe_psk_frame(w, h);
        return;
    }
    fe_conn_t *c = fe_conn_by_handle(w, h->corr);
    if (!c || !c->device || h->device_len != strlen(c->device) || memcmp(h->device, c->device, h->device_len) != 0) {
        SG_DEBUG("frontend", "frame.orphan", "type=%s", sg_wire_type_name(h->type));
        if (h->device_len && ((h->type == SG_MSG_AUTH_RES && h->status == SG_AUTH_OK) || h->type == SG_MSG_DELIVER))
            end_orphan(w, h);
        return;
    }
    if (h->type == SG_MSG_AUTH_RES && h->status == SG_AUTH_OK && c->state != FE_AUTHENTICATING) {
        end_orphan(w, h);   /* the CONNECT was already refused (shard too slow): end that session */
        return;
    }
    if (h->type == SG_MSG_DELIVER && (c->state != FE_ONLINE || h->epoch != c->epoch)) {
        /* the connection was reused by a newer session of this device on this loop */
        if (c->state != FE_ONLINE || h->epoch < c->epoch)
            end_orphan(w, h);
        return;
    }
    uint8_t about = h->type;
    uint16_t refused_pid;
    bool named;
    if (h->type == SG_MSG_ERROR && sg_wire_get_error(h, &about, &refused_pid, &named) != SG_OK)
        return;
    switch (about) {
    case SG_MSG_AUTH_RES:
    case SG_MSG_AUTH: on_auth_res(c, h); break;
    case SG_MSG_TELEMETRY_ACK:
    case SG_MSG_INQUIRY:
    case SG_MSG_TELEMETRY: on_telemetry_ack(c, h); break;
    case SG_MSG_INQUIRY_RES: fe_inquiry_answer(c, h); break;
    case SG_MSG_COMPLETE:
    case SG_MSG_SUBSCRIBE:
        /* Refused for a full queue: sent again (a completion only when the refusal names it: an
         * older router does not). Otherwise the shard never saw this acknowledgement or
         * subscription change: start over. */
        if (h->type == SG_MSG_ERROR && c->state == FE_ONLINE && h->status == SG_WIRE_ERR_BUSY &&
            h->epoch == c->epoch && (about == SG_MSG_SUBSCRIBE || named)) {
            owe(c, about, refused_pid);
        } else if (h->type == SG_MSG_ERROR && c->state == FE_ONLINE) {
            SG_WARN("frontend", "session.unavailable", "device=%s lost=%s", c->device, sg_wire_type_name(about));
            fe_conn_close(c, "shard-unavailable");
        }
        break;
    case SG_MSG_DELIVER: on_deliver(c, h); break;
    case SG_MSG_SUBSCRIBE_RES: on_subscribe_res(c, h); break;
    case SG_MSG_METHOD: fe_methods_frame(c, h); break;
    case SG_MSG_KICK:
        if (h->epoch == c->epoch && c->state == FE_ONLINE) {
            uint8_t reason = 0;
            if (sg_wire_get_u8(h, &reason) != SG_OK)
                reason = 0;
            SG_INFO("frontend", "session.kicked", "device=%s reason=%s", c->device,
                    reason == SG_KICK_REVOKED ? "revoked" : reason == SG_KICK_TAKEOVER ? "taken-over" : "stale");
            c->state = FE_WAIT_CONNECT;   /* the shard has ended the session: no SESSION_END */
            fe_conn_close(c, "kicked");
        }
        break;
    default:
        SG_DEBUG("frontend", "frame.unexpected", "type=%s", sg_wire_type_name(h->type));
        break;
    }
}
