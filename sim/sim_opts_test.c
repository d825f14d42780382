/* sim_opts_test.c — the simulator's settings: slices (disjoint, complete, balanced), --slice and
 * --source parsing with their refusals, ports.env files, flag parsing errors, and the derived
 * settings (processes from the device count, mode-dependent topics). */
#include <stdlib.h>
#include <unistd.h>
#include "sg_test.h"
#include "sim_opts.h"

static void test_slices(void)
{
    uint64_t totals[] = {0, 1, 7, 1000, 1000000, 999983};
    unsigned counts[] = {1, 2, 3, 7, 64, 1000};
    for (size_t a = 0; a < sizeof totals / sizeof totals[0]; a++)
        for (size_t b = 0; b < sizeof counts / sizeof counts[0]; b++) {
            uint64_t first = 5, next = first, min = UINT64_MAX, max = 0;
            for (unsigned i = 0; i < counts[b]; i++) {
                uint64_t f, n;
                sim_slice_range(first, totals[a], i, counts[b], &f, &n);
                CHECK(f == next);   /* contiguous and disjoint */
                next = f + n;
                min = n < min ? n : min;
                max = n > max ? n : max;
            }
            CHECK(next == first + totals[a]);   /* complete */
            CHECK(max - min <= 1);              /* balanced */
        }
    unsigned i, n;
    CHECK_RC(sim_parse_slice("0/1", &i, &n), SG_OK);
    CHECK(i == 0 && n == 1);
    CHECK_RC(sim_parse_slice("3/4", &i, &n), SG_OK);
    CHECK(i == 3 && n == 4);
    const char *bad[] = {"", "1", "4/4", "5/4", "-1/4", "1/-4", "1/0", "a/4", "1/4x", "1//4", "/4", "1/", " 1/4"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        if (sim_parse_slice(bad[k], &i, &n) != SG_E_INVALID) {
            fprintf(stderr, "slice '%s' was accepted\n", bad[k]);
            CHECK(0);
        }
}

static void test_sources(void)
{
    sim_source_t s;
    CHECK_RC(sim_parse_source("127.0.1.0/24", &s), SG_OK);
    CHECK(s.base == 0x7f000101 && s.count == 254);
    CHECK_RC(sim_parse_source("127.0.1.77/24", &s), SG_OK);
    CHECK(s.base == 0x7f000101 && s.count == 254);   /* the block the address is in */
    CHECK_RC(sim_parse_source("127.1.0.0/16", &s), SG_OK);
    CHECK(s.base == 0x7f010001 && s.count == 65534);
    CHECK_RC(sim_parse_source("10.0.0.9", &s), SG_OK);
    CHECK(s.base == 0x0a000009 && s.count == 1);
    CHECK_RC(sim_parse_source("10.0.0.8/31", &s), SG_OK);
    CHECK(s.base == 0x0a000008 && s.count == 2);
    const char *bad[] = {"", "127.0.0.1/", "127.0.0.1/33", "127.0.0.1/7", "127.0.0.256", "::1", "127.0.0.1/2x", "localhost"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        if (sim_parse_source(bad[k], &s) != SG_E_INVALID) {
            fprintf(stderr, "source '%s' was accepted\n", bad[k]);
            CHECK(0);
        }
}

static void test_ports_env(void)
{
    char path[] = "/tmp/sim_opts_test.XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *text = "MQTT_PORTS=\"40001 40002 40003\"\nWS_PORTS=\"\"\nADMIN_PORT=40100\n";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    int ports[8], n = 0, admin = 0;
    CHECK_RC(sim_read_ports_env(path, ports, &n, 8, &admin), SG_OK);
    CHECK(n == 3 && ports[0] == 40001 && ports[2] == 40003 && admin == 40100);
    CHECK_RC(sim_read_ports_env(path, ports, &n, 2, &admin), SG_E_MALFORMED);   /* more ports than room */
    FILE *f = fopen(path, "w");
    fputs("MQTT_PORTS=\"\"\n", f);
    fclose(f);
    CHECK_RC(sim_read_ports_env(path, ports, &n, 8, &admin), SG_E_MALFORMED);
    f = fopen(path, "w");
    fputs("MQTT_PORTS=\"70000\"\n", f);
    fclose(f);
    CHECK_RC(sim_read_ports_env(path, ports, &n, 8, &admin), SG_E_MALFORMED);
    unlink(path);
    CHECK_RC(sim_read_ports_env(path, ports, &n, 8, &admin), SG_E_IO);
}

static sg_rc parse(sim_opts_t *o, char *err, size_t len, const char *a, const char *b, const char *c, const char *d)
{
    char *argv[] = {(char *)a, (char *)b, (char *)c, (char *)d};
    int argc = d ? 4 : c ? 3 : b ? 2 : a ? 1 : 0;
    sim_opts_defaults(o);
    return sim_opts_parse(o, argc, argv, err, len);
}

static void test_flags(void)
{
    sim_opts_t *o = malloc(sizeof *o);
    char err[256];
    CHECK_RC(parse(o, err, sizeof err, "--devices", "250000", "--port=40001,40002", NULL), SG_OK);
    CHECK(o->devices == 250000 && o->n_ports == 2 && o->ports[1] == 40002);
    CHECK_RC(parse(o, err, sizeof err, "--subscribe", "--insecure", "--mode", "plain"), SG_OK);
    CHECK(o->subscribe && o->insecure && o->mode == SIM_MODE_PLAIN);
    CHECK_RC(parse(o, err, sizeof err, "--subscribe", "off", NULL, NULL), SG_OK);
    CHECK(!o->subscribe);
    /* secrets never reach the recorded command line */
    CHECK_RC(parse(o, err, sizeof err, "--key-seed", "s3cret", "--token=t0ken", NULL), SG_OK);
    CHECK(strstr(o->command_line, "s3cret") == NULL && strstr(o->command_line, "t0ken") == NULL);
    CHECK(strstr(o->command_line, "--key-seed <redacted> --token=<redacted>") != NULL);
    CHECK_STR(o->key_seed, "s3cret");
    /* refusals name the flag */
    CHECK_RC(parse(o, err, sizeof err, "--devices", "0", NULL, NULL), SG_E_INVALID);
    CHECK(strstr(err, "--devices") != NULL);
    CHECK_RC(parse(o, err, sizeof err, "--qos", "2", NULL, NULL), SG_E_INVALID);
    CHECK_RC(parse(o, err, sizeof err, "--rate", "fast", NULL, NULL), SG_E_INVALID);
    CHECK_RC(parse(o, err, sizeof err, "--keepalive", "1.5", NULL, NULL), SG_E_INVALID);
    CHECK_RC(parse(o, err, sizeof err, "--port", "0", NULL, NULL), SG_E_INVALID);
    CHECK_RC(parse(o, err, sizeof err, "--mode", "amqp", NULL, NULL), SG_E_INVALID);
    CHECK_RC(parse(o, err, sizeof err, "--nope", NULL, NULL, NULL), SG_E_INVALID);
    CHECK(strstr(err, "unknown flag") != NULL);
    CHECK_RC(parse(o, err, sizeof err, "stray", NULL, NULL, NULL), SG_E_INVALID);
    CHECK_RC(parse(o, err, sizeof err, "--devices", NULL, NULL, NULL), SG_E_INVALID);
    /* derived settings */
    CHECK_RC(parse(o, err, sizeof err, "--devices", "100000", "--insecure", NULL), SG_OK);
    CHECK_RC(sim_opts_finish(o, err, sizeof err), SG_OK);
    CHECK(o->processes >= 6);   /* 18000 sessions per process at most */
    CHECK(o->slice_n == 100000 && o->slice_first == 0);
    CHECK_STR(o->topic, "devices/{id}/messages/events/");
    CHECK_STR(o->command_topic, "devices/{id}/messages/devicebound/#");
    CHECK_RC(parse(o, err, sizeof err, "--mode", "plain", "--insecure", NULL), SG_OK);
    CHECK_RC(sim_opts_finish(o, err, sizeof err), SG_OK);
    CHECK_STR(o->backend_topic, "sim/+/telemetry");
    CHECK_RC(parse(o, err, sizeof err, "--devices", "1000", "--slice", "3/4"), SG_OK);
    o->insecure = true;
    CHECK_RC(sim_opts_finish(o, err, sizeof err), SG_OK);
    CHECK(o->slice_first == 750 && o->slice_n == 250);
    /* combinations that cannot work are refused before anything starts */
    CHECK_RC(parse(o, err, sizeof err, "--provision", "import", NULL, NULL), SG_OK);
    o->insecure = true;
    CHECK_RC(sim_opts_finish(o, err, sizeof err), SG_E_INVALID);
    CHECK(strstr(err, "--token") != NULL);
    CHECK_RC(parse(o, err, sizeof err, "--command-rate", "5", NULL, NULL), SG_OK);
    o->insecure = true;
    CHECK_RC(sim_opts_finish(o, err, sizeof err), SG_E_INVALID);
    CHECK_RC(parse(o, err, sizeof err, "--devices", "10", NULL, NULL), SG_OK);
    CHECK_RC(sim_opts_finish(o, err, sizeof err), SG_E_INVALID);   /* TLS without --cafile or --insecure */
    CHECK(strstr(err, "--cafile") != NULL);
    free(o);
}

int main(void)
{
    test_slices();
    test_sources();
    test_ports_env();
    test_flags();
    TEST_DONE();
}
