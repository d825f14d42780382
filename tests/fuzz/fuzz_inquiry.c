/* fuzz_inquiry.c — libFuzzer harness for the inquiry topic and filter parsers (frontend/
 * fe_inquiry.h): the topic of a device's PUBLISH and SUBSCRIBE is untrusted. The first byte is
 * the device id's length (taken from the input, so the fuzzer can match it). Aborts when a
 * parsed name or rid lies outside the input or breaks the rules the shard checks again. */
#include <stdint.h>
#include <stdlib.h>
#include "fe_inquiry.h"
#include "sg_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || (size_t)data[0] + 1 > size)
        return 0;
    const char *device = (const char *)data + 1;
    size_t dl = data[0];
    sg_mqtt_str_t t = {data + 1 + dl, size - 1 - dl};
    fe_inquiry_topic_t q;
    if (fe_inquiry_topic(device, dl, t, &q)) {
        const char *end = (const char *)t.p + t.len;
        if (q.name < (const char *)t.p || q.name + q.name_len > end || q.rid + q.rid_len != end ||
            !sg_inquiry_name_valid(q.name, q.name_len) || !sg_inquiry_rid_valid(q.rid, q.rid_len))
            abort();
    }
    (void)fe_inquiry_filter(device, dl, t);
    return 0;
}
