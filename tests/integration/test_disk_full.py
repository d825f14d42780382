#!/usr/bin/python3
"""A full data volume is an outage the shard rides out, not a crash loop: on a tmpfs this test
mounts under the shard's directory, telemetry fills it until the shard refuses new data (a log
line, the metric, 507 for HTTP writes, CONNACK 3, refused telemetry closes its connection) while
reads go on; a restart while full comes up and serves reads; freeing space lets writes resume by
themselves; nothing acknowledged is lost. Needs root (mount); skipped otherwise."""

import base64
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import wait_until  # noqa: E402

MIB = 1024 * 1024
VOLUME = 96 * MIB
MIN_FREE = 24 * MIB
RESERVE = 8 * MIB
WRITE_BUFFER = 4 * MIB   # small memtables: table files and WAL preallocations come in small steps


class TmpfsAllInOne(sgtest.AllInOne):
    """sacgate all whose shard directory is a small tmpfs of its own."""

    def start(self, timeout=45):
        self.volume = os.path.join(self.dir, "store-0")
        # RocksDB's own LOG off the volume, as an operator would have it (and so it can be read)
        self.rocksdb_log = os.path.join(self.dir, "rocksdb-log")
        if "store.log_dir=" + self.rocksdb_log not in self.sets:
            self.sets.append("store.log_dir=" + self.rocksdb_log)
        if not os.path.ismount(self.volume):
            os.makedirs(self.volume, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % VOLUME, "tmpfs", self.volume], check=True,
                           capture_output=True)
        super().start(timeout)

    def cleanup_dir(self):
        subprocess.run(["umount", "-l", self.volume], capture_output=True)
        super().cleanup_dir()


def can_mount():
    if os.geteuid() != 0:
        return False
    d = tempfile.mkdtemp(prefix="sgit-mnt-")
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", d], capture_output=True)
    os.rmdir(d)
    return ok


class DiskFullTest(sgtest.GatewayTest):
    TOPOLOGY = "all"
    GATEWAY = TmpfsAllInOne
    SETS = ("store.disk_min_free=%d" % MIN_FREE, "store.disk_reserve=%d" % RESERVE,
            "store.write_buffer=%d" % WRITE_BUFFER)

    @classmethod
    def setUpClass(cls):
        if not can_mount():
            raise unittest.SkipTest("needs root to mount a tmpfs")
        super().setUpClass()

    def free(self):
        st = os.statvfs(self.gw.volume)
        return st.f_bavail * st.f_frsize

    def cluster_disk(self):
        s = self.gw.cluster_info()["shards"][0]
        return s.get("diskFull"), s.get("diskFreeBytes")

    def test_full_volume_refuses_new_data_serves_reads_and_recovers(self):
        gw = self.gw
        self.assertTrue(os.path.exists(os.path.join(gw.volume, "reserve")), "no reserve file")
        dev = gw.create_device()
        other = gw.create_device()
        # bring the volume close to its floor with a file of our own, so telemetry reaches it fast
        filler = os.path.join(gw.volume, "filler")
        with open(filler, "wb") as f:
            if self.free() > MIN_FREE + 13 * MIB:
                os.posix_fallocate(f.fileno(), 0, self.free() - MIN_FREE - 12 * MIB)
        mark = gw.log_mark()
        c = self.gw_raw(dev)
        acked, sent, refused = [], {}, False
        topic = "devices/%s/messages/events/" % dev["id"]
        for i in range(1, 8000):
            payload = b"%06d-" % i + base64.b64encode(os.urandom(3000))   # incompressible
            sent[i] = payload
            try:
                c.send(sgtest.pkt_publish(topic, payload, qos=1, mid=i))
                p = c.read_packet(timeout=15)
            except OSError:
                p = None
            if p is None:          # the gateway closed the connection: the shard refused it
                refused = True
                break
            self.assertEqual(p[0], 4, p)   # PUBACK
            acked.append(i)
        c.close()
        sgtest.log("%d publishes acknowledged before the refusal; %d bytes free" % (len(acked), self.free()))
        self.assertTrue(refused, "the volume never filled (%d publishes acknowledged)" % len(acked))
        self.assertTrue(acked, "nothing was acknowledged before the volume filled")
        gw.wait_log(r"event=disk\.full", mark)
        gw.wait_log(r"event=telemetry\.refused", mark)
        self.assertEqual(self.cluster_disk()[0], True)
        self.assertRegex(gw.get("/metrics").text, r'(?m)^sacgate_shard_disk_full\{shard="store-0"\} 1$')
        r = gw.http("POST", "/v1/devices/%s/messages" % other["id"], {"payload": "x"})
        self.assertEqual(r.status, 507, r)
        self.assertEqual(r.json["error"], "InsufficientStorage")
        x = self.gw_raw_connect(dev)
        self.assertEqual(x, 3, "CONNACK while the volume is full")
        # reads go on: everything acknowledged is readable
        self.check_acked(dev, acked, sent)
        self.assertEqual(gw.device(other["id"]).status, 200)

        # another process takes what is left: the reserve goes back to the database, reads go on
        reserve = os.path.join(gw.volume, "reserve")
        self.assertTrue(os.path.exists(reserve), "the reserve went before the volume was all but full")
        brim = os.path.join(gw.volume, "brim")
        self.fill_to(brim, 4 * MIB)
        self.assertEqual(gw.http("POST", "/v1/devices/%s/messages" % other["id"], {"payload": "x"}).status, 507)
        self.assertFalse(os.path.exists(reserve), "the reserve was kept on a volume all but full")
        gw.wait_log(r"event=disk\.reserve_released", mark)
        self.check_acked(dev, acked, sent)

        # a restart while full comes up and serves reads
        gw.kill()
        restart = gw.log_mark()
        gw.start()
        self.assertEqual(gw.http("GET", "/healthz", token=None).status, 200)
        gw.wait_log(r"event=disk\.opening_full", restart)
        gw.wait_log(r"event=demo\.not_registered", restart)
        self.check_acked(dev, acked, sent)
        self.assertEqual(gw.http("POST", "/v1/devices/%s/messages" % other["id"], {"payload": "x"}).status, 507)

        # space comes back: writes resume by themselves, the reserve is taken again
        os.unlink(brim)
        os.unlink(filler)
        # the shard notices without being written to (its figures stay true)
        wait_until(lambda: self.cluster_disk()[0] is False, 30, "diskFull to clear with space back")
        gw.wait_log(r"event=disk\.ok", mark)
        wait_until(lambda: gw.http("POST", "/v1/devices/%s/messages" % other["id"], {"payload": "x"}).status == 201,
                   30, "writes to resume once space is free")
        self.assertEqual(self.cluster_disk()[0], False)
        self.assertTrue(os.path.exists(reserve), "the reserve was not taken again")
        # RocksDB itself never met a full volume
        logs = os.listdir(gw.rocksdb_log)
        self.assertTrue(logs, "no RocksDB LOG in store.log_dir")
        for name in logs:
            with open(os.path.join(gw.rocksdb_log, name), errors="replace") as f:
                text = f.read()
            self.assertNotIn("No space left", text, name)
            self.assertNotIn("Background IO error", text, name)
        self.assertEqual(self.gw_raw_connect(dev), 0)
        self.check_acked(dev, acked, sent)

    # ---- helpers

    def fill_to(self, path, leave):
        """A file taking all but `leave` bytes of the volume, once RocksDB's flushes and compactions
        (which need room for their output before they free their input) have settled."""
        last, steady = None, 0
        for _ in range(100):
            f = self.free()
            steady = steady + 1 if f == last else 0
            last = f
            if steady >= 3:
                break
            time.sleep(0.2)
        with open(path, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, self.free() - leave)

    def gw_raw(self, dev):
        c = sgtest.RawConn(self.gw)
        self.assertEqual(c.connect(dev["id"], sgtest.sas_token(dev["id"], dev["primary"])), 0)
        return c

    def gw_raw_connect(self, dev):
        c = sgtest.RawConn(self.gw)
        try:
            return c.connect(dev["id"], sgtest.sas_token(dev["id"], dev["primary"]))
        finally:
            c.close()

    def check_acked(self, dev, acked, sent):
        recs = self.gw.wait_records(dev["id"], len(acked), timeout=30)
        stored = {base64.b64decode(r["payload"]) for r in recs}
        missing = [i for i in acked if sent[i] not in stored]
        self.assertEqual(missing, [], "%d acknowledged publishes missing" % len(missing))


if __name__ == "__main__":
    sgtest.main()
