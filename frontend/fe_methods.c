/* fe_methods.c — direct methods on one connection (SPEC §2): the $iothub/methods/POST/#
 * subscription (granted QoS 0 and recorded in the device's shard, which decides whether a call
 * can be delivered), method requests from the shard written as QoS 0 PUBLISHes on
 * $iothub/methods/POST/{name}/?$rid={rid}, and the device's answers on
 * $iothub/methods/res/{status}/?$rid={rid} passed to the shard. The frontend keeps no call state:
 * the shard holds every pending call and matches the rid (an unknown or stale rid is dropped
 * there), so a call follows the device to whichever frontend it reconnects to. */
#include <stdlib.h>
#include <string.h>
#include "fe_internal.h"
#include "sg_log.h"

static const char k_filter[] = "$iothub/methods/POST/#";
static const char k_post[] = "$iothub/methods/POST/";
static const char k_res[] = "$iothub/methods/res/";

bool fe_methods_is_filter(sg_mqtt_str_t f)
{
    return f.len == sizeof k_filter - 1 && memcmp(f.p, k_filter, f.len) == 0;
}

bool fe_methods_is_response(sg_mqtt_str_t t)
{
    return t.len >= sizeof k_res - 1 && memcmp(t.p, k_res, sizeof k_res - 1) == 0;
}

static void subscribe(fe_conn_t *c, bool on, bool answered, uint16_t pid)
{
    if (on)
        c->flags |= FE_F_METHODS;
    else
        c->flags &= (uint16_t)~FE_F_METHODS;
    sg_wbuf_t *f = &c->w->frame;
    sg_wbuf_reset(f);
    if (fe_conn_frame_head(c, f, SG_MSG_SUBSCRIBE, answered ? SG_WIRE_F_ANSWER : 0, 0) == SG_OK &&
        sg_wire_put_subscribe(f, SG_CHAN_METHODS, on ? SG_SUB_QOS0 : SG_SUB_OFF) == SG_OK &&
        (!answered || sg_wire_put_pid(f, pid) == SG_OK))
        fe_session_send_bookkeeping(c, f);   /* waits in order when the link is full */
}

void fe_methods_subscribe(fe_conn_t *c, bool on) { subscribe(c, on, false, 0); }

void fe_methods_subscribe_answered(fe_conn_t *c, uint16_t pid) { subscribe(c, true, true, pid); }

static int method_violation(fe_conn_t *c, const char *what)
{
    atomic_fetch_add(&c->w->protocol_errors, 1);
    SG_INFO("frontend", "mqtt.violation", "device=%s reason=\"%s\"", c->device, what);
    fe_conn_close(c, "protocol-violation");
    return FE_PKT_DONE;
}

int fe_methods_response(fe_conn_t *c, const sg_mqtt_publish_t *p)
{
    int32_t status;
    const char *rid = NULL;
    size_t rid_len = 0;
    if (!sg_method_res_topic(p->topic.p + sizeof k_res - 1, p->topic.len - (sizeof k_res - 1), &status, &rid, &rid_len))
        return method_violation(c, "method response topic is not $iothub/methods/res/{status}/?$rid={rid}");
    if (p->qos == 1) {   /* nothing to make durable: acknowledged at once, in order */
        fe_session_puback_in_order(c, p->packet_id);
        if (c->state == FE_CLOSED)
            return FE_PKT_DONE;
    }
    if (!sg_method_name_valid(rid, rid_len, SG_METHOD_RID_MAX)) {
        /* no call of this gateway has such an rid: harmless, dropped */
        char shown[80];
        sg_log_clean(shown, sizeof shown, (const uint8_t *)rid, rid_len);
        SG_INFO("frontend", "method.bad_rid", "device=%s rid=\"%s\" reason=\"no call has this request id; dropped\"",
                c->device, shown);
        return FE_PKT_DONE;
    }
    bool too_big = p->payload.len > c->w->set->max_method_response;
    if (too_big)
        SG_INFO("frontend", "method.response_too_large", "device=%s bytes=%zu limit=%u", c->device, p->payload.len,
                c->w->set->max_method_response);
    sg_wire_method_t m = {.rid = rid, .rid_len = rid_len, .status = status,
                          .payload = too_big ? NULL : p->payload.p, .payload_len = too_big ? 0 : p->payload.len};
    sg_wbuf_t *f = &c->w->frame;
    sg_wbuf_reset(f);
    if (fe_conn_frame_head(c, f, SG_MSG_METHOD_RES, 0,
                              too_big ? SG_METHOD_RES_TOO_BIG : SG_METHOD_RES_OK) != SG_OK ||
        sg_wire_put_method_res(f, &m) != SG_OK) {
        SG_WARN("frontend", "method.encode_failed", "device=%s", c->device);
        return FE_PKT_DONE;
    }
    /* The caller waits for this answer: it must not be lost to a full link (queued in order). */
    fe_session_send_bookkeeping(c, f);
    atomic_fetch_add(&c->w->method_responses, 1);
    return FE_PKT_DONE;
}

void fe_methods_frame(fe_conn_t *c, const sg_wire_hdr_t *h)
{
    sg_wire_method_t m;
    /* a call for an older session of this connection, or before the subscription: the shard
     * delivers it again to the session that subscribes */
    if (c->state != FE_ONLINE || h->epoch != c->epoch || !(c->flags & FE_F_METHODS))
        return;
    if (sg_wire_get_method(h, &m) != SG_OK) {
        SG_WARN("frontend", "method.malformed", "device=%s", c->device);
        return;
    }
    /* "$iothub/methods/POST/" + name + "/?$rid=" + rid: both checked by the frame reader */
    char tail[SG_METHOD_NAME_MAX + SG_METHOD_RID_MAX + 16];
    int tl = snprintf(tail, sizeof tail, "%.*s/?$rid=%.*s", (int)m.name_len, m.name, (int)m.rid_len, m.rid);
    sg_mqtt_str_t topic[3] = {{(const uint8_t *)k_post, sizeof k_post - 1}, {(const uint8_t *)tail, (size_t)tl}, {NULL, 0}};
    sg_wbuf_t *t = &c->w->tx;
    sg_wbuf_reset(t);
    sg_rc rc = sg_mqtt_encode_publish3(t, 0, false, false, 0, topic, m.payload, m.payload_len);
    if (rc != SG_OK) {
        SG_WARN("frontend", "method.encode_failed", "device=%s bytes=%zu reason=%s", c->device, m.payload_len,
                sg_strerror(rc));
        return;
    }
    fe_conn_send(c, t->data, t->len);
    atomic_fetch_add(&c->w->methods_out, 1);
}
