#!/usr/bin/python3
"""Direct methods (SPEC §2, §4): POST /v1/devices/{id}/methods/{name} -> the device's shard ->
$iothub/methods/POST/{name}/?$rid={rid} on the device's frontend -> the device answers on
$iothub/methods/res/{status}/?$rid={rid} -> 200 {status, payload}. Deadlines, a device that
moves to another frontend while a call waits, bad answers, foreign topics, the fallback to the
command queue. Devices are paho-mqtt clients. Both topologies (the cluster has two frontends and
two shards, each its own process)."""

import json
import os
import signal
import struct
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, RFC3339, parse_bag, sas_token, wait_until


def echo(name, payload, rid):
    return 201, json.dumps({"name": name, "got": json.loads(payload)}).encode()


class MethodTest(GatewayTest):

    def call(self, did, name, body=None, token="svc", query="", timeout=60):
        return self.gw.http("POST", "/v1/devices/%s/methods/%s%s" % (did, name, query), body=body, token=token,
                            timeout=timeout)

    def call_async(self, *a, **kw):
        """Run call() in a thread; returns a function that waits for and returns its answer."""
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", self.call(*a, **kw)), daemon=True)
        t.start()

        def result(timeout=90):
            t.join(timeout)
            self.assertIn("r", out, "the method call did not return")
            return out["r"]
        return result

    def last_port(self):
        return self.gw.mqtt_ports[-1]

    # ---------------------------------------------------------------- round trips

    def test_round_trip(self):
        dev = self.gw.create_device()
        c = self.connected(dev).serve_methods(echo)
        wait_until(lambda: self.gw.device(dev["id"]).json["connection"].get("methods"), 10,
                   "the shard to record the method subscription")
        r = self.call(dev["id"], "reboot", {"payload": {"delay": 3, "why": "caf\u00e9"}, "responseTimeoutSeconds": 10})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"status": 201, "payload": {"name": "reboot", "got": {"delay": 3, "why": "caf\u00e9"}}})
        name, rid, payload, qos = c.method_calls[0]
        self.assertEqual((name, qos), ("reboot", 0))
        self.assertEqual(json.loads(payload), {"delay": 3, "why": "caf\u00e9"})
        self.assertRegex(rid, r"^[0-9a-f]{16}$")
        # every call gets its own rid; no payload is JSON null; any status passes through
        c2 = self.connected(self.gw.create_device())
        c2.serve_methods(lambda n, p, rid: (-7, p))
        rids = set()
        for i in range(3):
            r = self.call(c2.device_id, "m.%d" % i, {})
            self.assertEqual(r.json, {"status": -7, "payload": None}, r)
            rids.add(c2.method_calls[-1][1])
        self.assertEqual(len(rids), 3, rids)
        # the device's telemetry still works beside its methods
        c.send(b"after methods")
        # counted per shard in /metrics
        m = self.gw.get("/metrics").text
        answered = sum(int(line.rsplit(" ", 1)[1]) for line in m.splitlines()
                       if line.startswith("sacgate_shard_method_calls_total{") and 'outcome="answered"' in line)
        self.assertGreaterEqual(answered, 4, m)
        self.assertIn("sacgate_shard_method_calls_pending{", m)

    def test_a_qos1_response_is_acknowledged_after_earlier_publishes(self):
        # MQTT 3.1.1 4.6: PUBACKs in the order of the PUBLISHes. A method response needs nothing
        # from a shard, but its PUBACK waits for the telemetry sent before it to be durable.
        # Before, it went at once and overtook them.
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw()
        self.assertEqual(raw.connect(did, sas_token(did, dev["primary"])), 0)
        tele = "devices/%s/messages/events/" % did
        raw.send(sgtest.pkt_publish(tele, b"t1", qos=1, mid=1) + sgtest.pkt_publish(tele, b"t2", qos=1, mid=2) +
                 sgtest.pkt_publish("$iothub/methods/res/200/?$rid=1", b"{}", qos=1, mid=3) +
                 sgtest.pkt_publish(tele, b"t4", qos=1, mid=4))
        got = [struct.unpack("!H", raw.expect(sgtest.PUBACK)[2])[0] for _ in range(4)]
        self.assertEqual(got, [1, 2, 3, 4])
        # with nothing before it, at once
        raw.send(sgtest.pkt_publish("$iothub/methods/res/200/?$rid=2", b"{}", qos=1, mid=5))
        self.assertEqual(struct.unpack("!H", raw.expect(sgtest.PUBACK)[2])[0], 5)
        # an answer that fills the in-flight window (frontend.inflight_window, 16) stops reading
        # like a publish does: the publish behind it waits, nothing goes past the window
        pubs = [sgtest.pkt_publish(tele, b"w%d" % i, qos=1, mid=100 + i) for i in range(15)]
        pubs.append(sgtest.pkt_publish("$iothub/methods/res/200/?$rid=3", b"{}", qos=1, mid=115))
        pubs += [sgtest.pkt_publish(tele, b"w16", qos=1, mid=116), sgtest.pkt_publish(tele, b"w17", qos=1, mid=117)]
        raw.send(b"".join(pubs))
        got = [struct.unpack("!H", raw.expect(sgtest.PUBACK)[2])[0] for _ in range(18)]
        self.assertEqual(got, list(range(100, 118)))
        self.assertEqual(len(self.gw.wait_records(did, 20)), 20)

    def test_a_call_right_after_the_suback_reaches_the_device(self):
        """The SUBACK of a method subscription waits until the device's shard has it: a call made
        the moment the device has its SUBACK, allowing the device no time to come
        (connectTimeoutSeconds 0), reaches it."""
        for i in range(10):
            dev = self.gw.create_device()
            c = self.connected(dev).serve_methods(echo, subscribe=False)
            self.assertEqual(c.subscribe(c.METHODS, qos=0), (0,))
            r = self.call(dev["id"], "now", {"payload": i, "connectTimeoutSeconds": 0, "responseTimeoutSeconds": 10})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["payload"], {"name": "now", "got": i})

    @unittest.skipUnless(sgtest.TOPOLOGY == "cluster", "freezes the shard processes of the cluster")
    def test_suback_waits_for_the_shard(self):
        dev = self.gw.create_device()
        c = self.connected(dev).serve_methods(echo, subscribe=False)
        pids = [self.gw.pid(n) for n in ("store-0", "store-1")]
        for p in pids:
            sgtest.stop_process(p)
        try:
            rc, mid = c.client.subscribe(c.METHODS, 0)
            self.assertEqual(rc, 0)
            time.sleep(1.5)
            with c.cond:
                self.assertNotIn(mid, c.subacks, "the SUBACK came while the device's shard was stopped")
        finally:
            for p in pids:
                os.kill(p, signal.SIGCONT)
        with c.cond:
            while mid not in c.subacks:
                self.assertTrue(c.cond.wait(20), "no SUBACK after the shards went on")
        self.assertEqual(c.subacks[mid], (0,))
        r = self.call(dev["id"], "now", {"payload": 1, "connectTimeoutSeconds": 0, "responseTimeoutSeconds": 10})
        self.assertEqual(r.status, 200, r)
        self.assertFalse(c.closed.is_set())

    def test_large_payloads(self):
        dev = self.gw.create_device()
        self.connected(dev).serve_methods(lambda n, p, rid: (200, p if n == "echo" else b'"' + b"y" * 140000 + b'"'))
        big = "x" * 120000
        r = self.call(dev["id"], "echo", {"payload": {"blob": big}})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["payload"], {"blob": big})
        # an answer over frontend.max_method_response (128 KiB): refused to the caller, the
        # connection stays
        r = self.call(dev["id"], "huge", {})
        self.assertError(r, 502, "MethodResponseTooLarge")
        self.assertEqual(r.json.get("status"), 200, r.json)
        self.assertEqual(self.call(dev["id"], "echo", {"payload": 1}).json, {"status": 200, "payload": 1})

    # ---------------------------------------------------------------- not online, deadlines

    def test_not_online(self):
        dev = self.gw.create_device()
        r = self.call(dev["id"], "m", {})
        self.assertError(r, 404, "DeviceNotOnline")
        # connected but not subscribed to methods: it cannot answer either
        c = self.connected(dev, subscribe=True)
        self.assertError(self.call(dev["id"], "m", {}), 404, "DeviceNotOnline")
        # subscribed, then unsubscribed
        c.serve_methods(echo)
        self.assertEqual(self.call(dev["id"], "m", {"payload": 0}).status, 200)
        c.unsubscribe(c.METHODS)
        # a call that reaches the shard before the UNSUBSCRIBE goes out to the session, which drops
        # it, and waits for a session that subscribes until its response timeout (504): short ones
        wait_until(lambda: self.call(dev["id"], "m", {"payload": 0, "responseTimeoutSeconds": 5}).status == 404, 30,
                   "unsubscribe to reach the shard")
        # gone: not online again
        c.close()
        wait_until(lambda: self.call(dev["id"], "m", {}).status == 404, 10, "the session to end")
        # a connect timeout that passes without the device
        t0 = time.monotonic()
        r = self.call(dev["id"], "m", {"connectTimeoutSeconds": 1})
        self.assertError(r, 404, "DeviceNotOnline")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)

    def test_connect_timeout_waits_for_the_device(self):
        dev = self.gw.create_device()
        result = self.call_async(dev["id"], "wake", {"payload": "hi", "connectTimeoutSeconds": 30})
        time.sleep(1.5)
        # it connects to the last frontend (the second process in the cluster)
        self.connected(dev, port=self.last_port()).serve_methods(echo)
        r = result()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"status": 201, "payload": {"name": "wake", "got": "hi"}})

    def test_response_timeout(self):
        dev = self.gw.create_device()
        c = self.connected(dev).serve_methods(lambda n, p, rid: None)
        t0 = time.monotonic()
        r = self.call(dev["id"], "slow", {"responseTimeoutSeconds": 5})
        self.assertError(r, 504, "GatewayTimeout")
        self.assertGreaterEqual(time.monotonic() - t0, 4.9)
        self.assertEqual(len(c.method_calls), 1)
        # the late answer is dropped without harm; the device stays connected and answers the next
        rid = c.method_calls[0][1]
        c.client.publish("$iothub/methods/res/200/?$rid=%s" % rid, b"{}", 0)
        c.client.message_callback_remove(c.METHODS)
        c.serve_methods(echo, subscribe=False)
        self.assertEqual(self.call(dev["id"], "fast", {"payload": 2}).status, 200)
        self.assertTrue(c.is_connected())

    def test_device_dies_during_the_call(self):
        dev = self.gw.create_device()
        c = self.connected(dev).serve_methods(lambda n, p, rid: None)
        result = self.call_async(dev["id"], "fatal", {"responseTimeoutSeconds": 6})
        c.wait_method_calls(1)
        c.client.loop_stop()   # vanishes without DISCONNECT
        c.client.socket().close()
        r = result()
        self.assertError(r, 504, "GatewayTimeout")

    def test_call_follows_the_device_to_another_frontend(self):
        dev = self.gw.create_device()
        first = self.connected(dev).serve_methods(lambda n, p, rid: None)
        result = self.call_async(dev["id"], "move", {"payload": [1, 2], "responseTimeoutSeconds": 30})
        first.wait_method_calls(1)
        rid = first.method_calls[0][1]
        first.close()
        # reconnects elsewhere (the other frontend process in the cluster) and subscribes: the
        # pending call is delivered again, with the same rid, and its answer completes the call
        second = self.connected(dev, port=self.last_port()).serve_methods(echo)
        r = result()
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["payload"], {"name": "move", "got": [1, 2]})
        self.assertEqual(second.method_calls[0][1], rid)

    def test_device_deleted_or_disabled_while_a_call_waits(self):
        # a call waiting for the device to connect, and one waiting for its answer
        waiting = self.gw.create_device()
        w = self.call_async(waiting["id"], "m", {"connectTimeoutSeconds": 60})
        answering = self.gw.create_device()
        c = self.connected(answering).serve_methods(lambda n, p, rid: None)
        a = self.call_async(answering["id"], "m", {"responseTimeoutSeconds": 60})
        c.wait_method_calls(1)
        time.sleep(0.5)   # the first call is in its shard too
        t0 = time.monotonic()
        self.assertEqual(self.gw.http("DELETE", "/v1/devices/%s" % waiting["id"]).status, 204)
        self.assertError(w(), 404, "DeviceNotFound")
        self.gw.update_device(answering, status="disabled")
        self.assertError(a(), 403, "DeviceDisabled")
        self.assertLess(time.monotonic() - t0, 30, "the calls waited for their deadlines")

    def test_subscription_kept_by_a_resumed_session(self):
        dev = self.gw.create_device()
        self.connected(dev, clean_session=False).serve_methods(echo).close()
        # back without subscribing again: the non-clean session still has its subscription
        c = self.connected(dev, port=self.last_port(), clean_session=False).serve_methods(echo, subscribe=False)
        r = self.call(dev["id"], "resumed", {"payload": 5})
        self.assertEqual(r.json, {"status": 201, "payload": {"name": "resumed", "got": 5}}, r)
        c.close()
        # a clean session starts without it
        self.connected(dev, clean_session=True).serve_methods(echo, subscribe=False)
        self.assertError(self.call(dev["id"], "m", {}), 404, "DeviceNotOnline")

    # ---------------------------------------------------------------- bad answers and topics

    def test_bad_rid_and_non_json_answer(self):
        dev = self.gw.create_device()
        answers = []

        def handler(name, payload, rid):
            client = c.client
            client.publish("$iothub/methods/res/200/?$rid=ffffffffffffffff", b"{}", 0)   # unknown rid
            client.publish("$iothub/methods/res/200/?$rid=bad%3Crid%3E", b"{}", 0)   # not even a possible rid
            answers.append(rid)
            return (200, b"{}") if name == "ok" else (500, b"not json {")
        c = self.connected(dev).serve_methods(handler)
        r = self.call(dev["id"], "garbage", {})
        self.assertError(r, 502, "InvalidMethodResponse")
        self.assertEqual(r.json.get("status"), 500)
        self.assertEqual(self.call(dev["id"], "ok", {}).json, {"status": 200, "payload": {}})
        self.assertTrue(c.is_connected(), "a wrong rid or a bad body closed the connection")
        self.assertTrue(self.gw.grep_log("method.unknown_rid", self._mark), "the unknown rid was not logged")

    def test_foreign_method_topics(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        granted = c.subscribe("$iothub/methods/POST/reboot", qos=0)   # only the whole channel
        self.assertEqual(granted, (128,))
        self.assertEqual(c.subscribe("$iothub/twin/res/#", qos=0), (128,))
        for topic in ("$iothub/methods/res/200", "$iothub/methods/res/abc/?$rid=1", "$iothub/methods/res/200/?x=1",
                      "$iothub/methods/POST/x/?$rid=1", "$iothub/methods/resx"):
            d = self.connected(dev)
            d.publish(topic, b"{}", qos=0)
            d.wait_closed()
        # the answer's QoS 1 PUBACK comes at once
        e = self.connected(dev).serve_methods(lambda n, p, rid: None)
        e.wait_acked([e.publish("$iothub/methods/res/200/?$rid=0123456789abcdef", b"{}", qos=1)])

    # ---------------------------------------------------------------- API errors

    def test_errors(self):
        dev = self.gw.create_device()
        did = dev["id"]
        self.assertError(self.call("nobody-" + did, "m", {}), 404, "DeviceNotFound")
        for body in ({"responseTimeoutSeconds": 4}, {"responseTimeoutSeconds": 301}, {"connectTimeoutSeconds": -1},
                     {"connectTimeoutSeconds": 301}, {"responseTimeoutSeconds": "5"}, {"color": 1},
                     {"ttlSeconds": 60}, [1]):
            self.assertError(self.call(did, "m", body), 400)
        r = self.gw.http("POST", "/v1/devices/%s/methods/m" % did, body=b"{not json", token="svc")
        self.assertError(r, 400, "InvalidJson")
        self.assertError(self.call(did, "a+b", {}), 400, "InvalidMethodName")
        self.assertError(self.call(did, "x" * 129, {}), 400, "InvalidMethodName")
        self.assertError(self.call(did, "m", {}, query="?fallback=drop"), 400, "InvalidQuery")
        self.assertError(self.call(did, "m", {"connectTimeoutSeconds": 5}, query="?fallback=queue"), 400,
                         "InvalidMethodRequest")
        self.assertError(self.call(did, "m", {}, token=None), 401, "Unauthorized")
        self.assertError(self.call(did, "m", {}, token="reader"), 403, "Forbidden")
        # a disabled device is refused before anything else
        self.connected(dev).serve_methods(echo)
        self.gw.update_device(dev, status="disabled")
        self.assertError(self.call(did, "m", {}), 403, "DeviceDisabled")
        self.assertError(self.call(did, "m", {}, query="?fallback=queue"), 403, "DeviceDisabled")

    # ---------------------------------------------------------------- invoke with fallback

    def test_fallback_queues_for_an_offline_device(self):
        dev = self.gw.create_device()
        did = dev["id"]
        r = self.call(did, "setColor", {"payload": {"color": "red"}, "ttlSeconds": 600}, query="?fallback=queue")
        self.assertEqual(r.status, 202, r)
        self.assertIs(r.json.get("queued"), True, r.json)
        self.assertRegex(r.json.get("expiresAt", ""), RFC3339)
        pend = self.gw.pending(did)
        self.assertEqual([m["messageId"] for m in pend], [r.json["messageId"]])
        # the device gets it as a command when it connects: the payload as JSON text, the method's
        # name in the `method` property, the TTL asked for
        c = self.connected(dev, subscribe=True)
        cmd = c.wait_commands(1)[0]
        self.assertEqual(json.loads(cmd["payload"]), {"color": "red"})
        self.assertEqual(cmd["props"].get("method"), "setColor", cmd)
        self.assertEqual(cmd["props"].get("$.mid"), r.json["messageId"])
        self.assertEqual(cmd["props"].get("$.exp"), r.json["expiresAt"])
        # online and subscribed: the same call runs as a method
        c.serve_methods(echo)
        r = self.call(did, "setColor", {"payload": {"color": "blue"}}, query="?fallback=queue")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json, {"status": 201, "payload": {"name": "setColor", "got": {"color": "blue"}}})
        self.assertEqual(len(self.gw.pending(did)), 0)



class MethodLimitsTest(GatewayTest):
    """frontend.max_method_response and the device's rate bucket, set low for every process."""

    ENV = {"SACGATE_FRONTEND_MAX_METHOD_RESPONSE": "1000", "SACGATE_FRONTEND_TELEMETRY_RATE": "1",
           "SACGATE_FRONTEND_TELEMETRY_BURST": "1"}

    def test_answers_are_capped_and_rate_limited(self):
        dev = self.gw.create_device()
        c = self.connected(dev).serve_methods(lambda n, p, rid: (200, b'"' + b"z" * (998 if n == "fits" else 999) + b'"'))
        path = "/v1/devices/%s/methods/" % dev["id"]
        # the subscription reaches the shard a moment after the SUBACK: until then, 404
        r = None
        for _ in range(50):
            r = self.gw.http("POST", path + "fits", {}, token="svc")
            if r.status != 404:
                break
            time.sleep(0.2)
        self.assertEqual((r.status, len((r.json or {}).get("payload") or "")), (200, 998), r)
        time.sleep(1.1)   # the bucket (1 token) refills
        r = self.gw.http("POST", path + "over", {}, token="svc")
        self.assertError(r, 502, "MethodResponseTooLarge")
        # answers spend from the telemetry bucket: at 1 a second, the fourth of four answers sent
        # at once is read (and acknowledged) at least two seconds after the first
        t0 = time.monotonic()
        mids = [c.publish("$iothub/methods/res/200/?$rid=%016x" % i, b"{}", qos=1) for i in range(4)]
        c.wait_acked(mids)
        self.assertGreaterEqual(max(c.acked[m] for m in mids) - t0, 2.0)
        self.assertTrue(c.is_connected())

if __name__ == "__main__":
    sgtest.main()
