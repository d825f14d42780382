/* st_registry_test.c — the registry rules that need no database: tag validation and how tags
 * are kept across updates, a listing's tag filter, and the body and effect of a SAS key
 * regeneration (which keys change, the generation, refusals of other credential kinds). */
#include "st_registry.h"
#include <stdio.h>
#include <string.h>
#include "sg_test.h"

static json_t *js(const char *text)
{
    json_t *j = json_loads(text, JSON_DECODE_ANY, NULL);
    if (!j) {
        fprintf(stderr, "bad test JSON: %s\n", text);
        exit(2);
    }
    return j;
}

static sg_rc tags_rc(const char *text)
{
    char msg[300];
    json_t *t = js(text);
    sg_rc rc = st_reg_tags_check(t, msg, sizeof msg);
    json_decref(t);
    return rc;
}

/* st_reg_put of body (text) over existing (NULL: a create); the stored entry, or NULL with the
 * error's name in *ename. */
static json_t *put(const char *body_text, const json_t *existing, const char **ename)
{
    st_reg_put_t out;
    char msg[300];
    *ename = NULL;
    json_t *body = js(body_text);
    sg_rc rc = st_reg_put("dev-1", body, existing, 1000, &out, ename, msg, sizeof msg);
    json_decref(body);
    if (rc != SG_OK)
        return NULL;
    json_decref(out.generated);
    return out.stored;
}

static void test_tags(void)
{
    CHECK_RC(tags_rc("{}"), SG_OK);
    CHECK_RC(tags_rc("{\"site\":\"north\",\"a.b_c-9\":\"\"}"), SG_OK);
    CHECK_RC(tags_rc("[]"), SG_E_INVALID);
    CHECK_RC(tags_rc("{\"n\":3}"), SG_E_INVALID);
    CHECK_RC(tags_rc("{\"n\":null}"), SG_E_INVALID);
    CHECK_RC(tags_rc("{\"has space\":\"x\"}"), SG_E_INVALID);
    CHECK_RC(tags_rc("{\"a:b\":\"x\"}"), SG_E_INVALID);
    CHECK_RC(tags_rc("{\"\":\"x\"}"), SG_E_INVALID);

    char buf[4096];
    /* keys: 64 characters are fine, 65 are not */
    snprintf(buf, sizeof buf, "{\"%s\":\"v\"}", "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk");
    CHECK_RC(tags_rc(buf), SG_OK);
    snprintf(buf, sizeof buf, "{\"%s\":\"v\"}", "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk");
    CHECK_RC(tags_rc(buf), SG_E_INVALID);

    /* values: 256 characters, also when each is two UTF-8 bytes; 257 are too many */
    char val[2 * 257 + 1];
    for (int n = 256; n <= 257; n++) {
        for (int twobyte = 0; twobyte <= 1; twobyte++) {
            size_t o = 0;
            for (int i = 0; i < n; i++) {
                if (twobyte) {
                    val[o++] = (char)0xc3;
                    val[o++] = (char)0xbc;   /* ü */
                } else {
                    val[o++] = 'v';
                }
            }
            val[o] = 0;
            snprintf(buf, sizeof buf, "{\"k\":\"%s\"}", val);
            CHECK_RC(tags_rc(buf), n == 256 ? SG_OK : SG_E_INVALID);
        }
    }

    /* 32 tags, not 33 */
    for (int n = 32; n <= 33; n++) {
        size_t o = (size_t)snprintf(buf, sizeof buf, "{");
        for (int i = 0; i < n; i++)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "%s\"t%d\":\"v\"", i ? "," : "", i);
        snprintf(buf + o, sizeof buf - o, "}");
        CHECK_RC(tags_rc(buf), n == 32 ? SG_OK : SG_E_INVALID);
    }
}

static void test_tags_across_updates(void)
{
    const char *ename;
    json_t *e1 = put("{\"tags\":{\"site\":\"north\",\"floor\":\"3\"}}", NULL, &ename);
    CHECK(e1 != NULL);
    /* an update without tags keeps them */
    json_t *e2 = put("{\"status\":\"disabled\"}", e1, &ename);
    CHECK(e2 && json_equal(json_object_get(e2, "tags"), json_object_get(e1, "tags")));
    /* tags given replace the set */
    json_t *e3 = put("{\"tags\":{\"site\":\"south\"}}", e2, &ename);
    json_t *want = js("{\"site\":\"south\"}");
    CHECK(e3 && json_equal(json_object_get(e3, "tags"), want));
    json_decref(want);
    /* {} removes every tag */
    json_t *e4 = put("{\"tags\":{}}", e3, &ename);
    CHECK(e4 && json_object_size(json_object_get(e4, "tags")) == 0);
    /* tags do not change the credentials: no new generation */
    CHECK(e4 && json_integer_value(json_object_get(e4, "generation")) ==
                    json_integer_value(json_object_get(e3, "generation")));
    /* a bad tag refuses the whole update */
    CHECK(put("{\"tags\":{\"n\":1}}", e4, &ename) == NULL);
    CHECK_STR(ename, "InvalidDevice");
    CHECK(put("{\"tags\":\"site=north\"}", NULL, &ename) == NULL);
    CHECK_STR(ename, "InvalidDevice");
    json_decref(e1);
    json_decref(e2);
    json_decref(e3);
    json_decref(e4);
}

static void test_tag_filter(void)
{
    st_tag_filter_t f;
    CHECK_RC(st_reg_tag_filter_parse("site", &f), SG_OK);
    CHECK(!f.has_value);
    CHECK_STR(f.key, "site");
    CHECK_RC(st_reg_tag_filter_parse("site:north", &f), SG_OK);
    CHECK(f.has_value);
    CHECK_STR(f.key, "site");
    CHECK_STR(f.value, "north");
    CHECK_RC(st_reg_tag_filter_parse("url:http://x:8", &f), SG_OK);   /* the first ':' splits */
    CHECK_STR(f.key, "url");
    CHECK_STR(f.value, "http://x:8");
    CHECK_RC(st_reg_tag_filter_parse("site:", &f), SG_OK);   /* the empty value */
    CHECK(f.has_value && f.value[0] == 0);
    CHECK_RC(st_reg_tag_filter_parse("", &f), SG_E_INVALID);
    CHECK_RC(st_reg_tag_filter_parse(":north", &f), SG_E_INVALID);
    CHECK_RC(st_reg_tag_filter_parse("bad key:x", &f), SG_E_INVALID);
    CHECK_RC(st_reg_tag_filter_parse("a\x7f" "b", &f), SG_E_INVALID);
    char big[400];
    memset(big, 'v', sizeof big);
    memcpy(big, "k:", 2);
    big[2 + 256] = 0;
    CHECK_RC(st_reg_tag_filter_parse(big, &f), SG_OK);
    big[2 + 256] = 'v';
    big[2 + 257] = 0;
    CHECK_RC(st_reg_tag_filter_parse(big, &f), SG_E_INVALID);

    json_t *e = js("{\"tags\":{\"site\":\"north\",\"empty\":\"\",\"old\":7}}");
    CHECK_RC(st_reg_tag_filter_parse("site", &f), SG_OK);
    CHECK(st_reg_tag_match(e, &f));
    CHECK_RC(st_reg_tag_filter_parse("site:north", &f), SG_OK);
    CHECK(st_reg_tag_match(e, &f));
    CHECK_RC(st_reg_tag_filter_parse("site:nort", &f), SG_OK);
    CHECK(!st_reg_tag_match(e, &f));
    CHECK_RC(st_reg_tag_filter_parse("site:northern", &f), SG_OK);
    CHECK(!st_reg_tag_match(e, &f));
    CHECK_RC(st_reg_tag_filter_parse("Site", &f), SG_OK);   /* keys are case-sensitive */
    CHECK(!st_reg_tag_match(e, &f));
    CHECK_RC(st_reg_tag_filter_parse("empty:", &f), SG_OK);
    CHECK(st_reg_tag_match(e, &f));
    CHECK_RC(st_reg_tag_filter_parse("old", &f), SG_OK);   /* a value stored before tags were strings */
    CHECK(st_reg_tag_match(e, &f));
    CHECK_RC(st_reg_tag_filter_parse("old:7", &f), SG_OK);
    CHECK(!st_reg_tag_match(e, &f));
    json_decref(e);
    e = js("{\"deviceId\":\"x\"}");   /* no tags at all */
    CHECK_RC(st_reg_tag_filter_parse("site", &f), SG_OK);
    CHECK(!st_reg_tag_match(e, &f));
    json_decref(e);
}

static int regen_which(const char *text, sg_rc want)
{
    char msg[300];
    int which = 0;
    json_t *b = text ? js(text) : NULL;
    CHECK_RC(st_reg_regen_parse(b, &which, msg, sizeof msg), want);
    json_decref(b);
    return which;
}

static void test_regen_parse(void)
{
    CHECK(regen_which(NULL, SG_OK) == ST_REGEN_BOTH);
    CHECK(regen_which("{}", SG_OK) == ST_REGEN_BOTH);
    CHECK(regen_which("{\"key\":\"primary\"}", SG_OK) == ST_REGEN_PRIMARY);
    CHECK(regen_which("{\"key\":\"secondary\"}", SG_OK) == ST_REGEN_SECONDARY);
    CHECK(regen_which("{\"key\":\"both\"}", SG_OK) == ST_REGEN_BOTH);
    regen_which("{\"key\":\"Primary\"}", SG_E_INVALID);
    regen_which("{\"key\":\"\"}", SG_E_INVALID);
    regen_which("{\"key\":1}", SG_E_INVALID);
    regen_which("{\"key\":null}", SG_E_INVALID);
    regen_which("{\"key\":\"primary\",\"extra\":true}", SG_E_INVALID);
    regen_which("[\"primary\"]", SG_E_INVALID);
    regen_which("\"primary\"", SG_E_INVALID);
}

static void test_regenerate(void)
{
    const char *ename = NULL;
    char msg[300];
    json_t *e = put("{\"tags\":{\"site\":\"north\"}}", NULL, &ename);
    CHECK(e != NULL);
    json_t *auth = json_object_get(e, "auth");
    const char *p0 = json_string_value(json_object_get(auth, "primaryKey"));
    const char *s0 = json_string_value(json_object_get(auth, "secondaryKey"));
    json_int_t gen = json_integer_value(json_object_get(e, "generation"));
    static const int cases[] = {ST_REGEN_PRIMARY, ST_REGEN_SECONDARY, ST_REGEN_BOTH};
    for (size_t i = 0; i < 3; i++) {
        int which = cases[i];
        st_reg_put_t out;
        CHECK_RC(st_reg_regenerate(e, which, &out, &ename, msg, sizeof msg), SG_OK);
        if (!out.stored)
            continue;
        json_t *na = json_object_get(out.stored, "auth");
        const char *p1 = json_string_value(json_object_get(na, "primaryKey"));
        const char *s1 = json_string_value(json_object_get(na, "secondaryKey"));
        CHECK(p1 && s1 && strlen(p1) == 44 && strlen(s1) == 44);
        CHECK((strcmp(p1, p0) != 0) == ((which & ST_REGEN_PRIMARY) != 0));
        CHECK((strcmp(s1, s0) != 0) == ((which & ST_REGEN_SECONDARY) != 0));
        /* only the new keys are shown, and they are the stored ones */
        CHECK(json_object_size(out.generated) == (which == ST_REGEN_BOTH ? 2u : 1u));
        if (which & ST_REGEN_PRIMARY)
            CHECK_STR(json_string_value(json_object_get(out.generated, "primaryKey")), p1);
        if (which & ST_REGEN_SECONDARY)
            CHECK_STR(json_string_value(json_object_get(out.generated, "secondaryKey")), s1);
        CHECK(json_integer_value(json_object_get(out.stored, "generation")) == gen + 1);
        CHECK(out.revoke && !out.created);
        /* everything else is kept, and the entry still parses for authentication */
        CHECK(json_equal(json_object_get(out.stored, "tags"), json_object_get(e, "tags")));
        CHECK(json_equal(json_object_get(out.stored, "createdAt"), json_object_get(e, "createdAt")));
        st_reg_t reg;
        CHECK_RC(st_reg_from_json(out.stored, &reg), SG_OK);
        CHECK(reg.auth_type == ST_AUTH_SAS && reg.key1_len == 32 && reg.key2_len == 32);
        /* the answer shows the new keys once; the public view none */
        st_limits_t lim = {50, 1 << 20};
        json_t *ans = st_reg_put_answer(&out, &lim);
        CHECK(json_object_size(json_object_get(ans, "auth")) == 1 + json_object_size(out.generated));
        json_t *pub = st_reg_public(out.stored, &lim);
        CHECK(json_object_size(json_object_get(pub, "auth")) == 1);
        json_decref(ans);
        json_decref(pub);
        json_decref(out.stored);
        json_decref(out.generated);
    }
    json_decref(e);

    /* other credential kinds are refused, with a name to code against */
    static const char *const others[] = {"{\"auth\":{\"type\":\"psk\"}}",
                                         "{\"auth\":{\"type\":\"x509-ca\"}}"};
    for (size_t i = 0; i < 2; i++) {
        e = put(others[i], NULL, &ename);
        CHECK(e != NULL);
        st_reg_put_t out;
        ename = NULL;
        CHECK_RC(st_reg_regenerate(e, ST_REGEN_BOTH, &out, &ename, msg, sizeof msg), SG_E_INVALID);
        CHECK_STR(ename, "NotSasDevice");
        CHECK(out.stored == NULL && out.generated == NULL);
        CHECK(strstr(msg, "SAS") != NULL);
        json_decref(e);
    }
}

int main(void)
{
    test_tags();
    test_tags_across_updates();
    test_tag_filter();
    test_regen_parse();
    test_regenerate();
    TEST_DONE();
}
