#!/usr/bin/python3
"""Backpressure never disconnects (both topologies). A writer that cannot keep up (one operation
per commit, so its queue of store.max_batch * 8 = 8 frames is full all the time) refuses
publishes with BUSY; the frontend keeps the connection, sends each refused publish again after
a short wait and withholds its PUBACK meanwhile. With the shards frozen (SIGSTOP, cluster) the
publishes wait on the way. Either way: no device is disconnected, every publish is acknowledged
and every acknowledged one is readable afterwards."""

import base64
import os
import signal
import struct
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest  # noqa: E402

DEVICES = 6
MESSAGES = 120


class BackpressureTest(GatewayTest):
    ENV = {"SACGATE_STORE_MAX_BATCH": "1"}

    def publish_all(self, tag, during=None):
        """Every device publishes MESSAGES QoS 1 messages at once (paho keeps 20 in flight each);
        `during` runs meanwhile. Returns the devices."""
        devs = [self.gw.create_device() for _ in range(DEVICES)]
        conns = [self.connected(d) for d in devs]
        mids = {}

        def run(c):
            mids[c.device_id] = [c.publish(c.telemetry_topic(), ("%s-%s-%d" % (tag, c.device_id, i)).encode())
                                 for i in range(MESSAGES)]
        threads = [threading.Thread(target=run, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        if during:
            during()
        for t in threads:
            t.join(60)
        for c in conns:
            c.wait_acked(mids[c.device_id], 120)   # fails if the connection was closed
            self.assertFalse(c.closed.is_set(), "%r was disconnected" % c)
        for c in conns:
            c.close()
        for d in devs:
            recs = self.gw.wait_records(d["id"], MESSAGES, timeout=60)
            got = {base64.b64decode(r["payload"]).decode() for r in recs}
            self.assertEqual(got, {"%s-%s-%d" % (tag, d["id"], i) for i in range(MESSAGES)})
        return devs

    def test_a_writer_that_cannot_keep_up_slows_devices_without_disconnecting_them(self):
        mark = self.gw.log_mark()
        self.publish_all("slow")
        # the refusals happened (else this proved nothing) and were answered by sending again
        self.gw.wait_log(r"event=telemetry\.busy", mark)
        self.assertEqual(self.gw.grep_log(r"event=telemetry\.unavailable", mark), [])

    def test_pubacks_keep_the_order_of_the_publishes_when_some_are_sent_again(self):
        # several connections at once keep the writer's queue full, so some publishes are refused
        # and sent again after later ones were stored: the PUBACKs must still come in order
        # (MQTT 3.1.1 4.6.0-2), on every connection
        devs = [self.gw.create_device() for _ in range(4)]
        raws = []
        for d in devs:
            raw = self.raw()
            self.assertEqual(raw.connect(d["id"], sgtest.sas_token(d["id"], d["primary"])), 0)
            raws.append((d, raw))
        mark = self.gw.log_mark()
        n = 60
        for d, raw in raws:
            raw.send(b"".join(sgtest.pkt_publish("devices/%s/messages/events/" % d["id"], b"m%d" % i, qos=1, mid=i)
                              for i in range(1, n + 1)))
        for d, raw in raws:
            acks = [struct.unpack("!H", raw.expect(sgtest.PUBACK, timeout=60)[2])[0] for _ in range(n)]
            self.assertEqual(acks, list(range(1, n + 1)), "PUBACKs of %s out of order" % d["id"])
        self.gw.wait_log(r"event=telemetry\.busy", mark)

    @unittest.skipUnless(sgtest.TOPOLOGY == "cluster", "freezes the shard processes of the cluster")
    def test_frozen_shards_hold_publishes_without_disconnecting_devices(self):
        pids = [self.gw.pid(n) for n in ("store-0", "store-1")]

        def freeze():
            time.sleep(0.3)
            for p in pids:
                os.kill(p, signal.SIGSTOP)
            try:
                time.sleep(4)   # past the routers' 3 s shard-down mark, well within frontend.ack_timeout
            finally:
                for p in pids:
                    os.kill(p, signal.SIGCONT)
        self.publish_all("frozen", during=freeze)


if __name__ == "__main__":
    sgtest.main()
