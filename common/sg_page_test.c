/* sg_page_test.c — a telemetry record is written as the text jansson dumps for it (json_pack of
 * its members, as the shard built records before: escapes, properties that are not UTF-8 or given
 * twice, random bytes), a compact telemetry page renders as the same text a shard writes as JSON
 * (a group too), the JSON length counted for a record is exact when nothing needs escaping, a page
 * the counting let grow past the cap ends at the last record that fits (and says so in "next"),
 * and a damaged body is refused. A record whose stamped properties are a credential kind reads as
 * the same text as one that stores them, whether the page carries the kind or spells them out,
 * and a page with kinds is smaller. */
#include "sg_page.h"
#include "sg_test.h"
#include "sg_time.h"

/* The record as jansson has it: what shards wrote before sg_page_tele_dump. */
static json_t *reference(const sg_page_tele_t *t)
{
    json_t *props = sg_page_props_json(t->props);
    if (t->stamped) {   /* stored after the device's own, as shards wrote them before */
        json_object_setn_new(props, SG_STAMP_DEVICE, strlen(SG_STAMP_DEVICE), json_stringn(t->device, t->device_len));
        json_object_setn_new(props, SG_STAMP_AUTH, strlen(SG_STAMP_AUTH), json_string(sg_page_auth_method(t->stamped)));
    }
    return json_pack("{s:I,s:s%,s:o,s:o,s:o}", "offset", (json_int_t)t->offset, "deviceId", t->device, t->device_len,
                     "enqueuedAt", sg_page_time_json(t->enqueued_ms), "properties", props,
                     "payload", sg_page_b64_json(t->payload, t->payload_len));
}

/* t written directly equals jansson's dump of the reference (NUL-terminated copies). */
static void check_dump(const sg_page_tele_t *t)
{
    sg_wbuf_t f;
    sg_wbuf_init(&f, SG_WIRE_MAX_FRAME);
    sg_page_clock_t clk = {0};
    json_t *r = reference(t);
    CHECK(r != NULL);
    char *want = r ? json_dumps(r, JSON_COMPACT) : NULL;
    json_decref(r);
    CHECK_RC(sg_page_tele_dump(&f, t, &clk), SG_OK);
    char *got = strndup((const char *)f.data, f.len);
    CHECK_STR(got, want ? want : "");
    free(got);
    free(want);
    sg_wbuf_fini(&f);
}

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

/* The text of records t[0..n) as a shard writes it as JSON, and rendered from a compact page for
 * an asker that takes stamp words or not; *compact_len the compact body's size when asked. */
static void both_for(const sg_page_tele_t *t, size_t n, int64_t next, const char *group, bool stamped, char **json,
                     char **rendered, size_t *compact_len)
{
    sg_wbuf_t a, b, out;
    sg_wbuf_init(&a, SG_WIRE_MAX_FRAME);
    sg_wbuf_init(&b, SG_WIRE_MAX_FRAME);
    sg_wbuf_init(&out, SG_WIRE_MAX_FRAME);
    sg_page_json_t j;
    CHECK_RC(sg_page_json_begin(&j, &a, 3), SG_OK);
    sg_page_out_t o;
    CHECK_RC(sg_page_out_begin(&o, &b, 3, 7, group, stamped), SG_OK);
    for (size_t i = 0; i < n; i++) {
        json_t *r = reference(&t[i]);
        CHECK(sg_page_json_add(&j, r));
        json_decref(r);
        CHECK(sg_page_out_add(&o, &t[i]));
    }
    CHECK_RC(sg_page_json_end(&j, next, 7, group), SG_OK);
    sg_page_out_end(&o, next);
    CHECK_RC(sg_page_render(b.data, b.len, &out), SG_OK);
    if (compact_len)
        *compact_len = b.len;
    *json = strndup((const char *)a.data, a.len);
    *rendered = strndup((const char *)out.data, out.len);
    sg_wbuf_fini(&a);
    sg_wbuf_fini(&b);
    sg_wbuf_fini(&out);
}

static void both(const sg_page_tele_t *t, size_t n, int64_t next, const char *group, char **json, char **rendered)
{
    both_for(t, n, next, group, true, json, rendered, NULL);
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

    for (int i = 0; i < 3; i++)
        check_dump(&t[i]);
    /* the counted length is the dumped one when nothing needs escaping */
    for (int i = 0; i < 2; i++) {
        json_t *r = reference(&t[i]);
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
    CHECK_RC(sg_page_out_begin(&o, &page, 0, 0, NULL, true), SG_OK);
    CHECK(sg_page_out_add(&o, &a));    /* the first always goes in */
    CHECK(!sg_page_out_add(&o, &b));   /* its JSON would pass the cap */
    sg_page_out_end(&o, 5);
    CHECK_RC(sg_page_render(page.data, page.len, &out), SG_OK);
    CHECK(out.len > (4u << 20) - 100 && strstr((const char *)out.data, "\"next\":5,") != NULL);

    /* a page whose records turn out longer than counted ends at the last one that fits */
    sg_wbuf_reset(&page);
    CHECK_RC(sg_page_out_begin(&o, &page, 0, 0, NULL, true), SG_OK);
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

/* Random property bytes (control characters, quotes, backslashes, UTF-8 of every length, broken
 * sequences, repeated keys), random times and offsets: the direct text is jansson's. */
static void test_random(void)
{
    static const char *const pieces[] = {"a", "k", "\"", "\\", "\n", "\t", "\x01", "\x1f", "\x7f", "/", "é", "€", "😀",
                                         "\xc3", "\xe2\x82", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\xff", " "};
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    sg_wbuf_t w;
    sg_wbuf_init(&w, 1 << 16);
    for (int round = 0; round < 2000; round++) {
        sg_wbuf_reset(&w);
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        uint16_t n = (uint16_t)((seed >> 33) % 6);
        CHECK_RC(sg_wbuf_u16(&w, n), SG_OK);
        for (uint16_t i = 0; i < n; i++) {
            char kv[2][64];
            for (int h = 0; h < 2; h++) {
                size_t len = 0;
                seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                int parts = h == 0 ? 1 + (int)((seed >> 40) % 2) : (int)((seed >> 40) % 4);
                for (int q = 0; q < parts; q++) {
                    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
                    const char *pc = pieces[(seed >> 35) % (sizeof pieces / sizeof *pieces)];
                    memcpy(kv[h] + len, pc, strlen(pc));
                    len += strlen(pc);
                }
                kv[h][len] = 0;
            }
            CHECK_RC(sg_wire_put_prop(&w, kv[0], strlen(kv[0]), kv[1], strlen(kv[1])), SG_OK);
        }
        sg_cur_t c;
        sg_cur_init(&c, w.data, w.len);
        sg_wire_props_t p;
        CHECK_RC(sg_wire_get_props(&c, &p), SG_OK);
        char payload[40];
        for (size_t i = 0; i < sizeof payload; i++)
            payload[i] = (char)(seed >> (i % 56));
        sg_page_tele_t t = {.offset = (int64_t)(seed >> 20), .enqueued_ms = (int64_t)(seed >> 24) % 4102444800000,
                            .device = "dev-\x01", .device_len = 4, .props = p, .payload = (const uint8_t *)payload,
                            .payload_len = (seed >> 50) % sizeof payload};
        check_dump(&t);
    }
    /* times of one second share the clock's text; the next second gets its own */
    sg_wbuf_t f;
    sg_wbuf_init(&f, 1 << 16);
    sg_page_clock_t clk = {0};
    sg_wire_props_t none;
    sg_wbuf_reset(&w);
    CHECK_RC(sg_wbuf_u16(&w, 0), SG_OK);
    sg_cur_t c;
    sg_cur_init(&c, w.data, w.len);
    CHECK_RC(sg_wire_get_props(&c, &none), SG_OK);
    int64_t times[] = {1764480000999, 1764480000001, 1764480001000, 1764480000000};
    for (size_t i = 0; i < 4; i++) {
        sg_page_tele_t t = {.offset = (int64_t)i, .enqueued_ms = times[i], .device = "d", .device_len = 1, .props = none};
        sg_wbuf_reset(&f);
        CHECK_RC(sg_page_tele_dump(&f, &t, &clk), SG_OK);
        char want[25];
        sg_rfc3339(times[i], want);
        CHECK(f.len > 40 && memmem(f.data, f.len, want, 24) != NULL);
    }
    /* a device id that is not UTF-8: damaged, nothing written */
    sg_page_tele_t bad = {.device = "\xff", .device_len = 1, .props = none};
    sg_wbuf_reset(&f);
    CHECK_RC(sg_page_tele_dump(&f, &bad, &clk), SG_E_MALFORMED);
    CHECK(f.len == 0);
    sg_wbuf_fini(&f);
    sg_wbuf_fini(&w);
}

/* Stamped records: the same text as records that store the pair, through every path. */
static void test_stamped(void)
{
    sg_wbuf_t w1, w2, w3;
    sg_wbuf_init(&w1, 4096);
    sg_wbuf_init(&w2, 4096);
    sg_wbuf_init(&w3, 4096);
    sg_wire_props_t none, plain, spelled;
    props(&w1, (const char *const[]){NULL}, &none);
    props(&w2, (const char *const[]){"temp", "21", "$.ct", "application/json", NULL}, &plain);
    /* what shards stored before: the pair among the properties */
    props(&w3, (const char *const[]){"temp", "21", "$.ct", "application/json", SG_STAMP_DEVICE, "tele-000001",
                                     SG_STAMP_AUTH, sg_page_auth_method(SG_CRED_X509), NULL}, &spelled);
    sg_page_tele_t t[6];
    for (int i = 0; i < 6; i++) {
        t[i] = rec(i, "tele-000001", i % 2 ? plain : none, "0123456789abcdef", 16);
        t[i].stamped = (uint8_t)(SG_CRED_SAS + i % 3);
    }
    sg_page_tele_t old = rec(9, "tele-000001", spelled, "x", 1), now = rec(9, "tele-000001", plain, "x", 1);
    now.stamped = SG_CRED_X509;

    /* a record with the kind dumps as the one that stored the pair */
    sg_wbuf_t a, b;
    sg_wbuf_init(&a, 4096);
    sg_wbuf_init(&b, 4096);
    sg_page_clock_t c1 = {0}, c2 = {0};
    CHECK_RC(sg_page_tele_dump(&a, &old, &c1), SG_OK);
    CHECK_RC(sg_page_tele_dump(&b, &now, &c2), SG_OK);
    CHECK(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    static const char needle[] = "\"iothub-connection-auth-method\":\"{\\\"scope\\\":\\\"device\\\",\\\"type\\\":"
                                 "\\\"x509Certificate\\\"";
    CHECK(memmem(b.data, b.len, needle, sizeof needle - 1) != NULL);
    for (int i = 0; i < 6; i++) {
        check_dump(&t[i]);
        json_t *r = reference(&t[i]);   /* exact: the auth method's escapes are counted */
        CHECK(sg_page_tele_json_len(&t[i]) == json_dumpb(r, NULL, 0, JSON_COMPACT));
        json_decref(r);
    }

    /* compact pages for both kinds of asker render as the shard's JSON; the kinds save bytes */
    char *json, *rendered, *json2, *rendered2;
    size_t with_kind, spelled_out;
    both_for(t, 6, 5, NULL, true, &json, &rendered, &with_kind);
    CHECK_STR(rendered, json);
    both_for(t, 6, 5, NULL, false, &json2, &rendered2, &spelled_out);
    CHECK_STR(rendered2, json);
    CHECK_STR(json2, json);
    CHECK(spelled_out > with_kind + 6 * 100);
    free(json);
    free(rendered);
    free(json2);
    free(rendered2);

    /* damaged stamp words: no kind, an unknown kind, a high byte that is not the stamp's */
    static const uint16_t bad[] = {SG_PAGE_STAMPED, SG_PAGE_STAMPED | 4, 0x8100 | SG_CRED_SAS, 0xFFFF};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        sg_wbuf_t page, out;
        sg_wbuf_init(&page, 4096);
        sg_wbuf_init(&out, 4096);
        sg_page_out_t o;
        CHECK_RC(sg_page_out_begin(&o, &page, 0, 0, NULL, true), SG_OK);
        CHECK(sg_page_out_add(&o, &t[0]));
        sg_page_out_end(&o, 0);
        /* the word sits after the header (28 + str8 group), offset, time and device */
        size_t at = 4 + 8 + 8 + 4 + 1 + 8 + 8 + 1 + t[0].device_len;
        CHECK(page.data[at] == 0x80 && page.data[at + 1] == SG_CRED_SAS);
        page.data[at] = (uint8_t)(bad[k] >> 8);
        page.data[at + 1] = (uint8_t)bad[k];
        CHECK_RC(sg_page_render(page.data, page.len, &out), SG_E_MALFORMED);
        sg_wbuf_fini(&page);
        sg_wbuf_fini(&out);
    }
    sg_wbuf_fini(&a);
    sg_wbuf_fini(&b);
    sg_wbuf_fini(&w1);
    sg_wbuf_fini(&w2);
    sg_wbuf_fini(&w3);
}

int main(void)
{
    test_stamped();
    test_random();
    test_same_text();
    test_cap();
    TEST_DONE();
}
