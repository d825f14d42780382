/* fe_cred.c — the client certificate chain of a connection as the AUTH credential; see
 * fe_cred.h. The frontend does not judge the certificates (the device's shard does): it only
 * passes on what the handshake carried, bounded. */
#include "fe_cred.h"
#include <openssl/x509.h>
#include "sg_wire.h"

bool fe_conn_has_client_cert(const fe_conn_t *c) { return c->ssl && SSL_get0_peer_certificate(c->ssl) != NULL; }

static sg_rc put_x509(X509 *x, sg_wbuf_t *out)
{
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    SG_ENSURE(n > 0, SG_E_MALFORMED);
    sg_rc rc = (size_t)n + 2 + out->len <= SG_WIRE_MAX_CREDENTIAL ? sg_wire_put_cert(out, der, (size_t)n) : SG_E_TOO_BIG;
    OPENSSL_free(der);
    return rc;
}

sg_rc fe_conn_client_chain(const fe_conn_t *c, sg_wbuf_t *out)
{
    X509 *leaf = SSL_get0_peer_certificate(c->ssl);
    SG_ENSURE(leaf, SG_E_NOT_FOUND);
    SG_GUARD(put_x509(leaf, out));
    /* On a server the chain OpenSSL keeps is what the client sent after its leaf. */
    STACK_OF(X509) *sk = SSL_get_peer_cert_chain(c->ssl);
    int n = sk ? sk_X509_num(sk) : 0;
    SG_ENSURE(n < SG_WIRE_MAX_CHAIN, SG_E_TOO_BIG);
    for (int i = 0; i < n; i++)
        SG_GUARD(put_x509(sk_X509_value(sk, i), out));
    return SG_OK;
}
