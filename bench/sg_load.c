/* sg_load.c — a small MQTT-over-TLS load generator for quick measurements (the full simulator,
 * sacgate-sim, comes later). One epoll thread drives many connections: TLS, CONNECT with a SAS
 * token per device, then either stay idle, or publish QoS 1 telemetry keeping `window` messages
 * in flight. Prints connect-to-CONNACK percentiles and message rate. Speaks plain MQTT too, so
 * the same run can target Mosquitto for a ratio.
 *
 *   sg_load --port P --cafile ca.crt --devices FILE [--mode idle|telemetry] [--connections N]
 *           [--messages M] [--window W] [--size BYTES] [--hold SECONDS] [--rate CONN_PER_S]
 *           [--bind-base 127.0.0.2] [--plain-topic]
 * FILE has one "deviceId base64key" per line (key "-" = no password). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "sg_codec.h"
#include "sg_mqtt.h"
#include "sg_sas.h"

enum { C_CONNECTING, C_TLS, C_CONNACK, C_READY, C_DONE, C_FAILED };

typedef struct {
    int fd;
    SSL *ssl;
    int state;
    char id[129];
    char token[1024];
    double t_start, t_connack;
    uint8_t in[65536];
    size_t in_len;
    uint32_t sent, acked, inflight;
    uint16_t next_pid;
} conn_t;

static struct {
    const char *host, *cafile, *devices, *mode, *bind_base;
    int port, connections, window, size, hold, rate;
    long messages;
    int plain_topic;
} opt = {.host = "127.0.0.1", .mode = "telemetry", .port = 8883, .connections = 1, .window = 10, .size = 64,
         .rate = 1000, .messages = 1000};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void send_pkt(conn_t *c, sg_wbuf_t *w)
{
    int n = SSL_write(c->ssl, w->data, (int)w->len);
    if (n != (int)w->len) {
        /* The generator keeps small windows, so a short write means the peer is gone. */
        c->state = C_FAILED;
    }
}

static void publish_more(conn_t *c, const uint8_t *payload)
{
    char topic[256];
    snprintf(topic, sizeof topic, opt.plain_topic ? "load/%s" : "devices/%s/messages/events/", c->id);
    sg_wbuf_t w;
    sg_wbuf_init(&w, 1 << 20);
    while (c->inflight < (uint32_t)opt.window && c->sent < (uint32_t)opt.messages && c->state == C_READY) {
        if (++c->next_pid == 0)
            c->next_pid = 1;
        sg_mqtt_publish_t p = {.qos = 1, .topic = {(const uint8_t *)topic, strlen(topic)}, .packet_id = c->next_pid,
                               .payload = {payload, (size_t)opt.size}};
        sg_wbuf_reset(&w);
        if (sg_mqtt_encode_publish(&w, &p) != SG_OK)
            abort();
        send_pkt(c, &w);
        c->sent++;
        c->inflight++;
    }
    sg_wbuf_fini(&w);
}

static void send_connect(conn_t *c)
{
    char user[300];
    snprintf(user, sizeof user, "localhost/%s/?api-version=2021-04-12", c->id);
    sg_mqtt_connect_t m = {.protocol_name = {(const uint8_t *)"MQTT", 4}, .protocol_level = 4, .clean_session = 1,
                           .keep_alive = 1200, .client_id = {(const uint8_t *)c->id, strlen(c->id)},
                           .has_username = 1, .username = {(const uint8_t *)user, strlen(user)}};
    if (c->token[0]) {
        m.has_password = 1;
        m.password = (sg_mqtt_str_t){(const uint8_t *)c->token, strlen(c->token)};
    }
    sg_wbuf_t w;
    sg_wbuf_init(&w, 4096);
    if (sg_mqtt_encode_connect(&w, &m) != SG_OK)
        abort();
    send_pkt(c, &w);
    sg_wbuf_fini(&w);
    c->state = C_CONNACK;
}

static int open_conn(conn_t *c, SSL_CTX *ctx, int ep, int index)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.host, &sa.sin_addr);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt.bind_base) {
        /* Spread sources over 127.0.0.x so one port range is not exhausted. */
        struct sockaddr_in src = {.sin_family = AF_INET};
        inet_pton(AF_INET, opt.bind_base, &src.sin_addr);
        src.sin_addr.s_addr = htonl(ntohl(src.sin_addr.s_addr) + (uint32_t)(index / 20000));
        bind(c->fd, (struct sockaddr *)&src, sizeof src);
    }
    c->t_start = now_s();
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS)
        return -1;
    c->ssl = SSL_new(ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    SSL_set1_host(c->ssl, "localhost");
    SSL_set_connect_state(c->ssl);
    c->state = C_TLS;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void on_packet(conn_t *c, const sg_mqtt_packet_t *pkt, const uint8_t *payload, long *acked_total)
{
    if (pkt->type == SG_MQTT_CONNACK) {
        sg_mqtt_connack_t a;
        if (sg_mqtt_decode_connack(pkt, &a) != SG_OK || a.return_code != 0) {
            fprintf(stderr, "device %s: CONNACK %d\n", c->id, a.return_code);
            c->state = C_FAILED;
            return;
        }
        c->t_connack = now_s();
        c->state = C_READY;
        if (strcmp(opt.mode, "telemetry") == 0)
            publish_more(c, payload);
    } else if (pkt->type == SG_MQTT_PUBACK) {
        c->acked++;
        c->inflight--;
        (*acked_total)++;
        if (c->acked >= (uint32_t)opt.messages)
            c->state = C_DONE;
        else
            publish_more(c, payload);
    }
}

static void drive(conn_t *c, int ep, const uint8_t *payload, long *acked_total)
{
    if (c->state == C_TLS) {
        int r = SSL_do_handshake(c->ssl);
        if (r == 1) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            send_connect(c);
        } else {
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                char buf[200];
                ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
                fprintf(stderr, "device %s: TLS failed: %s\n", c->id, buf);
                c->state = C_FAILED;
            }
            return;
        }
    }
    for (;;) {
        int n = SSL_read(c->ssl, c->in + c->in_len, (int)(sizeof c->in - c->in_len));
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE && c->state != C_DONE) {
                fprintf(stderr, "device %s: connection closed by the server\n", c->id);
                c->state = C_FAILED;
            }
            return;
        }
        c->in_len += (size_t)n;
        size_t off = 0;
        for (;;) {
            sg_mqtt_packet_t pkt;
            size_t need;
            if (sg_mqtt_frame(c->in + off, c->in_len - off, sizeof c->in, &pkt, &need) != SG_OK)
                break;
            on_packet(c, &pkt, payload, acked_total);
            off += pkt.total_len;
        }
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: sg_load --port P --cafile ca.crt --devices FILE [--mode idle|telemetry] [--connections N]\n"
                    "               [--messages M] [--window W] [--size B] [--hold S] [--rate CONN_PER_S]\n"
                    "               [--host 127.0.0.1] [--bind-base 127.0.0.2] [--plain-topic]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--plain-topic")) { opt.plain_topic = 1; continue; }
        if (!v) usage();
        i++;
        if (!strcmp(a, "--host")) opt.host = v;
        else if (!strcmp(a, "--port")) opt.port = atoi(v);
        else if (!strcmp(a, "--cafile")) opt.cafile = v;
        else if (!strcmp(a, "--devices")) opt.devices = v;
        else if (!strcmp(a, "--mode")) opt.mode = v;
        else if (!strcmp(a, "--connections")) opt.connections = atoi(v);
        else if (!strcmp(a, "--messages")) opt.messages = atol(v);
        else if (!strcmp(a, "--window")) opt.window = atoi(v);
        else if (!strcmp(a, "--size")) opt.size = atoi(v);
        else if (!strcmp(a, "--hold")) opt.hold = atoi(v);
        else if (!strcmp(a, "--rate")) opt.rate = atoi(v);
        else if (!strcmp(a, "--bind-base")) opt.bind_base = v;
        else usage();
    }
    if (!opt.cafile || !opt.devices || opt.connections < 1 || opt.window < 1)
        usage();
    if (strcmp(opt.mode, "idle") == 0)
        opt.messages = 0;

    FILE *f = fopen(opt.devices, "r");
    if (!f) {
        perror(opt.devices);
        return 1;
    }
    conn_t *conns = calloc((size_t)opt.connections, sizeof *conns);
    int n = 0;
    char id[129], key[200];
    time_t se = time(NULL) + 3600 * 4;
    while (n < opt.connections && fscanf(f, "%128s %199s", id, key) == 2) {
        conn_t *c = &conns[n];
        snprintf(c->id, sizeof c->id, "%s", id);
        if (strcmp(key, "-") != 0) {
            uint8_t raw[128];
            size_t rl;
            if (sg_b64_decode(key, strlen(key), raw, &rl) != SG_OK ||
                sg_sas_make(c->token, sizeof c->token, "localhost", id, raw, rl, se) != SG_OK) {
                fprintf(stderr, "bad key for %s\n", id);
                return 1;
            }
        }
        n++;
    }
    fclose(f);
    if (n < opt.connections) {
        fprintf(stderr, "the devices file has only %d devices\n", n);
        return 1;
    }

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(ctx, opt.cafile, NULL) != 1) {
        fprintf(stderr, "cannot load %s\n", opt.cafile);
        return 1;
    }
    uint8_t *payload = malloc((size_t)opt.size + 1);
    memset(payload, 'x', (size_t)opt.size);
    int ep = epoll_create1(0);
    double t0 = now_s();
    int opened = 0, failed = 0;
    long acked_total = 0;
    double t_first_ready = 0, t_all_ready = 0, t_done = 0;
    for (;;) {
        /* open connections at the requested rate */
        double elapsed = now_s() - t0;
        while (opened < n && opened < (int)(elapsed * opt.rate) + 1) {
            if (open_conn(&conns[opened], ctx, ep, opened) != 0) {
                conns[opened].state = C_FAILED;
                failed++;
            }
            opened++;
        }
        struct epoll_event evs[256];
        int k = epoll_wait(ep, evs, 256, 10);
        for (int i = 0; i < k; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->state == C_FAILED)
                continue;
            drive(c, ep, payload, &acked_total);
            if (c->state == C_FAILED) {
                failed++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
        }
        int ready = 0, done = 0;
        for (int i = 0; i < opened; i++) {
            ready += conns[i].state == C_READY || conns[i].state == C_DONE;
            done += conns[i].state == C_DONE || (strcmp(opt.mode, "idle") == 0 && conns[i].state == C_READY);
        }
        if (ready && !t_first_ready)
            t_first_ready = now_s();
        if (ready + failed >= n && !t_all_ready)
            t_all_ready = now_s();
        if (done + failed >= n && opened == n) {
            if (!t_done)
                t_done = now_s();
            if (now_s() - t_done >= opt.hold)
                break;
        }
        if (now_s() - t0 > 600) {
            fprintf(stderr, "giving up after 600 s\n");
            break;
        }
    }
    double *lat = calloc((size_t)n, sizeof *lat);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (conns[i].t_connack > 0)
            lat[m++] = (conns[i].t_connack - conns[i].t_start) * 1000;
    qsort(lat, (size_t)m, sizeof *lat, cmp_double);
    printf("connections: %d ok, %d failed; connect-to-CONNACK ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", m, failed,
           m ? lat[m / 2] : 0, m ? lat[m * 9 / 10] : 0, m ? lat[m * 99 / 100] : 0, m ? lat[m - 1] : 0);
    if (strcmp(opt.mode, "telemetry") == 0) {
        /* From the moment every device is connected until the last acknowledgement. */
        double secs = (t_done ? t_done : now_s()) - (t_all_ready ? t_all_ready : t0);
        printf("telemetry: %ld QoS 1 messages of %d bytes acknowledged in %.3f s = %.0f msg/s (window %d per device)\n",
               acked_total, opt.size, secs, acked_total / secs, opt.window);
    }
    for (int i = 0; i < n; i++) {
        if (conns[i].ssl)
            SSL_free(conns[i].ssl);
        if (conns[i].fd > 0)
            close(conns[i].fd);
    }
    return failed ? 1 : 0;
}
