/* sg_codec.h — small text codecs used across tiers: base64 (OpenSSL EVP underneath), URL
 * percent-encoding in the form Azure IoT SDKs produce (encodeURIComponent), and hex. */
#ifndef SG_CODEC_H
#define SG_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include "sg_result.h"

/* Standard base64 with padding. out must hold sg_b64_encoded_len(n) + 1 bytes (NUL added). */
size_t sg_b64_encoded_len(size_t n);
size_t sg_b64_encode(const uint8_t *in, size_t n, char *out);
/* Strict standard base64 (padding required, no whitespace, and the bits under the padding must
 * be zero, so each byte string has one accepted spelling). *out_len gets the decoded size.
 * out must hold at least 3 * (len / 4) bytes. SG_E_MALFORMED on any invalid input. */
SG_WUR sg_rc sg_b64_decode(const char *in, size_t len, uint8_t *out, size_t *out_len);

/* Percent-encode like JavaScript's encodeURIComponent: A-Z a-z 0-9 - _ . ! ~ * ' ( ) stay, every
 * other byte becomes %XX (upper-case hex). Returns SG_E_TOO_BIG when out (cap bytes, including
 * the NUL) is too small. */
SG_WUR sg_rc sg_url_encode(const uint8_t *in, size_t n, char *out, size_t cap, size_t *out_len);
/* Decode %XX (either hex case). '+' is left as '+' unless plus_is_space. A '%' not followed by
 * two hex digits is SG_E_MALFORMED. out may equal in (decoding only shrinks). A NUL is always
 * appended after the decoded bytes (*out_len excludes it), so out must hold n + 1 bytes. */
SG_WUR sg_rc sg_url_decode(const char *in, size_t n, char *out, size_t *out_len, int plus_is_space);

/* Lower-case hex. out holds 2n+1 bytes. */
void sg_hex_encode(const uint8_t *in, size_t n, char *out);
/* Either case; SG_E_MALFORMED on odd length or non-hex; SG_E_TOO_BIG if out (cap) is small. */
SG_WUR sg_rc sg_hex_decode(const char *in, size_t n, uint8_t *out, size_t cap, size_t *out_len);

/* Seconds as decimal text with at most three decimals ("0", "2", "0.05", "60.000") into
 * milliseconds, at most max_ms. Strict: no sign, no exponent, no "inf"/"nan", no hex, no spaces,
 * no empty or lone fraction (".5", "1."). SG_E_MALFORMED, or SG_E_TOO_BIG past max_ms.
 * Hand-rolled: strtod accepts every one of those forms. */
SG_WUR sg_rc sg_seconds_ms(const char *in, size_t n, int64_t max_ms, int64_t *ms);

#endif
