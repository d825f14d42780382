/* sg_config_test.c — a configuration file is read as written or refused: keys indented under their
 * section and "section.key = value" at the top both set the key (ZPL allows dots in names), and a
 * bad value there fails like one in a section. A key at the top without its section, a section
 * with a value of its own, a block nested deeper, and an unknown key are refused with a reason
 * naming what was found. Before, anything not two levels down was skipped without a word: a
 * router given "cluster.shards = ..." at the top ran a ring of one shard. Environment variables
 * name keys too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sg_config.h"
#include "sg_test.h"

static char dir[] = "/tmp/sg-config-test-XXXXXX";

/* The file's path after writing text into it. */
static const char *file_of(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return path;
}

/* Load text into a fresh configuration: the result, the reason in err, the configuration in *out. */
static sg_rc load(const char *text, char *err, size_t errlen, sg_config_t **out)
{
    sg_config_t *c = sg_config_new();
    CHECK(c != NULL);
    err[0] = 0;
    sg_rc rc = sg_config_load_file(c, file_of("sacgate.conf", text), err, errlen);
    *out = c;
    return rc;
}

static void test_sections_and_dotted_keys_both_set(void)
{
    char err[256];
    sg_config_t *c;
    CHECK_RC(load("cluster\n    credit = 8192\n    shards = \"store-0,store-1\"\n"
                  "store.sync = never\nfrontend.mqtt_port = 18883\n", err, sizeof err, &c), SG_OK);
    CHECK(sg_config_int(c, "cluster.credit") == 8192);
    CHECK_STR(sg_config_str(c, "cluster.shards"), "store-0,store-1");
    CHECK_STR(sg_config_str(c, "store.sync"), "never");
    CHECK(sg_config_int(c, "frontend.mqtt_port") == 18883);
    CHECK(sg_config_is_set(c, "store.sync") && !sg_config_is_set(c, "store.data_dir"));
    sg_config_destroy(&c);
    /* comments, an empty file and a section whose keys are all commented out are fine */
    CHECK_RC(load("# nothing set\n", err, sizeof err, &c), SG_OK);
    sg_config_destroy(&c);
    CHECK_RC(load("log\n    # level = debug\nstore\n    sync = never\n", err, sizeof err, &c), SG_OK);
    CHECK_STR(sg_config_str(c, "store.sync"), "never");
    sg_config_destroy(&c);
}

static void test_a_bad_value_at_the_top_is_refused_like_one_in_a_section(void)
{
    char err[256];
    sg_config_t *c;
    CHECK_RC(load("cluster.credit = 5\n", err, sizeof err, &c), SG_E_INVALID);
    CHECK(strstr(err, "cluster.credit must be an integer") != NULL);
    sg_config_destroy(&c);
    CHECK_RC(load("cluster\n    credit = 5\n", err, sizeof err, &c), SG_E_INVALID);
    CHECK(strstr(err, "cluster.credit must be an integer") != NULL);
    sg_config_destroy(&c);
}

static void test_what_would_not_be_read_is_refused(void)
{
    char err[256];
    sg_config_t *c;
    /* a key without its section */
    CHECK_RC(load("credit = 8192\n", err, sizeof err, &c), SG_E_INVALID);
    CHECK(strstr(err, "'credit'") != NULL && strstr(err, "not a setting") != NULL);
    CHECK(sg_config_int(c, "cluster.credit") == 1048576);
    sg_config_destroy(&c);
    /* a section with a value of its own */
    CHECK_RC(load("cluster = x\n    credit = 8192\n", err, sizeof err, &c), SG_E_INVALID);
    CHECK(strstr(err, "section 'cluster'") != NULL);
    sg_config_destroy(&c);
    /* one level too deep */
    CHECK_RC(load("cluster\n    credit\n        value = 8192\n", err, sizeof err, &c), SG_E_INVALID);
    CHECK(strstr(err, "'cluster.credit'") != NULL && strstr(err, "two levels") != NULL);
    sg_config_destroy(&c);
    /* unknown keys, either way */
    CHECK_RC(load("cluster.shardz = store-0\n", err, sizeof err, &c), SG_E_NOT_FOUND);
    CHECK(strstr(err, "cluster.shardz") != NULL);
    sg_config_destroy(&c);
    CHECK_RC(load("cluster\n    shardz = store-0\n", err, sizeof err, &c), SG_E_NOT_FOUND);
    sg_config_destroy(&c);
}

static void test_environment_and_missing_file(void)
{
    char err[256];
    sg_config_t *c = sg_config_new();
    setenv("SACGATE_CLUSTER_CREDIT", "65536", 1);
    CHECK_RC(sg_config_load_env(c, err, sizeof err), SG_OK);
    CHECK(sg_config_int(c, "cluster.credit") == 65536);
    setenv("SACGATE_CLUSTER_CREDIT", "12", 1);
    CHECK_RC(sg_config_load_env(c, err, sizeof err), SG_E_INVALID);
    unsetenv("SACGATE_CLUSTER_CREDIT");
    char path[300];
    snprintf(path, sizeof path, "%s/missing.conf", dir);
    CHECK_RC(sg_config_load_file(c, path, err, sizeof err), SG_E_IO);
    CHECK(strstr(err, "missing.conf") != NULL);
    sg_config_destroy(&c);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_sections_and_dotted_keys_both_set();
    test_a_bad_value_at_the_top_is_refused_like_one_in_a_section();
    test_what_would_not_be_read_is_refused();
    test_environment_and_missing_file();
    char path[300];
    snprintf(path, sizeof path, "%s/sacgate.conf", dir);
    unlink(path);
    rmdir(dir);
    TEST_DONE();
}
