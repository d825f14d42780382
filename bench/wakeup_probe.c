/* wakeup_probe.c — what it costs this machine to wake a sleeping thread: two threads pass a token
 * back and forth through a pair of eventfds (each blocks in read(2) until the other writes, as
 * sacgate's threads block in poll(2) on ZeroMQ's eventfd mailboxes), N round trips, with the two
 * threads pinned to different CPUs, to the same CPU, and left to the scheduler; each placement
 * twice, alternated, so a drift of the machine shows in all of them alike.
 *
 *   wakeup_probe [--count N]      (default 4000 round trips a placement and pass)
 *
 * Prints one JSON object: for each placement the wall time of one wake-up (half a round trip)
 * p50 / p99 / average, and the CPU time both threads spent per wake-up (on a virtual machine, an
 * inter-processor interrupt to wake an idle virtual CPU is charged as CPU time of the threads).
 * "crossCore" is null when this process may run on one CPU only.
 *
 * Why: sacgate hands every batch from thread to thread (frontend loop, router, the shard's network
 * thread, the writer), and a benchmark's figures depend on what a wake-up costs on the day as
 * much as on the code. bench.py runs this once per invocation and records the figures beside
 * the machine's CPU count in every results file. Not part of sacgate; run by hand or by bench.py.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

enum { PASSES = 2 };

typedef struct {
    int to_peer, to_main;   /* eventfds: main -> peer, peer -> main */
    int count;
    int cpu;                /* the peer's CPU, or -1: not pinned */
    double cpu_s;           /* the peer's CPU time over the run */
} probe_t;

static double now_s(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int pin(int cpu)
{
    if (cpu < 0)
        return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* Blocks until the eventfd has been written, and takes the token. */
static int take(int fd)
{
    uint64_t v;
    for (;;) {
        ssize_t n = read(fd, &v, sizeof v);
        if (n == (ssize_t)sizeof v)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

static int give(int fd)
{
    uint64_t v = 1;
    return write(fd, &v, sizeof v) == (ssize_t)sizeof v ? 0 : -1;
}

static void *peer_main(void *arg)
{
    probe_t *p = arg;
    if (pin(p->cpu) != 0)
        return (void *)1;
    double c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
    for (int i = 0; i < p->count; i++)
        if (take(p->to_peer) != 0 || give(p->to_main) != 0)
            return (void *)1;
    p->cpu_s = now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One pass: `count` round trips with main on cpu_main and the peer on cpu_peer (-1: anywhere).
 * Appends each round trip's wall seconds to rt; adds both threads' CPU seconds to *cpu_s. */
static int one_pass(int count, int cpu_main, int cpu_peer, double *rt, double *cpu_s)
{
    probe_t p = {.count = count, .cpu = cpu_peer};
    p.to_peer = eventfd(0, EFD_CLOEXEC);
    p.to_main = eventfd(0, EFD_CLOEXEC);
    if (p.to_peer < 0 || p.to_main < 0)
        return -1;
    cpu_set_t before;
    pthread_getaffinity_np(pthread_self(), sizeof before, &before);
    int rc = pin(cpu_main);
    pthread_t t;
    if (rc == 0 && pthread_create(&t, NULL, peer_main, &p) == 0) {
        double c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
        for (int i = 0; i < count; i++) {
            double t0 = now_s(CLOCK_MONOTONIC);
            if (give(p.to_peer) != 0 || take(p.to_main) != 0) {
                /* the peer would wait for its token for ever: no join, the process ends */
                perror("wakeup_probe: eventfd");
                exit(1);
            }
            rt[i] = now_s(CLOCK_MONOTONIC) - t0;
        }
        double mine = now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
        void *peer_rc = NULL;
        pthread_join(t, &peer_rc);
        if (peer_rc)
            rc = -1;
        *cpu_s += mine + p.cpu_s;
    } else {
        rc = -1;
    }
    pthread_setaffinity_np(pthread_self(), sizeof before, &before);
    close(p.to_peer);
    close(p.to_main);
    return rc;
}

typedef struct {
    const char *name;
    int cpu_main, cpu_peer;
    double *rt;    /* PASSES * count round trips */
    int n;
    double cpu_s;
} placement_t;

static void print_placement(const placement_t *pl, bool last)
{
    if (!pl->rt) {
        printf("  \"%s\": null%s\n", pl->name, last ? "" : ",");
        return;
    }
    qsort(pl->rt, (size_t)pl->n, sizeof *pl->rt, cmp_double);
    double sum = 0;
    for (int i = 0; i < pl->n; i++)
        sum += pl->rt[i];
    /* a wake-up is half a round trip */
    double p50 = pl->rt[pl->n / 2] / 2 * 1e6, p99 = pl->rt[(int)(pl->n * 0.99)] / 2 * 1e6;
    printf("  \"%s\": {\"wakeups\": %d, \"p50Us\": %.1f, \"p99Us\": %.1f, \"avgUs\": %.1f, \"cpuUs\": %.1f}%s\n",
           pl->name, 2 * pl->n, p50, p99, sum / pl->n / 2 * 1e6, pl->cpu_s / (2.0 * pl->n) * 1e6, last ? "" : ",");
}

int main(int argc, char **argv)
{
    int count = 4000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            count = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: wakeup_probe [--count N]\n");
            return 2;
        }
    }
    if (count < 10 || count > 10000000) {
        fprintf(stderr, "wakeup_probe: --count must be 10 to 10000000\n");
        return 2;
    }
    /* the first two CPUs this process may use */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) {
        perror("wakeup_probe: sched_getaffinity");
        return 1;
    }
    int cpus[2] = {-1, -1}, found = 0;
    for (int c = 0; c < CPU_SETSIZE && found < 2; c++)
        if (CPU_ISSET(c, &set))
            cpus[found++] = c;
    placement_t pls[] = {
        {"crossCore", cpus[0], cpus[1], NULL, 0, 0},
        {"sameCore", cpus[0], cpus[0], NULL, 0, 0},
        {"unpinned", -1, -1, NULL, 0, 0},
    };
    enum { N_PL = sizeof pls / sizeof pls[0] };
    for (int k = 0; k < N_PL; k++) {
        if (pls[k].cpu_peer < 0 && pls[k].cpu_main >= 0)
            continue;   /* one CPU only: no cross-core placement */
        if (!(pls[k].rt = calloc((size_t)count * PASSES, sizeof *pls[k].rt))) {
            fprintf(stderr, "wakeup_probe: out of memory\n");
            return 1;
        }
    }
    for (int pass = 0; pass < PASSES; pass++)
        for (int k = 0; k < N_PL; k++) {
            placement_t *pl = &pls[k];
            if (!pl->rt)
                continue;
            if (one_pass(count, pl->cpu_main, pl->cpu_peer, pl->rt + pl->n, &pl->cpu_s) != 0) {
                fprintf(stderr, "wakeup_probe: %s: %s\n", pl->name, strerror(errno));
                return 1;
            }
            pl->n += count;
        }
    printf("{\n  \"cpus\": [%d, %d],\n", cpus[0], cpus[1]);
    for (int k = 0; k < N_PL; k++)
        print_placement(&pls[k], k == N_PL - 1);
    printf("}\n");
    for (int k = 0; k < N_PL; k++)
        free(pls[k].rt);
    return 0;
}
