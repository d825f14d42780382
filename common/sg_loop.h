/* sg_loop.h — a small epoll event loop with a hashed timer wheel, one per thread: a frontend
 * event loop (one-second ticks) or a simulator worker (10 ms ticks).
 * File events: an sg_io_t embedded in the owner (a connection, a listener) names the fd, the
 * interest mask and the handler. Timers: an sg_timer_t embedded in the owner sits in one wheel
 * slot (ticks of the length given at creation); nothing is allocated per timer, so an idle
 * connection costs two pointers here. Handlers may close their owner: owners free themselves only after the current
 * batch of events (sg_loop_defer). Modelled on redis ae.h. */
#ifndef SG_LOOP_H
#define SG_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include "sg_result.h"

typedef struct sg_loop sg_loop_t;
typedef struct sg_io sg_io_t;
typedef struct sg_timer sg_timer_t;

typedef void (*sg_io_fn)(sg_loop_t *loop, sg_io_t *io, uint32_t events);
typedef void (*sg_timer_fn)(sg_loop_t *loop, sg_timer_t *t);
typedef void (*sg_defer_fn)(void *arg);

struct sg_io {
    int fd;
    uint32_t mask;     /* EPOLLIN/EPOLLOUT currently registered */
    sg_io_fn fn;
};

struct sg_timer {
    sg_timer_t *prev, *next;   /* NULL prev when not scheduled */
    uint32_t at;               /* loop tick when it fires */
    sg_timer_fn fn;
};

/* tick_ms: the timer resolution (1-60000 ms); NULL for a bad tick or when out of resources. */
sg_loop_t *sg_loop_new(uint32_t tick_ms);
void sg_loop_destroy(sg_loop_t **self_p);

SG_WUR sg_rc sg_loop_add(sg_loop_t *l, sg_io_t *io, uint32_t mask);
/* Change the interest mask (no system call when unchanged). */
SG_WUR sg_rc sg_loop_mod(sg_loop_t *l, sg_io_t *io, uint32_t mask);
void sg_loop_del(sg_loop_t *l, sg_io_t *io);

/* Ticks since the loop started (monotonic); what timers are expressed in. With 1000 ms ticks
 * (the frontend) a tick is a second. */
uint32_t sg_loop_now(const sg_loop_t *l);
/* Milliseconds since the loop started (wraps after 49 days; use differences). */
uint32_t sg_loop_now_ms(const sg_loop_t *l);
/* Schedule (or move) t to fire at loop tick `at` (clamped to at least the next tick). */
void sg_timer_set(sg_loop_t *l, sg_timer_t *t, uint32_t at);
void sg_timer_cancel(sg_timer_t *t);

/* Run fn(arg) after the current batch of events (for freeing owners safely). */
SG_WUR sg_rc sg_loop_defer(sg_loop_t *l, sg_defer_fn fn, void *arg);

/* Wait up to timeout_ms for events, dispatch them, fire due timers, then run deferred calls. */
void sg_loop_run_once(sg_loop_t *l, int timeout_ms);

#endif
