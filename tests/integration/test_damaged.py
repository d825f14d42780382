#!/usr/bin/python3
"""A damaged queue record is dead-lettered, not skipped (SPEC 5; both topologies).

The shards are stopped, one queued command of a device is overwritten on disk with bytes no
decoder accepts (tests/tools/st_damage, RocksDB opened as the shard opens it), and the shards are
started again:
- delivery: the device gets the commands before and after it, in order; the damaged one leaves
  the queue (queueDepth and queuedBytes back to 0) and is listed among the dead letters with
  reason `damaged`, its sequence number, size and stored bytes; a later command is delivered too.
- expiry sweep: a damaged command of an offline device is dead-lettered as `damaged` at its
  expiry, and its expiry index entry does not stay behind; the next command is still delivered.
- queue counters: a device's damaged counters are rebuilt from its records (logged
  `queue.meta_damaged`): the next command overwrites neither a queued one nor a dead letter,
  queueDepth and queuedBytes are right, and the queue limit holds at its real depth. Before,
  they were zeroed silently and the next command took the oldest one's place.
- an unfinished notification whose record is damaged is logged (`notify.damaged`) and left:
  the gateway starts and the notification API works. Before, the shard did not start."""

import base64
import glob
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import wait_until  # noqa: E402

TOOL = os.environ.get("SACGATE_ST_DAMAGE") or os.path.join(os.path.dirname(os.path.abspath(sgtest.BIN)),
                                                            "tests", "tools", "st_damage")
NOT_HERE = 3   # st_damage: the shard holds no such message of the device


class DamagedRecordTest(sgtest.GatewayTest):

    def shard_dirs(self):
        dirs = sorted(d for d in glob.glob(os.path.join(self.gw.dir, "store-*")) if os.path.isdir(d))
        self.assertTrue(dirs, "no shard data directory under %s" % self.gw.dir)
        return dirs

    def offline(self, fn):
        """Stop every shard, run fn(), start them again."""
        mark = self.gw.log_mark()
        if self.is_cluster:
            for s in ("store-0", "store-1"):
                self.gw.kill(s)
        else:
            self.assertTrue(self.gw.stop(), "sacgate all did not exit on SIGTERM")
        try:
            return fn()
        finally:
            if self.is_cluster:
                for s in ("store-0", "store-1"):
                    self.gw.start_member(s)
            else:
                self.gw.start()
            self.gw.wait_ready(60)
            if self.is_cluster:
                # /readyz may still see the shards as the router last did before they stopped; an
                # operator's request in between gets 503 ShardUnavailable. Until the router has
                # heard the new ones:
                for s in ("store-0", "store-1"):
                    self.gw.wait_log(r"event=shard\.restarted shard=%s " % s, mark, 60)

    def tool(self, shard_dir, did, arg):
        return subprocess.run([TOOL, shard_dir, did, str(arg)], capture_output=True, text=True, timeout=60)

    def damage(self, did, nth):
        """Overwrite the device's nth queued message in whichever shard holds it: its size."""
        return int(self.damage_in_one_shard(did, nth).split("bytes=")[1])

    def damage_in_one_shard(self, name, what):
        """st_damage NAME WHAT (a message's number, meta) against whichever shard holds the
        record: what the tool printed."""
        out = []
        for d in self.shard_dirs():
            r = self.tool(d, name, what)
            if r.returncode == NOT_HERE:
                continue
            self.assertEqual(r.returncode, 0, "st_damage %s %s failed: %s%s" % (d, what, r.stdout, r.stderr))
            out.append(r.stdout)
        self.assertEqual(len(out), 1, "the device's record (%s) is in exactly one shard" % what)
        return out[0]

    def expiry_entries(self, did):
        n = 0
        for d in self.shard_dirs():
            r = self.tool(d, did, "expiry")
            self.assertEqual(r.returncode, 0, "st_damage %s expiry failed: %s%s" % (d, r.stdout, r.stderr))
            n += int(r.stdout.split("expiry=")[1])
        return n

    def dead_letters(self, did):
        r = self.gw.get("/v1/devices/%s/deadletters" % did)
        self.assertEqual(r.status, 200, r)
        return r.json["deadLetters"]

    def queue(self, did):
        e = self.gw.device(did).json
        return e["queueDepth"], e["queuedBytes"]

    def assert_damaged_letter(self, letter, size):
        self.assertEqual(letter["reason"], "damaged", letter)
        self.assertEqual(letter["size"], size, letter)
        self.assertEqual(base64.b64decode(letter["raw"]), b"\xff" * min(size, 1024), letter)
        self.assertIsInstance(letter["seq"], int)
        self.assertIn("deadLetteredAt", letter)
        self.assertNotIn("messageId", letter)

    def test_delivery_dead_letters_damaged_record(self):
        gw = self.gw
        dev = gw.create_device()
        did = dev["id"]
        mids = [gw.send_command(did, "cmd-%d" % i).json["messageId"] for i in (1, 2, 3)]
        self.assertEqual(self.queue(did)[0], 3)
        mark = gw.log_mark()

        size = self.offline(lambda: self.damage(did, 2))

        c = self.connected(dev, subscribe=True)
        cmds = c.wait_commands(2)
        self.assertEqual([(x["props"]["$.mid"], x["payload"]) for x in cmds],
                         [(mids[0], b"cmd-1"), (mids[2], b"cmd-3")])
        wait_until(lambda: self.queue(did) == (0, 0), 30, "queueDepth 0 and queuedBytes 0")
        self.assertEqual(gw.pending(did), [])
        letters = self.dead_letters(did)
        self.assertEqual(len(letters), 1, letters)
        self.assert_damaged_letter(letters[0], size)
        self.assertTrue(gw.grep_log(r"event=message\.damaged .*device=%s" % did, mark), "message.damaged not logged")

        mid4 = gw.send_command(did, "cmd-4").json["messageId"]
        cmds = c.wait_commands(3)
        self.assertEqual((cmds[2]["props"]["$.mid"], cmds[2]["payload"]), (mid4, b"cmd-4"))
        self.assertEqual(len(cmds), 3, "nothing came twice")
        wait_until(lambda: self.queue(did) == (0, 0), 30, "queue empty after the 4th command")

    def test_sweep_dead_letters_damaged_record(self):
        gw = self.gw
        dev = gw.create_device()
        did = dev["id"]
        gw.send_command(did, "short-lived", ttlSeconds=10)
        _, short_bytes = self.queue(did)
        later = gw.send_command(did, "later").json["messageId"]
        _, bytes_before = self.queue(did)

        size = self.offline(lambda: self.damage(did, 1))
        self.assertEqual(size, short_bytes, "the short-lived message was no longer queued when the shards stopped")

        # the device stays offline: the expiry sweep is what meets the damaged record
        letters = wait_until(lambda: self.dead_letters(did) or None, 30, "the damaged record dead-lettered")
        self.assertEqual(len(letters), 1, letters)
        self.assert_damaged_letter(letters[0], size)
        self.assertEqual(self.queue(did), (1, bytes_before - size))
        # its expiry index entry went with it: only the other message's is left
        self.assertEqual(self.offline(lambda: self.expiry_entries(did)), 1)

        c = self.connected(dev, subscribe=True)
        cmds = c.wait_commands(1)
        self.assertEqual((cmds[0]["props"]["$.mid"], cmds[0]["payload"]), (later, b"later"))
        wait_until(lambda: self.queue(did) == (0, 0), 30, "queue empty")

    def test_damaged_queue_counters_are_rebuilt(self):
        gw = self.gw
        dev = gw.create_device(limits={"maxQueuedMessages": 4})
        did = dev["id"]
        purged = [gw.send_command(did, "old-%d" % i).json["messageId"] for i in (1, 2)]
        self.assertEqual(gw.http("DELETE", "/v1/devices/%s/messages" % did).json, {"purged": 2})
        queued = [gw.send_command(did, "cmd-%d" % i).json["messageId"] for i in (1, 2)]
        depth, nbytes = self.queue(did)
        self.assertEqual(depth, 2)
        mark = gw.log_mark()

        self.offline(lambda: self.damage_in_one_shard(did, "meta"))

        self.assertEqual(self.queue(did), (depth, nbytes), "queueDepth and queuedBytes from the records")
        # the next commands take new sequence numbers: the queued ones and the dead letters stay
        more = [gw.send_command(did, "cmd-%d" % i).json["messageId"] for i in (3, 4)]
        self.assertTrue(gw.grep_log(r"event=queue\.meta_damaged device=%s .*action=rebuilt queued=2 " % did, mark),
                        "queue.meta_damaged not logged")
        self.assertEqual([m["messageId"] for m in gw.pending(did)], queued + more)
        letters = self.dead_letters(did)
        self.assertEqual(sorted(x.get("messageId") for x in letters), sorted(purged), letters)
        self.assertEqual([x["reason"] for x in letters], ["purged", "purged"])
        # the limit (4) holds at the real depth
        self.assertError(gw.http("POST", "/v1/devices/%s/messages" % did, {"payload": "one too many"}), 429)
        self.assertEqual(self.queue(did)[0], 4)

        c = self.connected(dev, subscribe=True)
        cmds = c.wait_commands(4)
        self.assertEqual([(x["props"]["$.mid"], x["payload"]) for x in cmds],
                         list(zip(queued + more, [b"cmd-1", b"cmd-2", b"cmd-3", b"cmd-4"])))
        wait_until(lambda: self.queue(did) == (0, 0), 30, "queue empty")

    def test_a_damaged_notification_does_not_keep_the_gateway_down(self):
        gw = self.gw
        mark = gw.log_mark()
        shard = self.shard_dirs()[0]

        def damage():
            r = self.tool(shard, "00000000-0000-4000-8000-00000000dead", "notify")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.offline(damage)   # it starts, or this fails

        self.assertTrue(gw.grep_log(r"event=notify\.damaged ", mark), "notify.damaged not logged")
        tag = sgtest.uid("nd")
        dev = gw.create_device(tags={"fleet": tag})
        r = gw.http("POST", "/v1/notifications", {"tags": {"fleet": tag}, "payload": "after"}, token="svc")
        self.assertEqual((r.status, r.json.get("targets")), (202, 1), r)
        self.assertEqual([base64.b64decode(m["payload"]) for m in gw.pending(dev["id"])], [b"after"])


if __name__ == "__main__":
    sgtest.main()
