/* sg_zmq.c — see sg_zmq.h. czmq's zmsg_send blocks at the high-water mark; this does not. */
#include "sg_zmq.h"
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <openssl/crypto.h>

int sg_zmq_send_nowait(zsock_t *sock, zmsg_t **msg)
{
    void *raw = zsock_resolve(sock);
    size_t n = zmsg_size(*msg), i = 0;
    for (zframe_t *f = zmsg_first(*msg); f; f = zmsg_next(*msg), i++) {
        int flags = ZMQ_DONTWAIT | (i + 1 < n ? ZMQ_SNDMORE : 0);
        if (zmq_send(raw, zframe_data(f), zframe_size(f), flags) < 0) {
            /* Only the first part can be refused; later parts of an accepted message queue. */
            return -1;
        }
    }
    zmsg_destroy(msg);
    return 0;
}

zmsg_t *sg_zmq_recv_nowait(zsock_t *sock) { return sg_zmq_recv_nowait_from(sock, NULL, 0); }

zmsg_t *sg_zmq_recv_nowait_from(zsock_t *sock, char *user_id, size_t cap)
{
    if (user_id && cap)
        *user_id = 0;
    void *raw = zsock_resolve(sock);
    zmsg_t *m = NULL;
    for (;;) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        /* The parts after the first are there with it (ZeroMQ delivers messages whole). */
        if (zmq_msg_recv(&part, raw, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            zmsg_destroy(&m);
            return NULL;
        }
        if (!m && !(m = zmsg_new())) {
            zmq_msg_close(&part);
            return NULL;
        }
        zframe_t *f = zframe_new(zmq_msg_data(&part), zmq_msg_size(&part));
        /* A ROUTER's routing-id part carries no metadata: take it from a part that does. */
        const char *uid = user_id && cap && !*user_id ? zmq_msg_gets(&part, "User-Id") : NULL;
        if (uid)
            snprintf(user_id, cap, "%s", uid);
        bool more = zmq_msg_more(&part);
        zmq_msg_close(&part);
        if (!f || zmsg_append(m, &f) != 0) {
            zframe_destroy(&f);
            zmsg_destroy(&m);
            return NULL;
        }
        if (!more)
            return m;
    }
}

void *sg_zmq_lookup_id(zhashx_t *h, const void *id, size_t len, size_t max)
{
    char key[256];
    if (len == 0 || len > max || len >= sizeof key)
        return NULL;
    memcpy(key, id, len);
    key[len] = 0;
    return zhashx_lookup(h, key);
}

void sg_actor_end(void)
{
    OPENSSL_thread_stop();
}

static _Atomic int g_link_timeout_ms;

void sg_zmq_set_link_timeout(int seconds) { g_link_timeout_ms = seconds > 0 ? seconds * 1000 : 0; }

void sg_zmq_link_liveness(zsock_t *sock)
{
    int timeout = g_link_timeout_ms;
    if (!sock || timeout <= 0)
        return;
    int ivl = timeout / 6 < 1000 ? 1000 : timeout / 6;
    zsock_set_heartbeat_ivl(sock, ivl);
    zsock_set_heartbeat_timeout(sock, timeout);
    zsock_set_heartbeat_ttl(sock, timeout);   /* the peer drops it too when this side goes silent */
}
