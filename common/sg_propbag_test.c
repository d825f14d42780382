/* sg_propbag_test.c — unit tests for property bags: decoding of system and user properties, the
 * empty and degenerate forms, the limits, and encode -> parse round trips. */
#include <string.h>

#include "sg_propbag.h"
#include "sg_test.h"

#define STORE_FOR(len) ((len) + SG_PROPBAG_MAX_PROPS * 2)

static sg_prop_t props[SG_PROPBAG_MAX_PROPS + 8];
static char store[8192];

static sg_rc parse(const char *bag, size_t *n)
{
    return sg_propbag_parse(bag, strlen(bag), props, SG_PROPBAG_MAX_PROPS, n, store,
                            sizeof store);
}

static void test_system_props(void)
{
    size_t n = 99;
    CHECK_RC(parse("%24.mid=1&%24.to=%2Fdevices%2Fd%2Fmessages&a=b", &n), SG_OK);
    CHECK(n == 3);
    CHECK_STR(props[0].key, "$.mid");
    CHECK_STR(props[0].value, "1");
    CHECK_STR(props[1].key, "$.to");
    CHECK_STR(props[1].value, "/devices/d/messages");
    CHECK_STR(props[2].key, "a");
    CHECK_STR(props[2].value, "b");

    CHECK_RC(parse("%24.ct=application%2Fjson&%24.ce=utf-8&temp=22", &n), SG_OK);
    CHECK(n == 3);
    CHECK_STR(props[0].key, "$.ct");
    CHECK_STR(props[0].value, "application/json");
    CHECK_STR(props[1].key, "$.ce");
    CHECK_STR(props[1].value, "utf-8");
    CHECK_STR(props[2].key, "temp");
    CHECK_STR(props[2].value, "22");

    /* Lower-case escapes, '+' kept as '+', non-ASCII bytes passed through. */
    CHECK_RC(parse("k%2fx=a+b%c3%A9&%24.exp=2030-01-01T00%3A00%3A00Z", &n), SG_OK);
    CHECK(n == 2);
    CHECK_STR(props[0].key, "k/x");
    CHECK_STR(props[0].value, "a+b\xc3\xa9");
    CHECK_STR(props[1].key, "$.exp");
    CHECK_STR(props[1].value, "2030-01-01T00:00:00Z");
}

static void test_degenerate(void)
{
    size_t n = 99;
    CHECK_RC(parse("a", &n), SG_OK);
    CHECK(n == 1);
    CHECK_STR(props[0].key, "a");
    CHECK_STR(props[0].value, "");
    CHECK_RC(parse("a=", &n), SG_OK);
    CHECK(n == 1);
    CHECK_STR(props[0].key, "a");
    CHECK_STR(props[0].value, "");
    n = 99;
    CHECK_RC(parse("", &n), SG_OK);
    CHECK(n == 0);
    n = 99;
    CHECK_RC(sg_propbag_parse(NULL, 0, props, SG_PROPBAG_MAX_PROPS, &n, store, sizeof store),
             SG_OK);
    CHECK(n == 0);
    CHECK_RC(parse("&", &n), SG_OK);
    CHECK(n == 0);
    CHECK_RC(parse("&&a=1&", &n), SG_OK);
    CHECK(n == 1);
    CHECK_STR(props[0].key, "a");
    CHECK_STR(props[0].value, "1");
    CHECK_RC(parse("a=b=c", &n), SG_OK);
    CHECK(n == 1);
    CHECK_STR(props[0].key, "a");
    CHECK_STR(props[0].value, "b=c");
    CHECK_RC(parse("a==", &n), SG_OK);
    CHECK(n == 1);
    CHECK_STR(props[0].value, "=");
    /* A key seen twice keeps both. */
    CHECK_RC(parse("k=1&k=2&k", &n), SG_OK);
    CHECK(n == 3);
    CHECK_STR(props[0].value, "1");
    CHECK_STR(props[1].value, "2");
    CHECK_STR(props[2].key, "k");
    CHECK_STR(props[2].value, "");
    /* Encoded separators are data. */
    CHECK_RC(parse("a%26b=c%3Dd", &n), SG_OK);
    CHECK(n == 1);
    CHECK_STR(props[0].key, "a&b");
    CHECK_STR(props[0].value, "c=d");
}

static void test_malformed(void)
{
    static const char *const bad[] = {"=v", "=", "a=1&=2", "%zz=1", "a=%zz", "a=%", "a=%4",
                                      "%=1", "a=1&b%2=2", "%00=1", "a=x%00y"};
    size_t n;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sg_rc rc = parse(bad[i], &n);
        if (rc != SG_E_MALFORMED)
            fprintf(stderr, "bag \"%s\": %s\n", bad[i], sg_strerror(rc));
        CHECK_RC(rc, SG_E_MALFORMED);
    }
    n = 99;
    CHECK_RC(parse("a=1&b=2&=3", &n), SG_E_MALFORMED);
    CHECK(n == 0);
    /* A raw NUL inside the bag cannot be represented in the decoded C strings either. */
    CHECK_RC(sg_propbag_parse("a=x\0y", 5, props, SG_PROPBAG_MAX_PROPS, &n, store, sizeof store),
             SG_E_MALFORMED);
    /* The length bounds the read: "a=%41" cut after '%4'. */
    CHECK_RC(sg_propbag_parse("a=%41", 4, props, SG_PROPBAG_MAX_PROPS, &n, store, sizeof store),
             SG_E_MALFORMED);
}

static void test_limits(void)
{
    char bag[1024];
    size_t len = 0, n = 0;
    for (int i = 0; i < SG_PROPBAG_MAX_PROPS + 1; i++)
        len += (size_t)snprintf(bag + len, sizeof bag - len, "%sk%d=%d", i ? "&" : "", i, i);
    CHECK_RC(sg_propbag_parse(bag, len, props, SG_PROPBAG_MAX_PROPS, &n, store, sizeof store),
             SG_E_TOO_BIG);
    CHECK_RC(sg_propbag_parse(bag, len, props, SG_PROPBAG_MAX_PROPS + 1, &n, store, sizeof store),
             SG_OK);
    CHECK(n == SG_PROPBAG_MAX_PROPS + 1);
    CHECK_STR(props[64].key, "k64");
    CHECK_STR(props[64].value, "64");

    /* Exactly 64 fit, even with the smallest store the header promises. */
    char *cut = bag;
    for (int i = 0; i < SG_PROPBAG_MAX_PROPS; i++)
        cut = strchr(cut, '&') + 1;
    size_t len64 = (size_t)(cut - bag) - 1;
    CHECK_RC(sg_propbag_parse(bag, len64, props, SG_PROPBAG_MAX_PROPS, &n, store,
                              STORE_FOR(len64)),
             SG_OK);
    CHECK(n == SG_PROPBAG_MAX_PROPS);
    CHECK_STR(props[63].key, "k63");
    CHECK_STR(props[63].value, "63");

    /* 64 bare keys: the worst case for the store (two NULs per one-byte segment). */
    len = 0;
    for (int i = 0; i < SG_PROPBAG_MAX_PROPS; i++)
        len += (size_t)snprintf(bag + len, sizeof bag - len, "%sk", i ? "&" : "");
    CHECK_RC(sg_propbag_parse(bag, len, props, SG_PROPBAG_MAX_PROPS, &n, store, STORE_FOR(len)),
             SG_OK);
    CHECK(n == SG_PROPBAG_MAX_PROPS);

    /* A store too small is refused, not overrun. */
    CHECK_RC(sg_propbag_parse("abc=def", 7, props, SG_PROPBAG_MAX_PROPS, &n, store, 4),
             SG_E_TOO_BIG);
    CHECK_RC(sg_propbag_parse("abc=def", 7, props, SG_PROPBAG_MAX_PROPS, &n, store, 7),
             SG_E_TOO_BIG);
    CHECK_RC(sg_propbag_parse("abc=def", 7, props, SG_PROPBAG_MAX_PROPS, &n, store, 8), SG_OK);
    CHECK_RC(sg_propbag_parse("a", 1, props, 0, &n, store, sizeof store), SG_E_TOO_BIG);
    CHECK_RC(sg_propbag_parse("&&", 2, props, 0, &n, store, sizeof store), SG_OK);
    CHECK(n == 0);
}

/* Encode props[0..n) and check the text and that it parses back to the same pairs. */
static void round_trip(const sg_prop_t *in, size_t n, const char *want)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 1 << 16);
    CHECK_RC(sg_propbag_encode(&w, in, n), SG_OK);
    char text[4096];
    CHECK(w.len < sizeof text);
    if (w.len)
        memcpy(text, w.data, w.len);
    text[w.len] = '\0';
    if (want)
        CHECK_STR(text, want);

    size_t m = 0;
    CHECK_RC(sg_propbag_parse(text, w.len, props, SG_PROPBAG_MAX_PROPS, &m, store, sizeof store),
             SG_OK);
    CHECK(m == n);
    for (size_t i = 0; i < n && i < m; i++) {
        CHECK_STR(props[i].key, in[i].key);
        CHECK_STR(props[i].value, in[i].value ? in[i].value : "");
    }
    sg_wbuf_fini(&w);
}

static void test_encode(void)
{
    const sg_prop_t sys[] = {{"$.mid", "1"}, {"$.to", "/devices/d/messages"}, {"a", "b"}};
    round_trip(sys, 3, "%24.mid=1&%24.to=%2Fdevices%2Fd%2Fmessages&a=b");
    const sg_prop_t odd[] = {{"k=1", "v&2"}, {"sp ace", "plus+"}, {"e", ""}, {"n", NULL},
                             {"\xc3\xa9", "%"}, {"!~*'()-_.", "A-Za-z09"}};
    round_trip(odd, 6, "k%3D1=v%262&sp%20ace=plus%2B&e=&n=&%C3%A9=%25&!~*'()-_.=A-Za-z09");
    round_trip(NULL, 0, "");

    /* Every byte value 1..255 in a key and a value. */
    char all[256];
    for (int i = 1; i < 256; i++)
        all[i - 1] = (char)i;
    all[255] = '\0';
    const sg_prop_t bytes[] = {{all, all}};
    round_trip(bytes, 1, NULL);

    /* A long value crosses the encoder's internal slices. */
    static char longv[2000];
    memset(longv, '/', sizeof longv - 1);
    const sg_prop_t lp[] = {{"long", longv}};
    sg_wbuf_t w;
    sg_wbuf_init(&w, 1 << 16);
    CHECK_RC(sg_propbag_encode(&w, lp, 1), SG_OK);
    CHECK(w.len == 5 + 3 * (sizeof longv - 1));
    sg_wbuf_fini(&w);

    /* Appends to what is already in the writer; fails whole when over the cap or invalid. */
    sg_wbuf_init(&w, 32);
    CHECK_RC(sg_wbuf_bytes(&w, "topic/", 6), SG_OK);
    const sg_prop_t two[] = {{"a", "1"}, {"b", "2"}};
    CHECK_RC(sg_propbag_encode(&w, two, 2), SG_OK);
    CHECK(w.len == 13 && memcmp(w.data, "topic/a=1&b=2", 13) == 0);
    const sg_prop_t big[] = {{"c", "3"}, {"dddddddddd", "//////"}};
    CHECK_RC(sg_propbag_encode(&w, big, 2), SG_E_TOO_BIG);
    CHECK(w.len == 13);
    const sg_prop_t empty_key[] = {{"x", "1"}, {"", "v"}};
    CHECK_RC(sg_propbag_encode(&w, empty_key, 2), SG_E_INVALID);
    CHECK(w.len == 13);
    const sg_prop_t null_key[] = {{NULL, "v"}};
    CHECK_RC(sg_propbag_encode(&w, null_key, 1), SG_E_INVALID);
    CHECK(w.len == 13);
    sg_wbuf_fini(&w);
}

int main(void)
{
    test_system_props();
    test_degenerate();
    test_malformed();
    test_limits();
    test_encode();
    TEST_DONE();
}
