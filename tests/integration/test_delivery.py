#!/usr/bin/python3
"""Delivery semantics and hardening (both topologies): deliveries that are never acknowledged
are handed out again after the lock time and dead-lettered after the maximum delivery count;
a shard restarted under a connected device resumes its deliveries; properties that could never
fit in a devicebound topic are refused at enqueue; a will with a bad property bag is refused at
CONNECT (it once crashed the frontend); a topic cannot forge log lines; a device over its
telemetry rate is slowed down, never dropped; a resumed QoS 0 subscription stays QoS 0."""

import struct
import sys
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import (CONNACK, CONNECT, PUBLISH, GatewayTest, MqttDevice, enc_str, packet, pkt_puback,
                    read_publish, sas_token, username_for, wait_until)

# Short lock and few attempts so redelivery is observable; a low rate to exercise the bucket.
SHORT_LOCKS = {"SACGATE_STORE_DELIVERY_LOCK": "2", "SACGATE_STORE_MAX_DELIVERY_COUNT": "3",
       "SACGATE_FRONTEND_TELEMETRY_RATE": "20", "SACGATE_FRONTEND_TELEMETRY_BURST": "20"}


class DeliveryTest(GatewayTest):

    ENV = SHORT_LOCKS

    def test_unacknowledged_delivery_is_retried_then_dead_lettered(self):
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw_subscribed(dev)
        self.gw.send_command(did, "nobody acks me")
        seen = []
        for _ in range(3):   # max_delivery_count = 3, lock 2 s; we never PUBACK
            pid, dup, payload = read_publish(raw, timeout=30)
            self.assertEqual(payload, b"nobody acks me")
            seen.append(dup)
        self.assertEqual(seen, [False, True, True], "first delivery, then redeliveries marked DUP")
        wait_until(lambda: self.gw.pending(did) == [], 30, "the message to be dead-lettered")
        # and the device gets nothing more
        p = None
        try:
            p = raw.read_packet(timeout=4)
        except AssertionError:
            p = None   # no packet within 4 s: what we want
        self.assertTrue(p is None or p[0] != PUBLISH, "delivered again after the maximum count: %r" % (p,))

    def test_lost_delivery_comes_again_in_the_same_session(self):
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw_subscribed(dev)
        self.gw.send_command(did, "again")
        pid1, dup1, _ = read_publish(raw)
        pid2, dup2, _ = read_publish(raw)   # not acknowledged within the lock: handed out again
        self.assertEqual((pid1, dup1, dup2), (pid2, False, True))
        raw.send(pkt_puback(pid2))
        wait_until(lambda: self.gw.pending(did) == [], 20, "the acknowledged message to leave the queue")

    def test_properties_that_cannot_fit_a_topic_are_refused(self):
        dev = self.gw.create_device()
        props = {"p%02d" % i: " " * 1000 for i in range(25)}   # 25 kB of spaces, 75 kB URL-encoded
        r = self.gw.send_command(dev["id"], "x", expect=None, properties=props)
        self.assertError(r, 400, "InvalidMessage")
        self.assertEqual(self.gw.pending(dev["id"]), [])

    def test_will_with_a_bad_property_bag_is_refused(self):
        dev = self.gw.create_device()
        did = dev["id"]
        flags = 0x80 | 0x40 | 0x04 | 0x02
        body = enc_str(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 60) + enc_str(did)
        body += enc_str("devices/%s/messages/events/=x" % did) + struct.pack("!H", 1) + b"w"
        body += enc_str(username_for(did)) + enc_str(sas_token(did, dev["primary"]))
        raw = self.raw()
        raw.send(packet(CONNECT, 0, body))
        p = raw.read_packet(15)
        self.assertIsNotNone(p, "closed without CONNACK")
        self.assertEqual((p[0], p[2][1]), (CONNACK, 5))
        raw.close()
        # the gateway is still there and serves a good device
        self.connected(dev).send(b"alive")
        self.assertEqual(len(self.gw.wait_records(did, 1)), 1)

    def test_topic_cannot_forge_log_lines(self):
        dev = self.gw.create_device()
        did = dev["id"]
        mark = self.gw.log_mark()
        raw = self.raw()
        self.assertEqual(raw.connect(did, sas_token(did, dev["primary"])), 0)
        raw.send(sgtest.pkt_publish("devices/x\nFORGED-LINE level=error event=forged", b"", qos=0))
        self.assertTrue(raw.wait_closed(15))
        # refused (a control character in the topic) and logged, the topic never as a line of its own
        wait_until(lambda: "device=%s" % did in self.gw.log_since(mark) and "malformed PUBLISH" in self.gw.log_since(mark),
                   10, "the violation to be logged")
        for line in self.gw.log_since(mark, max_lines=10000).splitlines():
            self.assertFalse(line.lstrip().startswith("FORGED-LINE"), "a device forged a log line: %r" % line)

    def test_over_rate_telemetry_is_slowed_not_dropped(self):
        dev = self.gw.create_device()
        did = dev["id"]
        m = self.connected(dev)
        mids = [m.publish(m.telemetry_topic({"n": str(i)}), b"x", qos=1) for i in range(60)]   # 3x the burst
        m.wait_acked(mids, timeout=60)
        recs = self.gw.wait_records(did, 60, timeout=30)
        self.assertEqual(sorted(int(r["properties"]["n"]) for r in recs), list(range(60)))

    def test_resumed_qos0_subscription_stays_qos0(self):
        dev = self.gw.create_device()
        did = dev["id"]
        first = MqttDevice(self.gw, did, key=dev["primary"], clean_session=False)
        self._clients.append(first)
        self.assertEqual(first.connect(), 0)
        first.subscribe(qos=0)
        first.close()
        wait_until(lambda: not self.gw.device(did).json["connection"]["connected"], 20, "the session to end")
        self.gw.send_command(did, "q0")
        raw = self.raw()
        pw = sas_token(did, dev["primary"])
        raw.send(sgtest.pkt_connect(did, username_for(did), pw, clean=False))
        t, _, body = raw.expect(CONNACK)
        self.assertEqual(body, bytes([1, 0]), "accepted with session present")
        pid, dup, payload = read_publish(raw)
        self.assertEqual((pid, payload), (0, b"q0"), "delivered at QoS 0")
        wait_until(lambda: self.gw.pending(did) == [], 20, "the QoS 0 delivery to complete")


@unittest.skipUnless(sgtest.TOPOLOGY == "cluster", "needs separate shard processes")
class ShardRestartTest(GatewayTest):
    TOPOLOGY = "cluster"

    def test_deliveries_resume_after_the_shard_restarts(self):
        dev = self.create_after_restarts()
        did = dev["id"]
        raw = self.raw_subscribed(dev)
        for i in range(15):
            self.gw.send_command(did, "c%02d" % i)
        first = [read_publish(raw) for _ in range(10)]   # the in-flight window
        # restart every shard (so the device's one certainly restarts), acks not yet sent
        for s in ("store-0", "store-1"):
            self.gw.kill(s)
            self.gw.start_member(s)
        self.gw.wait_ready(60)
        for pid, _, _ in first:
            raw.send(pkt_puback(pid))
        got = {p for _, _, p in first}
        deadline = time.monotonic() + 90
        while len(got) < 15 and time.monotonic() < deadline:
            pid, dup, payload = read_publish(raw, timeout=max(1, deadline - time.monotonic()))
            got.add(payload)
            raw.send(pkt_puback(pid))
        self.assertEqual(sorted(got), sorted(("c%02d" % i).encode() for i in range(15)))
        wait_until(lambda: self.gw.pending(did) == [], 60, "the queue to drain")

    def create_after_restarts(self):
        """A device, once the router takes CONNECTs and writes for every shard again: right after
        shards restart (here or in the other test) it may count one as down for a moment (its
        probes went to the old process), and a write then gets 503 ShardUnavailable."""
        def attempt():
            try:
                return self.gw.create_device()
            except AssertionError as e:
                if "ShardUnavailable" not in str(e):
                    raise
                return None
        return wait_until(attempt, 30, "the router to take writes for every shard again")

    def test_silent_device_gets_its_delivery_again_after_the_shard_restarts(self):
        # The delivery lock is 60 s here: a redelivery within 30 s can only come from the shard
        # resuming the live sessions it finds on disk.
        dev = self.create_after_restarts()
        did = dev["id"]
        raw = self.raw_subscribed(dev)
        self.gw.send_command(did, "unacked")
        pid, dup, payload = read_publish(raw)
        self.assertEqual((dup, payload), (False, b"unacked"))
        for s in ("store-0", "store-1"):
            self.gw.kill(s)
            self.gw.start_member(s)
        pid2, dup2, payload2 = read_publish(raw, timeout=30)   # the device says nothing meanwhile
        self.assertEqual((pid2, dup2, payload2), (pid, True, b"unacked"))
        raw.send(pkt_puback(pid2))
        wait_until(lambda: self.gw.pending(did) == [], 30, "the queue to drain")


if __name__ == "__main__":
    sgtest.main()
