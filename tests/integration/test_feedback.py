#!/usr/bin/python3
"""Feedback (both topologies): GET /v1/feedback reads what became of cloud-to-device messages,
one partition per shard, as GET /v1/telemetry reads telemetry.

For each `ack` mode (none, positive, negative, full) and each outcome a message can have
(delivered: the device PUBACKs; expired: its TTL ran out while the device was offline; purged:
DELETE .../messages; revoked: DELETE of the device; deliveryCountExceeded: never acknowledged),
exactly the feedback the mode asks for is recorded: positive for `delivered` only, negative for
every other outcome only, full for all, none for nothing. Reads page with after/max and `next`;
a read with `wait` that finds nothing is woken when feedback is appended (not when its wait runs
out); consumer groups (POST /v1/feedback/groups/G/commit) resume from their commit, also after a
restart, and are independent of telemetry groups of the same name; bad reads and commits are
refused with the documented errors."""

import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, pkt_puback, read_publish, wait_until  # noqa: E402

MODES = ("none", "positive", "negative", "full")
POSITIVE = ("positive", "full")     # the modes that get feedback when a message is delivered
NEGATIVE = ("negative", "full")     # ... when it ends any other way
LONG_WAIT = 60                      # a long-poll's wait: far longer than the test waits for it


def quote(s):
    return urllib.parse.quote(s, safe="")


class FeedbackCase(GatewayTest):
    """Reading, making and checking feedback (no tests of its own)."""

    # -- reading

    def read(self, partition=0, after=None, max=1000, wait=0, group=None, token="svc"):
        q = {"partition": partition, "max": max, "wait": wait}
        if after is not None:
            q["after"] = after
        if group is not None:
            q["group"] = group
        r = self.gw.get("/v1/feedback?" + urllib.parse.urlencode(q), token=token, timeout=wait + 30)
        self.assertEqual(r.status, 200, r)
        page = r.json
        self.assertEqual(set(page), {"partition", "records", "next", "oldest"} | ({"group"} if group else set()), page)
        self.assertEqual(page["partition"], partition)
        for rec in page["records"]:
            self.assertEqual(set(rec), {"offset", "messageId", "deviceId", "outcome", "at"}, rec)
            self.assertRegex(rec["at"], sgtest.RFC3339)
        return page

    def read_all(self, partition):
        """Every feedback record of a partition, oldest first, by pages of 1000."""
        recs, after = [], -1
        for _ in range(1000):
            page = self.read(partition, after=after)
            if not page["records"]:
                break
            recs += page["records"]
            after = page["next"]
        return recs

    def feedback_of(self, did):
        """{partition: [records of device did]} over every partition."""
        out = {}
        for p in self.gw.partitions():
            mine = [r for r in self.read_all(p) if r["deviceId"] == did]
            if mine:
                out[p] = mine
        return out

    def records_of(self, did):
        return [r for recs in self.feedback_of(did).values() for r in recs]

    def commit(self, group, partition, offset, token="svc"):
        return self.gw.http("POST", "/v1/feedback/groups/%s/commit" % quote(group),
                            {"partition": partition, "offset": offset}, token=token)

    # -- making feedback

    def enqueue(self, did, mode, payload="cmd", **kw):
        return self.gw.send_command(did, payload, ack=mode, **kw).json["messageId"]

    def enqueue_modes(self, did, **kw):
        """One message per ack mode: {mode: messageId}."""
        return {m: self.enqueue(did, m, "cmd-" + m, **kw) for m in MODES}

    def purged_feedback(self, did, n=1):
        """n messages with ack=full purged: their n `purged` records (device did's partition)."""
        ids = [self.enqueue(did, "full") for _ in range(n)]
        r = self.gw.http("DELETE", "/v1/devices/%s/messages" % quote(did), token="svc")
        self.assertEqual((r.status, r.json["purged"]), (200, n), r)
        recs = [x for x in self.records_of(did) if x["messageId"] in ids]
        self.assertEqual([x["messageId"] for x in recs], ids, "purged records in the order they were queued")
        return recs

    def assert_feedback(self, did, ids, outcome, modes):
        """The feedback of device did is exactly `outcome` for the messages of `modes`, none for
        the others (ids: {mode: messageId}); all in one partition, in offset order."""
        by_partition = self.feedback_of(did)
        self.assertLessEqual(len(by_partition), 1, "one device's feedback is in its shard's partition only")
        recs = [r for rs in by_partition.values() for r in rs]
        offsets = [r["offset"] for r in recs]
        self.assertEqual(offsets, sorted(set(offsets)), recs)
        got = {(r["messageId"], r["outcome"]) for r in recs}
        want = {(ids[m], outcome) for m in modes}
        self.assertEqual(got, want, "feedback for %s: modes %s should have given %s" % (ids, modes, outcome))
        self.assertEqual(len(recs), len(want), "one record per message: %r" % recs)


class FeedbackTest(FeedbackCase):

    # -- outcomes by ack mode

    def test_delivered_by_ack_mode(self):
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw_subscribed(dev)
        ids = self.enqueue_modes(did)
        got = set()
        for _ in MODES:
            pid, dup, payload = read_publish(raw, timeout=30)
            raw.send(pkt_puback(pid))
            got.add(payload)
        self.assertEqual(got, {("cmd-" + m).encode() for m in MODES})
        # The queue empties in the same commit that writes the feedback.
        wait_until(lambda: self.gw.pending(did) == [], 30, "the four messages acknowledged")
        self.assert_feedback(did, ids, "delivered", POSITIVE)

    def test_expired_by_ack_mode(self):
        dev = self.gw.create_device()   # never connects
        did = dev["id"]
        ids = self.enqueue_modes(did, ttlSeconds=1)

        def dead():
            r = self.gw.get("/v1/devices/%s/deadletters" % quote(did), token="svc")
            return r.status == 200 and len(r.json["deadLetters"]) == 4
        wait_until(dead, 30, "the four messages expired")
        self.assert_feedback(did, ids, "expired", NEGATIVE)

    def test_purged_by_ack_mode(self):
        dev = self.gw.create_device()
        did = dev["id"]
        ids = self.enqueue_modes(did)
        r = self.gw.http("DELETE", "/v1/devices/%s/messages" % quote(did), token="svc")
        self.assertEqual((r.status, r.json), (200, {"purged": 4}))
        self.assert_feedback(did, ids, "purged", NEGATIVE)

    def test_revoked_by_ack_mode(self):
        dev = self.gw.create_device()
        did = dev["id"]
        ids = self.enqueue_modes(did)
        self.assertEqual(self.gw.http("DELETE", "/v1/devices/%s" % quote(did)).status, 204)
        self.assert_feedback(did, ids, "revoked", NEGATIVE)

    # -- reading by cursor

    def test_paging_with_after_and_max(self):
        dev = self.gw.create_device()
        did = dev["id"]
        mine = self.purged_feedback(did, 5)
        (partition,) = self.feedback_of(did).keys()
        everything = self.read_all(partition)
        self.assertGreaterEqual(len(everything), 5)
        # pages of 2, each starting after the previous page's `next`
        pages, after = [], -1
        while True:
            page = self.read(partition, after=after, max=2)
            self.assertLessEqual(len(page["records"]), 2)
            if not page["records"]:
                self.assertEqual(page["next"], after, "an empty page's next is the after it was given")
                break
            self.assertEqual(page["next"], page["records"][-1]["offset"], "next is the last offset read")
            self.assertTrue(all(r["offset"] > after for r in page["records"]), page)
            pages += page["records"]
            after = page["next"]
        self.assertEqual(pages, everything)
        # after a record: exactly those after it
        page = self.read(partition, after=mine[1]["offset"], max=3)
        self.assertEqual([r["messageId"] for r in page["records"]], [r["messageId"] for r in mine[2:5]])
        self.assertEqual(page["next"], mine[4]["offset"])
        # the partition's positions agree with GET /v1/cluster
        shard = next(s for s in self.gw.cluster_info()["shards"] if s["partition"] == partition)
        self.assertEqual(shard["feedbackLast"], everything[-1]["offset"])
        self.assertEqual(page["oldest"], shard["feedbackOldest"])
        self.assertEqual(everything[0]["offset"], shard["feedbackOldest"])
        # without `after` a read starts at the oldest record; at the end it is empty
        self.assertEqual(self.read(partition)["records"], everything)
        end = self.read(partition, after=shard["feedbackLast"])
        self.assertEqual((end["records"], end["next"]), ([], shard["feedbackLast"]))

    def long_poll(self, **kw):
        """A read with a long wait in a thread: (thread, box); box["page"] once it answered."""
        box = {}

        def run():
            try:
                box["page"] = self.read(wait=LONG_WAIT, **kw)
            except BaseException as e:   # reported by the test thread
                box["error"] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, box

    def assert_woken(self, t, box, mid):
        # The read waits up to LONG_WAIT s; woken by the append it answers long before. If only
        # its wait ending made it answer, it would still be waiting here.
        t.join(LONG_WAIT / 2)
        self.assertFalse(t.is_alive(), "the long-poll was not woken by the new feedback")
        if "error" in box:
            raise box["error"]
        self.assertIn(mid, [r["messageId"] for r in box["page"]["records"]], box["page"])

    def test_long_poll_wakes_when_feedback_arrives(self):
        dev = self.gw.create_device()
        did = dev["id"]
        last = self.purged_feedback(did)[-1]   # where the device's feedback goes
        (partition,) = self.feedback_of(did).keys()
        t, box = self.long_poll(partition=partition, after=last["offset"])
        time.sleep(0.5)   # let it park (if it has not, it answers at once: the test still holds)
        self.assertTrue(t.is_alive(), "a read after the last record waits: %r" % box)
        mid = self.enqueue(did, "negative")
        self.assertEqual(self.gw.http("DELETE", "/v1/devices/%s/messages" % quote(did), token="svc").status, 200)
        self.assert_woken(t, box, mid)
        self.assertEqual([(r["messageId"], r["outcome"]) for r in box["page"]["records"]], [(mid, "purged")])
        self.assertEqual(box["page"]["next"], box["page"]["records"][-1]["offset"])

    # -- consumer groups

    def restart(self, partition):
        """Restart the whole gateway (sacgate all) or the partition's shard (cluster)."""
        sgtest.restart_shard(self, partition)

    def test_consumer_group_commit_and_resume(self):
        gw = self.gw
        dev = gw.create_device()
        did = dev["id"]
        mine = self.purged_feedback(did, 4)
        (partition,) = self.feedback_of(did).keys()
        everything = self.read_all(partition)
        # a new group starts at the oldest retained record; reading does not move it
        g = sgtest.uid("fbg")
        first = self.read(partition, group=g)
        self.assertEqual(first["group"], g)
        self.assertEqual(first["records"], everything)
        self.assertEqual(first["next"], everything[-1]["offset"])
        self.assertEqual(self.read(partition, group=g)["records"], everything)
        # a commit does
        r = self.commit(g, partition, mine[1]["offset"])
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.read(partition, group=g)["records"], mine[2:])
        # paging by group: max=1, then commit its next
        g2 = sgtest.uid("fbg")
        one = self.read(partition, group=g2, max=1)
        self.assertEqual(one["records"], everything[:1])
        self.assertEqual(self.commit(g2, partition, one["next"]).status, 204)
        self.assertEqual(self.read(partition, group=g2, max=1)["records"], everything[1:2])
        # Feedback groups and telemetry groups of the same name are apart: a feedback commit does
        # not move the telemetry group, and the other way round.
        c = self.connected(dev)
        c.send(b"t")
        c.close()
        tele = gw.read_partition(partition)
        self.assertTrue(tele, "the device's telemetry is in its shard's partition")
        self.assertGreaterEqual(mine[1]["offset"], tele[0]["offset"],
                                "(so that a shared key would make the telemetry group skip its first record)")
        r = gw.get("/v1/telemetry?group=%s&partition=%d&max=1000" % (g, partition), token="svc")
        self.assertEqual((r.status, r.json["records"]), (200, tele), r)
        r = gw.http("POST", "/v1/telemetry/groups/%s/commit" % g, {"partition": partition,
                                                                    "offset": tele[-1]["offset"]}, token="svc")
        self.assertEqual(r.status, 204, r)
        self.assertEqual(self.read(partition, group=g)["records"], mine[2:])

        # durable: the group resumes after a restart (the whole gateway, or the shard)
        self.restart(partition)
        self.assertEqual(self.read(partition, group=g)["records"], mine[2:])
        self.assertEqual(self.read(partition, group=g2, max=1)["records"], everything[1:2])
        self.assertEqual(self.read_all(partition), everything, "feedback records survive the restart")

        # -1 resets a group to the oldest record
        self.assertEqual(self.commit(g2, partition, -1).status, 204)
        self.assertEqual(self.read(partition, group=g2)["records"], everything)

        # a long-poll by group at its end wakes when feedback arrives
        self.assertEqual(self.commit(g, partition, mine[-1]["offset"]).status, 204)
        t, box = self.long_poll(partition=partition, group=g)
        time.sleep(0.5)
        self.assertTrue(t.is_alive(), "a group read at the group's end waits: %r" % box)
        mid = self.enqueue(did, "full")
        self.assertEqual(gw.http("DELETE", "/v1/devices/%s/messages" % quote(did), token="svc").status, 200)
        self.assert_woken(t, box, mid)
        self.assertEqual(box["page"]["group"], g)

    # -- errors

    def test_errors(self):
        gw = self.gw
        ps = gw.partitions()
        for q in ("partition=-1", "partition=x", "after=-2", "after=1.5", "max=0", "max=1001", "wait=61", "wait=",
                  "group=g&after=0"):
            self.assertError(gw.get("/v1/feedback?" + q, token="svc"), 400, "InvalidQuery")
        for g in ("bad!", "x" * 65):
            self.assertError(gw.get("/v1/feedback?group=" + quote(g), token="svc"), 400, "InvalidGroup")
        self.assertError(gw.get("/v1/feedback?partition=%d" % len(ps), token="svc"), 404, "PartitionNotFound")
        self.assertError(gw.get("/v1/feedback", token="reader"), 403, "Forbidden")
        self.assertError(gw.get("/v1/feedback", token=None), 401, "Unauthorized")
        # without a partition: partition 0
        self.assertEqual(self.read(0)["partition"], 0)
        r = gw.get("/v1/feedback", token="svc")
        self.assertEqual((r.status, r.json["partition"]), (200, 0), r)

        self.assertError(self.commit("g", ps[0], 10 ** 12), 400, "OffsetOutOfRange")
        self.assertError(self.commit("g", ps[0], -2), 400, "InvalidCommit")
        self.assertError(self.commit("bad:name", ps[0], -1), 400, "InvalidGroup")
        self.assertError(self.commit("g" * 65, ps[0], -1), 400, "InvalidGroup")
        self.assertError(self.commit("g", len(ps), -1), 404, "PartitionNotFound")
        self.assertError(gw.http("POST", "/v1/feedback/groups/g/commit", None, token="svc"), 400, "InvalidJson")
        self.assertError(gw.http("POST", "/v1/feedback/groups/g/commit", {"partition": "0", "offset": 1},
                                 token="svc"), 400, "InvalidCommit")
        self.assertError(self.commit("g", ps[0], -1, token="reader"), 403, "Forbidden")
        self.assertError(self.commit("g", ps[0], -1, token=None), 401, "Unauthorized")
        self.assertEqual(self.commit("g", ps[0], -1).status, 204)

        # A commit's range is the partition's feedback, not its telemetry: with more feedback than
        # telemetry in a partition, its last feedback offset is a valid commit and the next is not.
        dev = gw.create_device()
        did = dev["id"]
        self.purged_feedback(did)
        (p,) = self.feedback_of(did).keys()
        shard = lambda: next(s for s in gw.cluster_info()["shards"] if s["partition"] == p)  # noqa: E731
        for _ in range(50):
            if shard()["feedbackLast"] > shard()["telemetryLast"]:
                break
            self.purged_feedback(did)
        fb_last, tele_last = shard()["feedbackLast"], shard()["telemetryLast"]
        self.assertGreater(fb_last, tele_last)
        self.assertEqual(self.commit("g", p, fb_last).status, 204)
        self.assertError(self.commit("g", p, fb_last + 1), 400, "OffsetOutOfRange")


class DeliveryCountTest(FeedbackCase):
    # Unacknowledged deliveries come again after 1 s, and after 2 attempts the message is
    # dead-lettered with `deliveryCountExceeded`.
    ENV = {"SACGATE_STORE_DELIVERY_LOCK": "1", "SACGATE_STORE_MAX_DELIVERY_COUNT": "2"}

    def test_delivery_count_exceeded_by_ack_mode(self):
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw_subscribed(dev)   # takes every delivery, acknowledges none
        ids = self.enqueue_modes(did)
        wait_until(lambda: self.gw.pending(did) == [], 60, "the four messages dead-lettered after 2 attempts")
        r = self.gw.get("/v1/devices/%s/deadletters" % quote(did), token="svc")
        self.assertEqual(sorted(d["reason"] for d in r.json["deadLetters"]), ["deliveryCountExceeded"] * 4, r)
        self.assert_feedback(did, ids, "deliveryCountExceeded", NEGATIVE)
        raw.close()


if __name__ == "__main__":
    sgtest.main()
