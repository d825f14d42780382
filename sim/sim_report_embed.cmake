# sim_report_embed.cmake — `cmake -DIN=report.html -DOUT=sim_report_template.c -P <this>`: turns
# the report page template into a C byte array, so the simulator carries its page inside the
# binary and never looks for a file at run time. A byte array rather than a string literal: no
# escaping rules to get wrong and no compiler limit on literal length.
if(NOT IN OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DIN=report.html -DOUT=out.c -P sim_report_embed.cmake")
endif()

# sim_report.c puts the summary where this line is: refuse a template without exactly one.
file(READ "${IN}" text)
set(marker "\n<!--SIM-DATA-->\n")
string(FIND "${text}" "${marker}" first)
string(FIND "${text}" "${marker}" last REVERSE)
if(first EQUAL -1 OR NOT first EQUAL last)
  message(FATAL_ERROR "${IN}: needs exactly one line that is just <!--SIM-DATA-->")
endif()

file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR len "${digits} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
# 16 bytes a line keeps the generated file readable in a debugger or an editor
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" bytes "${bytes}")

file(WRITE "${OUT}.tmp"
"/* Generated from ${IN} by sim_report_embed.cmake: do not edit. */
#include <stddef.h>

extern const unsigned char sim_report_template_bytes[];
extern const size_t sim_report_template_size;

const unsigned char sim_report_template_bytes[] = {
${bytes}0x00 };
const size_t sim_report_template_size = ${len};
")
file(RENAME "${OUT}.tmp" "${OUT}")
