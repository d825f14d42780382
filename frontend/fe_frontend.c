/* fe_frontend.c — the frontend tier's start-up: TLS context, one SO_REUSEPORT listener and one
 * event-loop thread per core; see fe_frontend.h. Several frontend processes may share the port
 * the same way (the kernel spreads new connections over every listener). A housekeeping thread
 * trims the heap after accept bursts and watches the certificate files for a new version. */
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
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "fe_iplimit.h"
#include "fe_tickets.h"
#include "fe_tls.h"
#include "fe_worker.h"
#include "sg_codec.h"
#include "sg_log.h"
#include "sg_time.h"

struct fe_frontend {
    fe_settings_t set;
    int port_claim;      /* the abstract socket naming this port's frontend.share_port group, or -1 */
    int ws_port_claim;   /* the same for the ws port */
    fe_tls_t *tls;
    fe_tickets_t *tickets;   /* frontend.ticket_keys, or NULL: no resumption */
    int cert_reload_s;   /* seconds between looks at the certificate files (0: SIGHUP only) */
    int n;
    int *fds;
    int *ws_fds;         /* one MQTT-over-WebSocket listener per thread on the ws port */
    fe_worker_t **workers;
    int port;
    int ws_port;
    _Atomic uint32_t open;   /* connections of every thread */
    pthread_t trimmer;   /* the housekeeping thread */
    bool trimmer_started;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    bool stopping;
};

/* TLS handshakes allocate far more than an idle session keeps: after a burst of them the freed
 * heap goes back to the kernel, so idle sessions cost what they hold (DESIGN-NOTES §6). On a
 * thread of its own, every TRIM_EVERY_S while connections are being accepted: malloc_trim walks
 * every arena and takes milliseconds with a large heap, which an event loop must not spend.
 * The same thread stats the certificate and key every frontend.cert_reload seconds (a rotated
 * certificate is picked up without a signal; building the new context stays off the loops). */
#define TRIM_EVERY_S 5

static void *trim_main(void *arg)
{
    pthread_setname_np(pthread_self(), "sg-fe-trim");   /* top -H, perf and /proc show it */
    fe_frontend_t *f = arg;
    uint64_t seen = 0;
    int64_t next_trim = sg_mono_ms(), next_cert = sg_mono_ms() + (int64_t)f->cert_reload_s * 1000;
    pthread_mutex_lock(&f->stop_lock);
    while (!f->stopping) {
        int tick = f->cert_reload_s > 0 && f->cert_reload_s < TRIM_EVERY_S ? f->cert_reload_s : TRIM_EVERY_S;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += tick;
        while (!f->stopping && pthread_cond_timedwait(&f->stop_cond, &f->stop_lock, &until) != ETIMEDOUT) {
        }
        if (f->stopping)
            break;
        int64_t now = sg_mono_ms();
        if (f->cert_reload_s > 0 && now >= next_cert) {
            next_cert = now + (int64_t)f->cert_reload_s * 1000;
            pthread_mutex_unlock(&f->stop_lock);
            fe_tls_check(f->tls);
            if (f->tickets)
                fe_tickets_check(f->tickets);
            pthread_mutex_lock(&f->stop_lock);
        }
        if (now < next_trim)
            continue;
        next_trim = now + TRIM_EVERY_S * 1000;
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

/* SO_REUSEPORT lets any process of the same user join a port, and the kernel would then split
 * devices between two unrelated gateways without a word. So a frontend first looks whether the
 * port has a listener: if not, it is the first (and, with frontend.share_port set, holds an
 * abstract UNIX socket named after the port and group, which lives exactly as long as it does);
 * if so, it may join only when frontend.share_port is set and that socket of the same group
 * answers. Abstract sockets are per network namespace, like the port. */
static socklen_t claim_name(struct sockaddr_un *un, int port, const char *group)
{
    *un = (struct sockaddr_un){.sun_family = AF_UNIX};
    int n = snprintf(un->sun_path + 1, sizeof un->sun_path - 1, "sacgate-port-%d-%s", port, group);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* Hold the group's name for the port (-1 when another member of the group holds it already). */
static int claim_hold(int port, const char *group)
{
    struct sockaddr_un un;
    socklen_t len = claim_name(&un, port, group);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&un, len) == 0 && listen(fd, 16) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

/* May this process listen on port? 0 yes (*claim: the group's name it now holds, or -1), -1 no
 * (logged). Port 0: the kernel picks a free port later (claimed then, see fe_frontend_new). */
static int claim_port(const char *host, int port, const char *group, int *claim)
{
    *claim = -1;
    if (port == 0)
        return 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    if (getaddrinfo(host, ports, &hints, &res) != 0)
        return 0;   /* listen_on reports it */
    int probe = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    bool in_use = probe >= 0 && setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
                  bind(probe, res->ai_addr, res->ai_addrlen) != 0 && errno == EADDRINUSE;
    if (probe >= 0)
        close(probe);
    freeaddrinfo(res);
    if (!in_use) {
        if (*group)
            *claim = claim_hold(port, group);   /* -1: a member that started at the same moment has it */
        return 0;
    }
    if (!*group) {
        SG_ERROR("frontend", "listen.port_in_use", "port=%d reason=\"another process listens on this port (another "
                 "gateway?); frontends of one cluster that are meant to share a port set the same "
                 "frontend.share_port group\"", port);
        return -1;
    }
    struct sockaddr_un un;
    socklen_t len = claim_name(&un, port, group);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool member = fd >= 0 && connect(fd, (struct sockaddr *)&un, len) == 0;
    if (fd >= 0)
        close(fd);
    if (!member) {
        SG_ERROR("frontend", "listen.port_in_use", "port=%d group=%s reason=\"the process listening on this port is "
                 "not a frontend of share_port group '%s'\"", port, group, group);
        return -1;
    }
    return 0;
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
/* One SO_REUSEPORT listener per thread on host:port (fds[0..n-1]), with the port's share_port
 * claim: the port bound (the kernel's choice for port 0), or -1 (logged). */
static int open_port(const sg_config_t *cfg, const char *host, int port, int n, int *fds, int *claim)
{
    const char *group = sg_config_str(cfg, "frontend.share_port");
    if (claim_port(host, port, group, claim) != 0)
        return -1;
    for (int i = 0; i < n; i++) {
        fds[i] = listen_on(host, port);
        if (fds[i] < 0)
            return -1;
        if (port == 0) {
            port = bound_port(fds[0]);   /* the others join the port the first one got */
            if (*group)
                *claim = claim_hold(port, group);
        }
    }
    return port;
}

fe_frontend_t *fe_frontend_new(const sg_config_t *cfg, const char *name, const char *routers)
{
    fe_frontend_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->port_claim = f->ws_port_claim = -1;
    int threads = (int)sg_config_int(cfg, "frontend.threads");
    if (threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > 0 ? (int)cpus : 1;
    }
    f->n = threads;
    f->set.max_packet = (uint32_t)sg_config_int(cfg, "frontend.max_packet");
    f->set.max_connect_packet = (uint32_t)sg_config_int(cfg, "frontend.max_connect_packet");
    f->set.max_will = (uint32_t)sg_config_int(cfg, "frontend.max_will");
    f->set.max_outbuf = (uint32_t)sg_config_int(cfg, "frontend.max_outbuf");
    f->set.keepalive_cap = (uint16_t)sg_config_int(cfg, "frontend.keepalive_cap");
    f->set.connect_timeout = (uint16_t)sg_config_int(cfg, "frontend.connect_timeout");
    f->set.window = (uint16_t)sg_config_int(cfg, "frontend.inflight_window");
    f->set.ack_timeout = (uint16_t)sg_config_int(cfg, "frontend.ack_timeout");
    f->set.max_telemetry = (uint32_t)sg_config_int(cfg, "frontend.max_telemetry");
    f->set.max_method_response = (uint32_t)sg_config_int(cfg, "frontend.max_method_response");
    f->set.telemetry_rate = (uint16_t)sg_config_int(cfg, "frontend.telemetry_rate");
    f->set.telemetry_burst = (uint16_t)sg_config_int(cfg, "frontend.telemetry_burst");
    f->set.credit = (uint32_t)sg_config_int(cfg, "cluster.credit");
    uint32_t max_conns = (uint32_t)sg_config_int(cfg, "frontend.max_connections");
    f->set.max_connections = max_conns;

    f->cert_reload_s = (int)sg_config_int(cfg, "frontend.cert_reload");
    f->tls = fe_tls_new(sg_config_str(cfg, "frontend.cert"), sg_config_str(cfg, "frontend.key"),
                        sg_config_bool(cfg, "frontend.psk_ke"));
    const char *ticket_keys = sg_config_str(cfg, "frontend.ticket_keys");
    if (f->tls && ticket_keys[0]) {
        f->tickets = fe_tickets_new(ticket_keys, (int)sg_config_int(cfg, "frontend.ticket_lifetime"));
        if (!f->tickets) {
            SG_ERROR("frontend", "start.failed", "reason=\"frontend.ticket_keys cannot be used (see the line before); "
                     "fix the file or set frontend.ticket_keys to empty for no session resumption\"");
            fe_frontend_destroy(&f);
            return NULL;
        }
        fe_tls_use_tickets(f->tls, f->tickets);
    }
    f->fds = calloc((size_t)threads, sizeof *f->fds);
    f->ws_fds = calloc((size_t)threads, sizeof *f->ws_fds);
    f->workers = calloc((size_t)threads, sizeof *f->workers);
    if (!f->tls || !f->fds || !f->ws_fds || !f->workers) {
        fe_frontend_destroy(&f);
        return NULL;
    }
    for (int i = 0; i < threads; i++)
        f->fds[i] = f->ws_fds[i] = -1;
    const char *host = sg_config_str(cfg, "frontend.bind");
    int port = (int)sg_config_int(cfg, "frontend.mqtt_port");
    f->set.iplimit = fe_iplimit_new((uint32_t)sg_config_int(cfg, "frontend.max_connections_per_ip"),
                                    (uint32_t)sg_config_int(cfg, "frontend.connect_rate_per_ip"));
    int ws_port = (int)sg_config_int(cfg, "frontend.ws_port");
    if (!f->set.iplimit || (port = open_port(cfg, host, port, threads, f->fds, &f->port_claim)) < 0) {
        fe_frontend_destroy(&f);
        return NULL;
    }
    /* MQTT over WebSocket over TLS: the same context, limits and deadlines (fe_ws.h) */
    if ((ws_port = open_port(cfg, host, ws_port, threads, f->ws_fds, &f->ws_port_claim)) < 0) {
        SG_ERROR("frontend", "listen.ws_failed", "reason=\"could not listen on frontend.ws_port (ports below 1024 "
                 "need root or CAP_NET_BIND_SERVICE); set frontend.ws_port (--ws-port) to a free port, 0 for any\"");
        fe_frontend_destroy(&f);
        return NULL;
    }
    f->port = port;
    f->ws_port = ws_port;
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
        f->workers[i] = fe_worker_new(i, &f->set, f->tls, f->fds[i], f->ws_fds[i], peer, routers, hwm, &f->open);
        if (!f->workers[i]) {
            SG_ERROR("frontend", "worker.failed", "thread=%d", i);
            fe_frontend_destroy(&f);
            return NULL;
        }
    }
    pthread_mutex_init(&f->stop_lock, NULL);
    pthread_cond_init(&f->stop_cond, NULL);
    f->trimmer_started = pthread_create(&f->trimmer, NULL, trim_main, f) == 0;
    SG_INFO("frontend", "ready", "frontend=%s port=%d ws_port=%d threads=%d routers=%s max_connections=%u", name, port,
            ws_port, threads, routers, max_conns);
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
    for (int i = 0; f->ws_fds && i < f->n; i++)
        if (f->ws_fds[i] >= 0)
            close(f->ws_fds[i]);
    free(f->workers);
    free(f->fds);
    free(f->ws_fds);
    fe_tls_destroy(&f->tls);
    fe_tickets_destroy(&f->tickets);   /* after the workers: their connections' contexts point at it */
    fe_iplimit_destroy(&f->set.iplimit);
    if (f->port_claim >= 0)
        close(f->port_claim);
    if (f->ws_port_claim >= 0)
        close(f->ws_port_claim);
    free(f);
    *self_p = NULL;
}

int fe_frontend_mqtt_port(const fe_frontend_t *self) { return self->port; }

int fe_frontend_ws_port(const fe_frontend_t *self) { return self->ws_port; }

bool fe_frontend_reload_tls(fe_frontend_t *self, const char *why)
{
    bool ok = fe_tls_reload(self->tls, why);
    if (self->tickets && !fe_tickets_reload(self->tickets, why))
        ok = false;
    return ok;
}

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
