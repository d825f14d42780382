/* sg_page_test.c — a compact telemetry page renders as the same text a shard writes as JSON
 * (properties with characters that need escaping, one that is not UTF-8, a group), the JSON
 * length counted for a record is exact when nothing needs escaping, a page the counting let grow
 * past the cap ends at the last record that fits (and says so in "next"), and a damaged body is
 * refused. */
#include "sg_page.h"
#include "sg_test.h"

/* Property pairs (NULL-terminated) in wire form into w; p views them. */
static void props(sg_wbuf_t *w, const char *const *kv, sg_wire_props_t *p)
{
    uint16_t n = 0;
    while (kv[2 * n])
        n++;
    sg_wbuf_reset(w);
    CHECK_RC(sg_wbuf_u16(w, n), SG_OK);
    for (uint16_t i = 0; i < n; i++)
        CHECK_RC(sg_wire_put_prop(w, kv[2 * i], strlen(kv[2 * i]), kv[2 * i + 1], strlen(kv[2 * i + 1])), SG_OK);
    sg_cur_t c;
    sg_cur_init(&c, w->data, w->len);
    CHECK_RC(sg_wire_get_props(&c, p), SG_OK);
}

static sg_page_tele_t rec(int64_t off, const char *dev, sg_wire_props_t p, const char *payload, size_t n)
{
    return (sg_page_tele_t){.offset = off, .enqueued_ms = 1764480000123 + off, .device = dev, .device_len = strlen(dev),
                            .props = p, .payload = (const uint8_t *)payload, .payload_len = n};
}

/* The text of records t[0..n) as a shard writes it as JSON, and rendered from a compact page. */
static void both(const sg_page_tele_t *t, size_t n, int64_t next, const char *group, char **json, char **rendered)
{
    sg_wbuf_t a, b, out;
    sg_wbuf_init(&a, SG_WIRE_MAX_FRAME);
    sg_wbuf_init(&b, SG_WIRE_MAX_FRAME);
    sg_wbuf_init(&out, SG_WIRE_MAX_FRAME);
    sg_page_json_t j;
    CHECK_RC(sg_page_json_begin(&j, &a, 3), SG_OK);
    sg_page_out_t o;
    CHECK_RC(sg_page_out_begin(&o, &b, 3, 7, group), SG_OK);
    for (size_t i = 0; i < n; i++) {
        json_t *r = sg_page_tele_json(&t[i]);
        CHECK(sg_page_json_add(&j, r));
        json_decref(r);
        CHECK(sg_page_out_add(&o, &t[i]));
    }
    CHECK_RC(sg_page_json_end(&j, next, 7, group), SG_OK);
    sg_page_out_end(&o, next);
    CHECK_RC(sg_page_render(b.data, b.len, &out), SG_OK);
    *json = strndup((const char *)a.data, a.len);
    *rendered = strndup((const char *)out.data, out.len);
    sg_wbuf_fini(&a);
    sg_wbuf_fini(&b);
    sg_wbuf_fini(&out);
}

static void test_same_text(void)
{
    sg_wbuf_t w1, w2, w3;
    sg_wbuf_init(&w1, 4096);
    sg_wbuf_init(&w2, 4096);
    sg_wbuf_init(&w3, 4096);
    sg_wire_props_t none, plain, odd;
    props(&w1, (const char *const[]){NULL}, &none);
    props(&w2, (const char *const[]){"temp", "21", "$.ct", "application/json", NULL}, &plain);
    props(&w3, (const char *const[]){"q\"uote", "back\\slash\nline", "bad", "\xff\xfe", "ü", "ä/é", NULL}, &odd);
    sg_page_tele_t t[] = {rec(0, "dev-1", none, "hello", 5), rec(1, "tele-000001", plain, "", 0),
                          rec(12345678901, "a", odd, "\0\1\2\3", 4)};
    char *json, *rendered;
    both(t, 3, 12345678901, NULL, &json, &rendered);
    CHECK_STR(rendered, json);
    CHECK(strstr(json, "\"next\":12345678901,\"oldest\":7}") != NULL);
    free(json);
    free(rendered);
    both(t, 0, 41, "readers.1", &json, &rendered);
    CHECK_STR(rendered, json);
    CHECK_STR(json, "{\"partition\":3,\"records\":[],\"next\":41,\"oldest\":7,\"group\":\"readers.1\"}");
    free(json);
    free(rendered);

    /* the counted length is the dumped one when nothing needs escaping */
    for (int i = 0; i < 2; i++) {
        json_t *r = sg_page_tele_json(&t[i]);
        CHECK(sg_page_tele_json_len(&t[i]) == json_dumpb(r, NULL, 0, JSON_COMPACT));
        json_decref(r);
    }
    sg_wbuf_fini(&w1);
    sg_wbuf_fini(&w2);
    sg_wbuf_fini(&w3);
}

static void test_cap(void)
{
    /* 3 MiB payloads: 4 MiB of base64 each, so a page holds one of them whatever it counts */
    size_t big = 3u << 20;
    char *payload = calloc(1, big);
    sg_wbuf_t w, page, out;
    sg_wbuf_init(&w, 64);
    sg_wbuf_init(&page, SG_WIRE_MAX_FRAME);
    sg_wbuf_init(&out, SG_WIRE_MAX_FRAME);
    sg_wire_props_t none;
    props(&w, (const char *const[]){NULL}, &none);
    sg_page_tele_t a = rec(5, "d", none, payload, big - 10), b = rec(6, "d", none, payload, 100);
    sg_page_out_t o;
    CHECK_RC(sg_page_out_begin(&o, &page, 0, 0, NULL), SG_OK);
    CHECK(sg_page_out_add(&o, &a));    /* the first always goes in */
    CHECK(!sg_page_out_add(&o, &b));   /* its JSON would pass the cap */
    sg_page_out_end(&o, 5);
    CHECK_RC(sg_page_render(page.data, page.len, &out), SG_OK);
    CHECK(out.len > (4u << 20) - 100 && strstr((const char *)out.data, "\"next\":5,") != NULL);

    /* a page whose records turn out longer than counted ends at the last one that fits */
    sg_wbuf_reset(&page);
    CHECK_RC(sg_page_out_begin(&o, &page, 0, 0, NULL), SG_OK);
    CHECK(sg_page_out_add(&o, &a));
    o.json = 0;   /* as if the first had counted for nothing */
    CHECK(sg_page_out_add(&o, &b));
    sg_page_out_end(&o, 6);
    sg_wbuf_reset(&out);
    CHECK_RC(sg_page_render(page.data, page.len, &out), SG_OK);
    CHECK(strstr((const char *)out.data, "\"offset\":6") == NULL && strstr((const char *)out.data, "\"next\":5,") != NULL);

    /* damaged bodies */
    sg_wbuf_reset(&out);
    CHECK_RC(sg_page_render(page.data, page.len - 1, &out), SG_E_TRUNCATED);
    sg_wbuf_reset(&out);
    CHECK(sg_page_render(page.data, 10, &out) != SG_OK);
    free(payload);
    sg_wbuf_fini(&w);
    sg_wbuf_fini(&page);
    sg_wbuf_fini(&out);
}

int main(void)
{
    test_same_text();
    test_cap();
    TEST_DONE();
}
