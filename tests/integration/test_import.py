#!/usr/bin/python3
"""POST /v1/devices:import: NDJSON bulk registration streamed through the admin to the shards.
Imported devices are real (they connect with their SAS keys), per-line errors name the right
lines while the other lines go in, modes, generated keys, revocation, bodies larger than
admin.max_body, chunked uploads. Both topologies; the cluster one also checks that a shard
refuses entries an admin with another ring sends it (WrongShard)."""

import base64
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import BIN, LOOPBACK, GatewayTest, free_port, new_key, uid, wait_until

IMPORT = "/v1/devices:import"


def key_of(device_id, which=0):
    """A SAS key derived from the id (so a test need not keep thousands of keys)."""
    h = hashlib.sha512(device_id.encode()).digest()
    return base64.b64encode(h[32 * which:32 * which + 32]).decode()


def line(device_id, **fields):
    entry = {"deviceId": device_id}
    entry.update(fields)
    return json.dumps(entry, separators=(",", ":"))


def keyed_line(device_id, **fields):
    return line(device_id, auth={"type": "sas", "primaryKey": key_of(device_id), "secondaryKey": key_of(device_id, 1)},
                **fields)


class ImportClient:
    """POST /v1/devices:import for the test classes below."""

    def post(self, body, token="admin", chunk=None, port=None, timeout=120):
        """POST the body (bytes or str); chunk=n sends it chunked, n bytes a chunk. Returns
        (status, parsed JSON or None)."""
        if isinstance(body, str):
            body = body.encode()
        tok = self.gw.admin_token if token == "admin" else self.gw.tokens.get(token, token)
        hdrs = {"Content-Type": "application/x-ndjson"}
        if tok is not None:
            hdrs["Authorization"] = "Bearer " + tok
        conn = http.client.HTTPConnection(LOOPBACK, port or self.gw.admin_port, timeout=timeout)
        try:
            if chunk:
                pieces = (body[i:i + chunk] for i in range(0, len(body), chunk))
                conn.request("POST", IMPORT, body=pieces, headers=hdrs, encode_chunked=True)
            else:
                try:
                    conn.request("POST", IMPORT, body=body, headers=hdrs)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # refused at the headers: the answer is still there to read
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(data.decode())
        except ValueError:
            parsed = None
        return r.status, parsed

    def imported(self, body, **kw):
        status, res = self.post(body, **kw)
        self.assertEqual(status, 200, res)
        for k in ("lines", "created", "updated", "failed", "errors", "errorsTruncated", "generatedKeys"):
            self.assertIn(k, res)
        self.assertEqual(res["lines"], res["created"] + res["updated"] + res["failed"], res)
        return res

    def errors_by_line(self, res):
        return {e["line"]: e for e in res["errors"]}

    def assertRegistered(self, device_id, registered=True):
        r = self.gw.device(device_id)
        self.assertEqual(r.status, 200 if registered else 404, "GET %s: %r" % (device_id, r))
        return r.json


class ImportTest(ImportClient, GatewayTest):

    def test_thousands_of_devices_are_real(self):
        prefix = uid("bulk")
        ids = ["%s-%05d" % (prefix, i) for i in range(3000)]
        res = self.imported("\n".join(keyed_line(d, tags={"n": str(i)}) for i, d in enumerate(ids)) + "\n")
        self.assertEqual((res["lines"], res["created"], res["updated"], res["failed"]), (3000, 3000, 0, 0), res)
        self.assertEqual(res["errors"], [])
        self.assertEqual(res["generatedKeys"], [], "keys were supplied; none may be generated")
        for i in (0, 1, 1234, 2998, 2999):
            entry = self.assertRegistered(ids[i])
            self.assertEqual(entry["tags"], {"n": str(i)})
            self.assertNotIn("primaryKey", entry["auth"])
        # they authenticate with the keys of the import: primary and secondary
        for i, which in ((7, 0), (1500, 1), (2999, 0)):
            c = self.device({"id": ids[i], "primary": key_of(ids[i], which)}).connect_ok()
            c.send(b"hello")
            c.close()
        wait_until(lambda: sum(s.get("devices", 0) for s in self.gw.cluster_info()["shards"]) >= 3000, 15,
                   "the shards to count the devices")

    def test_create_or_update_updates_existing_devices(self):
        p, s = new_key(), new_key()
        dev = self.gw.create_device(primary=p, secondary=s, tags={"v": "1"})
        gen = self.assertRegistered(dev["id"])["generation"]
        res = self.imported(line(dev["id"], tags={"v": "2"}) + "\n")   # no auth: keys stay
        self.assertEqual((res["created"], res["updated"], res["failed"]), (0, 1, 0), res)
        self.assertEqual(res["generatedKeys"], [])
        entry = self.assertRegistered(dev["id"])
        self.assertEqual(entry["tags"], {"v": "2"})
        self.assertEqual(entry["generation"], gen, "tags only: the generation stays")
        self.connected(dev).close()   # the old key still works
        # twice in one body: the second line sees the first
        did = uid()
        res = self.imported(keyed_line(did, tags={"a": "1"}) + "\n" + line(did, tags={"a": "2"}) + "\n")
        self.assertEqual((res["created"], res["updated"], res["failed"]), (1, 1, 0), res)
        self.assertEqual(self.assertRegistered(did)["tags"], {"a": "2"})
        self.connected({"id": did, "primary": key_of(did)}).close()

    def test_import_modes(self):
        existing = self.gw.create_device(primary=new_key(), secondary=new_key())
        fresh, missing, other = uid(), uid(), uid()
        body = "\n".join([
            keyed_line(existing["id"], importMode="create"),      # 1: DeviceExists
            keyed_line(missing, importMode="update"),             # 2: DeviceNotFound
            keyed_line(fresh, importMode="create"),               # 3: created
            line(existing["id"], importMode="update", tags={"x": "y"}),   # 4: updated
            keyed_line(other, importMode="createOrUpdate"),       # 5: created
            keyed_line(uid(), importMode="sometimes"),            # 6: InvalidImportMode
        ]) + "\n"
        res = self.imported(body)
        self.assertEqual((res["lines"], res["created"], res["updated"], res["failed"]), (6, 2, 1, 3), res)
        errs = self.errors_by_line(res)
        self.assertEqual([e["line"] for e in res["errors"]], [1, 2, 6], "errors in line order")
        self.assertEqual((errs[1]["error"], errs[1]["deviceId"]), ("DeviceExists", existing["id"]))
        self.assertEqual((errs[2]["error"], errs[2]["deviceId"]), ("DeviceNotFound", missing))
        self.assertEqual(errs[6]["error"], "InvalidImportMode")
        for e in errs.values():
            self.assertIsInstance(e["message"], str)
            self.assertTrue(e["message"])
        self.assertRegistered(missing, False)
        self.assertRegistered(fresh)
        self.assertRegistered(other)
        self.assertEqual(self.assertRegistered(existing["id"])["tags"], {"x": "y"})
        self.connected(existing).close()   # create on an existing device changed nothing

    def test_per_line_errors_name_their_lines(self):
        good = [uid() for _ in range(4)]
        long_pad = "x" * (300 * 1024)   # over admin.max_body (256 KiB) on one line
        lines = [
            keyed_line(good[0]),                         # 1
            "",                                          # 2 blank: ignored, but counted
            "{not json",                                 # 3 InvalidJson
            json.dumps({"status": "enabled"}),           # 4 no deviceId
            keyed_line("bad~id"),                        # 5 InvalidDeviceId
            "   \t ",                                    # 6 blank
            keyed_line(good[1]),                         # 7
            line(uid(), tags={"pad": long_pad}),         # 8 LineTooLong
            keyed_line(uid(), colour="blue"),            # 9 unknown member: the store's own error
            "[1, 2]",                                    # 10 not an object
            keyed_line(good[2]),                         # 11
            line(uid(), auth={"type": "sas", "primaryKey": "short"}),   # 12 bad key
            keyed_line("a" * 129),                       # 13 id too long
            keyed_line(good[3]),                         # 14, no newline at the end
        ]
        res = self.imported("\n".join(lines))
        self.assertEqual((res["lines"], res["created"], res["failed"]), (12, 4, 8), res)
        self.assertEqual([e["line"] for e in res["errors"]], [3, 4, 5, 8, 9, 10, 12, 13], "errors in line order")
        self.assertFalse(res["errorsTruncated"])
        errs = self.errors_by_line(res)
        want = {3: "InvalidJson", 4: "InvalidDeviceId", 5: "InvalidDeviceId", 8: "LineTooLong", 9: "InvalidDevice",
                10: "InvalidJson", 12: "InvalidDevice", 13: "InvalidDeviceId"}
        self.assertEqual({n: e["error"] for n, e in errs.items()}, want, res["errors"])
        self.assertIsNone(errs[3]["deviceId"])
        self.assertIsNone(errs[4]["deviceId"])
        self.assertEqual(errs[5]["deviceId"], "bad~id")
        self.assertIsNone(errs[8]["deviceId"])
        self.assertIn("colour", errs[9]["message"])
        self.assertIn("primaryKey", errs[12]["message"])
        for d in good:
            self.assertRegistered(d)
        self.connected({"id": good[3], "primary": key_of(good[3])}).close()

    def test_errors_list_is_capped(self):
        res = self.imported("{oops\n" * 1100 + keyed_line(uid()) + "\n")
        self.assertEqual((res["lines"], res["created"], res["failed"]), (1101, 1, 1100), res)
        self.assertEqual(len(res["errors"]), 1000)
        self.assertTrue(res["errorsTruncated"])

    def test_the_listed_errors_are_the_lowest_lines(self):
        # A shard's failures come when its batch returns, after the lines the admin refused on
        # reading: the list still holds the 1,000 lowest lines. Before, the first 1,000 to come
        # were kept, and lines 1-1,000 here (DeviceExists, from the shards) were not listed.
        pre = uid()
        first = "".join(json.dumps({"deviceId": "%s-%d" % (pre, i)}) + "\n" for i in range(1000))
        self.assertEqual(self.imported(first)["created"], 1000)
        again = "".join(json.dumps({"deviceId": "%s-%d" % (pre, i), "importMode": "create"}) + "\n"
                        for i in range(1000))
        res = self.imported(again + "not json\n" * 1000)
        self.assertEqual((res["failed"], len(res["errors"]), res["errorsTruncated"]), (2000, 1000, True))
        lines = [e["line"] for e in res["errors"]]
        self.assertEqual((lines[0], lines[-1], len(set(lines)), lines == sorted(lines)), (1, 1000, 1000, True))
        self.assertEqual({e["error"] for e in res["errors"]}, {"DeviceExists"})

    def test_generated_keys_are_in_line_order(self):
        # Lines go to their shards in batches, and the shards answer in any order: the answer
        # still lists the generated keys (like the errors) by line.
        ids = [uid() for _ in range(3000)]
        res = self.imported("\n".join(line(d) for d in ids) + "\n")
        self.assertEqual((res["created"], res["failed"]), (3000, 0), res)
        self.assertEqual([k["line"] for k in res["generatedKeys"]], list(range(1, 3001)))
        self.assertEqual([k["deviceId"] for k in res["generatedKeys"]], ids)

    def test_generated_keys_are_returned_once_and_work(self):
        ids = [uid() for _ in range(5)]
        psk = uid()
        body = "\n".join([line(d) for d in ids[:4]] +
                         [line(ids[4], auth={"type": "sas", "primaryKey": key_of(ids[4])})] +
                         [line(psk, auth={"type": "psk"})]) + "\n"
        res = self.imported(body)
        self.assertEqual((res["created"], res["failed"]), (6, 0), res)
        keys = {k["deviceId"]: k for k in res["generatedKeys"]}
        self.assertEqual(sorted(keys), sorted(ids + [psk]))
        for n, d in enumerate(ids[:4]):
            k = keys[d]
            self.assertEqual(k["line"], n + 1)
            for which in ("primaryKey", "secondaryKey"):
                self.assertEqual(len(base64.b64decode(k[which], validate=True)), 32, k)
        # only the key the line left out was generated
        self.assertNotIn("primaryKey", keys[ids[4]])
        self.assertIn("secondaryKey", keys[ids[4]])
        self.assertIn("key", keys[psk])
        entry = self.gw.device(ids[0])
        self.assertNotIn(keys[ids[0]]["primaryKey"], entry.text, "GET shows a secret")
        self.connected({"id": ids[0], "primary": keys[ids[0]]["primaryKey"]}).close()
        self.connected({"id": ids[1], "primary": keys[ids[1]]["secondaryKey"]}).close()
        self.connected({"id": ids[4], "primary": keys[ids[4]]["secondaryKey"]}).close()

    def test_authentication_and_roles(self):
        did = uid()
        body = keyed_line(did) + "\n"
        status, res = self.post(body, token=None)
        self.assertEqual(status, 401, res)
        self.assertEqual(res["error"], "Unauthorized")
        status, res = self.post(body, token="reader")
        self.assertEqual(status, 403, res)
        self.assertEqual(res["error"], "Forbidden")
        status, res = self.post(body, token="svc")
        self.assertEqual(status, 403, res)
        self.assertRegistered(did, False)
        res = self.imported(body, token="writer")
        self.assertEqual(res["created"], 1)
        self.assertError(self.gw.http("GET", IMPORT), 405)

    def test_empty_body(self):
        res = self.imported(b"")
        self.assertEqual(res, {"lines": 0, "created": 0, "updated": 0, "failed": 0, "errors": [],
                               "errorsTruncated": False, "generatedKeys": []})
        res = self.imported(b"\n\n   \n")
        self.assertEqual(res["lines"], 0, res)

    def test_body_larger_than_max_body_and_chunked(self):
        prefix = uid("big")
        ids = ["%s-%05d" % (prefix, i) for i in range(12000)]
        body = ("\n".join(keyed_line(d) for d in ids) + "\n").encode()
        self.assertGreater(len(body), 2 * 1024 * 1024)
        res = self.imported(body)
        self.assertEqual((res["lines"], res["created"], res["failed"]), (12000, 12000, 0), res)
        for i in (0, 5999, 11999):
            self.assertRegistered(ids[i])
        # chunked, in pieces that split lines (and their UTF-8) anywhere; the same lines update
        body = ("\n".join(keyed_line(d, tags={"city": "Zürich"}) for d in ids[:3000]) + "\n").encode()
        res = self.imported(body, chunk=997)
        self.assertEqual((res["lines"], res["updated"], res["failed"]), (3000, 3000, 0), res)
        self.assertEqual(self.assertRegistered(ids[2999])["tags"], {"city": "Zürich"})
        res = self.imported(keyed_line(uid()).encode() + b"\n", chunk=3)
        self.assertEqual(res["created"], 1, res)

    def test_import_revokes_a_connected_device(self):
        dev = self.gw.create_device(primary=new_key(), secondary=new_key())
        c = self.connected(dev)
        wait_until(lambda: self.gw.device(dev["id"]).json["connection"]["connected"], 15, "the session to show")
        res = self.imported(line(dev["id"], status="disabled") + "\n")
        self.assertEqual((res["updated"], res["failed"]), (1, 0), res)
        self.assertTrue(c.wait_closed(20), "the disabled device's connection stayed open")
        self.assertEqual(self.device(dev).connect(), 5, "a disabled device was let in again")
        # and new keys by import also close the session that used the old ones
        res = self.imported(line(dev["id"], status="enabled") + "\n")
        self.assertEqual(res["updated"], 1, res)
        c2 = self.connected(dev)
        res = self.imported(line(dev["id"], auth={"type": "sas", "primaryKey": new_key(),
                                                  "secondaryKey": new_key()}) + "\n")
        self.assertEqual(res["updated"], 1, res)
        self.assertTrue(c2.wait_closed(20), "the connection with revoked keys stayed open")


@unittest.skipUnless(sgtest.TOPOLOGY == "all", "runs with the all-in-one topology")
class ImportBusyShardTest(ImportClient, GatewayTest):
    """A shard whose queue is tiny (store.max_batch=1: 8 frames) and that holds little for it
    (store.hold_bytes at its least, 64 KiB) refuses operator writes as busy while several imports
    run at once; the admin sends them again, and every line goes in."""

    TOPOLOGY = "all"
    SETS = ("store.max_batch=1", "store.hold_bytes=65536", "log.level=debug")

    def test_busy_shard_is_retried(self):
        results = []

        def run(prefix):
            body = "\n".join(keyed_line("%s-%05d" % (prefix, i)) for i in range(6000)) + "\n"
            results.append(self.post(body))

        mark = self.gw.log_mark()
        threads = [threading.Thread(target=run, args=(uid("busy"),)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(len(results), 4)
        for status, res in results:
            self.assertEqual(status, 200, res)
            self.assertEqual((res["created"], res["failed"]), (6000, 0), res["errors"][:5])
        self.gw.wait_log("event=bridge.busy_retry", mark)


class BusyBookkeepingTest(ImportClient, GatewayTest):
    """The same busy shard refuses subscription changes too (SUBSCRIBE is refused at the
    store.hold_bytes backstop, like the operators' writes): the frontend sends the connection's
    subscription state again and the device stays connected; its last subscription holds, and a
    command reaches it afterwards. (Before, the frontend closed the connection: session.unavailable
    lost=SUBSCRIBE.)"""

    TOPOLOGY = "all"
    SETS = ("store.max_batch=1", "store.hold_bytes=65536")

    def test_refused_subscriptions_are_sent_again(self):
        gw = self.gw
        dev = gw.create_device()
        c = self.connected(dev)
        mark = gw.log_mark()
        results, done = [], threading.Event()

        def run(prefix):
            body = "\n".join(keyed_line("%s-%05d" % (prefix, i)) for i in range(6000)) + "\n"
            results.append(self.post(body))

        threads = [threading.Thread(target=run, args=(uid("bk"),)) for _ in range(4)]
        for t in threads:
            t.start()
        toggles = 0
        # subscription changes while the imports fill the shard's queue, until one was refused
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not (toggles >= 40 and gw.grep_log(r"event=bookkeeping\.busy", mark)):
            # (devicebound: a method subscription's SUBACK waits for the shard, which paces it)
            c.subscribe()
            c.unsubscribe()
            toggles += 1
            if all(not t.is_alive() for t in threads):
                for t in threads:
                    t.join()
                threads = [threading.Thread(target=run, args=(uid("bk"),)) for _ in range(4)]
                for t in threads:
                    t.start()
        done.set()
        for t in threads:
            t.join(120)
        refused = gw.grep_log(r"event=bookkeeping\.busy .*lost=SUBSCRIBE", mark)
        sgtest.log("%d subscription rounds, %d refusals sent again" % (toggles, len(refused)))
        self.assertTrue(refused, "no subscription change was refused in %d rounds" % toggles)
        self.assertFalse(c.closed.is_set(), "the device was disconnected (rc %r)" % getattr(c, "disconnect_rc", None))
        self.assertEqual(gw.grep_log(r"event=session\.unavailable", mark), [])
        for status, res in results:
            self.assertEqual(status, 200, res)
        # the last state wins at the shard: subscribed, so a command arrives (and a method call)
        c.serve_methods(lambda name, payload, rid: (200, b"{}"))
        c.subscribe_commands()
        sgtest.wait_until(lambda: gw.device(dev["id"]).json.get("connection", {}).get("subscribed"), 30,
                          "the shard has the devicebound subscription")
        mid = gw.send_command(dev["id"], "after-busy").json["messageId"]
        cmds = c.wait_commands(1)
        self.assertEqual((cmds[0]["props"]["$.mid"], cmds[0]["payload"]), (mid, b"after-busy"))
        r = gw.http("POST", "/v1/devices/%s/methods/m" % dev["id"], body={"connectTimeoutSeconds": 0}, token="svc")
        self.assertEqual(r.status, 200, r)
        self.assertFalse(c.closed.is_set())


@unittest.skipUnless(sgtest.TOPOLOGY == "cluster", "runs with the cluster topology")
class ImportWrongRingTest(ImportClient, GatewayTest):
    """An admin behind a router configured with other vnodes addresses shards from another ring:
    the shards refuse what is not theirs (WrongShard) and write nothing for it. So do they for an
    operator's write to one device (503 WrongShard) and for a device connecting through a frontend
    behind that router (CONNACK 3, server unavailable: it tries again; before, the shard that does
    not have the device answered 5, not authorized, which devices take as final)."""

    TOPOLOGY = "cluster"

    def start(self, args, name):
        log = open(os.path.join(self.gw.dir, name + ".log"), "ab")
        p = subprocess.Popen([BIN] + args + ["--set", "cluster.curve_cert=%s/curve/{role}.cert" % self.gw.dir],
                             stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.poll() is None and p.terminate(), p.wait(15)))
        return p

    def odd_router_and_admin(self):
        """A router with 3 vnodes a shard (the shards have 1,024) and an admin behind it: the
        router's endpoint and the admin's port."""
        rport, aport = free_port(), free_port()
        self.start(["router", "--name", "router-odd", "--bind", "tcp://127.0.0.1:%d" % rport,
                    "--shards", self.gw.ports_env["SHARDS"], "--set", "cluster.vnodes=3"], "router-odd")
        self.start(["admin", "--routers", "tcp://127.0.0.1:%d" % rport, "--admin-port", str(aport),
                    "--tokens", os.path.join(self.gw.dir, "tokens")], "admin-odd")
        wait_until(lambda: sgtest.http_request(aport, "GET", "/readyz", timeout=5).status == 200, 30,
                   "the second admin to be ready")
        return "tcp://127.0.0.1:%d" % rport, aport

    def test_wrong_ring_is_refused(self):
        _, aport = self.odd_router_and_admin()
        ids = [uid("ring") for _ in range(200)]

        def attempt():
            status, res = self.post("\n".join(keyed_line(d) for d in ids) + "\n", port=aport)
            return res if status == 200 else None   # 503 until its ring is known

        res = wait_until(attempt, 30, "an import through the second admin")
        self.assertEqual(res["lines"], 200, res)
        wrong = {e["deviceId"] for e in res["errors"] if e["error"] == "WrongShard"}
        self.assertEqual(len(res["errors"]), len(wrong), res["errors"][:5])
        self.assertTrue(wrong, "3 vnodes against 1024 and no device on another shard: %r" % res)
        self.assertEqual(res["created"] + len(wrong), 200, res)
        for d in ids:
            # the cluster's own admin finds exactly the devices written where its routers look
            self.assertEqual(self.gw.device(d).status, 404 if d in wrong else 200, d)

    def test_wrong_ring_connects_and_writes_are_refused(self):
        router, aport = self.odd_router_and_admin()
        devs = [self.gw.create_device() for _ in range(40)]
        # an update through the odd admin: written by the shard that has the device, refused by
        # the other one, which has nothing written for it
        wrong = set()
        for dev in devs:
            body = {"auth": {"type": "sas", "primaryKey": dev["primary"], "secondaryKey": dev["secondary"]},
                    "tags": {"via": "odd"}}
            r = sgtest.http_request(aport, "PUT", "/v1/devices/%s" % dev["id"], body, self.gw.admin_token)
            if r.status == 503 and r.json.get("error") == "WrongShard":
                wrong.add(dev["id"])
            else:
                self.assertEqual(r.status, 200, r)
        self.assertTrue(wrong and len(wrong) < len(devs), "3 vnodes against 1,024 put some devices elsewhere")
        for dev in devs:
            tags = self.gw.device(dev["id"]).json.get("tags", {})
            self.assertEqual(tags.get("via"), None if dev["id"] in wrong else "odd", dev["id"])
        self.assertTrue(self.gw.grep_log(r"event=device\.wrong_shard "))
        # a frontend behind the odd router: devices it sends to the wrong shard get CONNACK 3
        d = self.gw.dir
        port = free_port()
        self.start(["frontend", "--name", "fe-odd", "--bind", "127.0.0.1", "--mqtt-port", str(port), "--ws-port", "0",
                    "--cert", os.path.join(d, "server.crt"), "--key", os.path.join(d, "server.key"),
                    "--routers", router], "fe-odd")
        log = os.path.join(d, "fe-odd.log")
        wait_until(lambda: b"event=ready frontend=fe-odd " in open(log, "rb").read() or None, 30,
                   "the odd frontend to listen")
        for dev in devs[:12]:
            raw = self.raw(port=port)
            code = raw.connect(dev["id"], sgtest.sas_token(dev["id"], dev["primary"]))
            self.assertEqual(code, 3 if dev["id"] in wrong else 0, dev["id"])
            raw.close()


if __name__ == "__main__":
    sgtest.main()
