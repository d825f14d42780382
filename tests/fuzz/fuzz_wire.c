/* fuzz_wire.c — libFuzzer harness for inter-tier frames (sg_wire): a frame from a peer tier is
 * untrusted. Decodes the header, then runs every body reader on it; anything that decodes must
 * re-encode to the same bytes. A BATCH is walked item by item (each item stays inside the input,
 * and the good items rebuild into a batch that reads back the same). A compact telemetry page
 * (sg_page.h) renders as JSON that parses, or is refused. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include "sg_page.h"
#include "sg_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_header_roundtrip(const uint8_t *data, const sg_wire_hdr_t *h)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, SG_WIRE_MAX_FRAME);
    if (sg_wire_encode_hdr(&w, h) != SG_OK)
        abort();
    size_t hl = (size_t)(h->body - data);
    if (w.len != hl || memcmp(w.data, data, hl) != 0)
        abort();
    sg_wbuf_fini(&w);
}

static void check_batch(const uint8_t *data, size_t size, const sg_wire_hdr_t *h)
{
    sg_cur_t c;
    const uint8_t *peer, *item;
    size_t peer_len, len;
    sg_wire_batch_t b;
    sg_wire_batch_init(&b);
    sg_wire_batch_begin(h, &c);
    while (sg_wire_batch_next(&c, &peer, &peer_len, &item, &len) == SG_OK) {
        if (peer + peer_len > data + size || item + len > data + size || len < 2 || item[1] == SG_MSG_BATCH)
            abort();
        if (sg_wire_batch_fits(&b, peer_len, len) && sg_wire_batch_add(&b, peer, peer_len, item, len) != SG_OK)
            abort();
    }
    if (b.n > 1) {
        sg_wire_hdr_t bh;
        if (sg_wire_decode(b.w.data, b.w.len, &bh) != SG_OK || bh.type != SG_MSG_BATCH)
            abort();
        uint32_t seen = 0;
        sg_wire_batch_begin(&bh, &c);
        while (sg_wire_batch_next(&c, &peer, &peer_len, &item, &len) == SG_OK)
            seen++;
        if (seen != b.n)
            abort();
    }
    sg_wire_batch_fini(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sg_wire_hdr_t h;
    if (sg_wire_decode(data, size, &h) != SG_OK)
        return 0;
    check_header_roundtrip(data, &h);
    if (h.type == SG_MSG_BATCH)
        check_batch(data, size, &h);
    if (h.type == SG_MSG_ADMIN_RES && (h.flags & SG_WIRE_F_PAGE)) {
        sg_wbuf_t w;
        sg_wbuf_init(&w, SG_WIRE_MAX_FRAME);
        /* (jansson reads no \u0000 in an object key, which a property's key may hold) */
        if (sg_page_render(h.body, h.body_len, &w) == SG_OK && !memmem(w.data, w.len, "\\u0000", 6)) {
            json_t *j = json_loadb((const char *)w.data, w.len, 0, NULL);
            if (!j || !json_is_array(json_object_get(j, "records")) || !json_is_integer(json_object_get(j, "next")))
                abort();
            json_decref(j);
        }
        sg_wbuf_fini(&w);
    }

    sg_wire_auth_t a;
    sg_wire_auth_res_t ar;
    sg_wire_telemetry_t t;
    sg_wire_deliver_t d;
    uint16_t pid, op;
    uint8_t u8, chan, mode;
    const char *s, *k, *v;
    size_t n, kl, vl;
    if (sg_wire_get_auth(&h, &a) == SG_OK && a.credential_len > h.body_len)
        abort();
    if (sg_wire_get_auth(&h, &a) == SG_OK && a.method == SG_CRED_X509) {
        const uint8_t *ders[SG_WIRE_MAX_CHAIN];
        size_t lens[SG_WIRE_MAX_CHAIN], nc;
        if (sg_wire_get_chain(a.credential, a.credential_len, ders, lens, &nc) == SG_OK) {
            if (nc == 0 || nc > SG_WIRE_MAX_CHAIN)
                abort();
            for (size_t i = 0; i < nc; i++)
                if (lens[i] == 0 || ders[i] < a.credential || ders[i] + lens[i] > a.credential + a.credential_len)
                    abort();
        }
    }
    (void)!sg_wire_get_auth_res(&h, &ar);
    {
        const uint8_t *key;
        size_t keyl;
        if (sg_wire_get_psk(&h, &key, &keyl) == SG_OK && (keyl > SG_WIRE_MAX_PSK || (keyl && key + keyl > data + size)))
            abort();
    }
    if (sg_wire_get_telemetry(&h, &t) == SG_OK) {
        uint16_t count = t.props.count, seen = 0;
        while (sg_wire_props_next(&t.props, &k, &kl, &v, &vl))
            seen++;
        if (seen != count)
            abort();
        if (t.payload + t.payload_len > data + size)
            abort();
    }
    if (sg_wire_get_deliver(&h, &d) == SG_OK) {
        while (sg_wire_props_next(&d.props, &k, &kl, &v, &vl))
            if (k + kl > (const char *)data + size || v + vl > (const char *)data + size)
                abort();
    }
    (void)!sg_wire_get_pid(&h, &pid);
    (void)!sg_wire_get_u8(&h, &u8);
    bool named;
    (void)!sg_wire_get_error(&h, &u8, &pid, &named);
    (void)!sg_wire_get_subscribe(&h, &chan, &mode, &pid);
    /* the device's method answer topic is untrusted bytes too: read as one from the input */
    int32_t mst;
    const char *rid;
    size_t rid_len;
    if (sg_method_res_topic(data, size, &mst, &rid, &rid_len) &&
        (rid < (const char *)data || rid + rid_len > (const char *)data + size))
        abort();
    sg_wire_method_t m;
    if (sg_wire_get_method(&h, &m) == SG_OK &&
        (!sg_method_name_valid(m.rid, m.rid_len, SG_METHOD_RID_MAX) ||
         !sg_method_name_valid(m.name, m.name_len, SG_METHOD_NAME_MAX) || m.payload + m.payload_len > data + size))
        abort();
    if (sg_wire_get_method_res(&h, &m) == SG_OK &&
        (!sg_method_name_valid(m.rid, m.rid_len, SG_METHOD_RID_MAX) || m.payload + m.payload_len > data + size))
        abort();
    (void)!sg_wire_get_admin(&h, &op, &s, &n);
    (void)!sg_wire_get_json(&h, &s, &n);
    (void)!sg_wire_get_name(&h, &s, &n);
    uint64_t inc;
    (void)!sg_wire_get_shard_pong(&h, &s, &n, &inc);
    (void)!sg_wire_get_u64(&h, &inc);
    sg_wire_inquiry_t iq;
    if (sg_wire_get_inquiry(&h, &iq) == SG_OK) {
        if (iq.payload + iq.payload_len > data + size || !sg_inquiry_name_valid(iq.name, iq.name_len) ||
            !sg_inquiry_rid_valid(iq.rid, iq.rid_len))
            abort();
        sg_wbuf_t w;   /* re-encodes to the same body */
        sg_wbuf_init(&w, SG_WIRE_MAX_FRAME);
        if (sg_wire_put_inquiry(&w, &iq) != SG_OK || w.len != h.body_len || memcmp(w.data, h.body, w.len) != 0)
            abort();
        sg_wbuf_fini(&w);
    }
    const uint8_t *ip;
    if (sg_wire_get_inquiry_res(&h, &s, &n, &ip, &kl) == SG_OK &&
        (ip + kl > data + size || h.status < 100 || h.status > 599 || !sg_inquiry_rid_valid(s, n)))
        abort();
    sg_wire_router_pong_t rp;
    if (sg_wire_get_router_pong(&h, &rp) == SG_OK) {
        uint16_t seen = 0;
        while (sg_wire_router_pong_next(&rp, &inc))
            seen++;
        if (seen != rp.n)
            abort();
    }
    return 0;
}
