/* fuzz_sim.c — libFuzzer harness for what the simulator reads from others: credential files,
 * the stamps in payloads that come back from the gateway (telemetry the back-end reads, commands
 * devices receive), and slice summaries handed to `merge`. The first byte picks the parser.
 * Checks: parsed credentials are valid device ids with keys of 0-64 bytes; a stamp parses only
 * when the payload starts with this run's prefix; a merge of a summary with itself either
 * refuses or doubles its counts; nothing crashes or leaks. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "sg_sas.h"
#include "sim_cred.h"
#include "sim_summary.h"
#include "sim_worker.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t which = data[0] % 3;
    data++;
    size--;
    if (which == 0) {
        char err[256];
        sim_creds_t *c = sim_creds_parse((const char *)data, size, err, sizeof err);
        for (size_t i = 0; i < sim_creds_count(c); i++) {
            const char *id = sim_creds_id(c, i);
            size_t len;
            const uint8_t *k = sim_creds_key(c, i, &len);
            if (!sg_device_id_valid(id, strlen(id)) || len > 64 || (k == NULL) != (len == 0))
                abort();
        }
        sim_creds_destroy(&c);
    } else if (which == 1) {
        int64_t t = sim_stamp_time(data, size, "sim");
        if (t < -1 || (t >= 0 && (size < 12 || memcmp(data, "{\"sim\":\"sim\"", 12) != 0)))
            abort();
    } else {
        json_t *j = json_loadb((const char *)data, size, 0, NULL);
        if (j) {
            json_t *in[2] = {j, j}, *m = NULL;
            char err[256];
            if (sim_summary_merge(in, 2, &m, err, sizeof err) == SG_OK) {
                json_int_t a = json_integer_value(json_object_get(json_object_get(j, "counters"), "published"));
                json_int_t b = json_integer_value(json_object_get(json_object_get(m, "counters"), "published"));
                if (json_is_integer(json_object_get(json_object_get(j, "counters"), "published")) && b != 2 * a &&
                    a < INT64_MAX / 2 && a > INT64_MIN / 2)
                    abort();
                json_decref(m);
            }
            json_decref(j);
        }
    }
    return 0;
}
