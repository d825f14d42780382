/* adm_tokens.h — API bearer tokens: named, stored only as SHA-256 hashes, carrying roles.
 * File format, one token per line ('#' starts a comment):
 *     {name} {role[,role...]} {sha256 of the token, hex}
 * Roles: registry-read, registry-write, service, admin (admin implies every role). */
#ifndef ADM_TOKENS_H
#define ADM_TOKENS_H

#include <stddef.h>
#include "sg_result.h"

enum {
    ADM_ROLE_REGISTRY_READ = 1,
    ADM_ROLE_REGISTRY_WRITE = 2,
    ADM_ROLE_SERVICE = 4,
    ADM_ROLE_ADMIN = 8,
};

typedef struct adm_tokens adm_tokens_t;

/* Load a token file. NULL with err filled when a line is malformed or the file unreadable. */
adm_tokens_t *adm_tokens_load(const char *path, char *err, size_t errlen);
void adm_tokens_destroy(adm_tokens_t **self_p);
size_t adm_tokens_count(const adm_tokens_t *self);

/* Roles of the token (0 when unknown), compared in constant time against every entry;
 * *name gets the token's name for logs. */
int adm_tokens_check(const adm_tokens_t *self, const char *token, size_t len, const char **name);

/* Parse "a,b" role lists; -1 on an unknown role. */
int adm_roles_parse(const char *list);

/* A line for a token file: "{name} {roles} {sha256hex}\n". */
SG_WUR sg_rc adm_tokens_line(const char *name, const char *roles, const char *token, char *out, size_t cap);

#endif
