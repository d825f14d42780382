/* adm_ndjson.c — line splitting of streamed bodies; see adm_ndjson.h. */
#include "adm_ndjson.h"
#include <string.h>

void adm_ndjson_init(adm_ndjson_t *self, size_t max_line)
{
    memset(self, 0, sizeof *self);
    sg_wbuf_init(&self->part, max_line);
    self->max_line = max_line;
    self->number = 1;
    self->blank = true;
}

void adm_ndjson_fini(adm_ndjson_t *self) { sg_wbuf_fini(&self->part); }

/* JSON's whitespace; a line of nothing else is ignored. */
static bool all_space(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return false;
    return true;
}

static void start_line(adm_ndjson_t *self)
{
    sg_wbuf_reset(&self->part);
    self->number++;
    self->len = 0;
    self->blank = true;
}

/* Hand out the current line (whose last piece, if it is in the caller's chunk, is tail/tail_len
 * and not yet in part); false for a blank one. */
static bool finish_line(adm_ndjson_t *self, const char *tail, size_t tail_len, adm_line_t *line)
{
    if (self->blank) {
        start_line(self);
        return false;
    }
    line->number = self->number;
    line->too_long = self->len > self->max_line;
    line->data = NULL;
    line->len = 0;
    if (!line->too_long) {
        /* A line wholly inside this chunk is handed out where it is, without a copy. */
        if (self->part.len == 0) {
            line->data = tail;
            line->len = tail_len;
        } else {
            line->data = (const char *)self->part.data;
            line->len = self->part.len;
        }
    }
    self->emitted = true;
    return true;
}

sg_rc adm_ndjson_next(adm_ndjson_t *self, const char *data, size_t len, size_t *used, adm_line_t *line)
{
    if (self->emitted) {
        self->emitted = false;
        start_line(self);
    }
    size_t pos = 0;
    while (pos < len) {
        const char *seg = data + pos;
        const char *nl = memchr(seg, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - seg) : len - pos;
        if (self->blank && !all_space(seg, n))
            self->blank = false;
        bool fits = self->len + n <= self->max_line;
        /* Keep the piece only when the line goes on in a later chunk (or began in an earlier
         * one) and still fits; a line that is too long is only counted. */
        if (fits && (!nl || self->part.len > 0) && n > 0) {
            if (sg_wbuf_bytes(&self->part, seg, n) != SG_OK)
                fits = false;   /* cannot happen: part's cap is max_line */
        }
        if (!fits)
            sg_wbuf_reset(&self->part);
        self->len += n;
        if (self->len > self->max_line)
            self->len = self->max_line + 1;   /* no overflow however long it gets */
        pos += n;
        if (!nl)
            break;
        pos++;   /* the '\n' */
        if (finish_line(self, seg, n, line)) {
            *used = pos;
            return SG_OK;
        }
    }
    *used = len;
    return SG_E_AGAIN;
}

sg_rc adm_ndjson_end(adm_ndjson_t *self, adm_line_t *line)
{
    if (self->emitted) {
        self->emitted = false;
        start_line(self);
    }
    if (self->len == 0)
        return SG_E_AGAIN;
    /* Everything of an unterminated line is in part (or it was too long to keep). */
    return finish_line(self, NULL, 0, line) ? SG_OK : SG_E_AGAIN;
}
