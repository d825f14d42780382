/* sg_result.h — the one error convention of sacgate.
 * Fallible functions return sg_rc (SG_OK or a negative SG_E_* code) and are marked SG_WUR, so the
 * caller must look at the result. SG_GUARD/SG_ENSURE keep the main path reading straight down. */
#ifndef SG_RESULT_H
#define SG_RESULT_H

#define SG_WUR __attribute__((warn_unused_result))

typedef int sg_rc;

enum {
    SG_OK = 0,
    SG_E_AGAIN = -1,       /* not enough bytes yet / would block; try again later */
    SG_E_TRUNCATED = -2,   /* a read ran past the end of the data */
    SG_E_MALFORMED = -3,   /* bytes do not follow the format */
    SG_E_TOO_BIG = -4,     /* a length exceeds its cap */
    SG_E_NOMEM = -5,       /* allocation failed */
    SG_E_PROTOCOL = -6,    /* well-formed but not allowed here (MQTT rules, topic rules) */
    SG_E_AUTH = -7,        /* credentials wrong (bad signature, unknown key) */
    SG_E_EXPIRED = -8,     /* credentials expired */
    SG_E_WRONG_DEVICE = -9,/* credentials are for another device */
    SG_E_NOT_FOUND = -10,
    SG_E_DISABLED = -11,
    SG_E_FULL = -12,       /* a queue or window is at its limit */
    SG_E_IO = -13,         /* an OS or library call failed; errno or the library says why */
    SG_E_INVALID = -14,    /* an argument or configuration value is invalid */
    SG_E_UNAVAILABLE = -15,/* a peer tier did not answer */
    SG_E_CLOSED = -16,     /* the peer closed the connection */
};

/* A short, stable name for an sg_rc, for logs and error messages. */
const char *sg_strerror(sg_rc rc);

/* Return the error from the enclosing function when expr fails. */
#define SG_GUARD(expr)                  \
    do {                                \
        sg_rc sg_guard_rc_ = (expr);    \
        if (sg_guard_rc_ != SG_OK)      \
            return sg_guard_rc_;        \
    } while (0)

/* Return err from the enclosing function unless cond holds. */
#define SG_ENSURE(cond, err)            \
    do {                                \
        if (!(cond))                    \
            return (err);               \
    } while (0)

/* Jump to label when expr fails, keeping the code in rc (for functions that must clean up). */
#define SG_GUARD_GOTO(rc, expr, label)  \
    do {                                \
        (rc) = (expr);                  \
        if ((rc) != SG_OK)              \
            goto label;                 \
    } while (0)

#endif
