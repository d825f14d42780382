/* sg_tlspsk.h — the PSK identity a TLS client offers, read from its handshake bytes before
 * OpenSSL needs the key, so the frontend can fetch the key from the device's shard without
 * blocking (frontend/fe_psk.c):
 * - TLS 1.3: the pre_shared_key extension (type 41) of the ClientHello, as
 *   SSL_client_hello_get0_ext returns it (RFC 8446 §4.2.11);
 * - TLS 1.2: the plaintext ClientKeyExchange record a PSK suite's client sends, peeked from the
 *   socket before OpenSSL reads it (RFC 4279 §2, RFC 5489 §2).
 * Both are untrusted bytes read through sg_cur; tests/fuzz/fuzz_tlspsk.c drives them. */
#ifndef SG_TLSPSK_H
#define SG_TLSPSK_H

#include <stddef.h>
#include <stdint.h>
#include "sg_result.h"

#define SG_TLS_EXT_PRE_SHARED_KEY 41

/* The first identity of a pre_shared_key extension body: SG_OK with id and id_len viewing it,
 * SG_E_MALFORMED when the body is not one (truncated, empty list, trailing bytes, no binders). */
SG_WUR sg_rc sg_tls13_psk_identity(const uint8_t *ext, size_t len, const uint8_t **id, size_t *id_len);

/* The psk_identity of a ClientKeyExchange at the start of bytes (a TLS record as it arrives):
 * SG_OK with id and id_len viewing it; SG_E_AGAIN when more bytes must come first; SG_E_MALFORMED
 * when it is not a plaintext handshake record holding a ClientKeyExchange that starts with an
 * identity (another record, a message split over records). */
SG_WUR sg_rc sg_tls12_cke_identity(const uint8_t *bytes, size_t len, const uint8_t **id, size_t *id_len);

#endif
