/* fuzz_tlspsk.c — libFuzzer harness for the PSK identity readers (sg_tlspsk): the first byte
 * picks TLS 1.3's pre_shared_key extension or TLS 1.2's ClientKeyExchange record; an identity
 * found must lie inside the input and be non-empty. */
#include <stdlib.h>
#include "sg_tlspsk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1, *id = NULL;
    size_t n = size - 1, idl = 0;
    sg_rc rc = (data[0] & 1) ? sg_tls12_cke_identity(p, n, &id, &idl) : sg_tls13_psk_identity(p, n, &id, &idl);
    if (rc == SG_OK && (idl == 0 || id < p || id + idl > p + n))
        abort();
    if (rc != SG_OK && rc != SG_E_AGAIN && rc != SG_E_MALFORMED)
        abort();
    return 0;
}
