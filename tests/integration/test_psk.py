#!/usr/bin/python3
"""TLS pre-shared-key devices (SPEC §3): identity = device id, key from the device's shard,
looked up without blocking the frontend (TLS 1.3 external PSK through a ClientHello callback,
TLS 1.2 PSK suites through a peek at the ClientKeyExchange), no certificate in either
direction, CONNECT without a password. Clients: mosquitto_pub/sub --psk (Debian's 2.0.11 always
negotiates TLS 1.3 with a PSK and ignores --tls-version then), MQTT.js over Node's TLS held to
TLS 1.2 or 1.3 (node/psk_device.js), and openssl s_client.
Also measures the bytes on the wire of a whole PSK connect with a counting TCP relay. Both
topologies."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, HOST, sas_token, username_for, wait_until

PSK_METHOD = {"scope": "device", "type": "psk", "issuer": "iothub"}
NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


def psk_args(port, device_id, key, identity=None, client_id=None):
    return ["-h", HOST, "-p", str(port), "-V", "mqttv311", "-i", client_id or device_id,
            "-u", username_for(client_id or device_id), "--psk", key, "--psk-identity", identity or device_id]


class CountingRelay:
    """A TCP relay on loopback that counts the payload bytes each way (one connection)."""

    def __init__(self, target_port):
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.bind((HOST, 0))
        self.lsock.listen(1)
        self.port = self.lsock.getsockname()[1]
        self.up = self.down = 0
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _pump(self, src, dst, attr):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                setattr(self, attr, getattr(self, attr) + len(b))
                dst.sendall(b)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _run(self):
        c, _ = self.lsock.accept()
        s = socket.create_connection((HOST, self.target))
        t1 = threading.Thread(target=self._pump, args=(c, s, "up"))
        t2 = threading.Thread(target=self._pump, args=(s, c, "down"))
        t1.start()
        t2.start()
        t1.join()
        t2.join()
        c.close()
        s.close()
        self.lsock.close()
        self.done.set()


class PskTest(GatewayTest):

    def psk_device(self, key=None, status=None, device_id=None):
        did = device_id or sgtest.uid("psk")
        body = {"auth": {"type": "psk"}}
        if key:
            body["auth"]["key"] = key
        if status:
            body["status"] = status
        r = self.gw.http("PUT", "/v1/devices/" + did, body)
        self.assertIn(r.status, (200, 201), r)
        return did, key or r.json["auth"]["key"]

    def pub(self, did, key, extra=(), identity=None, client_id=None, password=None, port=None, message="hi"):
        cid = client_id or did
        args = (["mosquitto_pub"] + psk_args(port or self.gw.mqtt_ports[0], did, key, identity, client_id)
                + (["-P", password] if password else [])
                + ["-t", "devices/%s/messages/events/" % cid, "-m", message, "-q", "1"] + list(extra))
        r = subprocess.run(args, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        return r.returncode == 0, (r.stdout + r.stderr).decode("utf-8", "replace")

    def node(self, did, key, version, identity=None, client_id=None, port=None):
        """node psk_device.js: its JSON result line (ok, protocol, cipher, peerCertificate, error)."""
        if not shutil.which("node") or not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "mqtt")):
            self.skipTest("node or MQTT.js (tests/integration/node) is missing")
        args = ["node", os.path.join(NODE_DIR, "psk_device.js"), str(port or self.gw.mqtt_ports[0]), did, key,
                identity or did, version] + ([client_id] if client_id else [])
        r = subprocess.run(args, capture_output=True, timeout=60, cwd=NODE_DIR, stdin=subprocess.DEVNULL)
        lines = [l for l in r.stdout.decode().splitlines() if l.startswith("{")]
        self.assertTrue(lines, "psk_device.js said nothing: %r" % (r,))
        return json.loads(lines[-1])

    def s_client(self, did, key, version):
        """openssl s_client with only a PSK: (negotiated protocol line, output)."""
        args = ["openssl", "s_client", "-connect", "%s:%d" % (HOST, self.gw.mqtt_ports[0]), "-psk", key,
                "-psk_identity", did, version, "-no_ign_eof"]
        r = subprocess.run(args, capture_output=True, input=b"", timeout=30)
        return (r.stdout + r.stderr).decode("utf-8", "replace")

    def test_generated_key_is_returned_once(self):
        did, key = self.psk_device()
        self.assertRegex(key, "^[0-9a-f]{64}$")
        self.assertEqual(self.gw.device(did).json["auth"], {"type": "psk"})
        ok, out = self.pub(did, key, message="generated")
        self.assertTrue(ok, out)

    def test_tls13_and_tls12_telemetry_stamped_psk(self):
        did, key = self.psk_device()
        ok, out = self.pub(did, key, message="tls13")
        self.assertTrue(ok, "TLS 1.3 external PSK: " + out)
        for version in ("TLSv1.2", "TLSv1.3"):
            res = self.node(did, key, version)
            self.assertEqual((res.get("ok"), res.get("protocol"), res.get("peerCertificate")), (True, version, False), res)
            self.assertIn("PSK" if version == "TLSv1.2" else "TLS_AES_128_GCM_SHA256", res["cipher"], res)
        recs = self.gw.wait_records(did, 3)
        self.assertEqual(sorted(sgtest.base64.b64decode(r["payload"]) for r in recs),
                         [b"node-TLSv1.2", b"node-TLSv1.3", b"tls13"])
        for rec in recs:
            self.assertEqual(json.loads(rec["properties"]["iothub-connection-auth-method"]), PSK_METHOD)

    def test_no_certificate_either_way(self):
        did, key = self.psk_device()
        for version, proto in (("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")):
            out = self.s_client(did, key, version)
            self.assertIn("no peer certificate available", out, out)
            self.assertRegex(out, r"(New|Reused), %s, Cipher is" % proto.replace(".", r"\."), out)

    def test_commands_reach_a_psk_device(self):
        did, key = self.psk_device()
        self.gw.send_command(did, "to-psk")
        args = (["mosquitto_sub"] + psk_args(self.gw.mqtt_ports[0], did, key)
                + ["-t", "devices/%s/messages/devicebound/#" % did, "-q", "1", "-C", "1", "-W", "20", "-F", "%p"])
        r = subprocess.run(args, capture_output=True, timeout=40, stdin=subprocess.DEVNULL)
        self.assertEqual(r.stdout.decode().strip(), "to-psk", r)

    def test_wrong_key_is_refused(self):
        did, key = self.psk_device()
        other = "%064x" % (int(key, 16) ^ 1)
        ok, out = self.pub(did, other)
        self.assertFalse(ok, "a wrong key was accepted (TLS 1.3)")
        self.assertIn("TLS", out)
        res = self.node(did, other, "TLSv1.2")
        self.assertFalse(res["ok"], "a wrong key was accepted (TLS 1.2): %r" % res)

    def test_unknown_identity_is_refused(self):
        did = sgtest.uid("ghost")
        mark = self.gw.log_mark()
        ok, out = self.pub(did, "00" * 32)
        self.assertFalse(ok, "an unknown identity was accepted (TLS 1.3)")
        res = self.node(did, "00" * 32, "TLSv1.2")
        self.assertFalse(res["ok"], "an unknown identity was accepted (TLS 1.2): %r" % res)
        self.gw.wait_log("psk.refused.*unknown-device", mark)

    def test_identity_of_another_device_is_refused(self):
        a, akey = self.psk_device()
        b, _ = self.psk_device(key=akey)   # even with the same key: the identity decides
        # a's key and identity, CONNECT as b: the handshake succeeds, the CONNECT may not
        ok, out = self.pub(a, akey, client_id=b)
        self.assertFalse(ok, "a's PSK session authenticated as b")
        self.assertIn("not authori", out.lower(), out)
        for version in ("TLSv1.2", "TLSv1.3"):
            res = self.node(a, akey, version, client_id=b)
            self.assertFalse(res["ok"], res)
            self.assertIn("Not authorized", res.get("error", ""), res)

    def test_psk_device_with_a_sas_token_is_refused(self):
        did, key = self.psk_device()
        r = sgtest.mosquitto_pub(self.gw, did, sas_token(did, sgtest.new_key()), "devices/%s/messages/events/" % did, "x")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"not authori", (r.stdout + r.stderr).lower())

    def test_sas_device_cannot_use_psk(self):
        dev = self.gw.create_device()
        ok, out = self.pub(dev["id"], "00" * 32)
        self.assertFalse(ok, "a SAS device connected with a PSK")

    def test_disabled_device_is_refused(self):
        did, key = self.psk_device(status="disabled")
        mark = self.gw.log_mark()
        ok, out = self.pub(did, key)
        self.assertFalse(ok, "a disabled device connected")
        self.gw.wait_log("psk.refused.*disabled", mark)

    def test_key_rotation_closes_the_session(self):
        did, key = self.psk_device()
        sub = subprocess.Popen(["mosquitto_sub"] + psk_args(self.gw.mqtt_ports[0], did, key)
                               + ["-t", "devices/%s/messages/devicebound/#" % did, "-q", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (sub.kill(), sub.wait()))
        wait_until(lambda: self.gw.device(did).json["connection"]["connected"], 20, "the PSK session to be up")
        new = "ab" * 32
        self.psk_device(key=new, device_id=did)
        wait_until(lambda: not self.gw.device(did).json["connection"]["connected"], 10,
                   "the session with the old key to be closed")
        # mosquitto_sub keeps trying with the old key: it never gets in again
        ok, _ = self.pub(did, key)
        self.assertFalse(ok, "the old key still works")
        ok, out = self.pub(did, new)
        self.assertTrue(ok, out)

    def test_bytes_on_the_wire_of_a_psk_connect(self):
        """A whole PSK connect counted by a relay (TCP payload both ways): mosquitto_pub over TLS
        1.3 (handshake, CONNECT/CONNACK, a QoS 0 PUBLISH of one byte, DISCONNECT) and MQTT.js
        over TLS 1.2 (handshake, CONNECT/CONNACK, a QoS 1 PUBLISH and its PUBACK)."""
        did, key = self.psk_device(device_id="psk-bytes-" + sgtest.uid("b")[-6:])
        relay = CountingRelay(self.gw.mqtt_ports[0])
        r = subprocess.run(["mosquitto_pub"] + psk_args(relay.port, did, key)
                           + ["-t", "devices/%s/messages/events/" % did, "-m", "x", "-q", "0"],
                           capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r)
        self.assertTrue(relay.done.wait(10), "the relayed connection did not end")
        sgtest.log("PSK connect, mosquitto_pub TLS 1.3 (id %d chars): %d bytes up, %d down, %d in all" %
                   (len(did), relay.up, relay.down, relay.up + relay.down))
        self.assertLess(relay.up + relay.down, 1024, "TLS 1.3: a PSK connect costs 1 KB or more")
        relay = CountingRelay(self.gw.mqtt_ports[0])
        res = self.node(did, key, "TLSv1.2", port=relay.port)
        self.assertTrue(res["ok"], res)
        self.assertTrue(relay.done.wait(10), "the relayed connection did not end")
        sgtest.log("PSK connect, MQTT.js TLS 1.2 %s (id %d chars): %d bytes up, %d down, %d in all" %
                   (res["cipher"], len(did), relay.up, relay.down, relay.up + relay.down))
        self.assertLess(relay.up + relay.down, 1024, "TLS 1.2: a PSK connect costs 1 KB or more")

    def test_psk_ke_needs_configuring(self):
        """A client that offers only psk_ke (a PSK without an ECDHE exchange) gets no PSK
        handshake unless frontend.psk_ke is set (PskKeTest): the server answers with its
        certificate, which GnuTLS then cannot verify."""
        did, key = self.psk_device()
        out = gnutls_psk_ke(self, self.gw.mqtt_ports[0], did, key, b"")
        self.assertNotIn("PSK authentication", out)


def gnutls_psk_ke(test, port, did, key, send, until=None):
    """gnutls-cli (Debian gnutls-bin, an independent TLS stack) offering TLS 1.3 with psk_ke only
    (priority -KX-ALL:+PSK), sending `send` once the handshake is done and keeping the connection
    until `until()` holds (or it ends by itself): its output."""
    if not shutil.which("gnutls-cli"):
        test.skipTest("gnutls-cli (Debian gnutls-bin) is missing")
    args = ["gnutls-cli", "--pskusername=" + did, "--pskkey=" + key,
            "--priority=NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+PSK", "-p", str(port), HOST]
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        p.stdin.write(send)
        p.stdin.flush()
        if until:
            wait_until(lambda: until() or p.poll() is not None, 30, "the psk_ke client's work")
        p.stdin.close()   # then it closes the connection
        p.stdin = None    # (communicate must not flush it)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return out.decode("utf-8", "replace")


class PskKeTest(GatewayTest):
    """frontend.psk_ke = true: TLS 1.3 external PSK without (EC)DHE is accepted."""
    ENV = {"SACGATE_FRONTEND_PSK_KE": "true"}

    def test_psk_ke_connects_when_configured(self):
        did = sgtest.uid("pskke")
        r = self.gw.http("PUT", "/v1/devices/" + did, {"auth": {"type": "psk"}})
        self.assertEqual(r.status, 201, r)
        key = r.json["auth"]["key"]
        topic = "devices/%s/messages/events/" % did
        out = gnutls_psk_ke(self, self.gw.mqtt_ports[0], did, key,
                            sgtest.pkt_connect(did, username_for(did)) + sgtest.pkt_publish(topic, b"psk-ke"),
                            until=lambda: self.gw.device_records(did))
        self.assertIn("PSK authentication. Connected as '%s'" % did, out)
        recs = self.gw.wait_records(did, 1)
        self.assertEqual(sgtest.base64.b64decode(recs[0]["payload"]), b"psk-ke")
        self.assertEqual(json.loads(recs[0]["properties"]["iothub-connection-auth-method"]), PSK_METHOD)


if __name__ == "__main__":
    sgtest.main()
