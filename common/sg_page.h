/* sg_page.h — a page of a log read (GET /v1/telemetry, GET /v1/feedback) as JSON, and a page of
 * telemetry records in the compact form a shard sends to an admin that renders the JSON itself.
 *
 * The JSON is {"partition":P,"records":[...],"next":N,"oldest":O[,"group":"G"]}. A shard used to
 * send every telemetry page as that JSON, about 380 bytes a 100-byte record with the properties
 * the simulator's IoT Hub devices send (field names, a timestamp as text, the payload in base64):
 * in a cluster each byte of it goes through a CURVE box and a TCP send twice (shard to router,
 * router to admin), and the read pages were two thirds of all the bytes a telemetry run moves
 * between the tiers. An admin that asks for it (SG_WIRE_F_PAGE on its ADMIN read) gets the
 * records as they are stored instead, about 250 bytes each there (a third less), and writes
 * their JSON with the same code (sg_page_tele_dump), so the answer is the same text either way. A shard that does not know the flag answers with JSON as before; an admin
 * that does not set it gets JSON from a shard that knows it.
 *
 * Compact body (ADMIN_RES, status 200, flags SG_WIRE_F_PAGE): u32 partition, u64 next (the last
 * offset this page covers), u64 oldest, u32 count, str8 group ("" when none), then count records
 * of u64 offset, u64 enqueued (ms), str8 device, [u16 stamp], props (sg_wire_props), str32 payload.
 *
 * The stamp: every record carries two properties the gateway stamps, iothub-connection-device-id
 * (the device) and iothub-connection-auth-method (one of three JSON texts, by the session's
 * credential kind): about 125 of a 100-byte message's 250 stored bytes. Shards store the kind
 * instead (st_record.h) and spell the pair out only in JSON. An admin that asks with
 * SG_WIRE_F_STAMPED too gets the kind as a word SG_PAGE_STAMPED | kind in front of the record's
 * own properties (a property count never has the top bit); an admin that does not gets the pair
 * written out among the properties, as before. */
#ifndef SG_PAGE_H
#define SG_PAGE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sg_buf.h"
#include "sg_result.h"
#include "sg_wire.h"

/* A page stops before the JSON of its records passes this size; it always holds at least one
 * record, which fits because records are capped. */
#define SG_PAGE_MAX_JSON (4u << 20)

/* The stamped pair (see above); SG_CRED_* kinds. */
#define SG_STAMP_DEVICE "iothub-connection-device-id"
#define SG_STAMP_AUTH "iothub-connection-auth-method"
#define SG_PAGE_STAMPED 0x8000
/* The JSON text of iothub-connection-auth-method for a credential kind (SAS for an unknown one). */
const char *sg_page_auth_method(uint8_t kind);
/* A record's properties at c, behind the stamp word when there is one (*stamped its kind, else 0). */
SG_WUR sg_rc sg_page_get_props(sg_cur_t *c, sg_wire_props_t *p, uint8_t *stamped);

/* ---- JSON values of records ---- */

/* A property list as an object (a value that is not UTF-8 becomes null, not bad JSON). */
json_t *sg_page_props_json(sg_wire_props_t p);
/* Bytes as a base64 string. */
json_t *sg_page_b64_json(const uint8_t *p, size_t n);
/* A time (ms since the epoch) as an RFC 3339 string. */
json_t *sg_page_time_json(int64_t ms);

/* One telemetry record, as JSON {"offset","deviceId","enqueuedAt","properties","payload"}. */
typedef struct {
    int64_t offset;
    int64_t enqueued_ms;
    const char *device;
    size_t device_len;
    uint8_t stamped;          /* SG_CRED_*: the stamped pair follows props; 0: props hold it */
    sg_wire_props_t props;
    const uint8_t *payload;
    size_t payload_len;
} sg_page_tele_t;
/* Clock text shared by the records of a page (their times mostly fall in the same second). */
typedef struct {
    bool valid;
    int64_t sec;
    char text[25];
} sg_page_clock_t;
/* Write t's JSON at the end of f: the text jansson dumps (JSON_COMPACT) for the object json_pack
 * builds of its members, written directly. SG_E_MALFORMED when its device id is not UTF-8 (a
 * damaged record: jansson refuses it); f is as before on any error. */
SG_WUR sg_rc sg_page_tele_dump(sg_wbuf_t *f, const sg_page_tele_t *t, sg_page_clock_t *clk);
/* The length of its JSON when nothing in it needs escaping (always so for the device id; a
 * property with a quote, a backslash or a control character makes it longer, one that is not
 * UTF-8 shorter). */
size_t sg_page_tele_json_len(const sg_page_tele_t *t);

/* ---- a JSON page written in place ---- */

typedef struct {
    sg_wbuf_t *f;
    size_t records_at;   /* where the first record goes */
    size_t n;            /* records so far */
    sg_page_clock_t clock;
} sg_page_json_t;

/* Start the page at the end of f: {"partition":P,"records":[ */
SG_WUR sg_rc sg_page_json_begin(sg_page_json_t *j, sg_wbuf_t *f, uint32_t partition);
/* Dump rec in place (its reference stays the caller's). false when it would take the records
 * past SG_PAGE_MAX_JSON (never for the first) or cannot be dumped: f is as before, the page is
 * full. */
bool sg_page_json_add(sg_page_json_t *j, const json_t *rec);
/* End the page: ],"next":N,"oldest":O[,"group":"G"]} (group NULL or "": none). */
/* The same for a telemetry record, dumped directly (sg_page_tele_dump): 1 added, 0 the page is
 * full, -1 a damaged record (left out; the page goes on). */
int sg_page_json_add_tele(sg_page_json_t *j, const sg_page_tele_t *t);
SG_WUR sg_rc sg_page_json_end(sg_page_json_t *j, int64_t next, uint64_t oldest, const char *group);

/* ---- the compact form ---- */

typedef struct {
    sg_wbuf_t *f;
    bool stamped;       /* the asker takes stamp words */
    size_t head_at;     /* where next and count are patched in at the end */
    uint32_t n;
    size_t json;        /* the records' JSON, as sg_page_tele_json_len counts it */
} sg_page_out_t;

/* Start a compact page at the end of f (after the ADMIN_RES header); stamped: the asker set
 * SG_WIRE_F_STAMPED. */
SG_WUR sg_rc sg_page_out_begin(sg_page_out_t *o, sg_wbuf_t *f, uint32_t partition, uint64_t oldest, const char *group,
                               bool stamped);
/* Add t unless its JSON would take the page past SG_PAGE_MAX_JSON (the first always goes in):
 * false then, and the page is full. */
bool sg_page_out_add(sg_page_out_t *o, const sg_page_tele_t *t);
/* next: the last offset the page covers (damaged records skipped count). */
void sg_page_out_end(sg_page_out_t *o, int64_t next);

/* The JSON of a compact page body into out (appended). When the records' JSON is longer than
 * counted (escaped properties), the page ends at the last record that fits and says so in
 * "next". SG_E_MALFORMED for a damaged body. */
SG_WUR sg_rc sg_page_render(const uint8_t *body, size_t len, sg_wbuf_t *out);

#endif
