/* sim_report_test.c — the report writer: the page is the template with the summary in place of
 * the marker line, byte for byte; no string in a summary can end the data <script> or open a
 * comment; anything that is not a sacgate-sim summary is refused and leaves no file behind. */
#include "sim_report.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sg_test.h"

static char dir[] = "/tmp/sim_report_test.XXXXXX";

static char *path_in_dir(const char *name)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = 0;
    *len = got;
    return buf;
}

static void spit(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

static size_t count(const char *hay, size_t len, const char *needle)
{
    size_t n = 0, nl = strlen(needle);
    for (const char *p = hay; (p = memmem(p, len - (size_t)(p - hay), needle, nl)); p += nl)
        n++;
    return n;
}

/* The JSON as the page must hold it: every '<' as \u003c. */
static char *escaped(const char *json)
{
    char *out = malloc(strlen(json) * 6 + 1), *o = out;
    for (const char *p = json; *p; p++) {
        if (*p == '<') {
            memcpy(o, "\\u003c", 6);
            o += 6;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
    return out;
}

/* The page written for json must be exactly: template up to the marker, escaped json, the rest. */
static void check_page(const char *path, const char *json)
{
    size_t tlen, plen;
    const char *tpl = sim_report_template(&tlen);
    char *page = slurp(path, &plen), *esc = escaped(json);
    CHECK(page != NULL);
    if (!page) {
        free(esc);
        return;
    }
    const char *marker = strstr(tpl, "\n" SIM_REPORT_MARKER "\n");
    CHECK(marker != NULL);
    size_t head = (size_t)(marker + 1 - tpl), mlen = strlen(SIM_REPORT_MARKER), elen = strlen(esc);
    /* written completely: the length adds up and every part is where it belongs */
    CHECK(plen == tlen - mlen + elen);
    CHECK(plen >= head + elen && memcmp(page, tpl, head) == 0);
    CHECK(plen >= head + elen && memcmp(page + head, esc, elen) == 0);
    CHECK(plen == tlen - mlen + elen && memcmp(page + head + elen, tpl + head + mlen, tlen - head - mlen) == 0);
    /* the data adds no '<' at all, so it adds no "</script" and no "<!--" */
    CHECK(memchr(page + head, '<', elen) == NULL);
    CHECK(count(page, plen, "</script") == count(tpl, tlen, "</script"));
    CHECK(count(page, plen, "<!--") == count(tpl, tlen, "<!--") - 1);
    CHECK(count(page, plen, SIM_REPORT_MARKER) == 0);
    free(page);
    free(esc);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_template(void)
{
    size_t tlen;
    const char *tpl = sim_report_template(&tlen);
    CHECK(tlen > 1000 && strlen(tpl) == tlen);
    CHECK(strncmp(tpl, "<!DOCTYPE html>", 15) == 0);
    CHECK(count(tpl, tlen, "\n" SIM_REPORT_MARKER "\n") == 1);
    CHECK(strstr(tpl, "id=\"sim-data\"") != NULL);
    /* self-contained: nothing the browser would fetch */
    CHECK(count(tpl, tlen, "http://") == count(tpl, tlen, "http://www.w3.org/2000/svg"));
    CHECK(strstr(tpl, "https://") == NULL);
    CHECK(strstr(tpl, "src=") == NULL);
    CHECK(strstr(tpl, "<link") == NULL);
    CHECK(strstr(tpl, "@import") == NULL);
}

static void test_writes_data(void)
{
    const char *json = "{\"tool\": \"sacgate-sim\", \"version\": 1, \"label\": \"unit-r\\u00e9port\", "
                       "\"sessions\": {\"target\": 10, \"online\": 9}, \"series\": {\"t\": [1, 2, 3]}}";
    const char *out = path_in_dir("data.html");
    CHECK_RC(sim_report_write_html(json, strlen(json), out), SG_OK);
    check_page(out, json);
    size_t len;
    char *page = slurp(out, &len);
    CHECK(page && strstr(page, "\"label\": \"unit-r\\u00e9port\"") != NULL);
    CHECK(page && strstr(page, "\"series\": {\"t\": [1, 2, 3]}") != NULL);
    free(page);
    /* a second write replaces the page and leaves no temporary file beside it */
    CHECK_RC(sim_report_write_html(json, strlen(json), out), SG_OK);
    check_page(out, json);
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid());
    CHECK(!exists(tmp));
    /* len, not NUL: the same summary followed by bytes that are not part of it */
    char buf[512];
    snprintf(buf, sizeof buf, "%sGARBAGE", json);
    CHECK_RC(sim_report_write_html(buf, strlen(json), out), SG_OK);
    check_page(out, json);
}

static void test_cannot_break_out(void)
{
    const char *json = "{\"tool\":\"sacgate-sim\",\"label\":\"</script><script>alert(1)</script>\","
                       "\"command\":\"<!-- x --> <!--SIM-DATA--> </SCRIPT \",\"config\":{\"<\":\"<<\"}}";
    const char *out = path_in_dir("xss.html");
    CHECK_RC(sim_report_write_html(json, strlen(json), out), SG_OK);
    check_page(out, json);
    size_t len;
    char *page = slurp(out, &len);
    CHECK(page && strstr(page, "<script>alert") == NULL);
    CHECK(page && strstr(page, "\\u003c/script>\\u003cscript>alert(1)\\u003c/script>") != NULL);
    CHECK(page && strstr(page, "\\u003c!-- x -->") != NULL);
    CHECK(page && strcasestr(page, "</SCRIPT ") == NULL);
    free(page);
}

static void test_refused(void)
{
    static const char *bad[] = {
        "",
        "{\"tool\": \"sacgate-sim\",",                   /* cut short */
        "{\"tool\": \"sacgate-sim\"} trailing",          /* more than one value */
        "{\"tool\": 'sacgate-sim'}",
        "{\"tool\": \"sacgate-sim\", \"x\": NaN}",
        "{\"tool\": \"other\"}",
        "{\"version\": 1}",
        "{\"tool\": [\"sacgate-sim\"]}",
        "[{\"tool\": \"sacgate-sim\"}]",
        "\"sacgate-sim\"",
        "{\"tool\": \"sacgate-sim\", \"label\": \"\xff\xfe\"}",   /* not UTF-8 */
    };
    const char *out = path_in_dir("refused.html");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(sim_report_write_html(bad[i], strlen(bad[i]), out), SG_E_MALFORMED);
        CHECK(!exists(out));
    }
    /* refusing a summary leaves an older report alone */
    spit(out, "older report");
    CHECK_RC(sim_report_write_html(bad[1], strlen(bad[1]), out), SG_E_MALFORMED);
    size_t len;
    char *page = slurp(out, &len);
    CHECK_STR(page, "older report");
    free(page);
    /* a NUL inside the given length is not JSON either */
    CHECK_RC(sim_report_write_html("{\"tool\":\"sacgate-sim\"}\0", 23, out), SG_E_MALFORMED);
}

static void test_cannot_write(void)
{
    const char *json = "{\"tool\":\"sacgate-sim\"}";
    CHECK_RC(sim_report_write_html(json, strlen(json), path_in_dir("no/such/dir/r.html")), SG_E_IO);
    CHECK_RC(sim_report_write_html(json, strlen(json), dir), SG_E_IO);   /* a directory */
    char err[256] = "";
    spit(path_in_dir("ok.json"), json);
    CHECK_RC(sim_report_write_html_file(path_in_dir("ok.json"), path_in_dir("no/such/r.html"), err, sizeof err),
             SG_E_IO);
    CHECK(strstr(err, "cannot write") != NULL && strstr(err, "No such file") != NULL);
}

/* A summary of a long run (a megabyte, many '<' among them) comes out whole. */
static void test_large(void)
{
    size_t n = 1 << 20;
    char *json = malloc(n + 64);
    size_t k = (size_t)sprintf(json, "{\"tool\":\"sacgate-sim\",\"pad\":\"");
    while (k < n) {
        static const char chunk[] = "abc<def</script>\\\"<!--";
        memcpy(json + k, chunk, sizeof chunk - 1);
        k += sizeof chunk - 1;
    }
    strcpy(json + k, "\"}");
    const char *out = path_in_dir("large.html");
    CHECK_RC(sim_report_write_html(json, strlen(json), out), SG_OK);
    check_page(out, json);
    free(json);
}

static void test_file(void)
{
    char err[256] = "";
    const char *in = path_in_dir("in.json"), *out = path_in_dir("file.html");
    const char *json = "{\"tool\":\"sacgate-sim\",\"label\":\"from a file\"}\n";
    spit(in, json);
    CHECK_RC(sim_report_write_html_file(in, out, err, sizeof err), SG_OK);
    check_page(out, json);

    CHECK_RC(sim_report_write_html_file(path_in_dir("missing.json"), out, err, sizeof err), SG_E_IO);
    CHECK(strstr(err, "missing.json") != NULL && strstr(err, "No such file") != NULL);

    spit(in, "{\"tool\": \"sacgate-sim\",\n \"label\": }");
    CHECK_RC(sim_report_write_html_file(in, out, err, sizeof err), SG_E_MALFORMED);
    CHECK(strstr(err, "in.json is not JSON (line 2") != NULL);

    spit(in, "{\"tool\": \"mosquitto\"}");
    CHECK_RC(sim_report_write_html_file(in, out, err, sizeof err), SG_E_MALFORMED);
    CHECK(strstr(err, "is not a sacgate-sim summary") != NULL);
    /* err is optional */
    CHECK_RC(sim_report_write_html_file(in, out, NULL, 0), SG_E_MALFORMED);
}

static void cleanup(void)
{
    static const char *names[] = {"data.html", "xss.html", "refused.html", "ok.json", "large.html",
                                  "in.json", "file.html"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        unlink(path_in_dir(names[i]));
    rmdir(dir);
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_template();
    test_writes_data();
    test_cannot_break_out();
    test_refused();
    test_cannot_write();
    test_large();
    test_file();
    cleanup();
    TEST_DONE();
}
