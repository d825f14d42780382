/* sg_zmq.h — ZeroMQ helpers shared by the tiers. */
#ifndef SG_ZMQ_H
#define SG_ZMQ_H

#include <czmq.h>

/* Send a multipart message without blocking. ROUTER sockets with ZMQ_ROUTER_MANDATORY fail on
 * the first part (errno EHOSTUNREACH for an unknown peer, EAGAIN at the peer's high-water mark),
 * so a tier never stalls on one slow or vanished peer. On success *msg is destroyed and 0
 * returned; on failure -1 with errno set and *msg left to the caller. */
int sg_zmq_send_nowait(zsock_t *sock, zmsg_t **msg);

#endif
