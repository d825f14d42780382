#!/usr/bin/python3
"""Bad input from devices (issue 8 part 7), what test_protocol.py and test_frontend_limits.py do
not cover yet, over real TLS with hand-made packets: packet types only a server sends (and the
reserved ones), every CONNECT / PUBLISH / SUBSCRIBE cut short at every byte, 65,535-byte topics
and topics of thousands of levels, control characters in topics and filters, `$` topics in
PUBLISH, TLS handshakes that never finish, two clients fighting over one device id. Each case
closes the connection (or refuses the subscription), stores nothing, and leaves the process up
with acknowledged data intact and other devices served; in `sacgate all` the process's memory
stays flat over many rounds."""

import base64
import socket
import ssl
import struct
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import (CONNACK, PUBACK, SUBACK, GatewayTest, enc_str, packet, pkt_connect, pkt_publish,  # noqa: E402
                    pkt_subscribe, sas_token, username_for, wait_until)


def enc_bytes_str(b):
    return struct.pack("!H", len(b)) + b


class BadInputTest(GatewayTest):
    SETS = ("frontend.connect_timeout=3",)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # a witness: telemetry acknowledged before any bad client shows up must stay readable,
        # and its connection must stay up through every test
        cls.witness = cls.gw.create_device()
        cls.wconn = sgtest.RawConn(cls.gw)
        # keep-alive 0 (the cap, 1767 s): it may stay idle through a long test
        assert cls.wconn.connect(cls.witness["id"], sas_token(cls.witness["id"], cls.witness["primary"]),
                                 keepalive=0) == 0
        cls.wmid = 1
        cls.wconn.send(pkt_publish("devices/%s/messages/events/" % cls.witness["id"], b"witness", qos=1, mid=1))
        assert cls.wconn.read_packet(20)[0] == PUBACK

    @classmethod
    def tearDownClass(cls):
        cls.wconn.close()
        super().tearDownClass()

    def tearDown(self):
        try:
            self.assertServes()
        finally:
            super().tearDown()

    def assertServes(self):
        """The witness's connection still works, its first record is intact, a new device connects."""
        cls = type(self)
        cls.wmid += 1
        self.assertTrue(cls.wconn.send(pkt_publish("devices/%s/messages/events/" % cls.witness["id"], b"w%d" % cls.wmid,
                                                   qos=1, mid=cls.wmid)), "the witness's connection was closed")
        p = cls.wconn.read_packet(20)
        self.assertEqual(p and p[0], PUBACK, "the witness got no PUBACK: %r" % (p,))
        recs = self.gw.device_records(self.witness["id"])
        self.assertEqual(base64.b64decode(recs[0]["payload"]), b"witness")
        dev = self.gw.create_device()
        raw = self.raw()
        self.assertEqual(raw.connect(dev["id"], sas_token(dev["id"], dev["primary"])), 0)
        raw.close()

    # -- helpers
    def session(self, dev):
        raw = self.raw()
        self.assertEqual(raw.connect(dev["id"], sas_token(dev["id"], dev["primary"])), 0)
        return raw

    def assertClosed(self, raw, what, timeout=20):
        self.assertTrue(raw.wait_closed(timeout), "%s: connection still open after %d s" % (what, timeout))

    def assertPublishCloses(self, dev, topic, what):
        """A QoS 1 PUBLISH to topic (bytes) on a session of dev gets no answer but the close."""
        raw = self.session(dev)
        raw.send(packet(3, 0x02, enc_bytes_str(topic) + b"\x00\x05payload"))
        p = raw.read_packet(20)
        self.assertIsNone(p, "%s: the frontend answered %r" % (what, p))
        self.assertClosed(raw, what)

    def assertNothingStored(self, dev):
        self.assertEqual(self.gw.device_records(dev["id"]), [], "telemetry stored for %s" % dev["id"])

    # ------------------------------------------------------------------ packet types

    def test_packet_types_only_a_server_sends(self):
        dev = self.gw.create_device()
        cases = {
            "CONNACK": packet(2, 0, b"\x00\x00"),
            "PUBREC": packet(5, 0, b"\x00\x01"),
            "PUBREL": packet(6, 2, b"\x00\x01"),
            "PUBCOMP": packet(7, 0, b"\x00\x01"),
            "SUBACK": packet(9, 0, b"\x00\x01\x01"),
            "UNSUBACK": packet(11, 0, b"\x00\x01"),
            "PINGRESP": packet(13, 0, b""),
            "reserved 0": packet(0, 0, b""),
            "reserved 15": packet(15, 0, b""),
        }
        for what, data in cases.items():
            raw = self.session(dev)   # after the CONNACK
            raw.send(data)
            self.assertClosed(raw, "%s from a device" % what)
            raw = self.raw()          # and as the first packet
            raw.send(data)
            self.assertClosed(raw, "%s as the first packet" % what)
        self.assertNothingStored(dev)

    # ------------------------------------------------------------------ truncation

    def test_connect_cut_short_at_every_byte(self):
        """Every prefix of a CONNECT (with will, username, password) sent as a whole packet: the
        remaining length says the packet ends there, so every field is cut in turn."""
        dev = self.gw.create_device()
        did, tok = dev["id"], sas_token(dev["id"], dev["primary"])
        body = enc_str("MQTT") + bytes([4, 0x02 | 0x04 | 0x80 | 0x40]) + struct.pack("!H", 60) + enc_str(did)
        body += enc_str("devices/%s/messages/events/" % did) + enc_str("bye")
        body += enc_str(username_for(did)) + enc_str(tok)
        for cut in range(len(body)):
            raw = self.raw()
            raw.send(packet(1, 0, body[:cut]))
            p = raw.read_packet(20)
            if p is not None:   # a refusing CONNACK is fine; acceptance is not
                self.assertEqual(p[0], CONNACK, "cut at %d: %r" % (cut, p))
                self.assertNotEqual(p[2][1], 0, "a CONNECT cut at byte %d of %d was accepted" % (cut, len(body)))
            self.assertClosed(raw, "CONNECT cut at byte %d" % cut)
        raw = self.raw()   # the whole one is good
        raw.send(packet(1, 0, body))
        self.assertEqual(raw.expect(CONNACK)[2], b"\x00\x00")
        raw.close()

    def test_publish_and_subscribe_cut_short_at_every_byte(self):
        dev = self.gw.create_device()
        did = dev["id"]
        pub = enc_str("devices/%s/messages/events/k=v" % did) + b"\x00\x09"   # QoS 1: topic, packet id
        sub = b"\x00\x05" + enc_str("devices/%s/messages/devicebound/#" % did) + b"\x01"
        raw = self.session(dev)
        for cut in range(len(pub)):
            if raw.eof:
                raw = self.session(dev)
            raw.send(packet(3, 0x02, pub[:cut]))
            self.assertClosed(raw, "PUBLISH cut at byte %d" % cut)
        for cut in range(len(sub)):
            if raw.eof:
                raw = self.session(dev)
            raw.send(packet(8, 0x02, sub[:cut]))
            self.assertClosed(raw, "SUBSCRIBE cut at byte %d" % cut)
        self.assertNothingStored(dev)

    def test_remaining_length_longer_than_what_follows(self):
        """A PUBLISH whose remaining length promises more than is ever sent: the connection waits
        for the rest, then keep-alive closes it; nothing half-read is stored."""
        dev = self.gw.create_device()
        raw = self.raw()
        self.assertEqual(raw.connect(dev["id"], sas_token(dev["id"], dev["primary"]), keepalive=2), 0)
        body = enc_str("devices/%s/messages/events/" % dev["id"]) + b"\x00\x03" + b"partial"
        raw.send(bytes([0x32]) + sgtest.enc_varint(len(body) + 1000) + body)
        self.assertClosed(raw, "PUBLISH announcing 1000 bytes more than sent, keep-alive 2 s", timeout=30)
        self.assertNothingStored(dev)

    # ------------------------------------------------------------------ topics and filters

    def test_huge_and_deep_topics(self):
        """Topics at MQTT's 65,535-byte limit and of thousands of levels: foreign or not telemetry
        ones close the connection; the device's own telemetry topic with a huge property bag is
        taken and stored intact, stamped with the device's id."""
        dev = self.gw.create_device()
        base = "devices/%s/messages/events/" % dev["id"]
        for what, topic in (("foreign, 65,535 bytes", ("devices/x/" + "y" * 65525).encode()),
                            ("20,000 levels, no telemetry topic", ("devices/" + "a/" * 20000).encode()),
                            ("30,000 empty levels", ("/" * 30000).encode()),
                            ("foreign device after 10,000 levels", (base + "a/" * 10000).replace(
                                dev["id"], "other").encode())):
            self.assertLessEqual(len(topic), 65535)
            self.assertPublishCloses(dev, topic, what)
        self.assertNothingStored(dev)
        value = "v" * (65535 - len(base) - 2)
        raw = self.session(dev)
        raw.send(packet(3, 0x02, enc_bytes_str((base + "k=" + value).encode()) + b"\x00\x05payload"))
        self.assertEqual(raw.expect(PUBACK)[2], b"\x00\x05")
        raw.close()
        rec = self.gw.wait_records(dev["id"], 1)[0]
        self.assertEqual(rec["properties"].get("k"), value)
        self.assertEqual(rec["deviceId"], dev["id"])

    def test_huge_and_deep_subscription_filters(self):
        dev = self.gw.create_device()
        own = "devices/%s/messages/devicebound/#" % dev["id"]
        for what, filt in (("65,535-byte filter", ("devices/%s/" % dev["id"] + "f" * 65000).encode()[:65535]),
                           ("20,000 levels", ("+/" * 20000 + "#").encode()),
                           ("control characters", ("devices/%s/messages/devicebound/\x01\x1b[2J/#" % dev["id"]).encode()),
                           ("DEL character", ("devices/%s/messages/devicebound/\x7f" % dev["id"]).encode())):
            raw = self.session(dev)
            raw.send(packet(8, 0x02, b"\x00\x07" + enc_bytes_str(filt) + b"\x01"))
            p = raw.read_packet(20)
            if p is not None:   # refused (0x80) or the connection closed: never granted
                self.assertEqual(p[0], SUBACK, "%s: %r" % (what, p))
                self.assertEqual(p[2], b"\x00\x07\x80", "%s: SUBACK %r" % (what, p[2]))
                # and the connection still works for its own filter
                raw.send(pkt_subscribe(8, [(own, 1)]))
                self.assertEqual(raw.expect(SUBACK)[2], b"\x00\x08\x01")
            raw.close()

    def test_control_characters_in_publish_topics(self):
        """MQTT §1.5.3: topics should hold no control characters; sacgate closes the connection
        (they would reach logs, JSON readers and terminals). Ill-formed UTF-8 likewise."""
        dev = self.gw.create_device()
        base = ("devices/%s/messages/events/" % dev["id"]).encode()
        for what, topic in (("ESC in the bag", base + b"k=\x1b[31m"), ("newline in the bag", base + b"k=a\nb"),
                            ("DEL in the bag", base + b"k=\x7f"), ("C1 control U+0085", base + "k=\u0085".encode()),
                            ("control in the device id part", ("devices/%s\x01/messages/events/" % dev["id"]).encode()),
                            ("overlong UTF-8 NUL", base + b"k=\xc0\x80"),
                            ("UTF-16 surrogate", base + b"k=\xed\xa0\x80")):
            self.assertPublishCloses(dev, topic, what)
        self.assertNothingStored(dev)
        # a no-break space (U+00A0, right after the C1 range) and percent-encoded controls are data
        raw = self.session(dev)
        raw.send(packet(3, 0x02, enc_bytes_str(base + "k=a\u00a0b&e=%1B".encode()) + b"\x00\x06payload"))
        self.assertEqual(raw.expect(PUBACK)[2], b"\x00\x06")
        raw.close()
        rec = self.gw.wait_records(dev["id"], 1)[0]
        self.assertEqual(rec["properties"].get("k"), "a\u00a0b")

    def test_dollar_topics_in_publish(self):
        dev = self.gw.create_device()
        for topic in ("$SYS/broker/clients", "$share/g/devices/%s/messages/events/" % dev["id"],
                      "$iothub/twin/GET/?$rid=1", "$", "$devices/%s/messages/events/" % dev["id"]):
            raw = self.session(dev)
            raw.send(pkt_publish(topic, b"x", qos=1, mid=2))
            p = raw.read_packet(20)
            self.assertIsNone(p, "PUBLISH to %r answered %r" % (topic, p))
            self.assertClosed(raw, "PUBLISH to %r" % topic)
        self.assertNothingStored(dev)

    # ------------------------------------------------------------------ TLS that never finishes

    def test_tls_handshakes_that_never_finish(self):
        """A ClientHello and then nothing, half a TLS record, one byte: each closed at the CONNECT
        deadline (frontend.connect_timeout=3 here), with the others' service unaffected."""
        ctx = ssl.create_default_context(cafile=self.gw.ca)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname=sgtest.HOST)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = out.read()
        self.assertEqual(hello[0], 0x16)
        socks = []
        for what, data in (("ClientHello, then silence", hello), ("half a ClientHello", hello[:len(hello) // 2]),
                           ("a record header only", hello[:5]), ("one byte", hello[:1])):
            s = socket.create_connection((sgtest.LOOPBACK, self.gw.mqtt_ports[0]), timeout=30)
            s.sendall(data)
            socks.append((what, s))
        for what, s in socks:
            t0 = time.monotonic()
            try:
                while s.recv(65536):
                    pass
                closed = True
            except socket.timeout:
                closed = False
            except OSError:
                closed = True
            s.close()
            self.assertTrue(closed, "%s: still open after %.0f s" % (what, time.monotonic() - t0))

    # ------------------------------------------------------------------ one id, two clients

    def test_two_clients_fighting_over_one_id(self):
        """Two connections take the device id from each other again and again: each new CONNECT
        closes the older one, the last one stays and works, every acknowledged record is kept."""
        dev = self.gw.create_device()
        tok = sas_token(dev["id"], dev["primary"])
        conns, acked = [], []
        for i in range(12):
            raw = self.raw(port=self.gw.mqtt_ports[i % len(self.gw.mqtt_ports)])
            self.assertEqual(raw.connect(dev["id"], tok), 0, "round %d" % i)
            payload = b"round-%d" % i
            raw.send(pkt_publish("devices/%s/messages/events/" % dev["id"], payload, qos=1, mid=i + 1))
            p = raw.read_packet(20)
            if p is not None and p[0] == PUBACK:
                acked.append(payload)
            conns.append(raw)
        for i, raw in enumerate(conns[:-1]):
            self.assertClosed(raw, "connection %d after it was taken over" % i)
        last = conns[-1]
        self.assertFalse(last.eof, "the newest connection was closed")
        last.send(pkt_publish("devices/%s/messages/events/" % dev["id"], b"last", qos=1, mid=99))
        self.assertEqual(last.expect(PUBACK)[2], b"\x00\x63")
        recs = self.gw.wait_records(dev["id"], len(acked) + 1)
        got = [base64.b64decode(r["payload"]) for r in recs]
        for payload in acked + [b"last"]:
            self.assertIn(payload, got, "an acknowledged record was lost in the fight")
        self.assertIn(b"round-11", acked)

    # ------------------------------------------------------------------ memory stays flat

    def test_memory_flat_over_rounds_of_bad_input(self):
        if self.gw.topology != "all":
            self.skipTest("one process to measure in `sacgate all`")
        dev = self.gw.create_device()
        did, tok = dev["id"], sas_token(dev["id"], dev["primary"])
        bad = [packet(2, 0, b"\x00\x00"), packet(3, 0x02, enc_str("$SYS/x") + b"\x00\x01"),
               packet(3, 0x04, enc_str("devices/%s/messages/events/" % did) + b"\x00\x01q2"),
               packet(3, 0x02, enc_bytes_str(("devices/other/messages/events/" + "a/" * 5000).encode()) + b"\x00\x01"),
               packet(3, 0x02, enc_bytes_str(("devices/%s/messages/events/k=\x1b" % did).encode()) + b"\x00\x01"),
               packet(8, 0x02, b"\x00\x01"), b"\x30\xff\xff\xff\xff\x01"]

        def round_():
            for data in bad:
                raw = sgtest.RawConn(self.gw)
                raw.send(pkt_connect(did, username_for(did), tok))
                raw.read_packet(20)
                raw.send(data)
                raw.wait_closed(20)
                raw.close()

        pid = self.gw.proc.pid
        for _ in range(10):   # warm up: allocator arenas, caches, the device's shard state
            round_()
        wait_until(lambda: sgtest.http_request(self.gw.admin_port, "GET", "/healthz").status == 200, 10)
        time.sleep(6)   # the frontend trims its heap every 5 s while it accepts
        before = sgtest.rss_kb(pid)
        for _ in range(40):
            round_()
        time.sleep(6)
        grown = sgtest.rss_kb(pid) - before
        sgtest.log("RSS %d KB -> grew by %d KB over 280 bad connections" % (before, grown))
        if not sgtest.SANITIZED:
            # 280 connections that each leaked a TLS session (~14 KB) would be 3.9 MB
            self.assertLess(grown, 1536, "memory grew by %d KB over 280 refused connections" % grown)


if __name__ == "__main__":
    sgtest.main()
