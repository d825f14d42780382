#!/usr/bin/python3
"""`sacgate all` stopped (SIGKILL and SIGTERM) and started again on the same data dir:
registry, acknowledged telemetry and accepted commands survive. All-in-one topology."""

import base64
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
