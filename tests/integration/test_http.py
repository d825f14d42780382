#!/usr/bin/python3
"""The admin HTTP API: health, metrics, registry shapes, errors. All-in-one topology
(SACGATE_TOPOLOGY=cluster also works)."""

import base64
import sys
import json
import re
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import RFC3339, GatewayTest, new_key, wait_until

PROM_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"'
                         r'(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*\})? '
                         r'(-?[0-9.eE+-]+|NaN|\+Inf|-Inf)( -?\d+)?$')


class HttpTest(GatewayTest):

    # ---------------------------------------------------------------- health, metrics

    def test_health_and_ready(self):
        for path in ("/healthz", "/readyz"):
            r = self.gw.http("GET", path, token=None)
            self.assertEqual(r.status, 200, r)

    def test_metrics(self):
        r = self.gw.get("/metrics")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("text/plain"), r.headers)
        text = r.text
        for line in text.splitlines():
            if not line or line.startswith("#"):
                if line.startswith("# TYPE") or line.startswith("# HELP"):
                    self.assertGreaterEqual(len(line.split()), 4 if line.startswith("# TYPE") else 3, line)
                continue
            self.assertRegex(line, PROM_SAMPLE, "not a Prometheus sample line")
        shards = [s["name"] for s in self.gw.cluster_info()["shards"]]
        for name in shards:
            self.assertRegex(text, r'(?m)^sacgate_shard_up\{[^}]*shard="%s"[^}]*\} 1$' % re.escape(name))
        self.assertIn("# TYPE sacgate_shard_up gauge", text)
        # RocksDB's own figures per shard; a device created is a synced write (store.sync=always)
        self.gw.create_device()
        text = self.gw.get("/metrics").text
        for name in shards:
            for metric in ("memtable_bytes", "block_cache_capacity_bytes", "pending_compaction_bytes",
                           "stall_micros_total", "write_stopped", "wal_syncs_total", "wal_sync_p99_micros"):
                self.assertRegex(text, r'(?m)^sacgate_shard_rocksdb_%s\{shard="%s"\} [0-9.e+]+$'
                                 % (metric, re.escape(name)))
            self.assertRegex(text, r'(?m)^sacgate_shard_rocksdb_block_cache_capacity_bytes\{shard="%s"\} 536870912$'
                             % re.escape(name))   # store.memory's 512 MiB, memtables charged to it
            self.assertRegex(text, r'(?m)^sacgate_shard_rocksdb_memtable_capacity_bytes\{shard="%s"\} 268435456$'
                             % re.escape(name))   # half of it
            self.assertRegex(text, r'(?m)^sacgate_shard_rocksdb_write_stopped\{shard="%s"\} 0$' % re.escape(name))
        for name in shards:   # every acknowledgement waits for an fdatasync (the default)
            self.assertRegex(text, r'(?m)^sacgate_shard_sync_always\{shard="%s"\} 1$' % re.escape(name))
        self.assertEqual({s["sync"] for s in self.gw.cluster_info()["shards"]}, {"always"})
        self.assertEqual(self.gw.grep_log(r"event=sync\.never"), [])
        syncs = sum(float(l.split()[-1]) for l in text.splitlines()
                    if l.startswith("sacgate_shard_rocksdb_wal_syncs_total"))
        self.assertGreaterEqual(syncs, 1, "no WAL fsync counted after a synced write")
        rdb = self.gw.cluster_info()["shards"][0]["rocksdb"]
        self.assertEqual(rdb["blockCacheCapacity"], 512 * 1024 * 1024, rdb)
        self.assertEqual(rdb["memtableCapacity"], 256 * 1024 * 1024, rdb)
        # every column family has a memtable, charged to the cache in 256 KiB entries
        self.assertGreater(rdb["blockCacheMemtableBytes"], 0, rdb)
        self.assertLessEqual(rdb["blockCacheMemtableBytes"], rdb["blockCacheBytes"], rdb)
        # any valid token may read metrics
        self.assertEqual(self.gw.get("/metrics", token="reader").status, 200)
        self.assertEqual(self.gw.get("/metrics", token="svc").status, 200)
        self.assertError(self.gw.get("/metrics", token=None), 401)

    # ---------------------------------------------------------------- registry

    def test_device_create_and_get_shape(self):
        did = sgtest.uid()
        r = self.gw.http("PUT", "/v1/devices/" + did, {"tags": {"site": "north"}})
        self.assertEqual(r.status, 201, r)
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), r.headers)
        created = r.json
        self.assertEqual(created["deviceId"], did)
        self.assertEqual(created["status"], "enabled")
        self.assertIsInstance(created["generation"], int)
        self.assertEqual(created["tags"], {"site": "north"})
        auth = created["auth"]
        self.assertEqual(auth["type"], "sas")
        keys = (auth["primaryKey"], auth["secondaryKey"])
        for k in keys:
            self.assertEqual(len(base64.b64decode(k, validate=True)), 32, k)
        self.assertNotEqual(keys[0], keys[1])

        r = self.gw.device(did)
        self.assertEqual(r.status, 200, r)
        entry = r.json
        for k in keys:
            self.assertNotIn(k, r.text, "GET returned a secret key")
        self.assertEqual(entry["deviceId"], did)
        self.assertEqual(entry["status"], "enabled")
        self.assertEqual(entry["generation"], created["generation"])
        self.assertEqual(entry["tags"], {"site": "north"})
        self.assertIsInstance(entry.get("limits"), dict, entry)
        self.assertEqual(entry["auth"].get("type"), "sas")
        self.assertNotIn("primaryKey", entry["auth"])
        self.assertNotIn("secondaryKey", entry["auth"])
        self.assertEqual(entry["connection"]["connected"], False, entry)
        self.assertEqual(entry.get("queueDepth"), 0, entry)

    def test_entry_limits_shape(self):
        """SPEC 4 'Shapes that clients depend on': limits is {maxQueuedMessages, maxQueuedBytes}."""
        dev = self.gw.create_device()
        limits = self.gw.device(dev["id"]).json.get("limits")
        self.assertIsInstance(limits, dict)
        self.assertIsInstance(limits.get("maxQueuedMessages"), int, "limits of a default device: %r" % limits)
        self.assertIsInstance(limits.get("maxQueuedBytes"), int, "limits of a default device: %r" % limits)
        dev = self.gw.create_device(limits={"maxQueuedMessages": 7})
        limits = self.gw.device(dev["id"]).json.get("limits")
        self.assertEqual(limits.get("maxQueuedMessages"), 7, limits)
        self.assertIsInstance(limits.get("maxQueuedBytes"), int, "limits with one member set: %r" % limits)

    def test_keys_returned_once_and_explicit_keys(self):
        p, s = new_key(), new_key()
        dev = self.gw.create_device(primary=p, secondary=s)
        self.assertEqual((dev["primary"], dev["secondary"]), (p, s))
        r = self.gw.device(dev["id"])
        self.assertNotIn(p, r.text)
        self.assertNotIn(s, r.text)
        c = self.connected(dev)  # the explicit key works
        c.close()

    def test_generation(self):
        dev = self.gw.create_device(primary=new_key())
        g0 = self.gw.device(dev["id"]).json["generation"]
        # changing tags only: credentials and status unchanged
        self.assertEqual(self.gw.update_device(dev, tags={"a": "b"}).status, 200)
        g1 = self.gw.device(dev["id"]).json["generation"]
        self.assertEqual(g1, g0, "generation changed although neither credentials nor status did")
        dev["primary"] = new_key()
        self.assertEqual(self.gw.update_device(dev).status, 200)
        g2 = self.gw.device(dev["id"]).json["generation"]
        self.assertGreater(g2, g1, "generation did not increase when the keys changed")
        self.assertEqual(self.gw.update_device(dev, status="disabled").status, 200)
        g3 = self.gw.device(dev["id"]).json
        self.assertEqual(g3["status"], "disabled")
        self.assertGreater(g3["generation"], g2, "generation did not increase when the status changed")

    def test_connection_state(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        entry = wait_until(lambda: (lambda e: e if e["connection"]["connected"] else None)(
            self.gw.device(dev["id"]).json), 15, "connection.connected true")
        conn = entry["connection"]
        self.assertIsInstance(conn.get("frontend"), str, conn)
        self.assertRegex(conn.get("since", ""), RFC3339)
        c.close()
        wait_until(lambda: self.gw.device(dev["id"]).json["connection"]["connected"] is False, 15,
                   "connection.connected false after disconnect")

    def test_queue_depth(self):
        dev = self.gw.create_device()
        for i in range(3):
            self.gw.send_command(dev["id"], "c%d" % i)
        self.assertEqual(self.gw.device(dev["id"]).json["queueDepth"], 3)

    def test_delete(self):
        dev = self.gw.create_device()
        r = self.gw.http("DELETE", "/v1/devices/" + dev["id"])
        self.assertEqual(r.status, 204, r)
        self.assertError(self.gw.device(dev["id"]), 404)
        self.assertError(self.gw.http("DELETE", "/v1/devices/" + dev["id"]), 404)

    def test_invalid_device_bodies(self):
        cases = {
            "primaryKey not base64": {"auth": {"type": "sas", "primaryKey": "short!", "secondaryKey": new_key()}},
            "unknown status": {"status": "sleeping"},
            "negative limit": {"limits": {"maxQueuedMessages": -1}},
            "tags not an object": {"tags": "not an object"},
            "unknown auth type": {"auth": {"type": "password", "password": "x"}},
            "unknown member": {"colour": "blue"},
        }
        for what, body in cases.items():
            with self.subTest(what):
                did = sgtest.uid()
                r = self.gw.http("PUT", "/v1/devices/" + did, body)
                self.assertError(r, 400)
                self.assertError(self.gw.device(did), 404)
        did = sgtest.uid()
        self.assertError(self.gw.http("PUT", "/v1/devices/" + did, b"{oops"), 400, "InvalidJson")
        self.assertError(self.gw.device(did), 404)

    def test_sas_keys_must_be_32_bytes(self):
        """SPEC 3: sas keys are base64 of 32 bytes."""
        cases = {
            "primaryKey of 16 bytes": {"auth": {"type": "sas", "primaryKey": base64.b64encode(b"x" * 16).decode(),
                                                "secondaryKey": new_key()}},
            "secondaryKey of 64 bytes": {"auth": {"type": "sas", "primaryKey": new_key(),
                                                  "secondaryKey": base64.b64encode(b"y" * 64).decode()}},
        }
        for what, body in cases.items():
            with self.subTest(what):
                did = sgtest.uid()
                r = self.gw.http("PUT", "/v1/devices/" + did, body)
                self.assertError(r, 400)

    def test_invalid_device_ids(self):
        for did in ("bad~id", "a" * 129, "sp%20ace"):
            r = self.gw.http("PUT", "/v1/devices/" + did, {})
            self.assertError(r, 400)

    def test_nul_in_a_device_id_is_refused(self):
        """%00 must not cut the id short (it would act on another device)."""
        victim = self.gw.create_device()
        vid = victim["id"]
        for method, path in (("DELETE", "/v1/devices/%s%%00x" % vid), ("GET", "/v1/devices/%s%%00x" % vid),
                             ("PUT", "/v1/devices/%s%%00x" % vid), ("POST", "/v1/devices/%s%%00x/messages" % vid)):
            r = self.gw.http(method, path, {} if method in ("PUT", "POST") else None)
            self.assertError(r, 400, "InvalidDeviceId")
        self.assertEqual(self.gw.device(vid).status, 200, "the device the truncated id names is untouched")
        self.assertEqual(self.gw.pending(vid), [])
        r = self.gw.get("/v1/telemetry?partition=0&max=1%00")
        self.assertError(r, 400)

    def test_request_paths_cannot_forge_log_lines(self):
        forged = "event=forged-by-http"
        r = self.gw.get("/nope%0Ats=2026-01-01T00:00:00Z%20level=error%20comp=store%20" + forged)
        self.assertError(r, 404)
        time.sleep(0.5)
        for f in self.gw.log_files():
            with open(f, errors="replace") as fh:
                for line in fh:
                    self.assertFalse(line.startswith("ts=2026-01-01"), "forged log line in %s: %r" % (f, line))
                    if forged in line:
                        self.assertIn("event=http.request", line, line)

    def test_unknown_device_get_404(self):
        self.assertError(self.gw.device(sgtest.uid("nobody")), 404)

    def test_keep_alive_connection(self):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", self.gw.admin_port, timeout=30)
        try:
            for path in ("/healthz", "/v1/cluster", "/v1/devices/%s" % sgtest.uid("none"), "/readyz"):
                conn.request("GET", path, headers={"Authorization": "Bearer " + self.gw.admin_token})
                r = conn.getresponse()
                r.read()
                self.assertIn(r.status, (200, 404), path)
        finally:
            conn.close()

    def test_long_polls_do_not_block_the_api(self):
        """Several parked telemetry long polls; other calls are still answered meanwhile."""
        import threading
        part = self.gw.partitions()[0]
        recs = self.gw.read_partition(part)
        after = recs[-1]["offset"] + 1000000 if recs else 1000000  # far beyond the end: nothing arrives
        done = []

        def poll():
            try:
                self.gw.telemetry(part, after=after, wait=8, timeout=60)
            finally:
                done.append(1)

        threads = [threading.Thread(target=poll, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(1)
        self.assertEqual(self.gw.http("GET", "/healthz", token=None, timeout=60).status, 200)
        self.assertEqual(self.gw.create_device()["entry"]["status"], "enabled")
        self.assertEqual(self.gw.get("/v1/cluster", timeout=60).status, 200)
        self.assertEqual(done, [], "the other calls were only answered after the long polls ended")
        for t in threads:
            t.join(60)

    # ---------------------------------------------------------------- errors

    def test_unknown_paths_404(self):
        for path in ("/nope", "/v1/nope", "/v1/devices/x/nope", "/v2/cluster", "/v1/cluster/x"):
            r = self.gw.get(path)
            self.assertError(r, 404)

    def test_wrong_method_405(self):
        for method, path in (("POST", "/healthz"), ("DELETE", "/v1/cluster"), ("POST", "/v1/telemetry"),
                             ("PATCH", "/v1/devices/x"), ("PUT", "/v1/devices/x/messages")):
            r = self.gw.http(method, path, {} if method in ("POST", "PUT", "PATCH") else None)
            self.assertError(r, 405)

    def test_unknown_query_parameters_400(self):
        # a misspelt parameter is refused, not read as absent (?parition=1 read partition 0)
        did = self.gw.create_device()["id"]
        for path in ("/v1/telemetry?parition=1", "/v1/telemetry?partition=0&maxx=5", "/v1/feedback?wiat=1",
                     "/v1/devices?limt=2", "/v1/devices/%s?x=1" % did, "/v1/inquiries?max=1&timeout=1",
                     "/v1/cluster?verbose=1", "/v1/telemetry?%00bad=1"):
            r = self.gw.get(path)
            self.assertError(r, 400, "InvalidQuery")
            self.assertIn("is not one this endpoint reads", r.json["message"], path)
        self.assertIn("'parition'", self.gw.get("/v1/telemetry?parition=1").json["message"])
        r = self.gw.http("POST", "/v1/devices/%s/messages?ttl=5" % did, {"payload": "x"})
        self.assertError(r, 400, "InvalidQuery")
        self.assertEqual(self.gw.pending(did), [], "nothing was queued by the refused request")
        # the parameters an endpoint reads still pass, and probes and scrapers may add their own
        self.assertEqual(self.gw.get("/v1/telemetry?partition=0&after=-1&max=1&wait=0&min=1").status, 200)
        self.assertEqual(self.gw.get("/v1/devices?limit=1&tag=a:b").status, 200)
        self.assertEqual(self.gw.get("/healthz?probe=k8s").status, 200)
        self.assertEqual(self.gw.get("/metrics?format=text").status, 200)

    def test_body_over_256k_413(self):
        did = sgtest.uid()
        big = json.dumps({"tags": {"pad": "x" * (300 * 1024)}})
        self.assertError(self.gw.http("PUT", "/v1/devices/" + did, big), 413)
        self.assertError(self.gw.device(did), 404)
        dev = self.gw.create_device()
        big = json.dumps({"payload": "y" * (300 * 1024)})
        self.assertError(self.gw.http("POST", "/v1/devices/%s/messages" % dev["id"], big), 413)
        self.assertEqual(self.gw.pending(dev["id"]), [])

    def test_cluster_requires_admin(self):
        r = self.gw.get("/v1/cluster")
        self.assertEqual(r.status, 200, r)
        info = r.json
        for k in ("frontends", "shards", "ring", "routers"):
            self.assertIn(k, info)
        for s in info["shards"]:
            for k in ("name", "partition", "devices", "sessions"):
                self.assertIn(k, s)
        for tok in ("svc", "reader", "writer"):
            self.assertError(self.gw.get("/v1/cluster", token=tok), 403)
        self.assertError(self.gw.get("/v1/cluster", token=None), 401)


class UnsyncedShardTest(GatewayTest):
    """A shard started with store.sync=never does not wait for the disk before it acknowledges:
    an operator sees it in GET /v1/cluster (sync), on /metrics (sacgate_shard_sync_always 0) and
    in a warning at the start, since a crash of the machine can lose what was acknowledged."""

    ENV = {"SACGATE_STORE_SYNC": "never"}

    def test_the_shard_says_it_does_not_fsync(self):
        shards = self.gw.cluster_info()["shards"]
        self.assertEqual({s["sync"] for s in shards}, {"never"})
        text = self.gw.get("/metrics").text
        for s in shards:
            self.assertRegex(text, r'(?m)^sacgate_shard_sync_always\{shard="%s"\} 0$' % re.escape(s["name"]))
        hits = self.gw.wait_log(r"level=warn comp=store event=sync\.never shard=%s " % re.escape(shards[0]["name"]))
        self.assertIn("can lose", hits[0])
        # it still takes and acknowledges data
        dev = self.gw.create_device()
        self.connected(dev).send(b"unsynced")
        self.assertEqual(len(self.gw.wait_records(dev["id"], 1)), 1)


class AdminWithoutRouterTest(GatewayTest):
    """An admin whose router is unreachable answers 503 to every cluster request, quickly and
    for as long as it runs: its outgoing queue fills (tiny high-water mark) and each request is
    refused; this once freed a request while still reading it (ASan builds catch it)."""

    def test_requests_fail_cleanly_while_the_router_is_down(self):
        import os
        import subprocess
        port = sgtest.free_port()
        log = open(os.path.join(self.gw.dir, "admin-orphan.log"), "ab")
        p = subprocess.Popen([sgtest.BIN, "admin", "--routers", "tcp://127.0.0.1:1", "--admin-port", str(port),
                              "--tokens", os.path.join(self.gw.dir, "tokens"), "--set", "cluster.hwm=100",
                              "--set", "cluster.insecure=true", "--set", "cluster.request_timeout=2"],
                             stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.poll() is None and p.terminate(), p.wait(15)))
        wait_until(lambda: sgtest._tcp_open(port), 20, "the admin to listen")
        time.sleep(3)   # its ring probes fill the queue to the dead router
        for i in range(40):
            r = sgtest.http_request(port, "GET", "/v1/devices/d%d" % i, token=self.gw.admin_token, timeout=30)
            self.assertIn(r.status, (503, 504), r)
            self.assertIn("error", r.json)
        r = sgtest.http_request(port, "GET", "/readyz", timeout=30)
        self.assertEqual(r.status, 503, r)
        self.assertIsNone(p.poll(), "the admin died")
        p.terminate()
        self.assertEqual(p.wait(15), 0, "the admin did not stop cleanly on SIGTERM")


if __name__ == "__main__":
    sgtest.main()
