#!/usr/bin/python3
"""Cloud-to-device messages through faults (both topologies; SPEC 5 "at-least-once, in order",
"a shard killed with SIGKILL and restarted loses nothing that was acknowledged").

- 200 commands accepted (201) for an offline device, every shard SIGKILLed and restarted: the
  device (paho) then gets all 200, in order, none twice unless flagged DUP.
- The process carrying a delivery dies while deliveries are in flight and unacknowledged (a raw
  client that never PUBACKs): in a cluster the device's frontend is SIGKILLed and the device
  reconnects to the other frontend; `sacgate all` is SIGKILLed as a whole and restarted. Either
  way the unacknowledged deliveries come again, first, in order, with the DUP flag, and the
  acknowledged ones do not come again.
- Commands that expire while their shard is down are dead-lettered (`expired`, with feedback)
  once it is back, never delivered, and never before their expiry time; 1,200 expiring at once
  are all dead-lettered, those in flight to a connected device only once it is gone.
- After 10 delivery attempts (the default store.max_delivery_count) without PUBACK a message is
  dead-lettered as `deliveryCountExceeded` (DefaultDeliveryCountTest, 1 s delivery lock).
- The queue limit comes from the configuration (here store.max_queued_messages = 200) unless the
  registry entry sets its own."""

import datetime
import struct
import sys
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import PUBLISH, parse_bag, pkt_puback, wait_until  # noqa: E402
from test_feedback import FeedbackCase  # noqa: E402

STORES = ("store-0", "store-1")
QUEUE_LIMIT = 200


def next_command(raw, timeout=30):
    """The next devicebound PUBLISH on a RawConn: (packet id, dup, $.mid, payload)."""
    _, flags, body = raw.expect(PUBLISH, timeout=timeout)
    tl = struct.unpack("!H", body[:2])[0]
    topic = body[2:2 + tl].decode()
    pid = struct.unpack("!H", body[2 + tl:4 + tl])[0]
    return pid, bool(flags & 8), parse_bag(topic.split("/devicebound/", 1)[1])["$.mid"], body[4 + tl:]


def parse_time(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


class C2DFaultTest(FeedbackCase):

    ENV = {"SACGATE_STORE_MAX_QUEUED_MESSAGES": str(QUEUE_LIMIT)}

    # -- faults

    def stop_stores(self):
        """SIGKILL every shard: the whole process for sacgate all, every store-N in a cluster."""
        if self.is_cluster:
            for s in STORES:
                self.gw.kill(s)
        else:
            self.gw.kill()

    def start_stores(self):
        if self.is_cluster:
            for s in STORES:
                self.gw.start_member(s)
        else:
            self.gw.start()
        self.gw.wait_ready(60)

    def retry_unavailable(self, fn, what):
        """fn() once the router takes requests for every shard again: right after a restart it
        may count a shard as down for a moment (503 ShardUnavailable)."""
        def attempt():
            try:
                return fn()
            except AssertionError as e:
                if "Unavailable" not in str(e):
                    raise
                return None
        return wait_until(attempt, 30, what)

    def enqueue(self, did, n, prefix, **fields):
        return [self.gw.send_command(did, "%s-%03d" % (prefix, i), **fields).json["messageId"] for i in range(n)]

    def assert_in_order_once(self, cmds, ids, what):
        """cmds (MqttDevice.commands()) carry ids in order; a message seen before may come again
        only flagged DUP, and never out of order."""
        seen, order = set(), []
        for c in cmds:
            mid = c["props"]["$.mid"]
            if mid in seen:
                self.assertTrue(c["dup"], "%s: %s delivered twice without the DUP flag" % (what, mid))
                continue
            seen.add(mid)
            order.append(mid)
        self.assertEqual(order, ids, "%s: not every accepted command, or not in order" % what)

    # -- tests

    def test_200_offline_commands_survive_a_shard_kill(self):
        dev = self.gw.create_device()
        did = dev["id"]
        ids = self.enqueue(did, QUEUE_LIMIT, "off")
        # the limit is the configured one (not the default 50) ...
        r = self.gw.send_command(did, "one too many", expect=None)
        body = self.assertError(r, 429, "DeviceQueueFull")
        self.assertEqual((body["queued"], body["limit"]), (QUEUE_LIMIT, QUEUE_LIMIT), body)
        self.assertIn("retry-after", r.headers)
        self.stop_stores()
        self.start_stores()
        pend = self.retry_unavailable(lambda: self.gw.pending(did), "the queue to be readable again")
        self.assertEqual([m["messageId"] for m in pend], ids, "the queue after the kill")
        c = self.connected(dev, subscribe=True)
        cmds = c.wait_commands(QUEUE_LIMIT, timeout=90)
        wait_until(lambda: self.gw.device(did).json.get("queueDepth") == 0, 30, "the queue of %s to drain" % did)
        time.sleep(1)   # anything sent twice would be here by now
        cmds = c.commands()
        self.assert_in_order_once(cmds, ids, "after the shard kill")
        self.assertEqual([x["payload"] for x in cmds if not x["dup"]], [b"off-%03d" % i for i in range(QUEUE_LIMIT)])
        # ... and a registry entry's own limit wins over the configured one
        small = self.gw.create_device(limits={"maxQueuedMessages": 5})
        self.enqueue(small["id"], 5, "small")
        body = self.assertError(self.gw.send_command(small["id"], "sixth", expect=None), 429, "DeviceQueueFull")
        self.assertEqual((body["queued"], body["limit"]), (5, 5), body)

    def test_carrier_killed_mid_delivery_redelivers_with_dup(self):
        """In a cluster the device's frontend dies; in `all` the whole process does."""
        dev = self.gw.create_device()
        did = dev["id"]
        ids = self.enqueue(did, 30, "fly")
        raw = self.raw_subscribed(dev, port=self.gw.mqtt_ports[0])
        first = [next_command(raw) for _ in range(10)]    # the in-flight window
        self.assertEqual([m for _, _, m, _ in first], ids[:10])
        self.assertFalse(any(dup for _, dup, _, _ in first), "a first delivery flagged DUP")
        for pid, _, _, _ in first[:3]:
            raw.send(pkt_puback(pid))
        wait_until(lambda: len(self.gw.pending(did)) == 27, 20, "3 acknowledged commands to leave the queue")
        refill = [next_command(raw) for _ in range(3)]    # the window refilled behind the acks
        self.assertEqual([m for _, _, m, _ in refill], ids[10:13])
        if self.is_cluster:
            self.gw.kill("fe-0")        # SIGKILL while 10 deliveries are on fe-0, unacknowledged
            port = self.gw.mqtt_ports[1]
        else:
            self.gw.kill()
            self.gw.start()
            port = self.gw.mqtt_ports[0]
        try:
            c = self.retry_unavailable(lambda: self.connected(dev, port=port, subscribe=True),
                                       "the device to connect again")
            cmds = c.wait_commands(27, timeout=60)
            wait_until(lambda: self.gw.pending(did) == [], 30, "the queue of %s to drain" % did)
            time.sleep(1)
            cmds = c.commands()
            self.assert_in_order_once(cmds, ids[3:], "after the carrier died")
            self.assertEqual(len(cmds), 27, "delivered more than once to the new connection: %r" % (
                [(x["props"]["$.mid"], x["dup"]) for x in cmds],))
            self.assertEqual([x["dup"] for x in cmds], [True] * 10 + [False] * 17,
                             "the 10 that were in flight come again flagged DUP, the rest not")
        finally:
            if self.is_cluster:
                self.gw.start_member("fe-0")
                self.gw.wait_ready(60)

    def test_commands_expiring_while_the_shard_is_down_are_dead_lettered(self):
        dev = self.gw.create_device()
        did = dev["id"]
        short = self.enqueue(did, 3, "short", ttlSeconds=2, ack="full")
        keep = self.enqueue(did, 1, "keep", ack="full")
        expires = {m["messageId"]: parse_time(m["expiresAt"]) for m in self.gw.pending(did)}
        self.stop_stores()
        time.sleep(3)   # past their expiry while no shard runs
        self.start_stores()

        def dead():
            r = self.gw.get("/v1/devices/%s/deadletters" % did, token="svc")
            if r.status != 200:
                return None
            return r.json["deadLetters"] if len(r.json["deadLetters"]) == 3 else None
        dls = wait_until(dead, 30, "the 3 expired commands to be dead-lettered")
        self.assertEqual([d["messageId"] for d in dls], short)
        self.assertEqual({d["reason"] for d in dls}, {"expired"})
        self.assertEqual([m["messageId"] for m in self.gw.pending(did)], keep)
        fb = wait_until(lambda: [r for r in self.records_of(did) if r["outcome"] == "expired"] or None, 30,
                        "expired feedback")
        wait_until(lambda: len([r for r in self.records_of(did) if r["outcome"] == "expired"]) == 3, 30,
                   "expired feedback for all three")
        fb = [r for r in self.records_of(did) if r["outcome"] == "expired"]
        self.assertEqual(sorted(r["messageId"] for r in fb), sorted(short))
        for r in fb:
            self.assertGreaterEqual(parse_time(r["at"]), expires[r["messageId"]], "expired before its time: %r" % r)
        c = self.connected(dev, subscribe=True)
        cmds = c.wait_commands(1)
        wait_until(lambda: self.gw.pending(did) == [], 30, "the kept command to be delivered")
        time.sleep(1)
        self.assertEqual([x["props"]["$.mid"] for x in c.commands()], keep, "an expired command was delivered")
        self.assertEqual(cmds[0]["payload"], b"keep-000")

    def test_1200_expiring_at_once_spare_deliveries_in_flight(self):
        """1,200 messages (30 devices x 40, queued as notifications) expire within the same second
        or so (often more than one slice of the sweep, 1,000; how fast is bench c2d-expiry's
        business). All are dead-lettered with feedback, except the ones in flight to a device
        that has not acknowledged them: they wait until it is gone (it might still)."""
        tag = sgtest.uid("bk")
        devs = [self.gw.create_device(tags={"fleet": tag}) for _ in range(30)]
        flying = devs[0]
        raw = self.raw_subscribed(flying)
        for i in range(40):
            r = self.gw.http("POST", "/v1/notifications", {"tags": {"fleet": tag}, "payload": "n%02d" % i,
                                                           "ttlSeconds": 3, "ack": "negative"}, token="svc")
            self.assertEqual((r.status, r.json.get("targets")), (202, 30), r)
        inflight = [next_command(raw) for _ in range(10)]   # never acknowledged
        self.assertEqual([p for _, _, _, p in inflight], [b"n%02d" % i for i in range(10)])

        def depth(d):
            return self.gw.device(d["id"]).json["queueDepth"]
        wait_until(lambda: all(depth(d) == 0 for d in devs[1:]), 60, "29 queues of 40 to expire")
        # the flying device may still acknowledge what it holds: those stay until it is gone
        wait_until(lambda: depth(flying) == 10, 30, "the flying device's 30 queued ones to expire")
        raw.close()
        wait_until(lambda: depth(flying) == 0, 30, "its 10 in-flight ones to expire once it is gone")
        for d in devs:
            dls = self.gw.get("/v1/devices/%s/deadletters" % d["id"], token="svc").json["deadLetters"]
            self.assertEqual([x["reason"] for x in dls], ["expired"] * 40, d["id"])
        ids = {d["id"] for d in devs}

        def expired_feedback():
            n = 0
            for part in self.gw.partitions():
                n += sum(1 for r in self.read_all(part) if r["deviceId"] in ids and r["outcome"] == "expired")
            return n
        wait_until(lambda: expired_feedback() == 1200, 30, "1,200 expired feedback records")


class SweepPastDeliveriesInFlightTest(FeedbackCase):
    """The expiry sweep walks its index a slice (1,000 entries) at a time, and skips the entries
    of deliveries still in flight (their device may yet acknowledge them). When a whole slice is
    such entries, it goes on past them: a message due behind them, for a device that is offline,
    is dead-lettered at its expiry. Before, the sweep began at the first entry again each second
    and never got past them until the delivery lock (here 10 minutes) freed them."""

    ENV = {"SACGATE_STORE_DELIVERY_WINDOW": "64", "SACGATE_STORE_DELIVERY_LOCK": "600",
           "SACGATE_STORE_MAX_QUEUED_MESSAGES": "100"}

    @unittest.skipIf(sgtest.TOPOLOGY == "cluster", "the sweep's slice is per shard: only in sacgate all does one "
                     "shard hold every device's deliveries")
    def test_a_due_message_behind_a_slice_of_deliveries_in_flight_expires(self):
        tag = sgtest.uid("sw")
        devs = [self.gw.create_device(tags={"fleet": tag}) for _ in range(16)]
        raws = [self.raw_subscribed(d) for d in devs]
        for i in range(64):
            r = self.gw.http("POST", "/v1/notifications", {"tags": {"fleet": tag}, "payload": "n%02d" % i,
                                                           "ttlSeconds": 10}, token="svc")
            self.assertEqual((r.status, r.json.get("targets")), (202, 16), r)
        # 16 x 64 = 1,024 deliveries in flight, never acknowledged
        for raw in raws:
            self.assertEqual(len([next_command(raw) for _ in range(64)]), 64)
        offline = self.gw.create_device()
        mid = self.gw.send_command(offline["id"], "due-behind", ttlSeconds=12).json["messageId"]

        def letters():
            r = self.gw.get("/v1/devices/%s/deadletters" % offline["id"], token="svc")
            return r.json["deadLetters"] or None
        dl = wait_until(letters, 60, "the offline device's message dead-lettered at its expiry")
        self.assertEqual([(x["messageId"], x["reason"]) for x in dl], [(mid, "expired")])
        # the ones in flight stay until their devices are gone (they might still acknowledge)
        self.assertEqual(self.gw.device(devs[0]["id"]).json["queueDepth"], 64)


class DefaultDeliveryCountTest(FeedbackCase):
    """The default store.max_delivery_count (10), with a 1 s delivery lock so it takes seconds."""

    ENV = {"SACGATE_STORE_DELIVERY_LOCK": "1"}

    def test_dead_lettered_after_ten_attempts(self):
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw_subscribed(dev)
        mid = self.gw.send_command(did, "never acknowledged", ack="negative").json["messageId"]
        dups = []
        while True:   # we never PUBACK
            try:
                pid, dup, m, payload = next_command(raw, timeout=6)
            except AssertionError:
                break   # nothing for 6 s with a 1 s lock: no more attempts
            self.assertEqual((m, payload), (mid, b"never acknowledged"))
            dups.append(dup)
        self.assertEqual(dups, [False] + [True] * 9, "10 attempts, the first without DUP")
        dls = self.gw.get("/v1/devices/%s/deadletters" % did, token="svc").json["deadLetters"]
        self.assertEqual([(d["messageId"], d["reason"]) for d in dls], [(mid, "deliveryCountExceeded")])
        wait_until(lambda: [r["outcome"] for r in self.records_of(did)] == ["deliveryCountExceeded"], 20,
                   "deliveryCountExceeded feedback")
        self.assertEqual(self.gw.pending(did), [])


if __name__ == "__main__":
    sgtest.main()
