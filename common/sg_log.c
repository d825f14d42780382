/* sg_log.c — key=value event lines on stderr; see sg_log.h. */
#include "sg_log.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static volatile int g_level = SG_LOG_INFO;
static const char *const k_names[] = {"debug", "info", "warn", "error"};

void sg_log_set_level(sg_log_level_t level) { g_level = (int)level; }

int sg_log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, k_names[i]) == 0)
            return i;
    return -1;
}

int sg_log_enabled(sg_log_level_t level) { return (int)level >= g_level; }

void sg_log(sg_log_level_t level, const char *comp, const char *event, const char *fmt, ...)
{
    if (!sg_log_enabled(level))
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s comp=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, k_names[level], comp, event);
    if (n < 0)
        return;
    if ((size_t)n < sizeof line - 2 && fmt && *fmt) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    /* One write per line keeps lines whole when several threads log at once. */
    fwrite(line, 1, (size_t)n, stderr);
}

void sg_log_clean(char *out, size_t cap, const void *p, size_t n)
{
    const unsigned char *s = p;
    size_t i = 0;
    if (cap == 0)
        return;
    for (; i < n && i + 1 < cap; i++)
        out[i] = (s[i] < 0x20 || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\') ? '?' : (char)s[i];
    out[i] = 0;
}
