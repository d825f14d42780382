/* adm_http.h — the admin tier: the operators' and control systems' HTTP API (SPEC §4) served by
 * libmicrohttpd (admin.threads threads; HTTPS with admin.tls_cert/admin.tls_key). Requests that
 * need the cluster are suspended, handed to the bridge, and resumed when the shards have
 * answered, so one server thread serves many long-polls. */
#ifndef ADM_HTTP_H
#define ADM_HTTP_H

#include <stdbool.h>
#include "sg_config.h"

typedef struct adm_http adm_http_t;

/* Serve on admin.bind:admin.port, checking bearer tokens from admin.tokens, talking to the
 * comma-separated router endpoints. NULL with a log line on failure. */
adm_http_t *adm_http_new(const sg_config_t *cfg, const char *name, const char *routers);
void adm_http_destroy(adm_http_t **self_p);
int adm_http_port(const adm_http_t *self);
/* Whether it serves HTTPS. */
bool adm_http_tls(const adm_http_t *self);

#endif
