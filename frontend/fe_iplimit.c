/* fe_iplimit.c — per-address connection limits; see fe_iplimit.h.
 * An entry lives while its address has connections open or its bucket is not full yet (an
 * address that connects and closes at once must still be charged for the rate); entries that are
 * neither are swept at most once a second, so the table holds only recently active addresses. */
#include "fe_iplimit.h"
#include <arpa/inet.h>
#include <czmq.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct fe_ipent {
    uint32_t open;
    double tokens;          /* connects it may still make now */
    int64_t at_ms;          /* when tokens was last brought up to date */
};

struct fe_iplimit {
    pthread_mutex_t lock;
    zhashx_t *addrs;        /* address text -> fe_ipent_t */
    uint32_t max_open, rate;
    int64_t swept_ms;
};

static void ent_free(void **item)
{
    free(*item);
    *item = NULL;
}

fe_iplimit_t *fe_iplimit_new(uint32_t max_open, uint32_t rate)
{
    fe_iplimit_t *l = calloc(1, sizeof *l);
    if (!l || !(l->addrs = zhashx_new())) {
        free(l);
        return NULL;
    }
    zhashx_set_destructor(l->addrs, ent_free);
    pthread_mutex_init(&l->lock, NULL);
    l->max_open = max_open;
    l->rate = rate;
    return l;
}

void fe_iplimit_destroy(fe_iplimit_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fe_iplimit_t *l = *self_p;
    zhashx_destroy(&l->addrs);
    pthread_mutex_destroy(&l->lock);
    free(l);
    *self_p = NULL;
}

static double burst(const fe_iplimit_t *l) { return 2.0 * l->rate; }

static void refill(const fe_iplimit_t *l, fe_ipent_t *e, int64_t now_ms)
{
    if (!l->rate)
        return;
    e->tokens += (double)(now_ms - e->at_ms) * l->rate / 1000.0;
    if (e->tokens > burst(l))
        e->tokens = burst(l);
    e->at_ms = now_ms;
}

/* Forget addresses with nothing open and a full bucket (lock held). */
static void sweep(fe_iplimit_t *l, int64_t now_ms)
{
    if (now_ms - l->swept_ms < 1000)
        return;
    l->swept_ms = now_ms;
    zlist_t *idle = zlist_new();
    for (fe_ipent_t *e = zhashx_first(l->addrs); e; e = zhashx_next(l->addrs)) {
        refill(l, e, now_ms);
        if (e->open == 0 && (!l->rate || e->tokens >= burst(l)))
            zlist_append(idle, (void *)zhashx_cursor(l->addrs));
    }
    for (const char *k = zlist_first(idle); k; k = zlist_next(idle))
        zhashx_delete(l->addrs, k);
    zlist_destroy(&idle);
}

static void addr_text(const struct sockaddr *a, char *ip)
{
    ip[0] = 0;
    if (a->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)a)->sin_addr, ip, INET6_ADDRSTRLEN);
    } else if (a->sa_family == AF_INET6) {
        const struct in6_addr *v6 = &((const struct sockaddr_in6 *)a)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(v6))   /* the same client whichever listener took it */
            inet_ntop(AF_INET, &v6->s6_addr[12], ip, INET6_ADDRSTRLEN);
        else
            inet_ntop(AF_INET6, v6, ip, INET6_ADDRSTRLEN);
    }
}

fe_ip_verdict_t fe_iplimit_admit(fe_iplimit_t *l, const struct sockaddr *addr, int64_t now_ms, fe_ipent_t **ent,
                                 char *ip)
{
    *ent = NULL;
    addr_text(addr, ip);
    if ((!l->max_open && !l->rate) || !ip[0])
        return FE_IP_OK;
    fe_ip_verdict_t v = FE_IP_OK;
    pthread_mutex_lock(&l->lock);
    sweep(l, now_ms);
    fe_ipent_t *e = zhashx_lookup(l->addrs, ip);
    if (!e && (e = calloc(1, sizeof *e))) {
        e->tokens = burst(l);
        e->at_ms = now_ms;
        zhashx_insert(l->addrs, ip, e);
    }
    if (e) {
        refill(l, e, now_ms);
        if (l->max_open && e->open >= l->max_open) {
            v = FE_IP_TOO_MANY;
        } else if (l->rate && e->tokens < 1.0) {
            v = FE_IP_TOO_FAST;
        } else {
            if (l->rate)
                e->tokens -= 1.0;
            e->open++;
            *ent = e;
        }
    }
    pthread_mutex_unlock(&l->lock);
    return v;
}

void fe_iplimit_release(fe_iplimit_t *l, fe_ipent_t *ent)
{
    if (!ent)
        return;
    pthread_mutex_lock(&l->lock);
    if (ent->open > 0)
        ent->open--;
    pthread_mutex_unlock(&l->lock);
}

uint32_t fe_iplimit_size(fe_iplimit_t *l)
{
    pthread_mutex_lock(&l->lock);
    uint32_t n = (uint32_t)zhashx_size(l->addrs);
    pthread_mutex_unlock(&l->lock);
    return n;
}
