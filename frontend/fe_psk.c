/* fe_psk.c — asynchronous TLS PSK look-ups for the frontend; see fe_psk.h. Per connection the
 * state hangs off the SSL (ex_data), so connections of SAS and X.509 devices carry nothing. */
#include "fe_psk.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include "sg_log.h"
#include "sg_sas.h"
#include "sg_tlspsk.h"

enum { PSK_IDLE = 0, PSK_ASKED, PSK_ANSWERED };

typedef struct {
    uint8_t phase;
    bool used;                        /* the handshake took the key */
    uint8_t key_len;                  /* 0: the shard had none for this identity */
    char id[SG_DEVICE_ID_MAX + 1];
    uint8_t key[SG_WIRE_MAX_PSK];     /* wiped once used */
    uint8_t hash[32];                 /* SHA-256 of the key, for the CONNECT */
} psk_conn_t;

static int g_idx = -1;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static BIO_METHOD *g_gate;

static bool hold(SSL *ssl);
static bool conn_hold(fe_conn_t *c);

static void psk_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (ptr) {
        OPENSSL_cleanse(ptr, sizeof(psk_conn_t));
        free(ptr);
    }
}

/* ---- the read gate of TLS 1.2 PSK handshakes ----
 * A filter BIO in front of the socket: it refuses to read (a retry, as if nothing had come)
 * while hold() says the ClientKeyExchange must wait for its key. Because the check runs inside
 * every read OpenSSL makes, OpenSSL can never read that message first, not even in the call
 * that wrote ServerHelloDone (a check before SSL_do_handshake could not cover that read). Only
 * connections whose ClientHello offers TLS 1.2 PSK suites get one. */
static int gate_read(BIO *b, char *out, int len)
{
    BIO_clear_retry_flags(b);
    SSL *ssl = BIO_get_data(b);
    if (ssl && hold(ssl)) {
        BIO_set_retry_read(b);
        return -1;
    }
    int n = BIO_read(BIO_next(b), out, len);
    BIO_copy_next_retry(b);
    return n;
}

static int gate_write(BIO *b, const char *in, int len)
{
    BIO_clear_retry_flags(b);
    int n = BIO_write(BIO_next(b), in, len);
    BIO_copy_next_retry(b);
    return n;
}

static long gate_ctrl(BIO *b, int cmd, long num, void *ptr) { return BIO_ctrl(BIO_next(b), cmd, num, ptr); }

static int gate_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void make_index(void)
{
    g_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, psk_free);
    g_gate = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_FILTER, "sacgate-psk-gate");
    if (g_gate && (BIO_meth_set_read(g_gate, gate_read) != 1 || BIO_meth_set_write(g_gate, gate_write) != 1 ||
                   BIO_meth_set_ctrl(g_gate, gate_ctrl) != 1 || BIO_meth_set_create(g_gate, gate_create) != 1)) {
        BIO_meth_free(g_gate);
        g_gate = NULL;
    }
}

/* Put the gate in front of ssl's read BIO (once). */
static bool gate_install(SSL *ssl)
{
    BIO *rb = SSL_get_rbio(ssl);
    if (!g_gate || !rb)
        return false;
    BIO *gate = BIO_new(g_gate);
    if (!gate || BIO_up_ref(rb) != 1) {
        BIO_free(gate);
        return false;
    }
    BIO_set_data(gate, ssl);
    BIO_push(gate, rb);          /* the gate now holds the reference taken above */
    SSL_set0_rbio(ssl, gate);    /* drops the SSL's own reference to rb as its read BIO */
    return true;
}

/* A TLS 1.2 suite whose key exchange uses a PSK? */
static bool psk_kx(const SSL_CIPHER *ci)
{
    int kx = ci ? SSL_CIPHER_get_kx_nid(ci) : NID_undef;
    return kx == NID_kx_psk || kx == NID_kx_ecdhe_psk || kx == NID_kx_dhe_psk || kx == NID_kx_rsa_psk;
}

/* Does the ClientHello offer a TLS 1.2 PSK suite? */
static bool offers_psk12(SSL *ssl)
{
    const unsigned char *ids;
    size_t n = SSL_client_hello_get0_ciphers(ssl, &ids);
    for (size_t i = 0; i + 1 < n; i += 2)
        if (psk_kx(SSL_CIPHER_find(ssl, ids + i)))
            return true;
    return false;
}

static psk_conn_t *state(const SSL *ssl) { return g_idx >= 0 ? SSL_get_ex_data(ssl, g_idx) : NULL; }

static psk_conn_t *state_new(SSL *ssl)
{
    psk_conn_t *p = state(ssl);
    if (p)
        return p;
    p = calloc(1, sizeof *p);
    if (p && SSL_set_ex_data(ssl, g_idx, p) != 1) {
        free(p);
        p = NULL;
    }
    return p;
}

/* Ask the device's shard for the key of identity (a valid device id). */
static void ask(fe_conn_t *c, psk_conn_t *p, const uint8_t *id, size_t len)
{
    memcpy(p->id, id, len);
    p->id[len] = 0;
    p->phase = PSK_ASKED;
    sg_wbuf_t *f = &c->w->frame;
    sg_wbuf_reset(f);
    /* no session yet: the identity the handshake offers, and this connection */
    if (sg_frame_session_head(f, SG_MSG_PSK, &(sg_frame_session_t){p->id, fe_conn_handle(c), 0}, 0, 0) == SG_OK)
        (void)fe_link_send_queued(c->w, f);   /* waits in order when the link is full */
    fe_conn_pause(c, FE_P_KEY);
}

/* The key was handed to OpenSSL: keep only its hash. */
static void used(psk_conn_t *p)
{
    unsigned int n = 0;
    EVP_Digest(p->key, p->key_len, p->hash, &n, EVP_sha256(), NULL);
    OPENSSL_cleanse(p->key, sizeof p->key);
    p->used = true;
}

static int on_client_hello(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    (void)arg;
    const unsigned char *ext;
    size_t len;
    const uint8_t *id;
    size_t id_len;
    fe_conn_t *c = SSL_get_app_data(ssl);
    if (SSL_client_hello_get0_ext(ssl, SG_TLS_EXT_PRE_SHARED_KEY, &ext, &len) != 1) {
        /* no TLS 1.3 PSK offered: a certificate handshake, or TLS 1.2 PSK (gated until its key is here) */
        if (c && offers_psk12(ssl) && !state(ssl)) {
            if (!state_new(ssl) || !gate_install(ssl))
                return SSL_CLIENT_HELLO_ERROR;
            SSL_set_options(ssl, SSL_OP_NO_TICKET);   /* as for TLS 1.3 PSK: no ticket bytes on its connect */
        }
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    psk_conn_t *p = c ? state_new(ssl) : NULL;
    if (!p)
        return SSL_CLIENT_HELLO_ERROR;
    if (p->phase == PSK_ANSWERED)
        return SSL_CLIENT_HELLO_SUCCESS;
    if (p->phase == PSK_ASKED)
        return SSL_CLIENT_HELLO_RETRY;
    if (sg_tls13_psk_identity(ext, len, &id, &id_len) != SG_OK || !sg_device_id_valid((const char *)id, id_len)) {
        p->phase = PSK_ANSWERED;   /* nothing to look up: OpenSSL finds no key for it */
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    ask(c, p, id, id_len);
    return SSL_CLIENT_HELLO_RETRY;
}

/* TLS 1.3: the session for the identity the shard gave a key for. Built with the SHA-256 suite
 * every client's external PSK uses (the context prefers the SHA-256 suites). */
static int on_find_session(SSL *ssl, const unsigned char *identity, size_t len, SSL_SESSION **sess)
{
    static const unsigned char aes128gcm[2] = {0x13, 0x01};
    *sess = NULL;
    psk_conn_t *p = state(ssl);
    if (!p || p->phase != PSK_ANSWERED || p->key_len == 0 || p->used || len != strlen(p->id) ||
        memcmp(identity, p->id, len) != 0)
        return 1;   /* no key: the handshake goes on without one (and fails for a PSK-only client) */
    const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, aes128gcm);
    SSL_SESSION *s = cipher ? SSL_SESSION_new() : NULL;
    if (!s || SSL_SESSION_set1_master_key(s, p->key, p->key_len) != 1 || SSL_SESSION_set_cipher(s, cipher) != 1 ||
        SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) != 1) {
        SSL_SESSION_free(s);
        return 0;
    }
    used(p);
    /* A PSK device resumes with its key anyway: a session ticket (~250 bytes) would only add to
     * the bytes of its connect (docs/credentials.md). */
    SSL_set_num_tickets(ssl, 0);
    *sess = s;
    return 1;
}

/* TLS 1.2 PSK suites: the key the read gate fetched. */
static unsigned int on_psk12(SSL *ssl, const char *identity, unsigned char *psk, unsigned int max)
{
    psk_conn_t *p = state(ssl);
    if (!p || p->phase != PSK_ANSWERED || p->key_len == 0 || p->used || !identity || strcmp(identity, p->id) != 0 ||
        p->key_len > max)
        return 0;   /* OpenSSL fails the handshake (unknown_psk_identity) */
    memcpy(psk, p->key, p->key_len);
    unsigned int n = p->key_len;
    used(p);
    return n;
}

void fe_psk_ctx_init(SSL_CTX *ctx, bool psk_ke)
{
    pthread_once(&g_once, make_index);
    SSL_CTX_set_client_hello_cb(ctx, on_client_hello, NULL);
    SSL_CTX_set_psk_find_session_callback(ctx, on_find_session);
    SSL_CTX_set_psk_server_callback(ctx, on_psk12);
    if (psk_ke)
        SSL_CTX_set_options(ctx, SSL_OP_ALLOW_NO_DHE_KEX);
}

/* A ClientKeyExchange with its identity fits in this many bytes (an id is at most 128; an
 * ECDHE point 133); a longer record is left to OpenSSL, which then finds no key. */
#define PEEK_MAX 1024

static bool hold(SSL *ssl)
{
    fe_conn_t *c = SSL_get_app_data(ssl);
    return c && conn_hold(c);
}

/* True while OpenSSL must not read the ClientKeyExchange: the key is being looked up (the look-up
 * starts here, from a peek at the record). */
static bool conn_hold(fe_conn_t *c)
{
    /* Waiting for the client's second TLS 1.2 flight, with a PSK suite chosen. */
    if (SSL_get_state(c->ssl) != TLS_ST_SW_SRVR_DONE || SSL_version(c->ssl) != TLS1_2_VERSION ||
        !psk_kx(SSL_get_pending_cipher(c->ssl)))
        return false;
    psk_conn_t *p = state_new(c->ssl);
    if (!p || p->phase == PSK_ANSWERED)
        return false;
    if (p->phase == PSK_ASKED)
        return true;
    uint8_t buf[PEEK_MAX];
    ssize_t n = recv(c->io.fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n <= 0)
        return false;   /* nothing yet, or the peer is gone: OpenSSL sees it */
    const uint8_t *id;
    size_t id_len;
    /* A record that came in part (SG_E_AGAIN) is not waited for: input left in the socket would
     * wake this level-triggered loop again and again. The ClientKeyExchange is a couple of
     * hundred bytes sent at once; a client that splits it fails its handshake. */
    if (sg_tls12_cke_identity(buf, (size_t)n, &id, &id_len) != SG_OK || !sg_device_id_valid((const char *)id, id_len)) {
        p->phase = PSK_ANSWERED;   /* not one we can look up: OpenSSL finds no key and fails it */
        return false;
    }
    ask(c, p, id, id_len);
    return true;
}

bool fe_psk_is_frame(const sg_wire_hdr_t *h)
{
    uint8_t about;
    uint16_t pid;
    bool named;
    return h->type == SG_MSG_PSK_RES ||
           (h->type == SG_MSG_ERROR && sg_wire_get_error(h, &about, &pid, &named) == SG_OK && about == SG_MSG_PSK);
}

void fe_psk_frame(fe_worker_t *w, const sg_wire_hdr_t *h)
{
    fe_conn_t *c = fe_conn_by_handle(w, h->corr);
    psk_conn_t *p = c && c->state == FE_HANDSHAKE ? state(c->ssl) : NULL;
    if (!p || p->phase != PSK_ASKED || h->device_len != strlen(p->id) || memcmp(h->device, p->id, h->device_len) != 0)
        return;   /* that connection is gone or has moved on */
    const uint8_t *key;
    size_t len;
    p->key_len = 0;
    if (h->type == SG_MSG_PSK_RES && h->status == SG_PSK_OK && sg_wire_get_psk(h, &key, &len) == SG_OK && len > 0) {
        memcpy(p->key, key, len);
        p->key_len = (uint8_t)len;
    } else {
        SG_INFO("frontend", "psk.no_key", "device=%s reason=%s", p->id,
                h->type == SG_MSG_ERROR ? "no-shard-answered" : h->status == SG_PSK_DISABLED ? "disabled" : "not-a-psk-device");
    }
    p->phase = PSK_ANSWERED;
    fe_conn_handshake_resume(c);
}

const char *fe_psk_identity(const fe_conn_t *c, uint8_t hash[32])
{
    psk_conn_t *p = c->ssl ? state(c->ssl) : NULL;
    if (!p || !p->used)
        return NULL;
    memcpy(hash, p->hash, 32);
    return p->id;
}
