/* st_cert.c — certificate authorities a shard trusts and the X.509 decision of a device's
 * CONNECT; see st_cert.h. The CAs are few (ST_CA_MAX) and change rarely: a sorted array, and
 * an X509_STORE rebuilt on each change, which every verification shares (the writer is the
 * only thread that touches either). Parsing and chain building are OpenSSL's. */
#include "st_cert.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include "sg_codec.h"
#include "sg_log.h"
#include "sg_sas.h"

typedef struct {
    char *name;
    char *pem;
    X509 *x;
} ca_t;

struct st_cert {
    ca_t *cas;            /* sorted by name */
    size_t n;
    X509_STORE *store;    /* every CA in cas */
};

st_cert_t *st_cert_new(void)
{
    st_cert_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cas = calloc(ST_CA_MAX, sizeof *c->cas);
    c->store = X509_STORE_new();
    if (!c->cas || !c->store)
        st_cert_destroy(&c);
    return c;
}

static void ca_free(ca_t *a)
{
    free(a->name);
    free(a->pem);
    X509_free(a->x);
    memset(a, 0, sizeof *a);
}

void st_cert_destroy(st_cert_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    st_cert_t *c = *self_p;
    for (size_t i = 0; c->cas && i < c->n; i++)
        ca_free(&c->cas[i]);
    free(c->cas);
    X509_STORE_free(c->store);
    free(c);
    *self_p = NULL;
}

size_t st_cert_count(const st_cert_t *self) { return self->n; }

size_t st_cert_key(char *out, const char *name, size_t len)
{
    out[0] = ST_CA_PREFIX[0];
    memcpy(out + 1, name, len);
    return len + 1;
}

void st_cert_thumbprint(const uint8_t *der, size_t len, char out[65])
{
    uint8_t md[32];
    unsigned int mdlen = 0;
    EVP_Digest(der, len, md, &mdlen, EVP_sha256(), NULL);
    sg_hex_encode(md, 32, out);
}

/* Exactly one certificate in pem, or NULL. */
static X509 *pem_one(const char *pem, size_t len)
{
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    X509 *extra = x ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    if (extra) {
        X509_free(extra);
        X509_free(x);
        return NULL;
    }
    return x;
}

sg_rc st_cert_check_ca(const char *pem, size_t len, char *msg, size_t msg_len)
{
    if (len == 0 || len > ST_CA_PEM_MAX) {
        snprintf(msg, msg_len, "certificate must be one PEM certificate of at most %d bytes", ST_CA_PEM_MAX);
        return SG_E_INVALID;
    }
    X509 *x = pem_one(pem, len);
    if (!x) {
        snprintf(msg, msg_len, "certificate must hold exactly one PEM certificate (-----BEGIN CERTIFICATE-----)");
        return SG_E_INVALID;
    }
    /* 1: CA:TRUE; 3: a self-signed v1 root; 4/5: a key-usage-only CA (not accepted: ambiguous). */
    int ca = X509_check_ca(x);
    X509_free(x);
    ERR_clear_error();
    if (ca != 1 && ca != 3) {
        snprintf(msg, msg_len, "the certificate is not a certificate authority (basic constraints CA:TRUE)");
        return SG_E_INVALID;
    }
    return SG_OK;
}

static size_t find(const st_cert_t *self, const char *name, bool *found)
{
    size_t lo = 0, hi = self->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(self->cas[mid].name, name);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static void rebuild(st_cert_t *self)
{
    X509_STORE *s = X509_STORE_new();
    if (!s)
        return;   /* out of memory: keep the old store */
    for (size_t i = 0; i < self->n; i++)
        X509_STORE_add_cert(s, self->cas[i].x);   /* takes its own reference */
    ERR_clear_error();
    X509_STORE_free(self->store);
    self->store = s;
}

sg_rc st_cert_put(st_cert_t *self, const char *name, const char *pem, size_t len, bool *replaced)
{
    X509 *x = pem_one(pem, len);
    SG_ENSURE(x, SG_E_INVALID);
    bool found;
    size_t i = find(self, name, &found);
    if (!found && self->n >= ST_CA_MAX) {
        X509_free(x);
        return SG_E_FULL;
    }
    ca_t a = {.name = strdup(name), .pem = strndup(pem, len), .x = x};
    if (!a.name || !a.pem) {
        ca_free(&a);
        return SG_E_NOMEM;
    }
    if (found) {
        ca_free(&self->cas[i]);
    } else {
        memmove(&self->cas[i + 1], &self->cas[i], (self->n - i) * sizeof *self->cas);
        self->n++;
    }
    self->cas[i] = a;
    *replaced = found;
    rebuild(self);
    return SG_OK;
}

bool st_cert_del(st_cert_t *self, const char *name)
{
    bool found;
    size_t i = find(self, name, &found);
    if (!found)
        return false;
    ca_free(&self->cas[i]);
    memmove(&self->cas[i], &self->cas[i + 1], (self->n - i - 1) * sizeof *self->cas);
    self->n--;
    rebuild(self);
    return true;
}

sg_rc st_cert_load(st_cert_t *self, st_db_t *db)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db->db, db->ro, db->cf[ST_CF_DEFAULT]);
    for (rocksdb_iter_seek(it, ST_CA_PREFIX, 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        const char *v = rocksdb_iter_value(it, &vl);
        if (kl < 2 || k[0] != ST_CA_PREFIX[0])
            break;
        char name[SG_DEVICE_ID_MAX + 1];
        if (kl - 1 > SG_DEVICE_ID_MAX)
            continue;
        memcpy(name, k + 1, kl - 1);
        name[kl - 1] = 0;
        bool replaced;
        if (st_cert_put(self, name, v, vl, &replaced) != SG_OK)
            SG_ERROR("store", "ca.load_failed", "name=%s reason=\"stored certificate does not parse\"", name);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    if (err) {
        SG_ERROR("store", "ca.load_failed", "reason=\"%s\"", err);
        rocksdb_free(err);
        return SG_E_IO;
    }
    return SG_OK;
}

static json_t *time_json(const ASN1_TIME *t)
{
    struct tm tm;
    char buf[32];
    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return json_null();
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

static json_t *ca_json(const ca_t *a)
{
    char subject[512], tp[65];
    X509_NAME_oneline(X509_get_subject_name(a->x), subject, sizeof subject);
    uint8_t *der = NULL;
    int n = i2d_X509(a->x, &der);
    st_cert_thumbprint(der, n > 0 ? (size_t)n : 0, tp);
    OPENSSL_free(der);
    return json_pack("{s:s,s:s,s:o,s:s,s:s}", "name", a->name, "subject", subject, "notAfter",
                     time_json(X509_get0_notAfter(a->x)), "thumbprint", tp, "certificate", a->pem);
}

json_t *st_cert_json(const st_cert_t *self, const char *name)
{
    bool found;
    size_t i = find(self, name, &found);
    return found ? ca_json(&self->cas[i]) : NULL;
}

json_t *st_cert_list(const st_cert_t *self)
{
    json_t *a = json_array();
    for (size_t i = 0; i < self->n; i++)
        json_array_append_new(a, ca_json(&self->cas[i]));
    return a;
}

/* The leaf's subject CN equals id (one CN, exactly). */
static bool cn_is(X509 *x, const char *id)
{
    X509_NAME *n = X509_get_subject_name(x);
    int i = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
    if (i < 0 || X509_NAME_get_index_by_NID(n, NID_commonName, i) >= 0)
        return false;
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, i)));
    bool ok = len >= 0 && (size_t)len == strlen(id) && memcmp(utf8, id, (size_t)len) == 0;
    OPENSSL_free(utf8);
    return ok;
}

static X509 *der_x509(const uint8_t *der, size_t len)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (x && p != der + len) {   /* trailing bytes: not one certificate */
        X509_free(x);
        x = NULL;
    }
    return x;
}

bool st_cert_subject_is(const uint8_t *der, size_t len, const char *id)
{
    X509 *x = der_x509(der, len);
    bool ok = x && cn_is(x, id);
    X509_free(x);
    ERR_clear_error();
    return ok;
}

static sg_rc verify_ca(const st_cert_t *self, X509 *leaf, STACK_OF(X509) *untrusted, const char *id, int64_t now,
                       const char **why)
{
    if (self->n == 0) {
        *why = "no-certificate-authority-registered";
        return SG_E_AUTH;
    }
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (!ctx || X509_STORE_CTX_init(ctx, self->store, leaf, untrusted) != 1) {
        X509_STORE_CTX_free(ctx);
        *why = "out-of-memory";
        return SG_E_AUTH;
    }
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx), (time_t)now);
    int ok = X509_verify_cert(ctx);
    int err = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    if (ok != 1) {
        switch (err) {
        case X509_V_ERR_CERT_HAS_EXPIRED: *why = "certificate-expired"; break;
        case X509_V_ERR_CERT_NOT_YET_VALID: *why = "certificate-not-yet-valid"; break;
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: *why = "issuer-not-registered"; break;
        default: *why = "chain-does-not-verify"; break;
        }
        return SG_E_AUTH;
    }
    if (!cn_is(leaf, id)) {
        *why = "subject-cn-is-not-the-device-id";
        return SG_E_AUTH;
    }
    return SG_OK;
}

sg_rc st_cert_verify(const st_cert_t *self, const uint8_t *chain, size_t chain_len, const char *id,
                     const uint8_t (*thumbs)[32], size_t n_thumbs, int64_t now, int64_t *not_after,
                     const char **why)
{
    const uint8_t *ders[SG_WIRE_MAX_CHAIN];
    size_t lens[SG_WIRE_MAX_CHAIN], n;
    if (sg_wire_get_chain(chain, chain_len, ders, lens, &n) != SG_OK) {
        *why = "malformed-certificate-chain";
        return SG_E_AUTH;
    }
    X509 *leaf = der_x509(ders[0], lens[0]);
    if (!leaf) {
        ERR_clear_error();
        *why = "malformed-certificate";
        return SG_E_AUTH;
    }
    sg_rc rc = SG_E_AUTH;
    if (n_thumbs > 0) {
        uint8_t md[32];
        unsigned int mdlen = 0;
        bool match = false;
        EVP_Digest(ders[0], lens[0], md, &mdlen, EVP_sha256(), NULL);
        for (size_t i = 0; i < n_thumbs; i++)
            match |= CRYPTO_memcmp(md, thumbs[i], 32) == 0;
        time_t t = (time_t)now;
        if (!match)
            *why = "thumbprint-not-registered";
        else if (X509_cmp_time(X509_get0_notAfter(leaf), &t) <= 0)
            *why = "certificate-expired";
        else if (X509_cmp_time(X509_get0_notBefore(leaf), &t) > 0)
            *why = "certificate-not-yet-valid";
        else
            rc = SG_OK;
    } else {
        STACK_OF(X509) *untrusted = sk_X509_new_null();
        bool good = untrusted != NULL;
        for (size_t i = 1; good && i < n; i++) {
            X509 *x = der_x509(ders[i], lens[i]);
            good = x && sk_X509_push(untrusted, x) > 0;
            if (!good)
                X509_free(x);
        }
        if (good)
            rc = verify_ca(self, leaf, untrusted, id, now, why);
        else
            *why = "malformed-certificate";
        sk_X509_pop_free(untrusted, X509_free);
    }
    if (rc == SG_OK) {
        struct tm tm;
        *not_after = ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm) == 1 ? (int64_t)timegm(&tm) : 0;
    }
    X509_free(leaf);
    ERR_clear_error();
    return rc;
}
