#!/usr/bin/python3
"""Retention and consumer groups (both topologies).

Retention: telemetry, feedback and dead letters older than their retention are dropped by the
shard's retention thread while the rest stays readable; the oldest retained offset is in
GET /v1/cluster, in every read and in /metrics; a read from before it starts at it; a restart
neither serves what was dropped nor numbers an offset twice (also when everything was dropped).
By size: a partition over store.telemetry_max_bytes drops its oldest records.

Consumer groups: GET /v1/telemetry?group=G reads from G's committed position (a new group from
the oldest retained record), POST /v1/telemetry/groups/G/commit stores it durably (a restarted
shard resumes it), groups are independent, a long-poll by group wakes on new data, and bad
commits are refused with clear errors."""

import base64
import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, wait_until  # noqa: E402

RETENTION = 4      # seconds: telemetry, feedback and dead letters
INTERVAL = 1       # the retention thread's look


restart_shard = sgtest.restart_shard


def shard_of(gw, partition):
    return next(s for s in gw.cluster_info()["shards"] if s["partition"] == partition)


def publish(test, dev, n, tag):
    c = test.connected(dev)
    for i in range(n):
        c.send(("%s-%d" % (tag, i)).encode())
    c.close()


def new_device_with_records(test, n, tag):
    """A new device that published n records: (device, its partition, its records)."""
    dev = test.gw.create_device()
    publish(test, dev, n, tag)
    (partition, recs), = test.gw.records_of(dev["id"]).items()
    test.assertEqual(len(recs), n)
    return dev, partition, recs


class RetentionTest(GatewayTest):
    ENV = {"SACGATE_STORE_TELEMETRY_RETENTION": str(RETENTION),
           "SACGATE_STORE_FEEDBACK_RETENTION": str(RETENTION),
           "SACGATE_STORE_DEADLETTER_RETENTION": str(RETENTION),
           "SACGATE_STORE_RETENTION_INTERVAL": str(INTERVAL)}

    def test_old_telemetry_is_dropped_the_rest_stays_readable_and_offsets_go_on_after_restarts(self):
        gw = self.gw
        dev, partition, old = new_device_with_records(self, 20, "old")
        did = dev["id"]
        last_old = old[-1]["offset"]
        shard = shard_of(gw, partition)
        self.assertEqual(shard["retention"]["telemetry"]["seconds"], RETENTION, shard)
        # the old ones age out; newer ones come in meanwhile
        time.sleep(RETENTION + 0.5)
        t_new = time.time()
        publish(self, dev, 5, "new")
        wait_until(lambda: shard_of(gw, partition)["telemetryOldest"] > last_old, 4 * INTERVAL + 10,
                   "telemetryOldest past offset %d" % last_old)
        page = gw.telemetry(partition, after=-1)
        left = [r for r in page["records"] if r["deviceId"] == did]
        self.assertTrue(time.time() - t_new < RETENTION, "too slow to tell (the new records aged too)")
        self.assertEqual([base64.b64decode(r["payload"]) for r in left],
                         [("new-%d" % i).encode() for i in range(5)], left)
        self.assertGreater(page["oldest"], last_old, page)
        self.assertTrue(all(r["offset"] >= page["oldest"] for r in page["records"]), page)
        # a read from inside the dropped range starts at the oldest retained record
        from_dropped = gw.telemetry(partition, after=old[3]["offset"])
        self.assertEqual(from_dropped["records"][0]["offset"], page["records"][0]["offset"], from_dropped)
        metrics = gw.get("/metrics").text
        self.assertRegex(metrics, r'sacgate_shard_retention_dropped_total\{shard="%s",log="telemetry"\} [1-9]'
                         % shard["name"])
        self.assertIn('sacgate_shard_telemetry_oldest_offset{shard="%s"}' % shard["name"], metrics)

        # a restart keeps the oldest retained offset and numbers on
        oldest_before = shard_of(gw, partition)["telemetryOldest"]
        last_new = left[-1]["offset"]
        restart_shard(self, partition)
        self.assertGreaterEqual(shard_of(gw, partition)["telemetryOldest"], oldest_before)
        publish(self, dev, 1, "after-restart")
        (_, recs), = gw.records_of(did, [partition]).items()
        self.assertGreater(recs[-1]["offset"], last_new, recs)

        # everything ages out: a restart then still numbers after the last offset ever given
        last = shard_of(gw, partition)["telemetryLast"]
        wait_until(lambda: shard_of(gw, partition)["telemetryOldest"] == last + 1, RETENTION + 4 * INTERVAL + 10,
                   "every record of partition %d dropped" % partition)
        self.assertEqual(gw.telemetry(partition, after=-1)["records"], [])
        restart_shard(self, partition)
        self.assertEqual(shard_of(gw, partition)["telemetryOldest"], last + 1)
        publish(self, dev, 1, "fresh")
        (_, recs), = gw.records_of(did, [partition]).items()
        self.assertEqual([r["offset"] for r in recs], [last + 1], recs)

    def test_dead_letters_and_feedback_age_out(self):
        gw = self.gw
        dev = gw.create_device()
        did = dev["id"]
        for i in range(3):   # never delivered (the device is offline): they expire
            gw.send_command(did, "cmd-%d" % i, ttlSeconds=1, ack="full")
        dead = {}

        def dead_lettered():
            r = gw.get("/v1/devices/%s/deadletters" % did, token="svc")
            self.assertEqual(r.status, 200, r)
            dead["v"] = r.json["deadLetters"]
            return len(dead["v"]) == 3
        wait_until(dead_lettered, 15, "3 expired commands dead-lettered")
        for d in dead["v"]:
            self.assertEqual(d["reason"], "expired", d)
            self.assertRegex(d["deadLetteredAt"], sgtest.RFC3339)
        self.assertEqual(sorted(base64.b64decode(d["payload"]) for d in dead["v"]),
                         [b"cmd-0", b"cmd-1", b"cmd-2"])
        shards = gw.cluster_info()["shards"]
        fb_last = {s["name"]: s["feedbackLast"] for s in shards}
        self.assertTrue(any(v >= 2 for v in fb_last.values()), shards)   # three `expired` feedback records
        wait_until(lambda: gw.get("/v1/devices/%s/deadletters" % did, token="svc").json["deadLetters"] == [],
                   RETENTION + 4 * INTERVAL + 10, "the dead letters dropped")
        # every shard's feedback up to what it had then is dropped too
        wait_until(lambda: all(s["feedbackOldest"] > fb_last[s["name"]] or fb_last[s["name"]] < 0
                               for s in gw.cluster_info()["shards"]), RETENTION + 4 * INTERVAL + 10,
                   "feedback dropped")
        self.assertGreaterEqual(sum(s["retention"]["deadLetters"]["dropped"] for s in gw.cluster_info()["shards"]), 3)
        self.assertEqual(gw.get("/v1/devices/no-such-device-x/deadletters", token="svc").status, 404)


class SizeRetentionTest(GatewayTest):
    """A partition over store.telemetry_max_bytes drops its oldest records (memtables of 1 MiB so
    table files come early; the age limit is far away)."""
    MAX = 2 * 1024 * 1024
    ENV = {"SACGATE_STORE_TELEMETRY_MAX_BYTES": str(MAX),
           "SACGATE_STORE_WRITE_BUFFER": str(1024 * 1024),
           "SACGATE_STORE_RETENTION_INTERVAL": str(INTERVAL)}

    def test_a_partition_over_its_size_drops_its_oldest_records(self):
        gw = self.gw
        dev = gw.create_device()
        did = dev["id"]
        c = self.connected(dev)
        blob = os.urandom(8192)   # does not compress: table files take what the records take
        mids = [c.publish(c.telemetry_topic(), blob + i.to_bytes(4, "big")) for i in range(1200)]
        c.wait_acked(mids, 120)
        c.close()
        partition = None
        for p in gw.partitions():
            if shard_of(gw, p)["telemetryLast"] >= 1199:
                partition = p
        self.assertIsNotNone(partition)
        wait_until(lambda: shard_of(gw, partition)["telemetryOldest"] > 0, 4 * INTERVAL + 20,
                   "telemetryOldest above 0 after ~9.6 MB in a partition of %d bytes" % self.MAX)
        s = shard_of(gw, partition)
        kept = s["telemetryLast"] - s["telemetryOldest"] + 1
        # what is left: about MAX in table files plus what is still in the memtable (1 MiB)
        self.assertLess(kept * len(blob), self.MAX + 2 * 1024 * 1024 + 4 * 1024 * 1024, s)
        self.assertGreater(kept * len(blob), self.MAX // 2, s)
        recs = gw.read_partition(partition)
        mine = [r for r in recs if r["deviceId"] == did]
        self.assertEqual(len(mine), kept, "every retained record is readable")
        # in order, without gaps, up to the last one
        idx = [int.from_bytes(base64.b64decode(r["payload"])[-4:], "big") for r in mine]
        self.assertEqual(idx, list(range(1200 - kept, 1200)))


class ConsumerGroupTest(GatewayTest):

    def commit(self, group, partition, offset, token="svc"):
        return self.gw.http("POST", "/v1/telemetry/groups/%s/commit" % group,
                            {"partition": partition, "offset": offset}, token=token)

    def group_read(self, group, partition, max=1000, wait=0):
        r = self.gw.get("/v1/telemetry?group=%s&partition=%d&max=%d&wait=%d" % (group, partition, max, wait),
                        token="svc", timeout=wait + 30)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["group"], group, r.json)
        return r.json

    def test_groups_read_from_their_commits_and_resume_after_a_shard_restart(self):
        gw = self.gw
        dev, partition, mine = new_device_with_records(self, 6, "g")
        did = dev["id"]
        everything = gw.read_partition(partition)
        # a new group starts at the oldest retained record
        first = self.group_read("g1", partition)
        self.assertEqual([r["offset"] for r in first["records"]], [r["offset"] for r in everything])
        self.assertEqual(first["next"], everything[-1]["offset"])
        # reading does not move it; a commit does
        self.assertEqual(self.group_read("g1", partition)["records"][0]["offset"], everything[0]["offset"])
        r = self.commit("g1", partition, mine[2]["offset"])
        self.assertEqual(r.status, 204, r)
        resumed = self.group_read("g1", partition)
        self.assertEqual([x["offset"] for x in resumed["records"]], [x["offset"] for x in mine[3:]])
        # groups are independent
        self.assertEqual(self.group_read("g2", partition)["records"][0]["offset"], everything[0]["offset"])
        # paging by group: max=1 then commit its next
        one = self.group_read("g3", partition, max=1)
        self.assertEqual(len(one["records"]), 1)
        self.assertEqual(self.commit("g3", partition, one["next"]).status, 204)
        self.assertEqual(self.group_read("g3", partition, max=1)["records"][0]["offset"], everything[1]["offset"])

        restart_shard(self, partition)
        resumed = self.group_read("g1", partition)
        self.assertEqual([x["offset"] for x in resumed["records"]], [x["offset"] for x in mine[3:]])

        # a long-poll by group at its end wakes on new data
        self.assertEqual(self.commit("g1", partition, mine[-1]["offset"]).status, 204)
        box = {}
        t = threading.Thread(target=lambda: box.update(r=self.group_read("g1", partition, wait=20)))
        t.start()
        time.sleep(0.5)
        publish(self, dev, 1, "late")
        t.join(30)
        self.assertEqual([base64.b64decode(x["payload"]) for x in box["r"]["records"]
                          if x["deviceId"] == did], [b"late-0"], box)

    def test_bad_commits_and_group_reads_are_refused(self):
        gw = self.gw
        last = max(s["telemetryLast"] for s in gw.cluster_info()["shards"])
        p0 = gw.partitions()[0]
        self.assertError(self.commit("g", p0, 10 ** 12), 400, "OffsetOutOfRange")
        self.assertError(self.commit("g", p0, -2), 400, "InvalidCommit")
        self.assertError(self.commit("bad:name", p0, -1), 400, "InvalidGroup")
        self.assertError(self.commit("g" * 65, p0, -1), 400, "InvalidGroup")
        self.assertError(self.commit("g", 4096, -1), 404, "PartitionNotFound")
        self.assertError(gw.http("POST", "/v1/telemetry/groups/g/commit", None, token="svc"), 400, "InvalidJson")
        self.assertError(gw.http("POST", "/v1/telemetry/groups/g/commit", {"partition": "0", "offset": 1},
                                 token="svc"), 400, "InvalidCommit")
        self.assertError(self.commit("g", p0, -1, token="reader"), 403)
        self.assertError(gw.http("POST", "/v1/telemetry/groups/g/commit", {"partition": 0, "offset": -1}, token=None),
                         401)
        self.assertError(gw.get("/v1/telemetry?group=g&after=3", token="svc"), 400, "InvalidQuery")
        self.assertError(gw.get("/v1/telemetry?group=a:b", token="svc"), 400, "InvalidGroup")
        # -1 (nothing read) is a valid commit, and so is the last offset
        self.assertEqual(self.commit("g", p0, -1).status, 204)
        if last >= 0:
            p_last = next(s["partition"] for s in gw.cluster_info()["shards"] if s["telemetryLast"] == last)
            self.assertEqual(self.commit("g", p_last, last).status, 204)


if __name__ == "__main__":
    sgtest.main()
