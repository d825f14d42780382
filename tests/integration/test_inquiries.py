#!/usr/bin/python3
"""Inquiries (both topologies): a device asks on devices/{id}/inquiries/{name}/?$rid={rid}, a
control system claims with GET /v1/inquiries and answers with POST /v1/inquiries/{id}/response,
and the device gets the answer on devices/{id}/inquiries/res/{status}/?$rid={rid}.

Checked with paho-mqtt devices: ask -> claim -> answer -> the device receives the answer with its
rid and status (JSON payloads passed as JSON, others as base64); a second answer is 404; two
claimants polling at once never get the same inquiry, and one claimed but not answered is handed
out again after its lease; a long-poll wakes when an inquiry arrives (the inquiry would time out
before the poll's own end otherwise); an unanswered inquiry gets 504 on the device and its id
404; a device offline when the answer comes: delivered false; a restart of every shard between
PUBACK and claim loses nothing; foreign topics are refused (SUBACK 0x80, a publish closes the
connection); bad bodies and queries 400; 401 and 403."""

import base64
import json
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, MqttDevice, restart_shard, uid, wait_until  # noqa: E402

TIMEOUT = 6    # store.inquiry_timeout
LEASE = 2      # store.inquiry_lease


class InquiriesTest(GatewayTest):
    ENV = {"SACGATE_STORE_INQUIRY_TIMEOUT": str(TIMEOUT), "SACGATE_STORE_INQUIRY_LEASE": str(LEASE)}

    def device(self):
        d = self.gw.create_device()
        dev = MqttDevice(self.gw, d["id"], key=d["primary"])
        dev.connect_ok()
        self.addCleanup(dev.close)
        return dev

    def ask(self, dev, name, payload, rid, qos=1):
        mid = dev.publish("devices/%s/inquiries/%s/?$rid=%s" % (dev.device_id, name, rid), payload, qos)
        if qos:
            dev.wait_acked([mid])

    def claim(self, wait=0, max=100, token="svc"):
        r = self.gw.get("/v1/inquiries?wait=%d&max=%d" % (wait, max), token=token, timeout=wait + 30)
        self.assertEqual(r.status, 200, r)
        return r.json["inquiries"]

    def claim_of(self, dev, n=1, timeout=20):
        """Claim until n inquiries of dev are in hand (others' are left to their leases)."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            got += [q for q in self.claim(wait=2) if q["deviceId"] == dev.device_id]
        self.assertEqual(len(got), n, got)
        return got

    def answer(self, iid, status=200, payload=None, expect=200, token="svc"):
        r = self.gw.http("POST", "/v1/inquiries/%s/response" % iid, {"status": status, "payload": payload}, token=token)
        self.assertEqual(r.status, expect, r)
        return r.json

    def answers(self, dev):
        pre = "devices/%s/inquiries/res/" % dev.device_id
        with dev.cond:
            return [(t[len(pre):], p) for t, p, *_ in dev.messages if t.startswith(pre)]

    def test_ask_claim_answer(self):
        dev = self.device()
        self.assertEqual(dev.subscribe("devices/%s/inquiries/res/#" % dev.device_id), (0,))
        self.ask(dev, "getConfig", json.dumps({"want": ["a", "b"]}), "42")
        self.ask(dev, "blob.v2", b"\x00\x01\xff", "r-7", qos=0)
        qs = sorted(self.claim_of(dev, 2), key=lambda q: q["name"])
        self.assertEqual([q["name"] for q in qs], ["blob.v2", "getConfig"])
        self.assertEqual((qs[1]["payload"], qs[1]["payloadEncoding"]), ({"want": ["a", "b"]}, "json"))
        self.assertEqual((base64.b64decode(qs[0]["payload"]), qs[0]["payloadEncoding"]), (b"\x00\x01\xff", "base64"))
        for q in qs:
            self.assertTrue(q["receivedAt"] < q["expiresAt"], q)
        self.assertEqual(self.answer(qs[1]["inquiryId"], 200, {"a": 1, "b": [2]}), {"delivered": True})
        self.assertEqual(self.answer(qs[0]["inquiryId"], 404, "no such blob"), {"delivered": True})
        wait_until(lambda: len(self.answers(dev)) == 2, 20, "two answers on the device")
        got = dict(self.answers(dev))
        self.assertEqual(json.loads(got["200/?$rid=42"]), {"a": 1, "b": [2]})
        self.assertEqual(json.loads(got["404/?$rid=r-7"]), "no such blob")
        # answered: gone
        r = self.answer(qs[1]["inquiryId"], 200, {}, expect=404)
        self.assertEqual(r["error"], "InquiryNotFound")

    def test_two_claimants_never_share(self):
        dev = self.device()
        for i in range(8):
            self.ask(dev, "q%d" % i, "{}", str(i))
        seen = {0: [], 1: []}

        def claimant(k):
            for _ in range(6):
                seen[k] += [q for q in self.claim(max=3) if q["deviceId"] == dev.device_id]

        ts = [threading.Thread(target=claimant, args=(k,)) for k in (0, 1)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        a = {q["inquiryId"] for q in seen[0]}
        b = {q["inquiryId"] for q in seen[1]}
        self.assertFalse(a & b, "both claimants got %s" % (a & b))
        self.assertEqual(len(a | b), 8, (seen, "every inquiry handed out once"))
        self.assertEqual(len(seen[0]) + len(seen[1]), 8)
        # none answered: after the lease each is claimable again, by anyone
        again = self.claim_of(dev, 8, timeout=LEASE + 15)
        self.assertEqual({q["inquiryId"] for q in again}, a | b)

    def test_long_poll_wakes(self):
        dev = self.device()
        out = {}

        def poll():
            # waits longer than the inquiry lives: only a wake-up finds it still open
            out["r"] = self.gw.get("/v1/inquiries?wait=%d&max=100" % (TIMEOUT * 4), token="svc", timeout=TIMEOUT * 4 + 30)

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(1)
        self.ask(dev, "late", "{\"x\": 1}", "9")
        t.join()
        self.assertEqual(out["r"].status, 200, out["r"])
        mine = [q for q in out["r"].json["inquiries"] if q["deviceId"] == dev.device_id]
        self.assertEqual(len(mine), 1, out["r"].json)
        self.assertEqual(self.answer(mine[0]["inquiryId"], 201, {"ok": True}), {"delivered": True})

    def test_a_poll_whose_client_left_claims_nothing(self):
        # A consumer starts a long poll and goes away (it restarted, or its HTTP timeout was
        # shorter than its wait). When an inquiry comes, the gateway sees the client is gone and
        # claims nothing for it: the next consumer gets the inquiry at once. Before, the abandoned
        # poll claimed it, leasing it to nobody for store.inquiry_lease.
        dev = self.device()
        mark = self.gw.log_mark()
        s = socket.create_connection(("127.0.0.1", self.gw.admin_port))
        s.sendall(("GET /v1/inquiries?wait=30&max=100 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                   % self.gw.tokens["svc"]).encode())
        time.sleep(2)   # suspended, watching every shard
        s.close()
        time.sleep(0.5)
        self.ask(dev, "after-leaving", "{}", "11")
        self.gw.wait_log(r"event=inquiry\.poll_abandoned ", mark, timeout=15)
        mine = [q for q in self.claim(wait=0) if q["deviceId"] == dev.device_id]
        self.assertEqual(len(mine), 1, "the inquiry was claimed for the client that had left")

    def test_timeout_gets_504(self):
        dev = self.device()
        dev.subscribe("devices/%s/inquiries/res/#" % dev.device_id)
        self.ask(dev, "slow", "{}", "t1")
        iid = self.claim_of(dev)[0]["inquiryId"]
        wait_until(lambda: self.answers(dev), TIMEOUT + 20, "the 504")
        (topic, payload), = self.answers(dev)
        self.assertEqual(topic, "504/?$rid=t1")
        self.assertEqual(json.loads(payload)["error"], "InquiryTimeout")
        self.assertEqual(self.answer(iid, 200, {}, expect=404)["error"], "InquiryNotFound")

    def test_device_offline_when_answered(self):
        dev = self.device()
        self.ask(dev, "bye", "{}", "o1")
        dev.close()
        wait_until(lambda: not self.gw.device(dev.device_id).json["connection"]["connected"], 20, "offline")
        q = self.claim_of(dev)[0]
        self.assertEqual(self.answer(q["inquiryId"], 200, {"late": 1}), {"delivered": False})
        self.answer(q["inquiryId"], 200, {}, expect=404)

    def test_restart_loses_nothing(self):
        dev = self.device()
        for i in range(5):
            self.ask(dev, "durable", json.dumps({"i": i}), "d%d" % i)
        dev.close()
        if self.gw.topology == "all":
            restart_shard(self, 0)
        else:
            for p in self.gw.partitions():
                restart_shard(self, p)
        qs = self.claim_of(dev, 5, timeout=30)
        self.assertEqual(sorted(q["payload"]["i"] for q in qs), list(range(5)))
        for q in qs:
            self.answer(q["inquiryId"], 200, None)

    def test_foreign_topics(self):
        dev = self.device()
        self.assertEqual(dev.subscribe("devices/%s/inquiries/res/#" % uid("other")), (0x80,))
        self.assertEqual(dev.subscribe("devices/%s/inquiries/#" % dev.device_id), (0x80,))
        for topic in ["devices/%s/inquiries/x/?$rid=1" % uid("other"),
                      "devices/%s/inquiries/res/?$rid=1" % dev.device_id,        # "res" is no name
                      "devices/%s/inquiries/x/" % dev.device_id,                 # no rid
                      "devices/%s/inquiries/x/?$rid=a/b" % dev.device_id,        # bad rid
                      "devices/%s/inquiries/%s/?$rid=1" % (dev.device_id, "n" * 65),
                      "devices/%s/inquiries/res/200/?$rid=1" % dev.device_id]:
            d = self.device()
            d.publish(topic.replace(dev.device_id, d.device_id), "{}", 1)
            self.assertTrue(d.closed.wait(20), "%s did not close the connection" % topic)
            d.close()

    def test_bad_requests(self):
        for body in [{"payload": 1}, {"status": "200"}, {"status": 99}, {"status": 600}, [1]]:
            r = self.gw.http("POST", "/v1/inquiries/0-1/response", body, token="svc")
            self.assertEqual(r.status, 400, (body, r))
        r = self.gw.http("POST", "/v1/inquiries/0-1/response", b"{nope", token="svc")
        self.assertEqual(r.status, 400, r)
        for iid in ["0-999999", "99-1", "x", "0-1-2", "-1-1", "0--1", "0-+5", "0-%205", "0-", "-5"]:
            r = self.gw.http("POST", "/v1/inquiries/%s/response" % iid, {"status": 200}, token="svc")
            self.assertEqual((r.status, r.json["error"]), (404, "InquiryNotFound"), (iid, r))
        for q in ["wait=61", "wait=-1", "max=0", "max=101", "max=x"]:
            r = self.gw.get("/v1/inquiries?" + q, token="svc")
            self.assertEqual((r.status, r.json["error"]), (400, "InvalidQuery"), (q, r))

    def test_auth(self):
        self.assertEqual(self.gw.get("/v1/inquiries", token=None).status, 401)
        self.assertEqual(self.gw.http("POST", "/v1/inquiries/0-1/response", {"status": 200}, token=None).status, 401)
        self.assertEqual(self.gw.get("/v1/inquiries", token="reader").status, 403)
        self.assertEqual(self.gw.http("POST", "/v1/inquiries/0-1/response", {"status": 200}, token="writer").status, 403)
        self.assertEqual(self.gw.get("/v1/inquiries", token="admin").status, 200)


if __name__ == "__main__":
    sgtest.main()
