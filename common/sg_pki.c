/* sg_pki.c — the development PKI: an ECDSA P-256 CA and the certificates it signs; see sg_pki.h.
 * Files are written to a temporary name and renamed into place, key files are created 0600, and
 * a flock on the directory serialises processes that start on one data directory together. */
#include "sg_pki.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "sg_log.h"

#define CA_DAYS 3650
#define SERVER_DAYS 825 /* the most clients (Apple's included) accept for a TLS server */
#define CLIENT_DAYS 825
#define BACKDATE_SECONDS 3600 /* tolerate clocks a little behind the one that issued */
#define EXTRA_NAMES_MAX 4096
#define DEVICE_ID_MAX 128
#define TMP_INFIX ".tmp-"

static const char *const k_pki_files[] = {"ca.crt", "ca.key", "server.crt", "server.key"};

typedef struct {
    char ca_crt[PATH_MAX];
    char ca_key[PATH_MAX];
    char server_crt[PATH_MAX];
    char server_key[PATH_MAX];
} pki_paths_t;

/* What a certificate is for; make_cert turns it into an X509. */
typedef struct {
    const char *cn;
    EVP_PKEY *key;          /* the subject's key */
    X509 *issuer;           /* NULL: self-signed with key */
    EVP_PKEY *issuer_key;
    long days;              /* validity, counted from the backdated notBefore */
    const char *basic_constraints;
    const char *key_usage;
    const char *ext_key_usage; /* NULL for none */
    const char *authority_key_id;
    const GENERAL_NAMES *san;  /* NULL for none */
} cert_spec_t;

/* ---- errors ----------------------------------------------------------------------------- */

/* Logs the most recent OpenSSL error for path and clears the queue. Paths and library reasons
 * only: key material never reaches the log. */
static sg_rc fail_ssl(const char *event, const char *path)
{
    char reason[256] = "unknown OpenSSL error";
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    SG_ERROR("pki", event, "path=%s reason=\"%s\"", path, reason);
    return SG_E_IO;
}

static sg_rc fail_errno(const char *event, const char *path, int err)
{
    SG_ERROR("pki", event, "path=%s reason=\"%s\"", path, strerror(err));
    return SG_E_IO;
}

/* ---- files ------------------------------------------------------------------------------ */

static sg_rc join_path(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_MAX) {
        SG_ERROR("pki", "path.too_long", "dir=%s name=%s", dir, name);
        return SG_E_INVALID;
    }
    return SG_OK;
}

/* 1 when path exists, 0 when it does not, SG_E_IO when it cannot be told. */
static int file_exists(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return 1;
    if (errno == ENOENT)
        return 0;
    return fail_errno("pki.stat_failed", path, errno);
}

/* mkdir -p with mode 0700 for every directory it creates; existing ones are left as they are. */
static sg_rc make_dirs(const char *dir)
{
    char buf[PATH_MAX];
    size_t len = strlen(dir);
    if (len >= sizeof buf)
        return SG_E_INVALID;
    memcpy(buf, dir, len + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return fail_errno("pki.mkdir_failed", buf, errno);
        *p = saved;
        if (saved == '\0')
            break;
    }
    struct stat st;
    if (stat(dir, &st) != 0)
        return fail_errno("pki.mkdir_failed", dir, errno);
    if (!S_ISDIR(st.st_mode))
        return fail_errno("pki.mkdir_failed", dir, ENOTDIR);
    return SG_OK;
}

/* fsync the directory holding path so a rename in it survives a power cut. */
static void sync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Writes key (PKCS#8 PEM, unencrypted) or cert as PEM to path with exactly mode: into a fresh
 * temporary file in the same directory, synced, then renamed over path, so path is either
 * absent or whole. */
static sg_rc write_pem(const char *path, mode_t mode, EVP_PKEY *key, X509 *cert)
{
    char tmp[PATH_MAX];
    unsigned char rnd[8];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return fail_ssl("pki.write_failed", path);
    int n = snprintf(tmp, sizeof tmp, "%s" TMP_INFIX "%02x%02x%02x%02x%02x%02x%02x%02x", path,
                     rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    if (n < 0 || n >= (int)sizeof tmp)
        return SG_E_INVALID;

    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return fail_errno("pki.write_failed", tmp, errno);
    /* The umask may have narrowed mode; certificates are meant to be world-readable. */
    if (fchmod(fd, mode) != 0) {
        int err = errno;
        close(fd);
        unlink(tmp);
        return fail_errno("pki.write_failed", tmp, err);
    }
    FILE *fp = fdopen(fd, "w");
    if (!fp) {
        int err = errno;
        close(fd);
        unlink(tmp);
        return fail_errno("pki.write_failed", tmp, err);
    }
    int ok = key ? PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL) : PEM_write_X509(fp, cert);
    if (!ok) {
        fclose(fp);
        unlink(tmp);
        return fail_ssl("pki.write_failed", tmp);
    }
    int err = 0;
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0)
        err = errno;
    if (fclose(fp) != 0 && !err)
        err = errno;
    if (!err && rename(tmp, path) != 0)
        err = errno;
    if (err) {
        unlink(tmp);
        return fail_errno("pki.write_failed", path, err);
    }
    sync_parent(path);
    return SG_OK;
}

/* Removes temporary files a crashed earlier run left behind (called with the directory
 * locked, so no other process is writing them now). */
static void remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        for (size_t i = 0; i < sizeof k_pki_files / sizeof k_pki_files[0]; i++) {
            size_t len = strlen(k_pki_files[i]);
            if (strncmp(e->d_name, k_pki_files[i], len) == 0 &&
                strncmp(e->d_name + len, TMP_INFIX, strlen(TMP_INFIX)) == 0) {
                char path[PATH_MAX];
                if (join_path(path, dir, e->d_name) == SG_OK && unlink(path) == 0)
                    SG_WARN("pki", "pki.stale_temp_removed", "path=%s", path);
            }
        }
    }
    closedir(d);
}

/* A NULL password callback would make OpenSSL prompt on the terminal for an encrypted key;
 * refuse instead, so a daemon fails with a log line. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

static sg_rc load_cert(const char *path, X509 **out)
{
    FILE *fp = fopen(path, "re");
    if (!fp)
        return fail_errno("pki.load_failed", path, errno);
    *out = PEM_read_X509(fp, NULL, no_password, NULL);
    fclose(fp);
    return *out ? SG_OK : fail_ssl("pki.load_failed", path);
}

static sg_rc load_key(const char *path, EVP_PKEY **out)
{
    FILE *fp = fopen(path, "re");
    if (!fp)
        return fail_errno("pki.load_failed", path, errno);
    *out = PEM_read_PrivateKey(fp, NULL, no_password, NULL);
    fclose(fp);
    return *out ? SG_OK : fail_ssl("pki.load_failed", path);
}

/* ---- certificates ----------------------------------------------------------------------- */

static sg_rc new_key(EVP_PKEY **out)
{
    *out = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    return *out ? SG_OK : fail_ssl("pki.keygen_failed", "-");
}

static int set_random_serial(X509 *x)
{
    unsigned char buf[16];
    BIGNUM *bn = NULL;
    do {
        if (RAND_bytes(buf, sizeof buf) != 1)
            break;
        BN_free(bn);
        bn = BN_bin2bn(buf, sizeof buf, NULL);
    } while (bn && BN_is_zero(bn)); /* a serial must be positive */
    int ok = bn && !BN_is_zero(bn) && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
    if (!ext)
        return 0;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

/* Builds and signs the certificate spec describes; NULL with the OpenSSL error queued. */
static X509 *make_cert(const cert_spec_t *spec)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    if (!x || !name)
        goto fail;
    /* A fixed string type (not MBSTRING_*) skips the 64-character upper bound OpenSSL applies
     * to commonName: device ids, and so client CNs, may be up to 128 characters. */
    if (!X509_set_version(x, X509_VERSION_3) || !set_random_serial(x) ||
        !X509_NAME_add_entry_by_NID(name, NID_commonName, V_ASN1_UTF8STRING,
                                    (const unsigned char *)spec->cn, -1, -1, 0) ||
        !X509_set_subject_name(x, name) ||
        !X509_set_issuer_name(x, spec->issuer ? X509_get_subject_name(spec->issuer) : name) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -BACKDATE_SECONDS) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), (int)spec->days, -BACKDATE_SECONDS, NULL) ||
        !X509_set_pubkey(x, spec->key))
        goto fail;

    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, spec->issuer ? spec->issuer : x, x, NULL, NULL, 0);
    /* The subject key id goes in first: a self-signed authority key id is taken from it. */
    if (!add_ext(x, &ctx, NID_basic_constraints, spec->basic_constraints) ||
        !add_ext(x, &ctx, NID_key_usage, spec->key_usage) ||
        (spec->ext_key_usage && !add_ext(x, &ctx, NID_ext_key_usage, spec->ext_key_usage)) ||
        !add_ext(x, &ctx, NID_subject_key_identifier, "hash") ||
        !add_ext(x, &ctx, NID_authority_key_identifier, spec->authority_key_id) ||
        (spec->san &&
         X509_add1_ext_i2d(x, NID_subject_alt_name, (void *)spec->san, 0, X509V3_ADD_DEFAULT) != 1))
        goto fail;
    if (X509_sign(x, spec->issuer_key ? spec->issuer_key : spec->key, EVP_sha256()) <= 0)
        goto fail;
    X509_NAME_free(name);
    return x;

fail:
    X509_NAME_free(name);
    X509_free(x);
    return NULL;
}

static X509 *make_ca_cert(EVP_PKEY *key)
{
    cert_spec_t spec = {
        .cn = "sacgate development CA",
        .key = key,
        .days = CA_DAYS,
        .basic_constraints = "critical,CA:TRUE",
        .key_usage = "critical,keyCertSign,cRLSign",
        .authority_key_id = "keyid:always",
    };
    return make_cert(&spec);
}

/* A leaf certificate for key signed by the CA. "keyid,issuer" falls back to the issuer's name
 * and serial when an operator's own CA carries no subject key id. */
static X509 *make_leaf_cert(const char *cn, EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key, long days,
                            const char *eku, const GENERAL_NAMES *san)
{
    cert_spec_t spec = {
        .cn = cn,
        .key = key,
        .issuer = ca,
        .issuer_key = ca_key,
        .days = days,
        .basic_constraints = "CA:FALSE",
        .key_usage = "critical,digitalSignature",
        .ext_key_usage = eku,
        .authority_key_id = "keyid,issuer",
        .san = san,
    };
    return make_cert(&spec);
}

/* ---- subjectAltName --------------------------------------------------------------------- */

/* A host name: dot-separated labels of letters, digits and inner hyphens, at most 253 chars;
 * the first label may be a lone "*". */
static bool is_dns_name(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 253)
        return false;
    if (strncmp(s, "*.", 2) == 0)
        s += 2;
    size_t label = 0;
    char prev = '.';
    for (const char *p = s;; p++) {
        char c = *p;
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || prev == '-')
                return false;
            if (c == '\0')
                return true;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   (c == '-' && label > 0)) {
            label++;
        } else {
            return false;
        }
        prev = c;
    }
}

/* Appends name to gens as an IP address when it parses as one, else as a DNS name; a name
 * already present is skipped. Returns SG_E_INVALID for anything that is neither. */
static sg_rc san_add(GENERAL_NAMES *gens, const char *name)
{
    unsigned char ip[16];
    int iplen = inet_pton(AF_INET, name, ip) == 1 ? 4 : inet_pton(AF_INET6, name, ip) == 1 ? 16 : 0;
    if (!iplen && !is_dns_name(name)) {
        SG_ERROR("pki", "pki.bad_name",
                 "name=\"%s\" reason=\"neither an IP address nor a DNS name (dot-separated labels "
                 "of letters, digits and inner hyphens, at most 253 characters)\"", name);
        return SG_E_INVALID;
    }
    GENERAL_NAME *gen = GENERAL_NAME_new();
    ASN1_STRING *value = iplen ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
    if (!gen || !value ||
        !(iplen ? ASN1_OCTET_STRING_set(value, ip, iplen) : ASN1_STRING_set(value, name, -1))) {
        GENERAL_NAME_free(gen);
        ASN1_STRING_free(value);
        return fail_ssl("pki.san_failed", name);
    }
    GENERAL_NAME_set0_value(gen, iplen ? GEN_IPADD : GEN_DNS, value);
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        if (GENERAL_NAME_cmp(sk_GENERAL_NAME_value(gens, i), gen) == 0) {
            GENERAL_NAME_free(gen);
            return SG_OK;
        }
    }
    if (!sk_GENERAL_NAME_push(gens, gen)) {
        GENERAL_NAME_free(gen);
        return fail_ssl("pki.san_failed", name);
    }
    return SG_OK;
}

/* localhost, 127.0.0.1 and ::1, then each comma-separated entry of extra (blanks around an
 * entry and empty entries ignored). */
static sg_rc server_san(const char *extra, GENERAL_NAMES **out)
{
    static const char *const k_defaults[] = {"localhost", "127.0.0.1", "::1"};
    if (extra && strlen(extra) > EXTRA_NAMES_MAX) {
        SG_ERROR("pki", "pki.bad_name", "reason=\"extra names longer than %d characters\"",
                 EXTRA_NAMES_MAX);
        return SG_E_INVALID;
    }
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    char *copy = extra ? strdup(extra) : NULL;
    if (!gens || (extra && !copy)) {
        sk_GENERAL_NAME_free(gens);
        free(copy);
        return SG_E_NOMEM;
    }
    sg_rc rc = SG_OK;
    for (size_t i = 0; i < sizeof k_defaults / sizeof k_defaults[0]; i++)
        SG_GUARD_GOTO(rc, san_add(gens, k_defaults[i]), done);
    char *save = NULL;
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ' || *tok == '\t')
            tok++;
        char *end = tok + strlen(tok);
        while (end > tok && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        if (*tok)
            SG_GUARD_GOTO(rc, san_add(gens, tok), done);
    }
done:
    free(copy);
    if (rc != SG_OK) {
        GENERAL_NAMES_free(gens);
        return rc;
    }
    *out = gens;
    return SG_OK;
}

/* ---- the development PKI ---------------------------------------------------------------- */

typedef struct {
    X509 *ca;
    EVP_PKEY *ca_key;
    X509 *server;
    EVP_PKEY *server_key;
} pki_state_t;

static void pki_state_free(pki_state_t *s)
{
    X509_free(s->ca);
    EVP_PKEY_free(s->ca_key);
    X509_free(s->server);
    EVP_PKEY_free(s->server_key);
}

/* The key is written before its certificate, so the only pair a crash can leave half-made
 * is a key without certificate, which the next run completes with that key. */
static sg_rc ensure_ca(const pki_paths_t *p, pki_state_t *s, bool *created)
{
    int have_crt = file_exists(p->ca_crt), have_key = file_exists(p->ca_key);
    SG_ENSURE(have_crt >= 0 && have_key >= 0, SG_E_IO);
    *created = false;
    if (have_crt)
        return SG_OK;
    if (have_key) {
        SG_GUARD(load_key(p->ca_key, &s->ca_key));
    } else {
        SG_GUARD(new_key(&s->ca_key));
        SG_GUARD(write_pem(p->ca_key, 0600, s->ca_key, NULL));
    }
    s->ca = make_ca_cert(s->ca_key);
    if (!s->ca)
        return fail_ssl("pki.sign_failed", p->ca_crt);
    SG_GUARD(write_pem(p->ca_crt, 0644, NULL, s->ca));
    *created = true;
    SG_INFO("pki", "pki.ca_created", "path=%s key=%s", p->ca_crt, have_key ? "kept" : "new");
    return SG_OK;
}

/* The CA, loaded from disk where ensure_ca did not just make it, able to sign. */
static sg_rc load_signing_ca(const pki_paths_t *p, pki_state_t *s)
{
    if (!s->ca)
        SG_GUARD(load_cert(p->ca_crt, &s->ca));
    if (!s->ca_key) {
        int have_key = file_exists(p->ca_key);
        SG_ENSURE(have_key >= 0, SG_E_IO);
        if (!have_key) {
            SG_ERROR("pki", "pki.ca_key_missing",
                     "path=%s reason=\"cannot sign a server certificate without the CA key: add "
                     "ca.key, add server.crt and server.key, or remove ca.crt for a new CA\"",
                     p->ca_key);
            return SG_E_INVALID;
        }
        SG_GUARD(load_key(p->ca_key, &s->ca_key));
    }
    if (X509_check_private_key(s->ca, s->ca_key) != 1) {
        ERR_clear_error();
        SG_ERROR("pki", "pki.ca_key_mismatch", "path=%s reason=\"ca.key does not belong to ca.crt\"",
                 p->ca_key);
        return SG_E_INVALID;
    }
    return SG_OK;
}

/* reissue: a certificate for san is issued even when server.crt exists (its key is kept, or
 * made when missing). The new certificate replaces the old with one rename, so a frontend
 * watching the file never sees half of it. */
static sg_rc ensure_server(const pki_paths_t *p, pki_state_t *s, bool ca_created,
                           const GENERAL_NAMES *san, bool reissue)
{
    int have_crt = file_exists(p->server_crt), have_key = file_exists(p->server_key);
    SG_ENSURE(have_crt >= 0 && have_key >= 0, SG_E_IO);
    if (have_crt && have_key && !reissue) {
        if (ca_created) {
            /* Kept as the header promises, but say so when it cannot chain to the new CA. */
            SG_GUARD(load_cert(p->server_crt, &s->server));
            if (X509_verify(s->server, X509_get0_pubkey(s->ca)) != 1) {
                ERR_clear_error();
                SG_WARN("pki", "pki.server_cert_foreign",
                        "path=%s reason=\"kept, but not issued by the new CA; delete server.crt "
                        "and server.key to have one issued\"", p->server_crt);
            }
        }
        return SG_OK;
    }
    if (have_crt && !have_key && !reissue) {
        SG_ERROR("pki", "pki.server_key_missing",
                 "path=%s reason=\"server.crt has no server.key; add the key or remove server.crt\"",
                 p->server_key);
        return SG_E_INVALID;
    }
    SG_GUARD(load_signing_ca(p, s));
    if (have_key) {
        SG_GUARD(load_key(p->server_key, &s->server_key));
    } else {
        SG_GUARD(new_key(&s->server_key));
        SG_GUARD(write_pem(p->server_key, 0600, s->server_key, NULL));
    }
    s->server = make_leaf_cert("localhost", s->server_key, s->ca, s->ca_key, SERVER_DAYS,
                               "serverAuth", san);
    if (!s->server)
        return fail_ssl("pki.sign_failed", p->server_crt);
    SG_GUARD(write_pem(p->server_crt, 0644, NULL, s->server));
    BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(s->server), NULL);
    char *hex = serial ? BN_bn2hex(serial) : NULL;
    SG_INFO("pki", have_crt ? "pki.server_cert_reissued" : "pki.server_cert_created", "path=%s key=%s serial=%s",
            p->server_crt, have_key ? "kept" : "new", hex ? hex : "?");
    OPENSSL_free(hex);
    BN_free(serial);
    return SG_OK;
}

/* With extra_names, the server certificate is issued again for them (see ensure_server).
 * Half-present sets, beyond "existing files are kept":
 *   ca.key without ca.crt           -> a CA certificate is made for that key
 *   ca.crt without ca.key           -> fine while server.crt/server.key exist, else SG_E_INVALID
 *   server.key without server.crt   -> a server certificate is issued for that key
 *   server.crt without server.key   -> SG_E_INVALID (it cannot be used, and is not overwritten)
 * Bad extra names give SG_E_INVALID before anything is written; OS and OpenSSL failures SG_E_IO.
 * Every error is logged with the path and the reason. */
sg_rc sg_pki_ensure_dev(const char *dir, const char *extra_names)
{
    SG_ENSURE(dir && *dir, SG_E_INVALID);
    pki_paths_t p;
    SG_GUARD(join_path(p.ca_crt, dir, "ca.crt"));
    SG_GUARD(join_path(p.ca_key, dir, "ca.key"));
    SG_GUARD(join_path(p.server_crt, dir, "server.crt"));
    SG_GUARD(join_path(p.server_key, dir, "server.key"));
    /* Names are checked before anything is written, so a typo leaves no half-made PKI. */
    GENERAL_NAMES *san = NULL;
    SG_GUARD(server_san(extra_names, &san));

    sg_rc rc = make_dirs(dir);
    int dfd = -1;
    pki_state_t s = {0};
    bool ca_created = false;
    if (rc != SG_OK)
        goto done;
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || flock(dfd, LOCK_EX) != 0) {
        rc = fail_errno("pki.lock_failed", dir, errno);
        goto done;
    }
    remove_stale_temps(dir);
    SG_GUARD_GOTO(rc, ensure_ca(&p, &s, &ca_created), done);
    SG_GUARD_GOTO(rc, ensure_server(&p, &s, ca_created, san, extra_names != NULL), done);

done:
    if (dfd >= 0)
        close(dfd); /* releases the lock */
    pki_state_free(&s);
    GENERAL_NAMES_free(san);
    return rc;
}

/* The device id rules of CONNECT: 1-128 of [A-Za-z0-9-.%_*?!(),:=@$']. */
static bool is_device_id(const char *id)
{
    size_t len = strlen(id);
    if (len == 0 || len > DEVICE_ID_MAX)
        return false;
    for (const char *c = id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              strchr("-.%_*?!(),:=@$'", *c)))
            return false;
    return true;
}

sg_rc sg_pki_make_client(const char *ca_dir, const char *device_id, const char *out_prefix)
{
    SG_ENSURE(ca_dir && *ca_dir && device_id && out_prefix && *out_prefix, SG_E_INVALID);
    if (!is_device_id(device_id)) {
        SG_ERROR("pki", "pki.bad_device_id",
                 "reason=\"device ids are 1-128 characters of A-Z a-z 0-9 -.%%_*?!(),:=@$'\"");
        return SG_E_INVALID;
    }
    pki_paths_t p;
    char crt_path[PATH_MAX], key_path[PATH_MAX];
    SG_GUARD(join_path(p.ca_crt, ca_dir, "ca.crt"));
    SG_GUARD(join_path(p.ca_key, ca_dir, "ca.key"));
    int n1 = snprintf(crt_path, sizeof crt_path, "%s.crt", out_prefix);
    int n2 = snprintf(key_path, sizeof key_path, "%s.key", out_prefix);
    SG_ENSURE(n1 > 0 && n1 < PATH_MAX && n2 > 0 && n2 < PATH_MAX, SG_E_INVALID);

    pki_state_t s = {0};
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    sg_rc rc;
    SG_GUARD_GOTO(rc, load_signing_ca(&p, &s), done);
    SG_GUARD_GOTO(rc, new_key(&key), done);
    cert = make_leaf_cert(device_id, key, s.ca, s.ca_key, CLIENT_DAYS, "clientAuth", NULL);
    if (!cert) {
        rc = fail_ssl("pki.sign_failed", crt_path);
        goto done;
    }
    SG_GUARD_GOTO(rc, write_pem(key_path, 0600, key, NULL), done);
    SG_GUARD_GOTO(rc, write_pem(crt_path, 0644, NULL, cert), done);
    SG_INFO("pki", "pki.client_cert_created", "path=%s device=%s", crt_path, device_id);

done:
    X509_free(cert);
    EVP_PKEY_free(key);
    pki_state_free(&s);
    return rc;
}
