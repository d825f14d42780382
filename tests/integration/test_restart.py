#!/usr/bin/python3
"""`sacgate all` stopped (SIGKILL and SIGTERM) and started again on the same data dir:
registry, acknowledged telemetry and accepted commands survive. All-in-one topology."""

import base64
import glob
import os
import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest


class RestartTest(GatewayTest):
    TOPOLOGY = "all"

    def restart(self, how):
        if how == "kill":
            self.gw.kill()
        else:
            self.assertTrue(self.gw.stop(), "sacgate all did not exit within 15 s of SIGTERM")
        self.assertFalse(self.gw.alive())
        self.gw.start()

    def check_survives(self, how):
        gw = self.gw
        dev = gw.create_device(tags={"k": "v"})
        did = dev["id"]
        c = self.connected(dev)
        mids = [c.publish(c.telemetry_topic({"n": str(i)}), b"before-%02d" % i, 1) for i in range(30)]
        c.wait_acked(mids)
        ids = [gw.send_command(did, "cmd-%d" % i).json["messageId"] for i in range(5)]
        gen = gw.device(did).json["generation"]

        self.restart(how)

        entry = gw.device(did).json
        self.assertEqual(entry["generation"], gen)
        self.assertEqual(entry["tags"], {"k": "v"})
        recs = gw.wait_records(did, 30)
        self.assertEqual([base64.b64decode(r["payload"]) for r in recs], [b"before-%02d" % i for i in range(30)])
        self.assertEqual([m["messageId"] for m in gw.pending(did)], ids)
        # the same key (and even the same token) still works
        c2 = self.device(dev, password=c.password).connect_ok()
        c2.subscribe_commands()
        self.assertEqual([x["props"]["$.mid"] for x in c2.wait_commands(5)], ids)
        c2.send(b"after")
        self.assertEqual(base64.b64decode(gw.wait_records(did, 31)[-1]["payload"]), b"after")

    def test_sigkill_and_restart(self):
        self.check_survives("kill")

    def test_sigterm_and_restart(self):
        self.check_survives("term")

    def wal_files(self):
        return glob.glob(os.path.join(self.gw.dir, "store-0", "*.log"))

    def test_sigkill_twice_with_preallocated_wal(self):
        """The shard preallocates its WAL file with the size set (an fsync then need not write
        the file's new size): after a crash the file ends in zeros past the last record. Recovery
        reads what was acknowledged and skips them, and does again after a second crash in the
        WAL the first restart made."""
        gw = self.gw
        dev = gw.create_device()
        did = dev["id"]
        c = self.connected(dev)
        c.wait_acked([c.publish(c.telemetry_topic(), b"one-%02d" % i, 1) for i in range(20)])
        wals = self.wal_files()
        self.assertEqual(len(wals), 1, wals)
        st = os.stat(wals[0])
        # 20 small records are a few KB; the file's size is the preallocation (about 1.1 write
        # buffers), and it is allocated, not sparse (the blocks are reserved before the writes)
        self.assertGreater(st.st_size, 1 << 20, "the WAL file's size is not its preallocation")
        self.assertGreaterEqual(st.st_blocks * 512, st.st_size // 2, "the WAL file's preallocation is sparse")
        for n, tag in ((20, b"two"), (40, b"three")):
            gw.kill()
            gw.start()
            got = [base64.b64decode(r["payload"]) for r in gw.wait_records(did, n)]
            self.assertEqual(got[:20], [b"one-%02d" % i for i in range(20)])
            if n == 40:
                self.assertEqual(got[20:], [b"two-%02d" % i for i in range(20)])
            c = self.connected(dev)
            c.wait_acked([c.publish(c.telemetry_topic(), tag + b"-%02d" % i, 1) for i in range(20)])
        gw.kill()
        gw.start()
        got = [base64.b64decode(r["payload"]) for r in gw.wait_records(did, 60)]
        self.assertEqual(got, [b"%s-%02d" % (t, i) for t in (b"one", b"two", b"three") for i in range(20)])

    def test_sigterm_with_connected_devices(self):
        devs = [self.gw.create_device() for _ in range(5)]
        clients = [self.connected(d, subscribe=True) for d in devs]
        self.assertTrue(self.gw.stop(), "sacgate all did not exit within 15 s of SIGTERM")
        for c in clients:
            self.assertTrue(c.wait_closed(10), "connection still open after the gateway stopped")
        self.gw.start()
        for d in devs:
            self.connected(d).send(b"back")


if __name__ == "__main__":
    sgtest.main()
