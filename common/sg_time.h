/* sg_time.h — clocks: wall time for records and expiry, monotonic time for timeouts. */
#ifndef SG_TIME_H
#define SG_TIME_H

#include <stdint.h>
#include <time.h>

static inline int64_t sg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t sg_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t sg_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* RFC 3339 UTC with milliseconds: "2026-11-25T21:28:25.123Z". out holds 25 bytes. */
static inline void sg_rfc3339(int64_t ms, char out[25])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, 21, "%Y-%m-%dT%H:%M:%S", &tm);
    out[19] = '.';
    out[20] = (char)('0' + (ms / 100) % 10);
    out[21] = (char)('0' + (ms / 10) % 10);
    out[22] = (char)('0' + ms % 10);
    out[23] = 'Z';
    out[24] = 0;
}

#endif
