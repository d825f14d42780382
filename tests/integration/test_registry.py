#!/usr/bin/python3
"""The device registry beyond single entries: tags (validated, kept across updates, shown),
the paged listing GET /v1/devices (every shard merged in id order, after/limit/tag, the per-shard
scan cap and its `next`), and POST /v1/devices/{id}/keys:regenerate (new SAS keys, a session on
the replaced key closed, one on the kept key left up). Both topologies, each with two shards."""

import json
import sys
import urllib.parse

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest, MqttDevice, new_key, sas_token, uid, wait_until  # noqa: E402

REFUSED_AUTH = 5
SCAN_CAP = 10000        # ids one listing looks at per shard (store/st_reader.c LIST_SCAN_MAX)


def q(s):
    return urllib.parse.quote(s, safe="")


class RegistryTest(GatewayTest):
    SETS = ("all.shards=2",)   # the all-in-one with two shards too: listings merge shards either way

    # -- helpers

    def put(self, device_id, body, expect=None):
        r = self.gw.http("PUT", "/v1/devices/" + q(device_id), body)
        if expect is not None:
            self.assertEqual(r.status, expect, r)
        return r

    def listing(self, token="admin", **query):
        return self.gw.http("GET", "/v1/devices?" + urllib.parse.urlencode(query), token=token)

    def page(self, **query):
        r = self.listing(**query)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(set(r.json), {"devices", "next"}, r)
        return r.json

    def list_all(self, max_pages=1000, **query):
        """Follow `next` to the end: (every entry listed, the pages' sizes)."""
        out, sizes, after = [], [], None
        for _ in range(max_pages):
            qq = dict(query)
            if after is not None:
                qq["after"] = after
            p = self.page(**qq)
            out += p["devices"]
            sizes.append(len(p["devices"]))
            if p["next"] is None:
                return out, sizes
            self.assertTrue(after is None or p["next"] > after, "next %r does not move past %r" % (p["next"], after))
            after = p["next"]
        self.fail("the listing did not end within %d pages" % max_pages)

    def import_lines(self, lines):
        body = ("\n".join(json.dumps(line, separators=(",", ":")) for line in lines) + "\n").encode()
        r = sgtest.http_request(self.gw.admin_port, "POST", "/v1/devices:import", body, self.gw.admin_token,
                                {"Content-Type": "application/x-ndjson"}, timeout=240)
        self.assertEqual(r.status, 200, r)
        return r.json

    def regenerate(self, device_id, body=None, token="admin"):
        return self.gw.http("POST", "/v1/devices/%s/keys:regenerate" % q(device_id), body, token=token)

    def mqtt(self, device_id, key):
        c = MqttDevice(self.gw, device_id, password=sas_token(device_id, key), port=self.gw.mqtt_ports[-1])
        self._clients.append(c)
        return c

    def connack(self, device_id, key):
        c = self.mqtt(device_id, key)
        rc = c.connect()
        c.close()
        return rc

    def ids_per_shard(self):
        return [s.get("devices", 0) for s in self.gw.cluster_info()["shards"]]

    # -- tags

    def test_tags_set_updated_removed_and_shown(self):
        dev = self.gw.create_device(tags={"site": "north", "floor": "3"})
        self.assertEqual(dev["entry"]["tags"], {"site": "north", "floor": "3"})
        self.assertEqual(self.gw.device(dev["id"]).json["tags"], {"site": "north", "floor": "3"})
        # an update without tags keeps them (and changes no credentials)
        gen = dev["entry"]["generation"]
        r = self.put(dev["id"], {"limits": {"maxQueuedMessages": 7}}, expect=200)
        self.assertEqual(r.json["tags"], {"site": "north", "floor": "3"})
        self.assertEqual(r.json["generation"], gen)
        # tags given replace the set
        r = self.put(dev["id"], {"tags": {"site": "south", "room": "b.12_x-1"}}, expect=200)
        self.assertEqual(r.json["tags"], {"site": "south", "room": "b.12_x-1"})
        got = self.gw.device(dev["id"]).json
        self.assertEqual(got["tags"], {"site": "south", "room": "b.12_x-1"})
        self.assertEqual(got["limits"]["maxQueuedMessages"], 7)
        # the limits of the boundaries are accepted
        edge = {"k" * 64: "v" * 256, "u": "ü" * 256}
        edge.update({"t%02d" % i: "" for i in range(30)})
        self.assertEqual(len(edge), 32)
        r = self.put(dev["id"], {"tags": edge}, expect=200)
        self.assertEqual(self.gw.device(dev["id"]).json["tags"], edge)
        # {} removes every tag
        r = self.put(dev["id"], {"tags": {}}, expect=200)
        self.assertEqual(r.json["tags"], {})
        self.assertEqual(self.gw.device(dev["id"]).json["tags"], {})
        self.assertEqual(self.gw.device(dev["id"]).json["generation"], gen)

    def test_tag_validation(self):
        dev = self.gw.create_device(tags={"keep": "me"})
        cases = [
            ([], "object"), ("site=north", "object"), ({"n": 3}, "string value"), ({"n": None}, "string value"),
            ({"n": {"a": "b"}}, "string value"), ({"has space": "x"}, "A-Z"), ({"a:b": "x"}, "A-Z"),
            ({"": "x"}, "A-Z"), ({"k" * 65: "x"}, "A-Z"), ({"v": "x" * 257}, "longer than 256"),
            ({"v": "ü" * 257}, "longer than 256"), ({"t%d" % i: "x" for i in range(33)}, "at most 32"),
        ]
        for tags, words in cases:
            with self.subTest(tags=str(tags)[:60]):
                r = self.put(dev["id"], {"tags": tags})
                body = self.assertError(r, 400, "InvalidDevice")
                self.assertIn(words, body["message"])
                fresh = uid("badtag")
                self.assertError(self.put(fresh, {"tags": tags}), 400, "InvalidDevice")
                self.assertError(self.gw.device(fresh), 404, "DeviceNotFound")
        # nothing of the refused updates was kept
        self.assertEqual(self.gw.device(dev["id"]).json["tags"], {"keep": "me"})
        # an import line with bad tags is refused the same way
        bad, good = uid("imptag"), uid("imptag")
        res = self.import_lines([{"deviceId": bad, "tags": {"n": 1}}, {"deviceId": good, "tags": {"n": "1"}}])
        self.assertEqual((res["created"], res["failed"]), (1, 1), res)
        self.assertEqual(res["errors"][0]["error"], "InvalidDevice", res)
        self.assertEqual(self.gw.device(good).json["tags"], {"n": "1"})

    # -- listing

    def test_listing_pages_every_device_once_in_id_order(self):
        run = uid("list")
        # ids chosen to probe byte order: '-' < '0' < 'A' < '_' < 'a', and a prefix before longer ids
        ids = ["%s-%03d" % (run, i) for i in range(150)] + [run, run + "-", run + "A", run + "_z", run + "a",
                                                             run + "-0", run + "-00"]
        res = self.import_lines([{"deviceId": d, "tags": {"run": run}} for d in ids])
        self.assertEqual(res["created"], len(ids), res)
        # some devices carry more keys than the registry entry (a session, a queue, dead letters)
        conn = self.gw.create_device(device_id=run + "-zz-conn", tags={"run": run})
        ids.append(conn["id"])
        self.mqtt(conn["id"], conn["primary"]).connect_ok()
        self.gw.send_command(ids[3], "queued")
        self.gw.send_command(ids[4], "purged")
        self.assertEqual(self.gw.http("DELETE", "/v1/devices/%s/messages" % q(ids[4])).status, 200)
        # ...and deleted devices leave keys behind that are not entries
        gone = ["%s-%03d" % (run, i) for i in (10, 11, 12)]
        for d in gone:
            self.gw.send_command(d, "x")
            self.assertEqual(self.gw.http("DELETE", "/v1/devices/" + q(d)).status, 204)
        want = sorted((set(ids) - set(gone)), key=lambda s: s.encode())

        # both shards hold some of them, so the pages are merged from two parts
        per_shard = self.ids_per_shard()
        self.assertEqual(len(per_shard), 2, per_shard)
        self.assertTrue(all(n > 0 for n in per_shard), per_shard)

        # the whole registry: each entry once, in byte order of the ids, as many as the shards count
        listed, sizes = self.list_all(limit=37)
        got_ids = [e["deviceId"] for e in listed]
        self.assertEqual(got_ids, sorted(got_ids, key=lambda s: s.encode()), "not in id order")
        self.assertEqual(len(got_ids), len(set(got_ids)), "an id listed twice")
        self.assertGreater(len(sizes), 4)
        self.assertTrue(all(n == 37 for n in sizes[:-1]), sizes)
        wait_until(lambda: sum(self.ids_per_shard()) == len(got_ids), 10,
                   "the shards' device counts (%r) to equal the %d listed" % (self.ids_per_shard(), len(got_ids)))
        mine = [d for d in got_ids if d.startswith(run)]
        self.assertEqual(mine, want)
        # entries as GET shows them, without secrets, connection or queue
        for e in listed:
            if e["deviceId"] in (ids[3], conn["id"]):
                full = self.gw.device(e["deviceId"]).json
                self.assertEqual(e, {k: v for k, v in full.items() if k not in ("connection", "queueDepth",
                                                                                  "queuedBytes")})
            self.assertEqual(e["auth"], {"type": "sas"})
        # the tag filter gives exactly this run's devices, in pages of 10
        tagged, sizes = self.list_all(limit=10, tag="run:" + run)
        self.assertEqual([e["deviceId"] for e in tagged], want)
        self.assertGreaterEqual(len(sizes), (len(want) + 9) // 10, sizes)

    def test_after_and_limit(self):
        run = uid("page")
        ids = sorted(("%s-%03d" % (run, i) for i in range(120)), key=lambda s: s.encode())
        self.import_lines([{"deviceId": d, "tags": {"page": run}} for d in ids])
        tag = "page:" + run
        # the default page is 100
        p = self.page(tag=tag)
        self.assertEqual([e["deviceId"] for e in p["devices"]], ids[:100])
        self.assertEqual(p["next"], ids[99])
        p = self.page(tag=tag, after=p["next"])
        self.assertEqual([e["deviceId"] for e in p["devices"]], ids[100:])
        self.assertIsNone(p["next"])
        # after is exclusive, and need not be a registered id
        p = self.page(tag=tag, after=ids[41], limit=3)
        self.assertEqual([e["deviceId"] for e in p["devices"]], ids[42:45])
        self.assertEqual(p["next"], ids[44])
        p = self.page(tag=tag, after=ids[41] + "-", limit=3)
        self.assertEqual([e["deviceId"] for e in p["devices"]], ids[42:45])
        p = self.page(tag=tag, after=run, limit=1)   # before every id of the run
        self.assertEqual([e["deviceId"] for e in p["devices"]], ids[:1])
        # an empty `after` starts at the beginning
        self.assertEqual(self.page(tag=tag, after="", limit=2)["devices"], self.page(tag=tag, limit=2)["devices"])
        # the last page: no `next`; past the end: empty
        p = self.page(tag=tag, after=ids[-3], limit=2)
        self.assertEqual([e["deviceId"] for e in p["devices"]], ids[-2:])
        p = self.page(tag=tag, after=ids[-1])
        self.assertEqual((p["devices"], p["next"]), ([], None))
        # limit 1 walks them one by one; the maximum takes them all
        listed, sizes = self.list_all(limit=1, tag=tag)
        self.assertEqual([e["deviceId"] for e in listed], ids)
        p = self.page(tag=tag, limit=1000)
        self.assertEqual(([e["deviceId"] for e in p["devices"]], p["next"]), (ids, None))
        # bad parameters
        for query in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"limit": ""}, {"limit": "1.5"},
                      {"after": "bad id"}, {"after": "x" * 129}, {"after": "a\x00b"},
                      {"tag": ""}, {"tag": ":v"}, {"tag": "bad key"}, {"tag": "k" * 65},
                      {"tag": "k:" + "v" * 257}, {"tag": "a/b:c"}):
            with self.subTest(query=str(query)[:50]):
                self.assertError(self.listing(**query), 400, "InvalidQuery")

    def test_tag_filters(self):
        run = uid("tf")
        devs = {
            "a": {"color": "red", "run": run},
            "b": {"color": "blue", "run": run},
            "c": {"color": "red", "size": "L", "run": run},
            "d": {"run": run},
            "e": {"color": "red:dark", "run": run},
            "f": {"color": "", "run": run},
        }
        for suffix, tags in devs.items():
            self.gw.create_device(device_id="%s-%s" % (run, suffix), tags=tags)

        def listed(tag):
            # a tag unique to this run confines the listing: run:<run> first, then the filter
            out, _ = self.list_all(limit=1000, tag=tag)
            return sorted(e["deviceId"][len(run) + 1:] for e in out if e["deviceId"].startswith(run))

        self.assertEqual(listed("run:" + run), ["a", "b", "c", "d", "e", "f"])
        self.assertEqual(listed("color"), ["a", "b", "c", "e", "f"])
        self.assertEqual(listed("color:red"), ["a", "c"])
        self.assertEqual(listed("color:red:dark"), ["e"])
        self.assertEqual(listed("color:"), ["f"])
        self.assertEqual(listed("size:L"), ["c"])
        self.assertEqual(listed("size:l"), [])
        self.assertEqual(listed("Color"), [])
        p = self.page(tag="nobody-has-this-" + run[-8:])
        self.assertEqual((p["devices"], p["next"]), ([], None))
        # a tag changed by an update is filtered by its new value
        self.put("%s-b" % run, {"tags": {"color": "red", "run": run}}, expect=200)
        self.assertEqual(listed("color:red"), ["a", "b", "c"])

    def test_zz_scan_cap_returns_next(self):
        """With a filter few entries match, each shard looks at no more than SCAN_CAP ids per
        request: the page comes back short (even empty) with `next`, and following `next` finds
        every match once. (Named to run last: it adds 25,000 devices.)"""
        run = uid("cap")
        key = new_key()
        n = 25000   # more than SCAN_CAP ids in at least one shard, well beyond it
        ids = ["%s-%05d" % (run, i) for i in range(n)]
        # marks close together: the shards stop at slightly different ids, and a page must not
        # hold a match past where the other shard stopped (it would come again on the next page)
        marked = set(ids[::50]) | {ids[-1]}
        lines = [{"deviceId": d, "auth": {"type": "sas", "primaryKey": key, "secondaryKey": key}} for d in ids]
        for line in lines:
            if line["deviceId"] in marked:
                line["tags"] = {"cap": run}
        for i in range(0, n, 5000):
            res = self.import_lines(lines[i:i + 5000])
            self.assertEqual(res["failed"], 0, res)
        per_shard = wait_until(lambda: (lambda c: c if sum(c) >= n else None)(self.ids_per_shard()), 20,
                               "the shards to count the devices")
        self.assertGreater(max(per_shard), SCAN_CAP + 1000, per_shard)
        first = self.page(tag="cap:" + run, limit=1000)
        self.assertIsNotNone(first["next"], "shards with %r devices answered without stopping at the cap" % per_shard)
        self.assertLess(len(first["devices"]), len(marked), first)
        listed, sizes = self.list_all(limit=1000, tag="cap:" + run)
        self.assertEqual([e["deviceId"] for e in listed], sorted(marked, key=lambda s: s.encode()))
        self.assertGreaterEqual(len(sizes), 2, sizes)
        # unfiltered pages are not cut short by the cap (at most 1000 entries a shard are read)
        p = self.page(limit=1000, after=run)
        self.assertEqual([e["deviceId"] for e in p["devices"]], ids[:1000])
        self.assertEqual(p["next"], ids[999])

    # -- key regeneration

    def test_regenerate_primary_keeps_sessions_on_the_secondary(self):
        a, b = self.gw.create_device(), self.gw.create_device()
        on_secondary = self.mqtt(a["id"], a["secondary"]).connect_ok()
        on_secondary.subscribe_commands()
        on_primary = self.mqtt(b["id"], b["primary"]).connect_ok()
        on_primary.subscribe_commands()
        for dev in (a, b):
            gen = self.gw.device(dev["id"]).json["generation"]
            r = self.regenerate(dev["id"], {"key": "primary"})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(set(r.json["auth"]), {"type", "primaryKey"}, "only the new key is shown")
            self.assertNotEqual(r.json["auth"]["primaryKey"], dev["primary"])
            self.assertEqual(r.json["generation"], gen + 1)
            self.assertEqual(r.json["deviceId"], dev["id"])
            after = self.gw.device(dev["id"]).json
            self.assertEqual((after["generation"], after["auth"]), (gen + 1, {"type": "sas"}))
            dev["new_primary"] = r.json["auth"]["primaryKey"]
        # the session signed with the replaced key is closed; the one on the kept key stays and works
        self.assertTrue(on_primary.wait_closed(15), "the session signed with the old primary key is still open")
        m = self.gw.send_command(a["id"], "still here").json
        self.assertEqual(on_secondary.wait_commands(1)[0]["props"]["$.mid"], m["messageId"])
        self.assertTrue(on_secondary.is_connected())
        on_secondary.close()
        # the old primary no longer authenticates; the new one and the secondary do
        for dev in (a, b):
            self.assertEqual(self.connack(dev["id"], dev["primary"]), REFUSED_AUTH)
            self.assertEqual(self.connack(dev["id"], dev["new_primary"]), 0)
            self.assertEqual(self.connack(dev["id"], dev["secondary"]), 0)

    def test_regenerate_secondary(self):
        dev = self.gw.create_device()
        on_primary = self.mqtt(dev["id"], dev["primary"]).connect_ok()
        on_primary.subscribe_commands()
        r = self.regenerate(dev["id"], {"key": "secondary"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(set(r.json["auth"]), {"type", "secondaryKey"})
        m = self.gw.send_command(dev["id"], "kept").json
        self.assertEqual(on_primary.wait_commands(1)[0]["props"]["$.mid"], m["messageId"])
        on_primary.close()
        self.assertEqual(self.connack(dev["id"], dev["secondary"]), REFUSED_AUTH)
        self.assertEqual(self.connack(dev["id"], r.json["auth"]["secondaryKey"]), 0)
        self.assertEqual(self.connack(dev["id"], dev["primary"]), 0)

    def test_regenerate_both(self):
        dev = self.gw.create_device(tags={"keep": "1"})
        for body in ({"key": "both"}, {}, None):
            c = self.mqtt(dev["id"], dev["primary"]).connect_ok()
            gen = self.gw.device(dev["id"]).json["generation"]
            r = self.regenerate(dev["id"], body)
            self.assertEqual(r.status, 200, r)
            keys = r.json["auth"]
            self.assertEqual(set(keys), {"type", "primaryKey", "secondaryKey"})
            self.assertNotEqual(keys["primaryKey"], keys["secondaryKey"])
            self.assertNotIn(dev["primary"], (keys["primaryKey"], keys["secondaryKey"]))
            self.assertEqual(r.json["generation"], gen + 1)
            self.assertEqual(r.json["tags"], {"keep": "1"})
            self.assertTrue(c.wait_closed(15), "the session is still open after both keys were replaced (%r)" % body)
            self.assertEqual(self.connack(dev["id"], dev["primary"]), REFUSED_AUTH)
            self.assertEqual(self.connack(dev["id"], dev["secondary"]), REFUSED_AUTH)
            dev["primary"], dev["secondary"] = keys["primaryKey"], keys["secondaryKey"]
            self.assertEqual(self.connack(dev["id"], dev["primary"]), 0)
            self.assertEqual(self.connack(dev["id"], dev["secondary"]), 0)
        # a PUT that sends the entry back keeps the new keys
        self.put(dev["id"], self.gw.device(dev["id"]).json, expect=200)
        self.assertEqual(self.connack(dev["id"], dev["primary"]), 0)

    def test_regenerate_errors(self):
        self.assertError(self.regenerate(uid("none"), {"key": "both"}), 404, "DeviceNotFound")
        self.assertError(self.regenerate("bad id", {}), 400, "InvalidDeviceId")
        dev = self.gw.create_device()
        gen = self.gw.device(dev["id"]).json["generation"]
        for body in ({"key": "tertiary"}, {"key": "Primary"}, {"key": 1}, {"key": None}, {"key": ["primary"]},
                     {"key": "primary", "also": "secondary"}, {"keys": "both"}):
            with self.subTest(body=body):
                err = self.assertError(self.regenerate(dev["id"], body), 400, "InvalidKeyName")
                self.assertIn("primary", err["message"])
        for body in ("nope", "[]", '"primary"', '{"key":"primary","key":"both"}'):
            with self.subTest(body=body):
                self.assertError(self.regenerate(dev["id"], body), 400, "InvalidJson")
        # nothing changed by the refusals
        self.assertEqual(self.gw.device(dev["id"]).json["generation"], gen)
        self.assertEqual(self.connack(dev["id"], dev["primary"]), 0)
        # devices with other credential kinds
        for auth in ({"type": "psk"}, {"type": "x509", "thumbprints": ["ab" * 32]}, {"type": "x509-ca"}):
            did = uid("notsas")
            self.put(did, {"auth": auth}, expect=201)
            err = self.assertError(self.regenerate(did, {"key": "primary"}), 400, "NotSasDevice")
            self.assertIn(auth["type"], err["message"])
            self.assertEqual(self.gw.device(did).json["generation"], 1)

    # -- roles

    def test_roles(self):
        dev = self.gw.create_device()
        self.assertError(self.listing(token=None), 401, "Unauthorized")
        self.assertError(self.listing(token="sgt-" + "0" * 40), 401, "Unauthorized")
        for token in ("writer", "svc"):
            self.assertError(self.listing(token=token), 403, "Forbidden")
        self.assertEqual(self.listing(token="reader", limit=1).status, 200)
        self.assertError(self.regenerate(dev["id"], {}, token=None), 401, "Unauthorized")
        for token in ("reader", "svc"):
            self.assertError(self.regenerate(dev["id"], {}, token=token), 403, "Forbidden")
        self.assertEqual(self.gw.device(dev["id"]).json["generation"], 1, "a refused call changed the keys")
        r = self.regenerate(dev["id"], {"key": "secondary"}, token="writer")
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    sgtest.main()
