#!/usr/bin/python3
"""Limits of the admin endpoint that a client cannot get around (issue 8, part 5): refusals at
the request headers, before any of the body is read (401/403/404/405/413); connections capped per
client address and in all; a wall-clock deadline for request headers (slowloris) and an idle
timeout that long-polls do not trip; libmicrohttpd's thread pool (admin.threads) under parallel
long-polls, imports and requests; HTTPS with admin.tls_cert/admin.tls_key. All-in-one topology.

Settings come as SACGATE_* environment variables, which a build without the keys ignores: on
such a build the tests fail on what they check, not at start-up (except the HTTPS ones)."""

import http.client
import json
import os
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import BIN, LOOPBACK, GatewayTest, uid, wait_until

MAX_BODY = 256 * 1024          # admin.max_body's default
ANSWER_TIMEOUT = 15            # seconds an answer the server owes us may take (functional, generous)


# --------------------------------------------------------------------------------------------
# raw sockets: requests whose body is announced but never sent in full


def raw_conn(port, source=LOOPBACK, timeout=ANSWER_TIMEOUT):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect((LOOPBACK, port))
    return s


def read_answer(sock, timeout=ANSWER_TIMEOUT):
    """(status, {lower-case header: value}, body) of one HTTP answer on a raw socket. Raises
    AssertionError when none comes within timeout (the server still waits for our body)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no answer within %d s: the server waits for the body (got %r)" % (timeout, buf))
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            raise AssertionError("the server closed the connection without an answer (got %r)" % buf)
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    want = int(headers.get("content-length", "0"))
    while len(body) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("the answer's body did not arrive in full")
        sock.settimeout(left)
        data = sock.recv(65536)
        if not data:
            break
        body += data
    return status, headers, body


def closed_by_server(sock, timeout=ANSWER_TIMEOUT):
    """True when the server ends the connection (EOF or reset) within timeout; data it sends
    meanwhile is dropped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
        if not r:
            continue
        try:
            if not sock.recv(65536):
                return True
        except OSError:
            return True
    return False


def request_head(method, path, length=None, token=None, extra=()):
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: localhost", "Content-Type: application/json"]
    if length is not None:
        lines.append("Content-Length: %d" % length)
    if token:
        lines.append("Authorization: Bearer " + token)
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def get_from(port, path, source, timeout=ANSWER_TIMEOUT):
    """GET path from a given loopback source address; the HTTP status, or None when the server
    closed the connection without answering."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r.status
    except (http.client.HTTPException, ConnectionError):
        return None
    finally:
        conn.close()


def partial_request(port, source):
    """A connection that has sent a request line and one header, never the end of its headers."""
    s = raw_conn(port, source)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
    return s


# --------------------------------------------------------------------------------------------


class RefusedBeforeTheBodyTest(GatewayTest):
    """Defaults (admin.max_body 256 KiB, admin.threads 2)."""

    TOPOLOGY = "all"

    def _refused_early(self, method, path, length, token, status, error=None, extra=()):
        """Announce a body of `length` bytes, send 1 KiB of it, and expect the answer now."""
        s = raw_conn(self.gw.admin_port)
        try:
            s.sendall(request_head(method, path, length, token, extra) + b'{"payload":"' + b"x" * 1024)
            got, headers, body = read_answer(s)
            self.assertEqual(got, status, "%s %s announcing %d bytes: %r" % (method, path, length, body))
            answer = json.loads(body)
            if error:
                self.assertEqual(answer["error"], error, answer)
            self.assertEqual(headers.get("connection", "").lower(), "close", headers)
            # the rest of the body is never read: the server closes the connection
            self.assertTrue(closed_by_server(s), "the connection stayed open after the early answer")
        finally:
            s.close()

    def test_no_or_bad_token_401_and_missing_role_403_before_the_body(self):
        dev = self.gw.create_device()
        reader = self.gw.tokens["reader"]
        for path, method in (("/v1/devices/%s/messages" % dev["id"], "POST"), ("/v1/devices/" + uid(), "PUT"),
                             ("/v1/telemetry/groups/g1/commit", "POST"), ("/v1/devices:import", "POST")):
            for length in (200 * 1024, 10 * 1024 * 1024):
                self._refused_early(method, path, length, None, 401, "Unauthorized")
                self._refused_early(method, path, length, "sgt-not-a-token", 401, "Unauthorized")
                self._refused_early(method, path, length, reader, 403, "Forbidden")
        self.assertEqual(self.gw.pending(dev["id"]), [])

    def test_chunked_body_without_token_401_before_the_body(self):
        s = raw_conn(self.gw.admin_port)
        try:
            s.sendall(request_head("PUT", "/v1/devices/" + uid(), extra=("Transfer-Encoding: chunked",))
                      + b"400\r\n" + b"x" * 512)
            status, headers, _ = read_answer(s)
            self.assertEqual(status, 401)
            self.assertTrue(closed_by_server(s))
        finally:
            s.close()

    def test_unknown_path_and_wrong_method_before_the_body(self):
        self._refused_early("POST", "/v1/nowhere", 10 * 1024 * 1024, None, 404, "NotFound")
        self._refused_early("POST", "/v1/cluster", 10 * 1024 * 1024, self.gw.admin_token, 405, "MethodNotAllowed")

    def test_declared_length_over_the_limit_413_before_the_body(self):
        did = uid()
        self._refused_early("PUT", "/v1/devices/" + did, MAX_BODY + 1, self.gw.admin_token, 413, "BodyTooLarge")
        self._refused_early("POST", "/v1/devices/%s/messages" % did, 50 * 1024 * 1024, self.gw.admin_token, 413,
                            "BodyTooLarge")
        self.assertError(self.gw.device(did), 404)
        # calls that take no body refuse one, also unauthenticated ones
        self._refused_early("GET", "/healthz", 5 * 1024 * 1024, None, 413, "BodyTooLarge")
        self._refused_early("GET", "/v1/cluster", 1000, self.gw.admin_token, 413, "BodyTooLarge")
        s = raw_conn(self.gw.admin_port)
        try:
            s.sendall(request_head("GET", "/readyz", extra=("Transfer-Encoding: chunked",)) + b"10\r\n")
            self.assertEqual(read_answer(s)[0], 413)
        finally:
            s.close()
        # at the limit it is read (and this one is a valid request)
        body = json.dumps({"tags": {"pad%d" % i: "p" * 200 for i in range(5)}})   # tags: 256 chars a value
        r = self.gw.http("PUT", "/v1/devices/" + did, body)
        self.assertEqual(r.status, 201, r)

    def test_refusal_without_a_body_keeps_the_connection(self):
        conn = http.client.HTTPConnection(LOOPBACK, self.gw.admin_port, timeout=30)
        try:
            for path, token, status in (("/v1/cluster", None, 401), ("/v1/cluster", self.gw.tokens["svc"], 403),
                                        ("/v1/nowhere", None, 404), ("/healthz", None, 200)):
                conn.request("GET", path, headers={"Authorization": "Bearer " + token} if token else {})
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, status, path)
                self.assertNotEqual((r.getheader("Connection") or "").lower(), "close", path)
        finally:
            conn.close()

    def test_thread_pool_serves_parallel_long_polls_imports_and_requests(self):
        tasks = "/proc/%d/task" % self.gw.proc.pid
        workers = [t for t in os.listdir(tasks) if open(os.path.join(tasks, t, "comm")).read().strip() == "MHD-worker"]
        self.assertEqual(len(workers), 2, "admin.threads=2 (the default) should run two libmicrohttpd workers")
        recs = self.gw.read_partition(0)
        after = recs[-1]["offset"] + 1000000 if recs else 1000000   # beyond the end: nothing arrives
        errors, lock = [], threading.Lock()

        def run(fn):
            def wrapped():
                try:
                    fn()
                except BaseException as e:   # noqa: B902 - reported by the test thread
                    with lock:
                        errors.append(repr(e))
            return threading.Thread(target=wrapped, daemon=True)

        def long_poll():
            page = self.gw.telemetry(0, after=after, wait=4, timeout=60)
            assert page["records"] == [], page

        def registry():
            for _ in range(15):
                did = uid("pool")
                r = self.gw.http("PUT", "/v1/devices/" + did, {"tags": {"t": "1"}}, timeout=60)
                assert r.status == 201, r
                r = self.gw.device(did)
                assert r.status == 200 and r.json["tags"] == {"t": "1"}, r
                r = self.gw.http("POST", "/v1/devices/%s/messages" % did, {"payload": "p"}, timeout=60)
                assert r.status == 201, r
            assert self.gw.get("/v1/cluster", timeout=60).status == 200
            assert self.gw.get("/metrics", timeout=60).status == 200

        def bulk():
            prefix = uid("bulk")
            body = "".join(json.dumps({"deviceId": "%s-%04d" % (prefix, i)}) + "\n" for i in range(1500))
            r = self.gw.http("POST", "/v1/devices:import", body, headers={"Content-Type": "application/x-ndjson"},
                             timeout=120)
            assert r.status == 200 and r.json["created"] == 1500, r

        threads = [run(long_poll) for _ in range(6)] + [run(registry) for _ in range(3)] + [run(bulk) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertFalse([t for t in threads if t.is_alive()], "requests still running after 120 s")
        self.assertEqual(errors, [])


class ConnectionLimitsTest(GatewayTest):
    TOPOLOGY = "all"
    PER_IP = 16
    TOTAL = 32
    ENV = {"SACGATE_ADMIN_MAX_CONNECTIONS_PER_IP": str(PER_IP), "SACGATE_ADMIN_MAX_CONNECTIONS": str(TOTAL)}

    def _close_all(self, socks):
        for s in socks:
            s.close()

    def test_slowloris_from_one_address_is_capped_and_others_are_served(self):
        port = self.gw.admin_port
        slow = [partial_request(port, "127.0.0.1") for _ in range(self.PER_IP)]
        stop = threading.Event()

        def trickle():   # headers that never end, one line at a time
            while not stop.wait(0.5):
                for s in slow:
                    try:
                        s.sendall(b"X-Slow: 1\r\n")
                    except OSError:
                        pass
        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        try:
            time.sleep(0.5)   # accepted by now
            for _ in range(4):
                self.assertIsNone(get_from(port, "/healthz", "127.0.0.1"),
                                  "a connection beyond admin.max_connections_per_ip was served")
            self.assertEqual(get_from(port, "/healthz", "127.0.0.2"), 200, "another address was refused")
            self.assertEqual(get_from(port, "/healthz", "127.0.0.3"), 200, "another address was refused")
            for s in slow:   # still open: the server did not drop the slow ones to make room
                r, _, _ = select.select([s], [], [], 0)
                self.assertFalse(r and s.recv(1) == b"", "a slow connection was closed")
        finally:
            stop.set()
            t.join(5)
            self._close_all(slow)
        wait_until(lambda: get_from(self.gw.admin_port, "/healthz", "127.0.0.1") == 200, 20,
                   "127.0.0.1 to be served again once its connections closed")

    def test_connections_in_all_are_capped(self):
        """Beyond admin.max_connections a new connection is not taken: it waits in the listen
        backlog until one of the open ones closes."""
        port = self.gw.admin_port
        socks = [partial_request(port, "127.0.1.%d" % (1 + i % 4))   # under the per-address cap each
                 for i in range(self.TOTAL)]
        probe = None
        try:
            time.sleep(0.5)   # accepted by now
            probe = raw_conn(port, "127.0.0.9")
            probe.sendall(request_head("GET", "/healthz"))
            r, _, _ = select.select([probe], [], [], 3)
            self.assertFalse(r, "a connection beyond admin.max_connections was served at once")
        finally:
            self._close_all(socks)
        try:
            self.assertEqual(read_answer(probe)[0], 200, "the waiting connection was not served once slots were free")
        finally:
            probe.close()


class DeadlinesTest(GatewayTest):
    """Request headers are due 2 s after accept or after the previous answer; 3 s of idleness end
    a connection; suspended long-polls count as neither."""

    TOPOLOGY = "all"
    ENV = {"SACGATE_ADMIN_HEADER_TIMEOUT": "2", "SACGATE_ADMIN_IDLE_TIMEOUT": "3"}

    def test_silent_connection_is_closed(self):
        s = raw_conn(self.gw.admin_port)
        try:
            self.assertTrue(closed_by_server(s), "a connection that sent nothing stayed open")
        finally:
            s.close()

    def test_trickled_headers_are_closed_though_never_idle(self):
        s = raw_conn(self.gw.admin_port)
        mark = self.gw.log_mark()
        data = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 400
        try:
            deadline = time.monotonic() + ANSWER_TIMEOUT
            closed = False
            for i in range(len(data)):   # a byte every 0.2 s: never idle for the 3 s idle timeout
                if time.monotonic() > deadline:
                    break
                r, _, _ = select.select([s], [], [], 0.2)
                if r:
                    try:
                        got = s.recv(65536)
                    except OSError:
                        got = b""
                    self.assertEqual(got, b"", "the server answered headers that never ended")
                    closed = True
                    break
                try:
                    s.sendall(data[i:i + 1])
                except OSError:
                    closed = True
                    break
            self.assertTrue(closed, "a client trickling its headers kept the connection for %d s" % ANSWER_TIMEOUT)
        finally:
            s.close()
        self.gw.wait_log(r"event=http\.header_timeout", mark)

    def test_kept_alive_connection_must_send_its_next_headers_in_time(self):
        s = raw_conn(self.gw.admin_port)
        try:
            s.sendall(request_head("GET", "/healthz"))
            self.assertEqual(read_answer(s)[0], 200)
            self.assertTrue(closed_by_server(s), "an idle kept-alive connection stayed open")
        finally:
            s.close()

    def test_long_polls_outlive_both_timeouts(self):
        conn = http.client.HTTPConnection(LOOPBACK, self.gw.admin_port, timeout=60)
        hdrs = {"Authorization": "Bearer " + self.gw.admin_token}
        recs = self.gw.read_partition(0)
        after = recs[-1]["offset"] + 1000000 if recs else 1000000
        try:
            for _ in range(2):   # twice on one connection: the second request's headers came in time
                conn.request("GET", "/v1/telemetry?partition=0&after=%d&wait=6" % after, headers=hdrs)
                r = conn.getresponse()
                body = r.read()
                self.assertEqual(r.status, 200, body)
                self.assertEqual(json.loads(body)["records"], [])
        finally:
            conn.close()


# --------------------------------------------------------------------------------------------
# HTTPS


def https_request(gw, method, path, body=None, token=None, headers=None, timeout=30):
    return sgtest.http_request(gw.admin_port, method, path, body, token, headers, timeout, cafile=gw.ca)


class TlsAllInOne(sgtest.AllInOne):
    """`sacgate all` whose admin serves HTTPS with the development certificate it writes."""

    def start(self, timeout=45):
        self.sets = [s for s in self.sets if not s.startswith("admin.tls_")] + [
            "admin.tls_cert=" + os.path.join(self.dir, "server.crt"),
            "admin.tls_key=" + os.path.join(self.dir, "server.key")]
        args = [BIN, "all", "--data-dir", self.dir, "--mqtt-port", "0", "--ws-port", "0", "--admin-port", "0"]
        for s in self.sets:
            args += ["--set", s]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=self.env,
                                         preexec_fn=sgtest._pdeathsig)
        self.stopped = False

        def banner():
            with open(self.stdout_path, errors="replace") as f:
                text = f.read()
            if self.proc.poll() is not None:
                raise AssertionError("sacgate all exited with %s:\n%s%s" % (self.proc.returncode, text, self.log_tail()))
            m = re.search(r"https://127\.0\.0\.1:(\d+)", text)
            return (m, text) if m and os.path.exists(os.path.join(self.dir, "admin.token")) else None
        m, self.banner = wait_until(banner, timeout, "the banner with an https:// admin address")
        self.admin_port = int(m.group(1))
        self.mqtt_ports = [int(re.search(r"localhost:(\d+)", self.banner).group(1))]
        self._read_admin_token()
        self.wait_ready(timeout)

    def http(self, method, path, body=None, token="admin", headers=None, timeout=30):
        if token == "admin":
            token = self.admin_token
        elif token in self.tokens:
            token = self.tokens[token]
        return https_request(self, method, path, body, token, headers, timeout)

    def ready(self):
        try:
            return https_request(self, "GET", "/readyz", timeout=5).status == 200
        except (OSError, http.client.HTTPException):
            return False


class HttpsTest(GatewayTest):
    TOPOLOGY = "all"
    GATEWAY = TlsAllInOne

    def test_https_with_the_dev_ca(self):
        self.assertEqual(self.gw.http("GET", "/healthz", token=None).status, 200)
        self.assertEqual(self.gw.get("/v1/cluster").status, 200)
        dev = self.gw.create_device()
        self.assertEqual(self.gw.device(dev["id"]).status, 200)
        self.gw.send_command(dev["id"], "over https")
        self.assertEqual(len(self.gw.pending(dev["id"])), 1)
        self.assertError(self.gw.get("/v1/cluster", token=None), 401)
        # the banner's curl lines use the CA
        self.assertIn("--cacert %s/ca.crt" % self.gw.dir, self.gw.banner)

    def test_plain_http_is_not_served(self):
        try:
            r = sgtest.http_request(self.gw.admin_port, "GET", "/healthz", timeout=10)
        except (OSError, http.client.HTTPException):
            return
        self.fail("plain HTTP got an answer on the HTTPS port: %r" % (r,))

    def test_refused_before_the_body_over_tls(self):
        ctx = ssl.create_default_context(cafile=self.gw.ca)
        s = ctx.wrap_socket(raw_conn(self.gw.admin_port), server_hostname=LOOPBACK)
        try:
            s.sendall(request_head("POST", "/v1/devices/%s/messages" % uid(), 10 * 1024 * 1024) + b"{" * 1024)
            self.assertEqual(read_answer(s)[0], 401)
        finally:
            s.close()

    def test_incomplete_or_unreadable_tls_settings_stop_the_admin(self):
        base = [BIN, "admin", "--routers", "tcp://127.0.0.1:1", "--admin-port", "0", "--tokens",
                os.path.join(self.gw.dir, "tokens"), "--set", "cluster.insecure=true"]
        cert = os.path.join(self.gw.dir, "server.crt")
        for extra, needle in ((["--set", "admin.tls_cert=" + cert], "admin.tls_key"),
                              (["--set", "admin.tls_cert=" + cert, "--set", "admin.tls_key=/nonexistent/k.pem"],
                               "/nonexistent/k.pem"),
                              (["--set", "admin.tls_cert=" + cert, "--set", "admin.tls_key=" + cert],
                               "admin.tls_key")):
            p = subprocess.run(base + extra, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            self.assertNotEqual(p.returncode, 0, "the admin started with %r" % (extra,))
            self.assertIn(needle, p.stdout + p.stderr, extra)


if __name__ == "__main__":
    sgtest.main()
