#!/usr/bin/python3
"""Device authentication (SAS), revocation, and API tokens. Both topologies."""

import sys
import subprocess
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import BIN, GatewayTest, MqttDevice, new_key, sas_token, username_for

REFUSED_AUTH = 5          # bad user name or password / not authorized
REFUSED_USERNAME = 4      # bad user name or password (malformed user name)
REFUSED_CLIENT_ID = 2     # identifier rejected


class DeviceAuthTest(GatewayTest):

    def connack(self, dev_id, password, **kw):
        c = MqttDevice(self.gw, dev_id, password=password, **kw)
        self._clients.append(c)
        return c.connect()

    def assertRefused(self, rc, expected, what):
        self.assertEqual(rc, expected, "%s: CONNACK %r, expected %d" % (what, rc, expected))

    def test_good_token_primary_and_secondary(self):
        dev = self.gw.create_device()
        self.assertEqual(self.connack(dev["id"], sas_token(dev["id"], dev["primary"])), 0)
        self.assertEqual(self.connack(dev["id"], sas_token(dev["id"], dev["secondary"])), 0)

    def test_wrong_key(self):
        dev = self.gw.create_device()
        self.assertRefused(self.connack(dev["id"], sas_token(dev["id"], new_key())), REFUSED_AUTH, "wrong key")

    def test_expired_token(self):
        dev = self.gw.create_device()
        tok = sas_token(dev["id"], dev["primary"], expiry=time.time() - 60)
        self.assertRefused(self.connack(dev["id"], tok), REFUSED_AUTH, "expired token")

    def test_token_of_another_device(self):
        a, b = self.gw.create_device(), self.gw.create_device()
        self.assertRefused(self.connack(a["id"], sas_token(b["id"], b["primary"])), REFUSED_AUTH,
                           "token for another device")
        # b's key signing a token for a's resource is no better
        self.assertRefused(self.connack(a["id"], sas_token(a["id"], b["primary"])), REFUSED_AUTH,
                           "a's resource signed with b's key")

    def test_unknown_device(self):
        did = sgtest.uid("ghost")
        self.assertRefused(self.connack(did, sas_token(did, new_key())), REFUSED_AUTH, "unknown device")

    def test_garbage_password(self):
        dev = self.gw.create_device()
        for pw in ("not a token", "SharedAccessSignature sr=x&sig=y", ""):
            self.assertRefused(self.connack(dev["id"], pw), REFUSED_AUTH, "password %r" % pw)

    def test_bad_username(self):
        dev = self.gw.create_device()
        tok = sas_token(dev["id"], dev["primary"])
        other = sgtest.uid("other")
        for user in ("nonsense", "localhost/%s/?api-version=2021-04-12" % other):
            self.assertRefused(self.connack(dev["id"], tok, username=user), REFUSED_USERNAME, "username %r" % user)

    def test_invalid_client_id(self):
        dev = self.gw.create_device()
        tok = sas_token(dev["id"], dev["primary"])
        for cid in ("has space", "a" * 129, "slash/id", "hash#id"):
            rc = self.connack(dev["id"], tok, client_id=cid, username=username_for(cid))
            self.assertRefused(rc, REFUSED_CLIENT_ID, "client id %r" % cid)

    def test_disabled_device(self):
        dev = self.gw.create_device(primary=new_key(), status="disabled")
        self.assertRefused(self.connack(dev["id"], sas_token(dev["id"], dev["primary"])), REFUSED_AUTH,
                           "disabled device")
        r = self.gw.update_device(dev, status="enabled")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.connack(dev["id"], sas_token(dev["id"], dev["primary"])), 0)

    def test_rotating_keys_drops_the_session(self):
        dev = self.gw.create_device()
        old = sas_token(dev["id"], dev["primary"])
        c = self.device(dev, password=old, port=self.gw.mqtt_ports[-1]).connect_ok()
        c.subscribe_commands()
        dev2 = dict(dev, primary=new_key(), secondary=new_key())
        r = self.gw.update_device(dev2)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(c.wait_closed(15), "session with the old key still open 15 s after the key change")
        self.assertRefused(self.connack(dev["id"], old), REFUSED_AUTH, "old token after rotation")
        self.assertEqual(self.connack(dev["id"], sas_token(dev["id"], dev2["primary"])), 0)

    def test_update_without_credential_change_keeps_the_session(self):
        dev = self.gw.create_device()
        c = self.device(dev, port=self.gw.mqtt_ports[-1]).connect_ok()
        c.subscribe_commands()
        gen = self.gw.device(dev["id"]).json["generation"]
        r = self.gw.update_device(dev, tags={"floor": "3"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.gw.device(dev["id"]).json["generation"], gen)
        self.assertFalse(c.wait_closed(3), "a tags-only update closed the device's session")
        m = self.gw.send_command(dev["id"], "still here").json
        self.assertEqual(c.wait_commands(1)[0]["props"]["$.mid"], m["messageId"])

    def test_sdk_style_username(self):
        """Device SDKs append more query parameters after api-version."""
        dev = self.gw.create_device()
        tok = sas_token(dev["id"], dev["primary"])
        for user in ("localhost/%s/?api-version=2021-04-12&DeviceClientType=py-azure-iot-device%%2F2.12.0" % dev["id"],
                     "localhost/%s/?DeviceClientType=c%%2F1.0&api-version=2020-09-30&model-id=dtmi%%3Ax%%3By%%3B1"
                     % dev["id"]):
            self.assertEqual(self.connack(dev["id"], tok, username=user), 0, "username %r" % user)

    def test_disabling_drops_the_session(self):
        dev = self.gw.create_device()
        tok = sas_token(dev["id"], dev["primary"])
        c = self.device(dev, password=tok, port=self.gw.mqtt_ports[-1]).connect_ok()
        r = self.gw.update_device(dev, status="disabled")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(c.wait_closed(15), "session still open 15 s after disabling the device")
        self.assertRefused(self.connack(dev["id"], tok), REFUSED_AUTH, "reconnect while disabled")

    def test_deleting_drops_the_session(self):
        dev = self.gw.create_device()
        tok = sas_token(dev["id"], dev["primary"])
        c = self.device(dev, password=tok, port=self.gw.mqtt_ports[-1]).connect_ok()
        r = self.gw.http("DELETE", "/v1/devices/" + dev["id"])
        self.assertEqual(r.status, 204, r)
        self.assertTrue(c.wait_closed(15), "session still open 15 s after deleting the device")
        self.assertError(self.gw.device(dev["id"]), 404)
        self.assertRefused(self.connack(dev["id"], tok), REFUSED_AUTH, "reconnect after delete")
        self.assertError(self.gw.send_command(dev["id"], "x", expect=None), 404)

    def test_session_closed_when_token_expires(self):
        dev = self.gw.create_device()
        c = self.device(dev, password=sas_token(dev["id"], dev["primary"], ttl=8)).connect_ok()
        self.assertTrue(c.wait_closed(40), "session still open 40 s after its 8 s token expired")

    def test_token_valid_beyond_32_bit_seconds_keeps_the_session(self):
        # se - now > 2^32 s once wrapped into a 3 s lifetime
        dev = self.gw.create_device()
        far = int(time.time()) + 2 ** 32 + 3
        c = self.device(dev, password=sas_token(dev["id"], dev["primary"], expiry=far)).connect_ok()
        self.assertFalse(c.wait_closed(6), "a token valid for 136 years closed the session")

    def test_host_part_not_checked(self):
        dev = self.gw.create_device()
        tok = sas_token(dev["id"], dev["primary"], host="hub.example.net")
        rc = self.connack(dev["id"], tok, username=username_for(dev["id"], host="hub.example.net"))
        self.assertEqual(rc, 0, "SPEC 3: the host part of sr/username is not checked")

    def test_signature_over_sr_as_sent(self):
        """SPEC 3: the signature covers sr exactly as sent, here not URL-encoded."""
        import base64, hashlib, hmac, urllib.parse
        dev = self.gw.create_device()
        se = int(time.time()) + 600
        sr = "localhost/devices/%s" % dev["id"]
        sig = base64.b64encode(hmac.new(base64.b64decode(dev["primary"]), ("%s\n%d" % (sr, se)).encode(),
                                        hashlib.sha256).digest()).decode()
        tok = "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, urllib.parse.quote(sig, safe=""), se)
        self.assertEqual(self.connack(dev["id"], tok), 0)
        # the same signature with the encoded sr is over different bytes
        tok2 = "SharedAccessSignature sr=%s&sig=%s&se=%d" % (urllib.parse.quote(sr, safe=""),
                                                             urllib.parse.quote(sig, safe=""), se)
        self.assertRefused(self.connack(dev["id"], tok2), REFUSED_AUTH, "signature over another sr form")

    def test_tampered_expiry(self):
        dev = self.gw.create_device()
        tok = sas_token(dev["id"], dev["primary"], ttl=60)
        se = tok.rsplit("se=", 1)[1]
        self.assertRefused(self.connack(dev["id"], tok.replace("se=" + se, "se=%d" % (int(se) + 100000))),
                           REFUSED_AUTH, "se changed after signing")
        self.assertRefused(self.connack(dev["id"], tok.replace("se=" + se, "se=soon")), REFUSED_AUTH, "se=soon")

    def test_device_id_with_every_allowed_character(self):
        did = "Az09-.%_*?!(),:=@$'" + sgtest.uid("x")
        dev = self.gw.create_device(did)
        self.assertEqual(self.gw.device(did).json["deviceId"], did)
        c = self.device(dev).connect_ok()
        c.subscribe_commands()
        c.send(b"odd id", {"k": "v"})
        recs = self.gw.wait_records(did, 1)
        self.assertEqual(recs[0]["properties"].get("iothub-connection-device-id"), did)
        m = self.gw.send_command(did, "to odd id").json
        cmds = c.wait_commands(1)
        self.assertEqual(cmds[0]["props"]["$.mid"], m["messageId"])
        self.assertEqual(cmds[0]["props"]["$.to"], "/devices/%s/messages/devicebound" % did)

    def test_sacgate_token_command(self):
        dev = self.gw.create_device()
        r = subprocess.run([BIN, "token", "--device", dev["id"], "--key", dev["primary"], "--ttl", "600"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stderr)
        tok = r.stdout.strip()
        self.assertTrue(tok.startswith("SharedAccessSignature "), tok)
        se = int(dict(p.split("=", 1) for p in tok.split(" ", 1)[1].split("&"))["se"])
        self.assertTrue(time.time() + 500 < se <= time.time() + 700, "se=%d not about 600 s ahead" % se)
        self.assertEqual(self.connack(dev["id"], tok), 0)


class ApiTokenTest(GatewayTest):

    def test_no_token_401(self):
        for method, path in (("GET", "/v1/devices/x"), ("GET", "/v1/cluster"), ("GET", "/metrics"),
                             ("PUT", "/v1/devices/x"), ("GET", "/v1/telemetry")):
            r = self.gw.http(method, path, {} if method == "PUT" else None, token=None)
            self.assertError(r, 401)

    def test_wrong_token_401(self):
        r = self.gw.http("GET", "/v1/devices/x", token="not-a-real-token")
        self.assertError(r, 401)
        r = self.gw.http("GET", "/v1/devices/x", headers={"Authorization": "Basic YWRtaW46YWRtaW4="}, token=None)
        self.assertError(r, 401)
        r = self.gw.http("GET", "/v1/devices/x", token=self.gw.admin_token + "x")
        self.assertError(r, 401)

    def test_roles(self):
        did = sgtest.uid()
        self.assertError(self.gw.http("PUT", "/v1/devices/" + did, {}, token="reader"), 403)
        self.assertError(self.gw.http("PUT", "/v1/devices/" + did, {}, token="svc"), 403)
        self.assertEqual(self.gw.http("PUT", "/v1/devices/" + did, {}, token="writer").status, 201)
        self.assertEqual(self.gw.http("GET", "/v1/devices/" + did, token="reader").status, 200)
        self.assertError(self.gw.http("GET", "/v1/devices/" + did, token="svc"), 403)
        self.assertEqual(self.gw.http("POST", "/v1/devices/%s/messages" % did, {"payload": "x"},
                                      token="svc").status, 201)
        self.assertError(self.gw.http("POST", "/v1/devices/%s/messages" % did, {"payload": "x"},
                                      token="reader"), 403)
        self.assertEqual(self.gw.http("GET", "/v1/telemetry", token="svc").status, 200)
        self.assertError(self.gw.http("GET", "/v1/telemetry", token="writer"), 403)
        self.assertError(self.gw.http("DELETE", "/v1/devices/" + did, token="reader"), 403)
        self.assertEqual(self.gw.http("DELETE", "/v1/devices/" + did, token="writer").status, 204)


if __name__ == "__main__":
    sgtest.main()
