/* fe_cred.h — what a connection's TLS handshake says about the device, for the CONNECT that
 * follows: the client certificate chain an X.509 device sent. */
#ifndef FE_CRED_H
#define FE_CRED_H

#include <stdbool.h>
#include "fe_internal.h"
#include "sg_buf.h"
#include "sg_result.h"

/* Did the client send a certificate in the handshake? */
bool fe_conn_has_client_cert(const fe_conn_t *c);
/* The certificates it sent, leaf first, as an X509 credential (sg_wire_put_cert each) appended
 * to out. SG_E_TOO_BIG beyond SG_WIRE_MAX_CHAIN certificates or SG_WIRE_MAX_CREDENTIAL bytes. */
SG_WUR sg_rc fe_conn_client_chain(const fe_conn_t *c, sg_wbuf_t *out);

#endif
