#!/usr/bin/python3
"""Stateless TLS session resumption (issue 8 part 6): frontends issue session tickets under keys
from frontend.ticket_keys, a file every frontend of a cluster shares, so a device resumes its TLS
session on the frontend it left and on any other (python ssl with session reuse, openssl s_client
-sess_out/-sess_in). A ticket under a key since removed from the file, or a tampered one, gets a
full handshake and still connects; a resumed session authenticates like a full one (SAS token in
CONNECT). TLS 1.2 and 1.3; `sacgate all` and the cluster's two frontend processes."""

import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import BIN, HOST, LOOPBACK, GatewayTest, RawConn, sas_token, wait_until

V12, V13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3


def new_key_line():
    return os.urandom(80).hex()


class ResumeMixin:
    @property
    def keys_path(self):
        return os.path.join(self.gw.dir, "ticket.keys")

    def frontend_pids(self):
        return [self.gw.proc.pid] if self.gw.topology == "all" else [self.gw.pid(n) for n in ("fe-0", "fe-1")]

    def write_keys(self, lines, event="tickets.reloaded"):
        """Replace the key file (as an operator or a Secret update would) and SIGHUP every
        frontend; wait until each logged `event`."""
        tmp = self.keys_path + ".new"
        with open(tmp, "w") as f:
            f.write("# written by test_tls_resume\n" + "".join(l + "\n" for l in lines))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.keys_path)
        marks = {p: os.path.getsize(p) for p in self.gw.log_files()}
        for pid in self.frontend_pids():
            os.kill(pid, signal.SIGHUP)

        def logged():
            n = 0
            for p in self.gw.log_files():
                with open(p, "rb") as f:
                    f.seek(marks.get(p, 0))
                    n += len(re.findall(r"event=%s .*trigger=SIGHUP" % re.escape(event),
                                        f.read().decode("utf-8", "replace")))
            return n >= len(self.frontend_pids())
        wait_until(logged, 20, "every frontend logged %s" % event)

    def key_lines(self):
        with open(self.keys_path) as f:
            return [l.strip() for l in f if l.strip() and not l.startswith("#")]

    def mqtt_connect(self, dev, port=None, session=None, version=None, password=None):
        """A TLS connection (resuming session when given) that sends CONNECT: (RawConn, CONNACK
        code). The caller closes it."""
        c = RawConn(self.gw, port=port, session=session, tls_version=version)
        rc = c.connect(dev["id"], password if password is not None else sas_token(dev["id"], dev["primary"]))
        return c, rc

    def ticket(self, dev, port=None, version=None):
        """A fresh session (with its ticket) from a full connect to port."""
        c, rc = self.mqtt_connect(dev, port=port, version=version)
        self.assertEqual(rc, 0)
        self.assertFalse(c.resumed())
        s = c.session()
        c.close()
        self.assertTrue(s is not None and s.has_ticket, "the frontend sent no session ticket")
        return s

    def assertResumes(self, dev, session, port=None, version=None, expect=True, what=""):
        c, rc = self.mqtt_connect(dev, port=port, session=session, version=version)
        try:
            self.assertEqual(rc, 0, "%s: CONNACK %r" % (what, rc))
            self.assertEqual(c.resumed(), expect, "%s: session_reused is %s" % (what, c.resumed()))
            return c.session()
        finally:
            c.close()


class ResumeTest(ResumeMixin, GatewayTest):
    def test_resume_on_same_and_other_frontend_tls12_and_tls13(self):
        gw = self.gw
        dev = gw.create_device()
        for version in (V13, V12):
            with self.subTest(version=version):
                s = self.ticket(dev, port=gw.mqtt_ports[0], version=version)
                s2 = self.assertResumes(dev, s, port=gw.mqtt_ports[0], version=version, what="same frontend")
                # another frontend of the cluster (all: the one there is) takes a ticket it did not issue
                self.assertResumes(dev, s2, port=gw.mqtt_ports[-1], version=version, what="other frontend")
        # the device is really connected through a resumed session: telemetry is acknowledged
        c, rc = self.mqtt_connect(dev, port=gw.mqtt_ports[-1], session=s2, version=V12)
        self.assertEqual(rc, 0)
        self.assertTrue(c.resumed())
        c.send(sgtest.pkt_publish("devices/%s/messages/events/" % dev["id"], b"resumed", qos=1, mid=7))
        p = c.expect(sgtest.PUBACK)
        self.assertEqual(p[2], b"\x00\x07")
        c.close()
        gw.wait_records(dev["id"], 1)

    def test_resumed_session_still_needs_a_valid_token(self):
        gw = self.gw
        dev = gw.create_device()
        for version in (V13, V12):
            s = self.ticket(dev, version=version)
            bad = sas_token(dev["id"], sgtest.new_key())
            c, rc = self.mqtt_connect(dev, session=s, version=version, password=bad)
            self.assertTrue(c.resumed(), "the wrong-token connect should itself have resumed")
            self.assertEqual(rc, 5, "a resumed session with a wrong SAS token: CONNACK %r" % rc)
            c.close()
            expired = sas_token(dev["id"], dev["primary"], expiry=int(time.time()) - 60)
            c, rc = self.mqtt_connect(dev, session=s, version=version, password=expired)
            self.assertTrue(c.resumed())
            self.assertEqual(rc, 5, "a resumed session with an expired token: CONNACK %r" % rc)
            c.close()
            other = gw.create_device()   # the ticket is not bound to a device: each CONNECT is judged alone
            c, rc = self.mqtt_connect(dev, session=s, version=version,
                                      password=sas_token(other["id"], other["primary"]))
            self.assertEqual(rc, 5, "another device's token on a resumed session: CONNACK %r" % rc)
            c.close()
            self.assertResumes(dev, s, version=version, what="valid token after the refusals")

    def test_rotation_add_then_remove_the_old_key(self):
        gw = self.gw
        dev = gw.create_device()
        old_lines = self.key_lines()
        old13, old12 = self.ticket(dev, version=V13), self.ticket(dev, version=V12)
        # step 1: a new key appended: it encrypts; tickets under the old one still resume
        new = new_key_line()
        self.write_keys(old_lines + [new])
        self.assertResumes(dev, old13, version=V13, what="old-key ticket after a key was added")
        self.assertResumes(dev, old12, version=V12, what="old-key TLS 1.2 ticket after a key was added")
        fresh13 = self.ticket(dev, version=V13)
        fresh12 = self.ticket(dev, version=V12)
        # step 2: the old key removed: its tickets get a full handshake (and still connect); the new key's resume
        self.write_keys([new])
        self.assertResumes(dev, old13, version=V13, expect=False, what="ticket under a removed key (1.3)")
        self.assertResumes(dev, old12, version=V12, expect=False, what="ticket under a removed key (1.2)")
        for p in gw.mqtt_ports:
            self.assertResumes(dev, fresh13, port=p, version=V13, what="new-key ticket on port %d" % p)
            self.assertResumes(dev, fresh12, port=p, version=V12, what="new-key 1.2 ticket on port %d" % p)

    def test_bad_key_file_keeps_the_keys_in_service(self):
        gw = self.gw
        dev = gw.create_device()
        good = self.key_lines()
        s = self.ticket(dev)
        self.write_keys(good + ["abc"], event="tickets.reload_failed")
        self.assertTrue(gw.grep_log(r"event=tickets\.reload_failed .*line 3: 3 hex digits; a key is 160"),
                        "the log does not say what is wrong with the file")
        self.assertResumes(dev, s, what="after a bad key file")
        self.write_keys(good + [good[0]], event="tickets.reload_failed")
        self.assertTrue(gw.grep_log(r"key name \(first 32 hex digits\) is the one of line 2"))
        self.write_keys(good)
        self.assertResumes(dev, s, what="after the file was fixed")

    def test_tampered_ticket_gets_a_full_handshake(self):
        """openssl s_client -sess_out, then the ticket inside the saved session changed: in its
        key name (unknown key) and in its HMAC; the untouched session resumes (the control)."""
        gw = self.gw
        d = tempfile.mkdtemp(prefix="sgit-tickets-")
        for flag in ("-tls1_3", "-tls1_2"):
            sess = os.path.join(d, "sess%s.pem" % flag)
            self.assertEqual(s_client(gw, flag, sess_out=sess), "New")
            self.assertEqual(s_client(gw, flag, sess_in=sess), "Reused", "the untouched %s session" % flag)
            for where in ("name", "mac"):
                bad = os.path.join(d, "bad-%s%s.pem" % (where, flag))
                tamper_ticket(sess, bad, where)
                self.assertEqual(s_client(gw, flag, sess_in=bad), "New", "ticket tampered in its %s (%s)" % (where, flag))
        # the frontends are unharmed: a device still connects
        dev = gw.create_device()
        c, rc = self.mqtt_connect(dev)
        self.assertEqual(rc, 0)
        c.close()


def s_client(gw, flag, sess_out=None, sess_in=None):
    """One openssl s_client handshake to the first frontend: "New" or "Reused". stdin stays open
    for a moment so that the TLS 1.3 ticket (sent after the handshake) is read and saved."""
    args = ["openssl", "s_client", "-connect", "%s:%d" % (LOOPBACK, gw.mqtt_ports[0]), "-servername", HOST,
            "-CAfile", gw.ca, "-verify_return_error", flag]
    if sess_out:
        args += ["-sess_out", sess_out]
    if sess_in:
        args += ["-sess_in", sess_in]
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.7)
    out, _ = p.communicate(b"", timeout=20)
    text = out.decode("utf-8", "replace")
    m = re.search(r"^(New|Reused), TLSv1\.[23]", text, re.M)
    assert m, "s_client did not finish a handshake:\n" + text[-2000:]
    if sess_out:
        assert os.path.exists(sess_out), "s_client saved no session:\n" + text[-2000:]
    return m.group(1)


def tamper_ticket(src, dst, where):
    """Copy the PEM session src to dst with one byte of its ticket flipped: in the key name (the
    first 16 bytes) or in the HMAC (the last 32). The ticket is the [10] OCTET STRING of the
    SSL_SESSION sequence (OpenSSL's ssl/ssl_asn1.c)."""
    import base64
    with open(src) as f:
        pem = f.read()
    body = "".join(l for l in pem.splitlines() if not l.startswith("-----"))
    der = bytearray(base64.b64decode(body))

    def tlv(i):   # (tag, start of content, content length)
        tag, n = der[i], der[i + 1]
        i += 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(der[i:i + k], "big")
            i += k
        return tag, i, n

    tag, i, n = tlv(0)
    assert tag == 0x30
    end = i + n
    while i < end:
        tag, start, n = tlv(i)
        if tag == 0xAA:   # [10] EXPLICIT: an OCTET STRING inside
            t2, s2, n2 = tlv(start)
            assert t2 == 0x04 and n2 > 48, "unexpected ticket encoding"
            der[s2 + (3 if where == "name" else n2 - 5)] ^= 0x5A
            break
        i = start + n
    else:
        raise AssertionError("no ticket in the saved session")
    out = base64.encodebytes(bytes(der)).decode()
    with open(dst, "w") as f:
        f.write("-----BEGIN SSL SESSION PARAMETERS-----\n" + out + "-----END SSL SESSION PARAMETERS-----\n")


class ResumeAcrossRestartTest(ResumeMixin, GatewayTest):
    """`sacgate all` keeps its data dir's ticket.keys: a device resumes after the restart."""
    TOPOLOGY = "all"

    def test_ticket_resumes_after_restart(self):
        gw = self.gw
        dev = gw.create_device()
        s = self.ticket(dev)
        self.assertTrue(gw.stop(), "sacgate all did not stop on SIGTERM")
        gw.start()
        self.assertResumes(dev, s, what="after a restart")


class KeyFileStartTest(GatewayTest):
    """A key file that cannot be used stops a frontend from starting, with a clear reason; no
    file configured means no tickets (every connect a full handshake)."""
    TOPOLOGY = "all"
    SETS = ("frontend.ticket_keys=",)

    def test_no_key_file_no_tickets(self):
        c = RawConn(self.gw)
        dev = self.gw.create_device()
        self.assertEqual(c.connect(dev["id"], sas_token(dev["id"], dev["primary"])), 0)
        s = c.session()
        c.close()
        self.assertFalse(s is not None and s.has_ticket, "tickets were issued without frontend.ticket_keys")

    def test_invalid_key_files_refuse_to_start(self):
        d = tempfile.mkdtemp(prefix="sgit-badkeys-")
        cases = {
            "empty": ("# nothing\n", "no keys"),
            "short": ("abcd\n", "line 1: 4 hex digits; a key is 160"),
            "nothex": ("zz" + "0" * 158 + "\n", "line 1, column 1: not a hex digit"),
            "missing": (None, "cannot open: No such file or directory"),
        }
        for name, (text, reason) in cases.items():
            path = os.path.join(d, name)
            if text is not None:
                with open(path, "w") as f:
                    f.write(text)
            r = subprocess.run([BIN, "all", "--data-dir", os.path.join(d, "data-" + name), "--mqtt-port", "0",
                                "--ws-port", "0", "--admin-port", "0", "--set", "frontend.ticket_keys=" + path],
                               capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            self.assertNotEqual(r.returncode, 0, "%s: started with an unusable key file" % name)
            self.assertIn(reason, r.stderr, "%s: the reason is missing from:\n%s" % (name, r.stderr[-2000:]))
            self.assertIn("event=tickets.invalid", r.stderr)


if __name__ == "__main__":
    sgtest.main()
