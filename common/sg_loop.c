/* sg_loop.c — epoll + timer wheel; see sg_loop.h.
 * The wheel has WHEEL_SLOTS slots of one tick each; a timer due further out than one turn sits in
 * its slot and is skipped until its tick comes round (its `at` says when). Connections re-arm
 * their timer lazily: activity updates a timestamp and the timer, when it fires, decides. */
#include "sg_loop.h"
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WHEEL_SLOTS 4096u
#define MAX_EVENTS 256

typedef struct {
    sg_defer_fn fn;
    void *arg;
} defer_t;

struct sg_loop {
    int ep;
    int64_t start_ms;
    uint32_t tick_ms;
    uint32_t tick;              /* last tick processed */
    sg_timer_t *slots[WHEEL_SLOTS];
    defer_t *defers;
    size_t n_defers, cap_defers;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

sg_loop_t *sg_loop_new(uint32_t tick_ms)
{
    if (tick_ms == 0 || tick_ms > 60000)
        return NULL;
    sg_loop_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->ep < 0) {
        free(l);
        return NULL;
    }
    l->start_ms = mono_ms();
    l->tick_ms = tick_ms;
    return l;
}

void sg_loop_destroy(sg_loop_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    close((*self_p)->ep);
    free((*self_p)->defers);
    free(*self_p);
    *self_p = NULL;
}

uint32_t sg_loop_now(const sg_loop_t *l) { return (uint32_t)((mono_ms() - l->start_ms) / l->tick_ms); }
uint32_t sg_loop_now_ms(const sg_loop_t *l) { return (uint32_t)(mono_ms() - l->start_ms); }

sg_rc sg_loop_add(sg_loop_t *l, sg_io_t *io, uint32_t mask)
{
    struct epoll_event ev = {.events = mask, .data.ptr = io};
    SG_ENSURE(epoll_ctl(l->ep, EPOLL_CTL_ADD, io->fd, &ev) == 0, SG_E_IO);
    io->mask = mask;
    return SG_OK;
}

sg_rc sg_loop_mod(sg_loop_t *l, sg_io_t *io, uint32_t mask)
{
    if (io->mask == mask)
        return SG_OK;
    struct epoll_event ev = {.events = mask, .data.ptr = io};
    SG_ENSURE(epoll_ctl(l->ep, EPOLL_CTL_MOD, io->fd, &ev) == 0, SG_E_IO);
    io->mask = mask;
    return SG_OK;
}

void sg_loop_del(sg_loop_t *l, sg_io_t *io)
{
    if (io->fd >= 0)
        epoll_ctl(l->ep, EPOLL_CTL_DEL, io->fd, NULL);
    io->mask = 0;
}

void sg_timer_cancel(sg_timer_t *t)
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

/* The slot's head pointer viewed as a sg_timer_t so unlinking needs no special case. */
static sg_timer_t *slot_head(sg_loop_t *l, uint32_t slot)
{
    return (sg_timer_t *)((char *)&l->slots[slot] - offsetof(sg_timer_t, next));
}

void sg_timer_set(sg_loop_t *l, sg_timer_t *t, uint32_t at)
{
    sg_timer_cancel(t);
    if (at <= l->tick)
        at = l->tick + 1;
    t->at = at;
    sg_timer_t *head = slot_head(l, at % WHEEL_SLOTS);
    t->next = head->next;
    if (t->next)
        t->next->prev = t;
    t->prev = head;
    head->next = t;
}

sg_rc sg_loop_defer(sg_loop_t *l, sg_defer_fn fn, void *arg)
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

static void fire_timers(sg_loop_t *l)
{
    uint32_t now = sg_loop_now(l);
    while (l->tick < now) {
        l->tick++;
        sg_timer_t *head = slot_head(l, l->tick % WHEEL_SLOTS);
        /* Detach the due ones first: a callback may re-arm into this same slot. */
        sg_timer_t *due = NULL;
        for (sg_timer_t *t = head->next, *next; t; t = next) {
            next = t->next;
            if (t->at <= l->tick) {
                sg_timer_cancel(t);
                t->next = due;
                due = t;
            }
        }
        while (due) {
            sg_timer_t *t = due;
            due = t->next;
            t->next = NULL;
            t->fn(l, t);
        }
    }
}

static void run_defers(sg_loop_t *l)
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

void sg_loop_run_once(sg_loop_t *l, int timeout_ms)
{
    struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(l->ep, evs, MAX_EVENTS, timeout_ms);
    for (int i = 0; i < n; i++) {
        sg_io_t *io = evs[i].data.ptr;
        if (io->fd >= 0)
            io->fn(l, io, evs[i].events);
    }
    fire_timers(l);
    run_defers(l);
}
