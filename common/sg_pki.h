/* sg_pki.h — development PKI written by `sacgate all` / `sacgate init` on first start:
 * a self-signed CA (ca.crt, ca.key) and a server certificate signed by it (server.crt,
 * server.key) for localhost, 127.0.0.1 and ::1 plus any extra names. Keys are ECDSA P-256;
 * files holding keys are written with mode 0600. Uses OpenSSL's X509 builder APIs. */
#ifndef SG_PKI_H
#define SG_PKI_H

#include "sg_result.h"

/* Make sure dir holds ca.crt/ca.key/server.crt/server.key. Existing files are kept (an operator
 * may have put their own there); missing ones are created. extra_names is a comma-separated list
 * of DNS names or IP addresses to add to the server certificate's subjectAltName, or NULL.
 * With extra_names (even ""), an existing server certificate is replaced by one for those names
 * issued by the CA in dir (which is kept, as is server.key): `sacgate init --names` rotates the
 * server certificate, and running frontends pick it up (SIGHUP or frontend.cert_reload). The CA
 * key is needed then; without it SG_E_INVALID and nothing is written. */
SG_WUR sg_rc sg_pki_ensure_dev(const char *dir, const char *extra_names);

/* Create a client certificate for device_id signed by the CA in ca_dir (for x509 tests and
 * tools): writes {out_prefix}.crt and {out_prefix}.key. */
SG_WUR sg_rc sg_pki_make_client(const char *ca_dir, const char *device_id, const char *out_prefix);

#endif
