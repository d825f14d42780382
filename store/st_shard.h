/* st_shard.h — one storage shard: a RocksDB database and the threads around it.
 * A net actor owns the ZeroMQ ROUTER socket routers connect to; it hands writes to the single
 * writer thread (which batches them into one fsynced RocksDB write — group commit — and only
 * then answers) and reads to reader threads; all answers flow back through the net actor. */
#ifndef ST_SHARD_H
#define ST_SHARD_H

#include "sg_config.h"

typedef struct st_shard st_shard_t;

/* Start shard `name` (its telemetry partition is `partition`) bound at `bind`, with its database
 * in `data_dir`. Reads limits and options from cfg (store.*). NULL when the database cannot be
 * opened or the endpoint cannot be bound (the reason is logged). */
st_shard_t *st_shard_new(const sg_config_t *cfg, const char *name, unsigned partition,
                         const char *bind, const char *data_dir);
void st_shard_destroy(st_shard_t **self_p);
/* The endpoint actually bound (useful with tcp://127.0.0.1:*). */
const char *st_shard_endpoint(const st_shard_t *self);

#endif
