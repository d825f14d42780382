/* st_record_test.c — telemetry records: a record stores the session's credential kind instead of
 * the two stamped properties and reads back with it; a record of version 1 (the pair among its
 * properties, as shards wrote before) still reads, and both dump as the same JSON; an unknown kind
 * or version is refused. */
#include "sg_page.h"
#include "sg_test.h"
#include "st_record.h"

static void put_pair(sg_wbuf_t *w, const char *k, const char *v)
{
    CHECK_RC(sg_wire_put_prop(w, k, strlen(k), v, strlen(v)), SG_OK);
}

/* t's JSON (NUL-terminated, the caller frees it) */
static char *dump(const st_tele_t *t)
{
    sg_wbuf_t f;
    sg_wbuf_init(&f, 4096);
    sg_page_clock_t clk = {0};
    CHECK_RC(sg_page_tele_dump(&f, t, &clk), SG_OK);
    char *s = strndup((const char *)f.data, f.len);
    sg_wbuf_fini(&f);
    return s;
}

int main(void)
{
    const int64_t at = 1764480000123;
    sg_wbuf_t v2, v1;
    sg_wbuf_init(&v2, 1024);
    sg_wbuf_init(&v1, 1024);

    /* as the writer stores it now: the kind, the device's own property, the payload */
    CHECK_RC(st_tele_put_head(&v2, at, "meter-7", 7, SG_CRED_PSK, 1), SG_OK);
    put_pair(&v2, "temp", "21");
    CHECK_RC(sg_wbuf_str32(&v2, "abc", 3), SG_OK);

    /* as version 1 stored it: the pair spelled out after the device's own */
    CHECK_RC(sg_wbuf_u8(&v1, 1), SG_OK);
    CHECK_RC(sg_wbuf_u64(&v1, (uint64_t)at), SG_OK);
    CHECK_RC(sg_wbuf_str8(&v1, "meter-7", 7), SG_OK);
    CHECK_RC(sg_wbuf_u16(&v1, 3), SG_OK);
    put_pair(&v1, "temp", "21");
    put_pair(&v1, SG_STAMP_DEVICE, "meter-7");
    put_pair(&v1, SG_STAMP_AUTH, sg_page_auth_method(SG_CRED_PSK));
    CHECK_RC(sg_wbuf_str32(&v1, "abc", 3), SG_OK);

    st_tele_t a = {.offset = 4}, b = {.offset = 4};
    CHECK_RC(st_tele_get(v2.data, v2.len, &a), SG_OK);
    CHECK(a.stamped == SG_CRED_PSK && a.props.count == 1 && a.enqueued_ms == at && a.payload_len == 3);
    CHECK_RC(st_tele_get(v1.data, v1.len, &b), SG_OK);
    CHECK(b.stamped == 0 && b.props.count == 3);
    CHECK(v2.len + 100 < v1.len);   /* the pair took over a hundred bytes of every record */
    char *ja = dump(&a), *jb = dump(&b);
    CHECK_STR(ja, jb);
    CHECK(strstr(ja, "\"iothub-connection-device-id\":\"meter-7\"") != NULL);
    free(ja);
    free(jb);

    /* an unknown kind or version, a record cut short: refused (a reader skips it as damaged and logs it) */
    v2.data[1 + 8 + 1 + 7] = 4;
    CHECK_RC(st_tele_get(v2.data, v2.len, &a), SG_E_MALFORMED);
    v2.data[1 + 8 + 1 + 7] = SG_CRED_PSK;
    v2.data[0] = 3;
    CHECK_RC(st_tele_get(v2.data, v2.len, &a), SG_E_MALFORMED);
    v2.data[0] = 2;
    CHECK_RC(st_tele_get(v2.data, v2.len, &a), SG_OK);
    CHECK(st_tele_get(v2.data, v2.len - 1, &a) != SG_OK);
    sg_wbuf_fini(&v2);
    sg_wbuf_fini(&v1);
    TEST_DONE();
}
