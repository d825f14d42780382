/* sim_opts.h — the simulator's settings: every command-line flag, its default and its help text
 * live in one table in sim_opts.c, so `sacgate-sim --help` always documents them all. */
#ifndef SIM_OPTS_H
#define SIM_OPTS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include "sg_result.h"

#define SIM_MAX_PORTS 256
#define SIM_MAX_SOURCES 64

typedef enum { SIM_MODE_IOTHUB = 0, SIM_MODE_PLAIN = 1 } sim_mode_t;
typedef enum { SIM_PROV_NONE = 0, SIM_PROV_IMPORT = 1 } sim_prov_t;

/* A block of source addresses: base (host order) and how many consecutive addresses. */
typedef struct {
    uint32_t base;
    uint32_t count;
} sim_source_t;

typedef struct {
    /* target */
    sim_mode_t mode;
    char host[256];
    struct sockaddr_storage addr;   /* host resolved (port filled per connection) */
    socklen_t addr_len;
    int ports[SIM_MAX_PORTS];
    int n_ports;
    char ports_env[512];
    sim_source_t sources[SIM_MAX_SOURCES];
    int n_sources;
    uint64_t n_source_addrs;        /* sum of the blocks' counts */
    bool tls;
    char cafile[512];
    bool insecure;
    bool tls_resume;                /* keep each device's session ticket; resume on reconnect */
    char server_name[256];
    char cert[512], key[512];
    char psk_hex[256];              /* one PSK for every device (hex), or "" */
    bool psk_derive;                /* per-device PSK derived from key_seed */
    char psk_identity[256];         /* template, {id} = device id */
    char tls_version[8];            /* "1.2", "1.3" or "any" */
    /* devices */
    uint64_t devices;
    uint64_t first;
    char prefix[64];
    unsigned slice_index, slice_count;
    uint64_t slice_first, slice_n;   /* computed: the devices this run simulates */
    char credentials[512];
    char key_seed[256];
    char key_seed_file[512];
    sim_prov_t provision;
    char admin_url[256];
    char token[512];
    char token_file[512];
    char sas_host[256];
    int token_ttl;
    char username[256];
    char password[256];
    bool clean_session;
    /* behaviour */
    double rate;                    /* connects per second, whole run (0 = as fast as possible) */
    double jitter;
    int max_connecting;             /* per thread */
    int keepalive;
    int connect_timeout;
    bool reconnect;
    int backoff_min_ms, backoff_max_ms;
    double publish_rate;            /* messages per second per device */
    uint64_t messages;              /* per device, 0 = no limit */
    int qos;
    int size;
    int window;
    char topic[256];                /* telemetry topic template */
    bool subscribe;
    char command_topic[256];        /* subscription filter template */
    int sub_qos;
    bool backend;
    double command_rate;            /* back-end commands per second, whole run */
    int command_size;
    int command_ttl;
    char backend_topic[256];        /* plain mode: the back-end's subscription */
    int backend_min;                /* iothub mode: records a telemetry read waits for (min) */
    int backend_wait_ms;            /* ...and how long it waits (wait) */
    int partitions;                 /* 0 = ask GET /v1/cluster */
    double storm_after;             /* seconds after every device was online; < 0 = no storm */
    double disrupt_after;           /* likewise, for disrupt_command; < 0 = none */
    char disrupt_command[512];
    double duration;
    double hold;                    /* seconds after every device first connected; < 0 = unset */
    int processes, threads;
    int sessions_per_process;
    /* output */
    char report[512];
    char json[512];
    char html[512];
    char label[128];
    bool quiet;
    bool dry_run;
    char server_pids[1024];
    char server_pids_dir[512];
    char server_comm[256];
    char command_line[2048];
} sim_opts_t;

/* Defaults for every field. */
void sim_opts_defaults(sim_opts_t *o);
/* Parse argv (after the subcommand). On failure returns SG_E_INVALID with a message in err. */
SG_WUR sg_rc sim_opts_parse(sim_opts_t *o, int argc, char **argv, char *err, size_t err_len);
/* Fill derived fields (mode-dependent defaults, slice range, ports from --ports-env, address,
 * processes/threads, token from --token-file) and check combinations. */
SG_WUR sg_rc sim_opts_finish(sim_opts_t *o, char *err, size_t err_len);
void sim_opts_help(FILE *out);

/* "I/N" -> index, count (0 <= I < N). */
SG_WUR sg_rc sim_parse_slice(const char *s, unsigned *index, unsigned *count);
/* The I-th of N disjoint, contiguous slices of [first, first + devices): sizes differ by at most
 * one and together cover the range exactly. */
void sim_slice_range(uint64_t first, uint64_t devices, unsigned index, unsigned count, uint64_t *slice_first,
                     uint64_t *slice_n);
/* "a.b.c.d/len" or "a.b.c.d" (IPv4, loopback or not) -> a block of addresses. The network and
 * broadcast addresses of a /len < 31 are left out. */
SG_WUR sg_rc sim_parse_source(const char *s, sim_source_t *out);
/* MQTT_PORTS="p1 p2" (and ADMIN_PORT=p) from a cluster.sh ports.env file. */
SG_WUR sg_rc sim_read_ports_env(const char *path, int *ports, int *n_ports, int max, int *admin_port);

#endif
