/* sg_sas_test.c — unit tests for SAS device tokens: tokens computed independently (Python's
 * hmac/base64/urllib, hard-coded below) must verify, sg_sas_make must reproduce them byte for
 * byte, and every way a token can be wrong must give its exact error. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sg_codec.h"
#include "sg_sas.h"
#include "sg_test.h"

#define KEY_B64 "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
#define HOST "myhub.example.com"
#define NOW 1000000000
#define SE 2000000000

/* Generated with /usr/bin/python3 from KEY_B64, se 2000000000:
 * sr = quote(HOST + '/devices/dev-1', safe=''); sig = quote(b64(hmac_sha256(key, sr+'\n'+se))) */
static const char TOK_DEV1[] =
    "SharedAccessSignature sr=myhub.example.com%2Fdevices%2Fdev-1"
    "&sig=uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FDr4%3D&se=2000000000";
/* The Azure SDK form for id "dev:1$x": quote(HOST + '/devices/' + quote(id, safe=''), safe=''). */
static const char TOK_DEVX_SDK[] =
    "SharedAccessSignature sr=myhub.example.com%2Fdevices%2Fdev%253A1%2524x"
    "&sig=7DnDqkNekAumxZweSNLysdXcYk7kY0C%2FlkKF48hWvPg%3D&se=2000000000";
/* sr sent without any encoding, signed over that plain text. */
static const char TOK_DEVX_PLAIN[] =
    "SharedAccessSignature sr=myhub.example.com/devices/dev:1$x"
    "&sig=Ns%2BXyeKA%2B3FBe0WNE65KzF0wmQpsydaMFiIYXgEC5Z8%3D&se=2000000000";
/* Plain sr and a sig that is not URL-encoded either. */
static const char TOK_DEV1_RAW_SIG[] =
    "SharedAccessSignature sr=myhub.example.com/devices/dev-1"
    "&sig=0xQ7iArFhfkC6vzp1mMK0D22I/TjFUXngzoHzGijVi0=&se=2000000000";
/* Lower-case escapes in sr, signed over the lower-case text. */
static const char TOK_DEV1_LOWER[] =
    "SharedAccessSignature sr=myhub.example.com%2fdevices%2fdev-1"
    "&sig=KPBWgvKGIXvSS%2FS8o99qDdlcPkqn5ZA8ahkxm%2BPj1es%3D&se=2000000000";

static uint8_t key[33], other_key[33];   /* sg_b64_decode may write 3 * (44 / 4) bytes */
static size_t key_len;

static sg_rc parse_str(const char *tok, sg_sas_t *t)
{
    return sg_sas_parse(tok, strlen(tok), t);
}

/* Parse and verify in one go; a parse failure is returned as is. */
static sg_rc check(const char *tok, const char *id, const uint8_t *k, int64_t now)
{
    sg_sas_t t;
    sg_rc rc = parse_str(tok, &t);
    if (rc != SG_OK)
        return rc;
    return sg_sas_verify(&t, id, k, key_len, now);
}

/* Sign "sr\nse" with OpenSSL directly (not through sg_sas) and assemble a token with the fields
 * in the given order ("rgs" = sr, sig, se). */
static void sign(char *out, size_t cap, const char *sr, const char *se, const char *order)
{
    char msg[1024], b64[64], sig[256];
    uint8_t mac[32];
    unsigned mac_len = 0;
    size_t sig_len;
    snprintf(msg, sizeof msg, "%s\n%s", sr, se);
    HMAC(EVP_sha256(), key, (int)key_len, (const uint8_t *)msg, strlen(msg), mac, &mac_len);
    CHECK(mac_len == 32);
    sg_b64_encode(mac, 32, b64);
    CHECK_RC(sg_url_encode((const uint8_t *)b64, strlen(b64), sig, sizeof sig, &sig_len), SG_OK);
    size_t n = (size_t)snprintf(out, cap, "SharedAccessSignature ");
    for (const char *o = order; *o; o++) {
        const char *sep = o == order ? "" : "&";
        if (*o == 'r')
            n += (size_t)snprintf(out + n, cap - n, "%ssr=%s", sep, sr);
        else if (*o == 'g')
            n += (size_t)snprintf(out + n, cap - n, "%ssig=%s", sep, sig);
        else
            n += (size_t)snprintf(out + n, cap - n, "%sse=%s", sep, se);
    }
}

static void test_known_tokens(void)
{
    sg_sas_t t;
    CHECK_RC(parse_str(TOK_DEV1, &t), SG_OK);
    CHECK(t.se == SE);
    CHECK(t.sr_len == strlen("myhub.example.com%2Fdevices%2Fdev-1"));
    CHECK(memcmp(t.sr, "myhub.example.com%2Fdevices%2Fdev-1", t.sr_len) == 0);
    CHECK(t.sig_len == strlen("uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FDr4%3D"));

    CHECK_RC(check(TOK_DEV1, "dev-1", key, NOW), SG_OK);
    CHECK_RC(check(TOK_DEVX_SDK, "dev:1$x", key, NOW), SG_OK);
    CHECK_RC(check(TOK_DEVX_PLAIN, "dev:1$x", key, NOW), SG_OK);
    CHECK_RC(check(TOK_DEV1_RAW_SIG, "dev-1", key, NOW), SG_OK);
    CHECK_RC(check(TOK_DEV1_LOWER, "dev-1", key, NOW), SG_OK);

    /* sg_sas_make builds exactly what the SDKs (and Python above) build. */
    char out[SG_SAS_MAX_TOKEN + 1];
    CHECK_RC(sg_sas_make(out, sizeof out, HOST, "dev-1", key, key_len, SE), SG_OK);
    CHECK_STR(out, TOK_DEV1);
    CHECK_RC(sg_sas_make(out, sizeof out, HOST, "dev:1$x", key, key_len, SE), SG_OK);
    CHECK_STR(out, TOK_DEVX_SDK);
}

static void test_reordered(void)
{
    char tok[1024];
    static const char *const orders[] = {"rgs", "rsg", "grs", "gsr", "srg", "sgr"};
    for (size_t i = 0; i < 6; i++) {
        sign(tok, sizeof tok, "myhub.example.com%2Fdevices%2Fdev-1", "2000000000", orders[i]);
        CHECK_RC(check(tok, "dev-1", key, NOW), SG_OK);
    }
    /* The Python token with its fields moved around. */
    CHECK_RC(check("SharedAccessSignature se=2000000000&sr=myhub.example.com%2Fdevices%2Fdev-1"
                   "&sig=uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FDr4%3D",
                   "dev-1", key, NOW),
             SG_OK);
}

/* The resource may be spelled many ways; the signature always covers the spelling sent. */
static void test_percent_encoding(void)
{
    char tok[1024];
    static const char *const dev1_spellings[] = {
        "myhub.example.com%2Fdevices%2Fdev-1",
        "myhub.example.com%2fdevices%2fdev-1",
        "myhub.example.com%2Fdevices%2fdev-1",
        "myhub.example.com/devices/dev-1",
        "myhub.example.com/devices%2Fdev-1",
        "myhub.example.com%2Fdevices/dev-1",
        "myhub.example.com%2Fdevices%2F%64ev-1",    /* needless escape of 'd' */
        "myhub.example.com%2Fdevices%2Fdev%252D1",  /* id encoded a second time */
        "myhub.example.com%3A8883%2Fdevices%2Fdev-1",
        "h/devices/dev-1",                           /* host is not checked */
    };
    for (size_t i = 0; i < sizeof dev1_spellings / sizeof dev1_spellings[0]; i++) {
        sign(tok, sizeof tok, dev1_spellings[i], "2000000000", "rgs");
        sg_rc rc = check(tok, "dev-1", key, NOW);
        if (rc != SG_OK)
            fprintf(stderr, "spelling %zu (%s) refused\n", i, dev1_spellings[i]);
        CHECK_RC(rc, SG_OK);
    }

    /* Id "dev:1$x": encodeURIComponent changes it; every level of encoding must verify. */
    static const char *const devx_spellings[] = {
        "myhub.example.com%2Fdevices%2Fdev%253A1%2524x",  /* SDK: id encoded twice in total */
        "myhub.example.com%2Fdevices%2Fdev%253a1%2524x",
        "myhub.example.com%2Fdevices%2Fdev%3A1%24x",      /* encoded once */
        "myhub.example.com%2Fdevices%2Fdev:1$x",
        "myhub.example.com/devices/dev:1$x",              /* plain */
        "myhub.example.com/devices/dev%3A1%24x",
    };
    for (size_t i = 0; i < sizeof devx_spellings / sizeof devx_spellings[0]; i++) {
        sign(tok, sizeof tok, devx_spellings[i], "2000000000", "rgs");
        sg_rc rc = check(tok, "dev:1$x", key, NOW);
        if (rc != SG_OK)
            fprintf(stderr, "spelling %zu (%s) refused\n", i, devx_spellings[i]);
        CHECK_RC(rc, SG_OK);
    }

    /* Ids containing '%' itself, in SDK form (from sg_sas_make), encoded once, and plain. */
    char out[SG_SAS_MAX_TOKEN + 1];
    CHECK_RC(sg_sas_make(out, sizeof out, HOST, "a%41", key, key_len, SE), SG_OK);
    CHECK(strstr(out, "sr=myhub.example.com%2Fdevices%2Fa%252541&") != NULL);
    CHECK_RC(check(out, "a%41", key, NOW), SG_OK);
    CHECK_RC(check(out, "aA", key, NOW), SG_E_WRONG_DEVICE);
    sign(tok, sizeof tok, "myhub.example.com%2Fdevices%2Fa%2541", "2000000000", "rgs");
    CHECK_RC(check(tok, "a%41", key, NOW), SG_OK);
    sign(tok, sizeof tok, "myhub.example.com/devices/a%41", "2000000000", "rgs");
    CHECK_RC(check(tok, "a%41", key, NOW), SG_OK);
    sign(tok, sizeof tok, "myhub.example.com/devices/100%", "2000000000", "rgs");
    CHECK_RC(check(tok, "100%", key, NOW), SG_OK);
    CHECK_RC(sg_sas_make(out, sizeof out, HOST, "100%", key, key_len, SE), SG_OK);
    CHECK_RC(check(out, "100%", key, NOW), SG_OK);

    /* Same resource, different text than was signed: the signature no longer matches. */
    static const char *const resent[] = {
        "myhub.example.com%2fdevices%2fdev-1",  /* TOK_DEV1 was signed with %2F */
        "myhub.example.com/devices/dev-1",
        "myhub.example.com%2Fdevices/dev-1",
    };
    for (size_t i = 0; i < sizeof resent / sizeof resent[0]; i++) {
        snprintf(tok, sizeof tok,
                 "SharedAccessSignature sr=%s&sig=uIeqVsoebqr90H4vmI%%2B4F0dNGve%%2BlpGpF0nm0Ly"
                 "%%2FDr4%%3D&se=2000000000", resent[i]);
        CHECK_RC(check(tok, "dev-1", key, NOW), SG_E_AUTH);
    }
    /* TOK_DEVX_SDK's signature with the id encoded only once, or not at all. */
    CHECK_RC(check("SharedAccessSignature sr=myhub.example.com%2Fdevices%2Fdev%3A1%24x"
                   "&sig=7DnDqkNekAumxZweSNLysdXcYk7kY0C%2FlkKF48hWvPg%3D&se=2000000000",
                   "dev:1$x", key, NOW),
             SG_E_AUTH);
    CHECK_RC(check("SharedAccessSignature sr=myhub.example.com/devices/dev:1$x"
                   "&sig=7DnDqkNekAumxZweSNLysdXcYk7kY0C%2FlkKF48hWvPg%3D&se=2000000000",
                   "dev:1$x", key, NOW),
             SG_E_AUTH);
    /* A sig whose escapes are spelled in lower case still decodes to the same MAC. */
    CHECK_RC(check("SharedAccessSignature sr=myhub.example.com%2Fdevices%2Fdev-1"
                   "&sig=uIeqVsoebqr90H4vmI%2b4F0dNGve%2blpGpF0nm0Ly%2fDr4%3d&se=2000000000",
                   "dev-1", key, NOW),
             SG_OK);
}

static void test_expiry(void)
{
    CHECK_RC(check(TOK_DEV1, "dev-1", key, SE - 1), SG_OK);
    CHECK_RC(check(TOK_DEV1, "dev-1", key, SE), SG_E_EXPIRED);
    CHECK_RC(check(TOK_DEV1, "dev-1", key, SE + 1), SG_E_EXPIRED);
    CHECK_RC(check(TOK_DEV1, "dev-1", key, INT64_MAX), SG_E_EXPIRED);
    /* Expired is reported before the signature is looked at. */
    CHECK_RC(check(TOK_DEV1, "dev-1", other_key, SE), SG_E_EXPIRED);

    char out[SG_SAS_MAX_TOKEN + 1];
    CHECK_RC(sg_sas_make(out, sizeof out, HOST, "dev-1", key, key_len, 0), SG_OK);
    CHECK(strstr(out, "&se=0") != NULL);
    CHECK_RC(check(out, "dev-1", key, -1), SG_OK);
    CHECK_RC(check(out, "dev-1", key, 0), SG_E_EXPIRED);
    CHECK_RC(sg_sas_make(out, sizeof out, HOST, "dev-1", key, key_len, INT64_MAX), SG_OK);
    CHECK(strstr(out, "&se=9223372036854775807") != NULL);
    CHECK_RC(check(out, "dev-1", key, NOW), SG_OK);
}

static void test_wrong_key_and_sig(void)
{
    CHECK_RC(check(TOK_DEV1, "dev-1", other_key, NOW), SG_E_AUTH);
    /* A key one byte shorter. */
    sg_sas_t t;
    CHECK_RC(parse_str(TOK_DEV1, &t), SG_OK);
    CHECK_RC(sg_sas_verify(&t, "dev-1", key, key_len - 1, NOW), SG_E_AUTH);
    /* The sig must decode to exactly 32 bytes of strict base64; anything else is just wrong. */
    static const char *const sigs[] = {
        "abc",
        "AAAA",
        "%zz",
        "uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FDr4",          /* no padding */
        "uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FDr5%3D",       /* non-canonical tail */
        "uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FDr4%3D%3D",
        "uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FDr4%3DAAAA",
        "uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FD%3D%3D",      /* 31 bytes */
        "uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FDr4A",         /* 33 bytes */
        "uIeqVsoebqr90H4vmI+4F0dNGve+lpGpF0nm0Ly/Dr4= ",
        "uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FDr4%3",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",               /* 32 zero bytes */
        "uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FDr4%3D%00",
    };
    char tok[4200];
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        snprintf(tok, sizeof tok,
                 "SharedAccessSignature sr=myhub.example.com%%2Fdevices%%2Fdev-1&sig=%s"
                 "&se=2000000000", sigs[i]);
        sg_rc rc = check(tok, "dev-1", key, NOW);
        if (rc != SG_E_AUTH)
            fprintf(stderr, "sig %zu (%s): %s\n", i, sigs[i], sg_strerror(rc));
        CHECK_RC(rc, SG_E_AUTH);
    }
    /* A very long sig. */
    int n = snprintf(tok, sizeof tok,
                     "SharedAccessSignature sr=myhub.example.com%%2Fdevices%%2Fdev-1&se=2000000000"
                     "&sig=");
    memset(tok + n, 'A', 3000);
    tok[n + 3000] = '\0';
    CHECK_RC(check(tok, "dev-1", key, NOW), SG_E_AUTH);
    /* se changed after signing. */
    CHECK_RC(check("SharedAccessSignature sr=myhub.example.com%2Fdevices%2Fdev-1"
                   "&sig=uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly%2FDr4%3D&se=2000000001",
                   "dev-1", key, NOW),
             SG_E_AUTH);
}

static void test_wrong_device(void)
{
    CHECK_RC(check(TOK_DEV1, "dev-2", key, NOW), SG_E_WRONG_DEVICE);
    CHECK_RC(check(TOK_DEV1, "DEV-1", key, NOW), SG_E_WRONG_DEVICE);
    CHECK_RC(check(TOK_DEV1, "dev-", key, NOW), SG_E_WRONG_DEVICE);
    CHECK_RC(check(TOK_DEV1, "dev-11", key, NOW), SG_E_WRONG_DEVICE);
    /* By design one resource can name two ids: "dev%3A1%24x" is itself a valid id and is what
     * TOK_DEVX_SDK's resource reads after one decode. Only the per-device key tells them apart. */
    CHECK_RC(check(TOK_DEVX_SDK, "dev%3A1%24x", key, NOW), SG_OK);
    CHECK_RC(check(TOK_DEVX_SDK, "dev%3A1%24x", other_key, NOW), SG_E_AUTH);
    CHECK_RC(check(TOK_DEVX_SDK, "dev%253A1%2524x", key, NOW), SG_E_WRONG_DEVICE);
    /* The device is checked first: another device's expired token with a wrong key. */
    CHECK_RC(check(TOK_DEV1, "dev-2", other_key, SE + 5), SG_E_WRONG_DEVICE);

    char tok[1024];
    static const char *const bad_sr[] = {
        "myhub.example.com%2Fdevices%2Fdev-1%2Fx",   /* more path */
        "myhub.example.com/devices/dev-1/",
        "%2Fdevices%2Fdev-1",                          /* no host */
        "/devices/dev-1",
        "myhub.example.com%2Fdevice%2Fdev-1",
        "myhub.example.com%2FDevices%2Fdev-1",
        "myhub.example.com%2Fmodules%2Fdev-1",
        "a/b/devices/dev-1",                           /* host with '/' */
        "a%2Fb%2Fdevices%2Fdev-1",
        "myhub.example.com%2Fdevices%2F",
        "dev-1",
        "myhub.example.com%2Fdevices%2Fdev-1%zz",      /* does not decode */
        "myhub.example.com%2Fdevices%2Fdev%25%2D1",    /* second level broken */
        "myhub.example.com%2Fdevices%2Fdev-1%00",
        "myhub.example.com%2Fdevices%2Fdev%25252D1",   /* encoded three times */
    };
    for (size_t i = 0; i < sizeof bad_sr / sizeof bad_sr[0]; i++) {
        sign(tok, sizeof tok, bad_sr[i], "2000000000", "rgs");
        sg_rc rc = check(tok, "dev-1", key, NOW);
        if (rc != SG_E_WRONG_DEVICE)
            fprintf(stderr, "sr %zu (%s): %s\n", i, bad_sr[i], sg_strerror(rc));
        CHECK_RC(rc, SG_E_WRONG_DEVICE);
    }
}

static void test_malformed(void)
{
    static const char *const bad[] = {
        "",
        "SharedAccessSignature",
        "SharedAccessSignature ",
        ("sr=myhub.example.com%2Fdevices%2Fdev-1&sig=uIeqVsoebqr90H4vmI%2B4F0dNGve%2BlpGpF0nm0Ly"
         "%2FDr4%3D&se=2000000000"),
        "sharedaccesssignature sr=a%2Fdevices%2Fd&sig=x&se=1",
        "SharedAccessSignature  sr=a%2Fdevices%2Fd&sig=x&se=1",
        "SharedAccessSignature\tsr=a%2Fdevices%2Fd&sig=x&se=1",
        " SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&se=1",                     /* no sig */
        "SharedAccessSignature sig=x&se=1",                                  /* no sr */
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x",                    /* no se */
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sr=a%2Fdevices%2Fd&sig=x&se=1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&sig=x&se=1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=1&se=1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=1&skn=device",
        "SharedAccessSignature skn=iothubowner&sr=a%2Fdevices%2Fd&sig=x&se=1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=1&foo=bar",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&SE=1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=abc",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=-1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=+1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se= 1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=1 ",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=1.5",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=1e9",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=0x10",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=01",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=9223372036854775808",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=18446744073709551616",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=10000000000000000000",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=00000000000000000000001",
        "SharedAccessSignature sr=&sig=x&se=1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=&se=1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&&sig=x&se=1",
        "SharedAccessSignature &sr=a%2Fdevices%2Fd&sig=x&se=1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=1&",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig&se=1",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=1&=",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=1&=x",
        "SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&%73e=1",
    };
    sg_sas_t t;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sg_rc rc = parse_str(bad[i], &t);
        if (rc != SG_E_MALFORMED)
            fprintf(stderr, "malformed[%zu] \"%s\": %s\n", i, bad[i], sg_strerror(rc));
        CHECK_RC(rc, SG_E_MALFORMED);
    }
    /* A NUL where the prefix's space belongs. */
    static const char nul_tok[] = "SharedAccessSignature\0sr=a&sig=x&se=1";
    CHECK_RC(sg_sas_parse(nul_tok, sizeof nul_tok - 1, &t), SG_E_MALFORMED);
    CHECK_RC(sg_sas_parse(NULL, 0, &t), SG_E_MALFORMED);

    /* Boundaries of se. */
    CHECK_RC(parse_str("SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=9223372036854775807", &t),
             SG_OK);
    CHECK(t.se == INT64_MAX);
    CHECK_RC(parse_str("SharedAccessSignature sr=a%2Fdevices%2Fd&sig=x&se=0", &t), SG_OK);
    CHECK(t.se == 0);
    /* A value may contain '=' (an unencoded id can). */
    CHECK_RC(parse_str("SharedAccessSignature sr=a/devices/k=v&sig=x&se=5", &t), SG_OK);
    CHECK(t.sr_len == strlen("a/devices/k=v") && t.se == 5);
}

static void test_too_big(void)
{
    static char tok[SG_SAS_MAX_TOKEN + 2];
    sg_sas_t t;
    /* A valid-looking token padded out in its sr, at and just past the cap. */
    const char *head = "SharedAccessSignature se=2000000000&sig=x&sr=h%2Fdevices%2Fd";
    size_t hl = strlen(head);
    memcpy(tok, head, hl);
    memset(tok + hl, 'a', sizeof tok - hl);
    CHECK_RC(sg_sas_parse(tok, SG_SAS_MAX_TOKEN, &t), SG_OK);
    CHECK_RC(sg_sas_parse(tok, SG_SAS_MAX_TOKEN + 1, &t), SG_E_TOO_BIG);
    CHECK_RC(sg_sas_parse(tok, SIZE_MAX, &t), SG_E_TOO_BIG);

    /* sg_sas_make: the exact size fits, one byte less does not. */
    char out[SG_SAS_MAX_TOKEN + 1];
    size_t need = strlen(TOK_DEV1) + 1;
    CHECK_RC(sg_sas_make(out, need, HOST, "dev-1", key, key_len, SE), SG_OK);
    CHECK_STR(out, TOK_DEV1);
    CHECK_RC(sg_sas_make(out, need - 1, HOST, "dev-1", key, key_len, SE), SG_E_TOO_BIG);
    CHECK(out[0] == '\0');
    CHECK_RC(sg_sas_make(out, 1, HOST, "dev-1", key, key_len, SE), SG_E_TOO_BIG);
    /* A host so long the token would pass the parser's cap. */
    static char host[SG_SAS_MAX_TOKEN];
    memset(host, 'h', sizeof host - 1);
    CHECK_RC(sg_sas_make(out, sizeof out, host, "dev-1", key, key_len, SE), SG_E_TOO_BIG);
    /* A long host (with a port, which gets encoded) that still fits. */
    memset(host, 'h', 1300);
    memcpy(host + 1300, ":8883", 6);
    CHECK_RC(sg_sas_make(out, sizeof out, host, "dev-1", key, key_len, SE), SG_OK);
    CHECK_RC(check(out, "dev-1", key, NOW), SG_OK);
}

static void test_make_args(void)
{
    char out[SG_SAS_MAX_TOKEN + 1];
    CHECK_RC(sg_sas_make(out, sizeof out, HOST, "bad/id", key, key_len, SE), SG_E_INVALID);
    CHECK_RC(sg_sas_make(out, sizeof out, HOST, "", key, key_len, SE), SG_E_INVALID);
    CHECK_RC(sg_sas_make(out, sizeof out, "", "dev-1", key, key_len, SE), SG_E_INVALID);
    CHECK_RC(sg_sas_make(out, sizeof out, "a/b", "dev-1", key, key_len, SE), SG_E_INVALID);
    CHECK_RC(sg_sas_make(out, sizeof out, HOST, "dev-1", key, 0, SE), SG_E_INVALID);
    CHECK_RC(sg_sas_make(out, sizeof out, HOST, "dev-1", key, key_len, -1), SG_E_INVALID);

    /* Every allowed character, at the maximum length, round-trips through make and verify. */
    char id[SG_DEVICE_ID_MAX + 1];
    const char *chars = "AZaz09-.%_*?!(),:=@$'";
    for (size_t i = 0; i < SG_DEVICE_ID_MAX; i++)
        id[i] = chars[i % strlen(chars)];
    id[SG_DEVICE_ID_MAX] = '\0';
    CHECK_RC(sg_sas_make(out, sizeof out, HOST, id, key, key_len, SE), SG_OK);
    CHECK_RC(check(out, id, key, NOW), SG_OK);
    CHECK_RC(check(out, id, other_key, NOW), SG_E_AUTH);

    sg_sas_t t;
    CHECK_RC(parse_str(TOK_DEV1, &t), SG_OK);
    CHECK_RC(sg_sas_verify(&t, "dev-1", key, 0, NOW), SG_E_INVALID);
    CHECK_RC(sg_sas_verify(&t, "", key, key_len, NOW), SG_E_INVALID);
    CHECK_RC(sg_sas_verify(&t, "dev/1", key, key_len, NOW), SG_E_INVALID);
    CHECK_RC(sg_sas_verify(&t, NULL, key, key_len, NOW), SG_E_INVALID);
}

static void test_device_id_valid(void)
{
    CHECK(sg_device_id_valid("dev-1", 5));
    CHECK(sg_device_id_valid("A", 1));
    CHECK(sg_device_id_valid("-.%_*?!(),:=@$'", 15));
    char id[SG_DEVICE_ID_MAX + 2];
    memset(id, 'x', sizeof id);
    CHECK(sg_device_id_valid(id, SG_DEVICE_ID_MAX));
    CHECK(!sg_device_id_valid(id, SG_DEVICE_ID_MAX + 1));
    CHECK(!sg_device_id_valid("", 0));
    CHECK(!sg_device_id_valid(NULL, 3));
    static const char *const bad[] = {"a/b", "a b", "a#b", "a&b", "a+b", "a\"b", "a;b", "a<b",
                                      "a\\b", "a~b", "a[b", "a{b", "a`b", "a^b", "a|b", "\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(!sg_device_id_valid(bad[i], strlen(bad[i])));
    CHECK(!sg_device_id_valid("a\0b", 3));
    CHECK(!sg_device_id_valid("ab\n", 3));
}

int main(void)
{
    CHECK_RC(sg_b64_decode(KEY_B64, strlen(KEY_B64), key, &key_len), SG_OK);
    CHECK(key_len == 32);
    memcpy(other_key, key, sizeof key);
    other_key[0] ^= 1;
    test_known_tokens();
    test_reordered();
    test_percent_encoding();
    test_expiry();
    test_wrong_key_and_sig();
    test_wrong_device();
    test_malformed();
    test_too_big();
    test_make_args();
    test_device_id_valid();
    TEST_DONE();
}
