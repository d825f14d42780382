/* fe_loop.h — a small epoll event loop with a hashed timer wheel, one per frontend thread.
 * File events: an fe_io_t embedded in the owner (a connection, a listener) names the fd, the
 * interest mask and the handler. Timers: an fe_timer_t embedded in the owner sits in one wheel
 * slot (one-second ticks); nothing is allocated per timer, so an idle connection costs two
 * pointers here. Handlers may close their owner: owners free themselves only after the current
 * batch of events (fe_loop_defer). Modelled on redis ae.h. */
#ifndef FE_LOOP_H
#define FE_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include "sg_result.h"

typedef struct fe_loop fe_loop_t;
typedef struct fe_io fe_io_t;
typedef struct fe_timer fe_timer_t;

typedef void (*fe_io_fn)(fe_loop_t *loop, fe_io_t *io, uint32_t events);
typedef void (*fe_timer_fn)(fe_loop_t *loop, fe_timer_t *t);
typedef void (*fe_defer_fn)(void *arg);

struct fe_io {
    int fd;
    uint32_t mask;     /* EPOLLIN/EPOLLOUT currently registered */
    fe_io_fn fn;
};

struct fe_timer {
    fe_timer_t *prev, *next;   /* NULL prev when not scheduled */
    uint32_t at;               /* loop second when it fires */
    fe_timer_fn fn;
};

fe_loop_t *fe_loop_new(void);
void fe_loop_destroy(fe_loop_t **self_p);

SG_WUR sg_rc fe_loop_add(fe_loop_t *l, fe_io_t *io, uint32_t mask);
/* Change the interest mask (no system call when unchanged). */
SG_WUR sg_rc fe_loop_mod(fe_loop_t *l, fe_io_t *io, uint32_t mask);
void fe_loop_del(fe_loop_t *l, fe_io_t *io);

/* Seconds since the loop started (monotonic); what timers are expressed in. */
uint32_t fe_loop_now(const fe_loop_t *l);
/* Milliseconds since the loop started (wraps after 49 days; use differences). */
uint32_t fe_loop_now_ms(const fe_loop_t *l);
/* Schedule (or move) t to fire at loop second `at` (clamped to at least the next tick). */
void fe_timer_set(fe_loop_t *l, fe_timer_t *t, uint32_t at);
void fe_timer_cancel(fe_timer_t *t);

/* Run fn(arg) after the current batch of events (for freeing owners safely). */
SG_WUR sg_rc fe_loop_defer(fe_loop_t *l, fe_defer_fn fn, void *arg);

/* Wait up to timeout_ms for events, dispatch them, fire due timers, then run deferred calls. */
void fe_loop_run_once(fe_loop_t *l, int timeout_ms);

#endif
