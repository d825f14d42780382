#!/usr/bin/python3
"""Server certificates that rotate (issue 8, part 6): `sacgate init --names` on an existing
directory issues a new server certificate from the same CA; a frontend reads its certificate and
key again on SIGHUP and when the files change (frontend.cert_reload), for new connections only:
sessions open at the time keep working; files that cannot be used keep the previous certificate
and log an error. `sacgate all` (both classes) and the cluster's `sacgate frontend` processes."""

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import BIN, HOST, LOOPBACK, GatewayTest, wait_until


def served_cert(gw, port):
    """The certificate a new TLS connection to port gets, verified against gw's ca.crt for
    localhost: (serial, DNS names of its subjectAltName)."""
    ctx = ssl.create_default_context(cafile=gw.ca)
    with socket.create_connection((LOOPBACK, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as s:
            cert = s.getpeercert()
    return cert["serialNumber"], {v for k, v in cert.get("subjectAltName", ()) if k == "DNS"}


def init_names(directory, names):
    r = subprocess.run([BIN, "init", "--data-dir", directory, "--names", names], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, "sacgate init --names %s failed: %s%s" % (names, r.stdout, r.stderr)


def log_since(path, mark, needle):
    with open(path, "rb") as f:
        f.seek(mark.get(path, 0))
        return needle in f.read().decode("utf-8", "replace")


class RotationMixin:
    """Helpers over one gateway whose frontends use gw.dir/server.crt and server.key."""

    def frontend_pids(self):
        return [self.gw.proc.pid] if self.gw.topology == "all" else [self.gw.pid(n) for n in ("fe-0", "fe-1")]

    def sighup(self):
        for pid in self.frontend_pids():
            os.kill(pid, signal.SIGHUP)

    def live_device(self, port):
        """A connected, subscribed paho device that has done a round trip."""
        dev = self.gw.create_device()
        c = self.connected(dev, port=port, subscribe=True)
        c.send(b"hello")
        return dev, c

    def assertAlive(self, dev, c, what):
        """The old connection still carries telemetry both ways and commands."""
        self.assertTrue(c.is_connected(), "%s: the open session was dropped" % what)
        c.send(b"still-here")   # QoS 1: waits for the PUBACK
        n = len(c.commands())
        m = self.gw.send_command(dev["id"], what).json
        cmds = c.wait_commands(n + 1)
        self.assertEqual(cmds[-1]["props"]["$.mid"], m["messageId"], what)


class SighupRotationTest(RotationMixin, GatewayTest):
    TOPOLOGY = "all"
    SETS = ("frontend.cert_reload=0",)   # SIGHUP only: nothing else may pick the files up

    def test_sighup_reload_new_connections_only_and_bad_files_keep_the_old(self):
        gw = self.gw
        port = gw.mqtt_ports[0]
        serial0, names0 = served_cert(gw, port)
        self.assertIn("localhost", names0)
        dev, c = self.live_device(port)

        # a new certificate for new names, from the same CA
        init_names(gw.dir, "rotated-1.example.test")
        self.assertEqual(served_cert(gw, port)[0], serial0, "the certificate changed without SIGHUP "
                         "(frontend.cert_reload=0)")
        mark = gw.log_mark()
        self.sighup()
        gw.wait_log(r"event=tls\.reloaded .*trigger=SIGHUP", mark)
        serial1, names1 = served_cert(gw, port)
        self.assertNotEqual(serial1, serial0)
        self.assertEqual(names1, {"localhost", "rotated-1.example.test"})
        self.assertAlive(dev, c, "after the SIGHUP reload")
        dev2, c2 = self.live_device(port)   # a device connects with the new certificate

        # a broken key: the previous certificate stays, an error is logged, nobody is dropped
        key = os.path.join(gw.dir, "server.key")
        shutil.copy(key, key + ".good")
        with open(key, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
        mark = gw.log_mark()
        self.sighup()
        gw.wait_log(r"event=tls\.reload_failed .*trigger=SIGHUP", mark)
        self.assertEqual(served_cert(gw, port)[0], serial1, "a failed reload changed the certificate")
        self.assertTrue(gw.alive(), "the gateway died on a broken key")
        self.assertAlive(dev, c, "after a failed reload")
        self.assertAlive(dev2, c2, "after a failed reload (second device)")
        # a certificate that does not match the key is refused the same way
        os.replace(key + ".good", key)
        with open(os.path.join(gw.dir, "ca.crt")) as f:
            ca_pem = f.read()
        cert = os.path.join(gw.dir, "server.crt")
        shutil.copy(cert, cert + ".good")
        with open(cert, "w") as f:
            f.write(ca_pem)   # a valid certificate, but not for server.key
        mark = gw.log_mark()
        self.sighup()
        gw.wait_log(r"event=tls\.reload_failed", mark)
        self.assertEqual(served_cert(gw, port)[0], serial1)
        os.replace(cert + ".good", cert)
        mark = gw.log_mark()
        self.sighup()
        gw.wait_log(r"event=tls\.reloaded .*trigger=SIGHUP", mark)
        self.assertEqual(served_cert(gw, port), (serial1, names1))
        self.assertAlive(dev, c, "after the repaired reload")

    def test_init_without_names_keeps_the_certificate(self):
        gw = self.gw
        with open(os.path.join(gw.dir, "server.crt"), "rb") as f:
            before = f.read()
        r = subprocess.run([BIN, "init", "--data-dir", gw.dir], capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r)
        with open(os.path.join(gw.dir, "server.crt"), "rb") as f:
            self.assertEqual(f.read(), before, "`sacgate init` without --names replaced the certificate")


class PollRotationTest(RotationMixin, GatewayTest):
    TOPOLOGY = "all"
    SETS = ("frontend.cert_reload=2",)

    def test_changed_files_are_picked_up_without_a_signal(self):
        gw = self.gw
        port = gw.mqtt_ports[0]
        serial0, _ = served_cert(gw, port)
        dev, c = self.live_device(port)
        mark = gw.log_mark()
        init_names(gw.dir, "polled.example.test")
        wait_until(lambda: served_cert(gw, port)[1] == {"localhost", "polled.example.test"}, 60,
                   "the new certificate served without SIGHUP")
        gw.wait_log(r"event=tls\.reloaded .*trigger=file-changed", mark)
        self.assertNotEqual(served_cert(gw, port)[0], serial0)
        self.assertAlive(dev, c, "after the file-change reload")

    def test_symlink_swap_is_picked_up(self):
        """A Kubernetes Secret volume: the configured path is a symlink chain whose target
        directory is swapped; the path's own bytes never change in place."""
        gw = self.gw
        port = gw.mqtt_ports[0]
        # This gateway reads gw.dir/server.crt; turn it into ..data/server.crt -> version dir.
        v1, v2 = os.path.join(gw.dir, "..v1"), os.path.join(gw.dir, "..v2")
        for v in (v1, v2):
            os.makedirs(v, exist_ok=True)
        init_names(gw.dir, "symlink-1.example.test")
        for name in ("server.crt", "server.key"):
            shutil.copy(os.path.join(gw.dir, name), os.path.join(v1, name))
        os.symlink("..v1", os.path.join(gw.dir, "..data"))
        for name in ("server.crt", "server.key"):
            tmp = os.path.join(gw.dir, name + ".lnk")
            os.symlink(os.path.join("..data", name), tmp)
            os.replace(tmp, os.path.join(gw.dir, name))
        wait_until(lambda: "symlink-1.example.test" in served_cert(gw, port)[1], 60, "the first version served")
        dev, c = self.live_device(port)
        # the next version: written into ..v2 (sacgate init in a scratch dir with the same CA)
        scratch = os.path.join(gw.dir, "scratch")
        os.makedirs(scratch, exist_ok=True)
        for name in ("ca.crt", "ca.key"):
            shutil.copy(os.path.join(gw.dir, name), os.path.join(scratch, name))
        init_names(scratch, "symlink-2.example.test")
        for name in ("server.crt", "server.key"):
            shutil.copy(os.path.join(scratch, name), os.path.join(v2, name))
        tmp = os.path.join(gw.dir, "..data.tmp")
        os.symlink("..v2", tmp)
        os.replace(tmp, os.path.join(gw.dir, "..data"))   # the atomic swap kubelet does
        wait_until(lambda: "symlink-2.example.test" in served_cert(gw, port)[1], 60,
                   "the swapped version served without SIGHUP")
        self.assertAlive(dev, c, "after the symlink swap")


class ClusterRotationTest(RotationMixin, GatewayTest):
    """`sacgate frontend` processes (deploy/local/cluster.sh): SIGHUP to both."""
    TOPOLOGY = "cluster"

    def test_cluster_frontends_reload(self):
        gw = self.gw
        olds = [self.live_device(p) for p in gw.mqtt_ports]
        serials = [served_cert(gw, p)[0] for p in gw.mqtt_ports]
        init_names(gw.dir, "cluster-rotated.example.test")
        mark = gw.log_mark()
        self.sighup()
        for name in ("fe-0", "fe-1"):
            path = os.path.join(gw.dir, name + ".log")
            wait_until(lambda: log_since(path, mark, "event=tls.reloaded"), 30, "%s reloaded" % name)
        for p, old_serial in zip(gw.mqtt_ports, serials):
            serial, names = served_cert(gw, p)
            self.assertNotEqual(serial, old_serial, "port %d still serves the old certificate" % p)
            self.assertIn("cluster-rotated.example.test", names)
        for dev, c in olds:
            self.assertAlive(dev, c, "cluster frontend after SIGHUP")


if __name__ == "__main__":
    sgtest.main()
