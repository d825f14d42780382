/* dev_records_bench.c — what loading a device's state costs with today's three records per device
 * in the "dev" column family ({id}\0M queue counters, {id}\0R registry entry, {id}\0S session;
 * st_keys.h) against one combined record per device ({id}\0C holding the three), for issue 7
 * part 3. Not part of sacgate and no storage format: layout (b) exists only in this tool's
 * databases. bench/dev_records.py runs it and writes bench/results/dev-records.json.
 *
 *   dev_records_bench create DIR [--devices N]
 *       DIR/a and DIR/b (DIR must not hold them yet): N devices "sim-{n}" written with the real
 *       encoders (st_reg_put's entry for a SAS device with generated keys, a live session on a
 *       frontend loop, queue counters) as three records (a) or one (b), through st_db_open with
 *       a shard's default options (store.memory 512 MiB, store.write_buffer 64 MiB); then flushed,
 *       compacted to the bottom level and closed. Prints one JSON object: record and disk sizes.
 *   dev_records_bench read DIR --layout a|b --mode random|sorted|point|multi1 [--devices N] [--loads K]
 *                          [--batch B] [--seed S] [--page-cache cold|warm]
 *       In this (fresh) process: with --page-cache cold, drop DIR/{layout}'s files from the OS
 *       page cache (posix_fadvise DONTNEED: only these files, unlike /proc/sys/vm/drop_caches),
 *       with warm read them whole first (a restart whose files the kernel still caches); the
 *       pages resident after are counted (mincore). Then open the database and load K distinct
 *       random devices of the N three times: pass "first" (empty block cache: a restart), pass
 *       "warm" (the same devices again, their blocks cached), pass "decode" (warm, and each
 *       device's records decoded as the writer's dev_fill does: st_reg_parse, st_session_get,
 *       st_qmeta_get). mode random: batches of B (1,024) devices in random order, each batch
 *       sorted, one batched MultiGet each, as a reader reads ahead (st_wahead.c); layout a through
 *       the store's own st_db_dev_records (3 keys a device). sorted: all K sorted first, then
 *       batches of B, as a start-up loads its live sessions (stw_dev_load_sorted). point: one
 *       device at a time with rocksdb_get (3 gets in layout a, as the writer's dev_load does on a
 *       cache miss without read-ahead; 1 in b). multi1: one device at a time, but through the
 *       batched MultiGet (st_db_dev_records with one device: its 3 keys in one call in layout a).
 *       Prints one JSON object: per pass wall and CPU
 *       microseconds per device, block cache hits and misses, bytes read from the disk; and a
 *       digest of the values read, the same for both layouts.
 *   dev_records_bench migrate DIR
 *       DIR/a rewritten in place into layout b, as a format change would make every shard do once:
 *       one scan of "dev", a combined record written and the three deleted for each device, then
 *       a compaction. Prints the seconds each took. (Run it last: DIR/a is layout b after.)
 *   dev_records_bench smoke
 *       A small run in a temporary directory under /tmp (2,000 devices): creates both layouts,
 *       checks that every device's three records read back the same from both, by batch and by
 *       point reads, runs every read mode of both layouts, migrates a and checks it reads the same
 *       again, removes the directory. ctest runs it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "sg_buf.h"
#include "sg_sas.h"
#include "st_db.h"
#include "st_keys.h"
#include "st_record.h"
#include "st_registry.h"

#define MIB (1024 * 1024)
#define K_COMBINED 'C' /* layout b's one key a device: {id}\0C */
#define ONEREC_V1 1

/* A shard's defaults (common/sg_config.c: store.memory, store.write_buffer). */
static const st_db_opts_t k_shard_opts = {.sync = false, .write_buffer = 64 * MIB, .memory = 512 * MIB};

__attribute__((noreturn)) static void die(const char *what)
{
    fprintf(stderr, "dev_records_bench: %s\n", what);
    exit(1);
}

/* ---- devices and their records ------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;   /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static size_t dev_id(char *out, uint32_t n) { return (size_t)sprintf(out, "sim-%" PRIu32, n); }

/* Device n's three records as a shard would store them after a SAS registration, a connect
 * (a live session subscribed to commands and methods) and a first command. */
typedef struct {
    char *reg;   /* registry entry, JSON (malloc'd) */
    size_t reg_len;
    sg_wbuf_t sess, meta;
} dev_recs_t;

static void dev_records(uint32_t n, uint64_t *rng, dev_recs_t *r)
{
    char id[32];
    dev_id(id, n);
    json_t *body = json_pack("{s:{s:s}}", "auth", "type", "sas");
    st_reg_put_t put;
    const char *ename = NULL;
    char emsg[256];
    if (!body || st_reg_put(id, body, NULL, 1796000000000 + n, &put, &ename, emsg, sizeof emsg) != SG_OK)
        die("st_reg_put failed");
    json_decref(body);
    r->reg = json_dumps(put.stored, JSON_COMPACT);   /* as st_wadmin.c put_entry stores it */
    r->reg_len = r->reg ? strlen(r->reg) : 0;
    json_decref(put.stored);
    json_decref(put.generated);
    if (!r->reg)
        die("json_dumps failed");

    /* A frontend loop's routing id is "{frontend.name}/{loop}/{boot hex}" (fe_frontend.c). */
    st_session_t s = {.epoch = 1 + rng_next(rng) % 20, .live = true, .subscribed = true, .methods = true,
                      .method = SG_CRED_SAS, .handle = rng_next(rng) % 100000000,
                      .since_ms = 1796000000000 + (int64_t)(rng_next(rng) % 86400000)};
    snprintf(s.peer, sizeof s.peer, "fe-%u/%u/%012" PRIx64, (unsigned)(n % 30), (unsigned)(rng_next(rng) % 2),
             (uint64_t)(rng_next(rng) & 0xffffffffffffULL));
    snprintf(s.router, sizeof s.router, "router-0");
    sg_wbuf_reset(&r->sess);
    sg_wbuf_reset(&r->meta);
    st_qmeta_t m = {.next_seq = 1 + rng_next(rng) % 50, .count = 0, .bytes = 0};
    if (st_session_put(&r->sess, &s) != SG_OK || st_qmeta_put(&r->meta, &m) != SG_OK)
        die("record encoding failed");
}

/* Layout b's record: u8 version, str32 registry, str16 session, str16 queue counters. Every
 * device here has all three (absent ones would need a flag; none is measured). */
static void onerec_put(sg_wbuf_t *w, const dev_recs_t *r)
{
    sg_wbuf_reset(w);
    if (sg_wbuf_u8(w, ONEREC_V1) != SG_OK || sg_wbuf_str32(w, r->reg, r->reg_len) != SG_OK ||
        sg_wbuf_str16(w, r->sess.data, r->sess.len) != SG_OK || sg_wbuf_str16(w, r->meta.data, r->meta.len) != SG_OK)
        die("combined record encoding failed");
}

/* The three views (k: 0 registry, 1 session, 2 meta, as st_db_dev_records gives them). */
static bool onerec_split(const char *p, size_t n, const char *v[3], size_t vl[3])
{
    sg_cur_t c;
    uint8_t ver;
    const uint8_t *q[3];
    sg_cur_init(&c, p, n);
    if (sg_cur_u8(&c, &ver) != SG_OK || ver != ONEREC_V1 || sg_cur_str32(&c, 1 << 20, &q[0], &vl[0]) != SG_OK ||
        sg_cur_str16(&c, 65535, &q[1], &vl[1]) != SG_OK || sg_cur_str16(&c, 65535, &q[2], &vl[2]) != SG_OK ||
        sg_cur_left(&c) != 0)
        return false;
    for (int k = 0; k < 3; k++)
        v[k] = (const char *)q[k];
    return true;
}

/* ---- layout b's loads, shaped like the store's own for layout a ---------------------------- */

typedef void each_fn(void *arg, size_t i, const char *const v[3], const size_t vl[3]);

typedef struct {
    each_fn *each;
    void *arg;
    bool damaged;
} onerec_ctx_t;

static void onerec_each(void *arg, size_t i, const char *const *v, const size_t *vl)
{
    onerec_ctx_t *x = arg;
    const char *r[3] = {NULL, NULL, NULL};
    size_t rl[3] = {0, 0, 0};
    if (v[0] && !onerec_split(v[0], vl[0], r, rl))
        x->damaged = true;
    else if (!x->damaged)
        x->each(x->arg, i, r, rl);
}

/* Layout b's loads: one key a device, through the store's own batched MultiGet
 * (st_db_dev_multi_get, which st_db_dev_records uses for layout a's three), so that the two
 * layouts differ only in their keys and records. */
static sg_rc onerec_records(st_db_t *db, const char *const *ids, size_t n, each_fn *each, void *arg)
{
    static const char kinds[1] = {K_COMBINED};
    onerec_ctx_t x = {each, arg, false};
    sg_rc rc = st_db_dev_multi_get(db, ids, n, true, kinds, 1, onerec_each, &x);
    return rc == SG_OK && x.damaged ? SG_E_MALFORMED : rc;
}

/* One device by point reads: layout a as the writer's dev_load (registry, session, meta: three
 * rocksdb_get, each value copied out), layout b one rocksdb_get. */
static sg_rc point_load(st_db_t *db, char layout, const char *id, each_fn *each, void *arg, size_t i)
{
    char key[ST_KEY_MAX];
    size_t id_len = strlen(id);
    const char *v[3] = {NULL, NULL, NULL};
    size_t vl[3] = {0, 0, 0};
    sg_rc rc;
    if (layout == 'a') {
        static const char kinds[3] = {ST_K_REGISTRY, ST_K_SESSION, ST_K_META};
        char *val[3] = {NULL, NULL, NULL};
        rc = SG_OK;
        for (int k = 0; k < 3 && rc == SG_OK; k++)
            if (k != 1 || val[0])   /* dev_load skips the session of an unknown id */
                rc = st_db_get(db, NULL, ST_CF_DEV, key, st_key_dev(key, id, id_len, kinds[k]), &val[k], &vl[k]);
        for (int k = 0; k < 3; k++)
            v[k] = val[k];
        if (rc == SG_OK)
            each(arg, i, v, vl);
        for (int k = 0; k < 3; k++)
            rocksdb_free(val[k]);
        return rc;
    }
    char *val = NULL;
    size_t len = 0;
    rc = st_db_get(db, NULL, ST_CF_DEV, key, st_key_dev(key, id, id_len, K_COMBINED), &val, &len);
    if (rc == SG_OK && val && !onerec_split(val, len, v, vl))
        rc = SG_E_MALFORMED;
    if (rc == SG_OK)
        each(arg, i, v, vl);
    rocksdb_free(val);
    return rc;
}

/* ---- what a load does with the records ------------------------------------------------------ */

typedef struct {
    bool decode;        /* as dev_fill: parse all three */
    uint64_t digest;    /* order-independent sum of every value's hash: the same for both layouts */
    size_t devices, missing, bad;
    const char *const *ids;   /* the batch, for smoke's comparison */
    json_t *seen;       /* smoke: id -> [reg, sess, meta] as read */
} sink_t;

static uint64_t fnv(const char *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 0x100000001b3ULL;
    return h;
}

static void sink_each(void *arg, size_t i, const char *const v[3], const size_t vl[3])
{
    sink_t *s = arg;
    s->devices++;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int k = 0; k < 3; k++) {
        if (!v[k]) {
            s->missing++;
            h = fnv("-", 1, h);
            continue;
        }
        h = fnv(v[k], vl[k], fnv((const char *)&vl[k], sizeof vl[k], h));
    }
    s->digest += h;
    if (s->decode) {
        st_reg_t reg;
        st_session_t sess;
        st_qmeta_t meta;
        if (!v[0] || st_reg_parse(v[0], vl[0], &reg) != SG_OK || !v[1] || st_session_get(v[1], vl[1], &sess) != SG_OK ||
            !v[2] || st_qmeta_get(v[2], vl[2], &meta) != SG_OK)
            s->bad++;
    }
    if (s->seen) {
        json_t *a = json_array();
        for (int k = 0; k < 3; k++)
            json_array_append_new(a, v[k] ? json_stringn_nocheck(v[k], vl[k]) : json_null());
        json_t *had = json_object_get(s->seen, s->ids[i]);
        if (had && !json_equal(had, a))
            s->bad++;
        json_object_set_new(s->seen, s->ids[i], a);
    }
}

/* ---- measuring ------------------------------------------------------------------------------ */

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static double cpu_us(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 + (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

/* Bytes this process caused to be read from storage (below the page cache). */
static uint64_t io_read_bytes(void)
{
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    uint64_t v = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "read_bytes: %" SCNu64, &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static uint64_t stat_count(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && (p = strstr(p, name)) != NULL; p += n)
        if ((p == text || p[-1] == '\n') && strncmp(p + n, " COUNT : ", 9) == 0)
            return strtoull(p + n + 9, NULL, 10);
    return 0;
}

enum { S_HIT, S_MISS, S_DATA_MISS, S_DATA_HIT, S_INDEX_MISS, S_FILTER_MISS, S_BLOOM_USEFUL, S_BYTES_READ, S_N };
static const char *const k_stats[S_N] = {
    "rocksdb.block.cache.hit",        "rocksdb.block.cache.miss",       "rocksdb.block.cache.data.miss",
    "rocksdb.block.cache.data.hit",   "rocksdb.block.cache.index.miss", "rocksdb.block.cache.filter.miss",
    "rocksdb.bloom.filter.useful",    "rocksdb.bytes.read"};
static const char *const k_stat_names[S_N] = {"cacheHits",   "cacheMisses",  "dataBlockMisses",  "dataBlockHits",
                                              "indexMisses", "filterMisses", "bloomUseful", "getBytesRead"};

static void stats_now(st_db_t *db, uint64_t out[S_N])
{
    char *text = rocksdb_options_statistics_get_string(db->opts);
    for (int i = 0; i < S_N; i++)
        out[i] = text ? stat_count(text, k_stats[i]) : 0;
    rocksdb_free(text);
}

typedef struct {
    double wall_us, cpu_us;
    uint64_t disk_bytes;
    uint64_t st[S_N];
} sample_t;

static void sample_begin(st_db_t *db, sample_t *s)
{
    stats_now(db, s->st);
    s->disk_bytes = io_read_bytes();
    s->cpu_us = cpu_us();
    s->wall_us = now_us();
}

static void sample_end(st_db_t *db, sample_t *s)
{
    s->wall_us = now_us() - s->wall_us;
    s->cpu_us = cpu_us() - s->cpu_us;
    s->disk_bytes = io_read_bytes() - s->disk_bytes;
    uint64_t st[S_N];
    stats_now(db, st);
    for (int i = 0; i < S_N; i++)
        s->st[i] = st[i] - s->st[i];
}

static void sample_json(FILE *f, const char *name, const sample_t *s, size_t devices)
{
    fprintf(f, "\"%s\": {\"wallUsPerDevice\": %.3f, \"cpuUsPerDevice\": %.3f, \"wallMs\": %.1f, \"cpuMs\": %.1f, "
               "\"diskBytesRead\": %" PRIu64,
            name, s->wall_us / (double)devices, s->cpu_us / (double)devices, s->wall_us / 1e3, s->cpu_us / 1e3,
            s->disk_bytes);
    for (int i = 0; i < S_N; i++)
        fprintf(f, ", \"%s\": %" PRIu64, k_stat_names[i], s->st[i]);
    fprintf(f, "}");
}

/* ---- the page cache ------------------------------------------------------------------------- */

typedef struct {
    uint64_t resident_pages, pages, files;
    int how;   /* 'c': drop the files' pages, 'w': read the files whole first; then count */
} pcache_t;

/* Every regular file of dir: dropped from the page cache or read into it, then its pages
 * resident counted (mincore). */
static void pcache_walk(const char *dir, pcache_t *pc)
{
    DIR *d = opendir(dir);
    if (!d)
        die("cannot list the database directory");
    long page = sysconf(_SC_PAGESIZE);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0)
            continue;
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        if (pc->how == 'c') {
            fdatasync(fd);   /* DONTNEED drops clean pages only */
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        } else if (pc->how == 'w') {
            static char buf[1 << 16];
            while (read(fd, buf, sizeof buf) > 0) {
            }
        }
        size_t n = (size_t)((st.st_size + page - 1) / page);
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        unsigned char *vec = malloc(n);
        if (m != MAP_FAILED && vec && mincore(m, (size_t)st.st_size, vec) == 0)
            for (size_t i = 0; i < n; i++)
                pc->resident_pages += vec[i] & 1;
        pc->pages += n;
        pc->files++;
        free(vec);
        if (m != MAP_FAILED)
            munmap(m, (size_t)st.st_size);
        close(fd);
    }
    closedir(d);
}

/* ---- create --------------------------------------------------------------------------------- */

static void open_db(st_db_t *db, const char *path)
{
    if (st_db_open(db, path, &k_shard_opts) != SG_OK)
        die("st_db_open failed");
}

static uint64_t prop_dev(st_db_t *db, const char *name)
{
    uint64_t v = 0;
    return rocksdb_property_int_cf(db->db, db->cf[ST_CF_DEV], name, &v) == 0 ? v : 0;
}

/* Table files of the "dev" column family, all levels. */
static uint64_t dev_files(st_db_t *db)
{
    uint64_t sum = 0;
    for (int level = 0; level < 7; level++) {
        char name[64];
        snprintf(name, sizeof name, "rocksdb.num-files-at-level%d", level);
        char *v = rocksdb_property_value_cf(db->db, db->cf[ST_CF_DEV], name);
        if (v)
            sum += strtoull(v, NULL, 10);
        rocksdb_free(v);
    }
    return sum;
}

static uint64_t dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    uint64_t sum = 0;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        char path[4096 + 256];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            sum += (uint64_t)st.st_size;
    }
    if (d)
        closedir(d);
    return sum;
}

static void compact(st_db_t *db)
{
    char *err = NULL;
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    for (int i = 0; i < ST_CF_COUNT; i++)
        rocksdb_flush_cf(db->db, fo, db->cf[i], &err);
    rocksdb_flushoptions_destroy(fo);
    if (err)
        die(err);
    rocksdb_compactoptions_t *co = rocksdb_compactoptions_create();
    rocksdb_compactoptions_set_bottommost_level_compaction(co, 2);   /* kForce: rewrite the bottom level too */
    rocksdb_compact_range_cf_opt(db->db, db->cf[ST_CF_DEV], co, NULL, 0, NULL, 0);
    rocksdb_compactoptions_destroy(co);
}

/* A figure of the "dev" column family's aggregated table properties ("... name=value; ..."). */
static uint64_t table_prop(st_db_t *db, const char *name)
{
    char *text = rocksdb_property_value_cf(db->db, db->cf[ST_CF_DEV], "rocksdb.aggregated-table-properties");
    const char *p = text ? strstr(text, name) : NULL;
    const char *eq = p ? strchr(p, '=') : NULL;
    uint64_t v = eq ? strtoull(eq + 1, NULL, 10) : 0;
    rocksdb_free(text);
    return v;
}

static void size_json(FILE *f, const char *name, const char *path, uint64_t keys, uint64_t key_bytes, uint64_t val_bytes)
{
    st_db_t db;
    open_db(&db, path);   /* reopened: the table readers' memory is that of a restarted shard's */
    fprintf(f, "\"%s\": {\"keys\": %" PRIu64 ", \"keyBytes\": %" PRIu64 ", \"valueBytes\": %" PRIu64
               ", \"devSstBytes\": %" PRIu64 ", \"devSstFiles\": %" PRIu64 ", \"dirBytes\": %" PRIu64
               ", \"tableReadersMemBytes\": %" PRIu64 ", \"dataBlocks\": %" PRIu64 ", \"dataBlockBytes\": %" PRIu64
               ", \"indexBytes\": %" PRIu64 ", \"filterBytes\": %" PRIu64 "}",
            name, keys, key_bytes, val_bytes, prop_dev(&db, "rocksdb.live-sst-files-size"),
            dev_files(&db),
            dir_bytes(path), prop_dev(&db, "rocksdb.estimate-table-readers-mem"), table_prop(&db, "# data blocks="),
            table_prop(&db, "; data block size="), table_prop(&db, "; index block size"),
            table_prop(&db, "; filter block size="));
    st_db_close(&db);
}

static void create(FILE *out, const char *dir, uint32_t n)
{
    char pa[4096], pb[4096];
    snprintf(pa, sizeof pa, "%s/a", dir);
    snprintf(pb, sizeof pb, "%s/b", dir);
    if (access(pa, F_OK) == 0 || access(pb, F_OK) == 0)
        die("DIR/a or DIR/b exists already");
    mkdir(dir, 0755);
    st_db_t a, b;
    open_db(&a, pa);
    open_db(&b, pb);
    /* The databases are made to be read: no WAL (both are flushed before they close). */
    rocksdb_writeoptions_disable_WAL(a.wo_nosync, 1);
    rocksdb_writeoptions_disable_WAL(b.wo_nosync, 1);
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    dev_recs_t r = {0};
    sg_wbuf_init(&r.sess, 4096);
    sg_wbuf_init(&r.meta, 4096);
    sg_wbuf_t one;
    sg_wbuf_init(&one, 1 << 20);
    uint64_t kb_a = 0, kb_b = 0, vb_a = 0, vb_b = 0, reg_bytes = 0, sess_bytes = 0, meta_bytes = 0;
    rocksdb_writebatch_t *ba = rocksdb_writebatch_create(), *bb = rocksdb_writebatch_create();
    double t0 = now_us();
    for (uint32_t i = 0; i < n; i++) {
        char id[32], key[ST_KEY_MAX];
        size_t id_len = dev_id(id, i), klen;
        dev_recs_t *p = &r;
        dev_records(i, &rng, p);
        klen = st_key_dev(key, id, id_len, ST_K_REGISTRY);
        rocksdb_writebatch_put_cf(ba, a.cf[ST_CF_DEV], key, klen, p->reg, p->reg_len);
        klen = st_key_dev(key, id, id_len, ST_K_SESSION);
        rocksdb_writebatch_put_cf(ba, a.cf[ST_CF_DEV], key, klen, (const char *)p->sess.data, p->sess.len);
        klen = st_key_dev(key, id, id_len, ST_K_META);
        rocksdb_writebatch_put_cf(ba, a.cf[ST_CF_DEV], key, klen, (const char *)p->meta.data, p->meta.len);
        onerec_put(&one, p);
        klen = st_key_dev(key, id, id_len, K_COMBINED);
        rocksdb_writebatch_put_cf(bb, b.cf[ST_CF_DEV], key, klen, (const char *)one.data, one.len);
        kb_a += 3 * klen;
        kb_b += klen;
        vb_a += p->reg_len + p->sess.len + p->meta.len;
        vb_b += one.len;
        reg_bytes += p->reg_len;
        sess_bytes += p->sess.len;
        meta_bytes += p->meta.len;
        if (i == 0)
            fprintf(stderr, "dev_records_bench: device 0: registry %zu B %s; session %zu B; meta %zu B; combined %zu B\n",
                    p->reg_len, p->reg, p->sess.len, p->meta.len, one.len);
        free(p->reg);
        if ((i + 1) % 1000 == 0 || i + 1 == n) {
            if (st_db_write(&a, ba, false) != SG_OK || st_db_write(&b, bb, false) != SG_OK)
                die("write failed");
            rocksdb_writebatch_clear(ba);
            rocksdb_writebatch_clear(bb);
        }
    }
    double t_write = now_us() - t0;
    rocksdb_writebatch_destroy(ba);
    rocksdb_writebatch_destroy(bb);
    sg_wbuf_fini(&r.sess);
    sg_wbuf_fini(&r.meta);
    sg_wbuf_fini(&one);
    t0 = now_us();
    compact(&a);
    double t_ca = now_us() - t0;
    t0 = now_us();
    compact(&b);
    double t_cb = now_us() - t0;
    st_db_close(&a);
    st_db_close(&b);
    fprintf(out, "{\"devices\": %" PRIu32 ", \"avgRegistryBytes\": %.1f, \"avgSessionBytes\": %.1f, \"avgMetaBytes\": %.1f, "
                 "\"writeSeconds\": %.1f, \"compactSecondsA\": %.1f, \"compactSecondsB\": %.1f, ",
            n, (double)reg_bytes / n, (double)sess_bytes / n, (double)meta_bytes / n, t_write / 1e6, t_ca / 1e6,
            t_cb / 1e6);
    size_json(out, "a", pa, 3ull * n, kb_a, vb_a);
    fprintf(out, ", ");
    size_json(out, "b", pb, n, kb_b, vb_b);
    fprintf(out, "}\n");
}

/* ---- read ----------------------------------------------------------------------------------- */

typedef struct {
    const char *dir;
    char layout;         /* 'a' or 'b' */
    const char *mode;    /* random, sorted, point, multi1 */
    uint32_t devices, loads, batch;
    uint64_t seed;
    int page_cache;      /* 0: as it is, 'c': cold (the files evicted), 'w': warm (the files read) */
} read_opts_t;

static int cmp_str(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

/* K distinct random ids of the N, in the order the mode reads them. */
static char **pick_ids(const read_opts_t *o)
{
    uint32_t *all = malloc((size_t)o->devices * sizeof *all);
    char **ids = calloc(o->loads, sizeof *ids);
    if (!all || !ids)
        die("out of memory");
    for (uint32_t i = 0; i < o->devices; i++)
        all[i] = i;
    uint64_t rng = o->seed * 0x9e3779b97f4a7c15ULL + 1;
    for (uint32_t i = 0; i < o->loads; i++) {   /* partial Fisher-Yates */
        uint32_t j = i + (uint32_t)(rng_next(&rng) % (o->devices - i));
        uint32_t t = all[i];
        all[i] = all[j];
        all[j] = t;
        char id[32];
        dev_id(id, all[i]);
        if (!(ids[i] = strdup(id)))
            die("out of memory");
    }
    free(all);
    if (strcmp(o->mode, "sorted") == 0)
        qsort(ids, o->loads, sizeof *ids, cmp_str);
    else if (strcmp(o->mode, "random") == 0)
        for (uint32_t i = 0; i < o->loads; i += o->batch)
            qsort(ids + i, o->loads - i < o->batch ? o->loads - i : o->batch, sizeof *ids, cmp_str);
    return ids;
}

static void load_all(st_db_t *db, const read_opts_t *o, char **ids, sink_t *s)
{
    bool point = strcmp(o->mode, "point") == 0, single = point || strcmp(o->mode, "multi1") == 0;
    for (uint32_t i = 0; i < o->loads;) {
        size_t n = single ? 1 : (o->loads - i < o->batch ? o->loads - i : o->batch);
        s->ids = (const char *const *)ids + i;
        sg_rc rc = point ? point_load(db, o->layout, ids[i], sink_each, s, 0)
                   : o->layout == 'a'
                       ? st_db_dev_records(db, (const char *const *)ids + i, n, true, sink_each, s)
                       : onerec_records(db, (const char *const *)ids + i, n, sink_each, s);
        if (rc != SG_OK)
            die("read failed");
        i += (uint32_t)n;
    }
}

static int do_read(FILE *out, const read_opts_t *o, json_t *seen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%c", o->dir, o->layout);
    char current[4200];
    snprintf(current, sizeof current, "%s/CURRENT", path);
    if (access(current, R_OK) != 0)
        die("no database there (run create first)");
    if (o->loads == 0 || o->loads > o->devices || o->batch == 0)
        die("--loads must be 1..devices, --batch at least 1");
    char **ids = pick_ids(o);
    pcache_t pc = {.how = o->page_cache};
    pcache_walk(path, &pc);
    double t0 = now_us(), c0 = cpu_us();
    uint64_t d0 = io_read_bytes();
    st_db_t db;
    open_db(&db, path);
    double open_wall = now_us() - t0, open_cpu = cpu_us() - c0;
    uint64_t open_disk = io_read_bytes() - d0;
    static const char *const pass_names[3] = {"first", "warm", "decode"};
    sample_t smp[3];
    sink_t sink[3];
    for (int p = 0; p < 3; p++) {
        sink[p] = (sink_t){.decode = p == 2, .seen = seen};
        sample_begin(&db, &smp[p]);
        load_all(&db, o, ids, &sink[p]);
        sample_end(&db, &smp[p]);
    }
    fprintf(out, "{\"layout\": \"%c\", \"mode\": \"%s\", \"devices\": %" PRIu32 ", \"loads\": %" PRIu32
                 ", \"batch\": %" PRIu32 ", \"seed\": %" PRIu64 ", \"pageCache\": \"%s\", \"residentPagesBefore\": %" PRIu64
                 ", \"pages\": %" PRIu64 ", \"openMs\": %.1f, \"openCpuMs\": %.1f, \"openDiskBytes\": %" PRIu64
                 ", \"digest\": \"%016" PRIx64 "\", \"missing\": %zu, \"bad\": %zu, ",
            o->layout, o->mode, o->devices, o->loads, o->batch, o->seed,
            o->page_cache == 'c' ? "cold" : o->page_cache == 'w' ? "warm" : "as-is", pc.resident_pages,
            pc.pages, open_wall / 1e3, open_cpu / 1e3, open_disk, sink[0].digest, sink[0].missing,
            sink[0].bad + sink[1].bad + sink[2].bad);
    for (int p = 0; p < 3; p++) {
        sample_json(out, pass_names[p], &smp[p], o->loads);
        fprintf(out, p < 2 ? ", " : "}\n");
    }
    bool ok = sink[0].digest == sink[1].digest && sink[1].digest == sink[2].digest && sink[0].devices == o->loads &&
              sink[0].missing == 0 && sink[0].bad + sink[1].bad + sink[2].bad == 0;
    st_db_close(&db);
    for (uint32_t i = 0; i < o->loads; i++)
        free(ids[i]);
    free(ids);
    if (!ok)
        fprintf(stderr, "dev_records_bench: layout %c mode %s: records missing, damaged or read differently\n",
                o->layout, o->mode);
    return ok ? 0 : 1;
}

/* ---- migrate -------------------------------------------------------------------------------- */

/* What a format change would make a shard do once: DIR/a rewritten in place into layout b (each
 * device's M, R and S records read by one scan of "dev", one combined record written and the
 * three deleted, 1,000 devices a batch through the WAL, synced at the end), then compacted to
 * drop what the deletes left. Other records of "dev" (queued messages) would stay as they are;
 * this database has none. */
static void set_bytes(sg_wbuf_t *w, const char *v, size_t n)
{
    sg_wbuf_reset(w);
    if (sg_wbuf_bytes(w, v, n) != SG_OK)
        die("out of memory");
}

static void migrate(FILE *out, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/a", dir);
    st_db_t db;
    open_db(&db, path);
    double t0 = now_us(), c0 = cpu_us();
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(db.db, db.ro, db.cf[ST_CF_DEV]);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    sg_wbuf_t one;
    sg_wbuf_init(&one, 1 << 20);
    dev_recs_t r = {0};
    sg_wbuf_init(&r.sess, 4096);
    sg_wbuf_init(&r.meta, 4096);
    char id[SG_DEVICE_ID_MAX + 1] = "";
    size_t id_len = 0, in_batch = 0;
    uint64_t devices = 0, have = 0;   /* have: bits of R, S, M seen for id */
    for (rocksdb_iter_seek_to_first(it);; rocksdb_iter_next(it)) {
        bool valid = rocksdb_iter_valid(it);
        size_t kl = 0, vl = 0;
        const char *k = valid ? rocksdb_iter_key(it, &kl) : NULL;
        const char *z = k ? memchr(k, 0, kl) : NULL;
        size_t kid = z ? (size_t)(z - k) : 0;
        if (id_len > 0 && (!valid || kid != id_len || memcmp(k, id, id_len) != 0)) {
            if (have != 7)
                die("a device without all three records");
            char key[ST_KEY_MAX];
            onerec_put(&one, &r);
            rocksdb_writebatch_put_cf(wb, db.cf[ST_CF_DEV], key, st_key_dev(key, id, id_len, K_COMBINED),
                                      (const char *)one.data, one.len);
            static const char kinds[3] = {ST_K_REGISTRY, ST_K_SESSION, ST_K_META};
            for (int i = 0; i < 3; i++)
                rocksdb_writebatch_delete_cf(wb, db.cf[ST_CF_DEV], key, st_key_dev(key, id, id_len, kinds[i]));
            free(r.reg);
            r.reg = NULL;
            devices++;
            have = 0;
            id_len = 0;
            if (++in_batch == 1000) {
                if (st_db_write(&db, wb, false) != SG_OK)
                    die("write failed");
                rocksdb_writebatch_clear(wb);
                in_batch = 0;
            }
        }
        if (!valid)
            break;
        if (!z || kid > SG_DEVICE_ID_MAX || kl != kid + 2)
            continue;   /* not one of the three */
        const char *v = rocksdb_iter_value(it, &vl);
        if (id_len == 0) {
            memcpy(id, k, kid);
            id_len = kid;
        }
        switch (k[kid + 1]) {
        case ST_K_REGISTRY:
            if (!(r.reg = malloc(vl)))
                die("out of memory");
            memcpy(r.reg, v, vl);
            r.reg_len = vl;
            have |= 1;
            break;
        case ST_K_SESSION:
            set_bytes(&r.sess, v, vl);
            have |= 2;
            break;
        case ST_K_META:
            set_bytes(&r.meta, v, vl);
            have |= 4;
            break;
        default:
            break;
        }
    }
    if (st_db_write(&db, wb, true) != SG_OK)   /* the last batch synced, as a shard's would be */
        die("write failed");
    rocksdb_iter_destroy(it);
    rocksdb_writebatch_destroy(wb);
    sg_wbuf_fini(&one);
    sg_wbuf_fini(&r.sess);
    sg_wbuf_fini(&r.meta);
    double rewrite_wall = now_us() - t0, rewrite_cpu = cpu_us() - c0;
    uint64_t sst_before = prop_dev(&db, "rocksdb.live-sst-files-size");
    t0 = now_us();
    c0 = cpu_us();
    compact(&db);
    double compact_wall = now_us() - t0, compact_cpu = cpu_us() - c0;
    fprintf(out, "{\"devices\": %" PRIu64 ", \"rewriteSeconds\": %.2f, \"rewriteCpuSeconds\": %.2f, "
                 "\"compactSeconds\": %.2f, \"compactCpuSeconds\": %.2f, \"devSstBytesBeforeCompaction\": %" PRIu64
                 ", \"devSstBytesAfter\": %" PRIu64 "}\n",
            devices, rewrite_wall / 1e6, rewrite_cpu / 1e6, compact_wall / 1e6, compact_cpu / 1e6, sst_before,
            prop_dev(&db, "rocksdb.live-sst-files-size"));
    st_db_close(&db);
}

/* ---- smoke ---------------------------------------------------------------------------------- */

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *f)
{
    (void)s;
    (void)flag;
    (void)f;
    return remove(p);
}

/* One read run as do_read reports it: its digest, or 0 when it failed or found bad records
 * (*bad set then); print: echo the report. */
static uint64_t smoke_read(const read_opts_t *o, json_t *seen, int *bad, bool print)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (!mem)
        die("open_memstream failed");
    *bad |= do_read(mem, o, seen);
    fclose(mem);
    json_t *j = json_loads(text, 0, NULL);
    const char *d = j ? json_string_value(json_object_get(j, "digest")) : NULL;
    uint64_t digest = d && json_integer_value(json_object_get(j, "bad")) == 0 ? strtoull(d, NULL, 16) : 0;
    if (!digest)
        *bad = 1;
    if (print)
        printf("smoke: %s", text);
    json_decref(j);
    free(text);
    return digest;
}

static int smoke(void)
{
    char dir[] = "/tmp/dev-records-smoke-XXXXXX";
    if (!mkdtemp(dir))
        die("mkdtemp failed");
    FILE *null = fopen("/dev/null", "w");
    const uint32_t n = 2000;
    create(null, dir, n);
    int bad = 0;
    json_t *seen = json_object();
    static const char *const modes[4] = {"random", "sorted", "point", "multi1"};
    uint64_t digest[2] = {0, 0};
    for (int m = 0; m < 4; m++)
        for (int l = 0; l < 2; l++) {
            /* every device, so seen compares each device's records across layouts and modes */
            read_opts_t o = {.dir = dir, .layout = (char)('a' + l), .mode = modes[m], .devices = n, .loads = n,
                             .batch = 100, .seed = 7, .page_cache = m == 0 ? 'c' : m == 1 ? 'w' : 0};
            uint64_t d = smoke_read(&o, seen, &bad, m == 0 && l == 0);
            if (m == 0)
                digest[l] = d;
            else if (d != digest[l])
                bad = 1;
        }
    if (digest[0] != digest[1] || json_object_size(seen) != n)
        bad = 1;
    /* Migrated in place, layout a's database reads as layout b's did. */
    migrate(null, dir);
    char pa[sizeof dir + 8], pb[sizeof dir + 8], pb0[sizeof dir + 8];
    snprintf(pa, sizeof pa, "%s/a", dir);
    snprintf(pb, sizeof pb, "%s/b", dir);
    snprintf(pb0, sizeof pb0, "%s/b0", dir);
    if (rename(pb, pb0) != 0 || rename(pa, pb) != 0)
        die("rename failed");
    read_opts_t o = {.dir = dir, .layout = 'b', .mode = "random", .devices = n, .loads = n, .batch = 100, .seed = 7};
    if (smoke_read(&o, seen, &bad, false) != digest[1])
        bad = 1;
    json_decref(seen);
    fclose(null);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    printf("dev_records_bench smoke: %s (%u devices, layouts a, b and a migrated to b read back the same records)\n",
           bad ? "FAILED" : "ok", (unsigned)n);
    return bad ? 1 : 0;
}

/* ---- main ----------------------------------------------------------------------------------- */

__attribute__((noreturn)) static void usage(void)
{
    fprintf(stderr, "usage: dev_records_bench create DIR [--devices N]\n"
                    "       dev_records_bench read DIR --layout a|b --mode random|sorted|point|multi1 [--devices N] "
                    "[--loads K] [--batch B] [--seed S] [--page-cache cold|warm]\n"
                    "       dev_records_bench migrate DIR\n"
                    "       dev_records_bench smoke\n");
    exit(2);
}

static uint32_t arg_u32(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v == 0 || v > UINT32_MAX)
        usage();
    return (uint32_t)v;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "smoke") == 0)
        return smoke();
    if (argc < 3)
        usage();
    read_opts_t o = {.dir = argv[2], .devices = 1000000, .loads = 100000, .batch = 1024, .seed = 1};
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        i++;
        if (strcmp(a, "--devices") == 0)
            o.devices = arg_u32(v);
        else if (strcmp(a, "--loads") == 0)
            o.loads = arg_u32(v);
        else if (strcmp(a, "--batch") == 0)
            o.batch = arg_u32(v);
        else if (strcmp(a, "--seed") == 0)
            o.seed = arg_u32(v);
        else if (strcmp(a, "--page-cache") == 0 && (strcmp(v, "cold") == 0 || strcmp(v, "warm") == 0))
            o.page_cache = v[0];
        else if (strcmp(a, "--layout") == 0 && (strcmp(v, "a") == 0 || strcmp(v, "b") == 0))
            o.layout = v[0];
        else if (strcmp(a, "--mode") == 0 &&
                 (strcmp(v, "random") == 0 || strcmp(v, "sorted") == 0 || strcmp(v, "point") == 0 ||
                  strcmp(v, "multi1") == 0))
            o.mode = v;
        else
            usage();
    }
    if (strcmp(argv[1], "create") == 0) {
        create(stdout, o.dir, o.devices);
        return 0;
    }
    if (strcmp(argv[1], "migrate") == 0 && argc == 3) {
        migrate(stdout, o.dir);
        return 0;
    }
    if (strcmp(argv[1], "read") == 0 && o.layout && o.mode)
        return do_read(stdout, &o, NULL);
    usage();
}
