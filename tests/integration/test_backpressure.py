#!/usr/bin/python3
"""Backpressure never disconnects and never drops (both topologies). Flow control is credit
(cluster.credit, set small here): a frontend loop keeps the bytes of unacknowledged publishes on
their way to each shard within it, and reads no more publishes of that shard's devices until
acknowledgements bring credit back, so PUBACKs are withheld, nothing waits on the way beyond the
credits, and no tier refuses or drops a frame. A writer that cannot keep up (one operation per
commit) and frozen shards (SIGSTOP, cluster) are the two stalls: no device is disconnected, no
frame is refused BUSY or dropped, what travels during the freeze stays within the credits, and
every acknowledged publish is readable afterwards."""

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


CREDIT = 4096


def payload(tag, device, i):
    """600 bytes: a device's MQTT window (20) is then three times the credit."""
    return ("%s-%s-%d-" % (tag, device, i)).encode().ljust(600, b"x")


def metric_sum(text, name):
    """The sum of every sample of metric `name` in a /metrics text."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


class BackpressureTest(GatewayTest):
    ENV = {"SACGATE_STORE_MAX_BATCH": "1", "SACGATE_CLUSTER_CREDIT": str(CREDIT)}

    def assert_nothing_refused_or_dropped(self, mark):
        text = self.gw.get("/metrics", timeout=60).text
        self.assertEqual(metric_sum(text, "sacgate_shard_refused_busy_total"), 0, "a shard refused frames BUSY")
        self.assertEqual(metric_sum(text, "sacgate_shard_dropped_frames_total"), 0, "a shard dropped frames")
        self.assertEqual(self.gw.grep_log(r"event=(telemetry\.busy|telemetry\.unavailable|peer\.full|"
                                          r"net\.router_full|net\.overloaded|link\.backlog_lost)", mark), [])
        return text

    def credit_waits(self):
        return metric_sum(self.gw.get("/metrics", timeout=60).text, "sacgate_frontend_credit_waits_total")

    def wait_credit_waits(self, before):
        """Frontends' credit waits as their heartbeats (every 2 s) report them: some happened since."""
        sgtest.wait_until(lambda: BackpressureTest.credit_waits(self) > before, 15, "credit waits (> %d)" % before)

    def publish_all(self, tag, during=None):
        """Every device publishes MESSAGES QoS 1 messages at once (paho keeps 20 in flight each);
        `during` runs meanwhile. Returns the devices."""
        devs = [self.gw.create_device() for _ in range(DEVICES)]
        conns = [self.connected(d) for d in devs]
        mids = {}

        def run(c):
            mids[c.device_id] = [c.publish(c.telemetry_topic(), payload(tag, c.device_id, i)) for i in range(MESSAGES)]
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
            got = {base64.b64decode(r["payload"]) for r in recs}
            self.assertEqual(got, {payload(tag, d["id"], i) for i in range(MESSAGES)})
        return devs

    def test_a_writer_that_cannot_keep_up_slows_devices_without_disconnecting_them(self):
        mark, waits = self.gw.log_mark(), self.credit_waits()
        self.publish_all("slow")
        # the credit was spent (else this proved nothing), and nothing was refused or dropped:
        # before credit, the writer's full queue refused publishes BUSY and they were sent again
        self.assert_nothing_refused_or_dropped(mark)
        self.wait_credit_waits(waits)
        # the routers' batches the writer took whole (one operation a commit here) are all read

        def batch_bytes():
            text = self.gw.get("/metrics", timeout=60).text
            self.assertIn("sacgate_shard_batch_bytes{", text)
            return metric_sum(text, "sacgate_shard_batch_bytes")
        sgtest.wait_until(lambda: batch_bytes() == 0, 15, "no batch bytes left waiting for the writer")

    def test_pubacks_keep_the_order_of_the_publishes_when_some_are_sent_again(self):
        # several connections at once, each sending three credits' worth in one go: reading stops
        # and resumes mid-stream as the slow writer acknowledges, and the PUBACKs must still come
        # in order (MQTT 3.1.1 4.6.0-2), on every connection
        devs = [self.gw.create_device() for _ in range(4)]
        raws = []
        for d in devs:
            raw = self.raw()
            self.assertEqual(raw.connect(d["id"], sgtest.sas_token(d["id"], d["primary"])), 0)
            raws.append((d, raw))
        mark, waits = self.gw.log_mark(), self.credit_waits()
        n = 60
        for d, raw in raws:
            raw.send(b"".join(sgtest.pkt_publish("devices/%s/messages/events/" % d["id"], payload("m", d["id"], i), qos=1, mid=i)
                              for i in range(1, n + 1)))
        for d, raw in raws:
            acks = [struct.unpack("!H", raw.expect(sgtest.PUBACK, timeout=60)[2])[0] for _ in range(n)]
            self.assertEqual(acks, list(range(1, n + 1)), "PUBACKs of %s out of order" % d["id"])
        self.assert_nothing_refused_or_dropped(mark)
        self.wait_credit_waits(waits)

    def test_deliveries_keep_within_each_loops_credit_and_all_arrive_in_order(self):
        # every device's window (store.delivery_window, 10) of 3 KB commands is seven times the
        # credit a shard may have on its way to one frontend loop: deliveries wait for completions
        # instead of piling up in front of the loop, and every command still arrives, in order
        before = metric_sum(self.gw.get("/metrics", timeout=60).text, "sacgate_shard_credit_waits_total")
        devs = [self.gw.create_device() for _ in range(3)]
        n = 30
        for d in devs:
            for i in range(n):
                self.gw.send_command(d["id"], payload=("%s-%02d-" % (d["id"], i)).ljust(3000, "c"))
        conns = [self.connected(d, subscribe=True) for d in devs]
        for d, c in zip(devs, conns):
            got = [m["payload"] for m in c.wait_commands(n, timeout=60)]
            self.assertEqual(got, [("%s-%02d-" % (d["id"], i)).ljust(3000, "c").encode() for i in range(n)])
            self.assertFalse(c.closed.is_set())
        after = metric_sum(self.gw.get("/metrics", timeout=60).text, "sacgate_shard_credit_waits_total")
        self.assertGreater(after, before, "no delivery waited for credit: the test proved nothing")

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
        mark = self.gw.log_mark()
        self.publish_all("frozen", during=freeze)
        self.assert_nothing_refused_or_dropped(mark)


class FrozenUnderLoadTest(GatewayTest):
    """Many devices publish into frozen shards: what the router takes in meanwhile stays within
    the frontends' credits (before credit, every device's whole MQTT window went on its way)."""
    ENV = {"SACGATE_CLUSTER_CREDIT": str(CREDIT),
           "SACGATE_CLUSTER_REQUEST_TIMEOUT": "1"}   # /v1/cluster answers without the frozen shards

    def relayed_in(self):
        return sum(r["relayedIn"] for r in self.gw.cluster_info()["routers"])

    @unittest.skipUnless(sgtest.TOPOLOGY == "cluster", "freezes the shard processes of the cluster")
    def test_frozen_shards_bound_what_travels_and_lose_nothing(self):
        self.publish_into_frozen_shards(qos=1)

    @unittest.skipUnless(sgtest.TOPOLOGY == "cluster", "freezes the shard processes of the cluster")
    def test_qos0_publishes_wait_within_the_credit_too(self):
        # QoS 0 has no PUBACK, but its shard answers the frontend (credit): the same bound holds,
        # and none of them is refused or lost on the way
        self.publish_into_frozen_shards(qos=0)

    def publish_into_frozen_shards(self, qos):
        devices, per_device, size = 30, 40, 1000
        devs = [self.gw.create_device() for _ in range(devices)]
        conns = [self.connected(d) for d in devs]
        loops = sum(f["loops"] for f in self.gw.cluster_info()["frontends"])
        pids = [self.gw.pid(n) for n in ("store-0", "store-1")]
        mark = self.gw.log_mark()
        mids = {}
        for p in pids:
            os.kill(p, signal.SIGSTOP)
        try:
            before = self.relayed_in()
            for c in conns:   # paho sends 20 at once (its window), the rest as PUBACKs come
                mids[c.device_id] = [c.publish(c.telemetry_topic(), (b"%s-%04d-" % (c.device_id.encode(), i)).ljust(size, b"x"),
                                               qos=qos) for i in range(per_device)]
            time.sleep(3)
            during = self.relayed_in() - before
        finally:
            for p in pids:
                os.kill(p, signal.SIGCONT)
        # every loop may have one credit's worth (and the frame that crossed it) on its way to each
        # shard; heartbeats and this test's own /v1/cluster requests come on top
        bound = loops * 2 * (CREDIT // size + 2) + 40
        self.assertLess(during, bound, "the router took in %d frames while the shards were frozen (%d loops): "
                        "more than the credits allow" % (during, loops))
        for c in conns:
            if qos:
                c.wait_acked(mids[c.device_id], 120)
            self.assertFalse(c.closed.is_set(), "%r was disconnected" % c)
        # reads go to shards the router counts as up again (QoS 0 gives no PUBACK to wait for)
        sgtest.wait_until(lambda: all(s["reachable"] for s in self.gw.cluster_info()["shards"]), 30,
                          "every shard reachable again")
        for d in devs:
            recs = self.gw.wait_records(d["id"], per_device, timeout=60)
            self.assertEqual(len(recs), per_device)
        for c in conns:
            self.assertFalse(c.closed.is_set(), "%r was disconnected" % c)
            c.close()
        text = self.gw.get("/metrics", timeout=60).text
        self.assertEqual(metric_sum(text, "sacgate_shard_refused_busy_total"), 0)
        self.assertEqual(metric_sum(text, "sacgate_shard_dropped_frames_total"), 0)
        BackpressureTest.wait_credit_waits(self, 0)
        self.assertEqual(self.gw.grep_log(r"event=(telemetry\.busy|peer\.full|net\.router_full|net\.overloaded)",
                                          mark), [])


class FullLinkTest(GatewayTest):
    """A frontend loop's link to its router fills (the router is frozen, SIGSTOP): what must reach
    the shards (session ends, subscription changes) waits in order and is never dropped, and a
    device cannot grow what waits: once its bookkeeping has to wait, its connection is not read
    until the link has room. Before, every frame waited (a device toggling its subscription added
    one per packet) and past 200,000 of them frames were dropped."""
    ENV = {"SACGATE_CLUSTER_CREDIT": str(64 << 20),   # the publishes fill the link, not the credit
           "SACGATE_CLUSTER_HWM": "100",                # the lowest high-water mark
           "SACGATE_FRONTEND_THREADS": "1",             # one loop: every device here shares its link
           "SACGATE_CLUSTER_REQUEST_TIMEOUT": "1"}

    def create(self):
        """A device; a shard still busy with an earlier test's 160 MB answers 503 Busy meanwhile."""
        deadline = time.monotonic() + 120
        while True:
            dev = self.gw.create_device(expect=None)
            if dev["entry"].get("error") != "Busy" or time.monotonic() > deadline:
                self.assertTrue(dev["primary"], dev["entry"])
                return dev
            time.sleep(0.5)

    @unittest.skipUnless(sgtest.TOPOLOGY == "cluster", "freezes the router process of the cluster")
    def test_bookkeeping_waits_in_order_and_the_device_behind_it_is_not_read(self):
        port = self.gw.mqtt_ports[0]   # fe-0
        fillers = [self.connected(self.create(), port=port) for _ in range(40)]
        enders = [self.connected(self.create(), port=port) for _ in range(10)]
        tdev = self.create()
        toggler = self.raw(port=port)
        tid = tdev["id"]
        self.assertEqual(toggler.connect(tid, sgtest.sas_token(tid, tdev["primary"])), 0)
        topic = "devices/%s/messages/devicebound/#" % tid
        router = self.gw.pid("router-0")
        mark = self.gw.log_mark()
        mids = {}
        os.kill(router, signal.SIGSTOP)
        try:
            # 40 devices x 16 in flight x 250 KB: more than the socket buffers and the link's
            # high-water mark (cluster.hwm, 100 messages) take
            for c in fillers:
                mids[c.device_id] = [c.publish(c.telemetry_topic(), (b"%s-%02d-" % (c.device_id.encode(), i)).ljust(250000, b"f"))
                                     for i in range(16)]
            # devices leave until one's SESSION_END has to wait (the link is full), or all of them
            # in 15 s (a few seconds fill it)
            ended = []
            for c in enders:
                c.close()
                ended.append(c.device_id)
                try:
                    self.gw.wait_log(r"event=link\.backlog ", mark, timeout=1.5)
                    break
                except AssertionError:
                    continue
            for c in enders[len(ended):]:
                c.close()
                ended.append(c.device_id)
            # 1001 subscription changes in one write: the first one that waits holds the rest unread
            n = 1001
            toggler.send(b"".join(sgtest.pkt_subscribe(i, [(topic, 1)]) if i % 2 else
                                  sgtest.packet(sgtest.UNSUBSCRIBE, 0x02, struct.pack("!H", i) + sgtest.enc_str(topic))
                                  for i in range(1, n + 1)))
            answered = []
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                try:
                    answered.append(toggler.read_packet(timeout=max(0.05, deadline - time.monotonic())))
                except AssertionError:
                    break
            self.assertLessEqual(len(answered), 3, "the device went on being read while its subscription changes "
                                 "waited for the link: %d of %d answered" % (len(answered), n))
            self.assertTrue(self.gw.grep_log(r"event=link\.backlog ", mark), "the full link was not logged")
        finally:
            os.kill(router, signal.SIGCONT)
        # everything that waited goes on, in order, and nothing was dropped
        for i in range(len(answered) + 1, n + 1):
            p = toggler.read_packet(timeout=30)
            self.assertIsNotNone(p, "the toggling device was disconnected (%r)" % toggler.error)
            self.assertEqual((p[0], struct.unpack("!H", p[2][:2])[0]),
                             (sgtest.SUBACK if i % 2 else sgtest.UNSUBACK, i))
        for c in fillers:
            c.wait_acked(mids[c.device_id], 60)
            self.assertFalse(c.closed.is_set(), "%r was disconnected" % c)
        for d in ended:
            sgtest.wait_until(lambda: not self.gw.device(d).json["connection"]["connected"], 30,
                              "the session of %s ended at its shard" % d)
        # its last change (a SUBSCRIBE) is the one in effect
        self.gw.send_command(tid, payload="after")
        p = toggler.expect(sgtest.PUBLISH, timeout=30)
        self.assertIn(b"after", p[2])
        self.assertEqual(self.gw.grep_log(r"event=link\.backlog_(full|lost)", mark), [])
        self.gw.wait_log(r"event=link\.backlog_sent .*peak=", mark, timeout=10)

        def peak():
            return metric_sum(self.gw.get("/metrics", timeout=30).text, "sacgate_frontend_link_backlog_peak")
        sgtest.wait_until(lambda: peak() > 0, 15, "the frontends' heartbeats reporting the backlog's peak")
        # every ended session and one subscription change at most (with the old behaviour: the
        # toggler's thousand)
        self.assertLessEqual(peak(), len(ended) + 2)
        sgtest.wait_until(lambda: metric_sum(self.gw.get("/metrics", timeout=30).text,
                                             "sacgate_frontend_link_backlog") == 0, 15, "an empty backlog")

    @unittest.skipUnless(sgtest.TOPOLOGY == "cluster", "freezes the shard processes of the cluster")
    def test_a_completion_the_router_refuses_is_sent_again(self):
        # The router's queue towards the device's frozen shard fills (cluster.hwm) and it refuses
        # what does not fit, BUSY: a delivery's PUBACK (COMPLETE) among it is passed on again
        # 50 ms later, until the shard takes it; the connection stays and the command is not
        # delivered twice.
        port = self.gw.mqtt_ports[0]
        dev = self.create()
        raw = self.raw_subscribed(dev, port=port)
        # its shard: where its telemetry goes (only that one is frozen, so any refusal is its)
        raw.send(sgtest.pkt_publish("devices/%s/messages/events/" % dev["id"], b"where", qos=1, mid=7))
        self.assertEqual(raw.expect(sgtest.PUBACK, timeout=30)[2], struct.pack("!H", 7))
        (part, _), = self.gw.records_of(dev["id"]).items()
        name, = [s["name"] for s in self.gw.cluster_info()["shards"] if s["partition"] == part]
        fillers = [self.connected(self.create(), port=port) for _ in range(40)]
        self.gw.send_command(dev["id"], payload="complete-me")
        ptype, flags, body = raw.expect(sgtest.PUBLISH, timeout=30)
        tlen = struct.unpack("!H", body[:2])[0]
        pid = struct.unpack("!H", body[2 + tlen:4 + tlen])[0]
        self.assertTrue(body.endswith(b"complete-me"))
        shards = [self.gw.pid(name)]
        mark = self.gw.log_mark()
        mids = {}
        for p in shards:
            os.kill(p, signal.SIGSTOP)
        try:
            for c in fillers:
                mids[c.device_id] = [c.publish(c.telemetry_topic(), (b"%s-%02d-" % (c.device_id.encode(), i)).ljust(250000, b"f"))
                                     for i in range(16)]
            self.gw.wait_log(r"event=telemetry\.busy ", mark, timeout=30)   # the router refuses
            raw.send(sgtest.pkt_puback(pid))
            self.gw.wait_log(r"event=bookkeeping\.busy .*lost=COMPLETE pid=%d " % pid, mark, timeout=15)
        finally:
            for p in shards:
                os.kill(p, signal.SIGCONT)
        for c in fillers:
            c.wait_acked(mids[c.device_id], 90)
            self.assertFalse(c.closed.is_set(), "%r was disconnected" % c)
        sgtest.wait_until(lambda: self.gw.pending(dev["id"]) == [], 30, "the command completed at its shard")
        raw.send(sgtest.pkt_pingreq())
        self.assertEqual(raw.expect(sgtest.PINGRESP, timeout=15)[0], sgtest.PINGRESP,
                         "the command came again instead of the PINGRESP")
        self.assertEqual(self.gw.grep_log(r"event=session\.unavailable", mark), [])


class PubackOnFullLinkTest(GatewayTest):
    """A gateway of its own: the backlog this fills would show in FullLinkTest's figures."""
    ENV = dict(FullLinkTest.ENV,
               # thousands of tiny QoS 0 publishes in one write fill a pass's batch (not rate-limited)
               SACGATE_FRONTEND_TELEMETRY_RATE="65535", SACGATE_FRONTEND_TELEMETRY_BURST="65535")
    create = FullLinkTest.create

    @unittest.skipUnless(sgtest.TOPOLOGY == "cluster", "freezes the router process of the cluster")
    def test_a_delivery_puback_read_while_the_link_is_full_waits_for_it(self):
        # A device acknowledges a command while its loop's link is full (the router frozen, the
        # link's backlog holding session ends, the pass's batch full of QoS 0 publishes): the
        # completion waits in order and reaches the shard when the router goes on. Before, the
        # PUBACK was taken off the connection's list, the packet was read again once the link had
        # room, found no longer awaited and dropped as unsolicited: the command stayed in flight
        # for the delivery lock (60 s) and came again, DUP.
        port = self.gw.mqtt_ports[0]
        dev = self.create()
        raw = self.raw_subscribed(dev, port=port)
        fillers = [self.connected(self.create(), port=port) for _ in range(40)]
        enders = [self.connected(self.create(), port=port) for _ in range(10)]
        sdev = self.create()
        small = self.raw(port=port)
        self.assertEqual(small.connect(sdev["id"], sgtest.sas_token(sdev["id"], sdev["primary"])), 0)
        self.gw.send_command(dev["id"], payload="complete-me")
        _, _, body = raw.expect(sgtest.PUBLISH, timeout=30)
        tlen = struct.unpack("!H", body[:2])[0]
        pid = struct.unpack("!H", body[2 + tlen:4 + tlen])[0]
        router = self.gw.pid("router-0")
        mark = self.gw.log_mark()
        os.kill(router, signal.SIGSTOP)
        try:
            mids = {c.device_id: [c.publish(c.telemetry_topic(), b"x" * 250000) for _ in range(16)] for c in fillers}
            time.sleep(1)
            st = "devices/%s/messages/events/" % sdev["id"]
            small.send(b"".join(sgtest.pkt_publish(st, b"s%d" % i, qos=0) for i in range(5000)))
            time.sleep(1)
            for c in enders:
                c.close()
            self.gw.wait_log(r"event=link\.backlog ", mark, timeout=15)
            raw.send(sgtest.pkt_puback(pid))
            time.sleep(1)
        finally:
            os.kill(router, signal.SIGCONT)
        for c in fillers:
            c.wait_acked(mids[c.device_id], 60)
        # well inside the delivery lock: only the device's PUBACK can have completed it
        sgtest.wait_until(lambda: self.gw.pending(dev["id"]) == [], 30, "the command completed at its shard")
        self.assertEqual(self.gw.grep_log(r"event=mqtt\.unsolicited_puback device=%s" % dev["id"], mark), [])


if __name__ == "__main__":
    sgtest.main()
