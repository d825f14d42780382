/* sim_report.c — writes a run's HTML report: the page template compiled in from sim/report.html
 * (see sim_report_embed.cmake) with the JSON summary in place of its marker line; see
 * sim_report.h. The page does all the drawing, so this file only checks and escapes. */
#include "sim_report.h"
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Defined in the generated sim_report_template.c: the bytes of report.html plus a NUL. */
extern const unsigned char sim_report_template_bytes[];
extern const size_t sim_report_template_size;

#define ESCAPED_LT "\\u003c"

const char *sim_report_template(size_t *len)
{
    *len = sim_report_template_size;
    return (const char *)sim_report_template_bytes;
}

__attribute__((format(printf, 3, 4))) static void say(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || !err_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

/* The summary must be what the simulator writes: a JSON object naming its tool. */
static sg_rc check_summary(const char *json, size_t len, const char *name, char *err, size_t err_len)
{
    json_error_t jerr;
    /* JSON_ALLOW_NUL: "\u0000" is valid JSON and the page's JSON.parse takes it too */
    json_t *doc = json_loadb(json, len, JSON_ALLOW_NUL, &jerr);
    if (!doc) {
        say(err, err_len, "%s is not JSON (line %d, column %d: %s)", name, jerr.line, jerr.column, jerr.text);
        return SG_E_MALFORMED;
    }
    const char *tool = json_string_value(json_object_get(doc, "tool"));
    bool ours = json_is_object(doc) && tool && strcmp(tool, "sacgate-sim") == 0;
    json_decref(doc);
    if (!ours) {
        say(err, err_len, "%s is not a sacgate-sim summary (it has no \"tool\": \"sacgate-sim\")", name);
        return SG_E_MALFORMED;
    }
    return SG_OK;
}

static sg_rc put(FILE *f, const void *p, size_t n)
{
    SG_ENSURE(n == 0 || fwrite(p, 1, n, f) == n, SG_E_IO);
    return SG_OK;
}

/* The JSON with every '<' as \u003c: outside strings JSON has no '<', and inside a string the
 * escape reads back as the same character, so the page sees the same document while the HTML
 * parser never sees "</script" or "<!--" in it. */
static sg_rc put_escaped(FILE *f, const char *json, size_t len)
{
    const char *p = json, *end = json + len;
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        if (!lt)
            return put(f, p, (size_t)(end - p));
        SG_GUARD(put(f, p, (size_t)(lt - p)));
        SG_GUARD(put(f, ESCAPED_LT, strlen(ESCAPED_LT)));
        p = lt + 1;
    }
    return SG_OK;
}

static sg_rc put_page(FILE *f, const char *json, size_t len)
{
    size_t tlen;
    const char *tpl = sim_report_template(&tlen);
    /* the build checked that the marker is a line of its own, exactly once */
    const char *line = memmem(tpl, tlen, "\n" SIM_REPORT_MARKER "\n", strlen(SIM_REPORT_MARKER) + 2);
    SG_ENSURE(line, SG_E_INVALID);
    const char *marker = line + 1, *after = marker + strlen(SIM_REPORT_MARKER);
    SG_GUARD(put(f, tpl, (size_t)(marker - tpl)));
    SG_GUARD(put_escaped(f, json, len));
    return put(f, after, (size_t)(tpl + tlen - after));
}

static sg_rc write_page(const char *json, size_t len, const char *path, char *err, size_t err_len)
{
    /* a temporary file beside path, renamed over it at the end: a reader (or a failed run)
     * never sees half a page, and a refused summary leaves an older report alone */
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    SG_ENSURE(tmp, SG_E_NOMEM);
    snprintf(tmp, plen + 32, "%s.tmp-%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        int saved = errno;
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        say(err, err_len, "cannot write %s: %s", path, strerror(saved));
        free(tmp);
        return SG_E_IO;
    }
    sg_rc rc = put_page(f, json, len);
    int saved = errno;
    /* fclose flushes: a full disk often shows only here */
    if (fclose(f) != 0 && rc == SG_OK) {
        rc = SG_E_IO;
        saved = errno;
    }
    if (rc == SG_OK && rename(tmp, path) != 0) {
        rc = SG_E_IO;
        saved = errno;
    }
    if (rc != SG_OK) {
        say(err, err_len, "cannot write %s: %s", path, rc == SG_E_IO ? strerror(saved) : sg_strerror(rc));
        unlink(tmp);
    }
    free(tmp);
    return rc;
}

static sg_rc write_html(const char *json, size_t len, const char *name, const char *path, char *err,
                        size_t err_len)
{
    SG_ENSURE(json && path, SG_E_INVALID);
    SG_GUARD(check_summary(json, len, name, err, err_len));
    return write_page(json, len, path, err, err_len);
}

sg_rc sim_report_write_html(const char *json, size_t len, const char *path)
{
    return write_html(json, len, "the summary", path, NULL, 0);
}

/* Double *buf up to one byte past the cap, which is how a file over the cap is noticed. */
static sg_rc grow(char **buf, size_t *cap)
{
    SG_ENSURE(*cap <= SIM_REPORT_MAX_JSON, SG_E_TOO_BIG);
    size_t next = *cap * 2 > SIM_REPORT_MAX_JSON + 1 ? SIM_REPORT_MAX_JSON + 1 : *cap * 2;
    char *grown = realloc(*buf, next);
    SG_ENSURE(grown, SG_E_NOMEM);
    *buf = grown;
    *cap = next;
    return SG_OK;
}

/* The whole file into *out (malloc'ed), at most SIM_REPORT_MAX_JSON bytes. */
static sg_rc read_all(const char *path, char **out, size_t *out_len, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        say(err, err_len, "cannot read %s: %s", path, strerror(errno));
        return SG_E_IO;
    }
    size_t cap = 64 << 10, n = 0;
    char *buf = malloc(cap);
    sg_rc rc = buf ? SG_OK : SG_E_NOMEM;
    while (rc == SG_OK) {
        if (n == cap && (rc = grow(&buf, &cap)) != SG_OK)
            break;
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0) {
            if (ferror(f))
                rc = SG_E_IO;
            break;
        }
        n += got;
    }
    if (rc == SG_E_IO)
        say(err, err_len, "cannot read %s: %s", path, strerror(errno));
    else if (rc == SG_E_TOO_BIG)
        say(err, err_len, "%s is over %zu MiB: not a simulator summary", path, SIM_REPORT_MAX_JSON >> 20);
    else if (rc == SG_E_NOMEM)
        say(err, err_len, "out of memory reading %s", path);
    fclose(f);
    if (rc != SG_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = n;
    return SG_OK;
}

sg_rc sim_report_write_html_file(const char *json_path, const char *html_path, char *err, size_t err_len)
{
    SG_ENSURE(json_path && html_path, SG_E_INVALID);
    char *json;
    size_t len;
    SG_GUARD(read_all(json_path, &json, &len, err, err_len));
    sg_rc rc = write_html(json, len, json_path, html_path, err, err_len);
    free(json);
    return rc;
}
