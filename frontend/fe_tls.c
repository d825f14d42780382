/* fe_tls.c — server SSL_CTX set-up and replacement; see fe_tls.h.
 * The current context sits behind a read-write lock rather than in a bare atomic pointer: a
 * thread that loaded the pointer could otherwise call SSL_new on a context a reload has just
 * freed. The read side (one per accepted connection) costs an uncontended atomic increment,
 * nothing beside the handshake that follows; the write side is taken once per reload. */
#include "fe_tls.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include "fe_tickets.h"
#include "fe_psk.h"
#include "sg_log.h"

/* What stat says about one path: when any of it changes, the file is another one. */
typedef struct {
    bool ok;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} file_sig_t;

struct fe_tls {
    pthread_rwlock_t lock;   /* guards ctx */
    SSL_CTX *ctx;
    pthread_mutex_t reload_lock;   /* one reload at a time; guards the signatures */
    file_sig_t cert_sig, key_sig;   /* of the files last loaded or tried */
    char *cert_path, *key_path;
    fe_tickets_t *tickets;   /* session-ticket keys every context gets, or NULL (fe_tls_use_tickets) */
    bool psk_ke;
};

const char *fe_tls_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (!e) {
        snprintf(buf, len, "no OpenSSL error queued");
    } else {
        ERR_error_string_n(e, buf, len);
        ERR_clear_error();
    }
    return buf;
}

/* Any certificate a client sends is taken here: whether it speaks for a device is the device's
 * shard's decision at CONNECT (a thumbprint or a registered CA, store/st_cert.c), and TLS has
 * checked that the client holds its key. A client without one (SAS and PSK devices) goes on. */
static int accept_any_client_cert(int preverify_ok, X509_STORE_CTX *x)
{
    (void)preverify_ok;
    (void)x;
    return 1;
}

SSL_CTX *fe_tls_ctx_new(const char *cert_path, const char *key_path, bool psk_ke)
{
    char err[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any_client_cert);
    /* A client's certificate chain is read before anyone knows who it is: bound it (a CONNECT
     * passes on at most SG_WIRE_MAX_CREDENTIAL bytes of it anyway). */
    SSL_CTX_set_max_cert_list(ctx, 24 * 1024);
    /* OpenSSL refuses a session (a TLS 1.3 PSK is one) under SSL_VERIFY_PEER without a context. */
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"sacgate", 7);
    fe_psk_ctx_init(ctx, psk_ke);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* SHA-256 suites first: TLS 1.3 external PSKs (SHA-256 in common clients) need them. */
    if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384") != 1 ||
        /* TLS 1.2 PSK suites first: only a client holding a PSK offers them, and one that does
         * (mosquitto_pub --psk) may offer certificate suites beside them. */
        SSL_CTX_set_cipher_list(ctx, "ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES128-CBC-SHA256:"
                                     "PSK-AES128-GCM-SHA256:PSK-CHACHA20-POLY1305:PSK-AES256-GCM-SHA384:"
                                     "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                     "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
                                     "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384") != 1) {
        SG_ERROR("frontend", "tls.ciphers", "reason=\"%s\"", fe_tls_error(err, sizeof err));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        SG_ERROR("frontend", "tls.certificate", "path=%s reason=\"%s\"", cert_path, fe_tls_error(err, sizeof err));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        SG_ERROR("frontend", "tls.key", "path=%s reason=\"%s\"", key_path, fe_tls_error(err, sizeof err));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static file_sig_t file_sig(const char *path)
{
    struct stat st;
    file_sig_t f = {0};
    if (stat(path, &st) != 0)
        return f;   /* absent now: a change once it is back */
    f = (file_sig_t){.ok = true, .dev = st.st_dev, .ino = st.st_ino, .size = st.st_size, .mtime = st.st_mtim,
                     .ctime = st.st_ctim};
    return f;
}

static bool sig_equal(const file_sig_t *a, const file_sig_t *b)
{
    return a->ok == b->ok && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* serial=.. not_after=.. of the context's certificate, for the log. */
static void describe(SSL_CTX *ctx, char *out, size_t len)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);
    char *serial = NULL;
    char not_after[64] = "?";
    if (x) {
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        serial = bn ? BN_bn2hex(bn) : NULL;
        BN_free(bn);
        BIO *b = BIO_new(BIO_s_mem());
        if (b && ASN1_TIME_print(b, X509_get0_notAfter(x)) == 1) {
            int n = BIO_read(b, not_after, (int)sizeof not_after - 1);
            not_after[n > 0 ? n : 0] = '\0';
        }
        BIO_free(b);
    }
    snprintf(out, len, "serial=%s not_after=\"%s\"", serial ? serial : "?", not_after);
    OPENSSL_free(serial);
    ERR_clear_error();
}

fe_tls_t *fe_tls_new(const char *cert_path, const char *key_path, bool psk_ke)
{
    fe_tls_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_rwlock_init(&t->lock, NULL);
    pthread_mutex_init(&t->reload_lock, NULL);
    t->cert_path = strdup(cert_path);
    t->key_path = strdup(key_path);
    t->psk_ke = psk_ke;
    t->cert_sig = file_sig(cert_path);
    t->key_sig = file_sig(key_path);
    t->ctx = t->cert_path && t->key_path ? fe_tls_ctx_new(cert_path, key_path, psk_ke) : NULL;
    if (!t->ctx) {
        fe_tls_destroy(&t);
        return NULL;
    }
    char desc[160];
    describe(t->ctx, desc, sizeof desc);
    SG_INFO("frontend", "tls.loaded", "cert=%s %s", cert_path, desc);
    return t;
}

void fe_tls_destroy(fe_tls_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fe_tls_t *t = *self_p;
    SSL_CTX_free(t->ctx);   /* open connections hold their own references */
    pthread_rwlock_destroy(&t->lock);
    pthread_mutex_destroy(&t->reload_lock);
    free(t->cert_path);
    free(t->key_path);
    free(t);
    *self_p = NULL;
}

SSL *fe_tls_ssl_new(fe_tls_t *self)
{
    pthread_rwlock_rdlock(&self->lock);
    SSL *ssl = SSL_new(self->ctx);   /* takes its own reference to the context */
    pthread_rwlock_unlock(&self->lock);
    return ssl;
}

/* With reload_lock held. */
static bool reload_locked(fe_tls_t *self, const char *why)
{
    /* Signatures first: a file replaced while it is being read is read again next time. */
    self->cert_sig = file_sig(self->cert_path);
    self->key_sig = file_sig(self->key_path);
    SSL_CTX *fresh = fe_tls_ctx_new(self->cert_path, self->key_path, self->psk_ke);
    if (fresh && self->tickets)
        fe_tickets_attach(self->tickets, fresh);
    if (!fresh) {
        SG_ERROR("frontend", "tls.reload_failed", "trigger=%s cert=%s key=%s reason=\"the files cannot be used "
                 "(see the line before); new connections keep getting the previous certificate\"", why,
                 self->cert_path, self->key_path);
        return false;
    }
    pthread_rwlock_wrlock(&self->lock);
    SSL_CTX *old = self->ctx;
    self->ctx = fresh;
    pthread_rwlock_unlock(&self->lock);
    SSL_CTX_free(old);   /* gone once the last connection made from it is */
    char desc[160];
    describe(fresh, desc, sizeof desc);
    SG_INFO("frontend", "tls.reloaded", "trigger=%s cert=%s %s", why, self->cert_path, desc);
    return true;
}

bool fe_tls_reload(fe_tls_t *self, const char *why)
{
    pthread_mutex_lock(&self->reload_lock);
    bool ok = reload_locked(self, why);
    pthread_mutex_unlock(&self->reload_lock);
    return ok;
}

void fe_tls_check(fe_tls_t *self)
{
    pthread_mutex_lock(&self->reload_lock);
    file_sig_t c = file_sig(self->cert_path), k = file_sig(self->key_path);
    if (!sig_equal(&c, &self->cert_sig) || !sig_equal(&k, &self->key_sig))
        reload_locked(self, "file-changed");
    pthread_mutex_unlock(&self->reload_lock);
}

void fe_tls_use_tickets(fe_tls_t *self, fe_tickets_t *tickets)
{
    pthread_mutex_lock(&self->reload_lock);
    pthread_rwlock_wrlock(&self->lock);
    self->tickets = tickets;
    fe_tickets_attach(tickets, self->ctx);   /* before the first connection: no SSL uses ctx yet */
    pthread_rwlock_unlock(&self->lock);
    pthread_mutex_unlock(&self->reload_lock);
}
