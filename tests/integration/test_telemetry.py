#!/usr/bin/python3
"""Telemetry: device -> gateway -> durable log -> GET /v1/telemetry. Both topologies."""

import base64
import sys
import json
import tempfile
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, RFC3339, mosquitto_pub, sas_token


class TelemetryTest(GatewayTest):

    def check_record(self, rec, device_id):
        self.assertEqual(rec["deviceId"], device_id, rec)
        self.assertIsInstance(rec["offset"], int, rec)
        self.assertRegex(rec["enqueuedAt"], RFC3339)
        self.assertIsInstance(rec["properties"], dict, rec)
        self.assertEqual(rec["properties"].get("iothub-connection-device-id"), device_id, rec)
        self.assertIn("iothub-connection-auth-method", rec["properties"], rec)
        return base64.b64decode(rec["payload"])

    def test_mosquitto_pub_qos1_properties_and_stamps(self):
        dev = self.gw.create_device()
        did = dev["id"]
        bag = ("a=1&b=two%20words&%24.ct=application%2Fjson&%24.ce=utf-8"
               "&iothub-connection-device-id=evil&iothub-connection-auth-method=forged")
        r = mosquitto_pub(self.gw, did, sas_token(did, dev["primary"]),
                          "devices/%s/messages/events/%s" % (did, bag), '{"temp": 21.5}', qos=1)
        self.assertEqual(r.returncode, 0, "mosquitto_pub failed: %r %r" % (r.stdout, r.stderr))
        recs = self.gw.wait_records(did, 1)
        self.assertEqual(len(recs), 1, recs)
        payload = self.check_record(recs[0], did)
        self.assertEqual(payload, b'{"temp": 21.5}')
        props = recs[0]["properties"]
        self.assertEqual(props.get("a"), "1", props)
        self.assertEqual(props.get("b"), "two words", props)
        self.assertEqual(props.get("$.ct"), "application/json", props)
        self.assertEqual(props.get("$.ce"), "utf-8", props)
        # the gateway's stamps win over what the device put in its bag
        self.assertEqual(props["iothub-connection-device-id"], did, props)
        self.assertNotEqual(props["iothub-connection-auth-method"], "forged", props)
        self.assertIn("sas", props["iothub-connection-auth-method"], props)

    def test_mosquitto_pub_binary_payload(self):
        dev = self.gw.create_device()
        did = dev["id"]
        data = bytes(range(256)) * 4
        with tempfile.NamedTemporaryFile(prefix="sgit-payload-") as f:
            f.write(data)
            f.flush()
            r = mosquitto_pub(self.gw, did, sas_token(did, dev["primary"]),
                              "devices/%s/messages/events/" % did, file=f.name, qos=1)
        self.assertEqual(r.returncode, 0, "mosquitto_pub failed: %r %r" % (r.stdout, r.stderr))
        recs = self.gw.wait_records(did, 1)
        self.assertEqual(self.check_record(recs[0], did), data)
        self.assertEqual(recs[0]["properties"].get("iothub-connection-device-id"), did)

    def test_paho_qos0(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        for i in range(20):
            c.publish(c.telemetry_topic({"seq": str(i)}), b"q0-%d" % i, qos=0)
        # a QoS 1 message after them; on one connection it is stored after the QoS 0 ones
        c.send(b"fence", {"seq": "fence"}, qos=1)
        recs = self.gw.wait_records(dev["id"], 21)
        payloads = [self.check_record(r, dev["id"]) for r in recs]
        self.assertEqual(payloads, [b"q0-%d" % i for i in range(20)] + [b"fence"])

    def test_paho_qos1_100_in_order(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        mids = [c.publish(c.telemetry_topic({"seq": str(i)}), b"m%03d" % i, qos=1) for i in range(100)]
        c.wait_acked(mids, timeout=60)
        self.assertTrue(c.is_connected(), "connection closed while publishing")
        recs = self.gw.wait_records(dev["id"], 100)
        self.assertEqual(len(recs), 100, "expected exactly 100 records, got %d" % len(recs))
        self.assertEqual([self.check_record(r, dev["id"]) for r in recs], [b"m%03d" % i for i in range(100)])
        self.assertEqual([r["properties"].get("seq") for r in recs], [str(i) for i in range(100)])
        offsets = [r["offset"] for r in recs]
        self.assertEqual(offsets, sorted(offsets), "offsets not increasing")
        self.assertEqual(len(set(offsets)), 100)

    def test_twenty_devices_at_once(self):
        devs = [self.gw.create_device() for _ in range(20)]
        clients = [self.device(d) for d in devs]
        errors = []

        def run(c):
            try:
                c.connect_ok()
                mids = [c.publish(c.telemetry_topic({"n": str(i)}), b"%s:%d" % (c.device_id.encode(), i), 1)
                        for i in range(5)]
                c.wait_acked(mids, timeout=60)
            except BaseException as e:  # reported below
                errors.append("%s: %r" % (c.device_id, e))

        threads = [threading.Thread(target=run, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertFalse(any(t.is_alive() for t in threads), "publisher threads still running")
        self.assertEqual(errors, [])
        for d in devs:
            recs = self.gw.wait_records(d["id"], 5)
            self.assertEqual([self.check_record(r, d["id"]) for r in recs],
                             [b"%s:%d" % (d["id"].encode(), i) for i in range(5)])

    def parked_reads(self, part):
        shard, = [x for x in self.gw.cluster_info()["shards"] if x["partition"] == part]
        return shard["parkedReads"]["atOnce"], shard["parkedReads"]["byReader"]

    def long_poll(self, path):
        """Starts GET path in a thread; returns (thread, box) with status, page and elapsed."""
        box = {}

        def poll():
            t0 = time.monotonic()
            try:
                r = self.gw.get(path, timeout=90)
                box["status"], box["page"] = r.status, r.json
            except BaseException as e:
                box["error"] = e
            box["elapsed"] = time.monotonic() - t0

        t = threading.Thread(target=poll)
        t.start()
        return t, box

    def test_long_poll_returns_when_a_record_arrives(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        c.send(b"first")
        (part, recs), = self.gw.records_of(dev["id"]).items()
        last = self.gw.read_partition(part)[-1]["offset"]
        at_once, by_reader = self.parked_reads(part)
        t, box = self.long_poll("/v1/telemetry?partition=%d&after=%d&max=100&wait=60" % (part, last))
        time.sleep(1.5)  # let the long poll park before the record exists
        self.assertTrue(t.is_alive(), "the long poll returned before any record arrived: %r" % box)
        # A read that can only wait (past the end of its log, no group) is parked by the shard's
        # network thread as it comes, without a reader looking first.
        self.assertEqual(self.parked_reads(part), (at_once + 1, by_reader))
        c.send(b"second")
        t.join(90)
        self.assertFalse(t.is_alive(), "long poll did not return")
        self.assertNotIn("error", box)
        recs = [r for r in box["page"]["records"] if r["deviceId"] == dev["id"]]
        self.assertTrue(recs, "long poll returned without the new record: %r" % box["page"])
        self.assertEqual(base64.b64decode(recs[0]["payload"]), b"second")
        # It returned because of the record, not because wait=60 ran out.
        self.assertLess(box["elapsed"], 55, "the long poll only returned at the end of its wait")

    def test_a_group_read_is_parked_by_a_reader(self):
        # A consumer group's read goes to a reader (its position is in the database), which parks
        # it when it finds nothing; it answers when a record arrives.
        dev = self.gw.create_device()
        c = self.connected(dev)
        c.send(b"p1")
        (part, recs), = self.gw.records_of(dev["id"]).items()
        # a group at the end of the partition
        g = "parked-%d" % time.monotonic_ns()
        end = self.gw.read_partition(part)[-1]["offset"]
        r = self.gw.http("POST", "/v1/telemetry/groups/%s/commit" % g, {"partition": part, "offset": end})
        self.assertEqual(r.status, 204, r)
        at_once, by_reader = self.parked_reads(part)
        t, box = self.long_poll("/v1/telemetry?group=%s&partition=%d&max=100&wait=60" % (g, part))
        time.sleep(1.5)
        self.assertTrue(t.is_alive(), "the group read answered before any record arrived: %r" % box)
        self.assertEqual(self.parked_reads(part), (at_once, by_reader + 1))
        c.send(b"p2")
        t.join(90)
        self.assertFalse(t.is_alive(), "the parked group read did not answer when a record arrived")
        self.assertEqual(box.get("status"), 200, box)
        got = [base64.b64decode(r["payload"]) for r in box["page"]["records"] if r["deviceId"] == dev["id"]]
        self.assertEqual(got[:1], [b"p2"])

        # and the counters are on /metrics
        r = self.gw.get("/metrics")
        self.assertEqual(r.status, 200, r)
        text = r.body.decode()
        self.assertRegex(text, r'sacgate_shard_parked_reads_total\{shard="[^"]+",by="net"\} \d+')
        self.assertRegex(text, r'sacgate_shard_parked_reads_total\{shard="[^"]+",by="reader"\} [1-9]')

    def test_long_poll_times_out_empty(self):
        part = self.gw.partitions()[-1]
        recs = self.gw.read_partition(part)
        after = recs[-1]["offset"] if recs else -1
        page = self.gw.telemetry(part, after=after, wait=1)
        self.assertEqual(page["records"], [], page)
        self.assertEqual(page["partition"], part)

    def test_a_read_with_min_waits_for_that_many_records(self):
        # Kafka's fetch.min / Event Hubs' batch receive: with min=3 the answer waits for three
        # records (one does not end it), within the wait
        dev = self.gw.create_device()
        c = self.connected(dev)
        c.send(b"m0")
        (part, recs), = self.gw.records_of(dev["id"]).items()
        last = recs[-1]["offset"]
        t, box = self.long_poll("/v1/telemetry?partition=%d&after=%d&max=100&min=3&wait=60" % (part, last))
        c.send(b"m1")
        time.sleep(1.5)   # the read is parked, and it has seen the first record
        self.assertTrue(t.is_alive(), "the read answered with fewer records than min: %r" % box)
        c.send(b"m2")
        c.send(b"m3")
        t.join(90)
        self.assertFalse(t.is_alive(), "the read did not answer once three records were there")
        self.assertNotIn("error", box)
        self.assertEqual(box["status"], 200, box)
        got = [base64.b64decode(r["payload"]) for r in box["page"]["records"] if r["deviceId"] == dev["id"]]
        self.assertEqual(got[:3], [b"m1", b"m2", b"m3"])
        self.assertLess(box["elapsed"], 55, "the read only answered at the end of its wait")

    def test_a_read_with_min_answers_what_is_there_when_its_wait_ends(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        c.send(b"w1")
        (part, recs), = self.gw.records_of(dev["id"]).items()
        before = recs[-1]["offset"] - 1
        # a wait in milliseconds: half a second, then what is there (one record, not fifty)
        r = self.gw.get("/v1/telemetry?partition=%d&after=%d&max=100&min=50&wait=0.5" % (part, before))
        self.assertEqual(r.status, 200, r)
        got = [base64.b64decode(x["payload"]) for x in r.json["records"] if x["deviceId"] == dev["id"]]
        self.assertEqual(got, [b"w1"])
        r = self.gw.get("/v1/telemetry?partition=%d&after=%d&max=100&wait=0.25" % (part, r.json["next"]))
        self.assertEqual((r.status, r.json["records"]), (200, []), r)

    def test_bad_min_and_wait_are_refused(self):
        for q in ("min=0", "min=1001", "min=abc", "min=", "max=10&min=20", "wait=0.0001", "wait=61", "wait=60.001",
                  "wait=1e3", "wait=inf", "wait=nan", "wait=-1", "wait=.5", "wait=1.", "wait=0x10", "wait= 1"):
            r = self.gw.get("/v1/telemetry?partition=0&" + q.replace(" ", "%20"))
            self.assertError(r, 400, "InvalidQuery")
        for q in ("wait=0", "wait=0.001", "wait=0.5&min=1000&max=1000"):
            r = self.gw.get("/v1/telemetry?partition=0&after=-1&" + q)
            self.assertEqual(r.status, 200, "%s: %r" % (q, r))

    def test_partitions_follow_shards(self):
        info = self.gw.cluster_info()
        shards = info["shards"]
        expected = 2 if self.is_cluster else 1
        self.assertEqual(len(shards), expected, info)
        self.assertEqual(sorted(s["partition"] for s in shards), list(range(expected)), info)
        self.assertEqual(info["ring"]["partitions"], expected, info)
        # Find each shard's devices by the device counts /v1/cluster reports, then check that
        # each device's telemetry lands in its shard's partition and nowhere else.
        owners = {}
        for _ in range(64):
            before = {s["name"]: s["devices"] for s in self.gw.cluster_info()["shards"]}
            dev = self.gw.create_device()
            after = {s["name"]: (s["devices"], s["partition"]) for s in self.gw.cluster_info()["shards"]}
            grown = [n for n in after if after[n][0] == before.get(n, 0) + 1]
            self.assertEqual(len(grown), 1, "device count grew on %r after one create" % (grown,))
            owners.setdefault(after[grown[0]][1], dev)
            if len(owners) == expected:
                break
        self.assertEqual(len(owners), expected, "could not place a device on every shard: %r" % owners)
        for part, dev in owners.items():
            c = self.connected(dev)
            c.send(b"to partition %d" % part)
            c.close()
            self.gw.wait_records(dev["id"], 1)
            where = self.gw.records_of(dev["id"])
            self.assertEqual(list(where), [part], "records of %s (shard partition %d) are in %r"
                             % (dev["id"], part, where))

    def test_percent_encoded_stamp_keys_do_not_spoof(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        # %2D is '-': these keys decode to the stamped names
        c.publish("devices/%s/messages/events/iothub%%2Dconnection%%2Ddevice%%2Did=evil"
                  "&iothub-connection-auth-method%%3D=x&iothub%%2Dconnection%%2Dauth%%2Dmethod=forged" % dev["id"],
                  b"sneaky", 1)
        c.send(b"fence")
        recs = self.gw.wait_records(dev["id"], 2)
        self.assertEqual([base64.b64decode(r["payload"]) for r in recs], [b"sneaky", b"fence"])
        for r in recs:
            self.assertEqual(r["properties"].get("iothub-connection-device-id"), dev["id"], r)
            self.assertNotEqual(r["properties"].get("iothub-connection-auth-method"), "forged", r)
            self.assertNotIn("evil", json.dumps(r["properties"]), r)

    def test_literal_dollar_system_properties(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        c.publish("devices/%s/messages/events/$.ct=text%%2Fplain&$.mid=m-1&x=1" % dev["id"], b"dollar", 1)
        c.send(b"fence")
        recs = self.gw.wait_records(dev["id"], 2)
        props = recs[0]["properties"]
        self.assertEqual(base64.b64decode(recs[0]["payload"]), b"dollar")
        self.assertEqual((props.get("$.ct"), props.get("$.mid"), props.get("x")), ("text/plain", "m-1", "1"), props)

    def test_empty_payload_and_empty_bag(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        c.send(b"")
        c.publish("devices/%s/messages/events/" % dev["id"], b"no bag", 1)
        c.send(b"x", {"only": ""})
        recs = self.gw.wait_records(dev["id"], 3)
        self.assertEqual([self.check_record(r, dev["id"]) for r in recs], [b"", b"no bag", b"x"])
        self.assertEqual(recs[2]["properties"].get("only"), "", recs[2])

    def test_above_rate_limit_nothing_lost(self):
        """300 QoS 1 messages at once (3 s worth of the default 100 msg/s): all acknowledged and stored."""
        dev = self.gw.create_device()
        c = self.connected(dev)
        mids = [c.publish(c.telemetry_topic(), b"r%03d" % i, 1) for i in range(300)]
        c.wait_acked(mids, timeout=90)
        recs = self.gw.wait_records(dev["id"], 300)
        self.assertEqual([self.check_record(r, dev["id"]) for r in recs], [b"r%03d" % i for i in range(300)])

    def test_paging_with_max_and_after(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        mids = [c.publish(c.telemetry_topic(), b"p%02d" % i, 1) for i in range(40)]
        c.wait_acked(mids)
        (part, _), = self.gw.records_of(dev["id"]).items()
        seen, after = [], -1
        for _ in range(1000):
            page = self.gw.telemetry(part, after=after, max=7)
            self.assertLessEqual(len(page["records"]), 7, page)
            if not page["records"]:
                break
            offs = [r["offset"] for r in page["records"]]
            self.assertTrue(all(o > after for o in offs), "records at or before after=%d: %r" % (after, offs))
            self.assertEqual(page["next"], offs[-1], "next should continue after the last record: %r" % page)
            seen += page["records"]
            after = page["next"]
        offsets = [r["offset"] for r in seen]
        self.assertEqual(len(offsets), len(set(offsets)), "a record came twice while paging")
        mine = [base64.b64decode(r["payload"]) for r in seen if r["deviceId"] == dev["id"]]
        self.assertEqual(mine, [b"p%02d" % i for i in range(40)])

    def test_unknown_partition_and_bad_query(self):
        r = self.gw.get("/v1/telemetry?partition=99")
        self.assertIn(r.status, (400, 404), r)
        self.assertError(r, r.status)
        r = self.gw.get("/v1/telemetry?partition=0&max=abc")
        self.assertError(r, 400)


class LargeTelemetryTest(GatewayTest):
    """Records near the 256 KiB limit (own gateway: a partition that cannot be read would break
    every other test reading it)."""

    def test_large_records_are_readable(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        payloads = [bytes([i]) * (200 * 1024) for i in range(4)]
        for p in payloads:
            c.send(p, timeout=60)
        for part in self.gw.partitions():
            r = self.gw.get("/v1/telemetry?partition=%d" % part)
            self.assertEqual(r.status, 200, "GET /v1/telemetry?partition=%d with 4 x 200 KiB records stored: %r"
                             % (part, r))
        recs = self.gw.wait_records(dev["id"], 4)
        self.assertEqual([base64.b64decode(r["payload"]) for r in recs], payloads)

    def test_a_page_stops_at_its_size_cap(self):
        """24 records of 200 KiB (267 KB each as base64 in JSON): a read of up to 1,000 stops
        before its answer passes 4 MiB, and the next page goes on from where it stopped."""
        dev = self.gw.create_device()
        c = self.connected(dev)
        payloads = [bytes([i]) * (200 * 1024) for i in range(24)]
        c.wait_acked([c.publish(c.telemetry_topic(), p, 1) for p in payloads], 120)
        (part, recs), = self.gw.records_of(dev["id"]).items()
        after, got, sizes = recs[0]["offset"] - 1, [], []
        while len(got) < 24:
            r = self.gw.get("/v1/telemetry?partition=%d&after=%d&max=1000" % (part, after), timeout=60)
            self.assertEqual(r.status, 200, r)
            page = r.json
            self.assertTrue(page["records"], page["next"])
            sizes.append((len(page["records"]), len(r.body)))
            got += [base64.b64decode(x["payload"]) for x in page["records"] if x["deviceId"] == dev["id"]]
            after = page["next"]
        self.assertEqual(got, payloads)
        self.assertGreater(len(sizes), 1, sizes)
        self.assertTrue(all(b <= 4 * 1024 * 1024 + 64 * 1024 for _, b in sizes), sizes)

    def test_properties_that_grow_when_escaped_are_readable(self):
        # 21,000 control characters a record: 63 KB on the wire, 126 KB as JSON (\u0001)
        dev = self.gw.create_device()
        c = self.connected(dev)
        ctl = "\x01" * 21000
        mids = [c.publish(c.telemetry_topic({"k": ctl}), b"%d" % i, 1) for i in range(100)]
        c.wait_acked(mids, 120)
        for part in self.gw.partitions():
            r = self.gw.get("/v1/telemetry?partition=%d" % part)   # the default max, 100
            self.assertEqual(r.status, 200, "GET /v1/telemetry?partition=%d: %r" % (part, r))
        recs = self.gw.wait_records(dev["id"], 100)
        self.assertEqual([base64.b64decode(r["payload"]) for r in recs], [b"%d" % i for i in range(100)])
        self.assertTrue(all(r["properties"]["k"] == ctl for r in recs))

if __name__ == "__main__":
    sgtest.main()
