#!/usr/bin/python3
"""CURVE on the links between tiers (cluster topology): a process that does not hold the cluster
certificate's secret gets no service from the router, whether it brings another key or none; with
the cluster's certificate the same process works. And a tier refuses to start with neither a
certificate nor an explicit cluster.insecure=true."""

import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import BIN, GatewayTest, MqttDevice, free_port


class CurveTest(GatewayTest):
    TOPOLOGY = "cluster"

    def extra_frontend(self, name, curve_args):
        """Start one more frontend on the cluster's router with the given CURVE arguments."""
        port = free_port()
        d = self.gw.dir
        log = open(os.path.join(d, name + ".log"), "ab")
        args = [BIN, "frontend", "--name", name, "--bind", "127.0.0.1", "--mqtt-port", str(port),
                "--ws-port", "0", "--cert", os.path.join(d, "server.crt"), "--key", os.path.join(d, "server.key"),
                "--routers", "tcp://127.0.0.1:%s" % self.gw.ports_env["ROUTER_PORT"],
                "--set", "frontend.connect_timeout=4"] + curve_args
        p = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.kill(), p.wait()))
        sgtest.wait_until(lambda: sgtest._tcp_open(port) or p.poll() is not None, 20, "%s to listen" % name)
        self.assertIsNone(p.poll(), "%s exited with %s" % (name, p.returncode))
        return port

    def connack_through(self, port, dev):
        m = MqttDevice(self.gw, dev["id"], key=dev["primary"], port=port)
        self._clients.append(m)
        return m.connect(timeout=20)

    def test_frontend_with_the_cluster_certificate_works(self):
        dev = self.gw.create_device()
        port = self.extra_frontend("fe-good", ["--set", "cluster.curve_cert=%s/curve/cluster.cert" % self.gw.dir])
        self.assertEqual(self.connack_through(port, dev), 0)

    def test_frontend_with_another_key_gets_nothing(self):
        other = tempfile.mkdtemp(prefix="sgit-otherkey-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", other]))
        r = subprocess.run([BIN, "init", "--data-dir", other], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        dev = self.gw.create_device()
        port = self.extra_frontend("fe-otherkey", ["--set", "cluster.curve_cert=%s/curve/cluster.cert" % other])
        # The router's ZAP handler refuses the handshake: no shard decides, CONNACK 3.
        self.assertEqual(self.connack_through(port, dev), 3)

    def test_plaintext_frontend_gets_nothing(self):
        dev = self.gw.create_device()
        port = self.extra_frontend("fe-plain", ["--set", "cluster.insecure=true"])
        self.assertEqual(self.connack_through(port, dev), 3)

    def test_tier_without_certificate_refuses_to_start(self):
        r = subprocess.run([BIN, "router", "--bind", "tcp://127.0.0.1:*", "--shards", "store-0=tcp://127.0.0.1:9"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("cluster.curve_cert", r.stderr)


if __name__ == "__main__":
    sgtest.main()
