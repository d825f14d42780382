/* sim_stats.h — what every simulator thread counts, in a block the parent process maps shared
 * with its worker processes (MAP_SHARED before fork): each worker thread writes only its own
 * block, the parent reads them all once a second for the progress line, the time series and the
 * summary. Counters and gauges are relaxed atomics with a single writer each; histograms are
 * sim_hist_t (same rule). Block 0 belongs to the parent (the back-end role). */
#ifndef SIM_STATS_H
#define SIM_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include "sim_hist.h"

/* Counters (monotonic) and gauges (current values). The names are the JSON keys. */
#define SIM_COUNTERS(X)                                                                          \
    X(CONNECT_ATTEMPTS, "connectAttempts")                                                       \
    X(CONNECTS, "connects")             /* CONNACK 0 received */                                 \
    X(RECONNECTS, "reconnects")         /* connects after the device's first one */             \
    X(FAIL_TCP_REFUSED, "fail.tcpRefused")                                                       \
    X(FAIL_TCP_ERROR, "fail.tcpError")                                                           \
    X(FAIL_TLS, "fail.tls")                                                                      \
    X(FAIL_CONNACK_PROTOCOL, "fail.connack1BadProtocol")                                         \
    X(FAIL_CONNACK_ID, "fail.connack2IdRejected")                                                \
    X(FAIL_CONNACK_UNAVAILABLE, "fail.connack3Unavailable")                                      \
    X(FAIL_CONNACK_CREDENTIALS, "fail.connack4BadCredentials")                                   \
    X(FAIL_CONNACK_NOT_AUTHORIZED, "fail.connack5NotAuthorized")                                 \
    X(FAIL_CONNACK_OTHER, "fail.connackOther")                                                   \
    X(FAIL_TIMEOUT, "fail.timeout")        /* no CONNACK within --connect-timeout */            \
    X(FAIL_CLOSED, "fail.closedBeforeConnack")                                                   \
    X(FAIL_LOCAL, "fail.local")            /* socket/bind/SSL_new failed here (fds, ports) */   \
    X(DROP_CLOSED, "drop.closedByServer")   /* an online session ended without being asked */   \
    X(DROP_ERROR, "drop.socketError")                                                            \
    X(DROP_PING_TIMEOUT, "drop.pingTimeout")                                                     \
    X(DROP_PROTOCOL, "drop.protocolError")                                                       \
    X(DROP_STORM, "drop.storm")             /* closed on purpose by --storm-at */               \
    X(PUBLISHED, "published")                                                                    \
    X(ACKED, "acked")                                                                            \
    X(ACK_UNKNOWN, "error.pubackUnknownPacketId")                                                \
    X(SUB_REFUSED, "error.subscribeRefused")                                                     \
    X(C2D_RECEIVED, "commandsReceived")                                                          \
    X(C2D_DUP, "commandsReceivedDup")                                                            \
    X(PINGS, "pings")                                                                            \
    X(BYTES_OUT, "bytesOut")                                                                     \
    X(BYTES_IN, "bytesIn")                                                                       \
    X(TELE_READ, "telemetryRead")          /* back-end: records read from the log */            \
    X(TELE_FOREIGN, "telemetryReadOther")  /* back-end: records not stamped by this run */      \
    X(TELE_PAGES, "telemetryPages")        /* back-end: reads that brought records */           \
    X(CMD_SENT, "commandsSent")                                                                  \
    X(CMD_ACCEPTED, "commandsAccepted")                                                          \
    X(CMD_REJECTED, "commandsRejected")    /* 429 DeviceQueueFull */                            \
    X(CMD_FAILED, "commandsFailed")        /* any other answer, or none */                      \
    X(HTTP_ERRORS, "error.http")                                                                 \
    X(IMPORTED, "devicesImported")                                                               \
    X(IMPORT_FAILED, "devicesImportFailed")                                                      \
    X(TLS_RESUMED, "tlsResumed")           /* connects whose TLS handshake resumed a ticket */

#define SIM_GAUGES(X)                                                                            \
    X(ONLINE, "online")            /* sessions with CONNACK 0, now */                           \
    X(CONNECTING, "connecting")    /* TCP/TLS/CONNECT under way, now */                         \
    X(STARTED, "started")          /* devices that have begun their first connect */            \
    X(FINISHED, "finished")        /* devices done with --messages */                           \
    X(EVER_ONLINE, "everOnline")   /* devices that have been online at least once */

#define SIM_ENUM(name, json) SIM_C_##name,
typedef enum { SIM_COUNTERS(SIM_ENUM) SIM_C_COUNT } sim_counter_t;
#undef SIM_ENUM
#define SIM_ENUM(name, json) SIM_G_##name,
typedef enum { SIM_GAUGES(SIM_ENUM) SIM_G_COUNT } sim_gauge_t;
#undef SIM_ENUM

typedef enum {
    SIM_H_CONNECT = 0,   /* TCP connect start -> CONNACK 0 */
    SIM_H_PUBACK,        /* PUBLISH written -> PUBACK read (QoS 1) */
    SIM_H_COMMAND,       /* command POSTed (or published) by the back-end -> read by the device */
    SIM_H_TELEMETRY,     /* telemetry PUBLISH written -> read by the back-end from the log */
    SIM_H_COUNT
} sim_hist_id_t;

extern const char *const sim_counter_names[SIM_C_COUNT];
extern const char *const sim_gauge_names[SIM_G_COUNT];
extern const char *const sim_hist_names[SIM_H_COUNT];

typedef struct {
    _Atomic uint64_t c[SIM_C_COUNT];
    _Atomic int64_t g[SIM_G_COUNT];
    /* a storm's reconnects: the last time (µs, CLOCK_MONOTONIC) one of this thread's devices came
     * back online after the storm, and how many did */
    _Atomic int64_t storm_last_back_us;
    _Atomic uint64_t storm_back;
    /* moments (CLOCK_MONOTONIC µs, 0 = not yet) that give the ramp and publishing time exactly */
    _Atomic int64_t first_attempt_us;       /* the thread's first connect */
    _Atomic int64_t last_first_online_us;   /* the last of its devices to come online the first time */
    _Atomic int64_t first_publish_us;
    _Atomic int64_t last_ack_us;            /* the last PUBACK of telemetry */
    sim_hist_t h[SIM_H_COUNT];
} sim_tstats_t;

static inline void sim_count(sim_tstats_t *s, sim_counter_t c, uint64_t n)
{
    atomic_store_explicit(&s->c[c], atomic_load_explicit(&s->c[c], memory_order_relaxed) + n, memory_order_relaxed);
}

static inline void sim_gauge_add(sim_tstats_t *s, sim_gauge_t g, int64_t d)
{
    atomic_store_explicit(&s->g[g], atomic_load_explicit(&s->g[g], memory_order_relaxed) + d, memory_order_relaxed);
}

static inline uint64_t sim_counter(const sim_tstats_t *s, sim_counter_t c)
{
    return atomic_load_explicit(&s->c[c], memory_order_relaxed);
}

static inline int64_t sim_gauge(const sim_tstats_t *s, sim_gauge_t g)
{
    return atomic_load_explicit(&s->g[g], memory_order_relaxed);
}

#endif
