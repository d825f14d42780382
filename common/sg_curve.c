/* sg_curve.c — see sg_curve.h. */
#include "sg_curve.h"
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "sg_log.h"

static zcert_t *g_cert;
static zactor_t *g_auth;

sg_rc sg_curve_init(const char *cert_path)
{
    if (!zsys_has_curve()) {
        SG_ERROR("curve", "unsupported", "reason=\"libzmq was built without CURVE\"");
        return SG_E_INVALID;
    }
    char secret[4096];
    snprintf(secret, sizeof secret, "%s_secret", cert_path);
    struct stat st;
    if (stat(secret, &st) != 0) {
        SG_ERROR("curve", "cert.missing", "path=%s reason=\"the cluster certificate's secret file is missing; "
                 "`sacgate init --data-dir DIR` writes DIR/curve/cluster.cert and cluster.cert_secret\"", secret);
        return SG_E_INVALID;
    }
    g_cert = zcert_load(cert_path);
    if (!g_cert || !strcmp(zcert_secret_txt(g_cert), "0000000000000000000000000000000000000000")) {
        SG_ERROR("curve", "cert.invalid", "path=%s", cert_path);
        zcert_destroy(&g_cert);
        return SG_E_INVALID;
    }
    char *copy = strdup(cert_path);
    const char *dir = dirname(copy);
    g_auth = zactor_new(zauth, NULL);
    if (!g_auth) {
        free(copy);
        zcert_destroy(&g_cert);
        return SG_E_IO;
    }
    /* Admit clients whose public key is in a certificate file of this directory. */
    zstr_sendx(g_auth, "CURVE", dir, NULL);
    zsock_wait(g_auth);
    SG_INFO("curve", "enabled", "cert=%s allow_dir=%s", cert_path, dir);
    free(copy);
    return SG_OK;
}

void sg_curve_shutdown(void)
{
    zactor_destroy(&g_auth);
    zcert_destroy(&g_cert);
}

bool sg_curve_enabled(void) { return g_cert != NULL; }

void sg_curve_server(zsock_t *sock)
{
    if (!g_cert)
        return;
    zcert_apply(g_cert, sock);
    zsock_set_curve_server(sock, 1);
    zsock_set_zap_domain(sock, "sacgate");
}

void sg_curve_client(zsock_t *sock)
{
    if (!g_cert)
        return;
    zcert_apply(g_cert, sock);
    zsock_set_curve_serverkey(sock, zcert_public_txt(g_cert));
}

sg_rc sg_curve_make(const char *dir)
{
    char path[4096], secret[4200];
    snprintf(path, sizeof path, "%s/cluster.cert", dir);
    snprintf(secret, sizeof secret, "%s_secret", path);
    struct stat st;
    if (stat(secret, &st) == 0)
        return SG_OK;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return SG_E_IO;
    zcert_t *cert = zcert_new();
    SG_ENSURE(cert != NULL, SG_E_NOMEM);
    zcert_set_meta(cert, "name", "sacgate cluster");
    /* The secret file must not be readable by others; czmq writes with the process umask. */
    mode_t old = umask(077);
    int rc = zcert_save(cert, path);
    umask(old);
    zcert_destroy(&cert);
    if (rc != 0) {
        SG_ERROR("curve", "cert.write_failed", "path=%s", path);
        return SG_E_IO;
    }
    chmod(path, 0644);
    return SG_OK;
}
