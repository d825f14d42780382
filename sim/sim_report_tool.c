/* sim_report_tool.c — `sim_report_write SUMMARY.json REPORT.html`: the report writer on its own,
 * for the browser test (tests/sim/report_browser_test.py) and for turning a summary into a page
 * without the simulator; `sacgate-sim report` calls the same sim_report_write_html_file(). */
#include <stdio.h>
#include "sim_report.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SUMMARY.json REPORT.html\n"
                        "Writes the self-contained HTML report of a sacgate-sim JSON summary.\n",
                argv[0]);
        return 2;
    }
    char err[512];
    sg_rc rc = sim_report_write_html_file(argv[1], argv[2], err, sizeof err);
    if (rc != SG_OK) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        return 1;
    }
    return 0;
}
