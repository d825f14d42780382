/* fe_loop.c — epoll + timer wheel; see fe_loop.h.
 * The wheel has WHEEL_SLOTS one-second slots; a timer due further out than one turn sits in its
 * slot and is skipped until its second comes round (its `at` says when). Connections re-arm
 * their timer lazily: activity updates a timestamp and the timer, when it fires, decides. */
#include "fe_loop.h"
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WHEEL_SLOTS 4096u
#define MAX_EVENTS 256

typedef struct {
    fe_defer_fn fn;
    void *arg;
} defer_t;

struct fe_loop {
    int ep;
    int64_t start_ms;
    uint32_t tick;              /* last second processed */
    fe_timer_t *slots[WHEEL_SLOTS];
    defer_t *defers;
    size_t n_defers, cap_defers;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

fe_loop_t *fe_loop_new(void)
{
    fe_loop_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->ep < 0) {
        free(l);
        return NULL;
    }
    l->start_ms = mono_ms();
    return l;
}

void fe_loop_destroy(fe_loop_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    close((*self_p)->ep);
    free((*self_p)->defers);
    free(*self_p);
    *self_p = NULL;
}

uint32_t fe_loop_now(const fe_loop_t *l) { return (uint32_t)((mono_ms() - l->start_ms) / 1000); }
uint32_t fe_loop_now_ms(const fe_loop_t *l) { return (uint32_t)(mono_ms() - l->start_ms); }

sg_rc fe_loop_add(fe_loop_t *l, fe_io_t *io, uint32_t mask)
{
    struct epoll_event ev = {.events = mask, .data.ptr = io};
    SG_ENSURE(epoll_ctl(l->ep, EPOLL_CTL_ADD, io->fd, &ev) == 0, SG_E_IO);
    io->mask = mask;
    return SG_OK;
}

sg_rc fe_loop_mod(fe_loop_t *l, fe_io_t *io, uint32_t mask)
{
    if (io->mask == mask)
        return SG_OK;
    struct epoll_event ev = {.events = mask, .data.ptr = io};
    SG_ENSURE(epoll_ctl(l->ep, EPOLL_CTL_MOD, io->fd, &ev) == 0, SG_E_IO);
    io->mask = mask;
    return SG_OK;
}

void fe_loop_del(fe_loop_t *l, fe_io_t *io)
{
    if (io->fd >= 0)
        epoll_ctl(l->ep, EPOLL_CTL_DEL, io->fd, NULL);
    io->mask = 0;
}

void fe_timer_cancel(fe_timer_t *t)
{
    if (!t->prev)
        return;
    /* prev points at the previous timer, or at the slot head cast as a timer whose `next` is
     * the slot pointer (next is the first member after prev, see slot_head). */
    t->prev->next = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->prev = t->next = NULL;
}

/* The slot's head pointer viewed as a fe_timer_t so unlinking needs no special case. */
static fe_timer_t *slot_head(fe_loop_t *l, uint32_t slot)
{
    return (fe_timer_t *)((char *)&l->slots[slot] - offsetof(fe_timer_t, next));
}

void fe_timer_set(fe_loop_t *l, fe_timer_t *t, uint32_t at)
{
    fe_timer_cancel(t);
    if (at <= l->tick)
        at = l->tick + 1;
    t->at = at;
    fe_timer_t *head = slot_head(l, at % WHEEL_SLOTS);
    t->next = head->next;
    if (t->next)
        t->next->prev = t;
    t->prev = head;
    head->next = t;
}

sg_rc fe_loop_defer(fe_loop_t *l, fe_defer_fn fn, void *arg)
{
    if (l->n_defers == l->cap_defers) {
        size_t cap = l->cap_defers ? l->cap_defers * 2 : 64;
        defer_t *d = realloc(l->defers, cap * sizeof *d);
        SG_ENSURE(d != NULL, SG_E_NOMEM);
        l->defers = d;
        l->cap_defers = cap;
    }
    l->defers[l->n_defers++] = (defer_t){fn, arg};
    return SG_OK;
}

static void fire_timers(fe_loop_t *l)
{
    uint32_t now = fe_loop_now(l);
    while (l->tick < now) {
        l->tick++;
        fe_timer_t *head = slot_head(l, l->tick % WHEEL_SLOTS);
        /* Detach the due ones first: a callback may re-arm into this same slot. */
        fe_timer_t *due = NULL;
        for (fe_timer_t *t = head->next, *next; t; t = next) {
            next = t->next;
            if (t->at <= l->tick) {
                fe_timer_cancel(t);
                t->next = due;
                due = t;
            }
        }
        while (due) {
            fe_timer_t *t = due;
            due = t->next;
            t->next = NULL;
            t->fn(l, t);
        }
    }
}

static void run_defers(fe_loop_t *l)
{
    /* A deferred call may defer again; those run in the next round. */
    size_t n = l->n_defers;
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++)
        l->defers[i].fn(l->defers[i].arg);
    memmove(l->defers, l->defers + n, (l->n_defers - n) * sizeof *l->defers);
    l->n_defers -= n;
}

void fe_loop_run_once(fe_loop_t *l, int timeout_ms)
{
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(l->ep, evs, MAX_EVENTS, timeout_ms);
    for (int i = 0; i < n; i++) {
        fe_io_t *io = evs[i].data.ptr;
        if (io->fd >= 0)
            io->fn(l, io, evs[i].events);
    }
    fire_timers(l);
    run_defers(l);
}
