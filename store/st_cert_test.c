/* st_cert_test.c — X.509 decisions without a gateway: which PEM is a CA, the CA set (put,
 * replace, delete, listing), and st_cert_verify's answer and reason for thumbprints, chains,
 * names and validity periods, with certificates made here by OpenSSL. */
#include "st_cert.h"
#include <string.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include "sg_test.h"

typedef struct {
    X509 *x;
    EVP_PKEY *k;
} cert_t;

/* CN=cn, signed by issuer (self-signed when NULL), valid from now+from to now+to seconds. */
static cert_t make(const char *cn, const cert_t *issuer, bool ca, long from, long to)
{
    cert_t c = {X509_new(), EVP_EC_gen("P-256")};
    X509_set_version(c.x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c.x), (long)(intptr_t)c.x & 0x7fffffff);
    X509_gmtime_adj(X509_getm_notBefore(c.x), from);
    X509_gmtime_adj(X509_getm_notAfter(c.x), to);
    X509_NAME *n = X509_get_subject_name(c.x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(c.x, issuer ? X509_get_subject_name(issuer->x) : n);
    X509_set_pubkey(c.x, c.k);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer ? issuer->x : c.x, c.x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    X509_add_ext(c.x, e, -1);
    X509_EXTENSION_free(e);
    X509_sign(c.x, issuer ? issuer->k : c.k, EVP_sha256());
    return c;
}

static void drop(cert_t *c)
{
    X509_free(c->x);
    EVP_PKEY_free(c->k);
}

static char *pem(const cert_t *c)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, c->x);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = strndup(p, (size_t)n);
    BIO_free(b);
    return out;
}

/* An sg_wire chain of the given certificates, leaf first. */
static void chain(sg_wbuf_t *w, const cert_t *const *cs, int n)
{
    sg_wbuf_reset(w);
    for (int i = 0; i < n; i++) {
        unsigned char *der = NULL;
        int len = i2d_X509(cs[i]->x, &der);
        CHECK_RC(sg_wire_put_cert(w, der, (size_t)len), SG_OK);
        OPENSSL_free(der);
    }
}

static void thumb(const cert_t *c, uint8_t out[32])
{
    unsigned char *der = NULL;
    int len = i2d_X509(c->x, &der);
    unsigned int n;
    EVP_Digest(der, (size_t)len, out, &n, EVP_sha256(), NULL);
    OPENSSL_free(der);
}

static const char *verify(st_cert_t *s, const cert_t *const *cs, int n, const char *id, const uint8_t (*tp)[32],
                          size_t ntp)
{
    sg_wbuf_t w;
    sg_wbuf_init(&w, SG_WIRE_MAX_CREDENTIAL);
    chain(&w, cs, n);
    const char *why = "ok";
    int64_t not_after = 0;
    sg_rc rc = st_cert_verify(s, w.data, w.len, id, tp, ntp, (int64_t)time(NULL), &not_after, &why);
    CHECK((rc == SG_OK) == (strcmp(why, "ok") == 0));
    CHECK(rc != SG_OK || not_after > (int64_t)time(NULL));
    sg_wbuf_fini(&w);
    return why;
}

int main(void)
{
    cert_t root = make("Root", NULL, true, -60, 86400), inter = make("Inter", &root, true, -60, 86400);
    cert_t other_root = make("Other", NULL, true, -60, 86400);
    cert_t dev = make("dev-1", &root, false, -60, 86400), via = make("dev-1", &inter, false, -60, 86400);
    cert_t expired = make("dev-1", &root, false, -7200, -3600), future = make("dev-1", &root, false, 3600, 7200);
    cert_t wrong_cn = make("dev-2", &root, false, -60, 86400), stranger = make("dev-1", &other_root, false, -60, 86400);
    char msg[200];
    char *root_pem = pem(&root), *dev_pem = pem(&dev);

    /* what a CA is */
    CHECK_RC(st_cert_check_ca(root_pem, strlen(root_pem), msg, sizeof msg), SG_OK);
    CHECK_RC(st_cert_check_ca(dev_pem, strlen(dev_pem), msg, sizeof msg), SG_E_INVALID);
    CHECK(strstr(msg, "not a certificate authority") != NULL);
    CHECK_RC(st_cert_check_ca("nope", 4, msg, sizeof msg), SG_E_INVALID);
    size_t two_len = 2 * strlen(root_pem);
    char *two = malloc(two_len + 1);
    strcpy(two, root_pem);
    strcat(two, root_pem);
    CHECK_RC(st_cert_check_ca(two, two_len, msg, sizeof msg), SG_E_INVALID);
    free(two);

    /* thumbprints: the leaf's, inside its validity period; names and issuers do not matter */
    st_cert_t *s = st_cert_new();
    uint8_t tps[2][32];
    thumb(&wrong_cn, tps[0]);
    thumb(&dev, tps[1]);
    const cert_t *one[1] = {&dev};
    CHECK_STR(verify(s, one, 1, "dev-1", tps, 2), "ok");
    CHECK_STR(verify(s, one, 1, "dev-1", tps, 1), "thumbprint-not-registered");
    one[0] = &wrong_cn;
    CHECK_STR(verify(s, one, 1, "dev-1", tps, 1), "ok");
    thumb(&expired, tps[0]);
    one[0] = &expired;
    CHECK_STR(verify(s, one, 1, "dev-1", tps, 1), "certificate-expired");
    thumb(&future, tps[0]);
    one[0] = &future;
    CHECK_STR(verify(s, one, 1, "dev-1", tps, 1), "certificate-not-yet-valid");

    /* CAs: none yet, then root */
    one[0] = &dev;
    CHECK_STR(verify(s, one, 1, "dev-1", NULL, 0), "no-certificate-authority-registered");
    bool replaced = true;
    CHECK_RC(st_cert_put(s, "root", root_pem, strlen(root_pem), &replaced), SG_OK);
    CHECK(!replaced && st_cert_count(s) == 1);
    CHECK_RC(st_cert_put(s, "root", root_pem, strlen(root_pem), &replaced), SG_OK);
    CHECK(replaced && st_cert_count(s) == 1);
    CHECK_RC(st_cert_put(s, "bad", "x", 1, &replaced), SG_E_INVALID);
    CHECK_STR(verify(s, one, 1, "dev-1", NULL, 0), "ok");
    CHECK_STR(verify(s, one, 1, "dev-2", NULL, 0), "subject-cn-is-not-the-device-id");
    one[0] = &wrong_cn;
    CHECK_STR(verify(s, one, 1, "dev-1", NULL, 0), "subject-cn-is-not-the-device-id");
    one[0] = &expired;
    CHECK_STR(verify(s, one, 1, "dev-1", NULL, 0), "certificate-expired");
    one[0] = &stranger;
    CHECK_STR(verify(s, one, 1, "dev-1", NULL, 0), "issuer-not-registered");
    one[0] = &root;   /* the CA itself is not a device of CN dev-1 */
    CHECK(strcmp(verify(s, one, 1, "dev-1", NULL, 0), "ok") != 0);
    /* through an intermediate: only when the client sends it */
    const cert_t *two_c[2] = {&via, &inter};
    CHECK_STR(verify(s, two_c, 2, "dev-1", NULL, 0), "ok");
    CHECK_STR(verify(s, two_c, 1, "dev-1", NULL, 0), "issuer-not-registered");

    /* listing and delete */
    json_t *l = st_cert_list(s);
    CHECK(json_array_size(l) == 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(l, 0), "name")), "root");
    json_decref(l);
    CHECK(st_cert_json(s, "none") == NULL);
    CHECK(st_cert_del(s, "root"));
    CHECK(!st_cert_del(s, "root"));
    one[0] = &dev;
    CHECK_STR(verify(s, one, 1, "dev-1", NULL, 0), "no-certificate-authority-registered");

    /* a damaged credential */
    const char *why = "ok";
    int64_t na;
    CHECK_RC(st_cert_verify(s, (const uint8_t *)"\0\3abc", 5, "dev-1", tps, 1, 0, &na, &why), SG_E_AUTH);
    CHECK_STR(why, "malformed-certificate");
    CHECK_RC(st_cert_verify(s, (const uint8_t *)"\0\7abc", 5, "dev-1", tps, 1, 0, &na, &why), SG_E_AUTH);
    CHECK_STR(why, "malformed-certificate-chain");

    /* the subject match alone: exactly one CN, equal to the id */
    unsigned char *der = NULL;
    int dl = i2d_X509(dev.x, &der);
    CHECK(st_cert_subject_is(der, (size_t)dl, "dev-1"));
    CHECK(!st_cert_subject_is(der, (size_t)dl, "dev-10") && !st_cert_subject_is(der, (size_t)dl, "dev-"));
    CHECK(!st_cert_subject_is(der, (size_t)dl - 1, "dev-1"));   /* not one whole certificate */
    OPENSSL_free(der);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(dev.x), "CN", MBSTRING_ASC, (const unsigned char *)"dev-1", -1, -1, 0);
    der = NULL;
    dl = i2d_X509(dev.x, &der);
    CHECK(!st_cert_subject_is(der, (size_t)dl, "dev-1"));   /* two CNs */
    OPENSSL_free(der);

    st_cert_destroy(&s);
    CHECK(s == NULL);
    free(root_pem);
    free(dev_pem);
    cert_t *all[] = {&root, &inter, &other_root, &dev, &via, &expired, &future, &wrong_cn, &stranger};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        drop(all[i]);
    TEST_DONE();
}
