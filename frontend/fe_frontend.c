/* fe_frontend.c — the frontend tier's start-up: TLS context, one SO_REUSEPORT listener and one
 * event-loop thread per core; see fe_frontend.h. Several frontend processes may share the port
 * the same way (the kernel spreads new connections over every listener). */
#include "fe_frontend.h"
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <netdb.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "fe_tls.h"
#include "fe_worker.h"
#include "sg_codec.h"
#include "sg_log.h"
#include "sg_time.h"

struct fe_frontend {
    fe_settings_t set;
    SSL_CTX *tls;
    int n;
    int *fds;
    fe_worker_t **workers;
    int port;
    _Atomic uint32_t open;   /* connections of every thread */
    pthread_t trimmer;
    bool trimmer_started;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    bool stopping;
};

/* TLS handshakes allocate far more than an idle session keeps: after a burst of them the freed
 * heap goes back to the kernel, so idle sessions cost what they hold (DESIGN-NOTES §6). On a
 * thread of its own, every TRIM_EVERY_S while connections are being accepted: malloc_trim walks
 * every arena and takes milliseconds with a large heap, which an event loop must not spend. */
#define TRIM_EVERY_S 5

static void *trim_main(void *arg)
{
    fe_frontend_t *f = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&f->stop_lock);
    while (!f->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += TRIM_EVERY_S;
        while (!f->stopping && pthread_cond_timedwait(&f->stop_cond, &f->stop_lock, &until) != ETIMEDOUT) {
        }
        if (f->stopping)
            break;
        uint64_t accepted = 0;
        for (int i = 0; i < f->n; i++)
            accepted += atomic_load(&f->workers[i]->accepted);
        if (accepted == seen)
            continue;
        seen = accepted;
        pthread_mutex_unlock(&f->stop_lock);
        int64_t t0 = sg_mono_us();
        malloc_trim(0);
        SG_DEBUG("frontend", "heap.trimmed", "us=%lld", (long long)(sg_mono_us() - t0));
        pthread_mutex_lock(&f->stop_lock);
    }
    pthread_mutex_unlock(&f->stop_lock);
    return NULL;
}

/* A listening socket on host:port with SO_REUSEPORT; -1 with a log line on failure. */
static int listen_on(const char *host, int port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    int rc = getaddrinfo(host, ports, &hints, &res);
    if (rc != 0) {
        SG_ERROR("frontend", "listen.resolve", "host=%s reason=\"%s\"", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        SG_ERROR("frontend", "listen.failed", "host=%s port=%d reason=\"%s\"", host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

fe_frontend_t *fe_frontend_new(const sg_config_t *cfg, const char *name, const char *routers)
{
    fe_frontend_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    int threads = (int)sg_config_int(cfg, "frontend.threads");
    if (threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > 0 ? (int)cpus : 1;
    }
    f->n = threads;
    f->set.max_packet = (uint32_t)sg_config_int(cfg, "frontend.max_packet");
    f->set.max_outbuf = (uint32_t)sg_config_int(cfg, "frontend.max_outbuf");
    f->set.keepalive_cap = (uint16_t)sg_config_int(cfg, "frontend.keepalive_cap");
    f->set.connect_timeout = (uint16_t)sg_config_int(cfg, "frontend.connect_timeout");
    f->set.window = (uint16_t)sg_config_int(cfg, "frontend.inflight_window");
    f->set.ack_timeout = (uint16_t)sg_config_int(cfg, "frontend.ack_timeout");
    f->set.max_telemetry = (uint32_t)sg_config_int(cfg, "frontend.max_telemetry");
    f->set.telemetry_rate = (uint16_t)sg_config_int(cfg, "frontend.telemetry_rate");
    f->set.telemetry_burst = (uint16_t)sg_config_int(cfg, "frontend.telemetry_burst");
    uint32_t max_conns = (uint32_t)sg_config_int(cfg, "frontend.max_connections");
    f->set.max_connections = max_conns;

    f->tls = fe_tls_ctx_new(sg_config_str(cfg, "frontend.cert"), sg_config_str(cfg, "frontend.key"));
    f->fds = calloc((size_t)threads, sizeof *f->fds);
    f->workers = calloc((size_t)threads, sizeof *f->workers);
    if (!f->tls || !f->fds || !f->workers) {
        fe_frontend_destroy(&f);
        return NULL;
    }
    for (int i = 0; i < threads; i++)
        f->fds[i] = -1;
    const char *host = sg_config_str(cfg, "frontend.bind");
    int port = (int)sg_config_int(cfg, "frontend.mqtt_port");
    for (int i = 0; i < threads; i++) {
        f->fds[i] = listen_on(host, port);
        if (f->fds[i] < 0) {
            fe_frontend_destroy(&f);
            return NULL;
        }
        if (port == 0)
            port = bound_port(f->fds[0]);   /* the others join the port the first one got */
    }
    f->port = port;
    /* Routing ids carry a boot id so shards can tell this incarnation from an earlier one. */
    uint8_t boot[6];
    char boot_hex[13];
    if (RAND_bytes(boot, sizeof boot) != 1) {
        fe_frontend_destroy(&f);
        return NULL;
    }
    sg_hex_encode(boot, sizeof boot, boot_hex);
    int hwm = (int)sg_config_int(cfg, "cluster.hwm");
    for (int i = 0; i < threads; i++) {
        char peer[SG_WIRE_MAX_PEER + 1];
        snprintf(peer, sizeof peer, "%s/%d/%s", name, i, boot_hex);
        f->workers[i] = fe_worker_new(i, &f->set, f->tls, f->fds[i], peer, routers, hwm, &f->open);
        if (!f->workers[i]) {
            SG_ERROR("frontend", "worker.failed", "thread=%d", i);
            fe_frontend_destroy(&f);
            return NULL;
        }
    }
    pthread_mutex_init(&f->stop_lock, NULL);
    pthread_cond_init(&f->stop_cond, NULL);
    f->trimmer_started = pthread_create(&f->trimmer, NULL, trim_main, f) == 0;
    SG_INFO("frontend", "ready", "frontend=%s port=%d threads=%d routers=%s max_connections=%u", name, port, threads,
            routers, max_conns);
    return f;
}

void fe_frontend_destroy(fe_frontend_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fe_frontend_t *f = *self_p;
    if (f->trimmer_started) {
        pthread_mutex_lock(&f->stop_lock);
        f->stopping = true;
        pthread_cond_signal(&f->stop_cond);
        pthread_mutex_unlock(&f->stop_lock);
        pthread_join(f->trimmer, NULL);
        pthread_mutex_destroy(&f->stop_lock);
        pthread_cond_destroy(&f->stop_cond);
    }
    for (int i = 0; f->workers && i < f->n; i++)
        fe_worker_destroy(&f->workers[i]);
    for (int i = 0; f->fds && i < f->n; i++)
        if (f->fds[i] >= 0)
            close(f->fds[i]);
    free(f->workers);
    free(f->fds);
    SSL_CTX_free(f->tls);
    free(f);
    *self_p = NULL;
}

int fe_frontend_mqtt_port(const fe_frontend_t *self) { return self->port; }

uint64_t fe_frontend_connections(const fe_frontend_t *self)
{
    uint64_t n = 0;
    for (int i = 0; i < self->n; i++)
        n += atomic_load(&self->workers[i]->n_conns);
    return n;
}

bool fe_frontend_ready(void *self, char *why, size_t why_len)
{
    fe_frontend_t *f = self;
    int64_t now = sg_mono_ms();
    for (int i = 0; i < f->n; i++) {
        int64_t seen = atomic_load(&f->workers[i]->router_seen_ms);
        if (seen == 0 || now - seen > FE_ROUTER_STALE_MS) {
            snprintf(why, why_len, "event loop %d has not heard from its router %s", i,
                     seen == 0 ? "yet" : "for over 7 s");
            return false;
        }
    }
    return true;
}
