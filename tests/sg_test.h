/* sg_test.h — the few macros the C unit tests share: CHECK fails the test with file:line and the
 * expression; CHECK_RC compares an sg_rc with the expected code and prints both names. */
#ifndef SG_TEST_H
#define SG_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sg_result.h"

static int sg_test_failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            sg_test_failures++;                                                      \
        }                                                                            \
    } while (0)

#define CHECK_RC(expr, want)                                                         \
    do {                                                                             \
        sg_rc got_ = (expr);                                                         \
        if (got_ != (want)) {                                                        \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__, __LINE__, \
                    #expr, sg_strerror(got_), sg_strerror(want));                    \
            sg_test_failures++;                                                      \
        }                                                                            \
    } while (0)

#define CHECK_STR(a, b)                                                              \
    do {                                                                             \
        const char *a_ = (a), *b_ = (b);                                             \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                     \
            fprintf(stderr, "%s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__,           \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                         \
            sg_test_failures++;                                                      \
        }                                                                            \
    } while (0)

#define TEST_DONE()                                                                  \
    do {                                                                             \
        if (sg_test_failures) {                                                      \
            fprintf(stderr, "%d check(s) failed\n", sg_test_failures);               \
            return 1;                                                                \
        }                                                                            \
        printf("all checks passed\n");                                               \
        return 0;                                                                    \
    } while (0)

#endif
