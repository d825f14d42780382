/* sg_pki_test.c — unit test of the development PKI: files and modes, idempotence, certificate
 * contents and chain verification with OpenSSL's verifier, regeneration and repair, bad input,
 * and real in-process TLS handshakes (server auth and mutual) over a socketpair. */
#include "sg_pki.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "sg_test.h"

static char g_base[64];

/* ---- helpers ---------------------------------------------------------------------------- */

static const char *path_in(char *buf, size_t cap, const char *dir, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
    return buf;
}

typedef struct {
    unsigned char *data;
    size_t len;
    ino_t ino;
    mode_t mode;
} file_t;

static file_t read_file(const char *path)
{
    file_t f = {0};
    struct stat st;
    FILE *fp = fopen(path, "rb");
    if (!fp || fstat(fileno(fp), &st) != 0) {
        if (fp)
            fclose(fp);
        return f;
    }
    f.ino = st.st_ino;
    f.mode = st.st_mode & 07777;
    f.len = (size_t)st.st_size;
    f.data = malloc(f.len + 1);
    if (f.data && fread(f.data, 1, f.len, fp) != f.len) {
        free(f.data);
        f.data = NULL;
    }
    fclose(fp);
    return f;
}

static bool same_file(const file_t *a, const file_t *b)
{
    return a->data && b->data && a->len == b->len && memcmp(a->data, b->data, a->len) == 0 &&
           a->ino == b->ino;
}

static bool same_bytes(const file_t *a, const file_t *b)
{
    return a->data && b->data && a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

static mode_t mode_of(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_mode & 07777 : (mode_t)-1;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static X509 *load_cert(const char *dir, const char *name)
{
    char path[256];
    FILE *fp = fopen(path_in(path, sizeof path, dir, name), "r");
    if (!fp)
        return NULL;
    X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    return x;
}

static EVP_PKEY *load_key(const char *dir, const char *name)
{
    char path[256];
    FILE *fp = fopen(path_in(path, sizeof path, dir, name), "r");
    if (!fp)
        return NULL;
    EVP_PKEY *k = PEM_read_PrivateKey(fp, NULL, NULL, (void *)"");
    fclose(fp);
    return k;
}

/* X509_verify_cert of cert against ca alone, for purpose; returns the verify error code. */
static int verify(X509 *ca, X509 *cert, int purpose)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int result = -1;
    if (store && ctx && ca && cert && X509_STORE_add_cert(store, ca) == 1 &&
        X509_STORE_CTX_init(ctx, store, cert, NULL) == 1 &&
        X509_STORE_CTX_set_purpose(ctx, purpose) == 1) {
        result = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
        if (result == X509_V_OK && X509_STORE_CTX_get_error(ctx) != X509_V_OK)
            result = X509_STORE_CTX_get_error(ctx);
    }
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    ERR_clear_error();
    return result;
}

static const char *cn_of(X509 *x, char *buf, int cap)
{
    if (!x || X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, cap) < 0)
        return NULL;
    return buf;
}

/* Validity length in whole days; -1 if not a whole number of days. */
static int validity_days(X509 *x)
{
    int days = 0, secs = 0;
    if (!ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x), X509_get0_notAfter(x)) || secs)
        return -1;
    return days;
}

static bool ext_critical(X509 *x, int nid)
{
    int i = X509_get_ext_by_NID(x, nid, -1);
    return i >= 0 && X509_EXTENSION_get_critical(X509_get_ext(x, i)) == 1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* ---- files and certificate contents ----------------------------------------------------- */

static const char *const k_files[] = {"ca.crt", "ca.key", "server.crt", "server.key"};

static void check_fresh_dir(const char *dir)
{
    char path[256];
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_OK);
    CHECK(mode_of(dir) == 0700);
    CHECK(mode_of(path_in(path, sizeof path, dir, "ca.crt")) == 0644);
    CHECK(mode_of(path_in(path, sizeof path, dir, "server.crt")) == 0644);
    CHECK(mode_of(path_in(path, sizeof path, dir, "ca.key")) == 0600);
    CHECK(mode_of(path_in(path, sizeof path, dir, "server.key")) == 0600);
    CHECK(count_entries(dir) == 4); /* no temporary files left behind */

    static const char k_pkcs8[] = "-----BEGIN PRIVATE KEY-----\n";
    for (int i = 1; i < 4; i += 2) {
        file_t f = read_file(path_in(path, sizeof path, dir, k_files[i]));
        CHECK(f.data && f.len > sizeof k_pkcs8 && memcmp(f.data, k_pkcs8, sizeof k_pkcs8 - 1) == 0);
        free(f.data);
    }

    /* A second run without extra names keeps every file as it is. */
    file_t before[4], after[4];
    for (int i = 0; i < 4; i++)
        before[i] = read_file(path_in(path, sizeof path, dir, k_files[i]));
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_OK);
    for (int i = 0; i < 4; i++) {
        after[i] = read_file(path_in(path, sizeof path, dir, k_files[i]));
        CHECK(same_file(&before[i], &after[i]));
        free(after[i].data);
    }
    for (int i = 0; i < 4; i++)
        free(before[i].data);
}

/* With extra names on an existing directory the server certificate is issued again for them:
 * same CA, same server key, a new serial, the new names, still verified by the old CA. */
static void check_reissue(void)
{
    char dir[128], path[256];
    snprintf(dir, sizeof dir, "%s/reissue", g_base);
    CHECK_RC(sg_pki_ensure_dev(dir, "old.example.test"), SG_OK);
    file_t before[4], after[4];
    for (int i = 0; i < 4; i++)
        before[i] = read_file(path_in(path, sizeof path, dir, k_files[i]));
    X509 *old = load_cert(dir, "server.crt");
    CHECK_RC(sg_pki_ensure_dev(dir, "new.example.test,10.9.8.7"), SG_OK);
    CHECK(count_entries(dir) == 4);
    for (int i = 0; i < 4; i++) {
        after[i] = read_file(path_in(path, sizeof path, dir, k_files[i]));
        CHECK(same_file(&before[i], &after[i]) == (i != 2));   /* only server.crt changed */
        free(before[i].data);
        free(after[i].data);
    }
    X509 *ca = load_cert(dir, "ca.crt"), *server = load_cert(dir, "server.crt");
    EVP_PKEY *key = load_key(dir, "server.key");
    CHECK(ca && server && old && key);
    if (ca && server && old && key) {
        CHECK(verify(ca, server, X509_PURPOSE_SSL_SERVER) == X509_V_OK);
        CHECK(X509_check_private_key(server, key) == 1);
        CHECK(X509_check_host(server, "new.example.test", 0, 0, NULL) == 1);
        CHECK(X509_check_ip_asc(server, "10.9.8.7", 0) == 1);
        CHECK(X509_check_host(server, "localhost", 0, 0, NULL) == 1);
        CHECK(X509_check_host(server, "old.example.test", 0, 0, NULL) == 0);   /* names replaced, not added */
        CHECK(ASN1_INTEGER_cmp(X509_get0_serialNumber(server), X509_get0_serialNumber(old)) != 0);
    }
    X509_free(old);
    X509_free(server);
    /* Without the CA key nothing can be issued: refused, the certificate left as it was. */
    file_t kept = read_file(path_in(path, sizeof path, dir, "server.crt"));
    char ca_key[256], moved[256];
    path_in(ca_key, sizeof ca_key, dir, "ca.key");
    snprintf(moved, sizeof moved, "%s/reissue-ca.key", g_base);
    CHECK(rename(ca_key, moved) == 0);
    CHECK_RC(sg_pki_ensure_dev(dir, "other.example.test"), SG_E_INVALID);
    file_t now = read_file(path_in(path, sizeof path, dir, "server.crt"));
    CHECK(same_file(&kept, &now));
    CHECK(rename(moved, ca_key) == 0);
    free(kept.data);
    free(now.data);
    X509_free(ca);
    EVP_PKEY_free(key);
}

static void check_contents(const char *dir)
{
    char cn[256];
    X509 *ca = load_cert(dir, "ca.crt");
    X509 *server = load_cert(dir, "server.crt");
    EVP_PKEY *ca_key = load_key(dir, "ca.key");
    EVP_PKEY *server_key = load_key(dir, "server.key");
    CHECK(ca && server && ca_key && server_key);
    if (!ca || !server || !ca_key || !server_key)
        goto done;

    /* The CA */
    CHECK_STR(cn_of(ca, cn, sizeof cn), "sacgate development CA");
    CHECK(X509_get_version(ca) == X509_VERSION_3);
    CHECK(X509_check_issued(ca, ca) == X509_V_OK);
    CHECK(X509_check_ca(ca) == 1);
    CHECK(ext_critical(ca, NID_basic_constraints));
    CHECK(X509_get_key_usage(ca) == (KU_KEY_CERT_SIGN | KU_CRL_SIGN));
    CHECK(X509_get0_subject_key_id(ca) != NULL);
    CHECK(validity_days(ca) == 3650);
    CHECK(X509_check_private_key(ca, ca_key) == 1);
    CHECK(EVP_PKEY_is_a(ca_key, "EC"));
    char group[64] = "";
    size_t glen = 0;
    CHECK(EVP_PKEY_get_group_name(ca_key, group, sizeof group, &glen) == 1);
    CHECK_STR(group, "prime256v1");

    /* Serials are random 128-bit numbers: with 128 random bits, fewer than 96 significant bits
     * happens once in 2^32 runs. */
    BIGNUM *s1 = ASN1_INTEGER_to_BN(X509_get0_serialNumber(ca), NULL);
    BIGNUM *s2 = ASN1_INTEGER_to_BN(X509_get0_serialNumber(server), NULL);
    CHECK(s1 && s2 && BN_num_bits(s1) > 96 && BN_num_bits(s1) <= 128 && BN_num_bits(s2) > 96 &&
          BN_cmp(s1, s2) != 0 && !BN_is_negative(s1));
    BN_free(s1);
    BN_free(s2);

    /* The server certificate */
    CHECK_STR(cn_of(server, cn, sizeof cn), "localhost");
    CHECK(X509_check_ca(server) == 0);
    CHECK(X509_get_key_usage(server) == KU_DIGITAL_SIGNATURE);
    CHECK(X509_get_extended_key_usage(server) == XKU_SSL_SERVER);
    CHECK(X509_get0_authority_key_id(server) != NULL);
    CHECK(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(server), X509_get0_subject_key_id(ca)) == 0);
    CHECK(validity_days(server) == 825);
    CHECK(X509_check_private_key(server, server_key) == 1);
    time_t now = time(NULL), t_early = now - 2 * 3600, t_late = now - 3600 + 300;
    CHECK(X509_cmp_time(X509_get0_notBefore(server), &t_early) > 0);  /* backdated one hour, */
    CHECK(X509_cmp_time(X509_get0_notBefore(server), &t_late) < 0);   /* not more, not less */

    CHECK(verify(ca, server, X509_PURPOSE_SSL_SERVER) == X509_V_OK);
    CHECK(verify(ca, server, X509_PURPOSE_SSL_CLIENT) != X509_V_OK); /* serverAuth only */
    CHECK(X509_check_host(server, "localhost", 0, 0, NULL) == 1);
    CHECK(X509_check_ip_asc(server, "127.0.0.1", 0) == 1);
    CHECK(X509_check_ip_asc(server, "::1", 0) == 1);
    CHECK(X509_check_host(server, "gw.example.test", 0, 0, NULL) == 0);
    CHECK(X509_check_ip_asc(server, "10.1.2.3", 0) == 0);

done:
    X509_free(ca);
    X509_free(server);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(server_key);
}

static void check_extra_names(void)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/extra", g_base);
    CHECK_RC(sg_pki_ensure_dev(dir, "gw.example.test,10.1.2.3"), SG_OK);
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_OK);
    X509 *ca = load_cert(dir, "ca.crt"), *server = load_cert(dir, "server.crt");
    CHECK(verify(ca, server, X509_PURPOSE_SSL_SERVER) == X509_V_OK);
    CHECK(X509_check_host(server, "gw.example.test", 0, 0, NULL) == 1);
    CHECK(X509_check_ip_asc(server, "10.1.2.3", 0) == 1);
    CHECK(X509_check_host(server, "localhost", 0, 0, NULL) == 1);
    CHECK(X509_check_ip_asc(server, "127.0.0.1", 0) == 1);
    CHECK(X509_check_ip_asc(server, "::1", 0) == 1);
    CHECK(X509_check_host(server, "10.1.2.3", 0, 0, NULL) == 0); /* an IP entry, not a DNS one */
    X509_free(ca);
    X509_free(server);

    /* Blanks, empty entries, IPv6, a wildcard, and a repeat of a default name. */
    snprintf(dir, sizeof dir, "%s/extra2", g_base);
    CHECK_RC(sg_pki_ensure_dev(dir, " gw2.example.test , ,fd00::7,*.pods.example.test,localhost,"), SG_OK);
    server = load_cert(dir, "server.crt");
    CHECK(X509_check_host(server, "gw2.example.test", 0, 0, NULL) == 1);
    CHECK(X509_check_ip_asc(server, "fd00::7", 0) == 1);
    CHECK(X509_check_host(server, "a.pods.example.test", 0, 0, NULL) == 1);
    GENERAL_NAMES *san = X509_get_ext_d2i(server, NID_subject_alt_name, NULL, NULL);
    CHECK(san && sk_GENERAL_NAME_num(san) == 6); /* localhost, 127.0.0.1, ::1 + three */
    GENERAL_NAMES_free(san);
    X509_free(server);
}

static void check_bad_input(void)
{
    static const char *const bad[] = {
        "ok.example.test,bad name", "a..b", "-lead.example", "trail-.example", "x.example.",
        "under_score.example", "a.*.example", "1.2.3.4/24", "host:443",
    };
    char dir[128], path[256];
    snprintf(dir, sizeof dir, "%s/bad", g_base);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(sg_pki_ensure_dev(dir, bad[i]), SG_E_INVALID);
        CHECK(!exists(dir)); /* names are checked before anything is written */
    }
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_RC(sg_pki_ensure_dev(dir, longname), SG_E_INVALID);
    CHECK_RC(sg_pki_ensure_dev(NULL, NULL), SG_E_INVALID);
    CHECK_RC(sg_pki_ensure_dev("", NULL), SG_E_INVALID);

    /* A regular file where the directory should be. */
    snprintf(path, sizeof path, "%s/afile", g_base);
    FILE *fp = fopen(path, "w");
    CHECK(fp);
    if (fp)
        fclose(fp);
    CHECK_RC(sg_pki_ensure_dev(path, NULL), SG_E_IO);

    CHECK_RC(sg_pki_make_client(NULL, "d", "x"), SG_E_INVALID);
    CHECK_RC(sg_pki_make_client(dir, NULL, "x"), SG_E_INVALID);
    CHECK_RC(sg_pki_make_client(dir, "d", NULL), SG_E_INVALID);
    CHECK_RC(sg_pki_make_client(dir, "", "x"), SG_E_INVALID);
    CHECK_RC(sg_pki_make_client(dir, "bad/id", "x"), SG_E_INVALID);
    char long_id[130];
    memset(long_id, 'd', 129);
    long_id[129] = '\0';
    CHECK_RC(sg_pki_make_client(dir, long_id, "x"), SG_E_INVALID);
    snprintf(path, sizeof path, "%s/nowhere", g_base);
    CHECK_RC(sg_pki_make_client(dir, "device-1", path), SG_E_IO); /* no CA there */
    CHECK(!exists(dir));
}

static void check_client(const char *dir)
{
    char prefix[128], path[256], cn[256];
    snprintf(prefix, sizeof prefix, "%s/device-42", g_base);
    CHECK_RC(sg_pki_make_client(dir, "device-42", prefix), SG_OK);
    snprintf(path, sizeof path, "%s.crt", prefix);
    CHECK(mode_of(path) == 0644);
    snprintf(path, sizeof path, "%s.key", prefix);
    CHECK(mode_of(path) == 0600);

    X509 *ca = load_cert(dir, "ca.crt");
    X509 *client = load_cert(g_base, "device-42.crt");
    EVP_PKEY *key = load_key(g_base, "device-42.key");
    CHECK(client && key && X509_check_private_key(client, key) == 1);
    CHECK_STR(cn_of(client, cn, sizeof cn), "device-42");
    CHECK(verify(ca, client, X509_PURPOSE_SSL_CLIENT) == X509_V_OK);
    CHECK(verify(ca, client, X509_PURPOSE_SSL_SERVER) != X509_V_OK); /* clientAuth only */
    CHECK(X509_get_extended_key_usage(client) == XKU_SSL_CLIENT);
    X509_free(client);
    EVP_PKEY_free(key);

    /* The longest device id (128 characters, beyond commonName's nominal 64) and the whole
     * device id alphabet. */
    char long_id[129];
    memset(long_id, 'L', 128);
    long_id[128] = '\0';
    snprintf(prefix, sizeof prefix, "%s/long", g_base);
    CHECK_RC(sg_pki_make_client(dir, long_id, prefix), SG_OK);
    client = load_cert(g_base, "long.crt");
    CHECK_STR(cn_of(client, cn, sizeof cn), long_id);
    CHECK(verify(ca, client, X509_PURPOSE_SSL_CLIENT) == X509_V_OK);
    X509_free(client);
    static const char k_odd_id[] = "Az09-.%_*?!(),:=@$'";
    snprintf(prefix, sizeof prefix, "%s/odd", g_base);
    CHECK_RC(sg_pki_make_client(dir, k_odd_id, prefix), SG_OK);
    client = load_cert(g_base, "odd.crt");
    CHECK_STR(cn_of(client, cn, sizeof cn), k_odd_id);
    X509_free(client);
    X509_free(ca);
}

/* Deleting the server pair reissues it from the kept CA; a key without its certificate is
 * completed with that key; a certificate without its key is refused. */
static void check_regenerate(const char *dir)
{
    char path[256];
    file_t ca_before = read_file(path_in(path, sizeof path, dir, "ca.crt"));
    file_t cakey_before = read_file(path_in(path, sizeof path, dir, "ca.key"));
    file_t srv_before = read_file(path_in(path, sizeof path, dir, "server.crt"));
    CHECK(unlink(path_in(path, sizeof path, dir, "server.crt")) == 0);
    CHECK(unlink(path_in(path, sizeof path, dir, "server.key")) == 0);
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_OK);
    file_t ca_after = read_file(path_in(path, sizeof path, dir, "ca.crt"));
    file_t cakey_after = read_file(path_in(path, sizeof path, dir, "ca.key"));
    file_t srv_after = read_file(path_in(path, sizeof path, dir, "server.crt"));
    CHECK(same_file(&ca_before, &ca_after));
    CHECK(same_file(&cakey_before, &cakey_after));
    CHECK(srv_after.data && !same_bytes(&srv_before, &srv_after));
    CHECK(mode_of(path_in(path, sizeof path, dir, "server.key")) == 0600);
    X509 *ca = load_cert(dir, "ca.crt"), *server = load_cert(dir, "server.crt");
    CHECK(verify(ca, server, X509_PURPOSE_SSL_SERVER) == X509_V_OK);
    CHECK(X509_check_host(server, "localhost", 0, 0, NULL) == 1);
    X509_free(server);

    /* Key kept, certificate missing (what a crash between the two renames leaves). */
    file_t key_before = read_file(path_in(path, sizeof path, dir, "server.key"));
    CHECK(unlink(path_in(path, sizeof path, dir, "server.crt")) == 0);
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_OK);
    file_t key_after = read_file(path_in(path, sizeof path, dir, "server.key"));
    CHECK(same_file(&key_before, &key_after));
    server = load_cert(dir, "server.crt");
    EVP_PKEY *key = load_key(dir, "server.key");
    CHECK(server && key && X509_check_private_key(server, key) == 1);
    CHECK(verify(ca, server, X509_PURPOSE_SSL_SERVER) == X509_V_OK);
    X509_free(server);
    EVP_PKEY_free(key);

    /* Certificate without key: refused, nothing overwritten. */
    path_in(path, sizeof path, dir, "server.key");
    file_t moved = read_file(path);
    CHECK(unlink(path) == 0);
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_E_INVALID);
    CHECK(!exists(path));
    /* Put the key back as it was (mode 0600) for the handshakes that follow. */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0 && moved.data && write(fd, moved.data, moved.len) == (ssize_t)moved.len);
    if (fd >= 0)
        close(fd);
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_OK);

    /* A temporary file left by a crash is removed on the next run. */
    int tfd = open(path_in(path, sizeof path, dir, "ca.key.tmp-0123456789abcdef"),
                   O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(tfd >= 0);
    if (tfd >= 0)
        close(tfd);
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_OK);
    CHECK(!exists(path));
    CHECK(count_entries(dir) == 4);

    X509_free(ca);
    free(moved.data);
    free(key_before.data);
    free(key_after.data);
    free(ca_before.data);
    free(ca_after.data);
    free(cakey_before.data);
    free(cakey_after.data);
    free(srv_before.data);
    free(srv_after.data);
}

/* An operator's CA certificate without its key: fine while a server pair exists, refused
 * (with nothing written) once one must be issued. A lone ca.key gets a certificate. */
static void check_operator_ca(void)
{
    char dir[128], path[256];
    snprintf(dir, sizeof dir, "%s/operator", g_base);
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_OK);
    file_t cakey = read_file(path_in(path, sizeof path, dir, "ca.key"));
    CHECK(unlink(path) == 0);
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_OK);
    CHECK(!exists(path));
    CHECK(unlink(path_in(path, sizeof path, dir, "server.crt")) == 0);
    CHECK(unlink(path_in(path, sizeof path, dir, "server.key")) == 0);
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_E_INVALID);
    CHECK(count_entries(dir) == 1);

    /* Only the CA key: a new CA certificate for it, then a server certificate. */
    CHECK(unlink(path_in(path, sizeof path, dir, "ca.crt")) == 0);
    int fd = open(path_in(path, sizeof path, dir, "ca.key"), O_WRONLY | O_CREAT | O_EXCL, 0600);
    CHECK(fd >= 0 && cakey.data && write(fd, cakey.data, cakey.len) == (ssize_t)cakey.len);
    if (fd >= 0)
        close(fd);
    CHECK_RC(sg_pki_ensure_dev(dir, NULL), SG_OK);
    X509 *ca = load_cert(dir, "ca.crt"), *server = load_cert(dir, "server.crt");
    EVP_PKEY *key = load_key(dir, "ca.key");
    CHECK(ca && key && X509_check_private_key(ca, key) == 1);
    CHECK(verify(ca, server, X509_PURPOSE_SSL_SERVER) == X509_V_OK);
    X509_free(ca);
    X509_free(server);
    EVP_PKEY_free(key);
    free(cakey.data);
}

/* ---- TLS handshakes --------------------------------------------------------------------- */

typedef struct {
    bool client_ok, server_ok, data_ok;
    long client_verify;
    char peer_cn[256]; /* the client certificate's CN as the server saw it */
} hs_result_t;

/* Drives SSL_connect and SSL_accept over a nonblocking socketpair until both finish or one
 * fails, then sends one message client -> server. No clocks: a bounded number of rounds. */
static hs_result_t handshake(SSL_CTX *sctx, SSL_CTX *cctx, const char *host)
{
    hs_result_t r = {0};
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return r;
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    SSL *c = SSL_new(cctx), *s = SSL_new(sctx);
    if (!c || !s || !SSL_set_fd(c, sv[0]) || !SSL_set_fd(s, sv[1]) || !SSL_set1_host(c, host) ||
        !SSL_set_tlsext_host_name(c, host))
        goto done;
    bool c_fail = false, s_fail = false;
    for (int round = 0; round < 1000 && !c_fail && !s_fail && !(r.client_ok && r.server_ok); round++) {
        if (!r.client_ok) {
            int ret = SSL_connect(c);
            int err = SSL_get_error(c, ret);
            r.client_ok = ret == 1;
            c_fail = ret != 1 && err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE;
        }
        if (!r.server_ok) {
            int ret = SSL_accept(s);
            int err = SSL_get_error(s, ret);
            r.server_ok = ret == 1;
            s_fail = ret != 1 && err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE;
        }
    }
    r.client_verify = SSL_get_verify_result(c);
    if (r.client_ok && r.server_ok) {
        X509 *peer = SSL_get1_peer_certificate(s);
        if (peer)
            cn_of(peer, r.peer_cn, sizeof r.peer_cn);
        X509_free(peer);
        char buf[16] = {0};
        int n = -1;
        if (SSL_write(c, "ping", 4) == 4)
            for (int round = 0; round < 100 && n <= 0; round++)
                n = SSL_read(s, buf, sizeof buf); /* TLS 1.3 tickets may come first */
        r.data_ok = n == 4 && memcmp(buf, "ping", 4) == 0;
    }
done:
    SSL_free(c);
    SSL_free(s);
    close(sv[0]);
    close(sv[1]);
    ERR_clear_error();
    return r;
}

static SSL_CTX *server_ctx(const char *dir, bool want_client_cert)
{
    char crt[256], key[256], ca[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx ||
        SSL_CTX_use_certificate_chain_file(ctx, path_in(crt, sizeof crt, dir, "server.crt")) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, path_in(key, sizeof key, dir, "server.key"), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (want_client_cert) {
        if (SSL_CTX_load_verify_locations(ctx, path_in(ca, sizeof ca, dir, "ca.crt"), NULL) != 1) {
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return ctx;
}

/* A client trusting the CA in ca_dir; with client_prefix, presenting that certificate. */
static SSL_CTX *client_ctx(const char *ca_dir, const char *client_prefix)
{
    char ca[256], crt[256], key[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, path_in(ca, sizeof ca, ca_dir, "ca.crt"), NULL) != 1)
        goto fail;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (client_prefix) {
        snprintf(crt, sizeof crt, "%s.crt", client_prefix);
        snprintf(key, sizeof key, "%s.key", client_prefix);
        if (SSL_CTX_use_certificate_file(ctx, crt, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
            goto fail;
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static void check_tls(const char *dir)
{
    char other[128], device[128];
    snprintf(other, sizeof other, "%s/extra", g_base);
    snprintf(device, sizeof device, "%s/device-42", g_base);
    SSL_CTX *sctx = server_ctx(dir, false), *mctx = server_ctx(dir, true);
    SSL_CTX *cctx = client_ctx(dir, NULL), *dctx = client_ctx(dir, device);
    SSL_CTX *stranger = client_ctx(other, NULL);
    CHECK(sctx && mctx && cctx && dctx && stranger);
    if (!sctx || !mctx || !cctx || !dctx || !stranger)
        goto done;

    hs_result_t r = handshake(sctx, cctx, "localhost");
    CHECK(r.client_ok && r.server_ok && r.data_ok);
    CHECK(r.client_verify == X509_V_OK);

    r = handshake(sctx, cctx, "wrong.example.test");
    CHECK(!r.client_ok);
    CHECK(r.client_verify == X509_V_ERR_HOSTNAME_MISMATCH);

    r = handshake(sctx, stranger, "localhost"); /* a client trusting another CA */
    CHECK(!r.client_ok);
    CHECK(r.client_verify == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);

    r = handshake(mctx, dctx, "localhost"); /* mutual TLS with the device certificate */
    CHECK(r.client_ok && r.server_ok && r.data_ok);
    CHECK_STR(r.peer_cn, "device-42");

    r = handshake(mctx, cctx, "localhost"); /* no client certificate: the server refuses */
    CHECK(!r.server_ok);
done:
    SSL_CTX_free(sctx);
    SSL_CTX_free(mctx);
    SSL_CTX_free(cctx);
    SSL_CTX_free(dctx);
    SSL_CTX_free(stranger);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    umask(077); /* certificates must still come out 0644 */
    snprintf(g_base, sizeof g_base, "/tmp/sg_pki_test.XXXXXX");
    if (!mkdtemp(g_base)) {
        perror("mkdtemp");
        return 1;
    }
    char dir[128];
    snprintf(dir, sizeof dir, "%s/data/pki", g_base); /* parents created too */

    check_fresh_dir(dir);
    check_contents(dir);
    check_extra_names();
    check_reissue();
    check_bad_input();
    check_client(dir);
    check_regenerate(dir);
    check_operator_ca();
    check_contents(dir);
    check_tls(dir);

    CHECK(nftw(g_base, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
    CHECK(!exists(g_base));
    TEST_DONE();
}
