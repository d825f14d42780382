/* sg_result.c — names for sg_rc codes. */
#include "sg_result.h"

const char *sg_strerror(sg_rc rc)
{
    switch (rc) {
    case SG_OK: return "ok";
    case SG_E_AGAIN: return "again";
    case SG_E_TRUNCATED: return "truncated";
    case SG_E_MALFORMED: return "malformed";
    case SG_E_TOO_BIG: return "too-big";
    case SG_E_NOMEM: return "out-of-memory";
    case SG_E_PROTOCOL: return "protocol-violation";
    case SG_E_AUTH: return "bad-credentials";
    case SG_E_EXPIRED: return "expired";
    case SG_E_WRONG_DEVICE: return "wrong-device";
    case SG_E_NOT_FOUND: return "not-found";
    case SG_E_DISABLED: return "disabled";
    case SG_E_FULL: return "full";
    case SG_E_IO: return "io-error";
    case SG_E_INVALID: return "invalid";
    case SG_E_UNAVAILABLE: return "unavailable";
    case SG_E_CLOSED: return "closed";
    }
    return "unknown-error";
}
