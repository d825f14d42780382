/* fe_tickets.c — session-ticket keys for stateless TLS resumption; see fe_tickets.h.
 * OpenSSL builds, encrypts and checks the tickets (AES-256-CBC + HMAC-SHA256, its own format);
 * this file only hands it the key for a ticket name through SSL_CTX_set_tlsext_ticket_key_evp_cb
 * and keeps the key set current. The keys sit behind a read-write lock: every handshake that
 * issues or presents a ticket reads them (uncontended), a reload writes them. */
#include "fe_tickets.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include "sg_codec.h"
#include "sg_log.h"

#define KEY_HEX (2 * (FE_TICKET_NAME_LEN + 2 * FE_TICKET_SECRET_LEN))   /* 160 */
#define MAX_FILE 65536

struct fe_tickets {
    pthread_rwlock_t lock;   /* guards keys */
    fe_ticket_keys_t keys;
    pthread_mutex_t reload_lock;   /* one reload at a time; guards seen */
    uint8_t seen[32];   /* SHA-256 of the file content last loaded or tried */
    bool unreadable;    /* the last look could not read the file (reported once) */
    char *path;
    int lifetime_s;
};

static int g_ex_index = -1;
static pthread_once_t g_ex_once = PTHREAD_ONCE_INIT;

static void ex_index_init(void)
{
    g_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

sg_rc fe_tickets_parse(const char *text, size_t len, fe_ticket_keys_t *out, char *err, size_t err_len)
{
    memset(out, 0, sizeof *out);
    size_t pos = 0;
    int line_no = 0;
    int name_line[FE_TICKET_MAX_KEYS];
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        line_no++;
        size_t line_start = pos, a = pos, b = end;
        pos = end + 1;
        while (a < b && is_space(text[a]))
            a++;
        while (b > a && is_space(text[b - 1]))
            b--;
        if (a == b || text[a] == '#')
            continue;
        for (size_t i = a; i < b; i++) {
            if (!is_hex(text[i])) {
                snprintf(err, err_len, "line %d, column %zu: not a hex digit (a key is %d hex digits: "
                         "`openssl rand -hex 80`)", line_no, i - line_start + 1, KEY_HEX);
                return SG_E_INVALID;
            }
        }
        if (b - a != KEY_HEX) {
            snprintf(err, err_len, "line %d: %zu hex digits; a key is %d (80 random bytes: `openssl rand -hex 80`)",
                     line_no, b - a, KEY_HEX);
            return SG_E_INVALID;
        }
        if (out->n == FE_TICKET_MAX_KEYS) {
            snprintf(err, err_len, "line %d: more than %d keys (delete the oldest, at the top)", line_no,
                     FE_TICKET_MAX_KEYS);
            return SG_E_INVALID;
        }
        uint8_t raw[KEY_HEX / 2];
        size_t got = 0;
        if (sg_hex_decode(text + a, b - a, raw, sizeof raw, &got) != SG_OK || got != sizeof raw) {
            snprintf(err, err_len, "line %d: not a key", line_no);
            return SG_E_INVALID;
        }
        fe_ticket_key_t *k = &out->keys[out->n];
        memcpy(k->name, raw, FE_TICKET_NAME_LEN);
        memcpy(k->hmac, raw + FE_TICKET_NAME_LEN, FE_TICKET_SECRET_LEN);
        memcpy(k->aes, raw + FE_TICKET_NAME_LEN + FE_TICKET_SECRET_LEN, FE_TICKET_SECRET_LEN);
        OPENSSL_cleanse(raw, sizeof raw);
        for (int i = 0; i < out->n; i++) {
            if (memcmp(out->keys[i].name, k->name, FE_TICKET_NAME_LEN) == 0) {
                snprintf(err, err_len, "line %d: the key name (first 32 hex digits) is the one of line %d; "
                         "every key needs a name of its own", line_no, name_line[i]);
                OPENSSL_cleanse(out, sizeof *out);
                return SG_E_INVALID;
            }
        }
        name_line[out->n] = line_no;
        out->n++;
    }
    if (out->n == 0) {
        snprintf(err, err_len, "no keys (one line of %d hex digits per key: `openssl rand -hex 80`)", KEY_HEX);
        return SG_E_INVALID;
    }
    return SG_OK;
}

/* The whole file (at most MAX_FILE bytes) into buf; its length, or -1 with err set. */
static ssize_t read_file(const char *path, char *buf, size_t cap, char *err, size_t err_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "cannot open: %s", strerror(errno));
        return -1;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, err_len, "cannot read: %s", strerror(errno));
            close(fd);
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == cap) {
            snprintf(err, err_len, "larger than %zu bytes; a key file holds at most %d keys of %d hex digits",
                     cap - 1, FE_TICKET_MAX_KEYS, KEY_HEX);
            close(fd);
            return -1;
        }
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & S_IROTH))
        SG_WARN("frontend", "tickets.readable", "path=%s reason=\"every user may read the ticket keys; chmod 600 "
                "(or defaultMode 0400 on the Secret volume)\"", path);
    close(fd);
    return (ssize_t)n;
}

/* Load the file into self (with reload_lock held). */
static bool load_locked(fe_tickets_t *self, const char *why)
{
    char err[256];
    char *buf = malloc(MAX_FILE + 1);
    fe_ticket_keys_t *keys = malloc(sizeof *keys);
    bool ok = false;
    ssize_t n = buf && keys ? read_file(self->path, buf, MAX_FILE + 1, err, sizeof err) : -1;
    if (!buf || !keys) {
        snprintf(err, sizeof err, "out of memory");
    } else if (n >= 0) {
        unsigned int dlen = 0;
        (void)EVP_Digest(buf, (size_t)n, self->seen, &dlen, EVP_sha256(), NULL);
        ok = fe_tickets_parse(buf, (size_t)n, keys, err, sizeof err) == SG_OK;
    }
    if (ok) {
        pthread_rwlock_wrlock(&self->lock);
        self->keys = *keys;
        pthread_rwlock_unlock(&self->lock);
        char newest[2 * FE_TICKET_NAME_LEN + 1];
        sg_hex_encode(keys->keys[keys->n - 1].name, FE_TICKET_NAME_LEN, newest);
        SG_INFO("frontend", why ? "tickets.reloaded" : "tickets.loaded", "trigger=%s path=%s keys=%d newest=%s "
                "lifetime=%d", why ? why : "start", self->path, keys->n, newest, self->lifetime_s);
    } else {
        SG_ERROR("frontend", why ? "tickets.reload_failed" : "tickets.invalid", "trigger=%s path=%s reason=\"%s\"%s",
                 why ? why : "start", self->path, err,
                 why ? " kept=\"the keys in service stay until the file can be used\"" : "");
    }
    if (buf)
        OPENSSL_cleanse(buf, MAX_FILE + 1);
    if (keys)
        OPENSSL_cleanse(keys, sizeof *keys);
    free(buf);
    free(keys);
    return ok;
}

fe_tickets_t *fe_tickets_new(const char *path, int lifetime_s)
{
    pthread_once(&g_ex_once, ex_index_init);
    fe_tickets_t *t = calloc(1, sizeof *t);
    if (!t || g_ex_index < 0) {
        free(t);
        return NULL;
    }
    pthread_rwlock_init(&t->lock, NULL);
    pthread_mutex_init(&t->reload_lock, NULL);
    t->lifetime_s = lifetime_s;
    t->path = strdup(path);
    if (!t->path || !load_locked(t, NULL)) {
        fe_tickets_destroy(&t);
        return NULL;
    }
    return t;
}

void fe_tickets_destroy(fe_tickets_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fe_tickets_t *t = *self_p;
    pthread_rwlock_destroy(&t->lock);
    pthread_mutex_destroy(&t->reload_lock);
    free(t->path);
    OPENSSL_cleanse(t, sizeof *t);
    free(t);
    *self_p = NULL;
}

bool fe_tickets_reload(fe_tickets_t *self, const char *why)
{
    pthread_mutex_lock(&self->reload_lock);
    bool ok = load_locked(self, why);
    pthread_mutex_unlock(&self->reload_lock);
    return ok;
}

void fe_tickets_check(fe_tickets_t *self)
{
    char err[256];
    char *buf = malloc(MAX_FILE + 1);
    if (!buf)
        return;
    pthread_mutex_lock(&self->reload_lock);
    ssize_t n = read_file(self->path, buf, MAX_FILE + 1, err, sizeof err);
    uint8_t now[32];
    unsigned int dlen = 0;
    if (n < 0) {
        if (!self->unreadable)   /* say so once; the keys in service stay */
            SG_ERROR("frontend", "tickets.reload_failed", "trigger=file-changed path=%s reason=\"%s\" "
                     "kept=\"the keys in service stay until the file can be used\"", self->path, err);
        self->unreadable = true;
    } else {
        self->unreadable = false;
        if (EVP_Digest(buf, (size_t)n, now, &dlen, EVP_sha256(), NULL) == 1 &&
            CRYPTO_memcmp(now, self->seen, sizeof now) != 0)
            (void)load_locked(self, "file-changed");
    }
    pthread_mutex_unlock(&self->reload_lock);
    OPENSSL_cleanse(buf, MAX_FILE + 1);
    free(buf);
}

/* OpenSSL asks for the key of a new ticket (enc = 1: fill in name, IV and keys) or of a ticket a
 * client presents (enc = 0: find its name; 0 = unknown, full handshake; 1 = resume; 2 = resume
 * and issue a fresh ticket under the newest key). */
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    fe_tickets_t *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_ex_index);
    if (!t)
        return enc ? -1 : 0;
    fe_ticket_key_t k;
    int rc = 0;
    pthread_rwlock_rdlock(&t->lock);
    if (enc) {
        k = t->keys.keys[t->keys.n - 1];
        rc = 1;
    } else {
        for (int i = t->keys.n - 1; i >= 0; i--) {
            if (CRYPTO_memcmp(t->keys.keys[i].name, key_name, FE_TICKET_NAME_LEN) == 0) {
                k = t->keys.keys[i];
                rc = i == t->keys.n - 1 ? 1 : 2;
                break;
            }
        }
    }
    pthread_rwlock_unlock(&t->lock);
    if (rc == 0)
        return 0;
    const EVP_CIPHER *cipher = EVP_aes_256_cbc();
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (enc) {
        memcpy(key_name, k.name, FE_TICKET_NAME_LEN);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(cipher)) != 1 ||
            EVP_EncryptInit_ex(cctx, cipher, NULL, k.aes, iv) != 1 || EVP_MAC_CTX_set_params(hctx, params) != 1)
            rc = -1;
    } else if (EVP_DecryptInit_ex(cctx, cipher, NULL, k.aes, iv) != 1 || EVP_MAC_CTX_set_params(hctx, params) != 1) {
        rc = -1;
    }
    OPENSSL_cleanse(&k, sizeof k);
    return rc;
}

void fe_tickets_attach(fe_tickets_t *self, SSL_CTX *ctx)
{
    static const unsigned char sid_ctx[] = "sacgate-mqtt";
    SSL_CTX_set_ex_data(ctx, g_ex_index, self);
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 1);   /* one reconnect needs one ticket; each costs a record and an encryption */
    SSL_CTX_set_timeout(ctx, self->lifetime_s);
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
}

sg_rc fe_tickets_generate(const char *path)
{
    uint8_t raw[KEY_HEX / 2];
    char hex[KEY_HEX + 1];
    char text[KEY_HEX + 256];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return SG_E_IO;
    sg_hex_encode(raw, sizeof raw, hex);
    OPENSSL_cleanse(raw, sizeof raw);
    int len = snprintf(text, sizeof text, "# sacgate TLS session-ticket keys, oldest first; the last one encrypts.\n"
                                          "# Rotate: append `openssl rand -hex 80`, wait, delete the first.\n%s\n", hex);
    OPENSSL_cleanse(hex, sizeof hex);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        OPENSSL_cleanse(text, sizeof text);
        return errno == EEXIST ? SG_E_INVALID : SG_E_IO;
    }
    bool ok = write(fd, text, (size_t)len) == len && fsync(fd) == 0;
    OPENSSL_cleanse(text, sizeof text);
    close(fd);
    if (!ok) {
        unlink(path);
        return SG_E_IO;
    }
    return SG_OK;
}
