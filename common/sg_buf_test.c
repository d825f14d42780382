/* sg_buf_test.c — the bounded cursor never reads past its end; the writer never grows past its cap. */
#include "sg_buf.h"
#include "sg_test.h"

static void test_cursor(void)
{
    const uint8_t data[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b};
    sg_cur_t c;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    sg_cur_init(&c, data, sizeof data);
    CHECK_RC(sg_cur_u8(&c, &u8), SG_OK);
    CHECK(u8 == 1);
    CHECK_RC(sg_cur_u16(&c, &u16), SG_OK);
    CHECK(u16 == 0x0203);
    CHECK_RC(sg_cur_u32(&c, &u32), SG_OK);
    CHECK(u32 == 0x04050607);
    CHECK(sg_cur_left(&c) == 4);
    CHECK_RC(sg_cur_u64(&c, &u64), SG_E_TRUNCATED);
    CHECK(sg_cur_left(&c) == 4);   /* a failed read does not move the cursor */
    CHECK_RC(sg_cur_skip(&c, 5), SG_E_TRUNCATED);
    CHECK_RC(sg_cur_skip(&c, 4), SG_OK);
    CHECK_RC(sg_cur_u8(&c, &u8), SG_E_TRUNCATED);

    sg_cur_init(&c, data, 8);
    CHECK_RC(sg_cur_u64(&c, &u64), SG_OK);
    CHECK(u64 == 0x0102030405060708ull);
}

static void test_strings(void)
{
    const uint8_t s8[] = {3, 'a', 'b', 'c', 9, 'x'};
    const uint8_t s16[] = {0, 2, 'h', 'i', 0xff, 0xff, 'z'};
    const uint8_t s32[] = {0, 0, 0, 1, 'q', 0x7f, 0xff, 0xff, 0xff};
    sg_cur_t c;
    const uint8_t *p;
    size_t n;
    sg_cur_init(&c, s8, sizeof s8);
    CHECK_RC(sg_cur_str8(&c, 10, &p, &n), SG_OK);
    CHECK(n == 3 && memcmp(p, "abc", 3) == 0);
    CHECK_RC(sg_cur_str8(&c, 10, &p, &n), SG_E_TRUNCATED);   /* says 9, has 1 */
    sg_cur_init(&c, s8, sizeof s8);
    CHECK_RC(sg_cur_str8(&c, 2, &p, &n), SG_E_TOO_BIG);

    sg_cur_init(&c, s16, sizeof s16);
    CHECK_RC(sg_cur_str16(&c, 100, &p, &n), SG_OK);
    CHECK(n == 2 && p[0] == 'h');
    CHECK_RC(sg_cur_str16(&c, 100, &p, &n), SG_E_TOO_BIG);

    sg_cur_init(&c, s32, sizeof s32);
    CHECK_RC(sg_cur_str32(&c, 100, &p, &n), SG_OK);
    CHECK(n == 1 && p[0] == 'q');
    CHECK_RC(sg_cur_str32(&c, UINT32_MAX, &p, &n), SG_E_TRUNCATED);
}

static void test_writer(void)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, 16);
    CHECK_RC(sg_wbuf_u8(&w, 0xaa), SG_OK);
    CHECK_RC(sg_wbuf_u16(&w, 0x0102), SG_OK);
    CHECK_RC(sg_wbuf_u32(&w, 0x03040506), SG_OK);
    CHECK_RC(sg_wbuf_u64(&w, 0x0708090a0b0c0d0eull), SG_OK);
    CHECK(w.len == 15);
    CHECK_RC(sg_wbuf_u16(&w, 1), SG_E_TOO_BIG);   /* would be 17 > 16 */
    CHECK(w.len == 15);
    CHECK_RC(sg_wbuf_u8(&w, 0xbb), SG_OK);
    CHECK_RC(sg_wbuf_u8(&w, 0xcc), SG_E_TOO_BIG);
    CHECK(w.data[0] == 0xaa && w.data[1] == 1 && w.data[2] == 2 && w.data[14] == 0x0e && w.data[15] == 0xbb);
    sg_wbuf_consume(&w, 3);
    CHECK(w.len == 13 && w.data[0] == 3);
    sg_wbuf_consume(&w, 100);
    CHECK(w.len == 0);
    CHECK_RC(sg_wbuf_str8(&w, "abcdef", 6), SG_OK);
    size_t len;
    uint8_t *p = sg_wbuf_detach(&w, &len);
    CHECK(len == 7 && p[0] == 6 && memcmp(p + 1, "abcdef", 6) == 0);
    CHECK(w.data == NULL && w.len == 0);
    free(p);

    uint8_t big[300] = {0};
    sg_wbuf_init(&w, 1024);
    CHECK_RC(sg_wbuf_str8(&w, big, 256), SG_E_TOO_BIG);
    CHECK_RC(sg_wbuf_str8(&w, big, 255), SG_OK);
    CHECK(w.len == 256);
    /* reserve must not overflow size arithmetic near SIZE_MAX */
    CHECK_RC(sg_wbuf_reserve(&w, SIZE_MAX), SG_E_TOO_BIG);
    sg_wbuf_fini(&w);
}

int main(void)
{
    test_cursor();
    test_strings();
    test_writer();
    TEST_DONE();
}
