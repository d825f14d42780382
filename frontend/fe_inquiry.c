/* fe_inquiry.c — inquiries on a device connection; see fe_inquiry.h. An inquiry travels like a
 * telemetry message: the INQUIRY frame takes a place in the connection's window of publishes
 * waiting for their durable acknowledgement (the shard answers it with TELEMETRY_ACK), so its
 * PUBACK, rate limit, backpressure and retries are telemetry's. The answer comes back as
 * INQUIRY_RES and goes to the device as a QoS 0 PUBLISH when it subscribed to the answers. */
#include "fe_inquiry.h"
#include <stdio.h>
#include <string.h>
#include "fe_internal.h"
#include "sg_log.h"

static const char k_pre[] = "devices/", k_mid[] = "/inquiries/";

/* "devices/{device}/inquiries/" at the start of s: its length, or 0. */
static size_t prefix_len(const char *device, size_t dl, sg_mqtt_str_t s)
{
    size_t pl = sizeof k_pre - 1, ml = sizeof k_mid - 1;
    if (s.len < pl + dl + ml || memcmp(s.p, k_pre, pl) != 0 || memcmp(s.p + pl, device, dl) != 0 ||
        memcmp(s.p + pl + dl, k_mid, ml) != 0)
        return 0;
    return pl + dl + ml;
}

bool fe_inquiry_topic(const char *device, size_t device_len, sg_mqtt_str_t topic, fe_inquiry_topic_t *out)
{
    size_t at = prefix_len(device, device_len, topic);
    if (at == 0)
        return false;
    const char *t = (const char *)topic.p + at, *end = (const char *)topic.p + topic.len;
    const char *slash = memchr(t, '/', (size_t)(end - t));
    if (!slash || !sg_inquiry_name_valid(t, (size_t)(slash - t)))
        return false;
    out->name = t;
    out->name_len = (size_t)(slash - t);
    const char *q = slash + 1;
    static const char rid1[] = "?$rid=", rid2[] = "?%24rid=";
    size_t left = (size_t)(end - q);
    if (left > sizeof rid1 - 1 && memcmp(q, rid1, sizeof rid1 - 1) == 0)
        q += sizeof rid1 - 1;
    else if (left > sizeof rid2 - 1 && memcmp(q, rid2, sizeof rid2 - 1) == 0)
        q += sizeof rid2 - 1;
    else
        return false;
    out->rid = q;
    out->rid_len = (size_t)(end - q);
    return sg_inquiry_rid_valid(out->rid, out->rid_len);
}

bool fe_inquiry_filter(const char *device, size_t device_len, sg_mqtt_str_t filter)
{
    static const char tail[] = "res/#";
    size_t at = prefix_len(device, device_len, filter);
    return at != 0 && filter.len == at + sizeof tail - 1 && memcmp(filter.p + at, tail, sizeof tail - 1) == 0;
}

sg_rc fe_inquiry_frame(fe_conn_t *c, const sg_mqtt_publish_t *p, const fe_inquiry_topic_t *t)
{
    sg_wire_inquiry_t q = {.packet_id = p->packet_id, .name = t->name, .name_len = t->name_len, .rid = t->rid,
                           .rid_len = t->rid_len, .payload = p->payload.p, .payload_len = p->payload.len};
    sg_wbuf_t *f = &c->w->frame;
    sg_wbuf_reset(f);
    SG_GUARD(fe_conn_frame_head(c, f, SG_MSG_INQUIRY, p->qos ? SG_WIRE_F_QOS1 : 0, 0));
    return sg_wire_put_inquiry(f, &q) == SG_OK ? SG_OK : SG_E_FULL;
}

void fe_inquiry_subscribed(fe_conn_t *c, bool on)
{
    if (on)
        c->flags |= FE_F_INQUIRY_RES;
    else
        c->flags &= (uint16_t)~FE_F_INQUIRY_RES;
}

/* "devices/{id}/inquiries/res/{status}/?$rid={rid}", QoS 0, to the session the shard named. */
void fe_inquiry_answer(fe_conn_t *c, const sg_wire_hdr_t *h)
{
    const char *rid;
    size_t rid_len, len;
    const uint8_t *payload;
    if (c->state != FE_ONLINE || h->epoch != c->epoch)
        return;
    if (sg_wire_get_inquiry_res(h, &rid, &rid_len, &payload, &len) != SG_OK) {
        SG_WARN("frontend", "inquiry.malformed_answer", "device=%s", c->device);
        return;
    }
    if (!(c->flags & FE_F_INQUIRY_RES)) {
        SG_INFO("frontend", "inquiry.unsubscribed", "device=%s status=%u reason=\"the answer is dropped: the device "
                "has not subscribed to devices/{id}/inquiries/res/#\"", c->device, h->status);
        return;
    }
    char tail[48 + SG_INQUIRY_RID_MAX];
    int tl = snprintf(tail, sizeof tail, "/inquiries/res/%u/?$rid=%.*s", h->status, (int)rid_len, rid);
    sg_mqtt_str_t topic[3] = {{(const uint8_t *)k_pre, sizeof k_pre - 1},
                              {(const uint8_t *)c->device, strlen(c->device)},
                              {(const uint8_t *)tail, (size_t)tl}};
    sg_wbuf_t *t = &c->w->tx;
    sg_wbuf_reset(t);
    if (sg_mqtt_encode_publish3(t, 0, false, false, 0, topic, payload, len) == SG_OK)
        fe_conn_send(c, t->data, t->len);
    else
        SG_WARN("frontend", "inquiry.encode_failed", "device=%s bytes=%zu", c->device, len);
}
