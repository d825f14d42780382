#!/usr/bin/python3
"""sacgate-sim against a real gateway: it registers and connects its devices, publishes and takes
commands with its back-end, survives a frontend that refuses connections (and sees the
connection limit counted per frontend process, not per event-loop thread), rides out a storm,
runs slices that merge into the whole, reads credential files, and refuses bad flags with a
clear message. The simulator's own figures are checked for consistency, never for speed."""

import json
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest  # noqa: E402

SIM = os.environ.get("SACGATE_SIM") or os.path.join(os.path.dirname(sgtest.BIN), "sacgate-sim")


class SimulatorBase(GatewayTest):
    TOPOLOGY = "all"

    def sim(self, *args, expect=0, timeout=120):
        """Run the simulator against the gateway; returns (summary, stdout+stderr)."""
        out = tempfile.mktemp(prefix="sgit-sim-", suffix=".json")
        cmd = [SIM, "run", "--port", str(self.gw.mqtt_ports[0]), "--cafile", self.gw.ca,
               "--admin", "http://127.0.0.1:%d" % self.gw.admin_port, "--token", self.gw.admin_token,
               "--json", out, "--server-pids", str(self.gw.proc.pid)] + [str(a) for a in args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        text = r.stdout + r.stderr
        self.assertEqual(r.returncode, expect, "sacgate-sim exited %d:\n%s" % (r.returncode, text[-3000:]))
        summary = None
        if os.path.exists(out):
            with open(out) as f:
                summary = json.load(f)
            os.unlink(out)
        return summary, text


class SimulatorTest(SimulatorBase):

    def test_devices_telemetry_and_commands(self):
        html = tempfile.mktemp(prefix="sgit-sim-", suffix=".html")
        s, text = self.sim("--prefix", sgtest.uid("simt"), "--devices", 200, "--provision", "import", "--rate", 0,
                           "--publish-rate", 5, "--subscribe", "--backend", "--command-rate", 20, "--hold", 3,
                           "--duration", 60, "--html", html)
        self.assertIn("import: 200 devices registered, 0 failed", text)
        ses, c = s["sessions"], s["counters"]
        self.assertEqual(ses["everOnline"], 200, ses)
        self.assertEqual(ses["connects"], 200)
        self.assertEqual(sum(ses["failed"].values()) + sum(ses["dropped"].values()), 0, ses)
        self.assertGreater(c["published"], 0)
        self.assertEqual(c["acked"], c["published"])          # every QoS 1 message acknowledged
        self.assertGreaterEqual(c["telemetryRead"], c["acked"])  # ... and read back from the log
        self.assertEqual(s["latency"]["publishAck"]["count"], c["acked"])
        self.assertEqual(s["latency"]["connect"]["count"], 200)
        self.assertGreater(c["commandsAccepted"], 0)
        self.assertEqual(c["commandsFailed"], 0)
        self.assertGreaterEqual(c["commandsReceived"], c["commandsAccepted"] - 5)   # the last ones may be on their way
        self.assertEqual(s["resources"]["server"]["processes"], 1)
        self.assertGreater(s["resources"]["server"]["pssAtPeakOnlineBytes"], 0)
        self.assertEqual(len(s["series"]["t"]), len(s["series"]["online"]))
        with open(html) as f:
            page = f.read()
        os.unlink(html)
        self.assertIn("sacgate-sim", page)
        self.assertNotIn("</script><script>", page)

    def test_storm(self):
        s, _ = self.sim("--prefix", sgtest.uid("sims"), "--devices", 100, "--provision", "import", "--rate", 0,
                        "--storm-after", 1, "--hold", 1, "--duration", 60)
        st = s["storm"]
        self.assertEqual(st["devices"], 100, st)
        self.assertEqual(st["back"], 100, st)
        self.assertIsNotNone(st["allBackAfterSeconds"])
        self.assertEqual(s["sessions"]["dropped"]["storm"], 100)
        self.assertEqual(s["sessions"]["reconnects"], 100)
        self.assertEqual(s["sessions"]["online"], 100)
        self.assertEqual(s["counters"]["tlsResumed"], 0, "resumed without --tls-resume")

    def test_storm_with_tls_resume(self):
        """--tls-resume: every device of the storm reconnects with its ticket (the gateway's
        frontend.ticket_keys), over TLS 1.2 and 1.3."""
        for version in ("1.3", "1.2"):
            s, _ = self.sim("--prefix", sgtest.uid("simr"), "--devices", 50, "--provision", "import", "--rate", 0,
                            "--storm-after", 1, "--hold", 1, "--duration", 60, "--tls-resume", "on",
                            "--tls-version", version)
            self.assertEqual(s["storm"]["back"], 50, s["storm"])
            self.assertEqual(s["counters"]["tlsResumed"], 50, "TLS %s: %r" % (version, s["counters"]))

    def test_slices_merge_into_the_whole(self):
        prefix = sgtest.uid("simm")
        with tempfile.TemporaryDirectory(prefix="sgit-sim-") as d:
            for i in range(2):
                part, _ = self.sim("--prefix", prefix, "--devices", 101, "--slice", "%d/2" % i, "--provision",
                                   "import", "--rate", 0, "--hold", 1, "--duration", 60)
                with open(os.path.join(d, "slice%d.json" % i), "w") as f:
                    json.dump(part, f)
            slices = [os.path.join(d, "slice%d.json" % i) for i in range(2)]
            r = subprocess.run([SIM, "merge", "--json", os.path.join(d, "all.json"), "--html",
                                os.path.join(d, "all.html")] + slices, capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(os.path.join(d, "all.json")) as f:
                m = json.load(f)
            parts = [json.load(open(p)) for p in slices]
            self.assertEqual([p["sessions"]["target"] for p in parts], [50, 51])   # disjoint, complete
            self.assertEqual(m["sessions"]["target"], 101)
            self.assertEqual(m["sessions"]["everOnline"], 101)
            self.assertEqual(m["latency"]["connect"]["count"], 101)
            self.assertEqual(m["merged"], 2)
            self.assertTrue(os.path.getsize(os.path.join(d, "all.html")) > 1000)

    def test_credentials_file(self):
        prefix = sgtest.uid("simc")
        with tempfile.NamedTemporaryFile("w", prefix="sgit-sim-", suffix=".creds", delete=False) as f:
            keys = subprocess.run([SIM, "keys", "--devices", "20", "--prefix", prefix], capture_output=True,
                                  text=True, check=True).stdout
            f.write("# devices registered by hand\n" + keys)
            path = f.name
        for line in keys.splitlines():
            device, key = line.split()
            self.gw.create_device(device, primary=key, secondary=key)
        s, _ = self.sim("--credentials", path, "--devices", 20, "--rate", 0, "--hold", 1, "--duration", 60)
        os.unlink(path)
        self.assertEqual(s["sessions"]["everOnline"], 20, s["sessions"])

    def test_psk_and_x509_devices(self):
        """--provision import registers the devices with the credential they present: a derived
        PSK each (TLS 1.3 and 1.2), or the thumbprint of --cert."""
        for extra in (["--psk-derive"], ["--psk-derive", "--tls-version", "1.2"]):
            prefix = sgtest.uid("simpsk")
            s, text = self.sim("--prefix", prefix, "--devices", 40, "--provision", "import", "--rate", 0, "--hold", 1,
                               "--duration", 60, *extra)
            self.assertIn("import: 40 devices registered, 0 failed", text)
            self.assertEqual(s["sessions"]["everOnline"], 40, (extra, s["sessions"]))
            self.assertEqual(self.gw.device(prefix + "-0").json["auth"], {"type": "psk"})
        with tempfile.TemporaryDirectory(prefix="sgit-sim-x509-") as d:
            cert = sgtest.make_cert(d, "sim-fleet")
            prefix = sgtest.uid("simx5")
            s, text = self.sim("--prefix", prefix, "--devices", 40, "--provision", "import", "--rate", 0, "--hold", 1,
                               "--duration", 60, "--cert", cert.certfile, "--key", cert.keyfile)
            self.assertEqual(s["sessions"]["everOnline"], 40, s["sessions"])
            self.assertEqual(self.gw.device(prefix + "-0").json["auth"], {"type": "x509", "thumbprints": [cert.thumbprint]})

    def test_bad_flags_are_refused_clearly(self):
        for args, words in ((["--nope"], "unknown flag '--nope'"), (["--slice", "2/2"], "--slice"),
                            (["--devices", "0"], "--devices"), (["--command-rate", "5"], "--backend"),
                            (["--disrupt-after", "3"], "--disrupt-command")):
            r = subprocess.run([SIM, "run", "--insecure"] + args, capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 2, (args, r.stdout, r.stderr))
            self.assertIn(words, r.stderr)


class SimulatorAgainstAFullFrontendTest(SimulatorBase):
    """A frontend with room for 100 connections: the rest are refused while the simulator writes
    to them (which must not kill it), and exactly 100 get in whichever event-loop thread the
    kernel hands each connection to."""
    SETS = ("frontend.max_connections=100", "frontend.threads=2")

    def test_refused_devices_are_counted_not_fatal(self):
        s, text = self.sim("--prefix", sgtest.uid("simf"), "--devices", 150, "--provision", "import", "--rate", 0,
                           "--backoff-min", 200, "--backoff-max", 400, "--duration", 6)
        ses = s["sessions"]
        self.assertEqual(ses["peakOnline"], 100, ses)
        self.assertEqual(ses["everOnline"], 100, ses)
        self.assertGreater(sum(ses["failed"].values()), 50, ses)   # the others kept trying
        self.assertNotIn("worker process", text)                    # no worker died on the way


if __name__ == "__main__":
    sgtest.main()
