/* sg_codec_test.c — unit tests for sg_codec: base64 against the RFC 4648 vectors and the strict
 * decoder's refusals, encodeURIComponent-compatible percent-encoding and its decoder, hex. */
#include <stdint.h>
#include <string.h>

#include "sg_codec.h"
#include "sg_test.h"

/* Strict-decode the C string s. */
static sg_rc b64_dec(const char *s, uint8_t *out, size_t *out_len)
{
    return sg_b64_decode(s, strlen(s), out, out_len);
}

static void test_b64_rfc4648(void)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                      "Zm9vYmFy"};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        char out[16];
        size_t n = strlen(plain[i]);
        CHECK(sg_b64_encoded_len(n) == strlen(enc[i]));
        CHECK(sg_b64_encode((const uint8_t *)plain[i], n, out) == strlen(enc[i]));
        CHECK_STR(out, enc[i]);

        uint8_t dec[16];
        size_t dec_len = 99;
        CHECK_RC(b64_dec(enc[i], dec, &dec_len), SG_OK);
        CHECK(dec_len == n);
        CHECK(memcmp(dec, plain[i], n) == 0);
    }
}

static void test_b64_round_trip(void)
{
    /* Lengths 0..70 (every padding case many times over), then larger steps. */
    static uint8_t in[1000], dec[1000];
    static char enc[1400];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof in; n += (n < 70 ? 1 : 97)) {
        size_t elen = sg_b64_encode(in, n, enc);
        CHECK(elen == sg_b64_encoded_len(n));
        CHECK(strlen(enc) == elen);
        size_t dlen = 0;
        CHECK_RC(sg_b64_decode(enc, elen, dec, &dlen), SG_OK);
        CHECK(dlen == n);
        CHECK(memcmp(in, dec, n) == 0);
    }
    /* Large input, beyond the internal chunk sizes. */
    size_t big = 200000;
    uint8_t *bin = malloc(big), *bdec = malloc(big);
    char *benc = malloc(sg_b64_encoded_len(big) + 1);
    CHECK(bin && bdec && benc);
    if (bin && bdec && benc) {
        for (size_t i = 0; i < big; i++)
            bin[i] = (uint8_t)(i ^ (i >> 8));
        size_t elen = sg_b64_encode(bin, big, benc);
        CHECK(elen == sg_b64_encoded_len(big));
        size_t dlen = 0;
        CHECK_RC(sg_b64_decode(benc, elen, bdec, &dlen), SG_OK);
        CHECK(dlen == big);
        CHECK(memcmp(bin, bdec, big) == 0);
    }
    free(bin);
    free(bdec);
    free(benc);
}

static void test_b64_strict(void)
{
    uint8_t out[64];
    size_t n;
    static const char *const bad[] = {
        "Zg",        /* padding missing */
        "Zg=",       /* wrong length */
        "Zm8",       /* padding missing */
        "Zm9vY",     /* wrong length */
        "Z",
        "Zm9v\n",    /* trailing newline */
        " Zm9v",     /* leading space */
        "Zm 9v",     /* inner space */
        "Zm9v\r\nZg==",
        "Zm9v\t",
        "Zm-v",      /* base64url alphabet is not standard base64 */
        "Zm_v",
        "Zm9*",
        "====",
        "A===",
        "Z=g=",      /* '=' in the middle */
        "Zg==Zm9v",  /* padding before more data */
        "Zm==Zm9v",
        "Zh==",      /* non-zero bits under the padding */
        "Zm9=",
        "Zg==\0",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = strlen(bad[i]);
        if (i == sizeof bad / sizeof bad[0] - 1)
            len = 5;   /* embedded NUL */
        sg_rc rc = sg_b64_decode(bad[i], len, out, &n);
        if (rc != SG_E_MALFORMED)
            fprintf(stderr, "b64 bad[%zu] \"%s\" accepted\n", i, bad[i]);
        CHECK_RC(rc, SG_E_MALFORMED);
    }
    /* Bytes >= 0x80 are not base64 either. */
    CHECK_RC(sg_b64_decode("Zm9\xc3", 4, out, &n), SG_E_MALFORMED);
    /* The decoded size excludes padding: "YQ==" is one byte, "YWI=" two. */
    CHECK_RC(b64_dec("YQ==", out, &n), SG_OK);
    CHECK(n == 1 && out[0] == 'a');
    CHECK_RC(b64_dec("YWI=", out, &n), SG_OK);
    CHECK(n == 2 && memcmp(out, "ab", 2) == 0);
    CHECK_RC(b64_dec("+/+/", out, &n), SG_OK);
    CHECK(n == 3 && out[0] == 0xfb && out[1] == 0xff && out[2] == 0xbf);
}

static void test_url_encode(void)
{
    char out[1024];
    size_t n;
    const char *keep = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()";
    CHECK_RC(sg_url_encode((const uint8_t *)keep, strlen(keep), out, sizeof out, &n), SG_OK);
    CHECK_STR(out, keep);
    CHECK(n == strlen(keep));

    /* Every other byte value is encoded, with upper-case hex. */
    for (unsigned b = 0; b < 256; b++) {
        uint8_t in = (uint8_t)b;
        CHECK_RC(sg_url_encode(&in, 1, out, sizeof out, &n), SG_OK);
        if (b != 0 && strchr(keep, (int)b)) {
            CHECK(n == 1 && (uint8_t)out[0] == b);
        } else {
            char want[4];
            snprintf(want, sizeof want, "%%%02X", b);
            CHECK(n == 3);
            CHECK_STR(out, want);
        }
    }

    const char *mix = "a/b$c%d e+f=g&h?i#j:k@l\xc3\xa9";
    CHECK_RC(sg_url_encode((const uint8_t *)mix, strlen(mix), out, sizeof out, &n), SG_OK);
    CHECK_STR(out, "a%2Fb%24c%25d%20e%2Bf%3Dg%26h%3Fi%23j%3Ak%40l%C3%A9");
    CHECK(n == strlen(out));

    /* Capacity counts the NUL: "a/" needs 4 + 1. */
    CHECK_RC(sg_url_encode((const uint8_t *)"a/", 2, out, 5, &n), SG_OK);
    CHECK_STR(out, "a%2F");
    CHECK_RC(sg_url_encode((const uint8_t *)"a/", 2, out, 4, &n), SG_E_TOO_BIG);
    CHECK_RC(sg_url_encode((const uint8_t *)"", 0, out, 1, &n), SG_OK);
    CHECK(n == 0 && out[0] == '\0');
    CHECK_RC(sg_url_encode((const uint8_t *)"", 0, out, 0, &n), SG_E_TOO_BIG);
}

static void test_url_decode(void)
{
    char out[256];
    size_t n;
    CHECK_RC(sg_url_decode("a%2Fb%2fc", 9, out, &n, 0), SG_OK);
    CHECK_STR(out, "a/b/c");
    CHECK(n == 5);
    CHECK_RC(sg_url_decode("%C3%a9", 6, out, &n, 0), SG_OK);
    CHECK(n == 2 && (uint8_t)out[0] == 0xc3 && (uint8_t)out[1] == 0xa9);
    CHECK_RC(sg_url_decode("a+b", 3, out, &n, 0), SG_OK);
    CHECK_STR(out, "a+b");
    CHECK_RC(sg_url_decode("a+b", 3, out, &n, 1), SG_OK);
    CHECK_STR(out, "a b");
    CHECK_RC(sg_url_decode("%2B", 3, out, &n, 1), SG_OK);
    CHECK_STR(out, "+");
    CHECK_RC(sg_url_decode("", 0, out, &n, 0), SG_OK);
    CHECK(n == 0 && out[0] == '\0');
    /* Only one level is decoded. */
    CHECK_RC(sg_url_decode("%2524", 5, out, &n, 0), SG_OK);
    CHECK_STR(out, "%24");
    /* Embedded NUL comes through and is counted. */
    CHECK_RC(sg_url_decode("a%00b", 5, out, &n, 0), SG_OK);
    CHECK(n == 3 && out[1] == '\0' && out[2] == 'b');

    static const char *const bad[] = {"%", "%4", "%zz", "a%", "a%2", "%g0", "%0g", "%%41", "% 41",
                                      "%+1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_RC(sg_url_decode(bad[i], strlen(bad[i]), out, &n, 0), SG_E_MALFORMED);
    /* The length bounds the read: "%41" cut to 2 bytes is a broken escape. */
    CHECK_RC(sg_url_decode("%41", 2, out, &n, 0), SG_E_MALFORMED);

    /* In place. */
    char buf[] = "%24.to=%2Fdevices%2Fd";
    CHECK_RC(sg_url_decode(buf, strlen(buf), buf, &n, 0), SG_OK);
    CHECK_STR(buf, "$.to=/devices/d");

    /* Round trip of all byte values. */
    uint8_t all[256];
    char enc[256 * 3 + 1], dec[257];
    for (unsigned i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    CHECK_RC(sg_url_encode(all, 256, enc, sizeof enc, &n), SG_OK);
    CHECK_RC(sg_url_decode(enc, n, dec, &n, 0), SG_OK);
    CHECK(n == 256 && memcmp(dec, all, 256) == 0);
}

static void test_hex(void)
{
    char out[2 * 32 + 1];
    uint8_t bin[32];
    size_t n;
    sg_hex_encode((const uint8_t *)"foobar", 6, out);
    CHECK_STR(out, "666f6f626172");
    sg_hex_encode((const uint8_t *)"", 0, out);
    CHECK_STR(out, "");
    const uint8_t raw[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    sg_hex_encode(raw, sizeof raw, out);
    CHECK_STR(out, "00017f80abff");

    CHECK_RC(sg_hex_decode("00017F80abFF", 12, bin, sizeof bin, &n), SG_OK);
    CHECK(n == sizeof raw && memcmp(bin, raw, n) == 0);
    CHECK_RC(sg_hex_decode("666F6F626172", 12, bin, sizeof bin, &n), SG_OK);
    CHECK(n == 6 && memcmp(bin, "foobar", 6) == 0);
    CHECK_RC(sg_hex_decode("", 0, bin, 0, &n), SG_OK);
    CHECK(n == 0);

    CHECK_RC(sg_hex_decode("abc", 3, bin, sizeof bin, &n), SG_E_MALFORMED);
    CHECK_RC(sg_hex_decode("zz", 2, bin, sizeof bin, &n), SG_E_MALFORMED);
    CHECK_RC(sg_hex_decode("0g", 2, bin, sizeof bin, &n), SG_E_MALFORMED);
    CHECK_RC(sg_hex_decode(" 0", 2, bin, sizeof bin, &n), SG_E_MALFORMED);
    CHECK_RC(sg_hex_decode("0x00", 4, bin, sizeof bin, &n), SG_E_MALFORMED);
    CHECK_RC(sg_hex_decode("001122", 6, bin, 2, &n), SG_E_TOO_BIG);
    CHECK_RC(sg_hex_decode("001122", 6, bin, 3, &n), SG_OK);

    for (unsigned i = 0; i < sizeof bin; i++)
        bin[i] = (uint8_t)(i * 29 + 3);
    uint8_t back[32];
    sg_hex_encode(bin, sizeof bin, out);
    CHECK_RC(sg_hex_decode(out, strlen(out), back, sizeof back, &n), SG_OK);
    CHECK(n == sizeof bin && memcmp(bin, back, n) == 0);
}

static void test_seconds(void)
{
    static const struct {
        const char *in;
        int64_t ms;
    } good[] = {{"0", 0}, {"2", 2000}, {"0.05", 50}, {"0.5", 500}, {"0.001", 1}, {"60", 60000}, {"60.000", 60000},
                {"007", 7000}, {"1.25", 1250}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int64_t ms = -1;
        CHECK_RC(sg_seconds_ms(good[i].in, strlen(good[i].in), 60000, &ms), SG_OK);
        CHECK(ms == good[i].ms);
    }
    static const char *const bad[] = {"", ".", ".5", "1.", "-1", "+1", "1e3", "inf", "nan", "0x10", " 1", "1 ",
                                      "1.0001", "1,5", "1..2", "1.2.3", "9999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = -1;
        CHECK(sg_seconds_ms(bad[i], strlen(bad[i]), 60000, &ms) == SG_E_MALFORMED);
        CHECK(ms == -1);
    }
    int64_t ms = -1;
    CHECK_RC(sg_seconds_ms("60.001", 6, 60000, &ms), SG_E_TOO_BIG);
    CHECK_RC(sg_seconds_ms("61", 2, 60000, &ms), SG_E_TOO_BIG);
    CHECK_RC(sg_seconds_ms("999999999999.999", 16, INT64_MAX, &ms), SG_OK);
    CHECK(ms == 999999999999999LL);
    CHECK_RC(sg_seconds_ms("12", 1, 60000, &ms), SG_OK);   /* only n bytes are read */
    CHECK(ms == 1000);
}

int main(void)
{
    test_seconds();
    test_b64_rfc4648();
    test_b64_round_trip();
    test_b64_strict();
    test_url_encode();
    test_url_decode();
    test_hex();
    TEST_DONE();
}
