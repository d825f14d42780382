/* sg_net.c — see sg_net.h. */
#include "sg_net.h"
#include <arpa/inet.h>
#include <netdb.h>
#include <string.h>

sg_rc sg_sockaddr(const char *host, int port, struct sockaddr_storage *ss, bool *ipv6)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICHOST}, *res = NULL;
    SG_ENSURE(port >= 0 && port <= 65535, SG_E_INVALID);
    SG_ENSURE(getaddrinfo(host, NULL, &hints, &res) == 0, SG_E_INVALID);
    memset(ss, 0, sizeof *ss);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *ipv6 = res->ai_family == AF_INET6;
    if (*ipv6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return SG_OK;
}
