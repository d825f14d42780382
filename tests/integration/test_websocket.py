#!/usr/bin/python3
"""MQTT over WebSocket over TLS on the gateway's ws port (SPEC §1): MQTT.js over wss:// (/mqtt),
the Azure IoT device SDK's MqttWs transport and paho-mqtt with transport="websockets"
(/$iothub/websocket) each send QoS 1 telemetry (read back from the telemetry log) and receive a
cloud-to-device message. Then hand-made bytes on a TLS socket: refused upgrades (wrong path, no
mqtt subprotocol, a plain GET, oversized headers, not HTTP at all) answered with their HTTP status
and closed; frames the gateway must refuse (unmasked, text, a huge length) answered with a close
frame; ping, a CONNECT split over frames; an upgrade that never completes closed by the CONNECT
deadline while a device on the MQTT port carries on. Both topologies."""

import base64
import hashlib
import os
import struct
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import CONNACK, GatewayTest, pkt_connect, sas_token, username_for, wait_until  # noqa: E402
from test_azure_sdk import SdkDevice  # noqa: E402

KEY = base64.b64encode(os.urandom(16)).decode()


def upgrade_request(path="/$iothub/websocket", protocol="mqtt", extra=""):
    req = ("GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n" % (path, KEY))
    if protocol:
        req += "Sec-WebSocket-Protocol: %s\r\n" % protocol
    return (req + extra + "\r\n").encode()


def client_frame(opcode, payload, fin=True, mask=True, claimed=None):
    """A frame as a client sends it (masked unless told otherwise)."""
    n = len(payload) if claimed is None else claimed
    m = 0x80 if mask else 0
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class WebSocketTest(GatewayTest):

    @classmethod
    def setUpClass(cls):
        sgtest.ensure_node_modules()
        super().setUpClass()

    def ws_port(self):
        self.assertTrue(self.gw.ws_ports, "the gateway reported no WebSocket port")
        return self.gw.ws_ports[0]

    # -- raw helpers: a TLS socket to the ws port

    def wss(self):
        return self.raw(port=self.ws_port())

    def until_closed(self, raw, timeout=15):
        """Everything the server sends until it closes the connection (fails if it does not)."""
        deadline = time.monotonic() + timeout
        while not raw.eof:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "the server did not close the connection in %d s (got %r)" % (timeout, raw.buf))
            raw._fill(left)
        return raw.buf

    def upgraded(self):
        raw = self.wss()
        raw.send(upgrade_request())
        deadline = time.monotonic() + 15
        while b"\r\n\r\n" not in raw.buf:
            self.assertGreater(deadline - time.monotonic(), 0, "no upgrade answer")
            self.assertIsNot(raw._fill(1), False, "closed before answering the upgrade: %r" % raw.buf)
        head, _, raw.buf = raw.buf.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        return raw, head.decode()

    def server_frame(self, raw, timeout=15):
        """(opcode, payload) of the next frame the server sends (never masked)."""
        deadline = time.monotonic() + timeout
        while True:
            b = raw.buf
            if len(b) >= 2:
                self.assertFalse(b[1] & 0x80, "a server frame is masked")
                n, at = b[1] & 0x7F, 2
                if n == 126 and len(b) >= 4:
                    n, at = struct.unpack("!H", b[2:4])[0], 4
                elif n == 127 and len(b) >= 10:
                    n, at = struct.unpack("!Q", b[2:10])[0], 10
                if n < 126 or at > 2:
                    if len(b) >= at + n:
                        raw.buf = b[at + n:]
                        return b[0] & 0x0F, b[at:at + n]
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "no frame from the server (have %r)" % raw.buf)
            self.assertIsNot(raw._fill(left), False, "closed without a frame (have %r)" % raw.buf)

    def refused_with(self, request, status):
        raw = self.wss()
        raw.send(request)
        answer = self.until_closed(raw)
        self.assertTrue(answer.startswith(b"HTTP/1.1 %d " % status), answer)
        self.assertIn(b"\r\nConnection: close\r\n", answer)
        return answer.decode("latin-1")

    def closed_with(self, frame_bytes, code):
        raw, _ = self.upgraded()
        raw.send(frame_bytes)
        op, payload = self.server_frame(raw)
        self.assertEqual(op, 0x8, "expected a close frame, got opcode %d %r" % (op, payload))
        self.assertEqual(struct.unpack("!H", payload[:2])[0], code, payload)
        self.until_closed(raw)
        return payload[2:].decode()

    # -- real clients

    def test_mqttjs_over_wss(self):
        dev = self.gw.create_device()
        did = dev["id"]
        url = "wss://localhost:%d/mqtt?api-version=2021-04-12" % self.ws_port()
        d = sgtest.NodeClient("mqttjs_ws.js", url, did, username_for(did), sas_token(did, dev["primary"]), self.gw.ca,
                              3, 1)
        self.addCleanup(d.close)
        d.wait_event("subscribed")
        d.wait_event("sent")
        recs = self.gw.wait_records(did, 3, timeout=30)
        self.assertEqual([r["properties"].get("seq") for r in recs], ["0", "1", "2"], recs)
        self.gw.send_command(did, "over-websocket")
        msgs = d.wait_event("message")
        self.assertEqual(msgs[0]["data"], "over-websocket")
        self.assertTrue(msgs[0]["topic"].startswith("devices/%s/messages/devicebound/" % did), msgs)
        self.assertEqual(d.wait_exit(30), 0, "%r %s" % (d.events, d.stderr()))
        wait_until(lambda: self.gw.pending(did) == [], 20, "the command to be completed")

    def test_azure_sdk_mqttws(self):
        dev = self.gw.create_device()
        did = dev["id"]
        d = SdkDevice(self.gw, did, dev["primary"], 2, 1, transport="mqttws")
        self.addCleanup(d.close)
        d.wait_event("open")
        d.wait_event("sent")
        mid = self.gw.send_command(did, "sdk-ws").json["messageId"]
        msgs = d.wait_event("message")
        self.assertEqual((msgs[0]["messageId"], msgs[0]["data"]), (mid, "sdk-ws"))
        d.wait_event("completed")
        self.assertEqual(d.wait_exit(30), 0, d.stderr())
        recs = self.gw.wait_records(did, 2, timeout=30)
        self.assertEqual([r["properties"].get("seq") for r in recs], ["0", "1"], recs)
        self.assertEqual(recs[0]["properties"].get("$.ct"), "application/json", recs)

    def test_paho_websockets(self):
        dev = self.gw.create_device()
        did = dev["id"]
        c = self.device(dev, websocket=True).connect_ok()
        c.subscribe_commands()
        c.send(b"paho-ws", {"k": "v"})
        recs = self.gw.wait_records(did, 1, timeout=30)
        self.assertEqual(recs[0]["properties"].get("k"), "v", recs)
        self.gw.send_command(did, "to-paho")
        msgs = c.wait_commands(1)
        self.assertEqual(msgs[0]["payload"], b"to-paho")

    # -- the upgrade, refused

    def test_refused_upgrades(self):
        self.refused_with(upgrade_request(path="/other"), 404)
        self.refused_with(upgrade_request(path="/"), 404)
        body = self.refused_with(upgrade_request(protocol=None), 400)
        self.assertIn("Sec-WebSocket-Protocol must offer mqtt", body)
        self.refused_with(upgrade_request(protocol="mqttv3.1"), 400)
        self.refused_with(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n", 426)   # a plain GET
        self.refused_with(b"POST /mqtt HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n", 405)
        self.refused_with(upgrade_request(extra="X-Padding: %s\r\n" % ("p" * 5000)), 431)
        # an MQTT client on the wrong port: refused at once, not after the deadline
        t0 = time.monotonic()
        self.refused_with(pkt_connect("dev", username_for("dev"), "x"), 400)
        self.assertLess(time.monotonic() - t0, 8)
        # an upgrade with a query string is fine
        raw = self.wss()
        raw.send(upgrade_request(path="/mqtt?iothub-no-client-cert=true"))
        raw._fill(15)
        self.assertTrue(raw.buf.startswith(b"HTTP/1.1 101 "), raw.buf)

    def test_upgrade_answer(self):
        _, head = self.upgraded()
        want = base64.b64encode(hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        self.assertIn("\r\nSec-WebSocket-Accept: %s\r\n" % want.decode(), head + "\r\n")
        self.assertIn("\r\nSec-WebSocket-Protocol: mqtt", head)

    # -- frames

    def test_frames_refused(self):
        ping = b"\xc0\x00"
        self.assertIn("masked", self.closed_with(client_frame(0x2, ping, mask=False), 1002))
        self.assertIn("text frames", self.closed_with(client_frame(0x1, b"{}"), 1003))
        # a length of 2^62 bytes: refused on its header and first bytes, nothing buffered
        self.closed_with(client_frame(0x2, b"abcd", claimed=1 << 62), 1009)
        # over the packet cap before a CONNECT was read (frontend.max_connect_packet, 8 KiB)
        self.closed_with(client_frame(0x2, b"x" * 64, claimed=100000), 1009)
        self.closed_with(client_frame(0x0, ping), 1002)   # a continuation with no message

    def test_ping_close_and_split_connect(self):
        dev = self.gw.create_device()
        did = dev["id"]
        raw, _ = self.upgraded()
        raw.send(client_frame(0x9, b"are-you-there"))
        self.assertEqual(self.server_frame(raw), (0xA, b"are-you-there"))
        # one CONNECT in three frames of one message, with a ping in between
        c = pkt_connect(did, username_for(did), sas_token(did, dev["primary"]))
        raw.send(client_frame(0x2, c[:3], fin=False) + client_frame(0x9, b"") +
                 client_frame(0x0, c[3:20], fin=False))
        raw.send(client_frame(0x0, c[20:]))
        self.assertEqual(self.server_frame(raw), (0xA, b""))
        op, payload = self.server_frame(raw)
        self.assertEqual((op, payload), (0x2, bytes([CONNACK << 4, 2, 0, 0])))
        # telemetry and a PINGREQ in one frame
        pub = sgtest.pkt_publish("devices/%s/messages/events/" % did, b"raw-ws", qos=1, mid=7)
        raw.send(client_frame(0x2, pub + sgtest.pkt_pingreq()))
        got = b""
        while len(got) < 6:
            op, payload = self.server_frame(raw)
            self.assertEqual(op, 0x2)
            got += payload
        self.assertEqual(len(got), 6, got)
        self.assertIn(bytes([0x40, 2, 0, 7]), got)   # PUBACK 7: durable
        self.assertIn(bytes([0xD0, 0]), got)         # PINGRESP
        self.assertEqual(len(self.gw.wait_records(did, 1)), 1)
        # close: echoed, then the connection ends
        raw.send(client_frame(0x8, struct.pack("!H", 1000) + b"bye"))
        self.assertEqual(self.server_frame(raw), (0x8, struct.pack("!H", 1000)))
        self.until_closed(raw)

    def test_a_publish_right_behind_the_connect(self):
        # MQTT lets a client send publishes before its CONNACK, and the MQTT/TLS port takes them:
        # over WebSocket too, a 20 KB publish (larger than frontend.max_connect_packet, 8 KiB) in
        # the frame after the CONNECT is acknowledged. Before, the frame was refused (1009) by the
        # cap of a connection not yet accepted.
        dev = self.gw.create_device()
        did = dev["id"]
        raw, _ = self.upgraded()
        pub = sgtest.pkt_publish("devices/%s/messages/events/" % did, b"p" * 20000, qos=1, mid=7)
        raw.send(client_frame(0x2, pkt_connect(did, username_for(did), sas_token(did, dev["primary"]))) +
                 client_frame(0x2, pub))
        self.assertEqual(self.server_frame(raw), (0x2, bytes([CONNACK << 4, 2, 0, 0])))
        self.assertEqual(self.server_frame(raw), (0x2, bytes([0x40, 2, 0, 7])))   # PUBACK 7: durable
        recs = self.gw.wait_records(did, 1)
        self.assertEqual(base64.b64decode(recs[0]["payload"]), b"p" * 20000)

    def test_unfinished_upgrade_is_closed_by_the_deadline(self):
        dev = self.gw.create_device()
        slow = self.wss()
        slow.send(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n")   # and nothing more
        t0 = time.monotonic()
        # meanwhile a device on the MQTT port is served as usual
        c = self.device(dev).connect_ok()
        c.send(b"unaffected")
        self.assertEqual(len(self.gw.wait_records(dev["id"], 1)), 1)
        self.assertEqual(self.until_closed(slow, timeout=25), b"")   # closed without an answer
        waited = time.monotonic() - t0
        self.assertGreater(waited, 5, "closed long before the 10 s CONNECT deadline")
        self.assertTrue(c.is_connected())


if __name__ == "__main__":
    sgtest.main()
