/* adm_ndjson.h — splits a streamed request body into lines (NDJSON) while holding at most one
 * line: bytes come in chunks of any size, a line split across chunks is gathered up to max_line
 * bytes, a longer one is reported by its number and skipped without being kept, and lines of
 * only whitespace are dropped (their numbers still count). No I/O and no threads, so the fuzz
 * harness drives it exactly as the import does. */
#ifndef ADM_NDJSON_H
#define ADM_NDJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sg_buf.h"
#include "sg_result.h"

typedef struct {
    sg_wbuf_t part;        /* the start of a line that began in an earlier chunk */
    size_t max_line;
    uint64_t number;       /* 1-based number of the line being read */
    size_t len;            /* bytes of that line so far (also while skipping it) */
    bool blank;            /* ...which are all whitespace */
    bool emitted;          /* part holds a line already handed out: clear it on the next call */
} adm_ndjson_t;

/* One non-blank line, without its '\n'. data points into the caller's chunk or into the
 * splitter, valid until the next call; NULL when the line was longer than max_line. */
typedef struct {
    uint64_t number;
    const char *data;
    size_t len;
    bool too_long;
} adm_line_t;

void adm_ndjson_init(adm_ndjson_t *self, size_t max_line);
void adm_ndjson_fini(adm_ndjson_t *self);

/* Read data[0..len) up to the end of the next non-blank line. SG_OK: *line is filled and *used
 * counts the bytes read, its '\n' included. SG_E_AGAIN: the chunk ended first; all of it was
 * read (*used = len) and a partial line is kept for the next chunk. */
SG_WUR sg_rc adm_ndjson_next(adm_ndjson_t *self, const char *data, size_t len, size_t *used, adm_line_t *line);

/* The body ended: SG_OK with the last line when it had no '\n' (and is not blank), else
 * SG_E_AGAIN. */
SG_WUR sg_rc adm_ndjson_end(adm_ndjson_t *self, adm_line_t *line);

#endif
