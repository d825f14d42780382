#!/usr/bin/python3
"""Devices read ahead (both topologies). A frontend's frame for a device the shard's writer has
not cached (after a restart, every device) waits while a reader thread loads the device's
records, and the writer commits everyone else's work meanwhile. Each read-ahead here is slowed
to READ_DELAY seconds (store.read_ahead_delay_ms, fault injection standing in for a slow disk):
a cold device's CONNECT then waits while a connected device's publishes are acknowledged, and
every cold device still connects with its stored state (queued commands, session) intact and
its frames in the order they came."""

import base64
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest  # noqa: E402

READ_DELAY = 4


class ReadAheadTest(GatewayTest):
    ENV = {"SACGATE_STORE_READ_AHEAD_DELAY_MS": str(READ_DELAY * 1000)}

    def partition_of(self, dev):
        """The partition dev's telemetry goes to (its shard): one message sent and looked up.
        The device is cached by the writer until its shard restarts."""
        c = self.connected(dev)
        c.send(b"where")
        c.close()
        parts = list(self.gw.records_of(dev["id"]))
        self.assertEqual(len(parts), 1, parts)
        return parts[0]

    def cold_devices(self, n):
        """n + 1 devices on one shard, that shard restarted: none of them is cached."""
        first = self.gw.create_device()
        p = self.partition_of(first)
        devs = [first]
        for _ in range(64):
            if len(devs) > n:
                break
            d = self.gw.create_device()
            if self.partition_of(d) == p:
                devs.append(d)
        self.assertEqual(len(devs), n + 1, "no %d devices on partition %d among 64" % (n + 1, p))
        sgtest.restart_shard(self, p)
        return p, devs

    def loads(self):
        """Devices loaded by readers and by the writer, summed over the shards (/metrics)."""
        r = self.gw.get("/metrics")
        self.assertEqual(r.status, 200, r)
        out = {"reader": 0, "writer": 0}
        for line in r.body.decode().splitlines():
            if line.startswith("sacgate_shard_device_loads_total{"):
                on = line.split('on="', 1)[1].split('"', 1)[0]
                out[on] += int(float(line.rsplit(" ", 1)[1]))
        return out

    def test_a_cold_device_does_not_hold_up_the_commits_of_others(self):
        _, (hot, cold) = self.cold_devices(1)
        before = self.loads()
        h = self.connected(hot)   # cold too, read ahead: READ_DELAY s
        cold_conn = self.device(cold)
        result = {}

        def connect_cold():
            result["rc"] = cold_conn.connect(timeout=READ_DELAY * 10)
            result["at"] = time.monotonic()
        t = threading.Thread(target=connect_cold)
        t.start()
        time.sleep(0.5)   # its AUTH is at the writer, waiting for a reader
        mids = [h.publish(h.telemetry_topic(), b"hot-%d" % i) for i in range(20)]
        h.wait_acked(mids, timeout=READ_DELAY * 10)
        acked_at = time.monotonic()
        t.join(READ_DELAY * 10 + 5)
        self.assertEqual(result.get("rc"), 0, "the cold device was not accepted")
        self.assertLess(acked_at, result["at"],
                        "the hot device's 20 PUBACKs came only after the cold device's CONNACK: the writer "
                        "waited for the cold device's records")
        after = self.loads()
        self.assertGreaterEqual(after["reader"] - before["reader"], 2, (before, after))
        self.assertEqual(base64.b64decode(self.gw.device_records(hot["id"])[-1]["payload"]), b"hot-19")

    def test_a_device_read_ahead_keeps_its_queue_and_session(self):
        _, (dev, unsub) = self.cold_devices(1)
        for i in range(3):
            self.gw.send_command(dev["id"], "cmd-%d" % i)
        c = self.connected(dev, subscribe=True)
        got = c.wait_commands(3, timeout=READ_DELAY * 10)
        self.assertEqual([m["payload"] for m in got], [b"cmd-0", b"cmd-1", b"cmd-2"])
        # a device whose frames wait is still refused when its entry says so
        self.assertEqual(self.gw.http("PUT", "/v1/devices/%s" % unsub["id"],
                                      {"deviceId": unsub["id"], "status": "disabled"}).status, 200)
        self.assertEqual(self.device(unsub).connect(timeout=READ_DELAY * 10), 5)

    def test_frames_that_wait_for_a_device_keep_their_order(self):
        """Two connections of one cold device, the second a moment after the first: both AUTHs
        wait for the same read, and the second must win (it came last)."""
        _, (dev, _) = self.cold_devices(1)
        first, second = self.device(dev), self.device(dev)
        rc = {}
        t1 = threading.Thread(target=lambda: rc.__setitem__(1, first.connect(timeout=READ_DELAY * 10)))
        t1.start()
        time.sleep(0.5)
        t2 = threading.Thread(target=lambda: rc.__setitem__(2, second.connect(timeout=READ_DELAY * 10)))
        t2.start()
        t1.join(READ_DELAY * 10 + 5)
        t2.join(READ_DELAY * 10 + 5)
        self.assertEqual(rc.get(2), 0, rc)
        self.assertTrue(first.closed.wait(READ_DELAY * 5), "the first connection was not taken over")
        second.send(b"still-here")
        self.assertFalse(second.closed.is_set())

    def test_an_unknown_device_read_ahead_is_refused(self):
        p, _ = self.cold_devices(0)
        c = self.device({"id": "never-registered-%d" % p, "primary": sgtest.new_key()})
        self.assertEqual(c.connect(timeout=READ_DELAY * 10), 5)


if __name__ == "__main__":
    sgtest.main()
