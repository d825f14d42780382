/* sg_net.h — socket address helpers shared by the HTTP listeners. */
#ifndef SG_NET_H
#define SG_NET_H

#include <stdbool.h>
#include <sys/socket.h>
#include "sg_result.h"

/* A numeric IPv4 or IPv6 address and a port as a socket address (for bind). SG_E_INVALID when
 * host is not a numeric address. */
SG_WUR sg_rc sg_sockaddr(const char *host, int port, struct sockaddr_storage *ss, bool *ipv6);

#endif
