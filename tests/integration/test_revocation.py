#!/usr/bin/python3
"""Revocation (SPEC 3, issue 8 part 3): disabling, deleting or changing the credentials of a device
closes its live session wherever it is and refuses new connects; commands queued for a deleted
device are dead-lettered as `revoked`; nothing queued is delivered after revocation; nothing
remembers an earlier authentication (there is no cache of auth results: every CONNECT asks the
device's shard, which applies revocations in the same order as connects).

In the cluster every case runs with devices on both frontends. Dead letters of a deleted device:
the per-device API answers 404 once the device is gone (its registry entry is), and the records
stay for the dead-letter retention; a device created again under the same id lists them (its
message sequence continues, so nothing overwrites them). That is how these tests read them.
Both topologies."""

import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import (PUBLISH, GatewayTest, MqttDevice, mosquitto_sub, new_key, pkt_puback, read_publish,
                    sas_token, wait_until)

REFUSED_AUTH = 5   # CONNACK "not authorized" (docs/mqtt.md: unknown device, bad key, disabled)


def q(device_id):
    return urllib.parse.quote(device_id, safe="")


class RevocationTest(GatewayTest):

    # ---------------------------------------------------------------- helpers

    def ports(self):
        """Every frontend's MQTT port (one for the all-in-one, two in the cluster)."""
        return list(self.gw.mqtt_ports)

    def connack(self, device_id, password, port=None):
        c = MqttDevice(self.gw, device_id, password=password, port=port)
        self._clients.append(c)
        return c.connect()

    def assertRefused(self, device_id, password, port, what):
        rc = self.connack(device_id, password, port=port)
        self.assertEqual(rc, REFUSED_AUTH, "%s on port %d: CONNACK %r, expected %d" % (what, port, rc, REFUSED_AUTH))

    def dead_letters(self, device_id):
        r = self.gw.get("/v1/devices/%s/deadletters" % q(device_id))
        self.assertEqual(r.status, 200, r)
        return r.json["deadLetters"]

    def online_devices(self, n_per_port, subscribe=False):
        """[(dev, client, port)]: n_per_port connected devices on every frontend."""
        out = []
        for port in self.ports():
            for _ in range(n_per_port):
                dev = self.gw.create_device()
                c = self.connected(dev, port=port, subscribe=subscribe)
                out.append((dev, c, port))
        return out

    def wait_all_closed(self, online, what):
        for dev, c, port in online:
            self.assertTrue(c.wait_closed(20), "%s: the session of %s on port %d is still open 20 s later"
                            % (what, dev["id"], port))

    # ---------------------------------------------------------------- disable

    def test_disable_closes_sessions_everywhere_and_refuses_connects(self):
        online = self.online_devices(2, subscribe=True)
        for dev, _, _ in online:
            r = self.gw.update_device(dev, status="disabled")
            self.assertEqual(r.status, 200, r)
        self.wait_all_closed(online, "disabled")
        for dev, _, port in online:
            for p in self.ports():
                self.assertRefused(dev["id"], sas_token(dev["id"], dev["primary"]), p, "disabled device")
                self.assertRefused(dev["id"], sas_token(dev["id"], dev["secondary"]), p, "disabled device, secondary key")
        # a third-party client sees the same refusal
        dev = online[0][0]
        r, msgs = mosquitto_sub(self.gw, dev["id"], sas_token(dev["id"], dev["primary"]), count=1, timeout=10)
        self.assertNotEqual(r.returncode, 0, "mosquitto_sub connected to a disabled device")
        self.assertIn(b"not authori", r.stderr.lower() + r.stdout.lower(), r)
        self.assertEqual(msgs, [])
        # enabling it again lets it in (nothing remembers the refusal either)
        r = self.gw.update_device(dev, status="enabled")
        self.assertEqual(r.status, 200, r)
        for p in self.ports():
            self.assertEqual(self.connack(dev["id"], sas_token(dev["id"], dev["primary"]), port=p), 0)

    def test_disable_keeps_the_queue_and_delivers_nothing_until_enabled(self):
        """Disabling is reversible: queued commands stay queued (not dead-lettered), none is
        delivered while the device is disabled, new ones are refused (403)."""
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw_subscribed(dev, port=self.ports()[-1])
        mids = [self.gw.send_command(did, "cmd-%d" % i).json["messageId"] for i in range(3)]
        got = [read_publish(raw) for _ in mids]   # in flight: never acknowledged
        self.assertEqual([p for _, _, p in got], [b"cmd-0", b"cmd-1", b"cmd-2"])
        self.assertEqual(self.gw.update_device(dev, status="disabled").status, 200)
        self.assertTrue(raw.wait_closed(20), "the disabled device's connection is still open")
        self.assertError(self.gw.send_command(did, "refused", expect=None), 403, "DeviceDisabled")
        self.assertEqual([m["messageId"] for m in self.gw.pending(did)], mids, "the queue changed on disabling")
        self.assertEqual(self.dead_letters(did), [])
        self.assertRefused(did, sas_token(did, dev["primary"]), self.ports()[0], "disabled device")
        self.assertEqual(self.gw.update_device(dev, status="enabled").status, 200)
        c = self.connected(dev, port=self.ports()[0], subscribe=True)
        cmds = c.wait_commands(3)
        self.assertEqual([x["props"]["$.mid"] for x in cmds], mids)

    # ---------------------------------------------------------------- delete

    def test_delete_closes_sessions_everywhere_and_refuses_connects(self):
        online = self.online_devices(2)
        for dev, _, _ in online:
            self.assertEqual(self.gw.http("DELETE", "/v1/devices/" + q(dev["id"])).status, 204)
        self.wait_all_closed(online, "deleted")
        for dev, _, _ in online:
            self.assertError(self.gw.device(dev["id"]), 404, "DeviceNotFound")
            for p in self.ports():
                self.assertRefused(dev["id"], sas_token(dev["id"], dev["primary"]), p, "deleted device")

    def test_delete_dead_letters_the_queue_as_revoked(self):
        """Queued and in-flight (delivered, never acknowledged) commands of a deleted device are
        dead-lettered with reason `revoked`; a device created again under the id gets none."""
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw_subscribed(dev, port=self.ports()[-1])
        mids = [self.gw.send_command(did, "cmd-%d" % i, ack="full").json["messageId"] for i in range(5)]
        for _ in range(2):
            read_publish(raw)   # two in flight, not acknowledged
        self.assertEqual(self.gw.http("DELETE", "/v1/devices/" + q(did)).status, 204)
        self.assertTrue(raw.wait_closed(20), "the deleted device's connection is still open")
        self.assertError(self.gw.get("/v1/devices/%s/deadletters" % q(did)), 404, "DeviceNotFound")
        again = self.gw.create_device(did)
        dead = self.dead_letters(did)
        self.assertEqual(sorted(d["messageId"] for d in dead), sorted(mids), dead)
        self.assertEqual({d["reason"] for d in dead}, {"revoked"}, dead)
        self.assertEqual(self.gw.pending(did), [])
        c = self.connected(again, port=self.ports()[0], subscribe=True)
        fresh = self.gw.send_command(did, "fresh").json["messageId"]
        c.wait_commands(1)
        time.sleep(1)
        self.assertEqual([x["props"]["$.mid"] for x in c.commands()], [fresh],
                         "a command of the deleted device reached the device created again")

    def test_delete_racing_deliveries_loses_nothing_and_delivers_nothing_after(self):
        """Commands stream to a subscribed device while it is deleted: every accepted command is
        either received by the device before its socket closed or dead-lettered `revoked` (or
        both: received, but the PUBACK did not make it), and nothing reaches the socket after
        it closed or the device created again."""
        for port in self.ports():
            dev = self.gw.create_device()
            did = dev["id"]
            c = self.connected(dev, port=port, subscribe=True)
            accepted, stop = [], threading.Event()

            def enqueue():
                i = 0
                while not stop.is_set():
                    r = self.gw.send_command(did, "c-%d" % i, expect=None)
                    if r.status == 201:
                        accepted.append(r.json["messageId"])
                    elif r.status in (403, 404):
                        return   # the device is gone
                    else:
                        time.sleep(0.05)   # 429: the queue is full for a moment
                    i += 1

            t = threading.Thread(target=enqueue, daemon=True)
            t.start()
            wait_until(lambda: len(c.commands()) >= 10, 30, "ten commands delivered")
            self.assertEqual(self.gw.http("DELETE", "/v1/devices/" + q(did)).status, 204)
            self.assertTrue(c.wait_closed(20), "the deleted device's connection is still open")
            received_at_close = [x["props"]["$.mid"] for x in c.commands()]
            stop.set()
            t.join(30)
            time.sleep(1)
            self.assertEqual([x["props"]["$.mid"] for x in c.commands()], received_at_close,
                             "messages arrived after the connection closed")
            again = self.gw.create_device(did)
            dead = {d["messageId"]: d["reason"] for d in self.dead_letters(did)}
            self.assertEqual(set(dead.values()) - {"revoked"}, set(), dead)
            lost = [m for m in accepted if m not in dead and m not in received_at_close]
            self.assertEqual(lost, [], "accepted commands neither delivered nor dead-lettered")
            self.assertTrue(set(dead) <= set(accepted), "dead letters of commands never accepted")
            c2 = self.connected(again, port=port, subscribe=True)
            time.sleep(1.5)
            self.assertEqual(c2.commands(), [], "the re-created device got commands of the deleted one")

    # ---------------------------------------------------------------- credentials

    def test_credential_change_closes_sessions_everywhere(self):
        online = self.online_devices(2, subscribe=True)
        rotated = []
        for dev, _, _ in online:
            new = dict(dev, primary=new_key())   # only the primary key changes
            self.assertEqual(self.gw.update_device(new).status, 200)
            rotated.append(new)
        self.wait_all_closed(online, "primary key changed")
        for (old, _, _), new in zip(online, rotated):
            for p in self.ports():
                self.assertRefused(old["id"], sas_token(old["id"], old["primary"]), p, "old primary key")
                # the secondary key did not change: still good
                self.assertEqual(self.connack(old["id"], sas_token(old["id"], old["secondary"]), port=p), 0)
                self.assertEqual(self.connack(new["id"], sas_token(new["id"], new["primary"]), port=p), 0)

    def test_in_flight_commands_wait_for_the_new_credentials(self):
        """Commands in flight on the revoked session are not lost and not delivered to it again:
        they go to the next session, authenticated with the new key."""
        dev = self.gw.create_device()
        did = dev["id"]
        raw = self.raw_subscribed(dev, port=self.ports()[-1])
        mids = [self.gw.send_command(did, "cmd-%d" % i).json["messageId"] for i in range(3)]
        got = [read_publish(raw) for _ in mids]
        self.assertEqual([p for _, _, p in got], [b"cmd-0", b"cmd-1", b"cmd-2"])
        new = dict(dev, primary=new_key(), secondary=new_key())
        self.assertEqual(self.gw.update_device(new).status, 200)
        # the connection ends with nothing more on it: a PUBACK now is too late to count
        raw.send(pkt_puback(got[0][0]))
        while True:
            p = raw.read_packet(20)
            if p is None:
                break
            self.assertNotEqual(p[0], PUBLISH, "a command reached the revoked session: %r" % (p,))
        self.assertRefused(did, sas_token(did, dev["secondary"]), self.ports()[0], "old secondary key")
        c = self.connected(new, port=self.ports()[0], subscribe=True)
        cmds = c.wait_commands(3)
        self.assertEqual([x["props"]["$.mid"] for x in cmds], mids)
        self.assertEqual(self.dead_letters(did), [])

    def test_no_stale_authentication(self):
        """Every CONNECT is decided by the registry as it is now: right after each change the
        old key is refused and the new one accepted, on every frontend, round after round."""
        dev = self.gw.create_device()
        did = dev["id"]
        for rnd in range(4):
            old = dev
            dev = dict(dev, primary=new_key(), secondary=new_key())
            self.assertEqual(self.gw.update_device(dev).status, 200)
            for p in self.ports():
                self.assertRefused(did, sas_token(did, old["primary"]), p, "round %d, previous key" % rnd)
                self.assertEqual(self.connack(did, sas_token(did, dev["primary"]), port=p), 0,
                                 "round %d: the new key is refused on port %d" % (rnd, p))
        self.assertEqual(self.gw.update_device(dev, status="disabled").status, 200)
        for p in self.ports():
            self.assertRefused(did, sas_token(did, dev["primary"]), p, "disabled right after being accepted")


if __name__ == "__main__":
    sgtest.main()
