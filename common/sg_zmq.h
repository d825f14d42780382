/* sg_zmq.h — ZeroMQ helpers shared by the tiers. */
#ifndef SG_ZMQ_H
#define SG_ZMQ_H

#include <czmq.h>

/* Send a multipart message without blocking. ROUTER sockets with ZMQ_ROUTER_MANDATORY fail on
 * the first part (errno EHOSTUNREACH for an unknown peer, EAGAIN at the peer's high-water mark),
 * so a tier never stalls on one slow or vanished peer. On success *msg is destroyed and 0
 * returned; on failure -1 with errno set and *msg left to the caller. */
int sg_zmq_send_nowait(zsock_t *sock, zmsg_t **msg);

/* Receive a whole multipart message if one is there, without blocking; NULL when none is (or on
 * error). A loop drains a socket with this after its poller said it is readable: a zpoller_wait
 * per message costs a poll(2) and a getpid(2) for every socket in the poller (libzmq looks at
 * each one's commands), a receive that finds a message costs no system call at all. */
zmsg_t *sg_zmq_recv_nowait(zsock_t *sock);
/* The same, and the connection's "User-Id" (set by the ZAP handler: the sender's role, see
 * sg_curve.h) copied into user_id (cap bytes; "" when there is none). */
zmsg_t *sg_zmq_recv_nowait_from(zsock_t *sock, char *user_id, size_t cap);

/* zhashx_lookup by a routing id that is not NUL-terminated (a frame's bytes); NULL when absent or
 * when len is 0 or over max. */
void *sg_zmq_lookup_id(zhashx_t *h, const void *id, size_t len, size_t max);

/* Links between tiers over TCP or IPC carry ZeroMQ heartbeats (ZMTP PING/PONG), so a peer gone
 * without closing (a lost node, a partition; the kernel would wait about 15 minutes) is found:
 * set once at start (cluster.link_timeout, seconds; 0 turns them off), then applied to each link
 * socket before it binds or connects. Heartbeats go every sixth of the timeout (at least 1 s); a
 * connection silent for the timeout is dropped, and the side that connected connects again.
 * In-process links (sacgate all) have no connection to lose and ignore them. */
void sg_zmq_set_link_timeout(int seconds);
void sg_zmq_link_liveness(zsock_t *sock);

/* The last call of every zactor handler: frees the thread's OpenSSL state (its random generators
 * and error queue) now. CZMQ's actor threads are detached and zactor_destroy returns when the
 * handler has signalled, before the thread has exited; OpenSSL frees that state in a thread-exit
 * destructor, which no longer runs once the process's exit has called OPENSSL_cleanup. A shutdown
 * that won that race leaked the thread's DRBG (LeakSanitizer in CI: 40 bytes direct, 6.6 KB
 * indirect, all from CRYPTO_zalloc). */
void sg_actor_end(void);

#endif
