/* sg_tlspsk_test.c — PSK identities out of handshake bytes: the good shapes and each way a
 * peer can get them wrong. */
#include <string.h>
#include "sg_test.h"
#include "sg_tlspsk.h"

/* pre_shared_key body with one identity and one 32-byte binder */
static size_t ext13(uint8_t *o, const char *id)
{
    size_t n = strlen(id), p = 0;
    size_t list = 2 + n + 4;
    o[p++] = (uint8_t)(list >> 8);
    o[p++] = (uint8_t)list;
    o[p++] = (uint8_t)(n >> 8);
    o[p++] = (uint8_t)n;
    memcpy(o + p, id, n);
    p += n;
    memset(o + p, 0, 4);   /* obfuscated_ticket_age */
    p += 4;
    o[p++] = 0;
    o[p++] = 33;           /* binders: one of 32 bytes */
    o[p++] = 32;
    memset(o + p, 0xab, 32);
    return p + 32;
}

static void test_tls13(void)
{
    uint8_t b[256];
    const uint8_t *id;
    size_t idl;
    size_t n = ext13(b, "dev-1");
    CHECK_RC(sg_tls13_psk_identity(b, n, &id, &idl), SG_OK);
    CHECK(idl == 5 && memcmp(id, "dev-1", 5) == 0);
    for (size_t k = 0; k < n; k++)   /* every truncation */
        CHECK_RC(sg_tls13_psk_identity(b, k, &id, &idl), SG_E_MALFORMED);
    b[n] = 0;
    CHECK_RC(sg_tls13_psk_identity(b, n + 1, &id, &idl), SG_E_MALFORMED);   /* trailing byte */
    n = ext13(b, "dev-1");
    b[1] = 0xff;   /* identity list longer than the extension */
    CHECK_RC(sg_tls13_psk_identity(b, n, &id, &idl), SG_E_MALFORMED);
    n = ext13(b, "abc");
    b[2] = 0;
    b[3] = 0;   /* an empty identity */
    CHECK_RC(sg_tls13_psk_identity(b, n, &id, &idl), SG_E_MALFORMED);
}

/* a ClientKeyExchange record: psk_identity, then extra (an ECDHE point) */
static size_t cke12(uint8_t *o, const char *id, size_t extra)
{
    size_t n = strlen(id);
    size_t body = 2 + n + extra, msg = 4 + body;
    size_t p = 0;
    o[p++] = 22;
    o[p++] = 3;
    o[p++] = 3;
    o[p++] = (uint8_t)(msg >> 8);
    o[p++] = (uint8_t)msg;
    o[p++] = 16;
    o[p++] = 0;
    o[p++] = (uint8_t)(body >> 8);
    o[p++] = (uint8_t)body;
    o[p++] = (uint8_t)(n >> 8);
    o[p++] = (uint8_t)n;
    memcpy(o + p, id, n);
    p += n;
    memset(o + p, 0x04, extra);
    return p + extra;
}

static void test_tls12(void)
{
    uint8_t b[512];
    const uint8_t *id;
    size_t idl;
    size_t n = cke12(b, "device-12", 66);
    CHECK_RC(sg_tls12_cke_identity(b, n, &id, &idl), SG_OK);
    CHECK(idl == 9 && memcmp(id, "device-12", 9) == 0);
    /* the ChangeCipherSpec and Finished after it change nothing */
    memset(b + n, 20, 40);
    CHECK_RC(sg_tls12_cke_identity(b, n + 40, &id, &idl), SG_OK);
    for (size_t k = 0; k < n; k++)   /* part of the record: wait for the rest */
        CHECK_RC(sg_tls12_cke_identity(b, k, &id, &idl), SG_E_AGAIN);
    n = cke12(b, "d", 0);
    b[0] = 23;   /* application data, not a handshake */
    CHECK_RC(sg_tls12_cke_identity(b, n, &id, &idl), SG_E_MALFORMED);
    n = cke12(b, "d", 0);
    b[5] = 1;    /* a ClientHello */
    CHECK_RC(sg_tls12_cke_identity(b, n, &id, &idl), SG_E_MALFORMED);
    n = cke12(b, "d", 0);
    b[8] = 200;  /* message longer than its record (split over records) */
    CHECK_RC(sg_tls12_cke_identity(b, n, &id, &idl), SG_E_MALFORMED);
    n = cke12(b, "", 10);   /* no identity */
    CHECK_RC(sg_tls12_cke_identity(b, n, &id, &idl), SG_E_MALFORMED);
    n = cke12(b, "d", 0);
    b[3] = 0xff;  /* a record over the maximum */
    b[4] = 0xff;
    CHECK_RC(sg_tls12_cke_identity(b, n, &id, &idl), SG_E_MALFORMED);
}

int main(void)
{
    test_tls13();
    test_tls12();
    TEST_DONE();
}
