/* sg_curve.c — see sg_curve.h.
 * The ZAP handler is ours rather than czmq's zauth: zauth admits every key of a directory alike,
 * and a router must tell a frontend's key from an admin's (and a shard refuse a frontend's key
 * outright). It keeps zauth's certificate store (czmq zcertstore, which reloads the directory
 * when it changes, so a key added for a rotation is admitted without a restart) and answers
 * ZAP (RFC 27) with the certificate's role as the User-Id. */
#include "sg_curve.h"
#include <pthread.h>
#include <errno.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "sg_log.h"
#include "sg_zmq.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define NO_KEY "0000000000000000000000000000000000000000"

static const sg_role_t k_tiers[] = {SG_ROLE_FRONTEND, SG_ROLE_ROUTER, SG_ROLE_STORE, SG_ROLE_ADMIN};

static zcert_t *g_cert;
static sg_role_t g_self;          /* SG_ROLE_CLUSTER for the shared key of old */
static char g_server_key[41];     /* public key of the server this process connects to */
static char g_trust[4096];        /* the public certificates' directory */
static zactor_t *g_zap;

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The role a certificate names (its metadata "role"); SG_ROLE_NONE when it names none. */
static sg_role_t cert_role(zcert_t *c)
{
    const char *r = zcert_meta(c, "role");
    return r ? sg_role_parse(r, strlen(r)) : SG_ROLE_NONE;
}

/* ---- the ZAP handler ---- */

/* Reply to one ZAP request on h: 200 with the role as User-Id, or 400. */
static void zap_answer(zsock_t *h, zcertstore_t *store)
{
    zmsg_t *req = zmsg_recv(h);
    if (!req)
        return;
    char *version = zmsg_popstr(req), *id = zmsg_popstr(req), *domain = zmsg_popstr(req);
    char *address = zmsg_popstr(req), *identity = zmsg_popstr(req), *mech = zmsg_popstr(req);
    zframe_t *key = zmsg_pop(req);
    sg_role_t role = SG_ROLE_NONE;
    const char *why = "unknown key: not in a certificate of cluster.curve_public";
    if (!version || strcmp(version, "1.0") != 0 || !mech || strcmp(mech, "CURVE") != 0 || !key ||
        zframe_size(key) != 32) {
        why = "not a CURVE request";
    } else {
        char txt[41];
        zmq_z85_encode(txt, zframe_data(key), 32);
        zcert_t *c = zcertstore_lookup(store, txt);
        if (c) {
            role = cert_role(c);
            if (role == SG_ROLE_NONE && g_self == SG_ROLE_CLUSTER && !zcert_meta(c, "role"))
                role = SG_ROLE_CLUSTER;   /* the shared key of old */
            why = sg_role_may_connect(role, g_self) ? NULL : "its role may not connect to this tier";
        }
    }
    if (why)
        SG_WARN("curve", "peer.refused", "address=%s role=%s tier=%s reason=\"%s\"", address ? address : "?",
                sg_role_name(role), sg_role_name(g_self), why);
    zmsg_t *rep = zmsg_new();
    zmsg_addstr(rep, "1.0");
    zmsg_addstr(rep, id ? id : "");
    zmsg_addstr(rep, why ? "400" : "200");
    zmsg_addstr(rep, why ? "refused" : "OK");
    zmsg_addstr(rep, why ? "" : sg_role_name(role));
    zmsg_addmem(rep, NULL, 0);   /* no metadata */
    zmsg_send(&rep, h);
    zframe_destroy(&key);
    free(version), free(id), free(domain), free(address), free(identity), free(mech);
    zmsg_destroy(&req);
}

static void zap_actor(zsock_t *pipe, void *args)
{
    pthread_setname_np(pthread_self(), "sg-zap");   /* top -H, perf and /proc show it */
    (void)args;
    zsock_t *h = zsock_new(ZMQ_REP);
    zcertstore_t *store = zcertstore_new(g_trust);
    if (!h || !store || zsock_bind(h, ZAP_ENDPOINT) != 0) {
        SG_ERROR("curve", "zap.failed", "dir=%s", g_trust);
        zcertstore_destroy(&store);
        zsock_destroy(&h);
        zsock_signal(pipe, 1);
        return;
    }
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, h, NULL);
    for (;;) {
        void *which = zpoller_wait(poller, -1);
        if (which != h)
            break;   /* the pipe ($TERM) or an interrupt */
        zap_answer(h, store);
    }
    zpoller_destroy(&poller);
    zcertstore_destroy(&store);
    zsock_destroy(&h);
    sg_actor_end();
}

/* ---- set-up ---- */

/* cert_path with every {role} replaced by the role's name. */
static void expand(const char *tmpl, sg_role_t role, char *out, size_t cap)
{
    size_t o = 0;
    const char *name = sg_role_name(role);
    for (const char *p = tmpl; *p && o + 1 < cap;) {
        if (strncmp(p, "{role}", 6) == 0) {
            o += (size_t)snprintf(out + o, cap - o, "%s", name);
            p += 6;
        } else {
            out[o++] = *p++;
        }
    }
    out[o < cap ? o : cap - 1] = 0;
}

/* The upstream server's public key from dir/ROLE.cert, which must name that role. */
static sg_rc load_server_key(sg_role_t up)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.cert", g_trust, sg_role_name(up));
    zcert_t *c = is_file(path) ? zcert_load(path) : NULL;
    if (!c || cert_role(c) != up) {
        SG_ERROR("curve", "cert.missing", "path=%s reason=\"the %s's public certificate is missing or names another "
                 "role; `sacgate init --data-dir DIR` writes DIR/curve/public/ (cluster.curve_public)\"", path,
                 sg_role_name(up));
        zcert_destroy(&c);
        return SG_E_INVALID;
    }
    snprintf(g_server_key, sizeof g_server_key, "%s", zcert_public_txt(c));
    zcert_destroy(&c);
    return SG_OK;
}

sg_rc sg_curve_init(const char *cert_tmpl, const char *public_dir, sg_role_t self)
{
    if (!zsys_has_curve()) {
        SG_ERROR("curve", "unsupported", "reason=\"libzmq was built without CURVE\"");
        return SG_E_INVALID;
    }
    char path[4096], secret[4200];
    expand(cert_tmpl, self, path, sizeof path);
    snprintf(secret, sizeof secret, "%s_secret", path);
    if (!is_file(secret)) {
        SG_ERROR("curve", "cert.missing", "path=%s reason=\"this tier's secret key is missing; `sacgate init "
                 "--data-dir DIR` writes DIR/curve/%s.cert and %s.cert_secret (cluster.curve_cert = "
                 "DIR/curve/{role}.cert)\"", secret, sg_role_name(self), sg_role_name(self));
        return SG_E_INVALID;
    }
    g_cert = zcert_load(path);
    if (!g_cert || !strcmp(zcert_secret_txt(g_cert), NO_KEY)) {
        SG_ERROR("curve", "cert.invalid", "path=%s", path);
        zcert_destroy(&g_cert);
        return SG_E_INVALID;
    }
    sg_role_t named = cert_role(g_cert);
    char *copy = strdup(path);
    if (!copy) {
        zcert_destroy(&g_cert);
        return SG_E_NOMEM;
    }
    if (!zcert_meta(g_cert, "role")) {
        /* The shared key of old: trust the certificates beside it, serve and connect with it. */
        g_self = SG_ROLE_CLUSTER;
        snprintf(g_trust, sizeof g_trust, "%s", dirname(copy));
        snprintf(g_server_key, sizeof g_server_key, "%s", zcert_public_txt(g_cert));
        SG_WARN("curve", "shared_key", "cert=%s reason=\"one key shared by every tier: any holder may send any "
                "frame; run `sacgate init` and move to per-tier keys (README.md, Moving from the shared key)\"", path);
    } else if (named != self) {
        SG_ERROR("curve", "cert.wrong_role", "path=%s role=%s reason=\"this process is the %s: give it its own "
                 "certificate (cluster.curve_cert = DIR/curve/{role}.cert)\"", path, zcert_meta(g_cert, "role"),
                 sg_role_name(self));
        free(copy);
        zcert_destroy(&g_cert);
        return SG_E_INVALID;
    } else {
        g_self = self;
        if (public_dir && *public_dir)
            snprintf(g_trust, sizeof g_trust, "%s", public_dir);
        else
            snprintf(g_trust, sizeof g_trust, "%s/public", dirname(copy));
    }
    free(copy);
    sg_rc rc = g_self == SG_ROLE_CLUSTER || sg_role_upstream(self) == SG_ROLE_NONE
                   ? SG_OK
                   : load_server_key(sg_role_upstream(self));
    bool serves = g_self == SG_ROLE_CLUSTER || self == SG_ROLE_ROUTER || self == SG_ROLE_STORE;
    if (rc == SG_OK && serves && !(g_zap = zactor_new(zap_actor, NULL)))
        rc = SG_E_IO;
    if (rc != SG_OK) {
        zcert_destroy(&g_cert);
        return rc;
    }
    SG_INFO("curve", "enabled", "cert=%s role=%s public=%s", path, sg_role_name(g_self), g_trust);
    return SG_OK;
}

void sg_curve_shutdown(void)
{
    zactor_destroy(&g_zap);
    zcert_destroy(&g_cert);
}

bool sg_curve_enabled(void) { return g_cert != NULL; }

sg_role_t sg_curve_peer_role(const char *user_id)
{
    if (!g_cert)
        return SG_ROLE_LOCAL;
    return user_id ? sg_role_parse(user_id, strlen(user_id)) : SG_ROLE_NONE;
}

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
    zsock_set_curve_serverkey(sock, g_server_key);
}

/* dir/ROLE.cert (+ _secret) unless there, and its public half in dir/public/ROLE.cert. */
static sg_rc make_one(const char *dir, sg_role_t role)
{
    char path[4200], secret[4300], pub[4300];
    const char *name = sg_role_name(role);
    snprintf(path, sizeof path, "%s/%s.cert", dir, name);
    snprintf(secret, sizeof secret, "%s_secret", path);
    snprintf(pub, sizeof pub, "%s/public/%s.cert", dir, name);
    zcert_t *cert = is_file(secret) ? zcert_load(path) : NULL;
    bool fresh = cert == NULL;
    if (fresh) {
        cert = zcert_new();
        SG_ENSURE(cert != NULL, SG_E_NOMEM);
        zcert_set_meta(cert, "name", "sacgate %s", name);
        zcert_set_meta(cert, "role", "%s", name);
    }
    /* The secret file must not be readable by others; czmq writes with the process umask. */
    mode_t old = umask(077);
    int rc = fresh ? zcert_save(cert, path) : 0;
    if (rc == 0 && !is_file(pub))
        rc = zcert_save_public(cert, pub);
    umask(old);
    zcert_destroy(&cert);
    if (rc != 0) {
        SG_ERROR("curve", "cert.write_failed", "path=%s", path);
        return SG_E_IO;
    }
    chmod(path, 0644);
    chmod(pub, 0644);
    return SG_OK;
}

sg_rc sg_curve_make(const char *dir)
{
    char pub[4200];
    snprintf(pub, sizeof pub, "%s/public", dir);
    if ((mkdir(dir, 0700) != 0 && errno != EEXIST) || (mkdir(pub, 0755) != 0 && errno != EEXIST))
        return SG_E_IO;
    for (size_t i = 0; i < sizeof k_tiers / sizeof k_tiers[0]; i++)
        SG_GUARD(make_one(dir, k_tiers[i]));
    return SG_OK;
}
