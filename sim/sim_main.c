/* sim_main.c — `sacgate-sim`: the parent process of a simulation run and the report tools.
 * The parent maps the statistics blocks shared, forks the worker processes (each holds at most
 * --sessions-per-process devices, below the 20,000 open files a process may have here), runs
 * the back-end thread, and once a second merges every block into a progress line and a sample
 * of the time series; it decides when the run ends (duration, hold, every device done, a
 * signal), asks the workers to say goodbye, and writes the JSON summary and HTML report. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include "sg_codec.h"
#include "sg_time.h"
#include "sim_cred.h"
#include "sim_http.h"
#include "sim_opts.h"
#include "sim_report.h"
#include "sim_summary.h"
#include "sim_worker.h"

#define MAX_SERVER_PIDS 4096
#define AUTO_SOURCE_DEVICES 5000
#define PSS_EVERY 10   /* seconds between PSS samples (and the last one of the run) */
#define CHILD_STOP_WAIT_S 60

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* ---------- process resources (from /proc) ---------- */

typedef struct {
    pid_t pid;
    double cpu;    /* seconds at the last sample */
} pidcpu_t;

typedef struct {
    pidcpu_t *p;
    int n, cap;
    double cpu_total;    /* CPU seconds accumulated over every sample */
    long ticks;
    long page;
} tracker_t;

/* Proportional set size of pid (bytes; 0 when unknown): its private pages plus its share of
 * pages it shares with other processes (libraries, copy-on-write after fork). Summed over
 * several processes it counts each page once, where summed RSS counts shared pages again in
 * every process. */
static uint64_t proc_pss(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    uint64_t kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Pss: %" SCNu64 " kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb * 1024;
}

/* RSS bytes and CPU seconds of pid; false when it is gone. */
static bool proc_stat(pid_t pid, long ticks, long page, uint64_t *rss, double *cpu)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');   /* the command name may hold spaces and parentheses */
    if (!p)
        return false;
    unsigned long utime = 0, stime = 0;
    long rss_pages = 0;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15)
     * cutime cstime priority nice threads itrealvalue starttime vsize rss(24) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d %*u %*u %ld",
               &utime, &stime, &rss_pages) != 3)
        return false;
    *rss = (uint64_t)rss_pages * (uint64_t)page;
    *cpu = (double)(utime + stime) / (double)ticks;
    return true;
}

/* Sample a set of processes: their summed RSS, PSS (when pss_sum is not NULL: the kernel walks
 * the page tables for it, so it is taken every PSS_EVERY samples), and the CPU they used since the last
 * sample (a process new to the set counts from this sample on, so a restarted member's earlier
 * CPU is not counted twice). */
static void track(tracker_t *t, const pid_t *pids, int n, uint64_t *rss_sum, uint64_t *pss_sum, double *cpu_delta)
{
    *rss_sum = 0;
    *cpu_delta = 0;
    /* CPU and RSS of every process first, at one moment: PSS takes far longer to read, and
     * reading it in between would spread the CPU samples over that time */
    for (int i = 0; i < n; i++) {
        uint64_t rss;
        double cpu;
        if (!proc_stat(pids[i], t->ticks, t->page, &rss, &cpu))
            continue;
        *rss_sum += rss;
        int k = 0;
        while (k < t->n && t->p[k].pid != pids[i])
            k++;
        if (k == t->n) {
            if (t->n == t->cap) {
                int cap = t->cap ? t->cap * 2 : 64;
                pidcpu_t *np = realloc(t->p, (size_t)cap * sizeof *np);
                if (!np)
                    continue;
                t->p = np;
                t->cap = cap;
            }
            t->p[t->n++] = (pidcpu_t){pids[i], cpu};
            continue;
        }
        *cpu_delta += cpu - t->p[k].cpu;
        t->p[k].cpu = cpu;
    }
    t->cpu_total += *cpu_delta;
    if (pss_sum) {
        *pss_sum = 0;
        for (int i = 0; i < n; i++)
            *pss_sum += proc_pss(pids[i]);
    }
}

/* The server processes named by --server-pids, --server-pids-dir and --server-comm. */
static int server_pids(const sim_opts_t *o, pid_t *out, int max)
{
    int n = 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", o->server_pids);
    char *save = NULL;
    for (char *p = strtok_r(buf, ", ", &save); p && n < max; p = strtok_r(NULL, ", ", &save))
        if (atoi(p) > 0)
            out[n++] = atoi(p);
    if (o->server_pids_dir[0]) {
        DIR *d = opendir(o->server_pids_dir);
        struct dirent *e;
        while (d && (e = readdir(d)) && n < max) {
            size_t l = strlen(e->d_name);
            if (l < 5 || strcmp(e->d_name + l - 4, ".pid") != 0)
                continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", o->server_pids_dir, e->d_name);
            FILE *f = fopen(path, "r");
            int pid = 0;
            if (f && fscanf(f, "%d", &pid) == 1 && pid > 0)
                out[n++] = pid;
            if (f)
                fclose(f);
        }
        if (d)
            closedir(d);
    }
    if (o->server_comm[0]) {
        DIR *d = opendir("/proc");
        struct dirent *e;
        while (d && (e = readdir(d)) && n < max) {
            int pid = atoi(e->d_name);
            if (pid <= 0)
                continue;
            char path[64], comm[64] = "";
            snprintf(path, sizeof path, "/proc/%d/comm", pid);
            FILE *f = fopen(path, "r");
            if (!f)
                continue;
            if (fgets(comm, sizeof comm, f))
                comm[strcspn(comm, "\n")] = 0;
            fclose(f);
            char names[256];
            snprintf(names, sizeof names, "%s", o->server_comm);
            char *s2 = NULL;
            for (char *nm = strtok_r(names, ",", &s2); nm; nm = strtok_r(NULL, ",", &s2))
                if (!strcmp(nm, comm)) {
                    out[n++] = pid;
                    break;
                }
        }
        if (d)
            closedir(d);
    }
    return n;
}

/* Run a shell command and wait for it; its exit status, or -1 when it could not run. */
static int run_command(const char *cmd)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---------- the run ---------- */

typedef struct {
    sim_opts_t *o;
    sim_creds_t *creds;
    sim_ctl_t *ctl;
    sim_tstats_t *blocks;   /* [0] the parent's (back-end, import), then one per device thread */
    int n_blocks;
    pid_t *children;
    int n_children;
} run_t;

static void worker_process(run_t *r, int p)
{
    const sim_opts_t *o = r->o;
    signal(SIGINT, SIG_IGN);   /* the parent coordinates the end, workers say goodbye when told */
    signal(SIGTERM, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    char err[256];
    SSL_CTX *ctx = NULL;
    if (o->tls && !(ctx = sim_tls_ctx(o, err, sizeof err))) {
        fprintf(stderr, "sacgate-sim: worker %d: %s\n", p, err);
        _exit(3);
    }
    int threads = o->threads;
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    sim_thread_cfg_t *cfgs = calloc((size_t)threads, sizeof *cfgs);
    if (!tids || !cfgs)
        _exit(3);
    for (int t = 0; t < threads; t++) {
        unsigned index = (unsigned)(p * threads + t);
        cfgs[t] = (sim_thread_cfg_t){.o = o, .creds = r->creds, .ctl = r->ctl, .st = &r->blocks[1 + index],
                                     .index = index, .count = (unsigned)(o->processes * threads), .tls = ctx};
        if (pthread_create(&tids[t], NULL, sim_thread_main, &cfgs[t]) != 0) {
            fprintf(stderr, "sacgate-sim: worker %d: cannot start thread %d\n", p, t);
            _exit(3);
        }
    }
    for (int t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    SSL_CTX_free(ctx);
    _exit(0);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* Sum of every block: counters, gauges, and the histograms merged into h (SIM_H_COUNT). */
static void collect(const run_t *r, uint64_t *c, int64_t *g, sim_hist_t *h)
{
    memset(c, 0, SIM_C_COUNT * sizeof *c);
    memset(g, 0, SIM_G_COUNT * sizeof *g);
    for (int k = 0; h && k < SIM_H_COUNT; k++)
        sim_hist_init(&h[k]);
    for (int b = 0; b < r->n_blocks; b++) {
        const sim_tstats_t *s = &r->blocks[b];
        for (int i = 0; i < SIM_C_COUNT; i++)
            c[i] += sim_counter(s, (sim_counter_t)i);
        for (int i = 0; i < SIM_G_COUNT; i++)
            g[i] += sim_gauge(s, (sim_gauge_t)i);
        for (int k = 0; h && k < SIM_H_COUNT; k++)
            sim_hist_add(&h[k], &s->h[k]);
    }
}

static uint64_t sum_fail(const uint64_t *c)
{
    uint64_t n = 0;
    for (int i = 0; i < SIM_C_COUNT; i++)
        if (!strncmp(sim_counter_names[i], "fail.", 5))
            n += c[i];
    return n;
}

static uint64_t sum_drop(const uint64_t *c)
{
    uint64_t n = 0;
    for (int i = 0; i < SIM_C_COUNT; i++)
        if (!strncmp(sim_counter_names[i], "drop.", 5) && i != SIM_C_DROP_STORM)
            n += c[i];
    return n;
}

static double ms_or_nan(const sim_hist_t *h, double p)
{
    return sim_hist_count(h) ? (double)sim_hist_percentile(h, p) / 1000.0 : NAN;
}

static void fmt_ms(char *out, size_t cap, double v)
{
    if (isnan(v))
        snprintf(out, cap, "-");
    else if (v < 10)
        snprintf(out, cap, "%.2f", v);
    else
        snprintf(out, cap, "%.0f", v);
}

static int run(sim_opts_t *o)
{
    char err[512];
    run_t r = {.o = o};
    if (o->credentials[0]) {
        if (!(r.creds = sim_creds_load(o->credentials, err, sizeof err))) {
            fprintf(stderr, "sacgate-sim: --credentials %s\n", err);
            return 2;
        }
        /* the file is the device list: --devices/--first select from it */
        uint64_t count = sim_creds_count(r.creds);
        if (o->first >= count) {
            fprintf(stderr, "sacgate-sim: --first %" PRIu64 " is beyond the %" PRIu64 " devices of %s\n", o->first, count,
                    o->credentials);
            return 2;
        }
        if (o->first + o->devices > count)
            o->devices = count - o->first;
        sim_slice_range(o->first, o->devices, o->slice_index, o->slice_count, &o->slice_first, &o->slice_n);
    }
    if (o->n_sources == 0 && o->addr.ss_family == AF_INET && o->slice_n > AUTO_SOURCE_DEVICES &&
        (ntohl(((struct sockaddr_in *)&o->addr)->sin_addr.s_addr) >> 24) == 127) {
        /* Tens of thousands of connects from one address make the kernel's search for a free
         * ephemeral port slow (every candidate is checked against the sockets already using it),
         * and it runs out at ~28,000 per destination port: spread over 254 loopback sources. */
        if (sim_parse_source("127.0.1.0/24", &o->sources[0]) == SG_OK) {
            o->n_sources = 1;
            o->n_source_addrs = o->sources[0].count;
            if (!o->quiet)
                fprintf(stderr, "sacgate-sim: over %d devices on loopback: using --source 127.0.1.0/24\n",
                        AUTO_SOURCE_DEVICES);
        }
    }
    raise_fd_limit();
    if (sim_http_init() != SG_OK) {
        fprintf(stderr, "sacgate-sim: libcurl initialisation failed\n");
        return 2;
    }
    r.n_blocks = 1 + o->processes * o->threads;
    size_t map_len = sizeof(sim_ctl_t) + (size_t)r.n_blocks * sizeof(sim_tstats_t);
    void *map = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) {
        fprintf(stderr, "sacgate-sim: cannot map %zu bytes of statistics: %s\n", map_len, strerror(errno));
        return 2;
    }
    r.ctl = map;
    r.blocks = (sim_tstats_t *)((char *)map + sizeof(sim_ctl_t));
    for (int b = 0; b < r.n_blocks; b++)
        for (int k = 0; k < SIM_H_COUNT; k++)
            sim_hist_init(&r.blocks[b].h[k]);

    if (o->provision == SIM_PROV_IMPORT) {
        int64_t t0 = sim_mono_us();
        if (sim_provision_import(o, &r.blocks[0], stdout, err, sizeof err) != SG_OK) {
            fprintf(stderr, "sacgate-sim: import failed: %s\n", err);
            return 1;
        }
        double secs = (double)(sim_mono_us() - t0) / 1e6;
        printf("import: %" PRIu64 " devices registered, %" PRIu64 " failed, in %.2f s (%.0f devices/s)\n",
               sim_counter(&r.blocks[0], SIM_C_IMPORTED), sim_counter(&r.blocks[0], SIM_C_IMPORT_FAILED), secs,
               secs > 0 ? (double)o->slice_n / secs : 0.0);
        fflush(stdout);
    }

    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A server that closes a connection while OpenSSL writes to it (a refused connect, a full
     * frontend) must cost that device its connection, not the process its life: OpenSSL writes
     * with write(), not send(MSG_NOSIGNAL). Inherited by the workers. */
    signal(SIGPIPE, SIG_IGN);
    fflush(stdout);
    fflush(stderr);
    int64_t started_real_ms = sg_now_ms();
    int64_t start_real_us = sim_real_us();
    r.ctl->t0_us = sim_mono_us();
    r.children = calloc((size_t)o->processes, sizeof *r.children);
    for (int p = 0; p < o->processes; p++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "sacgate-sim: fork: %s\n", strerror(errno));
            atomic_store(&r.ctl->phase, SIM_PHASE_STOP);
            break;
        }
        if (pid == 0)
            worker_process(&r, p);
        r.children[r.n_children++] = pid;
    }
    /* the back-end (a thread of this process, after the forks) */
    pthread_t backend;
    bool has_backend = false;
    sim_backend_cfg_t bcfg = {.o = o, .ctl = r.ctl, .st = &r.blocks[0], .start_real_us = start_real_us};
    sim_thread_cfg_t pcfg = {.o = o, .ctl = r.ctl, .st = &r.blocks[0], .index = 0, .count = 1};
    if (o->backend) {
        if (o->mode == SIM_MODE_IOTHUB) {
            has_backend = pthread_create(&backend, NULL, sim_http_backend_main, &bcfg) == 0;
        } else {
            if (o->tls && !(pcfg.tls = sim_tls_ctx(o, err, sizeof err)))
                fprintf(stderr, "sacgate-sim: back-end: %s\n", err);
            else
                has_backend = pthread_create(&backend, NULL, sim_plain_backend_main, &pcfg) == 0;
        }
    }

    sim_result_t res = {.o = o, .started_real_ms = started_real_ms, .all_online_after = -1, .storm_at = -1,
                        .storm_all_back_after = -1, .disrupt_at = -1, .disrupt_all_back_after = -1};
    res.h = calloc(SIM_H_COUNT, sizeof *res.h);
    sim_hist_t *prev = calloc(SIM_H_COUNT, sizeof *prev), *cur = calloc(SIM_H_COUNT, sizeof *cur),
               *delta = calloc(2, sizeof *delta);
    size_t cap_series = 1024;
    res.series = malloc(cap_series * sizeof *res.series);
    pid_t *spids = calloc(MAX_SERVER_PIDS, sizeof *spids);
    pid_t *mypids = calloc((size_t)r.n_children + 1, sizeof *mypids);
    if (!res.h || !prev || !cur || !delta || !res.series || !spids || !mypids) {
        fprintf(stderr, "sacgate-sim: out of memory\n");
        atomic_store(&r.ctl->phase, SIM_PHASE_STOP);
    }
    for (int k = 0; k < SIM_H_COUNT && prev; k++)
        sim_hist_init(&prev[k]);
    mypids[0] = getpid();
    for (int i = 0; i < r.n_children; i++)
        mypids[1 + i] = r.children[i];
    tracker_t simt = {.ticks = sysconf(_SC_CLK_TCK), .page = sysconf(_SC_PAGESIZE)};
    tracker_t srvt = simt;
    bool want_server = o->server_pids[0] || o->server_pids_dir[0] || o->server_comm[0];
    res.has_server = want_server;
    {
        /* the baseline: the server before this run's sessions, the simulator just forked */
        double cpu;
        track(&simt, mypids, 1 + r.n_children, &res.sim.start_rss, &res.sim.start_pss, &cpu);
        int nsp = want_server ? server_pids(o, spids, MAX_SERVER_PIDS) : 0;
        if (want_server)
            track(&srvt, spids, nsp, &res.server.start_rss, &res.server.start_pss, &cpu);
    }
    uint64_t c[SIM_C_COUNT], pc[SIM_C_COUNT] = {0};
    int64_t g[SIM_G_COUNT];
    int64_t t0 = r.ctl->t0_us, last_sample = t0, hold_from = -1;
    int64_t first_attempt_us = -1, storm_due = -1, disrupt_due = -1, disrupt_us = -1;
    uint64_t drops_at_disrupt = 0;
    bool storm_pending = o->storm_after >= 0, disrupt_pending = o->disrupt_after >= 0;
    const char *why = "duration";
    int64_t peak_online = -1;
    for (int tick = 0;; tick++) {
        usleep(100000);
        int64_t now = sim_mono_us();
        double el = (double)(now - t0) / 1e6;
        collect(&r, c, g, NULL);
        if (first_attempt_us < 0 && c[SIM_C_CONNECT_ATTEMPTS] > 0)
            first_attempt_us = now;
        if (res.all_online_after < 0 && (uint64_t)g[SIM_G_EVER_ONLINE] >= o->slice_n && o->slice_n > 0) {
            res.all_online_after = el;
            res.ramp_seconds = first_attempt_us >= 0 ? (double)(now - first_attempt_us) / 1e6 : el;
            hold_from = now;
            atomic_store(&r.ctl->all_online, 1);
            if (storm_pending)
                storm_due = now + (int64_t)(o->storm_after * 1e6);
            if (disrupt_pending)
                disrupt_due = now + (int64_t)(o->disrupt_after * 1e6);
        }
        if (disrupt_pending && disrupt_due >= 0 && now >= disrupt_due) {
            disrupt_pending = false;
            res.disrupt_at = el;
            if (!o->quiet)
                fprintf(stderr, "sacgate-sim: disruption: %s\n", o->disrupt_command);
            res.disrupt_status = run_command(o->disrupt_command);
            disrupt_us = sim_mono_us();
            res.disrupt_dropped = 0;
            drops_at_disrupt = sum_drop(c);
        }
        if (disrupt_us >= 0 && res.disrupt_all_back_after < 0) {
            /* the sessions that went down: counted as drops, not read off the online dip (devices
             * that reconnect between two looks would be missed) */
            res.disrupt_dropped = (int64_t)(sum_drop(c) - drops_at_disrupt);
            int64_t down = (int64_t)o->slice_n - g[SIM_G_ONLINE];
            /* back: every device online again after some went down (or 10 s without any going down) */
            if (down == 0 && (res.disrupt_dropped > 0 || now - disrupt_us > 10000000)) {
                res.disrupt_all_back_after = (double)(now - disrupt_us) / 1e6;
                hold_from = now;   /* --hold counts from the end of the disruption */
            }
        }
        if (storm_pending && storm_due >= 0 && now >= storm_due) {
            storm_pending = false;
            res.storm_at = el;
            res.storm_devices = g[SIM_G_ONLINE];
            atomic_store(&r.ctl->storm_us, now);
            atomic_fetch_add(&r.ctl->storm_seq, 1);
        }
        if (res.storm_at >= 0 && res.storm_all_back_after < 0) {
            uint64_t back = 0;
            int64_t last = 0;
            for (int b = 0; b < r.n_blocks; b++) {
                back += atomic_load_explicit(&r.blocks[b].storm_back, memory_order_relaxed);
                int64_t lb = atomic_load_explicit(&r.blocks[b].storm_last_back_us, memory_order_relaxed);
                last = lb > last ? lb : last;
            }
            res.storm_back = back;
            if ((int64_t)back >= res.storm_devices) {
                res.storm_all_back_after = (double)(last - atomic_load(&r.ctl->storm_us)) / 1e6;
                if (res.storm_all_back_after < 0)
                    res.storm_all_back_after = 0;
                hold_from = now;   /* --hold counts from the end of the storm */
            }
        }
        bool storm_over = !storm_pending && (res.storm_at < 0 || res.storm_all_back_after >= 0) && !disrupt_pending &&
                          (res.disrupt_at < 0 || res.disrupt_all_back_after >= 0);
        /* a worker that died ends the run: its devices are no longer simulated */
        int status;
        pid_t dead = waitpid(-1, &status, WNOHANG);
        if (dead > 0) {
            for (int i = 0; i < r.n_children; i++)
                if (r.children[i] == dead)
                    r.children[i] = 0;
            fprintf(stderr, "sacgate-sim: worker process %d ended (%s %d): stopping the run\n", (int)dead,
                    WIFSIGNALED(status) ? "signal" : "exit", WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
            why = "a worker process ended";
            g_stop = 1;
        }
        bool end = g_stop || el >= o->duration;
        if (g_stop && strcmp(why, "a worker process ended") != 0)
            why = "signal";
        if (!end && o->hold >= 0 && hold_from >= 0 && storm_over && (double)(now - hold_from) / 1e6 >= o->hold) {
            end = true;
            why = "hold";
        }
        if (!end && o->hold < 0 && o->messages > 0 && (uint64_t)g[SIM_G_FINISHED] >= o->slice_n && storm_over) {
            end = true;
            why = "every device sent its messages";
        }
        if (!end && !o->reconnect && (uint64_t)g[SIM_G_STARTED] >= o->slice_n && g[SIM_G_ONLINE] == 0 &&
            g[SIM_G_CONNECTING] == 0) {
            end = true;
            why = "every device has ended";
        }
        if (now - last_sample < 1000000 && !end)
            continue;
        /* one sample: the interval since the last one */
        double dt = (double)(now - last_sample) / 1e6;
        last_sample = now;
        for (int k = 0; k < SIM_H_COUNT; k++)
            sim_hist_init(&cur[k]);
        for (int b = 0; b < r.n_blocks; b++)
            for (int k = 0; k < SIM_H_COUNT; k++)
                sim_hist_add(&cur[k], &r.blocks[b].h[k]);
        sim_hist_delta(&delta[0], &cur[SIM_H_CONNECT], &prev[SIM_H_CONNECT]);
        sim_hist_delta(&delta[1], &cur[SIM_H_PUBACK], &prev[SIM_H_PUBACK]);
        memcpy(prev, cur, SIM_H_COUNT * sizeof *prev);
        uint64_t simrss, simpss = 0, srvrss = 0, srvpss = 0;
        double simcpu, srvcpu = 0;
        bool with_pss = end || res.n_series % PSS_EVERY == PSS_EVERY - 1;
        track(&simt, mypids, 1 + r.n_children, &simrss, with_pss ? &simpss : NULL, &simcpu);
        int nsp = want_server ? server_pids(o, spids, MAX_SERVER_PIDS) : 0;
        if (want_server) {
            track(&srvt, spids, nsp, &srvrss, with_pss ? &srvpss : NULL, &srvcpu);
            if (nsp > res.server.processes) {
                res.server.processes = nsp;
                res.server.n_pids = nsp < 64 ? nsp : 64;
                for (int i = 0; i < res.server.n_pids; i++)
                    res.server.pids[i] = spids[i];
            }
            if (srvrss > res.server.peak_rss)
                res.server.peak_rss = srvrss;
        }
        if (simrss > res.sim.peak_rss)
            res.sim.peak_rss = simrss;
        if (g[SIM_G_ONLINE] >= peak_online) {
            if (g[SIM_G_ONLINE] > peak_online)
                res.sim.pss_at_peak_online = res.server.pss_at_peak_online = 0;   /* of a lower peak */
            peak_online = g[SIM_G_ONLINE];
            res.sim.rss_at_peak_online = simrss;
            res.server.rss_at_peak_online = srvrss;
            if (with_pss) {
                res.sim.pss_at_peak_online = simpss;
                res.server.pss_at_peak_online = srvpss;
            }
        }
        if (res.n_series == cap_series) {
            cap_series *= 2;
            sim_sample_t *ns = realloc(res.series, cap_series * sizeof *ns);
            if (ns)
                res.series = ns;
            else
                cap_series /= 2;
        }
        if (res.n_series < cap_series) {
            res.series[res.n_series++] = (sim_sample_t){
                .t = round(el),
                .online = g[SIM_G_ONLINE],
                .connecting = g[SIM_G_CONNECTING],
                .connects_ps = (double)(c[SIM_C_CONNECTS] - pc[SIM_C_CONNECTS]) / dt,
                .published_ps = (double)(c[SIM_C_PUBLISHED] - pc[SIM_C_PUBLISHED]) / dt,
                .acked_ps = (double)(c[SIM_C_ACKED] - pc[SIM_C_ACKED]) / dt,
                .commands_ps = (double)(c[SIM_C_C2D_RECEIVED] - pc[SIM_C_C2D_RECEIVED]) / dt,
                .telemetry_ps = (double)(c[SIM_C_TELE_READ] - pc[SIM_C_TELE_READ]) / dt,
                .drops_ps = (double)(sum_drop(c) - sum_drop(pc)) / dt,
                .failures_ps = (double)(sum_fail(c) - sum_fail(pc)) / dt,
                .connect_p50_ms = ms_or_nan(&delta[0], 50),
                .connect_p99_ms = ms_or_nan(&delta[0], 99),
                .puback_p50_ms = ms_or_nan(&delta[1], 50),
                .puback_p99_ms = ms_or_nan(&delta[1], 99),
                .sim_rss_mb = (double)simrss / 1e6,
                .sim_cpu_pct = simcpu / dt * 100,
                .server_rss_mb = (double)srvrss / 1e6,
                .server_cpu_pct = srvcpu / dt * 100,
            };
        }
        if (!o->quiet) {
            const sim_sample_t *x = &res.series[res.n_series - 1];
            char p50[16], p99[16], c99[16];
            fmt_ms(p50, sizeof p50, x->puback_p50_ms);
            fmt_ms(p99, sizeof p99, x->puback_p99_ms);
            fmt_ms(c99, sizeof c99, x->connect_p99_ms);
            fprintf(stderr,
                    "[%5.0fs] online %" PRId64 "/%" PRIu64 " connecting %" PRId64 " +%.0f/s (p99 %s ms) failed %" PRIu64
                    " dropped %" PRIu64 " | pub %.0f/s ack %.0f/s p50 %s p99 %s ms",
                    el, g[SIM_G_ONLINE], o->slice_n, g[SIM_G_CONNECTING], x->connects_ps, c99, sum_fail(c), sum_drop(c),
                    x->published_ps, x->acked_ps, p50, p99);
            if (o->backend || c[SIM_C_C2D_RECEIVED])
                fprintf(stderr, " | cmd %.0f/s read %.0f/s", x->commands_ps, x->telemetry_ps);
            fprintf(stderr, " | sim %.0f MB %.0f%%", x->sim_rss_mb, x->sim_cpu_pct);
            if (want_server)
                fprintf(stderr, " | server %.0f MB %.0f%%", x->server_rss_mb, x->server_cpu_pct);
            fputc('\n', stderr);
        }
        memcpy(pc, c, sizeof pc);
        if (end)
            break;
    }
    /* Drain (at most 10 s): nothing new goes out; what is in flight is acknowledged and the
     * back-end reads what was acknowledged last, so every published message is accounted for
     * and publish-to-readable covers every one. */
    atomic_store(&r.ctl->phase, SIM_PHASE_DRAIN);
    if (!g_stop) {
        int64_t until = sim_mono_us() + 10000000;
        while (sim_mono_us() < until) {
            collect(&r, c, g, NULL);
            bool acked = o->qos == 0 || c[SIM_C_ACKED] >= c[SIM_C_PUBLISHED];
            bool read = !o->backend || c[SIM_C_TELE_READ] >= (o->qos == 0 ? c[SIM_C_PUBLISHED] : c[SIM_C_ACKED]);
            if (acked && read)
                break;
            usleep(20000);
        }
    }
    /* the run phase is over: what the sessions look like now is the result */
    collect(&r, res.c, res.g, res.h);
    int64_t first_attempt = 0, last_online = 0, first_pub = 0, last_ack = 0;
    for (int b = 0; b < r.n_blocks; b++) {
        int64_t v;
        if ((v = atomic_load(&r.blocks[b].first_attempt_us)) && (!first_attempt || v < first_attempt))
            first_attempt = v;
        if ((v = atomic_load(&r.blocks[b].last_first_online_us)) > last_online)
            last_online = v;
        if ((v = atomic_load(&r.blocks[b].first_publish_us)) && (!first_pub || v < first_pub))
            first_pub = v;
        if ((v = atomic_load(&r.blocks[b].last_ack_us)) > last_ack)
            last_ack = v;
    }
    if (res.all_online_after >= 0 && first_attempt && last_online > first_attempt)
        res.ramp_seconds = (double)(last_online - first_attempt) / 1e6;
    if (first_pub && last_ack > first_pub)
        res.publish_seconds = (double)(last_ack - first_pub) / 1e6;
    res.peak_online = peak_online;
    res.sim.processes = 1 + r.n_children;
    res.sim.cpu_seconds = simt.cpu_total;
    res.server.cpu_seconds = srvt.cpu_total;
    res.ended_real_ms = sg_now_ms();
    res.seconds = (double)(sim_mono_us() - t0) / 1e6;
    if (!o->quiet)
        fprintf(stderr, "sacgate-sim: ending the run (%s); devices disconnect\n", why);
    atomic_store(&r.ctl->phase, SIM_PHASE_STOP);
    if (has_backend)
        pthread_join(backend, NULL);
    SSL_CTX_free(pcfg.tls);
    int64_t deadline = sim_mono_us() + (int64_t)CHILD_STOP_WAIT_S * 1000000;
    for (int i = 0; i < r.n_children; i++) {
        if (!r.children[i])
            continue;
        int status;
        while (waitpid(r.children[i], &status, WNOHANG) == 0) {
            if (sim_mono_us() > deadline) {
                kill(r.children[i], SIGKILL);
                waitpid(r.children[i], &status, 0);
                break;
            }
            usleep(20000);
        }
    }
    /* what the workers used, exactly, now that they are gone */
    struct rusage self, kids;
    if (getrusage(RUSAGE_SELF, &self) == 0 && getrusage(RUSAGE_CHILDREN, &kids) == 0)
        res.sim.cpu_seconds = (double)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec +
                                       kids.ru_stime.tv_sec) +
                              (double)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec +
                                       kids.ru_stime.tv_usec) / 1e6;
    json_t *summary = sim_summary_json(&res);
    sim_summary_print(stdout, summary);
    int rc = 0;
    if (!strcmp(o->json, "-")) {
        char *line = json_dumps(summary, JSON_COMPACT);
        printf("SACGATE-SIM-SUMMARY %s\n", line ? line : "{}");
        free(line);
    } else if (o->json[0] && sim_summary_write(summary, o->json, err, sizeof err) != SG_OK) {
        fprintf(stderr, "sacgate-sim: %s\n", err);
        rc = 1;
    }
    if (o->html[0]) {
        char *text = json_dumps(summary, JSON_COMPACT);
        if (!text || sim_report_write_html(text, strlen(text), o->html) != SG_OK) {
            fprintf(stderr, "sacgate-sim: cannot write the HTML report %s\n", o->html);
            rc = 1;
        }
        free(text);
    }
    if (!o->quiet && (o->json[0] || o->html[0]))
        fprintf(stderr, "sacgate-sim: report %s%s%s\n", o->json, o->json[0] && o->html[0] ? " " : "", o->html);
    json_decref(summary);
    free(res.h);
    free(res.series);
    free(prev);
    free(cur);
    free(delta);
    free(spids);
    free(mypids);
    free(simt.p);
    free(srvt.p);
    free(r.children);
    sim_creds_destroy(&r.creds);
    munmap(map, map_len);
    sim_http_cleanup();
    return rc;
}

/* ---------- tools ---------- */

static int cmd_merge(int argc, char **argv)
{
    const char *json_out = NULL, *html_out = NULL;
    json_t **in = calloc((size_t)argc + 1, sizeof *in);
    size_t n = 0;
    int rc = 0;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "--json") || !strcmp(argv[i], "-o")) && i + 1 < argc) {
            json_out = argv[++i];
        } else if (!strcmp(argv[i], "--html") && i + 1 < argc) {
            html_out = argv[++i];
        } else {
            json_error_t je;
            json_t *j = json_load_file(argv[i], 0, &je);
            if (!j) {
                fprintf(stderr, "sacgate-sim merge: %s: %s (line %d)\n", argv[i], je.text, je.line);
                rc = 2;
                break;
            }
            in[n++] = j;
        }
    }
    json_t *m = NULL;
    char err[256];
    if (rc == 0 && n == 0) {
        fprintf(stderr, "usage: sacgate-sim merge [--json OUT.json] [--html OUT.html] IN.json...\n");
        rc = 2;
    }
    if (rc == 0 && sim_summary_merge(in, n, &m, err, sizeof err) != SG_OK) {
        fprintf(stderr, "sacgate-sim merge: %s\n", err);
        rc = 2;
    }
    if (rc == 0) {
        sim_summary_print(stdout, m);
        if (json_out && sim_summary_write(m, json_out, err, sizeof err) != SG_OK) {
            fprintf(stderr, "sacgate-sim merge: %s\n", err);
            rc = 1;
        }
        if (html_out) {
            char *text = json_dumps(m, JSON_COMPACT);
            if (!text || sim_report_write_html(text, strlen(text), html_out) != SG_OK) {
                fprintf(stderr, "sacgate-sim merge: cannot write %s\n", html_out);
                rc = 1;
            }
            free(text);
        }
    }
    json_decref(m);
    for (size_t i = 0; i < n; i++)
        json_decref(in[i]);
    free(in);
    return rc;
}

static int cmd_report(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: sacgate-sim report IN.json OUT.html\n");
        return 2;
    }
    char err[256];
    if (sim_report_write_html_file(argv[0], argv[1], err, sizeof err) != SG_OK) {
        fprintf(stderr, "sacgate-sim report: %s\n", err);
        return 1;
    }
    return 0;
}

static int cmd_keys(int argc, char **argv)
{
    sim_opts_t o;
    sim_opts_defaults(&o);
    char err[256];
    if (sim_opts_parse(&o, argc, argv, err, sizeof err) != SG_OK) {
        fprintf(stderr, "sacgate-sim keys: %s\n", err);
        return 2;
    }
    for (uint64_t i = 0; i < o.devices; i++) {
        char id[192], b64[64];
        uint8_t key[SIM_KEY_LEN];
        if (sim_device_name(id, sizeof id, o.prefix, o.first + i) != SG_OK) {
            fprintf(stderr, "sacgate-sim keys: --prefix makes ids that are not valid device ids\n");
            return 2;
        }
        sim_derive_key(o.key_seed, id, key);
        sg_b64_encode(key, sizeof key, b64);
        printf("%s %s\n", id, b64);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 && strncmp(argv[1], "--", 2) != 0 ? argv[1] : "run";
    int first = argc > 1 && strncmp(argv[1], "--", 2) != 0 ? 2 : 1;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") || !strcmp(argv[i], "help")) {
            sim_opts_help(stdout);
            return 0;
        }
    if (!strcmp(cmd, "merge"))
        return cmd_merge(argc - first, argv + first);
    if (!strcmp(cmd, "report"))
        return cmd_report(argc - first, argv + first);
    if (!strcmp(cmd, "keys"))
        return cmd_keys(argc - first, argv + first);
    if (strcmp(cmd, "run") != 0) {
        fprintf(stderr, "sacgate-sim: unknown command '%s' (see sacgate-sim --help)\n", cmd);
        return 2;
    }
    sim_opts_t *o = calloc(1, sizeof *o);
    char err[512];
    if (!o)
        return 2;
    sim_opts_defaults(o);
    if (sim_opts_parse(o, argc - first, argv + first, err, sizeof err) != SG_OK ||
        sim_opts_finish(o, err, sizeof err) != SG_OK) {
        fprintf(stderr, "sacgate-sim: %s\n", err);
        free(o);
        return 2;
    }
    if (o->dry_run) {
        printf("mode %s, devices %" PRIu64 "..%" PRIu64 " (slice %u/%u of %" PRIu64 " from %" PRIu64 "), %d ports, "
               "%d source addresses, %d processes x %d threads, rate %.0f/s, duration %.0f s, hold %.0f s\n",
               o->mode == SIM_MODE_IOTHUB ? "iothub" : "plain", o->slice_first, o->slice_first + o->slice_n - 1,
               o->slice_index, o->slice_count, o->devices, o->first, o->n_ports, (int)o->n_source_addrs, o->processes,
               o->threads, o->rate, o->duration, o->hold);
        free(o);
        return 0;
    }
    int rc = run(o);
    free(o);
    return rc;
}
