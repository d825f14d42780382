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

    def __init__(self, gw, device_id, key, events, commands, methods=0):
        args = ["node", os.path.join(NODE_DIR, "azure_device.js"), "localhost:%d" % gw.mqtt_ports[0], device_id, key,
                gw.ca, str(events), str(commands), str(methods)]
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

    def sdk(self, device_id, key, events, commands, methods=0):
        d = SdkDevice(self.gw, device_id, key, events, commands, methods)
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


if __name__ == "__main__":
    sgtest.main()
