/* fuzz_sas.c — libFuzzer harness for the device credential path: SAS token parse + verify (fixed
 * key, device and clock), and the URL, base64, hex and seconds decoders run on the raw input. Aborts when
 * a decoder breaks one of its own invariants. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_codec.h"
#include "sg_sas.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Key of "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", the one the seeds are signed with. */
static const uint8_t key[] = "0123456789abcdef0123456789abcdef";
#define KEY_LEN 32
#define DEVICE "dev-1"
#define NOW 1000000000

static void fuzz_token(const char *s, size_t n)
{
    sg_sas_t t;
    if (sg_sas_parse(s, n, &t) != SG_OK)
        return;
    if (t.sr < s || t.sr + t.sr_len > s + n || t.sig < s || t.sig + t.sig_len > s + n ||
        t.se < 0)
        abort();
    sg_rc rc = sg_sas_verify(&t, DEVICE, key, KEY_LEN, NOW);
    if (rc != SG_OK && rc != SG_E_AUTH && rc != SG_E_EXPIRED && rc != SG_E_WRONG_DEVICE)
        abort();
    rc = sg_sas_verify(&t, "dev:1$x", key, KEY_LEN, t.se - 1);
    if (rc != SG_OK && rc != SG_E_AUTH && rc != SG_E_WRONG_DEVICE)
        abort();

    /* A token made for the parsed expiry must parse and verify. */
    char made[SG_SAS_MAX_TOKEN + 1];
    sg_sas_t m;
    if (sg_sas_make(made, sizeof made, "myhub.example.com", DEVICE, key, KEY_LEN, t.se) != SG_OK ||
        sg_sas_parse(made, strlen(made), &m) != SG_OK || m.se != t.se ||
        sg_sas_verify(&m, DEVICE, key, KEY_LEN, t.se - 1) != SG_OK)
        abort();
}

static void fuzz_decoders(const char *s, size_t n)
{
    char *url = malloc(n + 1);
    uint8_t *b64 = malloc(n / 4 * 3 + 1);
    char *re = malloc(n + 4);
    uint8_t *hex = malloc(n / 2 + 1);
    if (!url || !b64 || !re || !hex)
        abort();
    size_t len;
    for (int plus = 0; plus < 2; plus++) {
        if (sg_url_decode(s, n, url, &len, plus) == SG_OK && (len > n || url[len] != '\0'))
            abort();
    }
    /* Strict base64 has one spelling per byte string, so re-encoding gives back the input. */
    if (sg_b64_decode(s, n, b64, &len) == SG_OK) {
        if (sg_b64_encoded_len(len) != n || sg_b64_encode(b64, len, re) != n ||
            memcmp(re, s, n) != 0)
            abort();
    }
    if (sg_hex_decode(s, n, hex, n / 2, &len) == SG_OK && len * 2 != n)
        abort();
    (void)sg_device_id_valid(s, n);
    /* Seconds that parse print back as the same milliseconds, within the bound. */
    int64_t ms;
    if (sg_seconds_ms(s, n, 60000, &ms) == SG_OK) {
        char back[32];
        int64_t again;
        int k = snprintf(back, sizeof back, "%lld.%03lld", (long long)(ms / 1000), (long long)(ms % 1000));
        if (ms < 0 || ms > 60000 || k <= 0 || sg_seconds_ms(back, (size_t)k, 60000, &again) != SG_OK || again != ms)
            abort();
    }
    free(url);
    free(b64);
    free(re);
    free(hex);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy so that any read past the end is caught by ASan even when the harness runs under the
     * replay driver's larger buffer. */
    char *s = malloc(size ? size : 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    fuzz_token(s, size);
    fuzz_decoders(s, size);
    free(s);
    return 0;
}
