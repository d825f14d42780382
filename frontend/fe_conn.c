/* fe_conn.c — one device connection's bytes: TLS handshake, reading into a shared scratch
 * buffer and framing MQTT packets from it, writing with a capped per-connection output buffer,
 * pausing and resuming reads, deadlines, and a close that is safe inside any callback (the
 * struct is freed only after the loop's current batch). An idle connection holds no buffers. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "fe_internal.h"
#include "fe_psk.h"
#include "fe_iplimit.h"
#include "fe_tls.h"
#include "fe_ws.h"
#include "sg_log.h"
#include "sg_time.h"

#define MAX_READS_PER_WAKE 16
#define LINGER_SECONDS 2

static void conn_on_io(sg_loop_t *loop, sg_io_t *io, uint32_t events);
static void conn_on_timer(sg_loop_t *loop, sg_timer_t *t);
static void conn_read(fe_conn_t *c);
static void conn_linger(fe_conn_t *c);

uint64_t fe_conn_handle(const fe_conn_t *c) { return ((uint64_t)c->gen << 32) | c->slot; }

fe_conn_t *fe_conn_by_handle(fe_worker_t *w, uint64_t handle)
{
    uint32_t slot = (uint32_t)handle, gen = (uint32_t)(handle >> 32);
    if (slot >= w->set->max_connections || w->gens[slot] != gen)
        return NULL;
    fe_conn_t *c = w->slots[slot];
    return c && c->state != FE_CLOSED ? c : NULL;
}

static void update_mask(fe_conn_t *c)
{
    if (c->state == FE_CLOSED)
        return;
    uint32_t mask = 0;
    if ((!c->paused || c->state == FE_HANDSHAKE || (c->flags & FE_F_LINGER)) && !(c->paused & FE_P_KEY))
        mask |= EPOLLIN;
    if (c->out_len > 0 || (c->flags & FE_F_SSL_WANTS_OUT))
        mask |= EPOLLOUT;
    if (sg_loop_mod(c->w->loop, &c->io, mask) != SG_OK)
        fe_conn_close(c, "epoll-failed");
}

void fe_conn_schedule(fe_conn_t *c)
{
    const fe_settings_t *s = c->w->set;
    uint32_t at;
    if (c->flags & FE_F_LINGER) {
        sg_timer_set(c->w->loop, &c->timer, sg_loop_now(c->w->loop) + LINGER_SECONDS);
        return;
    }
    if (fe_conn_connect_pending(c) && s->connect_timeout > 2) {   /* 1 s ticks: keep >= 1 s for the shard */
        at = c->accepted_at + s->connect_timeout - 1;   /* time left to answer CONNACK 3 */
    } else if (c->state < FE_ONLINE) {
        at = c->accepted_at + s->connect_timeout;
    } else {
        at = c->last_rx + (uint32_t)c->keepalive * 3 / 2 + 1;
        if ((c->paused & FE_P_RATE) && sg_loop_now(c->w->loop) + 1 < at)
            at = sg_loop_now(c->w->loop) + 1;   /* look at the bucket again on the next tick */
        if (c->token_expires && c->token_expires < at)
            at = c->token_expires;
        if (c->pending && c->pending_since + s->ack_timeout < at)
            at = c->pending_since + s->ack_timeout;
        if (c->q0_n && c->q0_at + s->ack_timeout < at)
            at = c->q0_at + s->ack_timeout;   /* unanswered QoS 0 credit (fe_session_timer) */
    }
    sg_timer_set(c->w->loop, &c->timer, at);
}

void fe_conn_accept(fe_worker_t *w, int fd, const struct sockaddr *addr, bool ws)
{
    char ip[INET6_ADDRSTRLEN];
    fe_ipent_t *ipent;
    fe_ip_verdict_t v = fe_iplimit_admit(w->set->iplimit, addr, sg_mono_ms(), &ipent, ip);
    if (v != FE_IP_OK) {
        atomic_fetch_add(&w->refused_ip, 1);
        SG_WARN("frontend", "conn.refused", "ip=%s reason=\"%s\"", ip,
                v == FE_IP_TOO_MANY ? "frontend.max_connections_per_ip reached for this address"
                                    : "frontend.connect_rate_per_ip exceeded by this address");
        close(fd);
        return;
    }
    /* The kernel spreads new connections over the threads' SO_REUSEPORT listeners by a hash, so
     * the threads fill unevenly: the limit counts the whole process (what its file limit is
     * about), and any thread takes connections while the process has room. */
    if (w->n_free == 0 || atomic_fetch_add(w->open, 1) >= w->set->max_connections) {
        if (w->n_free != 0)
            atomic_fetch_sub(w->open, 1);
        SG_WARN("frontend", "conn.refused", "reason=\"connection limit reached\" limit=%u", w->set->max_connections);
        fe_iplimit_release(w->set->iplimit, ipent);
        close(fd);
        return;
    }
    fe_conn_t *c = calloc(1, sizeof *c);
    SSL *ssl = c ? fe_tls_ssl_new(w->tls) : NULL;   /* the certificate current now */
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        SG_ERROR("frontend", "conn.alloc_failed", "fd=%d", fd);
        SSL_free(ssl);
        free(c);
        fe_iplimit_release(w->set->iplimit, ipent);
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    SSL_set_accept_state(ssl);
    SSL_set_app_data(ssl, c);   /* for the PSK callbacks (fe_psk.c) */
    c->w = w;
    c->ssl = ssl;
    c->ipent = ipent;
    c->io.fd = fd;
    c->io.fn = conn_on_io;
    c->timer.fn = conn_on_timer;
    c->slot = w->free_slots[--w->n_free];
    c->gen = w->gens[c->slot];
    w->slots[c->slot] = c;
    c->accepted_at = sg_loop_now(w->loop);
    c->state = FE_HANDSHAKE;
    c->shard = FE_SHARD_UNKNOWN;
    atomic_fetch_add(&w->n_conns, 1);
    atomic_fetch_add(&w->accepted, 1);
    if ((ws && !fe_ws_conn_start(c)) || sg_loop_add(w->loop, &c->io, EPOLLIN) != SG_OK) {
        fe_conn_close(c, ws && !c->ws ? "out-of-memory" : "epoll-failed");
        return;
    }
    fe_conn_schedule(c);
}

static void conn_free(void *arg)
{
    fe_conn_t *c = arg;
    fe_ws_destroy(&c->ws);   /* here, not in fe_conn_close: the close can come from inside its input */
    free(c);
}

void fe_conn_close(fe_conn_t *c, const char *reason)
{
    if (c->state == FE_CLOSED)
        return;
    fe_worker_t *w = c->w;
    if (c->device)
        SG_DEBUG("frontend", "conn.closed", "device=%s reason=%s", c->device, reason);
    else
        SG_DEBUG("frontend", "conn.closed", "reason=%s", reason);
    /* Closed first, so nothing the session does on its way out can close it again. */
    uint8_t was = c->state;
    c->state = FE_CLOSED;
    fe_session_closed(c, was);
    sg_timer_cancel(&c->timer);
    sg_loop_del(w->loop, &c->io);
    if (c->ssl) {
        /* One non-blocking close_notify; a peer that is gone will not answer anyway. */
        if (SSL_is_init_finished(c->ssl) && !(c->flags & FE_F_LINGER))
            SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        c->ssl = NULL;
        ERR_clear_error();
    }
    close(c->io.fd);
    c->io.fd = -1;
    fe_iplimit_release(w->set->iplimit, c->ipent);
    c->ipent = NULL;
    free(c->in);
    free(c->out);
    free(c->device);
    free(c->will);
    free(c->q0);
    free(c->sent);
    fe_session_credit_return(c);
    for (uint16_t i = 0; c->flight && i < c->pending; i++)
        free(c->flight[i].frame);
    free(c->flight);
    c->q0 = NULL;
    c->flight = NULL;
    c->pending = 0;
    c->in = c->out = NULL;
    c->device = NULL;
    c->will = NULL;
    fe_worker_release_slot(w, c);
    atomic_fetch_sub(&w->n_conns, 1);
    atomic_fetch_sub(w->open, 1);
    if (sg_loop_defer(w->loop, conn_free, c) != SG_OK)
        SG_ERROR("frontend", "conn.leak", "reason=\"out of memory deferring free\"");
}

/* Classify an SSL failure: true when the connection should simply wait for more I/O. */
static bool ssl_wait(fe_conn_t *c, int ret, const char *what)
{
    int err = SSL_get_error(c->ssl, ret);
    if (err == SSL_ERROR_WANT_READ) {
        c->flags &= (uint16_t)~FE_F_SSL_WANTS_OUT;
        return true;
    }
    if (err == SSL_ERROR_WANT_WRITE) {
        c->flags |= FE_F_SSL_WANTS_OUT;
        return true;
    }
    if (err == SSL_ERROR_WANT_CLIENT_HELLO_CB)
        return true;   /* a PSK look-up is out: fe_psk.c resumes the handshake */
    if (err == SSL_ERROR_ZERO_RETURN) {
        fe_conn_close(c, "peer-closed");
    } else if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        fe_conn_close(c, errno == 0 ? "peer-closed" : "socket-error");
    } else {
        char buf[200];
        SG_INFO("frontend", "tls.failed", "during=%s reason=\"%s\"", what, fe_tls_error(buf, sizeof buf));
        fe_conn_close(c, "tls-error");
    }
    return false;
}

/* `written` bytes left the output buffer: complete the QoS 0 deliveries they carried. */
static void q0_written(fe_conn_t *c, uint32_t written)
{
    if (!c->q0 || written == 0)
        return;
    uint16_t done[FE_Q0_MAX];
    uint32_t n_done = 0, k = 0;
    for (uint32_t i = 0; i < c->q0->n; i++) {
        if (c->q0->e[i].end <= written) {
            done[n_done++] = c->q0->e[i].pid;
        } else {
            c->q0->e[k] = c->q0->e[i];
            c->q0->e[k++].end -= written;
        }
    }
    c->q0->n = k;
    if (k == 0) {
        free(c->q0);
        c->q0 = NULL;
    }
    /* after the bookkeeping: completing can close the connection (which frees q0) */
    for (uint32_t i = 0; i < n_done && c->state != FE_CLOSED; i++)
        fe_session_written(c, done[i]);
}

void fe_conn_complete_when_written(fe_conn_t *c, uint16_t pid)
{
    if (c->state == FE_CLOSED)
        return;
    if (c->out_len == 0 || (!c->q0 && !(c->q0 = calloc(1, sizeof *c->q0))) || c->q0->n == FE_Q0_MAX) {
        /* written already (or no memory to track it; store.delivery_window is at most FE_Q0_MAX) */
        fe_session_written(c, pid);
        return;
    }
    c->q0->e[c->q0->n].end = c->out_len;
    c->q0->e[c->q0->n++].pid = pid;
}

static void flush_out(fe_conn_t *c)
{
    uint32_t written = 0;
    while (c->out_len > 0) {
        ERR_clear_error();
        int n = SSL_write(c->ssl, c->out, (int)c->out_len);
        if (n <= 0) {
            if (!ssl_wait(c, n, "write"))
                return;
            break;
        }
        memmove(c->out, c->out + n, c->out_len - (uint32_t)n);
        c->out_len -= (uint32_t)n;
        written += (uint32_t)n;
    }
    q0_written(c, written);
    if (c->state == FE_CLOSED)
        return;
    if (c->out_len == 0) {
        /* everything is written: a WANT_WRITE seen on the way is settled (otherwise EPOLLOUT
         * would stay armed and wake the loop for nothing, again and again) */
        c->flags &= (uint16_t)~FE_F_SSL_WANTS_OUT;
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
        if (c->paused & FE_P_FLUSH) {
            conn_linger(c);
            return;
        }
    }
    update_mask(c);
}

/* A refused connection: its answer (CONNACK) is written, so say goodbye (close_notify, FIN) and
 * read until the device closes too. Closing at once with unread input would send a RST, which
 * can destroy the answer before the device reads it. Bounded by LINGER_SECONDS. */
static void conn_linger(fe_conn_t *c)
{
    if (c->flags & FE_F_LINGER)
        return;
    c->flags |= FE_F_LINGER;
    SSL_shutdown(c->ssl);
    ERR_clear_error();
    shutdown(c->io.fd, SHUT_WR);
    fe_conn_schedule(c);
    update_mask(c);
}

static void linger_drain(fe_conn_t *c)
{
    uint8_t *buf = c->w->rx;
    for (int i = 0; i < MAX_READS_PER_WAKE; i++) {
        ssize_t n = recv(c->io.fd, buf, FE_RX_SCRATCH, 0);
        if (n > 0)
            continue;   /* discarded: nothing more is processed on a refused connection */
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        fe_conn_close(c, "refused");
        return;
    }
}

static bool out_append(fe_conn_t *c, const uint8_t *p, size_t n)
{
    if ((size_t)c->out_len + n > c->w->set->max_outbuf)
        return false;
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 512;
        while (cap < c->out_len + n)
            cap *= 2;
        uint8_t *o = realloc(c->out, cap);
        if (!o)
            return false;
        c->out = o;
        c->out_cap = (uint32_t)cap;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += (uint32_t)n;
    return true;
}

bool fe_conn_queue(fe_conn_t *c, const uint8_t *p, size_t n)
{
    if (c->state == FE_CLOSED)
        return false;
    if (!out_append(c, p, n)) {
        SG_INFO("frontend", "conn.slow_consumer", "device=%s unsent=%u", c->device ? c->device : "-", c->out_len);
        fe_conn_close(c, "output-buffer-full");
        return false;
    }
    return true;
}

void fe_conn_flush(fe_conn_t *c)
{
    if (c->state == FE_CLOSED)
        return;
    if (c->out_len > 0)
        flush_out(c);
    else
        update_mask(c);
}

void fe_conn_send(fe_conn_t *c, const uint8_t *p, size_t n)
{
    if (c->state == FE_CLOSED || n == 0)
        return;
    if (c->ws) {
        fe_ws_conn_send(c, p, n);   /* one binary frame */
        return;
    }
    if (c->out_len == 0) {
        ERR_clear_error();
        int k = SSL_write(c->ssl, p, (int)n);
        if (k > 0) {
            p += k;
            n -= (size_t)k;
            if (n == 0) {
                if (c->flags & FE_F_SSL_WANTS_OUT) {
                    c->flags &= (uint16_t)~FE_F_SSL_WANTS_OUT;
                    update_mask(c);
                }
                return;
            }
        } else if (!ssl_wait(c, k, "write")) {
            return;
        }
    }
    if (!out_append(c, p, n)) {
        SG_INFO("frontend", "conn.slow_consumer", "device=%s unsent=%u", c->device ? c->device : "-", c->out_len);
        fe_conn_close(c, "output-buffer-full");
        return;
    }
    update_mask(c);
}

void fe_conn_send_and_close(fe_conn_t *c, const uint8_t *p, size_t n, const char *reason)
{
    fe_conn_send(c, p, n);
    if (c->state == FE_CLOSED)
        return;
    c->paused |= FE_P_FLUSH;
    if (c->out_len == 0) {
        conn_linger(c);
        return;
    }
    update_mask(c);
}

void fe_conn_pause(fe_conn_t *c, uint8_t why)
{
    c->paused |= why;
    update_mask(c);
}

/* Frame and dispatch packets from data (or from c->in when it holds earlier bytes). */
static void conn_feed(fe_conn_t *c, const uint8_t *data, size_t n)
{
    const fe_settings_t *s = c->w->set;
    /* Until the CONNACK the peer is nobody: its packets (the CONNECT with its will) are capped at a
     * few KiB, so an unauthenticated connection cannot make this process hold a large packet. */
    size_t max_packet = c->state < FE_ONLINE ? s->max_connect_packet : s->max_packet;
    bool buffered = c->in_len > 0;
    if (buffered && n > 0) {
        size_t need = (size_t)c->in_len + n;
        if (need > max_packet + FE_RX_SCRATCH) {
            fe_conn_close(c, "input-buffer-full");
            return;
        }
        if (need > c->in_cap) {
            /* grows with what arrives (doubling), never ahead of it: a header announcing a large
             * packet costs nothing until its bytes come */
            size_t cap = (size_t)c->in_cap * 2 > need ? (size_t)c->in_cap * 2 : need;
            if (cap > max_packet + FE_RX_SCRATCH)
                cap = max_packet + FE_RX_SCRATCH;
            uint8_t *p = realloc(c->in, cap);
            if (!p) {
                fe_conn_close(c, "out-of-memory");
                return;
            }
            c->in = p;
            c->in_cap = (uint32_t)cap;
        }
        memcpy(c->in + c->in_len, data, n);
        c->in_len += (uint32_t)n;
    }
    if (buffered) {
        data = c->in;
        n = c->in_len;
    }
    size_t off = 0, need = 0;
    while (off < n && !c->paused) {
        sg_mqtt_packet_t pkt;
        need = 0;
        sg_rc rc = sg_mqtt_frame(data + off, n - off, c->state < FE_ONLINE ? s->max_connect_packet : s->max_packet,
                                 &pkt, &need);
        if (rc == SG_E_AGAIN)
            break;
        if (rc != SG_OK) {
            atomic_fetch_add(&c->w->protocol_errors, 1);
            SG_INFO("frontend", "mqtt.bad_packet", "device=%s reason=%s", c->device ? c->device : "-", sg_strerror(rc));
            fe_conn_close(c, sg_strerror(rc));
            return;
        }
        c->last_rx = sg_loop_now(c->w->loop);
        if (fe_session_packet(c, &pkt) == FE_PKT_RETRY)
            break;
        if (c->state == FE_CLOSED)
            return;   /* c->in is gone */
        off += pkt.total_len;
    }
    size_t left = n - off;
    if (buffered) {
        memmove(c->in, c->in + off, left);
        c->in_len = (uint32_t)left;
    } else if (left > 0) {
        size_t cap = left;   /* what is here; grown as the rest comes (above) */
        c->in = malloc(cap);
        if (!c->in) {
            fe_conn_close(c, "out-of-memory");
            return;
        }
        memcpy(c->in, data + off, left);
        c->in_len = (uint32_t)left;
        c->in_cap = (uint32_t)cap;
    }
    if (c->in_len == 0 && c->in) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

void fe_conn_feed(fe_conn_t *c, const uint8_t *data, size_t n) { conn_feed(c, data, n); }

void fe_conn_resume(fe_conn_t *c, uint8_t why)
{
    /* Not held back for this reason: nothing changes (every acknowledgement resumes the window,
     * and a read here would be a read(2) that finds nothing, once per message). */
    if (c->state == FE_CLOSED || !(c->paused & why))
        return;
    /* Input is not read while the gateway holds a connection back (shard window, full link):
     * the device's PINGREQs wait unread, so that time does not count against its keep-alive. */
    if ((c->paused & why & FE_P_HELD) && c->state == FE_ONLINE)
        c->last_rx = sg_loop_now(c->w->loop);
    c->paused &= (uint8_t)~why;
    if (c->paused)
        return;
    if (c->in_len > 0)
        conn_feed(c, NULL, 0);
    /* OpenSSL may hold decrypted bytes that epoll will not report: read them now. */
    if (c->state != FE_CLOSED && !c->paused)
        conn_read(c);
    if (c->state != FE_CLOSED)
        update_mask(c);
}

static void conn_read(fe_conn_t *c)
{
    for (int i = 0; i < MAX_READS_PER_WAKE && !c->paused && c->state != FE_CLOSED; i++) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, c->w->rx, FE_RX_SCRATCH);
        if (n <= 0) {
            ssl_wait(c, n, "read");
            return;
        }
        if (c->ws)
            fe_ws_conn_input(c, c->w->rx, (size_t)n);   /* frames around the MQTT bytes */
        else
            conn_feed(c, c->w->rx, (size_t)n);
    }
}

static void handshake(fe_conn_t *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->state = FE_WAIT_CONNECT;
        c->flags &= (uint16_t)~FE_F_SSL_WANTS_OUT;
        return;
    }
    ssl_wait(c, r, "handshake");
}

void fe_conn_handshake_resume(fe_conn_t *c)
{
    c->paused &= (uint8_t)~FE_P_KEY;
    if (c->state != FE_HANDSHAKE)
        return;
    handshake(c);
    if (c->state == FE_WAIT_CONNECT)
        conn_read(c);   /* the CONNECT may have come with the client's last flight */
    if (c->state != FE_CLOSED)
        update_mask(c);
}

static void conn_on_io(sg_loop_t *loop, sg_io_t *io, uint32_t events)
{
    fe_conn_t *c = (fe_conn_t *)io;
    (void)loop;
    if (c->flags & FE_F_LINGER) {
        linger_drain(c);
        return;
    }
    if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
        fe_conn_close(c, "socket-error");
        return;
    }
    if (c->state == FE_HANDSHAKE) {
        handshake(c);
        if (c->state == FE_CLOSED)
            return;
        if (c->state == FE_HANDSHAKE) {
            update_mask(c);
            return;
        }
    }
    if ((events & EPOLLOUT) && c->out_len > 0) {
        flush_out(c);
        if (c->state == FE_CLOSED)
            return;
    }
    if (!c->paused)
        conn_read(c);
    if (c->state != FE_CLOSED)
        update_mask(c);
}

static void conn_on_timer(sg_loop_t *loop, sg_timer_t *t)
{
    fe_conn_t *c = (fe_conn_t *)((char *)t - offsetof(fe_conn_t, timer));
    if (c->state == FE_CLOSED)
        return;
    if (c->flags & FE_F_LINGER) {
        fe_conn_close(c, "refused");   /* the device did not close within the linger time */
        return;
    }
    if (fe_session_timer(c, sg_loop_now(loop)))
        fe_conn_schedule(c);
}
