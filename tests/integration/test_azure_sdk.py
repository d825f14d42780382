#!/usr/bin/python3
"""The unmodified Azure IoT Hub device SDK for Node (azure-iot-device + azure-iot-device-mqtt, from
the npm registry, pinned in node/package-lock.json) against sacgate: it connects with a device
connection string, sends telemetry with system properties, receives commands queued before and
after it connected, and completes them. Both topologies."""

import json
import sys
import tempfile

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, new_key, wait_until


def SdkDevice(gw, device_id, key, events, commands, transport="mqtt", methods=0):
    """node azure_device.js: the SDK's Mqtt transport on the MQTT port, or MqttWs on the ws port;
    it answers `methods` direct method calls."""
    port = gw.ws_ports[0] if transport == "mqttws" else gw.mqtt_ports[0]
    return sgtest.NodeClient("azure_device.js", "localhost:%d" % port, device_id, key, gw.ca, events, commands,
                             transport, methods)


class AzureSdkTest(GatewayTest):

    @classmethod
    def setUpClass(cls):
        sgtest.ensure_node_modules()
        super().setUpClass()

    def sdk(self, device_id, key, events, commands, methods=0):
        d = SdkDevice(self.gw, device_id, key, events, commands, methods=methods)
        self.addCleanup(d.close)
        return d

    def test_telemetry_and_commands(self):
        dev = self.gw.create_device()
        did = dev["id"]
        before = [self.gw.send_command(did, "before-%d" % i, properties={"n": str(i)}).json["messageId"]
                  for i in range(2)]
        d = self.sdk(did, dev["primary"], events=5, commands=3)
        d.wait_event("open")
        d.wait_event("sent")
        live = self.gw.send_command(did, "live", properties={"n": "2"}).json["messageId"]
        msgs = d.wait_event("message", 3)
        self.assertEqual([m["messageId"] for m in msgs], before + [live])
        self.assertEqual([m["data"] for m in msgs], ["before-0", "before-1", "live"])
        for i, m in enumerate(msgs):
            props = {p["key"]: p["value"] for p in m["properties"]}
            self.assertEqual(props.get("n"), str(i), m)
        d.wait_event("completed", 3)
        self.assertEqual(d.wait_exit(30), 0, d.stderr())
        wait_until(lambda: self.gw.pending(did) == [], 20, "the completed commands to leave the queue")

        recs = self.gw.wait_records(did, 5, timeout=30)
        self.assertEqual(len(recs), 5, recs)
        for i, rec in enumerate(recs):
            p = rec["properties"]
            self.assertEqual(p.get("seq"), str(i), rec)
            self.assertEqual(p.get("$.ct"), "application/json", rec)
            self.assertEqual(p.get("$.ce"), "utf-8", rec)
            self.assertEqual(p.get("iothub-connection-device-id"), did, rec)

    def test_direct_methods(self):
        """The SDK's onDeviceMethod handlers answer calls made over HTTP (its subscription to
        $iothub/methods/POST/# is granted, its rid and its response topic are understood)."""
        dev = self.gw.create_device()
        did = dev["id"]
        d = self.sdk(did, dev["primary"], events=0, commands=0, methods=2)
        d.wait_event("methods-registered")
        wait_until(lambda: self.gw.device(did).json["connection"].get("methods"), 30,
                   "the SDK's subscription to $iothub/methods/POST/#")
        path = "/v1/devices/%s/methods/" % did
        r = self.gw.http("POST", path + "echo", {"payload": {"n": 1, "s": "caf\u00e9"}, "responseTimeoutSeconds": 10},
                         token="svc")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"status": 200, "payload": {"method": "echo", "got": {"n": 1, "s": "caf\u00e9"}}})
        r = self.gw.http("POST", path + "reboot", {"payload": [1, 2]}, token="svc")
        self.assertEqual(r.json, {"status": 200, "payload": {"method": "reboot", "got": [1, 2]}})
        calls = d.wait_event("method", 2)
        self.assertEqual([c["name"] for c in calls], ["echo", "reboot"])
        self.assertEqual(d.wait_exit(30), 0, d.stderr())

    def test_wrong_key_is_refused(self):
        dev = self.gw.create_device()
        d = self.sdk(dev["id"], new_key(), events=1, commands=0)
        with self.assertRaises(AssertionError) as e:
            d.wait_event("open", timeout=60)
        self.assertIn("SDK device failed", str(e.exception))
        self.assertNotEqual(d.wait_exit(30), 0)
        self.assertEqual(self.gw.device_records(dev["id"]), [])

    def test_x509_device(self):
        """x509=true in the connection string, the certificate and key through setOptions."""
        with tempfile.TemporaryDirectory(prefix="sg-sdk-x509-") as d:
            did = sgtest.uid("sdkx5")
            cert = sgtest.make_cert(d, did)
            r = self.gw.http("PUT", "/v1/devices/" + did, {"auth": {"type": "x509", "thumbprints": [cert.thumbprint]}})
            self.assertEqual(r.status, 201, r)
            dev = self.sdk(did, "x509:%s:%s" % (cert.certfile, cert.keyfile), events=3, commands=1)
            dev.wait_event("sent")
            self.gw.send_command(did, "to-x509")
            self.assertEqual([m["data"] for m in dev.wait_event("message")], ["to-x509"])
            self.assertEqual(dev.wait_exit(30), 0, dev.stderr())
            recs = self.gw.wait_records(did, 3, timeout=30)
            self.assertEqual([r["properties"].get("seq") for r in recs], ["0", "1", "2"])
            for rec in recs:
                self.assertEqual(json.loads(rec["properties"]["iothub-connection-auth-method"])["type"],
                                 "x509Certificate", rec)
            # another certificate for the same device id is refused
            other = sgtest.make_cert(d, did)
            bad = self.sdk(did, "x509:%s:%s" % (other.certfile, other.keyfile), events=1, commands=0)
            with self.assertRaises(AssertionError):
                bad.wait_event("open", timeout=60)
            self.assertNotEqual(bad.wait_exit(30), 0)


if __name__ == "__main__":
    sgtest.main()
