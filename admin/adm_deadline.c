/* adm_deadline.c — request-header deadline of the admin endpoint; see adm_deadline.h.
 * A watch per connection sits in one list under one mutex: libmicrohttpd's threads add, mark and
 * remove watches; the sweeper shuts down the sockets of watches past their deadline. Shutting
 * down (not closing) leaves the descriptor to libmicrohttpd, which sees the end of the stream
 * and closes the connection on its own thread as if the client had gone. */
#include "adm_deadline.h"
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "sg_log.h"
#include "sg_time.h"

#define SWEEP_MS 250

typedef struct watch watch_t;
struct watch {
    int fd;
    int64_t due;           /* the headers are due by then; 0 = not waiting for headers */
    watch_t *prev, *next;
};

struct adm_deadline {
    int64_t timeout_ms;
    pthread_mutex_t lock;  /* the list, every watch's due, stop */
    pthread_cond_t wake;   /* CLOCK_MONOTONIC */
    watch_t *head;
    bool stop;
    pthread_t thread;
};

static void *sweeper(void *arg)
{
    pthread_setname_np(pthread_self(), "sg-adm-deadline");   /* top -H, perf and /proc show it */
    adm_deadline_t *d = arg;
    pthread_mutex_lock(&d->lock);
    while (!d->stop) {
        int64_t now = sg_mono_ms();
        unsigned closed = 0;
        for (watch_t *w = d->head; w; w = w->next)
            if (w->due && w->due <= now) {
                shutdown(w->fd, SHUT_RDWR);
                w->due = 0;
                closed++;
            }
        if (closed) {
            pthread_mutex_unlock(&d->lock);
            SG_INFO("admin", "http.header_timeout", "connections=%u timeout_ms=%lld", closed, (long long)d->timeout_ms);
            pthread_mutex_lock(&d->lock);
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += SWEEP_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&d->wake, &d->lock, &ts);
    }
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

adm_deadline_t *adm_deadline_new(int64_t timeout_ms)
{
    adm_deadline_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->timeout_ms = timeout_ms;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->wake, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&d->lock, NULL);
    int rc = pthread_create(&d->thread, NULL, sweeper, d);
    if (rc != 0) {
        SG_ERROR("admin", "deadline.thread_failed", "reason=\"%s\"", strerror(rc));
        pthread_cond_destroy(&d->wake);
        pthread_mutex_destroy(&d->lock);
        free(d);
        return NULL;
    }
    return d;
}

void adm_deadline_destroy(adm_deadline_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    adm_deadline_t *d = *self_p;
    pthread_mutex_lock(&d->lock);
    d->stop = true;
    pthread_cond_signal(&d->wake);
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->thread, NULL);
    /* Connections the daemon never reported closed (it has stopped): only memory is left. */
    while (d->head) {
        watch_t *w = d->head;
        d->head = w->next;
        free(w);
    }
    pthread_cond_destroy(&d->wake);
    pthread_mutex_destroy(&d->lock);
    free(d);
    *self_p = NULL;
}

void adm_deadline_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                         enum MHD_ConnectionNotificationCode toe)
{
    adm_deadline_t *d = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        watch_t *w = fd ? calloc(1, sizeof *w) : NULL;
        if (!w)
            return;   /* not watched: the idle timeout still applies */
        w->fd = fd->connect_fd;
        pthread_mutex_lock(&d->lock);
        w->due = sg_mono_ms() + d->timeout_ms;
        w->next = d->head;
        if (d->head)
            d->head->prev = w;
        d->head = w;
        pthread_mutex_unlock(&d->lock);
        *socket_context = w;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        watch_t *w = *socket_context;
        pthread_mutex_lock(&d->lock);
        if (w->prev)
            w->prev->next = w->next;
        else
            d->head = w->next;
        if (w->next)
            w->next->prev = w->prev;
        pthread_mutex_unlock(&d->lock);
        free(w);
        *socket_context = NULL;
    }
}

static void set_due(adm_deadline_t *d, struct MHD_Connection *conn, bool waiting)
{
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    watch_t *w = info ? info->socket_context : NULL;
    if (!w)
        return;
    pthread_mutex_lock(&d->lock);
    w->due = waiting ? sg_mono_ms() + d->timeout_ms : 0;
    pthread_mutex_unlock(&d->lock);
}

void adm_deadline_headers_done(adm_deadline_t *self, struct MHD_Connection *conn) { set_due(self, conn, false); }

void adm_deadline_rearm(adm_deadline_t *self, struct MHD_Connection *conn) { set_due(self, conn, true); }
