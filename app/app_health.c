/* app_health.c — the probe endpoint of non-admin processes; see app_health.h. */
#include "app_health.h"
#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sg_log.h"
#include "sg_net.h"

struct app_health {
    struct MHD_Daemon *mhd;
    char tier[16];
    char body[128];
    app_health_ready_fn ready;
    void *arg;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *text, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, mode);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    app_health_t *h = cls;
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    bool live = strcmp(url, "/healthz") == 0, ready = strcmp(url, "/readyz") == 0;
    if (!live && !ready)
        return reply(conn, 404, "{\"error\":\"NotFound\",\"message\":\"only /healthz and /readyz here\"}",
                     MHD_RESPMEM_PERSISTENT);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(conn, 405, "{\"error\":\"MethodNotAllowed\",\"message\":\"use GET\"}", MHD_RESPMEM_PERSISTENT);
    char why[160] = "";
    if (ready && h->ready && !h->ready(h->arg, why, sizeof why)) {
        json_t *b = json_pack("{s:s, s:s, s:s}", "status", "unready", "tier", h->tier, "reason", why);
        char *text = b ? json_dumps(b, JSON_COMPACT) : NULL;
        json_decref(b);
        if (!text)
            return reply(conn, 503, "{\"status\":\"unready\"}", MHD_RESPMEM_PERSISTENT);
        enum MHD_Result ok = reply(conn, 503, text, MHD_RESPMEM_MUST_COPY);
        free(text);
        return ok;
    }
    return reply(conn, 200, h->body, MHD_RESPMEM_PERSISTENT);
}

app_health_t *app_health_new(const char *bind, int port, const char *tier, app_health_ready_fn ready, void *arg)
{
    if (port <= 0)
        return NULL;
    app_health_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->ready = ready;
    h->arg = arg;
    snprintf(h->tier, sizeof h->tier, "%s", tier);
    snprintf(h->body, sizeof h->body, "{\"status\":\"ok\",\"tier\":\"%s\"}", tier);
    struct sockaddr_storage ss;
    bool v6;
    if (sg_sockaddr(bind, port, &ss, &v6) != SG_OK) {
        SG_ERROR("health", "bind.invalid", "address=%s reason=\"health.bind must be a numeric address\"", bind);
        free(h);
        return NULL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | (v6 ? MHD_USE_IPv6 : 0);
    h->mhd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &ss,
                              MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!h->mhd) {
        SG_ERROR("health", "listen.failed", "address=%s port=%d", bind, port);
        free(h);
        return NULL;
    }
    SG_INFO("health", "ready", "address=%s port=%d tier=%s", bind, port, tier);
    return h;
}

void app_health_destroy(app_health_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    MHD_stop_daemon((*self_p)->mhd);
    free(*self_p);
    *self_p = NULL;
}
