/* sim_report.h — the HTML report of a simulator run: one self-contained page (the template
 * sim/report.html, compiled into the binary at build time) with the run's JSON summary embedded,
 * which draws its tables and charts in the browser with no network and no other files.
 * `sacgate-sim report SUMMARY.json REPORT.html` and the test tool sim_report_write call this. */
#ifndef SIM_REPORT_H
#define SIM_REPORT_H

#include <stddef.h>
#include "sg_result.h"

/* Write the report page for the JSON summary json (len bytes, need not be NUL-terminated) to
 * path. The summary must be a JSON object with "tool": "sacgate-sim", else SG_E_MALFORMED and
 * nothing is written. Every '<' of the JSON is written as \u003c, so no string in the summary can
 * end the page's <script> element or open a comment. The page is written to a temporary file
 * beside path and renamed over it, so path is never left half-written; SG_E_IO when that fails. */
SG_WUR sg_rc sim_report_write_html(const char *json, size_t len, const char *path);

/* The same for a summary file (at most SIM_REPORT_MAX_JSON bytes, else SG_E_TOO_BIG). On failure
 * err (err_len bytes, may be NULL) says which file and what was wrong with it. */
#define SIM_REPORT_MAX_JSON ((size_t)256 << 20)
SG_WUR sg_rc sim_report_write_html_file(const char *json_path, const char *html_path, char *err,
                                        size_t err_len);

/* The embedded page template and the marker line the summary replaces (for tests). */
const char *sim_report_template(size_t *len);
#define SIM_REPORT_MARKER "<!--SIM-DATA-->"

#endif
