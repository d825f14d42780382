/* sg_config.h — sacgate configuration: one table of keys ("section.key") with defaults and help,
 * filled in order from defaults, a ZPL file (czmq zconfig: sections are indented blocks),
 * environment overrides (SACGATE_SECTION_KEY, e.g. SACGATE_STORE_NAME) and command-line flags.
 * Every value is validated when it is set, so a bad value fails at start-up with a message that
 * names the key and what it accepts. `sacgate --help` prints the table. */
#ifndef SG_CONFIG_H
#define SG_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "sg_result.h"

typedef struct sg_config sg_config_t;

sg_config_t *sg_config_new(void);
void sg_config_destroy(sg_config_t **self_p);

/* Set one key from text. SG_E_NOT_FOUND for an unknown key, SG_E_INVALID for a bad value;
 * either way a one-line reason is written to err (errlen bytes). */
SG_WUR sg_rc sg_config_set(sg_config_t *self, const char *key, const char *value, char *err,
                           size_t errlen);
/* Load a ZPL file: keys indented under their section, or "section.key = value" at the top.
 * Every one must be a known key with a valid value; anything else in the file (a key without its
 * section, deeper nesting) is refused, SG_E_INVALID, with a reason in err. */
SG_WUR sg_rc sg_config_load_file(sg_config_t *self, const char *path, char *err, size_t errlen);
/* Apply SACGATE_* environment variables that name known keys. */
SG_WUR sg_rc sg_config_load_env(sg_config_t *self, char *err, size_t errlen);

const char *sg_config_str(const sg_config_t *self, const char *key);
int64_t sg_config_int(const sg_config_t *self, const char *key);
bool sg_config_bool(const sg_config_t *self, const char *key);
/* True when the value came from somewhere other than the built-in default. */
bool sg_config_is_set(const sg_config_t *self, const char *key);

/* Print every key of the given sections ("" = all) with its default and help. */
void sg_config_print_help(FILE *out, const char *section);

#endif
