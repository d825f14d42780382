/* st_writer.h — what the shard's writer thread (st_writer.c) lends to the operations it hands to
 * other files (st_import.c): its device cache, the registry put that PUT /v1/devices/{id} and
 * imports share, and answers queued until the batch is committed. Internal to the store; every
 * function here runs on the writer thread, and a storage error ends the process (as in every
 * writer path: the shard restarts from its WAL). */
#ifndef ST_WRITER_H
#define ST_WRITER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sg_result.h"
#include "st_internal.h"
#include "st_registry.h"

typedef struct st_writer st_writer_t;
typedef struct st_wdev st_wdev_t;     /* one cached device */
typedef struct st_op st_op_t;         /* one received frame with its envelope */

/* The cached state of device id (len bytes, a valid id), loaded on first use. */
st_wdev_t *st_writer_dev(st_writer_t *w, const char *id, size_t len);
bool st_wdev_exists(const st_wdev_t *d);
const st_ctx_t *st_writer_ctx(const st_writer_t *w);

/* Validate body as a PUT /v1/devices/{id} body against d's entry and write the result into the
 * open batch: counted when created, the live session kicked when credentials or status change.
 * On success put->generated is the caller's to release (put->stored is released already), and
 * with answer non-NULL *answer is PUT's answer (the public entry plus the generated keys).
 * SG_E_INVALID with err_name/err_msg when body is refused. */
SG_WUR sg_rc st_writer_device_put(st_writer_t *w, st_wdev_t *d, const json_t *body, int64_t now, st_reg_put_t *put,
                                  json_t **answer, const char **err_name, char *err_msg, size_t err_len);

/* Answer op's ADMIN request once the batch is durable (body's reference is taken). */
void st_writer_answer_admin(st_writer_t *w, const st_op_t *op, int status, json_t *body);

/* SG_ADM_DEVICE_IMPORT (st_import.c): json/len is the frame's body. */
void st_import_apply(st_writer_t *w, const st_op_t *op, const char *json, size_t len, int64_t now);

#endif
