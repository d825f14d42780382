/* sim_worker.h — the simulator's device threads and the plain-MQTT back-end thread.
 * A worker process runs --threads event-loop threads; each owns every K-th device of the slice
 * (K = all device threads of the run), so every thread ramps at the same pace. A device is a
 * compact struct driven by epoll and a 10 ms timer wheel (common/sg_loop): TCP connect from one
 * of the --source addresses, non-blocking TLS with SSL_MODE_RELEASE_BUFFERS (no buffers while
 * idle), CONNECT, optional SUBSCRIBE, telemetry at a rate or as fast as the window allows,
 * PINGREQ when idle for the keep-alive, PUBACKs for commands, reconnects with backoff.
 * Everything measured goes into the thread's sim_tstats_t block in shared memory. */
#ifndef SIM_WORKER_H
#define SIM_WORKER_H

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdint.h>
#include "sim_cred.h"
#include "sim_opts.h"
#include "sim_stats.h"

/* RUN: devices connect and publish. DRAIN: nothing new is published or started, what is in
 * flight is acknowledged (and read by the back-end). STOP: devices disconnect, threads end. */
enum { SIM_PHASE_RUN = 0, SIM_PHASE_DRAIN = 1, SIM_PHASE_STOP = 2 };

/* Shared by the parent and every worker (MAP_SHARED). */
typedef struct {
    _Atomic int phase;
    _Atomic int storm_seq;       /* incremented by the parent to start a reconnect storm */
    _Atomic int64_t storm_us;    /* when the last storm began (CLOCK_MONOTONIC µs) */
    _Atomic int all_online;      /* every device has been online once: back-ends start commands */
    _Atomic int backend_ready;   /* the back-end reads telemetry: devices may start (with --backend) */
    int64_t t0_us;               /* start of the run (CLOCK_MONOTONIC µs): the ramp's origin */
} sim_ctl_t;

typedef struct {
    const sim_opts_t *o;
    const sim_creds_t *creds;    /* NULL: names and keys from --prefix and --key-seed */
    sim_ctl_t *ctl;
    sim_tstats_t *st;            /* this thread's block */
    unsigned index;              /* among all device threads of the run */
    unsigned count;              /* all device threads of the run */
    SSL_CTX *tls;                /* NULL with --tls off */
} sim_thread_cfg_t;

/* The client TLS context every thread of a process shares; NULL with a reason in err. */
SSL_CTX *sim_tls_ctx(const sim_opts_t *o, char *err, size_t err_len);

/* A device thread (pthread body); returns when ctl->phase becomes SIM_PHASE_STOP and every
 * device has said goodbye. */
void *sim_thread_main(void *cfg);

/* The plain-mode back-end (pthread body): one MQTT client that subscribes to --backend-topic
 * (publish-to-readable latency) and publishes --command-rate commands to devices' command
 * topics at QoS 1. Runs until ctl->phase becomes SIM_PHASE_STOP. */
void *sim_plain_backend_main(void *cfg);

/* Telemetry and commands carry a stamp so the receiver can measure latency:
 * {"sim":"<prefix>","t":<CLOCK_REALTIME µs>,"d":<device>,"s":<seq>,"p":"xxx..."}.
 * Writes a payload of exactly size bytes into out (which holds size bytes) and returns true, or
 * fills it with 'x' and returns false when size is too small for the stamp. */
bool sim_stamp_payload(uint8_t *out, size_t size, const char *prefix, int64_t t_us, uint64_t device, uint64_t seq);
/* The stamp's time when p starts with a stamp of this prefix, else -1. */
int64_t sim_stamp_time(const uint8_t *p, size_t len, const char *prefix);

int64_t sim_mono_us(void);
int64_t sim_real_us(void);

/* xorshift64*: jitter and random targets, per thread (state nonzero); quality is not a concern. */
static inline uint64_t sim_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

#endif
