/* sg_log.h — one line per event: timestamp, level, component, event name, key=value fields.
 *   SG_INFO("fe", "conn.closed", "device=%s reason=%s", id, why);
 * prints  ts=2026-11-25T21:28:25.123Z level=info comp=fe event=conn.closed device=d1 reason=...
 * Callers quote values that may hold spaces ("reason=\"%s\""). Secrets never go to the log:
 * log a device id or a token name, never a key, token or signature. */
#ifndef SG_LOG_H
#define SG_LOG_H

#include <stddef.h>

typedef enum { SG_LOG_DEBUG = 0, SG_LOG_INFO, SG_LOG_WARN, SG_LOG_ERROR } sg_log_level_t;

void sg_log_set_level(sg_log_level_t level);
/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int sg_log_parse_level(const char *name);
int sg_log_enabled(sg_log_level_t level);
/* comp and event are string literals (kept for the rate limit's report). Never blocks for
 * stderr, except for errors (see sg_log.c). */
void sg_log(sg_log_level_t level, const char *comp, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Lines a second one event may write before the rest of that second is only counted. */
#define SG_LOG_RATE 200
void sg_log_set_rate(unsigned lines_per_second);   /* 0: no limit */
/* Write what is waiting (at exit, before _exit, before a fork that must not inherit it). */
void sg_log_flush(void);
/* Write lines to fd instead of stderr (tests). */
void sg_log_set_fd(int fd);

/* Copy untrusted bytes (a topic, a filter) for a log value: control characters, quotes,
 * backslashes and bytes >= 0x7f become '?', so a peer cannot forge log lines; truncated to fit. */
void sg_log_clean(char *out, size_t cap, const void *p, size_t n);

#define SG_DEBUG(comp, event, ...) \
    do { if (sg_log_enabled(SG_LOG_DEBUG)) sg_log(SG_LOG_DEBUG, comp, event, __VA_ARGS__); } while (0)
#define SG_INFO(comp, event, ...) sg_log(SG_LOG_INFO, comp, event, __VA_ARGS__)
#define SG_WARN(comp, event, ...) sg_log(SG_LOG_WARN, comp, event, __VA_ARGS__)
#define SG_ERROR(comp, event, ...) sg_log(SG_LOG_ERROR, comp, event, __VA_ARGS__)

#endif
