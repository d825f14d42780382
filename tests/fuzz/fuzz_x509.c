/* fuzz_x509.c — libFuzzer harness for what a shard does with a client certificate chain an X.509
 * device's frontend passes on (store/st_cert.c): splitting the sg_wire chain, parsing each DER
 * certificate, the thumbprint check, and the subject match of x509-ca devices. The first byte
 * picks the path: 0x01 set: subject matching, the next byte the length of a device id that
 * follows, the rest one DER certificate; otherwise st_cert_verify of the rest as a chain for
 * device "dev-1", by thumbprint (0x02 set) or against a CA set that is empty. Either way the
 * answer must be a decision, never a crash, and a refusal names its reason. */
#include <stdlib.h>
#include <string.h>
#include "st_cert.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static st_cert_t *cas;
    if (!cas && !(cas = st_cert_new()))
        abort();
    if (size < 2)
        return 0;
    if (data[0] & 1) {
        size_t idl = data[1];
        if (idl > size - 2)
            return 0;
        char id[256];
        memcpy(id, data + 2, idl);
        id[idl] = 0;
        bool is = st_cert_subject_is(data + 2 + idl, size - 2 - idl, id);
        if (is && strlen(id) != idl)
            abort();   /* a CN with a NUL in it matched a shorter id */
        return 0;
    }
    static const uint8_t thumb[1][32] = {{0x5a}};
    const char *why = NULL;
    int64_t not_after = 0;
    sg_rc rc = st_cert_verify(cas, data + 1, size - 1, "dev-1", thumb, (data[0] & 2) ? 1 : 0, 1800000000, &not_after,
                              &why);
    if (rc != SG_E_AUTH || !why)
        abort();   /* nothing here can verify: no CA is registered and no certificate has that thumbprint */
    return 0;
}
