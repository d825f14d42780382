#!/usr/bin/python3
"""CURVE on the links between tiers (cluster topology), a key pair per tier. A process that does
not hold a key the cluster trusts gets no service from the router, whether it brings another key
or none; with its tier's key the same process works. A tier refuses to start with neither a
certificate nor an explicit cluster.insecure=true, or with another tier's certificate.

Frame authorization: a client holding the *frontend's* secret key (pyzmq, speaking the wire
format of common/sg_wire.h) connects to the router and sends operator frames (a device delete,
a ring request, a BATCH carrying a delete): each is refused with ERROR/FORBIDDEN, the device is
still there and sacgate_router_refused_frames_total counts them; the same frames under the
admin's key work. A key nobody knows is refused at the handshake, and a frontend's key cannot
reach a shard at all (only routers' keys may), while a router's key there gets its PONG and a
frame a router may not send (RING) is refused by the shard too. A router's BATCH at a shard gets
every frame answered once, whether it goes to the writer whole or frame by frame (a read among
the writes, a refused frame, a damaged tail)."""

import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

import zmq
import zmq.auth

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import BIN, GatewayTest, MqttDevice, free_port

# common/sg_wire.h
VERSION = 1
SESSION_END, HELLO = 3, 13
ADMIN, ADMIN_RES, RING, RING_RES, PING, PONG, ERROR, BATCH = 10, 11, 14, 15, 16, 17, 18, 21
BY_DEVICE = 0xFFFFFFFF
ERR_FORBIDDEN = 4
ADM_DEVICE_GET, ADM_DEVICE_DELETE = 2, 3


def frame(ftype, device=b"", corr=1, body=b"", flags=0, epoch=0):
    return struct.pack("!BBBHIQQB", VERSION, ftype, flags, 0, BY_DEVICE, corr, epoch, len(device)) + device + body


def admin_frame(op, device, corr, doc=b"{}"):
    return frame(ADMIN, device.encode(), corr, struct.pack("!HI", op, len(doc)) + doc)


def batch(*frames):
    return frame(BATCH, body=b"".join(struct.pack("!BI", 0, len(f)) + f for f in frames))


def header(raw):
    _v, ftype, _flags, status, _shard, corr, _epoch, dlen = struct.unpack("!BBBHIQQB", raw[:26])
    return ftype, status, corr, raw[26 + dlen:]


class CurveTest(GatewayTest):
    TOPOLOGY = "cluster"

    def setUp(self):
        super().setUp()
        self.curve = os.path.join(self.gw.dir, "curve")
        self.ctx = zmq.Context()
        self.addCleanup(lambda: self.ctx.destroy(linger=0))

    def extra_frontend(self, name, curve_args):
        """Start one more frontend on the cluster's router with the given CURVE arguments. The port
        free_port found can be taken by another test running beside this one before the frontend
        binds it: the frontend then exits with listen.port_in_use, and another port is tried."""
        d = self.gw.dir
        path = os.path.join(d, name + ".log")
        for _ in range(5):
            port = free_port()
            start = os.path.getsize(path) if os.path.exists(path) else 0
            log = open(path, "ab")
            self.addCleanup(log.close)
            args = [BIN, "frontend", "--name", name, "--bind", "127.0.0.1", "--mqtt-port", str(port),
                    "--ws-port", "0", "--cert", os.path.join(d, "server.crt"), "--key", os.path.join(d, "server.key"),
                    "--routers", self.gw.ports_env["ROUTER_ENDPOINT"],
                    "--set", "frontend.connect_timeout=4"] + curve_args
            p = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            self.addCleanup(lambda p=p: (p.kill(), p.wait()))

            def since_start():
                with open(path, "rb") as f:
                    f.seek(start)
                    return f.read()
            # its own "ready" line, not a connect to the port (which another process may hold)
            ready = ("comp=frontend event=ready frontend=%s " % name).encode()
            sgtest.wait_until(lambda: ready in since_start() or p.poll() is not None, 20, "%s to listen" % name)
            if p.poll() is None:
                return port
            if b"event=listen.port_in_use" not in since_start():
                break
        self.fail("%s exited with %s" % (name, p.returncode))

    def connack_through(self, port, dev):
        m = MqttDevice(self.gw, dev["id"], key=dev["primary"], port=port)
        self._clients.append(m)
        return m.connect(timeout=20)

    # ---- a raw ZeroMQ peer with some tier's key ----

    def peer(self, keys, server, endpoint, name):
        """A DEALER holding keys (public, secret) connected to endpoint, whose server key is the
        public certificate of tier `server` (or, bytes, that key)."""
        server_pub = server if isinstance(server, bytes) else \
            zmq.auth.load_certificate(os.path.join(self.curve, "public", server + ".cert"))[0]
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IDENTITY, name.encode())
        s.curve_publickey, s.curve_secretkey = keys
        s.curve_serverkey = server_pub
        s.connect(endpoint)
        return s

    def tier_keys(self, role):
        return zmq.auth.load_certificate(os.path.join(self.curve, role + ".cert_secret"))

    def router_peer(self, role_or_keys, name):
        keys = self.tier_keys(role_or_keys) if isinstance(role_or_keys, str) else role_or_keys
        return self.peer(keys, "router", self.gw.ports_env["ROUTER_ENDPOINT"], name)

    def shard_peer(self, role, name):
        endpoint = self.gw.ports_env["SHARD_ENDPOINTS"].split()[0]
        return self.peer(self.tier_keys(role), "store", endpoint, name)

    def ask(self, sock, raw, timeout_ms=10000):
        """Send one frame (a router peer: [frame]; a shard peer: [peer][frame]) and return the first
        answer's (type, status, corr, body), or None when nothing comes within timeout_ms."""
        sock.send_multipart(raw if isinstance(raw, list) else [raw])
        if not sock.poll(timeout_ms):
            return None
        return header(sock.recv_multipart()[-1])

    def refused_metric(self, role, ftype):
        text = self.gw.get("/metrics").text
        m = re.search(r'sacgate_router_refused_frames_total\{router="[^"]*",role="%s",type="%s"\} (\d+)' %
                      (role, ftype), text)
        return int(m.group(1)) if m else 0

    # ---- tests ----

    def test_frontend_with_its_tier_key_works(self):
        dev = self.gw.create_device()
        port = self.extra_frontend("fe-good", ["--set", "cluster.curve_cert=%s/{role}.cert" % self.curve])
        self.assertEqual(self.connack_through(port, dev), 0)

    def test_frontend_with_another_clusters_key_gets_nothing(self):
        other = tempfile.mkdtemp(prefix="sgit-otherkey-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", other]))
        r = subprocess.run([BIN, "init", "--data-dir", other], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        dev = self.gw.create_device()
        # its own frontend key, and this cluster's router key to find the router by
        port = self.extra_frontend("fe-otherkey", ["--set", "cluster.curve_cert=%s/curve/{role}.cert" % other,
                                                   "--set", "cluster.curve_public=%s/public" % self.curve])
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

    def test_tier_with_another_tiers_certificate_refuses_to_start(self):
        r = subprocess.run([BIN, "router", "--bind", "tcp://127.0.0.1:*", "--shards", "store-0=tcp://127.0.0.1:9",
                            "--set", "cluster.curve_cert=%s/frontend.cert" % self.curve],
                           capture_output=True, text=True, timeout=20)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn("event=cert.wrong_role", r.stderr)

    def test_each_tier_has_its_own_key(self):
        keys = {role: zmq.auth.load_certificate(os.path.join(self.curve, role + ".cert_secret"))
                for role in ("frontend", "router", "store", "admin")}
        self.assertEqual(len({pub for pub, _ in keys.values()}), 4)
        for role, (pub, sec) in keys.items():
            self.assertIsNotNone(sec)
            self.assertEqual(oct(os.stat(os.path.join(self.curve, role + ".cert_secret")).st_mode & 0o777), "0o600")
            # the public directory holds the public half only
            ppub, psec = zmq.auth.load_certificate(os.path.join(self.curve, "public", role + ".cert"))
            self.assertEqual(ppub, pub)
            self.assertIsNone(psec)

    def test_frontend_key_cannot_send_admin_frames(self):
        dev = self.gw.create_device()
        did = dev["id"]
        before = self.refused_metric("frontend", "ADMIN")
        fe = self.router_peer("frontend", "evil-fe/0")
        # a device delete, alone: refused, and the device stays
        ftype, status, corr, body = self.ask(fe, admin_frame(ADM_DEVICE_DELETE, did, 7))
        self.assertEqual((ftype, status, corr), (ERROR, ERR_FORBIDDEN, 7))
        self.assertEqual(body[0], ADMIN)  # names the refused frame's type
        # a device read (the registry entry with its keys): refused
        self.assertEqual(self.ask(fe, admin_frame(ADM_DEVICE_GET, did, 8))[:3], (ERROR, ERR_FORBIDDEN, 8))
        # the ring: refused
        self.assertEqual(self.ask(fe, frame(RING, corr=9))[:3], (ERROR, ERR_FORBIDDEN, 9))
        # a delete inside a BATCH (which a frontend may send): the item is refused
        self.assertEqual(self.ask(fe, batch(admin_frame(ADM_DEVICE_DELETE, did, 10)))[:3], (ERROR, ERR_FORBIDDEN, 10))
        self.assertEqual(self.gw.device(did).status, 200)
        self.assertEqual(self.refused_metric("frontend", "ADMIN"), before + 3)
        self.assertGreaterEqual(self.refused_metric("frontend", "RING"), 1)
        self.assertTrue(self.gw.grep_log(r"event=frame.forbidden .*role=frontend"))
        # the frontend's own frames still pass: its heartbeat gets the router's PONG
        self.assertEqual(self.ask(fe, frame(PING, corr=11))[0], PONG)

        # the same frames under the admin's key work
        adm = self.router_peer("admin", "good-admin/0")
        ftype, status, corr, body = self.ask(adm, frame(RING, corr=20))
        self.assertEqual((ftype, status, corr), (RING_RES, 200, 20))
        self.assertIn("forbidden", json.loads(body[4:]))
        ftype, status, corr, _ = self.ask(adm, admin_frame(ADM_DEVICE_DELETE, did, 21))
        self.assertEqual((ftype, corr), (ADMIN_RES, 21))
        self.assertLess(status, 300)
        self.assertEqual(self.gw.device(did).status, 404)
        # ...but an admin's key may not pose as a frontend (a device's heartbeat)
        self.assertEqual(self.ask(adm, frame(PING, corr=22))[:3], (ERROR, ERR_FORBIDDEN, 22))

    def test_a_frontend_key_cannot_end_another_loops_sessions(self):
        """A process holding the frontend key, connected as a loop of its own, can neither
        announce the reboot of another frontend's loops (HELLO with their names: it would end
        every session they hold) nor end a device's session on another loop, even with its epoch
        (here every epoch the session can have: epochs are the clock's milliseconds when the
        session began). Both are refused at the shard and the device keeps its session."""
        dev = self.gw.create_device()
        did = dev["id"]
        t0 = int(time.time() * 1000)
        m = MqttDevice(self.gw, did, key=dev["primary"], port=self.gw.mqtt_ports[0])
        self._clients.append(m)
        m.connect_ok()
        t1 = int(time.time() * 1000)
        self.assertTrue(self.gw.device(did).json["connection"]["connected"])
        mark = self.gw.log_mark()
        evil = self.router_peer("frontend", "evil-fe/0/1")
        # fe-0's loops are "fe-0/{loop}/{boot}": a HELLO for each loop with another boot
        for loop in range(4):
            evil.send(frame(HELLO, body=struct.pack("!B", len("fe-0/%d/x" % loop)) + b"fe-0/%d/x" % loop))
        self.gw.wait_log(r"event=hello\.refused ", mark, timeout=15)
        for epoch in range(t0 - 50, t1 + 50):
            evil.send(frame(SESSION_END, did.encode(), corr=1, epoch=epoch))
        self.assertEqual(self.ask(evil, frame(PING, corr=5))[0], PONG)   # the frames above went before it
        time.sleep(1)
        self.assertTrue(self.gw.device(did).json["connection"]["connected"], "the device's session was ended")
        mid = m.publish(m.telemetry_topic(), b"still here", 1)
        m.wait_acked([mid])
        self.assertFalse(m.closed.is_set())

    def test_unknown_key_is_refused_at_the_handshake(self):
        mark = self.gw.log_mark()
        stranger = self.router_peer(zmq.curve_keypair(), "stranger/0")
        self.assertIsNone(self.ask(stranger, frame(RING, corr=1), timeout_ms=3000))
        self.gw.wait_log(r"comp=curve event=peer.refused .*role=none tier=router", mark)

    def test_shard_admits_only_routers(self):
        mark = self.gw.log_mark()
        # a frontend's key straight at a shard: refused at the handshake, no answer
        fe = self.shard_peer("frontend", "evil-fe-direct")
        self.assertIsNone(self.ask(fe, [b"", frame(PING, corr=1)], timeout_ms=3000))
        self.gw.wait_log(r"comp=curve event=peer.refused .*role=frontend tier=store", mark)
        # a router's key gets its PONG; a frame routers never send (RING) is refused there too
        rt = self.shard_peer("router", "router-test")
        self.assertEqual(self.ask(rt, [b"", frame(PING, corr=2)])[0], PONG)
        self.assertEqual(self.ask(rt, [b"x", frame(RING, corr=3)])[:3], (ERROR, ERR_FORBIDDEN, 3))

    def answers(self, sock, n, timeout_ms=10000):
        """The next n answers' (type, status, corr) on sock, in the order they came."""
        got = []
        while len(got) < n and sock.poll(timeout_ms):
            got.append(header(sock.recv_multipart()[-1])[:3])
        return got

    def test_shard_reads_a_routers_batch_whole_or_frame_by_frame(self):
        """A BATCH whose frames are all the writer's goes to it whole and is read in place; one
        that also holds a read, a frame the sender may not send, or a damaged tail goes frame by
        frame. Either way every frame is answered once, a refused one alone is refused."""
        rt = self.shard_peer("router", "router-batches")
        self.assertEqual(self.ask(rt, [b"", frame(PING, corr=30)])[0], PONG)
        # devices that do not exist (404) and that this shard's ring places on it: a write for
        # one it places elsewhere is refused, 503 WrongShard
        mine = []
        for i in range(200):
            if len(mine) == 9:
                break
            did = "batch-gone-%d" % i
            status = self.ask(rt, [b"", admin_frame(ADM_DEVICE_DELETE, did, 1000 + i)])[1]
            self.assertIn(status, (404, 503), did)
            if status == 404:
                mine.append(did)
        self.assertEqual(len(mine), 9, "no 9 of 200 ids on the first shard")
        gone = lambda i: mine[i]   # noqa: E731
        # all the writer's: answered in order
        rt.send_multipart([b"", batch(admin_frame(ADM_DEVICE_DELETE, gone(1), 31),
                                      admin_frame(ADM_DEVICE_DELETE, gone(2), 32),
                                      admin_frame(ADM_DEVICE_DELETE, gone(3), 33))])
        self.assertEqual(self.answers(rt, 3), [(ADMIN_RES, 404, 31), (ADMIN_RES, 404, 32), (ADMIN_RES, 404, 33)])
        # a write and a read (the readers'): both answered
        rt.send_multipart([b"", batch(admin_frame(ADM_DEVICE_DELETE, gone(4), 41),
                                      admin_frame(ADM_DEVICE_GET, gone(5), 42))])
        self.assertEqual(sorted(self.answers(rt, 2)), [(ADMIN_RES, 404, 41), (ADMIN_RES, 404, 42)])
        # a frame routers may not send (RING) among writes: refused alone
        mark = self.gw.log_mark()
        rt.send_multipart([b"", batch(admin_frame(ADM_DEVICE_DELETE, gone(6), 51), frame(RING, corr=52),
                                      admin_frame(ADM_DEVICE_DELETE, gone(7), 53))])
        self.assertEqual(sorted(self.answers(rt, 3)),
                         [(ADMIN_RES, 404, 51), (ADMIN_RES, 404, 53), (ERROR, ERR_FORBIDDEN, 52)])
        # a damaged tail (an item claims 16 bytes and has 1): what comes before it is answered,
        # the damage is logged, and the shard goes on
        damaged = batch(admin_frame(ADM_DEVICE_DELETE, gone(8), 61)) + struct.pack("!BI", 0, 16) + b"x"
        rt.send_multipart([b"", damaged])
        self.assertEqual(self.answers(rt, 1), [(ADMIN_RES, 404, 61)])
        self.gw.wait_log(r"event=net\.malformed_frame .*a damaged batch", mark)
        self.assertEqual(self.ask(rt, [b"", frame(PING, corr=62)])[0], PONG)
        self.assertEqual(self.answers(rt, 1, timeout_ms=500), [], "a frame was answered twice")

    def test_shared_key_of_old_still_works(self):
        """A router given a certificate without a role (the cluster.cert of before per-tier keys)
        runs as it did: holders of that key may send anything, a per-tier key is refused."""
        legacy = tempfile.mkdtemp(prefix="sgit-legacy-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", legacy]))
        pub, sec = zmq.auth.create_certificates(legacy, "cluster")   # czmq's format, no role
        port = free_port()
        log = open(os.path.join(self.gw.dir, "legacy-router.log"), "ab")
        p = subprocess.Popen([BIN, "router", "--name", "router-legacy", "--bind", "tcp://127.0.0.1:%d" % port,
                              "--shards", "store-0=tcp://127.0.0.1:9", "--set", "health.port=0",
                              "--set", "cluster.curve_cert=" + sec[:-len("_secret")]],
                             stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.kill(), p.wait()))
        self.gw.wait_log(r"comp=curve event=shared_key", timeout=20)
        server = zmq.auth.load_certificate(pub)[0]
        old = self.peer(zmq.auth.load_certificate(sec), server, "tcp://127.0.0.1:%d" % port, "old-fe/0")
        self.assertEqual(self.ask(old, frame(RING, corr=5))[:3], (RING_RES, 200, 5))
        new = self.peer(self.tier_keys("frontend"), server, "tcp://127.0.0.1:%d" % port, "new-fe/0")
        self.assertIsNone(self.ask(new, frame(PING, corr=6), timeout_ms=3000))


if __name__ == "__main__":
    sgtest.main()
