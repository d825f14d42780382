/* sg_tlspsk.c — PSK identities out of TLS handshake bytes; see sg_tlspsk.h. Hand-rolled because
 * OpenSSL offers the extension only as raw bytes (SSL_client_hello_get0_ext) and reads the
 * ClientKeyExchange itself only when it also wants the key at once; both formats are a few
 * length-prefixed fields. */
#include "sg_tlspsk.h"
#include "sg_buf.h"

sg_rc sg_tls13_psk_identity(const uint8_t *ext, size_t len, const uint8_t **id, size_t *id_len)
{
    sg_cur_t c, ids;
    const uint8_t *list, *binders;
    size_t list_len, binders_len;
    uint32_t age;
    sg_cur_init(&c, ext, len);
    /* identities<7..2^16-1>, binders<33..2^16-1>, nothing after */
    SG_ENSURE(sg_cur_str16(&c, 65535, &list, &list_len) == SG_OK && list_len >= 7, SG_E_MALFORMED);
    SG_ENSURE(sg_cur_str16(&c, 65535, &binders, &binders_len) == SG_OK && binders_len >= 33, SG_E_MALFORMED);
    SG_ENSURE(sg_cur_left(&c) == 0, SG_E_MALFORMED);
    /* the first PskIdentity: identity<1..2^16-1>, u32 obfuscated_ticket_age */
    sg_cur_init(&ids, list, list_len);
    SG_ENSURE(sg_cur_str16(&ids, 65535, id, id_len) == SG_OK && *id_len >= 1, SG_E_MALFORMED);
    SG_ENSURE(sg_cur_u32(&ids, &age) == SG_OK, SG_E_MALFORMED);
    return SG_OK;
}

#define TLS_RECORD_HANDSHAKE 22
#define TLS_CLIENT_KEY_EXCHANGE 16
#define TLS_RECORD_MAX (16384 + 2048)

sg_rc sg_tls12_cke_identity(const uint8_t *bytes, size_t len, const uint8_t **id, size_t *id_len)
{
    sg_cur_t c, rec, msg;
    uint8_t type, major, minor, hs_type, l0;
    uint16_t rec_len, l12;
    const uint8_t *frag, *body;
    sg_cur_init(&c, bytes, len);
    /* record header: type, version, u16 length */
    if (sg_cur_left(&c) < 5)
        return SG_E_AGAIN;
    SG_GUARD(sg_cur_u8(&c, &type));
    SG_GUARD(sg_cur_u8(&c, &major));
    SG_GUARD(sg_cur_u8(&c, &minor));
    SG_GUARD(sg_cur_u16(&c, &rec_len));
    SG_ENSURE(type == TLS_RECORD_HANDSHAKE && major == 3 && rec_len > 0 && rec_len <= TLS_RECORD_MAX, SG_E_MALFORMED);
    if (sg_cur_left(&c) < rec_len)
        return SG_E_AGAIN;
    SG_GUARD(sg_cur_bytes(&c, rec_len, &frag));
    /* handshake message: u8 type, u24 length, body (whole inside this record) */
    sg_cur_init(&rec, frag, rec_len);
    SG_ENSURE(sg_cur_u8(&rec, &hs_type) == SG_OK && hs_type == TLS_CLIENT_KEY_EXCHANGE, SG_E_MALFORMED);
    SG_ENSURE(sg_cur_u8(&rec, &l0) == SG_OK && sg_cur_u16(&rec, &l12) == SG_OK, SG_E_MALFORMED);
    size_t msg_len = ((size_t)l0 << 16) | l12;
    SG_ENSURE(sg_cur_bytes(&rec, msg_len, &body) == SG_OK, SG_E_MALFORMED);
    /* psk_identity<0..2^16-1> first (plain PSK and ECDHE_PSK alike); empty means none */
    sg_cur_init(&msg, body, msg_len);
    SG_ENSURE(sg_cur_str16(&msg, 65535, id, id_len) == SG_OK && *id_len > 0, SG_E_MALFORMED);
    return SG_OK;
}
