/* sim_cred_test.c — device names, derived keys (a fixed vector, so every slice and the import
 * agree on them), credential files with the exact line and reason of each refusal, and the
 * payload stamps that carry send times. */
#include <openssl/hmac.h>
#include <stdlib.h>
#include "sg_codec.h"
#include "sg_test.h"
#include "sim_cred.h"
#include "sim_worker.h"

static void test_names_and_keys(void)
{
    char id[256];
    CHECK_RC(sim_device_name(id, sizeof id, "sim", 42), SG_OK);
    CHECK_STR(id, "sim-42");
    CHECK_RC(sim_device_name(id, 6, "sim", 42), SG_E_TOO_BIG);
    char long_prefix[200];
    memset(long_prefix, 'a', sizeof long_prefix - 1);
    long_prefix[sizeof long_prefix - 1] = 0;
    CHECK_RC(sim_device_name(id, sizeof id, long_prefix, 1), SG_E_TOO_BIG);   /* over 128 characters */
    CHECK_RC(sim_device_name(id, sizeof id, "bad/prefix", 1), SG_E_TOO_BIG);
    uint8_t k[SIM_KEY_LEN], want[SIM_KEY_LEN];
    unsigned int len = SIM_KEY_LEN;
    sim_derive_key("seed", "sim-0", k);
    HMAC(EVP_sha256(), "seed", 4, (const unsigned char *)"sim-0", 5, want, &len);
    CHECK(memcmp(k, want, SIM_KEY_LEN) == 0);
    char b64[64];
    sg_b64_encode(k, sizeof k, b64);
    /* a fixed vector: keys must never change between versions, or registered devices break */
    CHECK_STR(b64, "3Bqam135HYfTgTrfnNRhonrtGISJ9fYrQGXaTnWmgNs=");
}

static void test_file(void)
{
    char err[256];
    const char *good = "# devices\n"
                       "valve-1 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\r\n"
                       "\n"
                       "   meter.2\tAQ==   \n"
                       "x509-only -\n"
                       "last aGVsbG8=";
    sim_creds_t *c = sim_creds_parse(good, strlen(good), err, sizeof err);
    CHECK(c != NULL);
    CHECK(sim_creds_count(c) == 4);
    size_t len;
    CHECK_STR(sim_creds_id(c, 0), "valve-1");
    const uint8_t *k = sim_creds_key(c, 0, &len);
    CHECK(k && len == 32 && k[31] == 31);
    CHECK_STR(sim_creds_id(c, 1), "meter.2");
    k = sim_creds_key(c, 1, &len);
    CHECK(k && len == 1 && k[0] == 1);
    CHECK(sim_creds_key(c, 2, &len) == NULL && len == 0);
    CHECK_STR(sim_creds_id(c, 3), "last");
    sim_creds_destroy(&c);
    CHECK(c == NULL);
    sim_creds_destroy(&c);

    struct {
        const char *text, *why;
    } bad[] = {
        {"ok AQ==\nbad/id AQ==\n", "line 2: not a valid device id"},
        {"onlyid\n", "line 1: no key"},
        {"a AQ== extra\n", "line 1: expected"},
        {"a notbase64!\n", "line 1: the key is not base64"},
        {"a AQ\n", "line 1: the key is not base64"},
        {"\n\n\na ====\n", "line 4: the key is not base64"},
        {"a QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\n", "line 1: the key is not base64"},
        {"a QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQQ==\n", "line 1: the key is not base64"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = sim_creds_parse(bad[i].text, strlen(bad[i].text), err, sizeof err);
        CHECK(c == NULL);
        if (strncmp(err, bad[i].why, strlen(bad[i].why)) != 0) {
            fprintf(stderr, "case %zu: got '%s', want '%s...'\n", i, err, bad[i].why);
            CHECK(0);
        }
        sim_creds_destroy(&c);
    }
    c = sim_creds_load("/nonexistent/creds", err, sizeof err);
    CHECK(c == NULL && strstr(err, "cannot open") != NULL);
}

static void test_stamps(void)
{
    uint8_t buf[200];
    CHECK(sim_stamp_payload(buf, sizeof buf, "sim", 1733000000123456, 42, 7));
    CHECK(buf[0] == '{' && buf[sizeof buf - 1] == '}');
    CHECK(sim_stamp_time(buf, sizeof buf, "sim") == 1733000000123456);
    CHECK(sim_stamp_time(buf, sizeof buf, "si") == -1);    /* another run's prefix */
    CHECK(sim_stamp_time(buf, sizeof buf, "simx") == -1);
    CHECK(sim_stamp_time(buf, 20, "sim") == -1);           /* cut short */
    /* too small for a stamp: plain filler, no time */
    uint8_t small[10];
    CHECK(!sim_stamp_payload(small, sizeof small, "sim", 1, 2, 3));
    CHECK(sim_stamp_time(small, sizeof small, "sim") == -1);
    const char *forged[] = {"{\"sim\":\"sim\",\"t\":,", "{\"sim\":\"sim\",\"t\":12", "{\"sim\":\"sim\",\"t\":-5,",
                            "{\"sim\":\"sim\",\"t\":99999999999999999999999,", "", "{"};
    for (size_t i = 0; i < sizeof forged / sizeof forged[0]; i++)
        CHECK(sim_stamp_time((const uint8_t *)forged[i], strlen(forged[i]), "sim") == -1);
}

int main(void)
{
    test_names_and_keys();
    test_file();
    test_stamps();
    TEST_DONE();
}
