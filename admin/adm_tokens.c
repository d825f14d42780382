/* adm_tokens.c — bearer token file and constant-time checks; see adm_tokens.h. */
#include "adm_tokens.h"
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sg_codec.h"

typedef struct {
    char name[64];
    int roles;
    unsigned char hash[32];
} entry_t;

struct adm_tokens {
    entry_t *e;
    size_t n;
};

int adm_roles_parse(const char *list)
{
    static const struct {
        const char *name;
        int bit;
    } k[] = {{"registry-read", ADM_ROLE_REGISTRY_READ},
             {"registry-write", ADM_ROLE_REGISTRY_WRITE},
             {"service", ADM_ROLE_SERVICE},
             {"admin", ADM_ROLE_ADMIN}};
    int roles = 0;
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        int bit = 0;
        for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
            if (strlen(k[i].name) == len && strncmp(k[i].name, p, len) == 0)
                bit = k[i].bit;
        if (!bit)
            return -1;
        roles |= bit;
        p += len;
        if (*p == ',')
            p++;
    }
    return roles ? roles : -1;
}

static void sha256(const void *p, size_t n, unsigned char out[32])
{
    unsigned int len = 32;
    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

adm_tokens_t *adm_tokens_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read token file '%s'", path);
        return NULL;
    }
    adm_tokens_t *t = calloc(1, sizeof *t);
    char line[512];
    int lineno = 0;
    while (t && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char name[64], roles[128], hex[80];
        int k = sscanf(line, "%63s %127s %79s", name, roles, hex);
        if (k <= 0)
            continue;
        entry_t e = {0};
        size_t hl;
        e.roles = k == 3 ? adm_roles_parse(roles) : -1;
        if (k != 3 || e.roles < 0 || strlen(hex) != 64 || sg_hex_decode(hex, 64, e.hash, 32, &hl) != SG_OK) {
            snprintf(err, errlen, "%s:%d: expected '{name} {roles} {sha256 hex}' with roles from "
                     "registry-read,registry-write,service,admin", path, lineno);
            adm_tokens_destroy(&t);
            break;
        }
        snprintf(e.name, sizeof e.name, "%s", name);
        entry_t *ne = realloc(t->e, (t->n + 1) * sizeof *ne);
        if (!ne) {
            adm_tokens_destroy(&t);
            break;
        }
        t->e = ne;
        t->e[t->n++] = e;
    }
    fclose(f);
    return t;
}

void adm_tokens_destroy(adm_tokens_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->e);
    free(*self_p);
    *self_p = NULL;
}

size_t adm_tokens_count(const adm_tokens_t *self) { return self->n; }

int adm_tokens_check(const adm_tokens_t *self, const char *token, size_t len, const char **name)
{
    unsigned char h[32];
    int roles = 0;
    sha256(token, len, h);
    /* Every entry is compared, so timing says nothing about which one matched. */
    for (size_t i = 0; i < self->n; i++) {
        int match = CRYPTO_memcmp(h, self->e[i].hash, 32) == 0;
        int mask = -match;
        roles |= self->e[i].roles & mask;
        if (match && name)
            *name = self->e[i].name;
    }
    if (roles & ADM_ROLE_ADMIN)
        roles |= ADM_ROLE_REGISTRY_READ | ADM_ROLE_REGISTRY_WRITE | ADM_ROLE_SERVICE;
    return roles;
}

sg_rc adm_tokens_line(const char *name, const char *roles, const char *token, char *out, size_t cap)
{
    unsigned char h[32];
    char hex[65];
    sha256(token, strlen(token), h);
    sg_hex_encode(h, 32, hex);
    int n = snprintf(out, cap, "%s %s %s\n", name, roles, hex);
    return n > 0 && (size_t)n < cap ? SG_OK : SG_E_TOO_BIG;
}
