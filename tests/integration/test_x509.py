#!/usr/bin/python3
"""X.509 devices (SPEC §3): a client certificate in the TLS handshake and a CONNECT without a
password, accepted when the certificate's SHA-256 thumbprint is registered for the device
("x509") or when it chains to a certificate authority registered through
/v1/certificateAuthorities and its CN is the device id ("x509-ca"). Certificates are made at
test time; mosquitto_pub and paho-mqtt connect. Both topologies."""

import json
import sys
import tempfile
import urllib.parse

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, MqttDevice, make_cert, mosquitto_pub, sas_token, wait_until

X509_METHOD = {"scope": "device", "type": "x509Certificate", "issuer": "iothub"}


class X509Test(GatewayTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.TemporaryDirectory(prefix="sg-x509-")
        cls.dir = cls.tmp.name

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.tmp.cleanup()

    # ---- helpers

    def x509_device(self, *certs, status=None):
        did = sgtest.uid("x5")
        body = {"auth": {"type": "x509", "thumbprints": [c.thumbprint for c in certs]}}
        if status:
            body["status"] = status
        r = self.gw.http("PUT", "/v1/devices/" + did, body)
        self.assertEqual(r.status, 201, r)
        return did

    def ca_device(self):
        did = sgtest.uid("x5ca")
        r = self.gw.http("PUT", "/v1/devices/" + did, {"auth": {"type": "x509-ca"}})
        self.assertEqual(r.status, 201, r)
        return did

    def put_ca(self, name, cert, expect=201):
        r = self.gw.http("PUT", "/v1/certificateAuthorities/" + name, {"certificate": cert.cert_pem.decode()})
        self.assertEqual(r.status, expect, r)
        return r

    def pub(self, did, certfile=None, keyfile=None, password=None, message="hello"):
        """mosquitto_pub of one QoS 1 telemetry message: (ok, output)."""
        extra = ["--cert", certfile, "--key", keyfile] if certfile else []
        r = mosquitto_pub(self.gw, did, password, "devices/%s/messages/events/" % did, message, extra=extra)
        return r.returncode == 0, (r.stdout + r.stderr).decode("utf-8", "replace")

    def assertAccepted(self, did, cert, chain=None, message="hello"):
        ok, out = self.pub(did, chain or cert.certfile, cert.keyfile, message=message)
        self.assertTrue(ok, "%s with its certificate: %s" % (did, out))

    def assertRefused(self, did, cert, what, chain=None, password=None):
        ok, out = self.pub(did, (chain or cert.certfile) if cert else None, cert.keyfile if cert else None, password)
        self.assertFalse(ok, "%s: accepted" % what)
        self.assertIn("not authori", out.lower(), "%s: %s" % (what, out))

    # ---- thumbprints

    def test_thumbprint_device_sends_telemetry_stamped_x509(self):
        cert = make_cert(self.dir, "thumb-dev")
        did = self.x509_device(cert)
        entry = self.gw.device(did).json
        self.assertEqual(entry["auth"], {"type": "x509", "thumbprints": [cert.thumbprint]})
        self.assertAccepted(did, cert, message="x509-hello")
        recs = self.gw.wait_records(did, 1)
        self.assertEqual(len(recs), 1, recs)
        self.assertEqual(recs[0]["properties"]["iothub-connection-device-id"], did)
        self.assertEqual(json.loads(recs[0]["properties"]["iothub-connection-auth-method"]), X509_METHOD)

    def test_second_thumbprint_and_case(self):
        old, new = make_cert(self.dir, "a"), make_cert(self.dir, "b")
        did = sgtest.uid("x5")
        r = self.gw.http("PUT", "/v1/devices/" + did,
                         {"auth": {"type": "x509", "thumbprints": [old.thumbprint.upper(), new.thumbprint]}})
        self.assertEqual(r.status, 201, r)
        self.assertAccepted(did, old)
        self.assertAccepted(did, new)

    def test_unregistered_certificate_is_refused(self):
        did = self.x509_device(make_cert(self.dir, "registered"))
        self.assertRefused(did, make_cert(self.dir, "other"), "a certificate whose thumbprint is not registered")

    def test_certificate_of_another_device_is_refused(self):
        ca, cb = make_cert(self.dir, "dev-a"), make_cert(self.dir, "dev-b")
        a, b = self.x509_device(ca), self.x509_device(cb)
        self.assertRefused(a, cb, "device a with device b's certificate")
        self.assertAccepted(b, cb)

    def test_expired_certificate_is_refused(self):
        expired = make_cert(self.dir, "expired", days=-1, not_before_days=-10)
        did = self.x509_device(expired)
        mark = self.gw.log_mark()
        self.assertRefused(did, expired, "an expired registered certificate")
        self.gw.wait_log("certificate-expired", mark)

    def test_session_ends_when_the_certificate_expires(self):
        cert = make_cert(self.dir, "short-lived", days=4 / 86400.0)   # valid 4 more seconds
        did = self.x509_device(cert)
        c = MqttDevice(self.gw, did, cert=cert)
        self.addCleanup(c.close)
        c.connect_ok()
        self.assertTrue(c.wait_closed(20), "the session outlived its certificate")

    def test_no_password_and_no_certificate_is_refused(self):
        did = self.x509_device(make_cert(self.dir, "c"))
        self.assertRefused(did, None, "no credential at all")

    def test_disabled_x509_device_is_refused(self):
        cert = make_cert(self.dir, "disabled")
        did = self.x509_device(cert, status="disabled")
        self.assertRefused(did, cert, "a disabled device")

    def test_sas_device_presenting_a_certificate(self):
        dev = self.gw.create_device()
        cert = make_cert(self.dir, dev["id"])
        # its SAS token decides; the certificate beside it changes nothing
        ok, out = self.pub(dev["id"], cert.certfile, cert.keyfile, password=sas_token(dev["id"], dev["primary"]))
        self.assertTrue(ok, out)
        # without a token the certificate is not a credential a SAS device has
        self.assertRefused(dev["id"], cert, "a SAS device with a certificate and no token")

    def test_x509_device_with_a_sas_token_is_refused(self):
        cert = make_cert(self.dir, "x")
        did = self.x509_device(cert)
        self.assertRefused(did, cert, "an x509 device sending a SAS token",
                           password=sas_token(did, sgtest.new_key()))

    def test_thumbprint_change_closes_the_session(self):
        old, new = make_cert(self.dir, "old"), make_cert(self.dir, "new")
        did = self.x509_device(old)
        c = MqttDevice(self.gw, did, cert=old)
        self.addCleanup(c.close)
        c.connect_ok()
        c.send(b"before")
        r = self.gw.http("PUT", "/v1/devices/" + did, {"auth": {"type": "x509", "thumbprints": [new.thumbprint]}})
        self.assertEqual(r.status, 200, r)
        self.assertTrue(c.wait_closed(10), "the session with the replaced certificate stayed open")
        self.assertRefused(did, old, "the replaced certificate")
        self.assertAccepted(did, new)

    def test_disable_and_delete_close_the_session(self):
        cert = make_cert(self.dir, "revoked")
        for action in ("disable", "delete"):
            did = self.x509_device(cert)
            c = MqttDevice(self.gw, did, cert=cert)
            self.addCleanup(c.close)
            c.connect_ok()
            if action == "disable":
                r = self.gw.http("PUT", "/v1/devices/" + did, {"status": "disabled"})
                self.assertEqual(r.status, 200, r)
            else:
                self.assertEqual(self.gw.http("DELETE", "/v1/devices/" + did).status, 204)
            self.assertTrue(c.wait_closed(10), "%s left the X.509 session open" % action)
            self.assertRefused(did, cert, "a %sd device" % action)

    def test_oversized_chains_are_refused(self):
        root = make_cert(self.dir, "Root " + sgtest.uid(), ca=True)
        self.put_ca(sgtest.uid("root"), root)
        did = self.ca_device()
        leaf = make_cert(self.dir, did, issuer=root)
        # five certificates: TLS takes them, the CONNECT passes on at most four
        mark = self.gw.log_mark()
        self.assertRefused(did, leaf, "a chain of five certificates", chain=leaf.chain_file(*[root] * 4))
        self.gw.wait_log("over 4 certificates", mark)
        # a chain of about 40 KB fails the handshake itself
        ok, out = self.pub(did, leaf.chain_file(*[root] * 80), leaf.keyfile)
        self.assertFalse(ok, "a 40 KB chain was taken")
        self.assertNotIn("not authori", out.lower(), out)
        self.assertAccepted(did, leaf)

    def test_invalid_thumbprints_are_refused(self):
        for tp in ([], ["00"], ["zz" * 32], ["00" * 32] * 3, "00" * 32):
            r = self.gw.http("PUT", "/v1/devices/" + sgtest.uid("bad"), {"auth": {"type": "x509", "thumbprints": tp}})
            self.assertEqual(r.status, 400, "%r: %r" % (tp, r))
            self.assertEqual(r.json["error"], "InvalidDevice", r)

    # ---- certificate authorities

    def test_ca_signed_device_and_chain_through_an_intermediate(self):
        root = make_cert(self.dir, "Root CA " + sgtest.uid(), ca=True)
        inter = make_cert(self.dir, "Intermediate", issuer=root, ca=True)
        self.put_ca(sgtest.uid("root"), root)
        did = self.ca_device()
        direct = make_cert(self.dir, did, issuer=root)
        self.assertAccepted(did, direct)
        via = make_cert(self.dir, did, issuer=inter)
        self.assertAccepted(did, via, chain=via.chain_file(inter))
        # without the intermediate nothing connects the leaf to the root
        self.assertRefused(did, via, "a leaf sent without its intermediate")
        recs = self.gw.wait_records(did, 2)
        self.assertEqual(json.loads(recs[0]["properties"]["iothub-connection-auth-method"]), X509_METHOD)

    def test_ca_device_refusals(self):
        root = make_cert(self.dir, "Root " + sgtest.uid(), ca=True)
        self.put_ca(sgtest.uid("root"), root)
        did = self.ca_device()
        mark = self.gw.log_mark()
        self.assertRefused(did, make_cert(self.dir, "someone-else", issuer=root), "CN is not the device id")
        self.gw.wait_log("subject-cn-is-not-the-device-id", mark)
        stranger = make_cert(self.dir, "Unregistered CA", ca=True)
        self.assertRefused(did, make_cert(self.dir, did, issuer=stranger), "a CA that is not registered")
        self.assertRefused(did, make_cert(self.dir, did), "a self-signed certificate")
        self.assertRefused(did, make_cert(self.dir, did, issuer=root, days=-1, not_before_days=-5),
                           "an expired CA-signed certificate")

    def test_deleting_a_ca_refuses_its_devices(self):
        root = make_cert(self.dir, "Root " + sgtest.uid(), ca=True)
        name = sgtest.uid("root")
        self.put_ca(name, root)
        did = self.ca_device()
        leaf = make_cert(self.dir, did, issuer=root)
        self.assertAccepted(did, leaf)
        r = self.gw.http("DELETE", "/v1/certificateAuthorities/" + name)
        self.assertEqual(r.status, 204, r)
        self.assertRefused(did, leaf, "a device of a deleted CA")
        self.assertEqual(self.gw.http("DELETE", "/v1/certificateAuthorities/" + name).status, 404)
        self.put_ca(name, root)
        self.assertAccepted(did, leaf)

    def test_ca_api(self):
        root = make_cert(self.dir, "Root " + sgtest.uid(), ca=True)
        name = sgtest.uid("api")
        r = self.put_ca(name, root)
        self.assertEqual(r.json["name"], name)
        self.assertEqual(r.json["thumbprint"], root.thumbprint)
        self.assertEqual(r.json["certificate"], root.cert_pem.decode())
        self.put_ca(name, root, expect=200)   # the same name again replaces
        got = self.gw.get("/v1/certificateAuthorities/" + name)
        self.assertEqual(got.status, 200, got)
        self.assertEqual(got.json["thumbprint"], root.thumbprint)
        listed = self.gw.get("/v1/certificateAuthorities")
        self.assertIn(name, [c["name"] for c in listed.json["certificateAuthorities"]])
        self.assertEqual(self.gw.get("/v1/certificateAuthorities/" + sgtest.uid("none")).status, 404)
        # roles: reading needs registry-read, writing registry-write
        self.assertEqual(self.gw.http("GET", "/v1/certificateAuthorities", token="reader").status, 200)
        self.assertEqual(self.gw.http("GET", "/v1/certificateAuthorities", token="svc").status, 403)
        self.assertEqual(self.gw.http("PUT", "/v1/certificateAuthorities/x", {"certificate": "x"},
                                      token="reader").status, 403)
        self.assertEqual(self.gw.http("DELETE", "/v1/certificateAuthorities/x", token="svc").status, 403)

    def test_ca_change_with_a_shard_down_fails_and_can_be_repeated(self):
        """Every shard keeps every CA: with one down, a put answers an error that says the change
        may be partial; repeated once the shard is back, it reaches every shard."""
        if self.gw.topology != "cluster":
            self.skipTest("needs shards in processes of their own")
        root = make_cert(self.dir, "Root " + sgtest.uid(), ca=True)
        name = sgtest.uid("partial")
        shard = self.gw.cluster_info()["shards"][-1]["name"]
        self.gw.kill(shard)
        try:
            r = self.gw.http("PUT", "/v1/certificateAuthorities/" + name, {"certificate": root.cert_pem.decode()})
            self.assertIn(r.status, (503, 504), r)
            self.assertIn("repeat the call", r.json["message"], r)
        finally:
            self.gw.start_member(shard)
            self.gw.wait_member_ready(shard)
            self.gw.wait_ready()
        wait_until(lambda: self.gw.http("PUT", "/v1/certificateAuthorities/" + name,
                                        {"certificate": root.cert_pem.decode()}).status in (200, 201), 30,
                   "the repeated put to succeed on every shard")
        # a device on every shard connects with a certificate of that CA
        devices = [self.ca_device() for _ in range(8)]
        for did in devices:
            self.assertAccepted(did, make_cert(self.dir, did, issuer=root))

    def test_ca_api_refuses_what_is_not_a_ca(self):
        leaf = make_cert(self.dir, "not a ca")
        root = make_cert(self.dir, "Root", ca=True)
        bad = {
            "no certificate": {},
            "not PEM": {"certificate": "hello"},
            "a leaf": {"certificate": leaf.cert_pem.decode()},
            "two certificates": {"certificate": (root.cert_pem + root.cert_pem).decode()},
            "not a string": {"certificate": 5},
        }
        for what, body in bad.items():
            r = self.gw.http("PUT", "/v1/certificateAuthorities/" + sgtest.uid("bad"), body)
            self.assertEqual(r.status, 400, "%s: %r" % (what, r))
            self.assertEqual(r.json["error"], "InvalidCertificate", "%s: %r" % (what, r))
        r = self.gw.http("PUT", "/v1/certificateAuthorities/" + urllib.parse.quote("a b"),
                         {"certificate": root.cert_pem.decode()})
        self.assertEqual(r.status, 400, r)


if __name__ == "__main__":
    sgtest.main()
