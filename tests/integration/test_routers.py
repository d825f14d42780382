#!/usr/bin/python3
"""Several routers (cluster topology): a second router that does not carry a frontend loop must
never end that loop's sessions, and a restarted router keeps carrying them; the device stays
connected and gets its deliveries."""

import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import BIN, GatewayTest, free_port, pkt_puback, read_publish, wait_until

SHORT_LOCKS = {"SACGATE_STORE_DELIVERY_LOCK": "2"}


class RoutersTest(GatewayTest):
    TOPOLOGY = "cluster"

    ENV = SHORT_LOCKS

    def second_router(self):
        d = self.gw.dir
        port = free_port()
        log = open(os.path.join(d, "router-1.log"), "ab")
        p = subprocess.Popen([BIN, "router", "--name", "router-1", "--bind", "tcp://127.0.0.1:%d" % port,
                              "--shards", self.gw.ports_env["SHARDS"],
                              "--set", "cluster.curve_cert=%s/curve/{role}.cert" % d],
                             stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.poll() is None and p.terminate(), p.wait(15)))
        wait_until(lambda: sgtest._tcp_open(port) or p.poll() is not None, 20, "router-1 to listen")
        self.assertIsNone(p.poll(), "router-1 exited")
        return p

    def test_restarted_router_keeps_its_sessions_while_another_runs(self):
        self.second_router()
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw_subscribed(dev)
        self.gw.send_command(did, "first")
        pid, dup, payload = read_publish(raw)
        self.assertEqual(payload, b"first")
        # router-0 (the one this frontend uses) goes away and comes back while router-1 runs; the
        # unacknowledged delivery is retried meanwhile (lock 2 s), also through router-1
        self.gw.kill("router-0")
        time.sleep(5)   # longer than the lock: the retry happens while router-0 is away
        self.gw.start_member("router-0")
        pid2, dup2, payload2 = read_publish(raw, timeout=60)
        self.assertEqual((dup2, payload2), (True, b"first"))
        raw.send(pkt_puback(pid2))
        wait_until(lambda: self.gw.pending(did) == [], 30, "the queue to drain")
        self.assertTrue(self.gw.device(did).json["connection"]["connected"], "the session was ended")
        self.gw.send_command(did, "second")
        pid3, dup3, payload3 = read_publish(raw, timeout=30)
        self.assertEqual((dup3, payload3), (False, b"second"))
        raw.send(pkt_puback(pid3))


if __name__ == "__main__":
    sgtest.main()
