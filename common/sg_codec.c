/* sg_codec.c — base64 (strict validation here, OpenSSL EVP for the bit shuffling), URL
 * percent-encoding as encodeURIComponent does it, and hex. Used by SAS tokens, property bags and
 * the admin API; every decoder treats its input as untrusted. */
#include "sg_codec.h"

#include <limits.h>
#include <string.h>
#include <openssl/evp.h>

/* EVP_EncodeBlock/EVP_DecodeBlock take int lengths, so long inputs go through in chunks that keep
 * whole base64 quanta: a multiple of 3 input bytes when encoding, of 4 characters when decoding. */
#define B64_ENC_CHUNK (3u * 16384u)
#define B64_DEC_CHUNK (4u * 16384u)

static const char hex_upper[] = "0123456789ABCDEF";
static const char hex_lower[] = "0123456789abcdef";

/* Value of one standard-alphabet base64 character, or -1. '=' is not in the alphabet. */
static int b64_value(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

static int hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* The characters encodeURIComponent leaves alone. */
static int url_unreserved(unsigned char ch)
{
    if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
        return 1;
    switch (ch) {
    case '-': case '_': case '.': case '!': case '~': case '*': case '\'': case '(': case ')':
        return 1;
    default:
        return 0;
    }
}

size_t sg_b64_encoded_len(size_t n)
{
    return 4 * (n / 3 + (n % 3 != 0));
}

size_t sg_b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t done = 0, written = 0;
    while (done < n) {
        size_t chunk = n - done < B64_ENC_CHUNK ? n - done : B64_ENC_CHUNK;
        int w = EVP_EncodeBlock((unsigned char *)out + written, in + done, (int)chunk);
        written += (size_t)w;
        done += chunk;
    }
    out[written] = '\0';
    return written;
}

/* EVP_DecodeBlock skips leading/trailing whitespace, accepts '=' in odd places and counts padding
 * as output bytes, so the input is checked here first: length a multiple of 4, alphabet only,
 * '=' only as the last one or two characters, and the bits the padding discards must be zero
 * (so every byte string has exactly one accepted encoding). */
sg_rc sg_b64_decode(const char *in, size_t len, uint8_t *out, size_t *out_len)
{
    SG_ENSURE(len % 4 == 0, SG_E_MALFORMED);
    if (len == 0) {
        *out_len = 0;
        return SG_OK;
    }
    const unsigned char *s = (const unsigned char *)in;
    size_t pad = 0;
    if (s[len - 1] == '=')
        pad = s[len - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < len - pad; i++)
        SG_ENSURE(b64_value(s[i]) >= 0, SG_E_MALFORMED);
    /* The last data character before the padding carries 4 (pad 2) or 2 (pad 1) unused bits. */
    if (pad == 2)
        SG_ENSURE((b64_value(s[len - 3]) & 0x0f) == 0, SG_E_MALFORMED);
    else if (pad == 1)
        SG_ENSURE((b64_value(s[len - 2]) & 0x03) == 0, SG_E_MALFORMED);

    size_t done = 0, produced = 0;
    while (done < len) {
        size_t chunk = len - done < B64_DEC_CHUNK ? len - done : B64_DEC_CHUNK;
        int r = EVP_DecodeBlock(out + produced, s + done, (int)chunk);
        SG_ENSURE(r >= 0 && (size_t)r == chunk / 4 * 3, SG_E_MALFORMED);
        produced += (size_t)r;
        done += chunk;
    }
    /* EVP_DecodeBlock wrote a zero byte for each '='; they are not data. */
    *out_len = produced - pad;
    return SG_OK;
}

sg_rc sg_url_encode(const uint8_t *in, size_t n, char *out, size_t cap, size_t *out_len)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        need += url_unreserved(in[i]) ? 1 : 3;
    if (need >= cap) {
        if (cap > 0)
            out[0] = '\0';
        return SG_E_TOO_BIG;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (url_unreserved(in[i])) {
            out[o++] = (char)in[i];
        } else {
            out[o++] = '%';
            out[o++] = hex_upper[in[i] >> 4];
            out[o++] = hex_upper[in[i] & 0x0f];
        }
    }
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    return SG_OK;
}

/* Reading index i while writing index o <= i keeps in-place decoding (out == in) safe. */
sg_rc sg_url_decode(const char *in, size_t n, char *out, size_t *out_len, int plus_is_space)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = s[i];
        if (ch == '%') {
            SG_ENSURE(n - i > 2, SG_E_MALFORMED);
            int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
            SG_ENSURE(hi >= 0 && lo >= 0, SG_E_MALFORMED);
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else if (ch == '+' && plus_is_space) {
            out[o++] = ' ';
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    return SG_OK;
}

void sg_hex_encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex_lower[in[i] >> 4];
        out[2 * i + 1] = hex_lower[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

sg_rc sg_hex_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len)
{
    const unsigned char *s = (const unsigned char *)in;
    SG_ENSURE(n % 2 == 0, SG_E_MALFORMED);
    for (size_t i = 0; i < n; i++)
        SG_ENSURE(hex_value(s[i]) >= 0, SG_E_MALFORMED);
    SG_ENSURE(n / 2 <= cap, SG_E_TOO_BIG);
    for (size_t i = 0; i < n / 2; i++)
        out[i] = (uint8_t)(hex_value(s[2 * i]) << 4 | hex_value(s[2 * i + 1]));
    if (out_len)
        *out_len = n / 2;
    return SG_OK;
}

sg_rc sg_seconds_ms(const char *in, size_t n, int64_t max_ms, int64_t *ms)
{
    int64_t whole = 0, frac = 0;
    size_t i = 0, digits = 0, decimals = 0;
    for (; i < n && in[i] >= '0' && in[i] <= '9' && digits < 12; i++, digits++)
        whole = whole * 10 + (in[i] - '0');
    SG_ENSURE(digits > 0, SG_E_MALFORMED);
    if (i < n && in[i] == '.') {
        for (i++; i < n && in[i] >= '0' && in[i] <= '9' && decimals < 3; i++, decimals++)
            frac = frac * 10 + (in[i] - '0');
        SG_ENSURE(decimals > 0, SG_E_MALFORMED);
    }
    SG_ENSURE(i == n, SG_E_MALFORMED);
    for (size_t d = decimals; d < 3; d++)
        frac *= 10;
    int64_t v = whole * 1000 + frac;   /* at most 12 digits: no overflow */
    SG_ENSURE(v <= max_ms, SG_E_TOO_BIG);
    *ms = v;
    return SG_OK;
}
