#!/usr/bin/python3
"""Session semantics beyond a plain connect: the will message (IoT Hub stores it as telemetry when
the device vanishes), CleanSession=0 resuming the devicebound subscription, and QoS 0 devicebound
subscriptions (delivered at QoS 0, completed on send). Both topologies."""

import struct
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import (CONNACK, CONNECT, PUBLISH, GatewayTest, MqttDevice, enc_str, packet, pkt_disconnect,
                    sas_token, username_for, wait_until)


def pkt_connect_will(device_id, password, will_topic, will_payload, will_qos=0, keepalive=60, clean=True):
    flags = 0x80 | 0x40 | 0x04 | (will_qos << 3) | (0x02 if clean else 0)
    body = enc_str(b"MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + enc_str(device_id)
    body += enc_str(will_topic) + struct.pack("!H", len(will_payload)) + will_payload
    body += enc_str(username_for(device_id)) + enc_str(password)
    return packet(CONNECT, 0, body)


class FlagsDevice(MqttDevice):
    """Also keeps CONNACK's session-present flag."""

    def _on_connect(self, client, userdata, flags, rc):
        self.session_present = flags.get("session present")
        super()._on_connect(client, userdata, flags, rc)


class SessionTest(GatewayTest):

    def telemetry_topic(self, did, bag=""):
        return "devices/%s/messages/events/%s" % (did, bag)

    # ---------------------------------------------------------------- will

    def test_will_is_stored_when_the_device_vanishes(self):
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw()
        raw.send(pkt_connect_will(did, sas_token(did, dev["primary"]), self.telemetry_topic(did, "kind=lastwill"),
                                  b"gone", will_qos=1))
        t, _, body = raw.expect(CONNACK)
        self.assertEqual(body[1], 0, "CONNACK")
        raw.close()   # no DISCONNECT: the gateway publishes the will
        recs = self.gw.wait_records(did, 1, timeout=30)
        self.assertEqual(len(recs), 1, recs)
        rec = recs[0]
        self.assertEqual(rec["payload"], "Z29uZQ==", rec)   # base64("gone")
        self.assertEqual(rec["properties"].get("kind"), "lastwill", rec)
        self.assertEqual(rec["properties"].get("iothub-connection-device-id"), did, rec)

    def test_no_will_after_disconnect(self):
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw()
        raw.send(pkt_connect_will(did, sas_token(did, dev["primary"]), self.telemetry_topic(did), b"gone"))
        self.assertEqual(raw.expect(CONNACK)[2][1], 0)
        # a marker message after the DISCONNECT's session would have produced the will
        raw.send(sgtest.pkt_publish(self.telemetry_topic(did, "marker=1"), b"m", qos=1, mid=7))
        raw.expect(sgtest.PUBACK)
        raw.send(pkt_disconnect())
        self.assertTrue(raw.wait_closed(10))
        m = self.connected(dev)
        m.send(b"after", props={"marker": "2"})
        recs = self.gw.wait_records(did, 2, timeout=30)
        time.sleep(1)
        recs = self.gw.device_records(did)
        self.assertEqual([r["properties"].get("marker") for r in recs], ["1", "2"], recs)

    def test_will_on_a_foreign_topic_is_refused(self):
        dev = self.gw.create_device()
        other = self.gw.create_device()
        did = dev["id"]
        raw = self.raw()
        raw.send(pkt_connect_will(did, sas_token(did, dev["primary"]), self.telemetry_topic(other["id"]), b"x"))
        p = raw.read_packet(15)
        self.assertIsNotNone(p, "expected CONNACK 5, the connection closed without one")
        self.assertEqual((p[0], p[2][1]), (CONNACK, 5), p)
        self.assertTrue(raw.wait_closed(10))
        self.assertEqual(self.gw.device_records(other["id"]), [])

    # ---------------------------------------------------------------- persistent sessions

    def subscribe_then_leave(self, dev):
        """A persistent session (CleanSession=0) subscribes to its commands and disconnects."""
        first = FlagsDevice(self.gw, dev["id"], key=dev["primary"], clean_session=False)
        self._clients.append(first)
        self.assertEqual(first.connect(), 0)
        first.subscribe_commands()
        first.close()
        wait_until(lambda: not self.gw.device(dev["id"]).json["connection"]["connected"], 20, "the session to end")

    def test_clean_session_false_resumes_the_subscription(self):
        dev = self.gw.create_device()
        did = dev["id"]
        self.subscribe_then_leave(dev)
        mid = self.gw.send_command(did, "while away").json["messageId"]

        again = FlagsDevice(self.gw, did, key=dev["primary"], clean_session=False)
        self._clients.append(again)
        self.assertEqual(again.connect(), 0)
        self.assertEqual(again.session_present, 1, "CONNACK session-present for a resumed session")
        cmds = again.wait_commands(1, timeout=20)   # no SUBSCRIBE this time
        self.assertEqual(cmds[0]["props"].get("$.mid"), mid, cmds)
        wait_until(lambda: self.gw.pending(did) == [], 20, "the queue to drain")

    def test_clean_session_true_starts_without_subscriptions(self):
        dev = self.gw.create_device()
        did = dev["id"]
        self.subscribe_then_leave(dev)
        self.gw.send_command(did, "held")
        clean = FlagsDevice(self.gw, did, key=dev["primary"], clean_session=True)
        self._clients.append(clean)
        self.assertEqual(clean.connect(), 0)
        self.assertEqual(clean.session_present, 0)
        time.sleep(2)
        self.assertEqual(clean.commands(), [], "delivered without a subscription")
        self.assertEqual(len(self.gw.pending(did)), 1)
        clean.subscribe_commands()
        self.assertEqual(clean.wait_commands(1, timeout=20)[0]["payload"], b"held")

    # ---------------------------------------------------------------- QoS 0 devicebound

    def test_qos0_subscription_gets_qos0_deliveries(self):
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw_subscribed(dev, qos=0)
        self.gw.send_command(did, "fire and forget")
        t, flags, body = raw.expect(PUBLISH, timeout=20)
        self.assertEqual((flags >> 1) & 3, 0, "delivered at QoS 0")
        tl = struct.unpack("!H", body[:2])[0]
        topic = body[2:2 + tl].decode()
        self.assertTrue(topic.startswith("devices/%s/messages/devicebound/" % did), topic)
        self.assertEqual(body[2 + tl:], b"fire and forget")   # no packet id at QoS 0
        # no PUBACK is sent: the gateway completed it when it wrote it
        wait_until(lambda: self.gw.pending(did) == [], 20, "the queue to drain")


if __name__ == "__main__":
    sgtest.main()
