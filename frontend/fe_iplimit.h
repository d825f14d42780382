/* fe_iplimit.h — connections per client address, for the whole frontend process: at most
 * frontend.max_connections_per_ip open at once and new ones at most frontend.connect_rate_per_ip
 * a second (a token bucket of twice that), so one address (a bot, a storm from one NAT gone
 * wrong) cannot take every slot or every handshake. Shared by the event-loop threads under one
 * mutex; an accept costs one hash look-up. */
#ifndef FE_IPLIMIT_H
#define FE_IPLIMIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct fe_iplimit fe_iplimit_t;
typedef struct fe_ipent fe_ipent_t;   /* one address's count, held by each of its connections */

/* max_open 0 = no limit on open connections; rate 0 = no rate limit. NULL on failure. */
fe_iplimit_t *fe_iplimit_new(uint32_t max_open, uint32_t rate);
void fe_iplimit_destroy(fe_iplimit_t **self_p);

typedef enum { FE_IP_OK = 0, FE_IP_TOO_MANY, FE_IP_TOO_FAST } fe_ip_verdict_t;

/* A connection from addr (now_ms: a monotonic clock) is admitted, or refused for the reason
 * returned. Admitted: *ent is its address's entry, to give back with fe_iplimit_release when it
 * closes (NULL when no limit is set or the table is out of memory: nothing to give back). The
 * address's text goes to ip (INET6_ADDRSTRLEN bytes) for log lines. */
fe_ip_verdict_t fe_iplimit_admit(fe_iplimit_t *l, const struct sockaddr *addr, int64_t now_ms, fe_ipent_t **ent,
                                 char *ip);
void fe_iplimit_release(fe_iplimit_t *l, fe_ipent_t *ent);

/* Addresses tracked now (tests, metrics). */
uint32_t fe_iplimit_size(fe_iplimit_t *l);

#endif
