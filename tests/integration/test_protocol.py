#!/usr/bin/python3
"""MQTT protocol enforcement, with paho and hand-made packets. All-in-one topology
(SACGATE_TOPOLOGY=cluster also works)."""

import base64
import sys
import os
import struct
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import (CONNACK, PINGRESP, PUBACK, PUBLISH, SUBACK, GatewayTest, enc_str, packet,
                    pkt_connect, pkt_disconnect, pkt_pingreq, pkt_publish, pkt_subscribe, sas_token,
                    username_for)


class ProtocolTest(GatewayTest):
    SETS = ("frontend.connect_timeout=2",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # A witness: telemetry acknowledged before any bad client shows up must stay readable.
        cls.witness = cls.gw.create_device()
        c = sgtest.MqttDevice(cls.gw, cls.witness["id"], key=cls.witness["primary"])
        try:
            c.connect_ok()
            c.send(b"witness")
        finally:
            c.close()

    def tearDown(self):
        try:
            self.assertGatewayServes()
        finally:
            super().tearDown()

    def assertGatewayServes(self):
        """After each test: the witness record is intact and a good client still works."""
        recs = self.gw.device_records(self.witness["id"])
        self.assertEqual([base64.b64decode(r["payload"]) for r in recs[:1]], [b"witness"],
                         "acknowledged telemetry lost: %r" % recs)
        dev = self.gw.create_device()
        c = sgtest.MqttDevice(self.gw, dev["id"], key=dev["primary"])
        try:
            c.connect_ok()
            c.send(b"still alive")
        finally:
            c.close()
        self.gw.wait_records(dev["id"], 1)

    # -- helpers
    def raw_session(self, dev, keepalive=60):
        raw = self.raw()
        rc = raw.connect(dev["id"], sas_token(dev["id"], dev["primary"]), keepalive=keepalive)
        self.assertEqual(rc, 0, "CONNACK %r" % rc)
        return raw

    def acked_first(self, raw, dev, payload=b"acked before the bad packet", mid=100):
        """Publish a good QoS 1 record on this connection and wait for its PUBACK."""
        raw.send(pkt_publish("devices/%s/messages/events/" % dev["id"], payload, qos=1, mid=mid))
        p = raw.expect(PUBACK)
        self.assertEqual(struct.unpack("!H", p[2])[0], mid)
        return payload

    def assertOnly(self, dev, payloads):
        recs = self.gw.wait_records(dev["id"], len(payloads))
        self.assertEqual([base64.b64decode(r["payload"]) for r in recs], payloads)

    def assertClosed(self, raw, what, timeout=20):
        self.assertTrue(raw.wait_closed(timeout), "%s: connection still open after %d s" % (what, timeout))

    def assertNothingStored(self, *dev_ids):
        for did in dev_ids:
            self.assertEqual(self.gw.device_records(did), [], "telemetry stored for %s" % did)

    def fence(self, dev, payload=b"fence"):
        """Publish one good QoS 1 record as dev and return the device's records after it."""
        c = self.connected(dev)
        c.send(payload)
        c.close()
        return self.gw.wait_records(dev["id"], 1)

    # ---------------------------------------------------------------- topics

    def test_publish_to_other_devices_topic(self):
        a, b = self.gw.create_device(), self.gw.create_device()
        raw = self.raw_session(a)
        good = self.acked_first(raw, a)
        raw.send(pkt_publish("devices/%s/messages/events/" % b["id"], b"spoof", qos=1, mid=7))
        p = raw.read_packet(20)
        self.assertIsNone(p, "expected the connection to close, got packet %r" % (p,))
        self.assertClosed(raw, "foreign telemetry topic")
        c = self.connected(a)
        c.send(b"fence")
        c.close()
        self.assertOnly(a, [good, b"fence"])
        self.assertNothingStored(b["id"])

    def test_publish_to_other_device_with_paho(self):
        a, b = self.gw.create_device(), self.gw.create_device()
        c = self.connected(a)
        c.publish("devices/%s/messages/events/" % b["id"], b"spoof", qos=1)
        self.assertTrue(c.wait_closed(20), "paho client publishing to a foreign topic was not disconnected")
        self.assertNothingStored(a["id"], b["id"])

    def test_publish_to_unknown_topics(self):
        dev = self.gw.create_device()
        for topic in ("devices/%s/messages/unknown/" % dev["id"], "devices/%s/foo" % dev["id"],
                      "random/topic", "devices/%s/messages/devicebound/x" % dev["id"],
                      "$iothub/twin/PATCH/properties/reported/?$rid=1"):
            raw = self.raw_session(dev)
            raw.send(pkt_publish(topic, b"x", qos=1, mid=3))
            self.assertClosed(raw, "PUBLISH to %r" % topic)
        self.assertNothingStored(dev["id"])

    def test_wildcard_in_publish_topic(self):
        dev = self.gw.create_device()
        for topic in ("devices/%s/messages/events/#" % dev["id"], "devices/%s/messages/events/+" % dev["id"],
                      "devices/+/messages/events/"):
            raw = self.raw_session(dev)
            raw.send(pkt_publish(topic, b"x", qos=1, mid=4))
            self.assertClosed(raw, "PUBLISH to %r" % topic)
        self.assertNothingStored(dev["id"])

    def test_qos2_publish(self):
        dev = self.gw.create_device()
        raw = self.raw_session(dev)
        good = self.acked_first(raw, dev)
        raw.send(pkt_publish("devices/%s/messages/events/" % dev["id"], b"q2", qos=2, mid=5))
        self.assertClosed(raw, "QoS 2 PUBLISH")
        self.assertOnly(dev, [good])

    def test_qos3_publish(self):
        dev = self.gw.create_device()
        raw = self.raw_session(dev)
        raw.send(pkt_publish("devices/%s/messages/events/" % dev["id"], b"q3", qos=3, mid=5))
        self.assertClosed(raw, "PUBLISH with QoS bits 11")
        self.assertNothingStored(dev["id"])

    def test_qos1_packet_id_zero(self):
        dev = self.gw.create_device()
        raw = self.raw_session(dev)
        raw.send(pkt_publish("devices/%s/messages/events/" % dev["id"], b"id0", qos=1, mid=0))
        self.assertClosed(raw, "QoS 1 PUBLISH with packet id 0")

    def test_bad_topic_strings(self):
        dev = self.gw.create_device()
        base = ("devices/%s/messages/events/" % dev["id"]).encode()
        for what, topic in (("invalid UTF-8", base + b"k=\xff\xfe"), ("NUL", base + b"k=a\x00b"),
                            ("empty", b"")):
            raw = self.raw_session(dev)
            raw.send(packet(3, 0x02, enc_str(topic) + b"\x00\x01payload"))
            self.assertClosed(raw, "PUBLISH topic with %s" % what)
        self.assertNothingStored(dev["id"])

    def test_subscribe_bad_flags(self):
        dev = self.gw.create_device()
        raw = self.raw_session(dev)
        body = struct.pack("!H", 1) + enc_str("devices/%s/messages/devicebound/#" % dev["id"]) + b"\x01"
        raw.send(packet(8, 0x00, body))  # SUBSCRIBE must have flags 0010
        self.assertClosed(raw, "SUBSCRIBE with fixed-header flags 0000")

    def test_keepalive_zero_is_clamped_not_zero(self):
        """keep-alive 0 means the cap (1767 s), so 4 s of silence is fine."""
        dev = self.gw.create_device()
        raw = self.raw_session(dev, keepalive=0)
        self.assertFalse(raw.wait_closed(4), "keep-alive 0 connection closed after 4 s of silence")
        raw.send(pkt_pingreq())
        raw.expect(PINGRESP)

    def test_qos2_with_paho(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        c.publish(c.telemetry_topic(), b"q2", qos=2)
        self.assertTrue(c.wait_closed(20), "QoS 2 publish did not close the connection")
        self.assertNothingStored(dev["id"])

    def test_retain_publish(self):
        dev = self.gw.create_device()
        raw = self.raw_session(dev)
        good = self.acked_first(raw, dev)
        raw.send(pkt_publish("devices/%s/messages/events/" % dev["id"], b"r", qos=1, mid=6, retain=True))
        self.assertClosed(raw, "RETAIN PUBLISH")
        self.assertOnly(dev, [good])

    def test_subscribe_foreign_filter(self):
        a, b = self.gw.create_device(), self.gw.create_device()
        raw = self.raw_session(a)
        raw.send(pkt_subscribe(9, [("devices/%s/messages/devicebound/#" % b["id"], 1),
                                   ("devices/%s/messages/devicebound/#" % a["id"], 1),
                                   ("#", 0),
                                   ("devices/+/messages/devicebound/#", 1)]))
        p = raw.expect(SUBACK)
        self.assertEqual(struct.unpack("!H", p[2][:2])[0], 9)
        self.assertEqual(list(p[2][2:]), [0x80, 0x01, 0x80, 0x80])
        # still connected, and the granted subscription works
        raw.send(pkt_pingreq())
        raw.expect(PINGRESP)
        self.gw.send_command(a["id"], "for a")
        p = raw.expect(PUBLISH)
        self.assertIn(b"for a", p[2])
        self.assertEqual(self.gw.pending(b["id"]), [])

    def test_subscribe_foreign_with_paho(self):
        a, b = self.gw.create_device(), self.gw.create_device()
        c = self.connected(a)
        self.assertEqual(c.subscribe("devices/%s/messages/devicebound/#" % b["id"]), (0x80,))
        c.subscribe_commands()
        self.gw.send_command(b["id"], "for b only")
        acc = self.gw.send_command(a["id"], "for a").json
        cmds = c.wait_commands(1)
        self.assertEqual(cmds[0]["props"]["$.mid"], acc["messageId"])
        time.sleep(0.5)
        self.assertEqual(len(c.commands()), 1, "received another device's command")

    # ---------------------------------------------------------------- raw packets

    def test_first_packet_not_connect(self):
        dev = self.gw.create_device()
        raw = self.raw()
        raw.send(pkt_publish("devices/%s/messages/events/" % dev["id"], b"x", qos=1, mid=1))
        p = raw.read_packet(20)
        self.assertIsNone(p, "server answered a PUBLISH before CONNECT with %r" % (p,))
        self.assertClosed(raw, "PUBLISH before CONNECT")
        for first in (pkt_pingreq(), pkt_subscribe(1, [("devices/%s/messages/devicebound/#" % dev["id"], 1)])):
            raw = self.raw()
            raw.send(first)
            self.assertClosed(raw, "first packet %r" % first[:1])
        self.assertNothingStored(dev["id"])

    def test_second_connect(self):
        dev = self.gw.create_device()
        raw = self.raw_session(dev)
        good = self.acked_first(raw, dev)
        raw.send(pkt_connect(dev["id"], username_for(dev["id"]), sas_token(dev["id"], dev["primary"])))
        self.assertClosed(raw, "second CONNECT")
        self.assertOnly(dev, [good])

    def test_remaining_length_five_bytes(self):
        dev = self.gw.create_device()
        raw = self.raw_session(dev)
        good = self.acked_first(raw, dev)
        raw.send(b"\x30\xff\xff\xff\xff\x01" + b"\x00" * 64)
        self.assertClosed(raw, "5-byte remaining length")
        raw = self.raw()  # also as the very first packet
        raw.send(b"\x10\xff\xff\xff\xff\x01")
        self.assertClosed(raw, "5-byte remaining length in CONNECT")
        self.assertOnly(dev, [good])

    def test_malformed_connect(self):
        dev = self.gw.create_device()
        tok = sas_token(dev["id"], dev["primary"])
        cases = {
            "protocol name MQTX": pkt_connect(dev["id"], username_for(dev["id"]), tok, proto=b"MQTX"),
            "truncated body": packet(1, 0, enc_str(b"MQTT") + b"\x04"),
            "reserved flag bit": packet(1, 0, enc_str(b"MQTT") + b"\x04\xc3\x00\x3c" + enc_str(dev["id"])
                                        + enc_str(username_for(dev["id"])) + enc_str(tok)),
            "string longer than packet": packet(1, 0, enc_str(b"MQTT") + b"\x04\xc2\x00\x3c\xff\xffab"),
            "fixed-header flags set": bytes([0x1F]) + pkt_connect(dev["id"], username_for(dev["id"]), tok)[1:],
        }
        for what, data in cases.items():
            raw = self.raw()
            raw.send(data)
            p = raw.read_packet(20)
            if p is not None:  # a refusing CONNACK before the close is fine, acceptance is not
                self.assertEqual(p[0], CONNACK, "%s: got %r" % (what, p))
                self.assertNotEqual(p[2][1:2], b"\x00", "%s: CONNECT accepted" % what)
            self.assertClosed(raw, what)

    def test_packet_over_max_size(self):
        dev = self.gw.create_device()
        raw = self.raw_session(dev)
        good = self.acked_first(raw, dev)
        ok = raw.send(pkt_publish("devices/%s/messages/events/" % dev["id"], b"z" * (300 * 1024), qos=1, mid=2))
        p = raw.read_packet(20) if ok else None
        self.assertIsNone(p, "expected a close after a 300 KiB packet, got %r" % (p,))
        self.assertClosed(raw, "300 KiB PUBLISH")
        # the header alone announcing it is enough
        raw = self.raw_session(dev)
        raw.send(b"\x32" + sgtest.enc_varint(300 * 1024))
        self.assertClosed(raw, "header announcing 300 KiB")
        self.assertOnly(dev, [good])

    def test_large_telemetry_under_the_limit(self):
        dev = self.gw.create_device()
        c = self.connected(dev)
        data = os.urandom(250 * 1024)
        c.send(data, timeout=60)
        recs = self.gw.wait_records(dev["id"], 1)
        self.assertEqual(base64.b64decode(recs[0]["payload"]), data)

    def test_garbage_after_tls(self):
        raw = self.raw()
        raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertClosed(raw, "HTTP request over the MQTT port")
        raw = self.raw()
        raw.send(os.urandom(64))
        self.assertClosed(raw, "random bytes")
        raw = self.raw()
        raw.send(b"\x00" * 16)
        self.assertClosed(raw, "zero bytes")

    def test_garbage_without_tls(self):
        raw = self.raw(tls=False)
        raw.send(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")  # plaintext CONNECT on the TLS port
        self.assertClosed(raw, "plaintext MQTT on the TLS port")

    def test_silence_after_tls(self):
        raw = self.raw()
        self.assertClosed(raw, "TLS then silence (connect_timeout=2)", timeout=30)

    def test_silence_before_tls(self):
        raw = self.raw(tls=False)
        self.assertClosed(raw, "TCP then silence (connect_timeout=2)", timeout=30)

    def test_partial_connect_then_silence(self):
        dev = self.gw.create_device()
        raw = self.raw()
        data = pkt_connect(dev["id"], username_for(dev["id"]), sas_token(dev["id"], dev["primary"]))
        raw.send(data[:10])
        self.assertClosed(raw, "half a CONNECT then silence", timeout=30)

    def test_keepalive_silence(self):
        dev = self.gw.create_device()
        raw = self.raw_session(dev, keepalive=2)
        good = self.acked_first(raw, dev)
        self.assertClosed(raw, "keep-alive 2 s then silence", timeout=30)
        self.assertOnly(dev, [good])

    def test_keepalive_kept_by_pings(self):
        dev = self.gw.create_device()
        raw = self.raw_session(dev, keepalive=2)
        for _ in range(6):
            time.sleep(1)
            self.assertTrue(raw.send(pkt_pingreq()), "connection closed although the device pinged")
            raw.expect(PINGRESP)
        self.assertFalse(raw.eof)

    def test_disconnect_packet(self):
        dev = self.gw.create_device()
        raw = self.raw_session(dev)
        raw.send(pkt_publish("devices/%s/messages/events/" % dev["id"], b"before", qos=1, mid=11))
        p = raw.expect(PUBACK)
        self.assertEqual(p[2], b"\x00\x0b")
        raw.send(pkt_disconnect())
        self.assertClosed(raw, "DISCONNECT")
        recs = self.gw.wait_records(dev["id"], 1)
        self.assertEqual(base64.b64decode(recs[0]["payload"]), b"before")

    def test_takeover_on_one_frontend(self):
        dev = self.gw.create_device()
        first = self.connected(dev)
        second = self.connected(dev)
        self.assertTrue(first.wait_closed(15), "the older connection was not closed by the new CONNECT")
        time.sleep(0.5)
        self.assertTrue(second.is_connected(), "the newer connection was closed too")
        second.subscribe_commands()
        self.gw.send_command(dev["id"], "to the new one")
        self.assertEqual(second.wait_commands(1)[0]["payload"], b"to the new one")
        second.send(b"from the new one")


if __name__ == "__main__":
    sgtest.main()
