#!/usr/bin/python3
"""Notifications (both topologies): POST /v1/notifications fans one message into the command
queue of every enabled device whose tags match them all, across every shard.

A subscribed paho device gets it at once and a mosquitto_sub device that connects later gets it
too, both with `$.nid` (and `$.mid`) set to the notification's id; devices lacking a tag, with
another value, or disabled get nothing; a copy whose TTL runs out before its device connects is
dead-lettered with `expired` feedback; a device whose queue is full is counted as `rejected`
(with `rejected` feedback); a shard restarted in the middle of a fan-out (one registry entry a
commit here) resumes it from its durable cursor and every device ends with exactly one copy;
bad bodies are refused with 400 and nothing queued, and the route wants the service role."""

import base64
import json
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, MqttDevice, mosquitto_sub, sas_token, uid, wait_until  # noqa: E402

FLEET = 3000    # devices of the restart test: with one entry a commit, a fan-out of many commits


def q(s):
    return urllib.parse.quote(s, safe="")


class NotificationsTest(GatewayTest):
    # One registry entry looked at per commit: a fan-out over the restart test's fleet takes
    # thousands of commits, so a shard can be restarted in the middle of one.
    # A POST whose shard dies mid-fan-out is answered 504 after admin.notification_timeout.
    ENV = {"SACGATE_STORE_NOTIFY_SLICE": "1", "SACGATE_ADMIN_NOTIFICATION_TIMEOUT": "10"}

    def notify(self, body, token="svc", expect=202):
        r = self.gw.http("POST", "/v1/notifications", body, token=token, timeout=120)
        if expect is not None:
            self.assertEqual(r.status, expect, r)
        return r

    def progress(self, nid):
        r = self.gw.get("/v1/notifications/" + q(nid), token="svc")
        self.assertEqual(r.status, 200, r)
        return r.json

    def feedback(self, nid):
        """Every feedback record of notification nid, over every partition."""
        out = []
        for p in self.gw.partitions():
            after = -1
            while True:
                r = self.gw.get("/v1/feedback?partition=%d&after=%d&max=1000" % (p, after), token="svc")
                self.assertEqual(r.status, 200, r)
                out += [rec for rec in r.json["records"] if rec["messageId"] == nid]
                if not r.json["records"]:
                    break
                after = r.json["next"]
        return out

    def copies(self, did, nid):
        return [m for m in self.gw.pending(did) if m["messageId"] == nid]

    def test_online_offline_and_nonmatching(self):
        site = uid("site")
        tags = {"site": site, "kind": "valve"}
        online = self.gw.create_device(tags=tags)
        offline = self.gw.create_device(tags=tags)
        others = [self.gw.create_device(tags={"site": site, "kind": "pump"}),   # another value
                  self.gw.create_device(tags={"site": site}),                   # a tag missing
                  self.gw.create_device(tags={"site": uid("elsewhere"), "kind": "valve"}),
                  self.gw.create_device(tags=tags, status="disabled")]
        with MqttDevice(self.gw, online["id"], key=online["primary"]) as dev:
            dev.connect_ok()
            dev.subscribe_commands()
            r = self.notify({"tags": tags, "payload": "open", "properties": {"zone": "7"}, "ack": "full",
                             "ttlSeconds": 600})
            nid = r.json["notificationId"]
            self.assertEqual(r.json, {"notificationId": nid, "targets": 2, "rejected": 0})
            cmd = dev.wait_commands(1)[0]
        self.assertEqual(cmd["payload"], b"open")
        self.assertEqual(cmd["props"]["$.nid"], nid)
        self.assertEqual(cmd["props"]["$.mid"], nid)
        self.assertEqual(cmd["props"]["zone"], "7")
        # The offline device: queued, and delivered when it connects (mosquitto_sub).
        self.assertEqual(len(self.copies(offline["id"], nid)), 1)
        rc, msgs = mosquitto_sub(self.gw, offline["id"], sas_token(offline["id"], offline["primary"]), count=1)
        self.assertEqual(rc.returncode, 0, rc.stderr)
        self.assertEqual(msgs[0][1], b"open")
        self.assertIn("%24.nid=" + nid, msgs[0][0])
        for o in others:
            self.assertEqual(self.gw.pending(o["id"]), [], o)
        p = self.progress(nid)
        self.assertEqual((p["targets"], p["rejected"], p["complete"]), (2, 0, True), p)
        wait_until(lambda: sorted(f["outcome"] for f in self.feedback(nid)) == ["delivered", "delivered"], 20,
                   "delivered feedback for both devices")

    def test_expired_before_connect(self):
        tags = {"fleet": uid("exp")}
        dev = self.gw.create_device(tags=tags)
        r = self.notify({"tags": tags, "payload": "late", "ttlSeconds": 1, "ack": "negative"})
        nid = r.json["notificationId"]
        self.assertEqual(r.json["targets"], 1)
        wait_until(lambda: self.gw.pending(dev["id"]) == [], 20, "the copy to expire")
        r = self.gw.get("/v1/devices/%s/deadletters" % q(dev["id"]), token="svc")
        self.assertEqual(r.status, 200, r)
        dead = [d for d in r.json["deadLetters"] if d["messageId"] == nid]
        self.assertEqual(len(dead), 1, r.json)
        self.assertEqual(dead[0]["reason"], "expired")
        self.assertEqual([f["outcome"] for f in self.feedback(nid)], ["expired"])
        with MqttDevice(self.gw, dev["id"], key=dev["primary"]) as d:
            d.connect_ok()
            d.subscribe_commands()
            time.sleep(1)
            self.assertEqual(d.commands(), [])

    def test_full_queue_rejected(self):
        tags = {"fleet": uid("full")}
        full = self.gw.create_device(tags=tags, limits={"maxQueuedMessages": 1})
        roomy = self.gw.create_device(tags=tags)
        self.gw.send_command(full["id"], "first")
        r = self.notify({"tags": tags, "payload": "n", "ack": "negative"})
        nid = r.json["notificationId"]
        self.assertEqual((r.json["targets"], r.json["rejected"]), (1, 1), r.json)
        self.assertEqual([base64.b64decode(m["payload"]) for m in self.gw.pending(full["id"])], [b"first"])
        self.assertEqual(len(self.copies(roomy["id"], nid)), 1)
        fb = self.feedback(nid)
        self.assertEqual([(f["deviceId"], f["outcome"]) for f in fb], [(full["id"], "rejected")])

    def test_bad_bodies_and_roles(self):
        tags = {"fleet": uid("bad")}
        dev = self.gw.create_device(tags=tags)
        bad = [
            ({"payload": "x"}, "InvalidNotification"),                          # no tags
            ({"tags": {}, "payload": "x"}, "InvalidNotification"),              # selects nothing
            ({"tags": ["fleet"], "payload": "x"}, "InvalidNotification"),
            ({"tags": {"fleet": 7}, "payload": "x"}, "InvalidNotification"),
            ({"tags": {"bad key": "v"}, "payload": "x"}, "InvalidNotification"),
            ({"tags": tags, "payload": "x", "color": "red"}, "InvalidMessage"),
            ({"tags": tags, "payload": 5}, "InvalidMessage"),
            ({"tags": tags, "payload": "x", "ttlSeconds": 0}, "InvalidMessage"),
            ({"tags": tags, "payload": "x", "ack": "maybe"}, "InvalidMessage"),
            ({"tags": tags, "payload": "!!", "payloadEncoding": "base64"}, "InvalidMessage"),
            ({"tags": tags, "payload": "x", "properties": {"$.nid": "forged"}}, "InvalidMessage"),
            ("{not json", "InvalidJson"),
            ("[1, 2]", "InvalidJson"),
        ]
        for body, name in bad:
            r = self.notify(body, expect=400)
            self.assertEqual(r.json["error"], name, (body, r))
        r = self.notify({"tags": tags, "payload": "x" * 70000}, expect=413)
        self.assertEqual(r.json["error"], "MessageTooLarge")
        self.assertEqual(self.gw.pending(dev["id"]), [])
        r = self.gw.http("POST", "/v1/notifications", {"tags": tags, "payload": "x"}, token=None)
        self.assertEqual(r.status, 401, r)
        r = self.gw.http("POST", "/v1/notifications", {"tags": tags, "payload": "x"}, token="reader")
        self.assertEqual(r.status, 403, r)
        r = self.gw.get("/v1/notifications/" + q("0f0e0d0c-0000-4000-8000-000000000000"), token="svc")
        self.assertEqual((r.status, r.json["error"]), (404, "NotificationNotFound"), r)
        r = self.gw.get("/v1/notifications/x", token="reader")
        self.assertEqual(r.status, 403, r)
        self.assertEqual(self.gw.pending(dev["id"]), [])

    def test_shard_restart_mid_fanout(self):
        tag = uid("big")
        ids = ["%s-%05d" % (tag, i) for i in range(FLEET)]
        body = "".join(json.dumps({"deviceId": i, "tags": {"fleet": tag}}) + "\n" for i in ids)
        r = self.gw.http("POST", "/v1/devices:import", body, token="admin", timeout=120)
        self.assertEqual(r.status, 200, r)
        mark = self.gw.log_mark()
        answer = {}

        def post():
            try:
                answer["r"] = self.gw.http("POST", "/v1/notifications", {"tags": {"fleet": tag}, "payload": "all"},
                                           token="svc", timeout=120)
            except OSError as e:   # sacgate all: the admin restarts with the shard
                answer["error"] = e
        t = threading.Thread(target=post)
        t.start()
        found = self.gw.wait_log(r"notify\.started .*notification=(\S+)", mark=mark, timeout=30)
        nid = sgtest.re.search(r"notification=(\S+)", found[0]).group(1)
        def started():
            # The log line comes when a shard's writer takes the notification, before the group
            # commit that makes it readable: until then GET answers 404 NotificationNotFound.
            r = self.gw.get("/v1/notifications/" + q(nid), token="svc")
            self.assertIn(r.status, (200, 404), r)
            return r.status == 200 and r.json["targets"] > 0
        wait_until(started, 30, "the fan-out to start")
        p = self.progress(nid)
        self.assertFalse(p["complete"], "the fan-out was over before the restart: nothing to test")
        sgtest.restart_shard(self, 0)
        t.join(150)
        if self.gw.topology == "cluster":
            # The admin outlived the shard: it says the request timed out, and which notification.
            self.assertEqual((answer["r"].status, answer["r"].json["error"], answer["r"].json["notificationId"]),
                             (504, "Timeout", nid), answer)
        self.assertTrue(self.gw.grep_log(r"notify\.resumed .*notification=" + nid, mark=mark),
                             "the restarted shard did not resume the fan-out")
        wait_until(lambda: self.progress(nid)["complete"], 90, "the fan-out to complete after the restart")
        self.assertEqual(self.progress(nid)["targets"], FLEET)
        counts = {}
        for i in ids:
            counts[i] = len(self.copies(i, nid))
        wrong = {i: n for i, n in counts.items() if n != 1}
        self.assertEqual(wrong, {}, "devices without exactly one copy")


if __name__ == "__main__":
    sgtest.main()
