/* sg_log_test.c — the log never blocks its caller: lines stay whole and in order per thread,
 * a stderr that takes nothing costs dropped (and counted) lines instead of a stuck thread, errors
 * are written at once, and a storm of one event is cut to the rate and summed up. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "sg_log.h"
#include "sg_test.h"


/* Everything written to f's descriptor so far. */
static char *contents(FILE *f)
{
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    char *buf = calloc(1, (size_t)size + 1);
    fseek(f, 0, SEEK_SET);
    if (fread(buf, 1, (size_t)size, f) != (size_t)size)
        buf[0] = 0;
    return buf;
}

static size_t count(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

#define THREADS 4
#define PER_THREAD 1000

static void *logger(void *arg)
{
    long t = (long)arg;
    for (int i = 0; i < PER_THREAD; i++)
        SG_INFO("test", "line", "thread=%ld seq=%d pad=\"%s\"", t, i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    return NULL;
}

static void whole_lines_in_order(void)
{
    FILE *f = tmpfile();
    sg_log_set_fd(fileno(f));
    sg_log_set_rate(0);
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, logger, (void *)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    sg_log_flush();
    char *text = contents(f);
    int next[THREADS] = {0};
    size_t lines = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        long t;
        int seq;
        const char *p = strstr(l, "thread=");
        CHECK(strncmp(l, "ts=", 3) == 0 && strstr(l, " level=info comp=test event=line ") != NULL);
        CHECK(p && sscanf(p, "thread=%ld seq=%d", &t, &seq) == 2 && t >= 0 && t < THREADS);
        if (p && t >= 0 && t < THREADS) {
            CHECK(seq == next[t]);   /* whole, and in order per thread */
            next[t] = seq + 1;
        }
        lines++;
    }
    CHECK(lines == THREADS * PER_THREAD);
    free(text);
    fclose(f);
}

static void errors_are_written_at_once(void)
{
    FILE *f = tmpfile();
    sg_log_set_fd(fileno(f));
    SG_INFO("test", "before", "n=1");
    SG_ERROR("test", "failure", "n=2");
    char *text = contents(f);   /* no flush: an error has been written when SG_ERROR returns */
    char *before = strstr(text, "event=before"), *failure = strstr(text, "event=failure");
    CHECK(before && failure && before < failure);   /* after what was waiting */
    free(text);
    fclose(f);
}

static void a_storm_is_cut_to_the_rate(void)
{
    FILE *f = tmpfile();
    sg_log_set_fd(fileno(f));
    sg_log_set_rate(10);
    for (int i = 0; i < 100; i++)
        SG_WARN("test", "storm", "i=%d", i);
    SG_WARN("test", "other", "i=0");   /* another event has its own budget */
    sg_log_flush();
    char *text = contents(f);
    size_t shown = count(text, "event=storm "), suppressed = 0;
    for (const char *p = text; (p = strstr(p, "event=log.suppressed of=test/storm lines=")); p++)
        suppressed += strtoul(p + strlen("event=log.suppressed of=test/storm lines="), NULL, 10);
    CHECK(shown >= 10 && shown <= 20);   /* two seconds at most */
    CHECK(shown + suppressed == 100);
    CHECK(count(text, "event=other ") == 1);
    free(text);
    fclose(f);
    sg_log_set_rate(0);
}

typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
} sink_t;

static void *drain_pipe(void *arg)
{
    sink_t *s = arg;
    for (;;) {
        if (s->cap - s->len < 65536) {
            s->cap *= 2;
            s->buf = realloc(s->buf, s->cap);
        }
        ssize_t n = read(s->fd, s->buf + s->len, s->cap - s->len - 1);
        if (n <= 0)
            break;
        s->len += (size_t)n;
    }
    s->buf[s->len] = 0;
    return NULL;
}

#define FLOOD 100000

static void a_stderr_that_takes_nothing_costs_lines_not_a_stuck_caller(void)
{
    int p[2];
    CHECK(pipe(p) == 0);
    sg_log_set_fd(p[1]);
    /* Nobody reads the pipe: its 64 KiB and the ring's 1 MiB fill, the log's thread blocks in
     * write(2), and the callers go on. (Before, every caller blocked there for good.) */
    for (int i = 0; i < FLOOD; i++)
        SG_INFO("test", "flood", "i=%d pad=\"%s\"", i, "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy");
    sink_t s = {.fd = p[0], .cap = 1 << 20};
    s.buf = malloc(s.cap);
    pthread_t reader;
    pthread_create(&reader, NULL, drain_pipe, &s);
    sg_log_flush();
    sg_log_set_fd(2);
    close(p[1]);
    pthread_join(reader, NULL);
    close(p[0]);
    size_t shown = count(s.buf, "event=flood "), dropped = 0;
    for (const char *q = s.buf; (q = strstr(q, "event=log.dropped lines=")); q++)
        dropped += strtoul(q + strlen("event=log.dropped lines="), NULL, 10);
    CHECK(shown > 0 && dropped > 0);
    CHECK(shown + dropped == FLOOD);
    fprintf(stderr, "flood: %zu lines written, %zu dropped and counted\n", shown, dropped);
    free(s.buf);
}

int main(void)
{
    whole_lines_in_order();
    errors_are_written_at_once();
    a_storm_is_cut_to_the_rate();
    a_stderr_that_takes_nothing_costs_lines_not_a_stuck_caller();
    TEST_DONE();
}
