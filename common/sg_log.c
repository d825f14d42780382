/* sg_log.c — key=value event lines on stderr; see sg_log.h.
 *
 * An event loop must never wait for its log: stderr is often a pipe (a container runtime, a
 * supervisor, `| tee`) that can fill and block a write for as long as its reader is away. Lines
 * therefore go into a ring in memory under a short lock and a thread of the log's own writes them
 * out; when the ring is full a line is dropped and counted ("log.dropped" says how many), never
 * waited for. Errors are rare and matter most: they are written at once (after what the ring
 * holds, so the order stays). A storm of one event (a refusal for every connect of a reconnect
 * storm, say) is cut to SG_LOG_RATE lines a second per event and summed up in "log.suppressed".
 * sg_log_flush() writes what is left; it runs at exit and before the deliberate _exit()s. */
#include "sg_log.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RING_BYTES (1u << 20)
#define LINE_MAX_BYTES 2048
#define RATE_SLOTS 256

static volatile int g_level = SG_LOG_INFO;
static const char *const k_names[] = {"debug", "info", "warn", "error"};

/* Lines of one event (comp + event name) in the current second. */
typedef struct {
    uint64_t key;       /* hash of comp and event; 0: free */
    const char *comp, *event;
    int64_t second;
    uint32_t lines;
    uint32_t suppressed;
} rate_t;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t more;     /* the ring has lines (or a suppression to report) */
    pthread_cond_t idle;     /* the writer thread wrote what it took */
    char ring[RING_BYTES];
    size_t head, len;        /* lines in the ring: [head, head + len) modulo its size */
    uint64_t dropped;        /* lines that found the ring full since the last report */
    bool started, writing;
    int fd;
    uint32_t rate;           /* lines a second per event (0: no limit) */
    rate_t slots[RATE_SLOTS];
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .more = PTHREAD_COND_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER,
       .fd = 2, .rate = SG_LOG_RATE};

void sg_log_set_level(sg_log_level_t level) { g_level = (int)level; }

void sg_log_set_rate(unsigned lines_per_second)
{
    pthread_mutex_lock(&g.lock);
    g.rate = lines_per_second;
    pthread_mutex_unlock(&g.lock);
}

int sg_log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, k_names[i]) == 0)
            return i;
    return -1;
}

int sg_log_enabled(sg_log_level_t level) { return (int)level >= g_level; }

/* write(2) all of it; a broken or closed stderr loses the line, nothing else. */
static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(g.fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static size_t format_head(char *line, size_t cap, sg_log_level_t level, const char *comp, const char *event)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, cap, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s comp=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, k_names[level], comp, event);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Put a line in the ring (lock held); false when it has no room. */
static bool ring_put(const char *p, size_t n)
{
    if (RING_BYTES - g.len < n)
        return false;
    size_t tail = (g.head + g.len) % RING_BYTES, first = RING_BYTES - tail < n ? RING_BYTES - tail : n;
    memcpy(g.ring + tail, p, first);
    memcpy(g.ring, p + first, n - first);
    g.len += n;
    return true;
}

/* A line of the log's own (lock held): into the ring, or lost with the rest when it is full. */
static void own_line(const char *event, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void own_line(const char *event, const char *fmt, ...)
{
    char line[512];
    size_t n = format_head(line, sizeof line, SG_LOG_WARN, "log", event);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    n += m > 0 ? ((size_t)m < sizeof line - n - 1 ? (size_t)m : sizeof line - n - 2) : 0;
    line[n++] = '\n';
    if (!ring_put(line, n))
        g.dropped++;
}

/* Report suppressions of seconds that have passed, and lines dropped (lock held). */
static void report(int64_t now_s)
{
    for (size_t i = 0; i < RATE_SLOTS; i++) {
        rate_t *s = &g.slots[i];
        if (s->key && s->suppressed && s->second < now_s) {
            own_line("log.suppressed", " of=%s/%s lines=%u reason=\"more than %u lines a second of one event\"",
                     s->comp, s->event, s->suppressed, g.rate);
            s->suppressed = 0;
        }
    }
    if (g.dropped && RING_BYTES - g.len >= 256) {
        uint64_t d = g.dropped;
        g.dropped = 0;
        own_line("log.dropped", " lines=%llu reason=\"stderr did not take lines as fast as they came\"",
                 (unsigned long long)d);
    }
}

/* Take what the ring holds and write it, the lock released meanwhile (lock held on entry and exit). */
static void drain(void)
{
    static char out[64 * 1024];   /* only the one writing (g.writing) uses it */
    while (g.len > 0) {
        size_t n = g.len < sizeof out ? g.len : sizeof out;
        size_t first = RING_BYTES - g.head < n ? RING_BYTES - g.head : n;
        memcpy(out, g.ring + g.head, first);
        memcpy(out + first, g.ring, n - first);
        g.head = (g.head + n) % RING_BYTES;
        g.len -= n;
        pthread_mutex_unlock(&g.lock);
        write_all(out, n);
        pthread_mutex_lock(&g.lock);
    }
}

/* Wait until no one is writing, then claim it (lock held). */
static void claim(void)
{
    while (g.writing)
        pthread_cond_wait(&g.idle, &g.lock);
    g.writing = true;
}

static void release(void)
{
    g.writing = false;
    pthread_cond_broadcast(&g.idle);
}

static void *writer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sg-log");   /* top -H, perf and /proc show it */
    (void)arg;
    pthread_mutex_lock(&g.lock);
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        while (g.len == 0)
            if (pthread_cond_timedwait(&g.more, &g.lock, &until) == ETIMEDOUT)
                break;
        report((int64_t)time(NULL));
        claim();
        drain();
        release();
    }
    return NULL;
}

void sg_log_flush(void)
{
    pthread_mutex_lock(&g.lock);
    claim();
    drain();
    report(INT64_MAX);   /* with room in the ring now */
    drain();
    release();
    pthread_mutex_unlock(&g.lock);
}

/* A forked child has the ring (and a copy of the lock as the parent held it for the fork) but
 * not the writer thread: it starts its own on its first line. */
static void before_fork(void) { pthread_mutex_lock(&g.lock); }
static void after_fork_parent(void) { pthread_mutex_unlock(&g.lock); }
static void after_fork_child(void)
{
    g.started = false;
    g.writing = false;
    pthread_mutex_unlock(&g.lock);
}

static void start_writer(void)
{
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    /* The thread must not take signals meant for the process (SIGTERM is waited for elsewhere). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    g.started = pthread_create(&t, &attr, writer_main, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    static bool registered;
    if (!registered) {
        registered = true;
        pthread_atfork(before_fork, after_fork_parent, after_fork_child);
        atexit(sg_log_flush);
    }
}

static uint64_t event_key(const char *comp, const char *event)
{
    uint64_t h = 1469598103934665603ull;   /* FNV-1a */
    for (const char *p = comp; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    h = (h ^ '/') * 1099511628211ull;
    for (const char *p = event; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return h ? h : 1;
}

/* Whether one more line of this event fits in its second (lock held). Slots are few and shared
 * by hash: a collision only shares a budget. */
static bool within_rate(const char *comp, const char *event, int64_t now_s)
{
    if (g.rate == 0)
        return true;
    uint64_t key = event_key(comp, event);
    rate_t *s = &g.slots[key % RATE_SLOTS];
    if (s->key != key || s->second != now_s) {
        if (s->suppressed)
            report(now_s);   /* its second is over (a slot taken over within one loses its count) */
        *s = (rate_t){key, comp, event, now_s, 0, 0};
    }
    if (s->lines < g.rate) {
        s->lines++;
        return true;
    }
    s->suppressed++;
    return false;
}

void sg_log(sg_log_level_t level, const char *comp, const char *event, const char *fmt, ...)
{
    if (!sg_log_enabled(level))
        return;
    char line[LINE_MAX_BYTES];
    size_t n = format_head(line, sizeof line, level, comp, event);
    if (n < sizeof line - 2 && fmt && *fmt) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += (size_t)m;
    }
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    pthread_mutex_lock(&g.lock);
    if (!within_rate(comp, event, (int64_t)time(NULL))) {
        pthread_mutex_unlock(&g.lock);
        return;
    }
    if (!g.started)
        start_writer();
    if (level >= SG_LOG_ERROR || !g.started) {
        /* at once, after what is waiting */
        claim();
        drain();
        pthread_mutex_unlock(&g.lock);
        write_all(line, n);
        pthread_mutex_lock(&g.lock);
        release();
    } else if (ring_put(line, n)) {
        pthread_cond_signal(&g.more);
    } else {
        g.dropped++;
    }
    pthread_mutex_unlock(&g.lock);
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

void sg_log_set_fd(int fd)
{
    sg_log_flush();
    pthread_mutex_lock(&g.lock);
    g.fd = fd;
    pthread_mutex_unlock(&g.lock);
}
