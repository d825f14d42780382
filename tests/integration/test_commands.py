#!/usr/bin/python3
"""Cloud-to-device messages: POST /v1/devices/{id}/messages -> durable queue -> QoS 1 PUBLISH.
Both topologies."""

import base64
import sys
import struct
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import (GatewayTest, PUBLISH, RFC3339, mosquitto_sub, parse_bag, pkt_puback, read_publish, sas_token,
                    wait_until)


class CommandTest(GatewayTest):

    def devicebound_prefix(self, did):
        return "devices/%s/messages/devicebound/" % did

    def check_command(self, cmd, did, message_id, payload, props=None):
        self.assertEqual(cmd["props"].get("$.mid"), message_id, cmd)
        self.assertEqual(cmd["props"].get("$.to"), "/devices/%s/messages/devicebound" % did, cmd)
        self.assertEqual(cmd["payload"], payload, cmd)
        for k, v in (props or {}).items():
            self.assertEqual(cmd["props"].get(k), v, "property %r: %r" % (k, cmd))

    def wait_queue_empty(self, did, timeout=30):
        wait_until(lambda: self.gw.pending(did) == [], timeout, "the queue of %s to drain" % did)

    # ---------------------------------------------------------------- delivery

    def test_offline_command_mosquitto_sub(self):
        dev = self.gw.create_device()
        did = dev["id"]
        props = {"color": "red", "key with space": "v&w=x", "unicode": "caf\u00e9"}
        r = self.gw.send_command(did, "open valve", properties=props)
        acc = r.json
        self.assertIsInstance(acc.get("messageId"), str, acc)
        self.assertRegex(acc.get("expiresAt", ""), RFC3339)
        pend = self.gw.pending(did)
        self.assertEqual([m["messageId"] for m in pend], [acc["messageId"]])
        self.assertEqual(base64.b64decode(pend[0]["payload"]), b"open valve")

        res, msgs = mosquitto_sub(self.gw, did, sas_token(did, dev["primary"]), count=1, timeout=20)
        self.assertEqual(res.returncode, 0, "mosquitto_sub: rc %d, %r" % (res.returncode, res.stderr))
        self.assertEqual(len(msgs), 1, res.stdout)
        topic, payload = msgs[0]
        prefix = self.devicebound_prefix(did)
        self.assertTrue(topic.startswith(prefix), topic)
        cmd = {"props": parse_bag(topic[len(prefix):]), "payload": payload}
        self.check_command(cmd, did, acc["messageId"], b"open valve", props)
        self.assertIn("$.exp", cmd["props"], cmd)
        # mosquitto_sub acknowledged it: the queue is empty
        self.wait_queue_empty(did)

    def test_offline_command_paho_binary(self):
        dev = self.gw.create_device()
        did = dev["id"]
        data = bytes(range(256))
        acc = self.gw.send_command(did, base64.b64encode(data).decode(), payloadEncoding="base64",
                                   properties={"k": "v"}).json
        c = self.connected(dev, subscribe=True)
        cmds = c.wait_commands(1)
        self.check_command(cmds[0], did, acc["messageId"], data, {"k": "v"})
        self.assertEqual(cmds[0]["qos"], 1)
        self.wait_queue_empty(did)
        time.sleep(1)
        self.assertEqual(len(c.commands()), 1, "delivered more than once although acknowledged")

    def test_live_command(self):
        dev = self.gw.create_device()
        c = self.connected(dev, subscribe=True)
        acc = self.gw.send_command(dev["id"], "live one", properties={"a": "b"}).json
        cmds = c.wait_commands(1)
        self.check_command(cmds[0], dev["id"], acc["messageId"], b"live one", {"a": "b"})
        self.wait_queue_empty(dev["id"])

    def test_order_of_ten_commands(self):
        dev = self.gw.create_device()
        ids = [self.gw.send_command(dev["id"], "cmd-%d" % i).json["messageId"] for i in range(10)]
        self.assertEqual([m["messageId"] for m in self.gw.pending(dev["id"])], ids)
        c = self.connected(dev, subscribe=True)
        cmds = c.wait_commands(10)
        self.assertEqual([x["props"]["$.mid"] for x in cmds[:10]], ids)
        self.assertEqual([x["payload"] for x in cmds[:10]], [b"cmd-%d" % i for i in range(10)])
        # and ten more while connected
        ids2 = [self.gw.send_command(dev["id"], "live-%d" % i).json["messageId"] for i in range(10)]
        cmds = c.wait_commands(20)
        self.assertEqual([x["props"]["$.mid"] for x in cmds[10:20]], ids2)
        self.wait_queue_empty(dev["id"])

    def test_unacknowledged_command_is_redelivered(self):
        dev = self.gw.create_device()
        did = dev["id"]
        acc = self.gw.send_command(did, "at least once").json
        raw = self.raw_subscribed(dev)
        p = raw.expect(PUBLISH)
        self.assertEqual((p[1] >> 1) & 3, 1, "command not sent with QoS 1")
        raw.close()  # no PUBACK
        self.assertEqual([m["messageId"] for m in self.gw.pending(did)], [acc["messageId"]],
                         "an unacknowledged command left the queue")
        c = self.connected(dev, subscribe=True)
        cmds = c.wait_commands(1)
        self.check_command(cmds[0], did, acc["messageId"], b"at least once")
        self.wait_queue_empty(did)

    def test_expired_command_not_delivered(self):
        dev = self.gw.create_device()
        did = dev["id"]
        self.gw.send_command(did, "short-lived", ttlSeconds=1)
        keep = self.gw.send_command(did, "long-lived").json
        time.sleep(3)
        c = self.connected(dev, subscribe=True)
        cmds = c.wait_commands(1)
        time.sleep(1.5)
        cmds = c.commands()
        self.assertEqual([x["payload"] for x in cmds], [b"long-lived"], "an expired message was delivered")
        self.assertEqual(cmds[0]["props"]["$.mid"], keep["messageId"])
        self.wait_queue_empty(did)

    def test_deleted_device_queue_is_not_resurrected(self):
        dev = self.gw.create_device()
        did = dev["id"]
        for i in range(3):
            self.gw.send_command(did, "old-%d" % i)
        self.assertEqual(self.gw.http("DELETE", "/v1/devices/" + did).status, 204)
        dev = self.gw.create_device(did)
        self.assertEqual(self.gw.pending(did), [], "the old queue came back with the re-created device")
        self.assertEqual(self.gw.device(did).json.get("queueDepth"), 0)
        fresh = self.gw.send_command(did, "new").json
        c = self.connected(dev, subscribe=True)
        c.wait_commands(1)
        time.sleep(1)
        self.assertEqual([x["props"]["$.mid"] for x in c.commands()], [fresh["messageId"]])

    def test_in_flight_window(self):
        """SPEC 5: per-device in-flight window (default 10): without PUBACKs at most 10 are sent."""
        dev = self.gw.create_device()
        did = dev["id"]
        ids = [self.gw.send_command(did, "w-%d" % i).json["messageId"] for i in range(15)]
        raw = self.raw_subscribed(dev)
        got = [raw.expect(PUBLISH, 20) for _ in range(10)]
        # no 11th while none is acknowledged
        try:
            p = raw.read_packet(2.5)
        except AssertionError:
            p = "nothing"
        self.assertEqual(p, "nothing", "an 11th message was sent with 10 unacknowledged (window 10): %r" % (p,))
        # acknowledge them: the other five follow
        for p in got:
            tlen = struct.unpack("!H", p[2][:2])[0]
            raw.send(pkt_puback(struct.unpack("!H", p[2][2 + tlen:4 + tlen])[0]))
        more = []
        for _ in range(5):
            p = raw.expect(PUBLISH, 20)
            tlen = struct.unpack("!H", p[2][:2])[0]
            more.append(p)
            raw.send(pkt_puback(struct.unpack("!H", p[2][2 + tlen:4 + tlen])[0]))
        mids = []
        for p in got + more:
            tlen = struct.unpack("!H", p[2][:2])[0]
            topic = p[2][2:2 + tlen].decode()
            mids.append(parse_bag(topic.split("/devicebound/", 1)[1])["$.mid"])
        self.assertEqual(mids, ids)
        self.wait_queue_empty(did)

    def test_qos0_subscriber_that_reads_slowly_loses_nothing(self):
        """QoS 0 deliveries count against the window until they are on the socket: a device that
        does not read is neither flooded past its output buffer nor loses what was queued."""
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw_subscribed(dev, qos=0, rcvbuf=4096)
        body = "x" * 60000
        sent = []
        deadline = time.monotonic() + 120
        while len(sent) < 100 and time.monotonic() < deadline:
            r = self.gw.send_command(did, "%02d" % len(sent) + body, expect=None)
            if r.status == 201:
                sent.append(len(sent))
            else:
                self.assertEqual(r.status, 429, r)
                self.assertFalse(raw.eof, "the gateway closed the slow QoS 0 subscriber")
                break   # the queue is full: nothing more goes out until the device reads
        self.assertGreaterEqual(len(sent), 17, "the queue (1 MiB) takes 17 messages of 60 KB")
        time.sleep(2)
        self.assertGreater(len(self.gw.pending(did)), 0, "messages left the queue without being written")
        got = []
        while len(got) < len(sent):
            pid, dup, payload = read_publish(raw, timeout=30)
            got.append(int(payload[:2]))
            r = None
            while len(sent) < 100 and (r is None or r.status == 201):   # top the queue up meanwhile
                r = self.gw.send_command(did, "%02d" % len(sent) + body, expect=None)
                if r.status == 201:
                    sent.append(len(sent))
        self.assertEqual(got, sent, "every command, in order, on a connection that stayed open")
        wait_until(lambda: self.gw.pending(did) == [], 30, "the queue to drain")

    def test_unsubscribe_stops_delivery(self):
        dev = self.gw.create_device()
        did = dev["id"]
        c = self.connected(dev, subscribe=True)
        c.unsubscribe()
        m = self.gw.send_command(did, "while unsubscribed").json
        time.sleep(2)
        self.assertEqual(c.commands(), [], "delivered to a device that unsubscribed")
        self.assertTrue(c.is_connected())
        c.subscribe_commands()
        self.assertEqual(c.wait_commands(1)[0]["props"]["$.mid"], m["messageId"])

    def test_not_delivered_before_subscribe(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        m = self.gw.send_command(dev["id"], "waits for the subscription").json
        time.sleep(1.5)
        self.assertEqual(c.messages, [], "a command was published before the device subscribed")
        c.subscribe_commands()
        self.assertEqual(c.wait_commands(1)[0]["props"]["$.mid"], m["messageId"])

    def test_partial_acks_then_reconnect(self):
        """20 queued; 10 sent, 5 acknowledged, connection dropped: the other 15 come again in order."""
        dev = self.gw.create_device()
        did = dev["id"]
        ids = [self.gw.send_command(did, "p-%d" % i).json["messageId"] for i in range(20)]
        raw = self.raw_subscribed(dev)
        pubs = [raw.expect(PUBLISH, 20) for _ in range(10)]
        for p in pubs[:5]:
            tlen = struct.unpack("!H", p[2][:2])[0]
            raw.send(pkt_puback(struct.unpack("!H", p[2][2 + tlen:4 + tlen])[0]))
        wait_until(lambda: len(self.gw.pending(did)) == 15, 20, "5 acknowledged messages to leave the queue")
        raw.close()
        self.assertEqual([m["messageId"] for m in self.gw.pending(did)], ids[5:])
        c = self.connected(dev, subscribe=True)
        cmds = c.wait_commands(15)
        self.assertEqual([x["props"]["$.mid"] for x in cmds], ids[5:])
        self.wait_queue_empty(did)

    def test_delete_racing_enqueues_leaves_nothing_behind(self):
        """Messages accepted just before a DELETE (possibly in the same group commit) are
        dead-lettered with the device: a device created again under the id starts empty."""
        for round_ in range(5):
            dev = self.gw.create_device()
            did = dev["id"]
            statuses = []
            lock = threading.Lock()

            def post(i):
                r = self.gw.send_command(did, "r%d-%d" % (round_, i), expect=None)
                with lock:
                    statuses.append(r.status)

            threads = [threading.Thread(target=post, args=(i,)) for i in range(40)]
            for t in threads[:20]:
                t.start()
            deleter = threading.Thread(target=lambda: statuses.append(
                ("delete", self.gw.http("DELETE", "/v1/devices/" + did).status)))
            deleter.start()
            for t in threads[20:]:
                t.start()
            for t in threads + [deleter]:
                t.join(60)
            self.assertIn(("delete", 204), statuses)
            self.assertTrue(set(x for x in statuses if not isinstance(x, tuple)) <= {201, 404, 429}, statuses)
            self.gw.create_device(did, primary=dev["primary"])
            self.assertEqual(self.gw.pending(did), [], "round %d: messages of the deleted device came back" % round_)
            self.assertEqual(self.gw.device(did).json["queueDepth"], 0, "round %d" % round_)
            self.gw.http("DELETE", "/v1/devices/" + did)

    def test_purge(self):
        dev = self.gw.create_device()
        did = dev["id"]
        for i in range(5):
            self.gw.send_command(did, "old-%d" % i)
        raw = self.raw_subscribed(dev)
        read_publish(raw)   # one of them is in flight, unacknowledged
        r = self.gw.http("DELETE", "/v1/devices/%s/messages" % did)
        self.assertEqual((r.status, r.json), (200, {"purged": 5}), r)
        self.assertEqual(self.gw.pending(did), [])
        self.assertEqual(self.gw.device(did).json["queueDepth"], 0)
        self.gw.send_command(did, "after the purge")
        seen = []
        while True:   # the old ones were on the wire before the purge; none comes again
            pid, dup, payload = read_publish(raw)
            self.assertFalse(dup, "purged message %r delivered again" % payload)
            seen.append(payload)
            if payload == b"after the purge":
                raw.send(pkt_puback(pid))
                break
        self.assertEqual(seen, [b"old-%d" % i for i in range(1, 5)] + [b"after the purge"])
        wait_until(lambda: self.gw.pending(did) == [], 20, "the new message to be completed")
        self.assertEqual(self.gw.http("DELETE", "/v1/devices/%s/messages" % did).json, {"purged": 0})
        self.assertError(self.gw.http("DELETE", "/v1/devices/%s/messages" % sgtest.uid("nobody")), 404)
        self.assertError(self.gw.http("DELETE", "/v1/devices/%s/messages" % did, token=None), 401)

    def test_rapid_reconnects_keep_live_delivery(self):
        """A session ending must not clobber the session that replaced it."""
        dev = self.gw.create_device()
        ports = self.gw.mqtt_ports
        c = None
        for i in range(10):
            c = self.connected(dev, port=ports[i % len(ports)], subscribe=True)
            if i < 9:
                c.close()
        time.sleep(1)
        self.assertTrue(c.is_connected())
        m = self.gw.send_command(dev["id"], "live after reconnects").json
        self.assertEqual(c.wait_commands(1, timeout=20)[0]["props"]["$.mid"], m["messageId"])
        entry = self.gw.device(dev["id"]).json
        self.assertTrue(entry["connection"]["connected"], entry)

    def test_concurrent_posts_respect_the_limit(self):
        dev = self.gw.create_device()
        did = dev["id"]
        results = []
        lock = threading.Lock()

        def post(i):
            r = self.gw.send_command(did, "c-%d" % i, expect=None)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(70)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(len(results), 70)
        ok = [r.json["messageId"] for r in results if r.status == 201]
        full = [r for r in results if r.status == 429]
        self.assertEqual(len(ok) + len(full), 70, "unexpected answers: %r" % [r for r in results if r.status not in (201, 429)])
        self.assertEqual(len(ok), 50, "%d accepted by 70 concurrent POSTs; the limit is 50" % len(ok))
        self.assertEqual(sorted(m["messageId"] for m in self.gw.pending(did)), sorted(ok))

    # ---------------------------------------------------------------- limits

    def test_message_size_boundary(self):
        dev = self.gw.create_device()
        data = bytes(i % 251 for i in range(64 * 1024))
        self.gw.send_command(dev["id"], base64.b64encode(data).decode(), payloadEncoding="base64")
        c = self.connected(dev, subscribe=True)
        self.assertEqual(c.wait_commands(1)[0]["payload"], data)

    def test_queue_byte_limit(self):
        """SPEC 5: at most 1 MiB queued per device; the message that does not fit is refused."""
        dev = self.gw.create_device()
        did = dev["id"]
        chunks = [bytes([i]) * 65536 for i in range(20)]
        accepted, refused = [], None
        for data in chunks:
            r = self.gw.send_command(did, base64.b64encode(data).decode(), payloadEncoding="base64", expect=None)
            if r.status == 201:
                accepted.append(r.json["messageId"])
            else:
                refused = r
                break
        self.assertIsNotNone(refused, "20 x 64 KiB = 1.25 MiB all accepted; limit is 1 MiB")
        self.assertError(refused, 429, "DeviceQueueFull")
        self.assertIn("retry-after", refused.headers)
        self.assertLessEqual(len(accepted) * 65536, 1024 * 1024)
        self.assertGreaterEqual(len(accepted), 15)
        self.assertEqual(self.gw.device(did).json.get("queueDepth"), len(accepted))
        # every accepted message reaches the device, intact and in order
        c = self.connected(dev, subscribe=True)
        cmds = c.wait_commands(len(accepted), timeout=60)
        self.assertEqual([x["props"]["$.mid"] for x in cmds], accepted)
        self.assertEqual([x["payload"] for x in cmds], chunks[:len(accepted)])
        # (queueDepth, not GET messages: listing a big queue is a separate test)
        wait_until(lambda: self.gw.device(did).json.get("queueDepth") == 0, 30, "queueDepth of %s to be 0" % did)

    def test_listing_a_large_queue(self):
        """GET /v1/devices/{id}/messages on a queue well inside the limits (8 x 64 KiB = 512 KiB)."""
        dev = self.gw.create_device()
        did = dev["id"]
        ids = [self.gw.send_command(did, base64.b64encode(bytes([i]) * 65536).decode(),
                                    payloadEncoding="base64").json["messageId"] for i in range(8)]
        r = self.gw.get("/v1/devices/%s/messages" % did)
        self.assertEqual(r.status, 200, "GET messages of a queue of 8 x 64 KiB: %r" % r)
        msgs = r.json["messages"]
        self.assertEqual([m["messageId"] for m in msgs], ids)
        self.assertEqual([base64.b64decode(m["payload"]) for m in msgs], [bytes([i]) * 65536 for i in range(8)])

    def test_byte_limit_counts_everything_stored(self):
        """SPEC 5 / issue 9: maxQueuedBytes counts what a message stores (payload, properties,
        id, header), not only its payload; completing messages gives the room back."""
        dev = self.gw.create_device(limits={"maxQueuedBytes": 8192})
        did = dev["id"]
        props = {"k": "v" * 2000}   # ~2 KB stored per message of a 1-byte payload

        def fill():
            ids = []
            while len(ids) < 50:
                r = self.gw.send_command(did, "x", properties=props, expect=None)
                if r.status != 201:
                    self.assertError(r, 429, "DeviceQueueFull")
                    self.assertIn("retry-after", r.headers)
                    return ids
                ids.append(r.json["messageId"])
            self.fail("50 messages of 2 KB accepted under a limit of 8 KiB: only payload bytes counted")
        ids = fill()
        self.assertEqual(len(ids), 3, "8 KiB holds three messages of 2 KB and change")
        qb = self.gw.device(did).json["queuedBytes"]
        self.assertTrue(3 * 2002 < qb <= 8192, "queuedBytes %d: the three records as stored" % qb)
        c = self.connected(dev, subscribe=True)
        self.assertEqual([x["props"]["$.mid"] for x in c.wait_commands(3)], ids)
        self.wait_queue_empty(did)
        c.close()
        wait_until(lambda: not self.gw.device(did).json["connection"]["connected"], 20, "the session to end")
        self.assertEqual(len(fill()), 3, "the bytes of completed messages were not given back")

    def test_per_device_limit(self):
        dev = self.gw.create_device(limits={"maxQueuedMessages": 3})
        did = dev["id"]
        self.assertEqual(self.gw.device(did).json.get("limits", {}).get("maxQueuedMessages"), 3)
        ids = [self.gw.send_command(did, "l-%d" % i).json["messageId"] for i in range(3)]
        r = self.gw.send_command(did, "fourth", expect=None)
        body = self.assertError(r, 429, "DeviceQueueFull")
        self.assertEqual(body.get("queued"), 3, body)
        self.assertEqual(body.get("limit"), 3, body)
        self.assertIn("retry-after", r.headers)
        self.assertEqual([m["messageId"] for m in self.gw.pending(did)], ids)

    # ---------------------------------------------------------------- errors

    def test_unknown_device_404(self):
        r = self.gw.send_command(sgtest.uid("nobody"), "x", expect=None)
        self.assertError(r, 404)

    def test_disabled_device_403(self):
        dev = self.gw.create_device()
        r = self.gw.update_device(dev, status="disabled")
        self.assertEqual(r.status, 200, r)
        r = self.gw.send_command(dev["id"], "x", expect=None)
        self.assertError(r, 403)
        self.assertEqual(self.gw.pending(dev["id"]), [])

    def test_bad_json_400_queue_unchanged(self):
        dev = self.gw.create_device()
        did = dev["id"]
        ids = [self.gw.send_command(did, "keep").json["messageId"]]
        path = "/v1/devices/%s/messages" % urllib.parse.quote(did, safe="")
        for bad in (b'{"payload": "x"', b"not json at all", b"[1, 2]", b'"str"'):
            r = self.gw.http("POST", path, bad, headers={"Content-Type": "application/json"})
            self.assertError(r, 400, "InvalidJson")
        r = self.gw.http("POST", path, b"")
        self.assertError(r, 400)
        self.assertEqual([m["messageId"] for m in self.gw.pending(did)], ids)

    def test_unknown_member_400(self):
        dev = self.gw.create_device()
        r = self.gw.send_command(dev["id"], "x", bogus=1, expect=None)
        self.assertError(r, 400)
        self.assertEqual(self.gw.pending(dev["id"]), [])

    def test_bad_field_values_400(self):
        dev = self.gw.create_device()
        did = dev["id"]
        for fields in ({"ttlSeconds": 0}, {"ttlSeconds": -5}, {"ttlSeconds": 172801},
                       {"ttlSeconds": "60"}, {"payloadEncoding": "hex"}, {"ack": "sometimes"},
                       {"payloadEncoding": "base64", "payload": "***not base64***"},
                       {"properties": {"k": 1}}):
            body = {"payload": "x"}
            body.update(fields)
            r = self.gw.http("POST", "/v1/devices/%s/messages" % did, body)
            self.assertError(r, 400)
        self.assertEqual(self.gw.pending(did), [])
        # the bounds themselves are fine
        acc = self.gw.send_command(did, "max ttl", ttlSeconds=172800).json
        self.assertRegex(acc["expiresAt"], RFC3339)
        self.gw.send_command(did, "min ttl", ttlSeconds=1)

    def test_message_over_64k_rejected(self):
        dev = self.gw.create_device()
        r = self.gw.send_command(dev["id"], "x" * (64 * 1024 + 1), expect=None)
        self.assertIn(r.status, (400, 413), r)
        self.assertError(r, r.status)
        self.assertEqual(self.gw.pending(dev["id"]), [])


if __name__ == "__main__":
    sgtest.main()
