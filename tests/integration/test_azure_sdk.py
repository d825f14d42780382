#!/usr/bin/python3
"""The unmodified Azure IoT Hub device SDK for Node (azure-iot-device + azure-iot-device-mqtt, from
the npm registry, pinned in node/package-lock.json) against sacgate: it connects with a device
connection string, sends telemetry with system properties, receives commands queued before and
after it connected, and completes them. Both topologies."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, new_key, wait_until

NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "node")


def ensure_node_modules():
    """npm ci once per checkout (the lock file pins every package)."""
    if not shutil.which("node") or not shutil.which("npm"):
        print("sgtest: node/npm is missing")   # ctest reports the test as skipped
        sys.exit(0)
    if os.path.isdir(os.path.join(NODE_DIR, "node_modules", "azure-iot-device-mqtt")):
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError("npm ci failed: %s%s" % (r.stdout[-2000:], r.stderr[-2000:]))


class SdkDevice:
    """node azure_device.js, its JSON event lines collected as they come."""

    def __init__(self, gw, device_id, key, events, commands):
        args = ["node", os.path.join(NODE_DIR, "azure_device.js"), "localhost:%d" % gw.mqtt_ports[0], device_id, key,
                gw.ca, str(events), str(commands)]
        self.proc = subprocess.Popen(args, cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()

    def wait_event(self, kind, n=1, timeout=60):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [e for e in self.events if e["event"] == kind]
                if len(got) >= n:
                    return got
                errors = [e for e in self.events if e["event"] == "error"]
                if errors:
                    raise AssertionError("SDK device failed: %r (stderr: %s)" % (errors, self.stderr()))
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    raise AssertionError("no %d %r events within %d s: %r (stderr: %s)" %
                                         (n, kind, timeout, self.events, self.stderr()))
                self.cond.wait(min(left, 0.5))

    def wait_exit(self, timeout=60):
        return self.proc.wait(timeout)

    def stderr(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read()[-2000:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class AzureSdkTest(GatewayTest):

    @classmethod
    def setUpClass(cls):
        ensure_node_modules()
        super().setUpClass()

    def sdk(self, device_id, key, events, commands):
        d = SdkDevice(self.gw, device_id, key, events, commands)
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
