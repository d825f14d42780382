/* adm_import.h — POST /v1/devices:import: registry entries streamed as NDJSON, one a line. Each
 * line is checked here (JSON, deviceId, importMode) and appended to a frame for the shard that
 * owns the device (up to 1000 entries or about 1 MiB each); at most 8 frames per import are in
 * flight. The shards validate and write the entries exactly as PUT /v1/devices/{id} does. Memory
 * does not grow with the body: it holds the window, one open batch per shard, one line and the
 * first 1000 errors (and the keys generated for the answer, which must return them); while the
 * window is full the HTTP connection is suspended and the rest of the upload waits in the
 * socket. */
#ifndef ADM_IMPORT_H
#define ADM_IMPORT_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>
#include "adm_bridge.h"

typedef struct adm_import adm_import_t;

/* An import on conn, which it suspends and resumes. Lines over max_line bytes are refused
 * (LineTooLong); each frame may take timeout_ms, busy shards being retried within it. The ring
 * must be known (adm_bridge_shard_of). NULL on allocation failure. */
adm_import_t *adm_import_new(adm_bridge_t *bridge, struct MHD_Connection *conn, size_t max_line, int64_t timeout_ms);

/* The request is over (answered, or the client went away). Frames still in flight keep the
 * import's memory until they are answered; the last answer frees it. Accepts NULL. */
void adm_import_destroy(adm_import_t **self_p);

/* Take upload bytes; returns how many were taken. Fewer than len only when the window is full:
 * the connection is then suspended, and libmicrohttpd hands the rest again once it is resumed. */
size_t adm_import_feed(adm_import_t *self, const char *data, size_t len);

/* The body ended. True when every line's outcome is known: *answer is the 200 body (malloc'd).
 * False when the connection was suspended to wait for shards; call again once it resumes. */
bool adm_import_finish(adm_import_t *self, char **answer);

#endif
