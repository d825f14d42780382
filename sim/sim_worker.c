/* sim_worker.c — simulated devices on one event-loop thread, and the plain-MQTT back-end; see
 * sim_worker.h. Memory per idle device is this struct (~120 bytes) plus OpenSSL's SSL object:
 * input and output buffers exist only while bytes wait, the in-flight table only while the
 * device publishes QoS 1, and names, tokens and topics are built in per-thread scratch space
 * when needed. */
#include "sim_worker.h"
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "sg_buf.h"
#include "sg_codec.h"
#include "sg_loop.h"
#include "sg_mqtt.h"
#include "sg_sas.h"

#define TICK_MS 10
#define RX_SCRATCH (64 * 1024)
#define MAX_PACKET (4u << 20)      /* commands are at most 64 KiB plus a topic */
#define MAX_PENDING_OUT (8u << 20) /* a device whose output the server does not read is dropped */
#define DUE_CAP 1024               /* telemetry a device buffers while its window is full */
#define BACKEND_WINDOW 1024

enum { D_IDLE = 0, D_WAIT, D_TCP, D_TLS, D_CONNACK, D_ONLINE, D_DEAD };

#define F_PING_OUT 0x01
#define F_EVER_ONLINE 0x02
#define F_FINISHED 0x04
#define F_SSL_WANTS_OUT 0x08
#define F_STORM 0x10
#define F_QUEUED 0x20          /* in the connect wait queue */
#define F_STARTED 0x40

typedef struct {
    uint16_t pid;
    int64_t t_us;
} flight_t;

typedef struct dev {
    sg_io_t io;
    sg_timer_t timer;
    SSL *ssl;
    SSL_SESSION *sess;         /* --tls-resume: the newest ticket the server sent, or NULL */
    uint8_t *in;
    uint8_t *out;
    flight_t *flight;          /* --window entries while publishing QoS 1 */
    int64_t conn_start_us;
    uint32_t g;                /* index in the slice */
    uint32_t in_len, out_len;
    uint32_t last_tx_ms;       /* thread ms of the last packet sent (keep-alive) */
    uint32_t ping_ms;          /* when the outstanding PINGREQ went */
    uint32_t next_pub_ms;
    uint32_t sent, acked;
    uint16_t next_pid, inflight, due;
    uint8_t state, flags, port_i, attempts;
} sdev_t;

typedef struct thr {
    const sim_thread_cfg_t *cfg;
    const sim_opts_t *o;
    sim_tstats_t *st;
    sg_loop_t *loop;
    sdev_t *devs;
    uint32_t n;
    uint32_t next_start;       /* ramp cursor over devs */
    uint32_t *waitq;           /* devices waiting for a connect slot (ring of indexes) */
    uint32_t wq_head, wq_len;
    int connecting;
    int64_t t0_us;             /* this thread's clock origin (the run's) */
    uint8_t *rx;
    sg_wbuf_t tx;              /* packets for the device being handled, sent in one write */
    uint8_t *payload;
    char id[192];
    char topic[1024];
    char user[1024];
    char pass[SG_SAS_MAX_TOKEN + 1];
    int storm_seen;
    uint64_t rng;
    bool ramp_started;
    uint32_t ramp_t0_ms;
    /* back-end role (plain mode) */
    bool backend;
    double cmd_sent;           /* commands sent so far (fractional pacing) */
    int64_t cmd_t0_us;         /* when commands began */
    uint64_t cmd_seq;
} thr_t;

static __thread thr_t *T;   /* the thread's own state, for the loop callbacks */

int64_t sim_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t sim_real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint32_t now_ms(void) { return (uint32_t)((sim_mono_us() - T->t0_us) / 1000); }

static uint64_t rnd(void) { return sim_rand(&T->rng); }

static double rnd01(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

/* ---------- stamps ---------- */

bool sim_stamp_payload(uint8_t *out, size_t size, const char *prefix, int64_t t_us, uint64_t device, uint64_t seq)
{
    char hdr[256];
    int k = snprintf(hdr, sizeof hdr, "{\"sim\":\"%s\",\"t\":%" PRId64 ",\"d\":%" PRIu64 ",\"s\":%" PRIu64 ",\"p\":\"",
                     prefix, t_us, device, seq);
    if (k < 0 || (size_t)k >= sizeof hdr || size < (size_t)k + 2) {
        memset(out, 'x', size);
        return false;
    }
    memcpy(out, hdr, (size_t)k);
    memset(out + k, 'x', size - (size_t)k - 2);
    out[size - 2] = '"';
    out[size - 1] = '}';
    return true;
}

int64_t sim_stamp_time(const uint8_t *p, size_t len, const char *prefix)
{
    static const char a[] = "{\"sim\":\"", b[] = "\",\"t\":";
    size_t pl = strlen(prefix), need = sizeof a - 1 + pl + sizeof b - 1;
    if (len < need + 1 || memcmp(p, a, sizeof a - 1) || memcmp(p + sizeof a - 1, prefix, pl) ||
        memcmp(p + sizeof a - 1 + pl, b, sizeof b - 1))
        return -1;
    int64_t t = 0;
    size_t i = need, digits = 0;
    for (; i < len && p[i] >= '0' && p[i] <= '9' && digits < 18; i++, digits++)
        t = t * 10 + (p[i] - '0');
    return digits > 0 && i < len && p[i] == ',' ? t : -1;
}

/* ---------- names and credentials ---------- */

/* The device's id into T->id. */
static const char *dev_id(const sdev_t *d)
{
    const sim_opts_t *o = T->o;
    if (T->backend) {
        snprintf(T->id, sizeof T->id, "%s-backend-%u", o->prefix, o->slice_index);
        return T->id;
    }
    if (T->cfg->creds) {
        snprintf(T->id, sizeof T->id, "%s", sim_creds_id(T->cfg->creds, o->slice_first + d->g));
        return T->id;
    }
    if (sim_device_name(T->id, sizeof T->id, o->prefix, o->slice_first + d->g) != SG_OK)
        snprintf(T->id, sizeof T->id, "%s", "invalid-id");
    return T->id;
}

/* Expand {id} in tmpl into out. */
static size_t expand(char *out, size_t cap, const char *tmpl, const char *id)
{
    size_t n = 0, idl = strlen(id);
    for (const char *p = tmpl; *p && n + 1 < cap;) {
        if (!strncmp(p, "{id}", 4)) {
            size_t k = idl < cap - 1 - n ? idl : cap - 1 - n;
            memcpy(out + n, id, k);
            n += k;
            p += 4;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = 0;
    return n;
}

static void device_key(const sdev_t *d, const char *id, uint8_t *key, size_t *len)
{
    if (T->cfg->creds) {
        const uint8_t *k = sim_creds_key(T->cfg->creds, T->o->slice_first + d->g, len);
        if (k)
            memcpy(key, k, *len);
        return;
    }
    sim_derive_key(T->o->key_seed, id, key);
    *len = SIM_KEY_LEN;
}

static unsigned int psk_cb(SSL *ssl, const char *hint, char *identity, unsigned int max_identity, unsigned char *psk,
                           unsigned int max_psk)
{
    (void)hint;
    const sdev_t *d = SSL_get_app_data(ssl);
    const sim_opts_t *o = T->o;
    const char *id = dev_id(d);
    char ident[512];
    expand(ident, sizeof ident, o->psk_identity, id);
    if (strlen(ident) + 1 > max_identity)
        return 0;
    memcpy(identity, ident, strlen(ident) + 1);
    if (o->psk_derive) {
        uint8_t key[SIM_KEY_LEN];
        sim_derive_key(o->key_seed, id, key);
        if (max_psk < SIM_KEY_LEN)
            return 0;
        memcpy(psk, key, SIM_KEY_LEN);
        return SIM_KEY_LEN;
    }
    size_t n;
    if (sg_hex_decode(o->psk_hex, strlen(o->psk_hex), psk, max_psk, &n) != SG_OK)
        return 0;
    return (unsigned int)n;
}

/* Certificates this process has verified in full (chain to --cafile, the server name): a
 * server presenting one of them again is accepted by comparing it (X509_cmp: the DER's cached
 * digest), without building and checking the chain again. Every connection still proves its
 * key (TLS 1.3 CertificateVerify, or the TLS 1.2 key exchange signature), so this is
 * certificate pinning after one full verification; it saves the simulator a chain check per
 * connect, which would otherwise make it costlier per connect than the server it measures. */
#define PINNED_MAX 16
static X509 *g_pinned[PINNED_MAX];
static _Atomic int g_n_pinned;
static pthread_mutex_t g_pin_lock = PTHREAD_MUTEX_INITIALIZER;

static int verify_pinned(X509_STORE_CTX *ctx, void *arg)
{
    (void)arg;
    X509 *leaf = X509_STORE_CTX_get0_cert(ctx);
    int n = atomic_load(&g_n_pinned);
    for (int i = 0; leaf && i < n; i++)
        if (X509_cmp(g_pinned[i], leaf) == 0) {
            /* The same certificate (X509_cmp compares the DER): let this connection's session
             * hold the process's one decoded copy instead of its own. A decoded certificate
             * costs ~5.5 KB with OpenSSL 3.0, over a quarter of an idle client session. The
             * untrusted stack is the session's peer chain, from which the client takes the
             * peer certificate after verification; if a later OpenSSL no longer does, each
             * session simply keeps its own copy again. */
            STACK_OF(X509) *chain = X509_STORE_CTX_get0_untrusted(ctx);
            if (chain && sk_X509_num(chain) > 0 && sk_X509_value(chain, 0) == leaf && X509_up_ref(g_pinned[i]) == 1) {
                sk_X509_set(chain, 0, g_pinned[i]);
                X509_STORE_CTX_set_cert(ctx, g_pinned[i]);
                X509_free(leaf);
            }
            return 1;
        }
    int ok = X509_verify_cert(ctx);
    if (ok == 1 && leaf) {
        pthread_mutex_lock(&g_pin_lock);
        int k = atomic_load(&g_n_pinned);
        bool known = false;
        for (int i = 0; i < k; i++)
            known |= X509_cmp(g_pinned[i], leaf) == 0;
        if (!known && k < PINNED_MAX && X509_up_ref(leaf) == 1) {
            g_pinned[k] = leaf;
            atomic_store(&g_n_pinned, k + 1);   /* published after the slot is written */
        }
        pthread_mutex_unlock(&g_pin_lock);
    }
    return ok;
}

/* --tls-resume: OpenSSL hands over each session (with its ticket) as it arrives; the device
 * keeps the newest one (its reference) to offer on its next connect. */
static int keep_session(SSL *ssl, SSL_SESSION *sess)
{
    sdev_t *d = SSL_get_app_data(ssl);
    if (!d)
        return 0;
    SSL_SESSION_free(d->sess);
    d->sess = sess;
    return 1;
}

SSL_CTX *sim_tls_ctx(const sim_opts_t *o, char *err, size_t err_len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, err_len, "SSL_CTX_new failed");
        return NULL;
    }
    /* Idle sessions hold no buffers; nothing is cached or resumed unless --tls-resume (each
     * connect is a full handshake, as a fleet of devices after a gateway restart does). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (o->tls_resume) {
        /* per device, not in OpenSSL's cache: a device resumes only its own session */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, keep_session);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    SSL_CTX_set_min_proto_version(ctx, !strcmp(o->tls_version, "1.3") ? TLS1_3_VERSION : TLS1_2_VERSION);
    if (!strcmp(o->tls_version, "1.2"))
        SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    if (o->insecure || o->psk_hex[0] || o->psk_derive) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        SSL_CTX_set_cert_verify_callback(ctx, verify_pinned, NULL);
        if (SSL_CTX_load_verify_locations(ctx, o->cafile, NULL) != 1) {
            snprintf(err, err_len, "--cafile %s: cannot load it", o->cafile);
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    if (o->cert[0] && (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1 ||
                       SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1)) {
        snprintf(err, err_len, "--cert %s / --key %s: cannot load them", o->cert, o->key);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (o->psk_hex[0] || o->psk_derive) {
        /* PSK only: TLS 1.2 PSK suites, and TLS 1.3 with the SHA-256 suites a SHA-256 PSK fits */
        SSL_CTX_set_psk_client_callback(ctx, psk_cb);
        if (SSL_CTX_set_cipher_list(ctx, "PSK-AES128-GCM-SHA256:ECDHE-PSK-AES128-CBC-SHA256:PSK-AES128-CBC-SHA256") != 1 ||
            SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256") != 1) {
            snprintf(err, err_len, "PSK cipher suites unavailable");
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    ERR_clear_error();
    return ctx;
}

/* ---------- device lifecycle ---------- */

static void dev_on_io(sg_loop_t *loop, sg_io_t *io, uint32_t events);
static void dev_on_timer(sg_loop_t *loop, sg_timer_t *t);

/* Session gauges and connect counters describe the simulated devices, not the back-end's own
 * connection. */
static void dev_gauge(sim_gauge_t g, int64_t d)
{
    if (!T->backend)
        sim_gauge_add(T->st, g, d);
}

static void dev_count(sim_counter_t c)
{
    if (!T->backend)
        sim_count(T->st, c, 1);
}

/* Keep the earliest (first) or latest (last) moment in slot. */
static void moment(_Atomic int64_t *slot, int64_t t, bool first)
{
    int64_t v = atomic_load_explicit(slot, memory_order_relaxed);
    if (v == 0 || (first ? t < v : t > v))
        atomic_store_explicit(slot, t, memory_order_relaxed);
}
static void dev_schedule(sdev_t *d);
static void connect_start(sdev_t *d);

static sdev_t *dev_of_timer(sg_timer_t *t) { return (sdev_t *)((char *)t - offsetof(sdev_t, timer)); }

static void timer_at_ms(sdev_t *d, uint32_t ms)
{
    uint32_t tick = (ms + TICK_MS - 1) / TICK_MS;
    sg_timer_set(T->loop, &d->timer, tick);
}

static void set_mask(sdev_t *d, uint32_t mask)
{
    if (d->io.fd >= 0 && sg_loop_mod(T->loop, &d->io, mask) != SG_OK)
        sim_count(T->st, SIM_C_FAIL_LOCAL, 1);
}

static void want_connect(sdev_t *d)
{
    if (T->connecting < T->o->max_connecting && !(d->flags & F_QUEUED)) {
        connect_start(d);
        return;
    }
    if (d->flags & F_QUEUED)
        return;
    d->flags |= F_QUEUED;
    T->waitq[(T->wq_head + T->wq_len++) % T->n] = (uint32_t)(d - T->devs);
}

/* Free everything of the connection; the device keeps its identity and counters. */
static void dev_release(sdev_t *d)
{
    if (d->ssl) {
        /* OpenSSL marks the session of a connection freed without a close_notify as not
         * resumable; a device that lost its connection still holds a good ticket */
        if (T->o->tls_resume)
            SSL_set_shutdown(d->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        SSL_free(d->ssl);
        d->ssl = NULL;
    }
    if (d->io.fd >= 0) {
        sg_loop_del(T->loop, &d->io);
        close(d->io.fd);
        d->io.fd = -1;
    }
    free(d->in);
    free(d->out);
    free(d->flight);
    d->in = d->out = NULL;
    d->flight = NULL;
    d->in_len = d->out_len = 0;
    d->inflight = 0;
    d->due = 0;
    d->flags &= (uint8_t)~(F_PING_OUT | F_SSL_WANTS_OUT);
    ERR_clear_error();
}

/* The connection is gone (failure, drop, storm or the end of the run). counter names why;
 * SIM_C_COUNT = on purpose, nothing counted. retry_ms < 0: no reconnect. */
static void dev_close(sdev_t *d, sim_counter_t counter, int64_t retry_ms)
{
    if (d->state == D_ONLINE)
        dev_gauge(SIM_G_ONLINE, -1);
    else if (d->state == D_TCP || d->state == D_TLS || d->state == D_CONNACK) {
        dev_gauge(SIM_G_CONNECTING, -1);
        T->connecting--;
    }
    if (counter != SIM_C_COUNT && !T->backend)
        sim_count(T->st, counter, 1);
    else if (counter != SIM_C_COUNT)
        fprintf(stderr, "sacgate-sim: back-end connection: %s\n", sim_counter_names[counter]);
    dev_release(d);
    /* a storm reconnects whatever --reconnect says: that is what a storm is */
    if (retry_ms < 0 || (!T->o->reconnect && !(d->flags & F_STORM))) {
        d->state = D_DEAD;
        sg_timer_cancel(&d->timer);
        return;
    }
    d->state = D_WAIT;
    if (retry_ms == 0) {
        sg_timer_cancel(&d->timer);
        want_connect(d);
    } else {
        timer_at_ms(d, now_ms() + (uint32_t)retry_ms);
    }
}

/* Exponential backoff with +-50% jitter. */
static int64_t backoff_ms(sdev_t *d)
{
    const sim_opts_t *o = T->o;
    double b = o->backoff_min_ms;
    for (int i = 0; i < d->attempts && b < o->backoff_max_ms; i++)
        b *= 2;
    if (b > o->backoff_max_ms)
        b = o->backoff_max_ms;
    if (d->attempts < 30)
        d->attempts++;
    return (int64_t)(b * (0.5 + rnd01()));
}

/* A connect that failed. Unless the device's own credentials were refused, the next attempt
 * goes to another port, chosen at random as a load balancer would: a frontend that is gone, full
 * or without a shard behind it should not hold its devices, and the devices of a frontend that
 * died must not all land on the same next one. */
static void dev_fail(sdev_t *d, sim_counter_t why)
{
    int n = T->o->n_ports;
    if (n > 1 && why != SIM_C_FAIL_CONNACK_CREDENTIALS && why != SIM_C_FAIL_CONNACK_NOT_AUTHORIZED &&
        why != SIM_C_FAIL_CONNACK_ID && why != SIM_C_FAIL_CONNACK_PROTOCOL && why != SIM_C_FAIL_LOCAL)
        d->port_i = (uint8_t)((d->port_i + 1 + rnd() % (uint64_t)(n - 1)) % (uint64_t)n);
    dev_close(d, why, backoff_ms(d));
}

/* A connection that was online ended without being asked to. */
static void dev_drop(sdev_t *d, sim_counter_t why)
{
    d->attempts = 0;
    dev_close(d, why, backoff_ms(d));
}

/* Write bytes (TLS or plain); what the socket does not take waits in d->out. */
static bool dev_write(sdev_t *d, const uint8_t *p, size_t n)
{
    if (n == 0)
        return true;
    sim_count(T->st, SIM_C_BYTES_OUT, n);
    d->last_tx_ms = now_ms();
    if (d->out_len == 0) {
        while (n > 0) {
            int k;
            if (d->ssl) {
                ERR_clear_error();
                k = SSL_write(d->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
                if (k <= 0) {
                    int e = SSL_get_error(d->ssl, k);
                    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                        if (e == SSL_ERROR_WANT_WRITE)
                            d->flags |= F_SSL_WANTS_OUT;
                        break;
                    }
                    return false;
                }
            } else {
                ssize_t s = send(d->io.fd, p, n, MSG_NOSIGNAL);
                if (s < 0) {
                    if (errno == EAGAIN || errno == EINTR)
                        break;
                    return false;
                }
                k = (int)s;
            }
            p += k;
            n -= (size_t)k;
        }
        if (n == 0)
            return true;
    }
    if (d->out_len + n > MAX_PENDING_OUT)
        return false;
    uint8_t *o = realloc(d->out, d->out_len + n);
    if (!o)
        return false;
    memcpy(o + d->out_len, p, n);
    d->out = o;
    d->out_len += (uint32_t)n;
    set_mask(d, EPOLLIN | EPOLLOUT);
    return true;
}

static bool dev_flush_out(sdev_t *d)
{
    uint32_t done = 0;
    while (done < d->out_len) {
        int k;
        if (d->ssl) {
            ERR_clear_error();
            k = SSL_write(d->ssl, d->out + done, (int)(d->out_len - done));
            if (k <= 0) {
                int e = SSL_get_error(d->ssl, k);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                    break;
                return false;
            }
        } else {
            ssize_t s = send(d->io.fd, d->out + done, d->out_len - done, MSG_NOSIGNAL);
            if (s < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    break;
                return false;
            }
            k = (int)s;
        }
        done += (uint32_t)k;
    }
    memmove(d->out, d->out + done, d->out_len - done);
    d->out_len -= done;
    if (d->out_len == 0) {
        free(d->out);
        d->out = NULL;
        d->flags &= (uint8_t)~F_SSL_WANTS_OUT;
        set_mask(d, EPOLLIN);
    }
    return true;
}

/* Send what the handler encoded into T->tx; a write failure drops the connection. */
static bool tx_flush(sdev_t *d)
{
    bool ok = dev_write(d, T->tx.data, T->tx.len);
    sg_wbuf_reset(&T->tx);
    if (!ok) {
        if (d->state == D_ONLINE)
            dev_drop(d, SIM_C_DROP_ERROR);
        else
            dev_fail(d, SIM_C_FAIL_CLOSED);
    }
    return ok;
}

static void send_connect(sdev_t *d)
{
    const sim_opts_t *o = T->o;
    const char *id = dev_id(d);
    sg_mqtt_connect_t m = {.protocol_name = {(const uint8_t *)"MQTT", 4}, .protocol_level = 4,
                           .clean_session = o->clean_session, .keep_alive = (uint16_t)o->keepalive,
                           .client_id = {(const uint8_t *)id, strlen(id)}};
    if (o->mode == SIM_MODE_IOTHUB && !T->backend) {
        snprintf(T->user, sizeof T->user, "%s/%s/?api-version=2021-04-12", o->sas_host, id);
        m.has_username = true;
        m.username = (sg_mqtt_str_t){(const uint8_t *)T->user, strlen(T->user)};
        uint8_t key[64];
        size_t key_len = 0;
        device_key(d, id, key, &key_len);
        if (key_len > 0 && !o->psk_hex[0] && !o->psk_derive && !o->cert[0] &&
            sg_sas_make(T->pass, sizeof T->pass, o->sas_host, id, key, key_len,
                        sim_real_us() / 1000000 + o->token_ttl) == SG_OK) {
            m.has_password = true;
            m.password = (sg_mqtt_str_t){(const uint8_t *)T->pass, strlen(T->pass)};
        }
    } else {
        if (o->username[0]) {
            m.has_username = true;
            m.username = (sg_mqtt_str_t){(const uint8_t *)T->user, expand(T->user, sizeof T->user, o->username, id)};
        }
        if (o->password[0] && o->username[0]) {
            m.has_password = true;
            m.password = (sg_mqtt_str_t){(const uint8_t *)T->pass, expand(T->pass, sizeof T->pass, o->password, id)};
        }
    }
    sg_wbuf_reset(&T->tx);
    if (sg_mqtt_encode_connect(&T->tx, &m) != SG_OK) {
        dev_close(d, SIM_C_FAIL_LOCAL, -1);
        return;
    }
    d->state = D_CONNACK;
    tx_flush(d);
}

static void tls_step(sdev_t *d)
{
    ERR_clear_error();
    int r = SSL_do_handshake(d->ssl);
    if (r == 1) {
        set_mask(d, EPOLLIN);
        send_connect(d);
        return;
    }
    int e = SSL_get_error(d->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        set_mask(d, EPOLLIN);
    else if (e == SSL_ERROR_WANT_WRITE)
        set_mask(d, EPOLLOUT);
    else {
        /* the server closing during the handshake (a full frontend) is a close, not a TLS
         * failure: OpenSSL 3 reports that end of file as an SSL error of its own */
        unsigned long ssl_err = ERR_peek_error();
        bool closed = (e == SSL_ERROR_SYSCALL && ssl_err == 0) ||
                      (e == SSL_ERROR_SSL && ERR_GET_REASON(ssl_err) == SSL_R_UNEXPECTED_EOF_WHILE_READING);
        dev_fail(d, closed ? SIM_C_FAIL_CLOSED : SIM_C_FAIL_TLS);
    }
}

static void source_addr(const sdev_t *d, struct sockaddr_in *src)
{
    const sim_opts_t *o = T->o;
    uint64_t k = d->g % o->n_source_addrs;
    for (int i = 0; i < o->n_sources; i++) {
        if (k < o->sources[i].count) {
            src->sin_family = AF_INET;
            src->sin_port = 0;
            src->sin_addr.s_addr = htonl(o->sources[i].base + (uint32_t)k);
            return;
        }
        k -= o->sources[i].count;
    }
}

static void connect_start(sdev_t *d)
{
    const sim_opts_t *o = T->o;
    d->flags &= (uint8_t)~F_QUEUED;
    if (!(d->flags & F_STARTED)) {
        d->flags |= F_STARTED;
        dev_gauge(SIM_G_STARTED, 1);
    }
    dev_count(SIM_C_CONNECT_ATTEMPTS);
    d->conn_start_us = sim_mono_us();
    if (!T->backend)
        moment(&T->st->first_attempt_us, d->conn_start_us, true);
    d->state = D_TCP;
    T->connecting++;
    dev_gauge(SIM_G_CONNECTING, 1);
    timer_at_ms(d, now_ms() + (uint32_t)o->connect_timeout * 1000);
    int fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        dev_fail(d, SIM_C_FAIL_LOCAL);
        return;
    }
    d->io.fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (o->n_sources) {
        struct sockaddr_in src;
        source_addr(d, &src);
        /* the port is chosen at connect(), per destination: each (source, port) pair has the
         * whole ephemeral range */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
            dev_fail(d, SIM_C_FAIL_LOCAL);
            return;
        }
    }
    struct sockaddr_storage dst = o->addr;
    uint16_t port = (uint16_t)o->ports[d->port_i % o->n_ports];
    if (dst.ss_family == AF_INET)
        ((struct sockaddr_in *)&dst)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)&dst)->sin6_port = htons(port);
    if (connect(fd, (struct sockaddr *)&dst, o->addr_len) != 0 && errno != EINPROGRESS) {
        int e = errno;
        dev_fail(d, e == ECONNREFUSED ? SIM_C_FAIL_TCP_REFUSED
                    : e == EADDRNOTAVAIL || e == EMFILE || e == ENFILE || e == ENOBUFS ? SIM_C_FAIL_LOCAL
                                                                                      : SIM_C_FAIL_TCP_ERROR);
        return;
    }
    d->io.fn = dev_on_io;
    if (sg_loop_add(T->loop, &d->io, EPOLLOUT) != SG_OK)
        dev_fail(d, SIM_C_FAIL_LOCAL);
}

static void tcp_connected(sdev_t *d)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(d->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err) {
        dev_fail(d, err == ECONNREFUSED ? SIM_C_FAIL_TCP_REFUSED : SIM_C_FAIL_TCP_ERROR);
        return;
    }
    if (!T->cfg->tls) {
        set_mask(d, EPOLLIN);
        send_connect(d);
        return;
    }
    d->ssl = SSL_new(T->cfg->tls);
    if (!d->ssl || SSL_set_fd(d->ssl, d->io.fd) != 1) {
        dev_fail(d, SIM_C_FAIL_LOCAL);
        return;
    }
    SSL_set_app_data(d->ssl, d);
    SSL_set_connect_state(d->ssl);
    if (d->sess && SSL_set_session(d->ssl, d->sess) != 1)
        ERR_clear_error();   /* a full handshake then */
    if (T->o->server_name[0]) {
        SSL_set_tlsext_host_name(d->ssl, T->o->server_name);
        if (!T->o->insecure)
            SSL_set1_host(d->ssl, T->o->server_name);
    }
    d->state = D_TLS;
    tls_step(d);
}

/* ---------- publishing ---------- */

static bool window_has_room(const sdev_t *d)
{
    int w = T->backend ? BACKEND_WINDOW : T->o->window;
    return d->inflight < w;
}

static bool flight_add(sdev_t *d, uint16_t pid)
{
    int w = T->backend ? BACKEND_WINDOW : T->o->window;
    if (!d->flight && !(d->flight = calloc((size_t)w, sizeof *d->flight)))
        return false;
    for (int i = 0; i < w; i++)
        if (d->flight[i].pid == 0) {
            d->flight[i] = (flight_t){pid, sim_mono_us()};
            d->inflight++;
            return true;
        }
    return false;
}

/* The send time of pid, removing it; -1 when unknown. */
static int64_t flight_take(sdev_t *d, uint16_t pid)
{
    int w = T->backend ? BACKEND_WINDOW : T->o->window;
    for (int i = 0; d->flight && i < w; i++)
        if (d->flight[i].pid == pid) {
            int64_t t = d->flight[i].t_us;
            d->flight[i].pid = 0;
            d->inflight--;
            return t;
        }
    return -1;
}

static uint16_t next_pid(sdev_t *d)
{
    if (++d->next_pid == 0)
        d->next_pid = 1;
    return d->next_pid;
}

/* Encode one telemetry PUBLISH into T->tx. */
static bool publish_one(sdev_t *d)
{
    const sim_opts_t *o = T->o;
    const char *id = dev_id(d);
    size_t tl = expand(T->topic, sizeof T->topic, o->topic, id);
    uint16_t pid = 0;
    if (o->qos == 1) {
        pid = next_pid(d);
        if (!flight_add(d, pid))
            return false;
    }
    sim_stamp_payload(T->payload, (size_t)o->size, o->prefix, sim_real_us(), o->slice_first + d->g, d->sent);
    sg_mqtt_publish_t p = {.qos = (uint8_t)o->qos, .topic = {(const uint8_t *)T->topic, tl}, .packet_id = pid,
                           .payload = {T->payload, (size_t)o->size}};
    if (sg_mqtt_encode_publish(&T->tx, &p) != SG_OK) {
        if (pid)
            flight_take(d, pid);
        return false;
    }
    if (d->sent++ == 0)
        moment(&T->st->first_publish_us, sim_mono_us(), true);
    sim_count(T->st, SIM_C_PUBLISHED, 1);
    return true;
}

static bool throughput_mode(void) { return T->o->publish_rate <= 0 && T->o->messages > 0; }

static bool done_publishing(const sdev_t *d) { return T->o->messages && d->sent >= T->o->messages; }

static void check_finished(sdev_t *d)
{
    if (!(d->flags & F_FINISHED) && done_publishing(d) && d->inflight == 0) {
        d->flags |= F_FINISHED;
        sim_gauge_add(T->st, SIM_G_FINISHED, 1);
    }
}

/* Publish what is due (rate mode) or what the window allows (throughput mode). */
static void publish_due(sdev_t *d)
{
    const sim_opts_t *o = T->o;
    if (T->backend || atomic_load(&T->cfg->ctl->phase) != SIM_PHASE_RUN)
        return;
    if (throughput_mode()) {
        while (!done_publishing(d) && (o->qos == 0 || window_has_room(d)) && T->tx.len < 256 * 1024)
            if (!publish_one(d))
                break;
    } else {
        while (d->due > 0 && !done_publishing(d) && (o->qos == 0 || window_has_room(d)) && T->tx.len < 256 * 1024) {
            if (!publish_one(d))
                break;
            d->due--;
        }
    }
    check_finished(d);
}

/* ---------- incoming packets ---------- */

static void on_connack(sdev_t *d, const sg_mqtt_packet_t *pkt)
{
    sg_mqtt_connack_t a;
    if (d->state != D_CONNACK || sg_mqtt_decode_connack(pkt, &a) != SG_OK) {
        dev_fail(d, SIM_C_FAIL_CLOSED);
        return;
    }
    if (a.return_code != 0) {
        static const sim_counter_t codes[] = {SIM_C_FAIL_CONNACK_OTHER, SIM_C_FAIL_CONNACK_PROTOCOL,
                                              SIM_C_FAIL_CONNACK_ID, SIM_C_FAIL_CONNACK_UNAVAILABLE,
                                              SIM_C_FAIL_CONNACK_CREDENTIALS, SIM_C_FAIL_CONNACK_NOT_AUTHORIZED};
        dev_fail(d, a.return_code <= 5 ? codes[a.return_code] : SIM_C_FAIL_CONNACK_OTHER);
        return;
    }
    int64_t now = sim_mono_us();
    if (!T->backend)
        sim_hist_record(&T->st->h[SIM_H_CONNECT], (uint64_t)(now - d->conn_start_us));
    dev_count(SIM_C_CONNECTS);
    if (d->ssl && SSL_session_reused(d->ssl))
        dev_count(SIM_C_TLS_RESUMED);
    if (d->flags & F_EVER_ONLINE)
        dev_count(SIM_C_RECONNECTS);
    else {
        d->flags |= F_EVER_ONLINE;
        dev_gauge(SIM_G_EVER_ONLINE, 1);
        if (!T->backend)
            moment(&T->st->last_first_online_us, now, false);
    }
    if (d->flags & F_STORM) {
        d->flags &= (uint8_t)~F_STORM;
        atomic_store_explicit(&T->st->storm_back, atomic_load_explicit(&T->st->storm_back, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        atomic_store_explicit(&T->st->storm_last_back_us, now, memory_order_relaxed);
    }
    T->connecting--;
    dev_gauge(SIM_G_CONNECTING, -1);
    dev_gauge(SIM_G_ONLINE, 1);
    d->state = D_ONLINE;
    d->attempts = 0;
    const sim_opts_t *o = T->o;
    uint32_t now_m = now_ms();
    if (T->backend || o->subscribe) {
        const char *filter_tmpl = T->backend ? o->backend_topic : o->command_topic;
        const char *id = dev_id(d);
        size_t fl = expand(T->topic, sizeof T->topic, filter_tmpl, id);
        sg_mqtt_str_t f = {(const uint8_t *)T->topic, fl};
        uint8_t qos = T->backend ? 1 : (uint8_t)o->sub_qos;
        if (sg_mqtt_encode_subscribe(&T->tx, next_pid(d), &f, &qos, 1) != SG_OK) {
            sg_wbuf_reset(&T->tx);
            dev_drop(d, SIM_C_DROP_PROTOCOL);
            return;
        }
    }
    if (!T->backend && o->publish_rate > 0) {
        /* first message at a random point of the interval, so devices do not publish in step */
        double interval = 1000.0 / o->publish_rate;
        d->next_pub_ms = now_m + (uint32_t)(interval * rnd01());
    }
    publish_due(d);
    if (tx_flush(d))
        dev_schedule(d);
}

static void on_puback(sdev_t *d, const sg_mqtt_packet_t *pkt)
{
    uint16_t pid;
    if (sg_mqtt_decode_ack(pkt, &pid) != SG_OK) {
        dev_drop(d, SIM_C_DROP_PROTOCOL);
        return;
    }
    int64_t t = flight_take(d, pid);
    if (t < 0) {
        sim_count(T->st, SIM_C_ACK_UNKNOWN, 1);
        return;
    }
    if (T->backend) {
        sim_count(T->st, SIM_C_CMD_ACCEPTED, 1);
        return;
    }
    d->acked++;
    sim_count(T->st, SIM_C_ACKED, 1);
    int64_t now = sim_mono_us();
    sim_hist_record(&T->st->h[SIM_H_PUBACK], (uint64_t)(now - t));
    moment(&T->st->last_ack_us, now, false);
    publish_due(d);
}

static void on_suback(sdev_t *d, const sg_mqtt_packet_t *pkt)
{
    sg_mqtt_suback_t s;
    if (sg_mqtt_decode_suback(pkt, &s) != SG_OK) {
        dev_drop(d, SIM_C_DROP_PROTOCOL);
        return;
    }
    for (size_t i = 0; i < s.count; i++)
        if (s.codes[i] == SG_MQTT_SUBACK_FAILURE) {
            if (T->backend)
                fprintf(stderr, "sacgate-sim: the broker refused the back-end's subscription to %s\n", T->o->backend_topic);
            else
                sim_count(T->st, SIM_C_SUB_REFUSED, 1);
            return;
        }
    if (T->backend)
        atomic_store(&T->cfg->ctl->backend_ready, 1);
}

static void on_publish(sdev_t *d, const sg_mqtt_packet_t *pkt)
{
    sg_mqtt_publish_t p;
    if (sg_mqtt_decode_publish(pkt, &p) != SG_OK || p.qos > 1) {
        dev_drop(d, SIM_C_DROP_PROTOCOL);
        return;
    }
    int64_t t = sim_stamp_time(p.payload.p, p.payload.len, T->o->prefix);
    if (T->backend) {
        if (t >= 0) {
            sim_count(T->st, SIM_C_TELE_READ, 1);
            int64_t lat = sim_real_us() - t;
            sim_hist_record(&T->st->h[SIM_H_TELEMETRY], (uint64_t)(lat > 0 ? lat : 0));
        } else {
            sim_count(T->st, SIM_C_TELE_FOREIGN, 1);
        }
    } else {
        sim_count(T->st, SIM_C_C2D_RECEIVED, 1);
        if (p.dup)
            sim_count(T->st, SIM_C_C2D_DUP, 1);
        if (t >= 0 && !p.dup) {
            int64_t lat = sim_real_us() - t;
            sim_hist_record(&T->st->h[SIM_H_COMMAND], (uint64_t)(lat > 0 ? lat : 0));
        }
    }
    if (p.qos == 1 && sg_mqtt_encode_ack(&T->tx, SG_MQTT_PUBACK, p.packet_id) != SG_OK)
        dev_drop(d, SIM_C_DROP_PROTOCOL);
}

static void on_packet(sdev_t *d, const sg_mqtt_packet_t *pkt)
{
    if (d->state == D_CONNACK) {
        if (pkt->type == SG_MQTT_CONNACK)
            on_connack(d, pkt);
        else
            dev_fail(d, SIM_C_FAIL_CLOSED);
        return;
    }
    d->flags &= (uint8_t)~F_PING_OUT;   /* anything from the server shows it is alive */
    switch (pkt->type) {
    case SG_MQTT_PUBACK: on_puback(d, pkt); break;
    case SG_MQTT_SUBACK: on_suback(d, pkt); break;
    case SG_MQTT_PUBLISH: on_publish(d, pkt); break;
    case SG_MQTT_PINGRESP: break;
    case SG_MQTT_UNSUBACK: break;
    default: dev_drop(d, SIM_C_DROP_PROTOCOL); break;
    }
}

/* Frame packets from data (after what d->in holds). Returns false when the device closed. */
static bool feed(sdev_t *d, const uint8_t *data, size_t n)
{
    const uint8_t *buf = data;
    size_t len = n;
    if (d->in_len) {
        uint8_t *p = realloc(d->in, d->in_len + n);
        if (!p) {
            dev_drop(d, SIM_C_DROP_ERROR);
            return false;
        }
        memcpy(p + d->in_len, data, n);
        d->in = p;
        d->in_len += (uint32_t)n;
        buf = d->in;
        len = d->in_len;
    }
    size_t off = 0;
    uint8_t state = d->state;
    while (off < len) {
        sg_mqtt_packet_t pkt;
        size_t need;
        sg_rc rc = sg_mqtt_frame(buf + off, len - off, MAX_PACKET, &pkt, &need);
        if (rc == SG_E_AGAIN)
            break;
        if (rc != SG_OK) {
            if (state == D_ONLINE)
                dev_drop(d, SIM_C_DROP_PROTOCOL);
            else
                dev_fail(d, SIM_C_FAIL_CLOSED);
            return false;
        }
        on_packet(d, &pkt);
        if (d->state != D_ONLINE && d->state != D_CONNACK)
            return false;   /* closed: buf is gone */
        off += pkt.total_len;
    }
    size_t left = len - off;
    if (left == 0) {
        free(d->in);
        d->in = NULL;
        d->in_len = 0;
    } else if (d->in_len) {
        memmove(d->in, d->in + off, left);
        d->in_len = (uint32_t)left;
    } else {
        d->in = malloc(left);
        if (!d->in) {
            dev_drop(d, SIM_C_DROP_ERROR);
            return false;
        }
        memcpy(d->in, buf + off, left);
        d->in_len = (uint32_t)left;
    }
    return true;
}

static void read_all(sdev_t *d)
{
    for (;;) {
        int n;
        if (d->ssl) {
            ERR_clear_error();
            n = SSL_read(d->ssl, T->rx, RX_SCRATCH);
            if (n <= 0) {
                int e = SSL_get_error(d->ssl, n);
                if (e == SSL_ERROR_WANT_READ)
                    break;
                if (e == SSL_ERROR_WANT_WRITE) {
                    d->flags |= F_SSL_WANTS_OUT;
                    set_mask(d, EPOLLIN | EPOLLOUT);
                    break;
                }
                sim_counter_t why = e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)
                                        ? SIM_C_DROP_CLOSED
                                        : SIM_C_DROP_ERROR;
                if (d->state == D_ONLINE)
                    dev_drop(d, why);
                else
                    dev_fail(d, SIM_C_FAIL_CLOSED);
                return;
            }
        } else {
            ssize_t s = recv(d->io.fd, T->rx, RX_SCRATCH, 0);
            if (s < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            if (s <= 0) {
                if (d->state == D_ONLINE)
                    dev_drop(d, s == 0 ? SIM_C_DROP_CLOSED : SIM_C_DROP_ERROR);
                else
                    dev_fail(d, SIM_C_FAIL_CLOSED);
                return;
            }
            n = (int)s;
        }
        sim_count(T->st, SIM_C_BYTES_IN, (uint64_t)n);
        if (!feed(d, T->rx, (size_t)n))
            return;
    }
    if (d->state == D_ONLINE && tx_flush(d))
        dev_schedule(d);
}

static void dev_on_io(sg_loop_t *loop, sg_io_t *io, uint32_t events)
{
    (void)loop;
    sdev_t *d = (sdev_t *)io;
    sg_wbuf_reset(&T->tx);
    switch (d->state) {
    case D_TCP:
        tcp_connected(d);
        return;
    case D_TLS:
        tls_step(d);
        return;
    case D_CONNACK:
    case D_ONLINE:
        if ((events & EPOLLOUT) && (d->out_len || (d->flags & F_SSL_WANTS_OUT))) {
            d->flags &= (uint8_t)~F_SSL_WANTS_OUT;
            if (!dev_flush_out(d)) {
                if (d->state == D_ONLINE)
                    dev_drop(d, SIM_C_DROP_ERROR);
                else
                    dev_fail(d, SIM_C_FAIL_CLOSED);
                return;
            }
        }
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            read_all(d);
        return;
    default:
        return;
    }
}

/* ---------- timers ---------- */

/* The next moment the online device needs attention: keep-alive, ping answer, telemetry. */
static void dev_schedule(sdev_t *d)
{
    if (d->state != D_ONLINE)
        return;
    const sim_opts_t *o = T->o;
    uint32_t at = UINT32_MAX;
    if (o->keepalive > 0) {
        uint32_t ka = (uint32_t)o->keepalive * 1000;
        at = (d->flags & F_PING_OUT) ? d->ping_ms + ka : d->last_tx_ms + ka;
    }
    if (!T->backend && o->publish_rate > 0 && !done_publishing(d) && d->next_pub_ms < at)
        at = d->next_pub_ms;
    if (T->backend && o->command_rate > 0 && now_ms() + TICK_MS < at)
        at = now_ms() + TICK_MS;
    if (at != UINT32_MAX)
        timer_at_ms(d, at);
    else
        sg_timer_cancel(&d->timer);
}

static void backend_commands(sdev_t *d);

static void dev_on_timer(sg_loop_t *loop, sg_timer_t *t)
{
    (void)loop;
    sdev_t *d = dev_of_timer(t);
    uint32_t now = now_ms();
    sg_wbuf_reset(&T->tx);
    switch (d->state) {
    case D_WAIT:
        want_connect(d);
        return;
    case D_TCP:
    case D_TLS:
    case D_CONNACK:
        dev_fail(d, SIM_C_FAIL_TIMEOUT);
        return;
    case D_ONLINE:
        break;
    default:
        return;
    }
    const sim_opts_t *o = T->o;
    uint32_t ka = (uint32_t)o->keepalive * 1000;
    if (ka && (d->flags & F_PING_OUT) && now >= d->ping_ms + ka) {
        dev_drop(d, SIM_C_DROP_PING_TIMEOUT);
        return;
    }
    if (!T->backend && o->publish_rate > 0 && !done_publishing(d) && now >= d->next_pub_ms) {
        double interval = 1000.0 / o->publish_rate;
        while (now >= d->next_pub_ms && d->due < DUE_CAP) {
            d->due++;
            d->next_pub_ms += interval >= 1 ? (uint32_t)interval : 1;
        }
        if (now >= d->next_pub_ms)
            d->next_pub_ms = now + (uint32_t)interval;   /* far behind: the backlog is full, skip ahead */
        publish_due(d);
    }
    if (T->backend)
        backend_commands(d);
    if (ka && !(d->flags & F_PING_OUT) && now >= d->last_tx_ms + ka && T->tx.len == 0) {
        if (sg_mqtt_encode_empty(&T->tx, SG_MQTT_PINGREQ) == SG_OK) {
            d->flags |= F_PING_OUT;
            d->ping_ms = now;
            sim_count(T->st, SIM_C_PINGS, 1);
        }
    }
    if (tx_flush(d))
        dev_schedule(d);
}

/* ---------- the thread ---------- */

/* A fixed pseudo-random number per device (splitmix64), so its jitter is the same at every look. */
static double device_random(uint64_t g)
{
    uint64_t z = g + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0;
}

/* When device j of this thread first connects (thread ms): the run's ramp with jitter. */
static uint32_t start_ms(uint32_t j)
{
    const sim_opts_t *o = T->o;
    if (o->rate <= 0)
        return 0;
    double g = (double)T->cfg->index + (double)j * T->cfg->count;
    double at = (g + o->jitter * (device_random((uint64_t)g) - 0.5)) * 1000.0 / o->rate;
    return at > 0 ? (uint32_t)at : 0;
}

static void start_due(void)
{
    if (T->o->backend && !atomic_load(&T->cfg->ctl->backend_ready))
        return;   /* the back-end must be reading before the first message goes out */
    uint32_t now = now_ms();
    if (!T->ramp_started) {
        T->ramp_started = true;
        T->ramp_t0_ms = now;   /* the ramp starts when devices may start */
    }
    /* reconnects waiting for a slot go first: the ramp must not starve them */
    while (T->wq_len > 0 && T->connecting < T->o->max_connecting) {
        sdev_t *d = &T->devs[T->waitq[T->wq_head]];
        T->wq_head = (T->wq_head + 1) % T->n;
        T->wq_len--;
        d->flags &= (uint8_t)~F_QUEUED;
        if (d->state == D_WAIT)
            connect_start(d);
    }
    while (T->next_start < T->n && T->connecting < T->o->max_connecting && start_ms(T->next_start) <= now - T->ramp_t0_ms) {
        sdev_t *d = &T->devs[T->next_start++];
        connect_start(d);
    }
}

static void storm(void)
{
    for (uint32_t i = 0; i < T->n; i++) {
        sdev_t *d = &T->devs[i];
        if (d->state != D_ONLINE)
            continue;
        d->flags |= F_STORM;
        dev_close(d, SIM_C_DROP_STORM, 0);
    }
}

/* The end of the run: DISCONNECT every online device, close everything. */
static void goodbye(void)
{
    for (uint32_t i = 0; i < T->n; i++) {
        sdev_t *d = &T->devs[i];
        if (d->state == D_ONLINE) {
            uint8_t pkt[2] = {0xe0, 0x00};
            dev_write(d, pkt, sizeof pkt);
            if (d->ssl) {
                ERR_clear_error();
                SSL_shutdown(d->ssl);
            }
        }
        if (d->state != D_IDLE && d->state != D_DEAD && d->state != D_WAIT)
            dev_close(d, SIM_C_COUNT, -1);
        d->state = D_DEAD;
        sg_timer_cancel(&d->timer);
    }
}

static bool thr_init(thr_t *t, const sim_thread_cfg_t *cfg, uint32_t n, bool backend)
{
    memset(t, 0, sizeof *t);
    t->cfg = cfg;
    t->o = cfg->o;
    t->st = cfg->st;
    t->backend = backend;
    t->n = n;
    t->t0_us = cfg->ctl->t0_us;
    t->rng = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)cfg->index * 0x100000001B3ULL) ^ (uint64_t)sim_mono_us();
    if (t->rng == 0)
        t->rng = 1;
    t->loop = sg_loop_new(TICK_MS);
    t->devs = calloc(n ? n : 1, sizeof *t->devs);
    t->waitq = calloc(n ? n : 1, sizeof *t->waitq);
    t->rx = malloc(RX_SCRATCH);
    size_t psize = (size_t)(cfg->o->size > cfg->o->command_size ? cfg->o->size : cfg->o->command_size);
    t->payload = malloc(psize);
    sg_wbuf_init(&t->tx, MAX_PACKET * 2);
    if (!t->loop || !t->devs || !t->waitq || !t->rx || !t->payload)
        return false;
    for (uint32_t j = 0; j < n; j++) {
        sdev_t *d = &t->devs[j];
        d->g = backend ? 0 : cfg->index + j * cfg->count;
        d->io.fd = -1;
        d->io.fn = dev_on_io;
        d->timer.fn = dev_on_timer;
        d->port_i = (uint8_t)(d->g % (uint32_t)cfg->o->n_ports);
    }
    return true;
}

static void thr_fini(thr_t *t)
{
    for (uint32_t j = 0; t->devs && j < t->n; j++) {
        dev_release(&t->devs[j]);
        SSL_SESSION_free(t->devs[j].sess);
    }
    free(t->devs);
    free(t->waitq);
    free(t->rx);
    free(t->payload);
    sg_wbuf_fini(&t->tx);
    sg_loop_destroy(&t->loop);
}

void *sim_thread_main(void *arg)
{
    const sim_thread_cfg_t *cfg = arg;
    const sim_opts_t *o = cfg->o;
    uint64_t n = o->slice_n > cfg->index ? (o->slice_n - cfg->index + cfg->count - 1) / cfg->count : 0;
    thr_t t;
    T = &t;
    if (!thr_init(&t, cfg, (uint32_t)n, false)) {
        fprintf(stderr, "sacgate-sim: thread %u: out of memory for %llu devices\n", cfg->index, (unsigned long long)n);
        thr_fini(&t);
        return NULL;
    }
    t.storm_seen = atomic_load(&cfg->ctl->storm_seq);
    uint32_t next_trim = 0;
    uint64_t attempts_at_trim = 0;
    while (atomic_load(&cfg->ctl->phase) != SIM_PHASE_STOP) {
        if (atomic_load(&cfg->ctl->phase) == SIM_PHASE_RUN)
            start_due();
        sg_loop_run_once(t.loop, TICK_MS);
        /* Handshakes allocate far more than an idle session keeps: after a burst of them give
         * the freed heap back, so idle devices cost what they hold (as the frontend does). */
        if (now_ms() >= next_trim) {
            uint64_t a = sim_counter(t.st, SIM_C_CONNECT_ATTEMPTS);
            if (a != attempts_at_trim)
                malloc_trim(0);
            attempts_at_trim = a;
            next_trim = now_ms() + 5000;
        }
        int s = atomic_load(&cfg->ctl->storm_seq);
        if (s != t.storm_seen) {
            t.storm_seen = s;
            storm();
        }
    }
    goodbye();
    thr_fini(&t);
    T = NULL;
    return NULL;
}

/* ---------- the plain-mode back-end ---------- */

static void backend_commands(sdev_t *d)
{
    const sim_opts_t *o = T->o;
    if (o->command_rate <= 0 || o->slice_n == 0 || atomic_load(&T->cfg->ctl->phase) != SIM_PHASE_RUN)
        return;
    if (!atomic_load(&T->cfg->ctl->all_online)) {
        T->cmd_t0_us = sim_mono_us();   /* commands begin once every device can take them */
        return;
    }
    double want = o->command_rate * (double)(sim_mono_us() - T->cmd_t0_us) / 1e6;
    while (T->cmd_sent + 1 <= want && window_has_room(d) && T->tx.len < 256 * 1024) {
        uint64_t target = o->slice_first + rnd() % o->slice_n;
        char id[192];
        if (sim_device_name(id, sizeof id, o->prefix, target) != SG_OK)
            return;
        size_t tl = expand(T->topic, sizeof T->topic, o->command_topic, id);
        uint16_t pid = next_pid(d);
        if (!flight_add(d, pid))
            return;
        sim_stamp_payload(T->payload, (size_t)o->command_size, o->prefix, sim_real_us(), target, T->cmd_seq++);
        sg_mqtt_publish_t p = {.qos = 1, .topic = {(const uint8_t *)T->topic, tl}, .packet_id = pid,
                               .payload = {T->payload, (size_t)o->command_size}};
        if (sg_mqtt_encode_publish(&T->tx, &p) != SG_OK) {
            flight_take(d, pid);
            return;
        }
        T->cmd_sent += 1;
        sim_count(T->st, SIM_C_CMD_SENT, 1);
    }
    if (T->cmd_sent + 1 <= want && !window_has_room(d))
        T->cmd_sent = want;   /* the broker is behind: do not build an ever-growing backlog */
}

void *sim_plain_backend_main(void *arg)
{
    const sim_thread_cfg_t *cfg = arg;
    thr_t t;
    T = &t;
    if (!thr_init(&t, cfg, 1, true)) {
        fprintf(stderr, "sacgate-sim: back-end: out of memory\n");
        thr_fini(&t);
        return NULL;
    }
    connect_start(&t.devs[0]);
    while (atomic_load(&cfg->ctl->phase) != SIM_PHASE_STOP) {
        if (t.devs[0].state == D_DEAD) {
            /* the back-end always comes back, whatever --reconnect says */
            t.devs[0].state = D_WAIT;
            timer_at_ms(&t.devs[0], now_ms() + 1000);
        }
        sg_loop_run_once(t.loop, TICK_MS);
    }
    goodbye();
    thr_fini(&t);
    T = NULL;
    return NULL;
}
