/* fe_tls.c — server SSL_CTX set-up; see fe_tls.h. */
#include "fe_tls.h"
#include <openssl/err.h>
#include "sg_log.h"

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

SSL_CTX *fe_tls_ctx_new(const char *cert_path, const char *key_path)
{
    char err[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* SHA-256 suites first: TLS 1.3 external PSKs (SHA-256 in common clients) need them. */
    if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384") != 1 ||
        SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
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
