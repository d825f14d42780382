"""sgtest: harness for the sacgate integration tests.

Run the test files with Debian's /usr/bin/python3 (it has paho-mqtt 1.6 from python3-paho-mqtt).
Environment:
  SACGATE_BIN          the sacgate binary (default: build-it/sacgate, then build/sacgate)
  SACGATE_TOPOLOGY     all | cluster (default all): which gateway a topology-neutral test uses
  SGTEST_FILE_TIMEOUT  seconds after which a whole test file is aborted (default 280)
  SGTEST_TEST_TIMEOUT  seconds after which a single test is aborted (default 150)
  SGTEST_KEEP          1 = keep the temporary gateway directories (logs) after the run

Every wait in here has a deadline, so no test can hang: a test that overruns its own alarm
fails with TestTimeout, and a file that overruns SGTEST_FILE_TIMEOUT stops its gateways and
exits. When a test fails, the gateway's log lines written during that test are printed.
"""

import atexit
import base64
import ctypes
import faulthandler
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import uuid

try:
    import paho.mqtt.client as mqtt
except ImportError:  # pragma: no cover - explained to whoever runs us with the wrong python
    sys.stderr.write("sgtest: paho-mqtt is missing; run the tests with /usr/bin/python3 "
                     "(Debian's python3-paho-mqtt)\n")
    raise

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLUSTER_SH = os.path.join(REPO, "deploy", "local", "cluster.sh")
sys.path.insert(0, os.path.dirname(CLUSTER_SH))
import free_ports as _free_ports  # noqa: E402  (deploy/local/free_ports.py, which cluster.sh runs too)
API_VERSION = "2021-04-12"
HOST = "localhost"          # TLS server name and the host part of usernames / SAS resources
LOOPBACK = "127.0.0.1"


def _default_bin():
    for cand in ("build-it/sacgate", "build/sacgate"):
        p = os.path.join(REPO, cand)
        if os.access(p, os.X_OK):
            return p
    return os.path.join(REPO, "build-it", "sacgate")


BIN = os.environ.get("SACGATE_BIN") or _default_bin()


def _sanitized(path):
    """Is the gateway binary built with AddressSanitizer (its allocator keeps freed memory in a
    quarantine, so memory figures mean nothing there)?"""
    try:
        with open(path, "rb") as f:
            return b"AddressSanitizer" in f.read()
    except OSError:
        return False


SANITIZED = _sanitized(BIN)
TOPOLOGY = os.environ.get("SACGATE_TOPOLOGY", "all")
FILE_TIMEOUT = float(os.environ.get("SGTEST_FILE_TIMEOUT", "280"))
TEST_TIMEOUT = int(os.environ.get("SGTEST_TEST_TIMEOUT", "150"))
KEEP = os.environ.get("SGTEST_KEEP") == "1"


# --------------------------------------------------------------------------------------------
# small utilities


class TestTimeout(Exception):
    """A single test ran past SGTEST_TEST_TIMEOUT."""


def log(*args):
    sys.stderr.write("[sgtest %s] %s\n" % (time.strftime("%H:%M:%S"), " ".join(str(a) for a in args)))
    sys.stderr.flush()


def uid(prefix="dev"):
    """A device id unique within this run."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def wait_until(pred, timeout, what="condition", interval=0.1):
    """Poll pred() until it returns something truthy; return that, or fail after timeout s."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last_exc = None
        except AssertionError:
            raise
        except Exception as e:  # keep polling through transient errors, report the last one
            last_exc = e
        if time.monotonic() >= deadline:
            extra = " (last error: %r)" % (last_exc,) if last_exc else ""
            raise AssertionError("timed out after %.0f s waiting for %s%s" % (timeout, what, extra))
        time.sleep(interval)


def new_key():
    """A fresh SAS key: base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def sas_token(device_id, key_b64, ttl=3600, expiry=None, host=HOST):
    """SharedAccessSignature sr=..&sig=..&se=.. signed with the base64-decoded key."""
    se = int(expiry if expiry is not None else time.time() + ttl)
    sr = urllib.parse.quote("%s/devices/%s" % (host, device_id), safe="")
    mac = hmac.new(base64.b64decode(key_b64), ("%s\n%d" % (sr, se)).encode(), hashlib.sha256)
    sig = urllib.parse.quote(base64.b64encode(mac.digest()).decode(), safe="")
    return "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, sig, se)


def username_for(device_id, host=HOST):
    return "%s/%s/?api-version=%s" % (host, device_id, API_VERSION)


def parse_bag(bag):
    """Decode a URL-encoded property bag `k=v&k2=v2` into a dict."""
    out = {}
    for part in bag.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        out[urllib.parse.unquote(k)] = urllib.parse.unquote(v)
    return out


def encode_bag(props):
    return "&".join("%s=%s" % (urllib.parse.quote(k, safe=""), urllib.parse.quote(v, safe=""))
                    for k, v in props.items())


RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _pdeathsig():
    """preexec_fn: the child gets SIGKILL if this test process dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# --------------------------------------------------------------------------------------------
# HTTP


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # dict, lower-case names
        self.body = body                # bytes
        self._json = None

    @property
    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.body.decode("utf-8"))
            except Exception:
                raise AssertionError("response body is not JSON (status %d): %r"
                                     % (self.status, self.body[:300]))
        return self._json

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<HTTP %d %s>" % (self.status, self.body[:300])


def http_request(port, method, path, body=None, token=None, headers=None, timeout=30, cafile=None):
    """One HTTP request on a fresh connection (HTTPS verified against cafile when given). body:
    bytes, str or a JSON-able object."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    if cafile:
        conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=timeout,
                                           context=ssl.create_default_context(cafile=cafile))
    else:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        send_err = None
        try:
            conn.request(method, path, body=body, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError) as e:
            send_err = e  # the server may answer (e.g. 413) and close before reading the body
        try:
            r = conn.getresponse()
            data = r.read()
        except (http.client.HTTPException, OSError) as e:
            if send_err:
                raise AssertionError("%s %s: connection failed while sending (%r) and no answer "
                                     "could be read (%r)" % (method, path, send_err, e))
            raise
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# gateways

_GATEWAYS = []          # every gateway this process started, for cleanup and log dumps
_GW_LOCK = threading.Lock()


def _cleanup_all():
    with _GW_LOCK:
        gws = list(_GATEWAYS)
    for gw in gws:
        try:
            gw.stop()
        except Exception as e:
            log("cleanup of", gw, "failed:", e)


atexit.register(_cleanup_all)


def _on_signal(signum, frame):
    log("signal", signum, "- stopping gateways")
    _cleanup_all()
    os._exit(128 + signum)


def _watchdog():
    log("watchdog: the test file ran longer than %.0f s; dumping stacks and stopping" % FILE_TIMEOUT)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    with _GW_LOCK:
        gws = list(_GATEWAYS)
    for gw in gws:
        sys.stderr.write(gw.log_tail(40))
        sys.stderr.write("(kept %s for inspection)\n" % gw.dir)
    _cleanup_all()
    sys.stderr.flush()
    os._exit(3)


class Gateway:
    """What every topology offers: HTTP, device admin, telemetry reads, log capture."""

    topology = "?"

    def __init__(self):
        self.dir = None
        self.admin_port = None
        self.mqtt_ports = []
        self.admin_token = None
        self.tokens = {}            # extra API tokens: name -> (roles, token)
        self.stopped = False

    # -- files
    @property
    def ca(self):
        return os.path.join(self.dir, "ca.crt")

    def _write_extra_tokens(self, tokens):
        """tokens: {name: roles}. Written before start; the gateway appends its admin token."""
        lines = []
        for name, roles in (tokens or {}).items():
            tok = "sgt-" + secrets.token_hex(20)
            self.tokens[name] = tok
            lines.append("%s %s %s\n" % (name, roles, hashlib.sha256(tok.encode()).hexdigest()))
        if lines:
            with open(os.path.join(self.dir, "tokens"), "w") as f:
                f.writelines(lines)
            os.chmod(os.path.join(self.dir, "tokens"), 0o600)

    def _read_admin_token(self):
        with open(os.path.join(self.dir, "admin.token")) as f:
            self.admin_token = f.read().strip()

    # -- logs
    def log_files(self):
        return []

    def log_mark(self):
        marks = {}
        for p in self.log_files():
            try:
                marks[p] = os.path.getsize(p)
            except OSError:
                marks[p] = 0
        return marks

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "SUMMARY: UndefinedBehaviorSanitizer", "WARNING: ThreadSanitizer")

    def sanitizer_reports(self, max_lines=60):
        """Excerpts of sanitizer reports in the gateway's logs ("" when there are none). In a
        sanitizer build the servers write them to their logs, also at exit (leaks)."""
        out = []
        for path in self.log_files():
            try:
                with open(path, errors="replace") as f:
                    lines = f.read().splitlines()
            except OSError:
                continue
            for i, line in enumerate(lines):
                if any(m in line for m in self.SANITIZER_MARKS):
                    out.append("---- %s ----" % path)
                    out += lines[i:i + max_lines]
                    break
        return "\n".join(out)

    def log_since(self, mark, max_lines=80):
        out = []
        for p in self.log_files():
            try:
                with open(p, "rb") as f:
                    f.seek(mark.get(p, 0))
                    data = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            lines = data.splitlines()
            if len(lines) > max_lines:
                lines = ["... (%d earlier lines)" % (len(lines) - max_lines)] + lines[-max_lines:]
            out.append("---- %s (%s) ----\n%s\n" % (os.path.basename(p), self, "\n".join(lines)))
        return "".join(out)

    def log_tail(self, n=60):
        return self.log_since({}, max_lines=n)

    def grep_log(self, pattern, mark=None):
        """Log lines matching a regex, optionally only those written since a log_mark()."""
        rx = re.compile(pattern)
        hits = []
        for p in self.log_files():
            try:
                with open(p, "rb") as f:
                    if mark:
                        f.seek(mark.get(p, 0))
                    hits += [l for l in f.read().decode("utf-8", "replace").splitlines() if rx.search(l)]
            except OSError:
                pass
        return hits

    def wait_log(self, pattern, mark=None, timeout=10):
        """Wait for a log line matching pattern (lines reach the log a moment after the event:
        the gateway's log has a thread of its own); returns the matching lines."""
        box = {}

        def found():
            box["hits"] = self.grep_log(pattern, mark)
            return box["hits"]
        wait_until(found, timeout, "a log line matching %r" % pattern)
        return box["hits"]

    # -- HTTP
    def http(self, method, path, body=None, token="admin", headers=None, timeout=30):
        """token: 'admin' (default), a name given in tokens=, None (no header) or a literal."""
        if token == "admin":
            token = self.admin_token
        elif token in self.tokens:
            token = self.tokens[token]
        return http_request(self.admin_port, method, path, body, token, headers, timeout)

    def get(self, path, **kw):
        return self.http("GET", path, **kw)

    def ready(self):
        try:
            return http_request(self.admin_port, "GET", "/readyz", timeout=5).status == 200
        except OSError:
            return False

    def wait_ready(self, timeout=60):
        wait_until(self.ready, timeout, "/readyz 200 from %s" % self)
        for p in self.mqtt_ports:
            wait_until(lambda: _tcp_open(p), timeout, "MQTT port %d to accept" % p)

    # -- registry
    def create_device(self, device_id=None, primary=None, secondary=None, status=None,
                      limits=None, tags=None, expect=201):
        """PUT /v1/devices/{id}. Returns a dict with id, primary, secondary, entry (the answer)."""
        device_id = device_id or uid()
        body = {}
        if primary or secondary:
            body["auth"] = {"type": "sas", "primaryKey": primary or new_key(),
                            "secondaryKey": secondary or new_key()}
        if status:
            body["status"] = status
        if limits:
            body["limits"] = limits
        if tags:
            body["tags"] = tags
        r = self.http("PUT", "/v1/devices/" + urllib.parse.quote(device_id, safe=""), body)
        if expect is not None:
            assert r.status == expect, "PUT /v1/devices/%s: expected %d, got %r" % (device_id, expect, r)
        entry = r.json
        auth = entry.get("auth", {})
        primary = body.get("auth", {}).get("primaryKey") or auth.get("primaryKey")
        secondary = body.get("auth", {}).get("secondaryKey") or auth.get("secondaryKey")
        return {"id": device_id, "primary": primary, "secondary": secondary, "entry": entry}

    def update_device(self, dev, **fields):
        """PUT an existing device with its keys (so an update never regenerates them)."""
        body = {"auth": {"type": "sas", "primaryKey": dev["primary"], "secondaryKey": dev["secondary"]}}
        body.update(fields)
        return self.http("PUT", "/v1/devices/" + urllib.parse.quote(dev["id"], safe=""), body)

    def device(self, device_id):
        return self.get("/v1/devices/" + urllib.parse.quote(device_id, safe=""))

    def send_command(self, device_id, payload="cmd", expect=201, **fields):
        body = {"payload": payload}
        body.update(fields)
        r = self.http("POST", "/v1/devices/%s/messages" % urllib.parse.quote(device_id, safe=""), body)
        if expect is not None:
            assert r.status == expect, "POST messages to %s: expected %d, got %r" % (device_id, expect, r)
        return r

    def pending(self, device_id):
        r = self.get("/v1/devices/%s/messages" % urllib.parse.quote(device_id, safe=""))
        assert r.status == 200, r
        return r.json["messages"]

    # -- telemetry
    def cluster_info(self):
        r = self.get("/v1/cluster")
        assert r.status == 200, r
        return r.json

    def partitions(self):
        info = self.cluster_info()
        return sorted(s["partition"] for s in info["shards"])

    def telemetry(self, partition=0, after=-1, max=1000, wait=0, timeout=None):
        r = self.get("/v1/telemetry?partition=%d&after=%d&max=%d&wait=%d" % (partition, after, max, wait),
                     timeout=timeout or (wait + 30))
        assert r.status == 200, r
        return r.json

    def read_partition(self, partition):
        """Every record of one partition, oldest first."""
        records, after = [], -1
        for _ in range(10000):
            page = self.telemetry(partition, after=after, max=1000)
            recs = page["records"]
            if not recs:
                break
            records += recs
            after = recs[-1]["offset"]
        return records

    def records_of(self, device_id, partitions=None):
        """{partition: [records of device_id]} over all (or the given) partitions."""
        out = {}
        for p in partitions if partitions is not None else self.partitions():
            recs = [r for r in self.read_partition(p) if r.get("deviceId") == device_id]
            if recs:
                out[p] = recs
        return out

    def device_records(self, device_id):
        recs = []
        for p, rs in sorted(self.records_of(device_id).items()):
            recs += rs
        return recs

    def wait_records(self, device_id, count, timeout=30):
        """Wait until at least count records of device_id are readable; return them all."""
        box = {}

        def enough():
            box["r"] = self.device_records(device_id)
            return len(box["r"]) >= count
        try:
            wait_until(enough, timeout, "%d telemetry records of %s" % (count, device_id), interval=0.3)
        except AssertionError:
            raise AssertionError("expected >= %d telemetry records of %s, found %d"
                                 % (count, device_id, len(box.get("r", []))))
        return box["r"]

    # -- lifecycle
    def stop(self):
        raise NotImplementedError

    def cleanup_dir(self):
        if self.dir and not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)


def rss_kb(pid):
    """Resident set size of process pid in KB (/proc/PID/status VmRSS)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def stop_process(pid, timeout=10):
    """SIGSTOP pid and return once every thread of it has stopped: the signal is delivered
    asynchronously, and a thread still running for a moment after kill() returns could handle
    what a test sends next (seen once under ASan on a loaded machine)."""
    os.kill(pid, signal.SIGSTOP)

    def stopped():
        try:
            for tid in os.listdir("/proc/%d/task" % pid):
                with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                        return False
        except OSError:
            return True   # gone: nothing of it runs
        return True
    wait_until(stopped, timeout, "process %d to stop" % pid)


def free_port():
    """A loopback port that was free a moment ago (for extra processes a test starts); see
    deploy/local/free_ports.py for how it is chosen."""
    return _free_ports.free_port(LOOPBACK)


def read_publish(raw, timeout=30):
    """(packet id, dup, payload) of the next PUBLISH on a RawConn (packet id 0 at QoS 0)."""
    t, flags, body = raw.expect(PUBLISH, timeout=timeout)
    tl = struct.unpack("!H", body[:2])[0]
    if (flags >> 1) & 3:
        return struct.unpack("!H", body[2 + tl:4 + tl])[0], bool(flags & 8), body[4 + tl:]
    return 0, False, body[2 + tl:]


def _tcp_open(port):
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2):
            return True
    except OSError:
        return False


class AllInOne(Gateway):
    """`sacgate all` in a temporary data dir, every port picked by the kernel."""

    topology = "all"

    def __init__(self, sets=(), tokens=None, shard_count=None, start_timeout=45):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="sgit-all-")
        self._write_extra_tokens(tokens)
        self.sets = list(sets)
        self.shard_count = shard_count
        self.proc = None
        self.env = dict(os.environ)   # as started: a restart runs with the same SACGATE_* settings
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        self.stderr_path = os.path.join(self.dir, "gateway.log")
        with _GW_LOCK:
            _GATEWAYS.append(self)
        self.start(start_timeout)

    def __str__(self):
        return "all-in-one %s" % self.dir

    def log_files(self):
        return [self.stderr_path]

    def start(self, timeout=45):
        args = [BIN, "all", "--data-dir", self.dir, "--mqtt-port", "0", "--ws-port", "0",
                "--admin-port", "0"]
        if self.shard_count:
            args += ["--shard-count", str(self.shard_count)]
        for s in self.sets:
            args += ["--set", s]
        target = self._popen_stderr()
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err if target is None else target,
                                         stdin=subprocess.DEVNULL, env=self.env, preexec_fn=_pdeathsig)
        self.stopped = False
        deadline = time.monotonic() + timeout
        banner = ""
        while time.monotonic() < deadline:
            with open(self.stdout_path, "rb") as f:
                banner = f.read().decode("utf-8", "replace")
            m_mqtt = re.search(r"localhost:(\d+)", banner)
            m_ws = re.search(r"wss://localhost:(\d+)", banner)
            m_adm = re.search(r"http://127\.0\.0\.1:(\d+)", banner)
            if m_mqtt and m_adm and os.path.exists(os.path.join(self.dir, "admin.token")):
                self.mqtt_ports = [int(m_mqtt.group(1))]
                self.ws_ports = [int(m_ws.group(1))] if m_ws else []
                self.admin_port = int(m_adm.group(1))
                break
            if self.proc.poll() is not None:
                raise RuntimeError("sacgate all exited with %s before printing its banner:\n%s%s"
                                   % (self.proc.returncode, banner, self.log_tail()))
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("sacgate all printed no banner in %d s:\n%s%s" % (timeout, banner, self.log_tail()))
        self._read_admin_token()
        self.wait_ready(timeout)

    def _popen_stderr(self):
        """Where the process's stderr goes: None for the log file (subclasses may differ)."""
        return None

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Signal the process and wait. True when it ended on that signal within timeout."""
        if self.proc is None or self.proc.poll() is not None:
            self.stopped = True
            return True
        self.proc.send_signal(sig)
        ok = True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log("sacgate all did not stop on signal %d in %d s; SIGKILL" % (sig, timeout))
            ok = False
            self.proc.kill()
            self.proc.wait(10)
        self.stopped = True
        return ok

    def kill(self):
        """SIGKILL the process (the data dir stays; start() runs it again)."""
        self.stop(signal.SIGKILL)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class Cluster(Gateway):
    """deploy/local/cluster.sh: store-0, store-1, router-0, fe-0, fe-1, admin-0."""

    topology = "cluster"
    MEMBERS = ("store-0", "store-1", "router-0", "fe-0", "fe-1", "admin-0")

    def __init__(self, tokens=None, start_timeout=90):
        super().__init__()
        with _GW_LOCK:
            _GATEWAYS.append(self)
        self.env = dict(os.environ, SACGATE_BIN=BIN)
        # cluster.sh picks free ports and binds them a moment later; another test running in
        # parallel can take one in between, so a failed start is retried once in a fresh dir.
        for attempt in (1, 2):
            self.dir = tempfile.mkdtemp(prefix="sgit-cluster-")
            self.tokens = {}
            self._write_extra_tokens(tokens)
            self.stopped = False
            r = self._sh(["up", self.dir], start_timeout)
            if r.returncode == 0:
                break
            out = r.stdout + r.stderr
            tail = self.log_tail()
            self.stop()
            if attempt == 2:
                raise RuntimeError("cluster.sh up failed (%d): %s\n%s" % (r.returncode, out, tail))
            log("cluster.sh up failed (%d), retrying once: %s\n%s" % (r.returncode, out, tail))
            self.cleanup_dir()
        env = {}
        with open(os.path.join(self.dir, "ports.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                env[k] = v.strip('"')
        self.ports_env = env
        self.mqtt_ports = [int(p) for p in env["MQTT_PORTS"].split()]
        self.ws_ports = [int(p) for p in env.get("WS_PORTS", "").split()]
        self.admin_port = int(env["ADMIN_PORT"])
        self.health_ports = {k: int(v) for k, _, v in
                             (x.partition("=") for x in env.get("HEALTH", "").split())}
        self._read_admin_token()
        self.wait_ready(start_timeout)

    def __str__(self):
        return "cluster %s" % self.dir

    def _sh(self, args, timeout=60):
        try:
            return subprocess.run([CLUSTER_SH] + args, env=self.env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("cluster.sh %s did not finish in %d s (%r)" % (" ".join(args), timeout, e))

    def log_files(self):
        try:
            return sorted(os.path.join(self.dir, f) for f in os.listdir(self.dir) if f.endswith(".log"))
        except OSError:
            return []

    def pid(self, name):
        try:
            with open(os.path.join(self.dir, name + ".pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def running(self, name):
        pid = self.pid(name)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False

    def member_probe(self, name, path="/readyz"):
        """GET /readyz (or /healthz) of store-N, router-0 or fe-N: (status, JSON body), or
        (None, None) when nothing answers."""
        try:
            r = http_request(self.health_ports[name], "GET", path, timeout=5)
        except OSError:
            return None, None
        return r.status, r.json

    def wait_member_ready(self, name, timeout=60):
        wait_until(lambda: self.member_probe(name)[0] == 200, timeout, "/readyz 200 from %s" % name)

    def wait_ready(self, timeout=60):
        super().wait_ready(timeout)
        for name in getattr(self, "health_ports", {}):
            if self.running(name):
                self.wait_member_ready(name, timeout)

    def kill(self, name):
        """SIGKILL one member (cluster.sh kill NAME DIR)."""
        r = self._sh(["kill", name, self.dir], 30)
        assert r.returncode == 0, "cluster.sh kill %s failed: %s%s" % (name, r.stdout, r.stderr)

    def start_member(self, name):
        """Restart one member with its saved arguments (cluster.sh start NAME DIR)."""
        r = self._sh(["start", name, self.dir], 30)
        assert r.returncode == 0, "cluster.sh start %s failed: %s%s" % (name, r.stdout, r.stderr)

    def stop(self):
        if self.stopped or not self.dir:
            return
        self.stopped = True
        pids = [self.pid(n) for n in self.MEMBERS]
        try:
            self._sh(["down", self.dir], 40)
        except AssertionError as e:
            log(e)
        for pid in pids:  # belt and braces: nothing of ours may survive the test
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def start_gateway(topology=None, **kw):
    """The gateway of the requested topology (SACGATE_TOPOLOGY by default)."""
    topology = topology or TOPOLOGY
    if topology == "all":
        return AllInOne(**kw)
    if topology == "cluster":
        kw.pop("sets", None)
        return Cluster(**kw)
    raise ValueError("unknown SACGATE_TOPOLOGY %r (all or cluster)" % topology)


# --------------------------------------------------------------------------------------------
# node clients (tests/integration/node)


NODE_DIR = os.path.join(HERE, "node")


def ensure_node_modules():
    """npm ci once per checkout (the lock file pins every package)."""
    if not shutil.which("node") or not shutil.which("npm"):
        print("sgtest: node/npm is missing")   # ctest reports the test as skipped
        sys.exit(0)
    if os.path.isdir(os.path.join(NODE_DIR, "node_modules", "azure-iot-device-mqtt")):
        return
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError("npm ci failed: %s%s" % (r.stdout[-2000:], r.stderr[-2000:]))


class NodeClient:
    """node tests/integration/node/SCRIPT ARGS...: a real Node client (the Azure IoT device SDK,
    MQTT.js) printing one JSON event line per step, collected as they come."""

    def __init__(self, script, *args):
        args = ["node", os.path.join(NODE_DIR, script)] + [str(a) for a in args]
        self.proc = subprocess.Popen(args, cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.events.append(ev)
                self.cond.notify_all()

    def wait_event(self, kind, n=1, timeout=60):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [e for e in self.events if e["event"] == kind]
                if len(got) >= n:
                    return got
                errors = [e for e in self.events if e["event"] == "error"]
                if errors:
                    raise AssertionError("SDK device failed: %r (stderr: %s)" % (errors, self.stderr()))
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    raise AssertionError("no %d %r events within %d s: %r (stderr: %s)" %
                                         (n, kind, timeout, self.events, self.stderr()))
                self.cond.wait(min(left, 0.5))

    def wait_exit(self, timeout=60):
        return self.proc.wait(timeout)

    def stderr(self):
        if self.proc.poll() is None:
            return "(running)"
        return self.proc.stderr.read()[-2000:]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------------------------
# paho device client


class MqttDevice:
    """A paho-mqtt 3.1.1 client over TLS with everything a test wants to wait for (websocket=True:
    MQTT over WebSocket over TLS on the gateway's ws port, path /$iothub/websocket).

    No automatic reconnect: once the server closes the connection, `closed` is set and stays.
    """

    def __init__(self, gw, device_id, key=None, password=None, port=None, client_id=None,
                 username=None, keepalive=60, clean_session=True, ttl=3600, websocket=False, cert=None):
        self.gw = gw
        self.device_id = device_id
        self.client_id = device_id if client_id is None else client_id
        self.username = username_for(device_id) if username is None else username
        if password is None and key is not None:
            password = sas_token(device_id, key, ttl=ttl)
        self.password = password
        self.port = port or (gw.ws_ports[0] if websocket else gw.mqtt_ports[0])
        self.keepalive = keepalive
        self.connack = threading.Event()
        self.connack_rc = None
        self.closed = threading.Event()
        self.disconnect_rc = None
        self.cond = threading.Condition()
        self.messages = []          # (topic, payload bytes, qos, dup, retain)
        self.acked = {}             # mid -> time of PUBACK (QoS 1) or send (QoS 0)
        self.subacks = {}           # mid -> granted qos tuple
        self.unsubacks = set()      # mids of UNSUBACKs
        self.client = mqtt.Client(client_id=self.client_id, clean_session=clean_session,
                                  protocol=mqtt.MQTTv311, reconnect_on_failure=False,
                                  transport="websockets" if websocket else "tcp")
        if websocket:
            self.client.ws_set_options(path="/$iothub/websocket")
        self.client.tls_set(ca_certs=gw.ca, certfile=cert.certfile if cert else None,
                            keyfile=cert.keyfile if cert else None)
        if self.username is not None:
            self.client.username_pw_set(self.username, self.password)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        # paho 1.6 lets an SSLEOFError out of a write (Python 3.11 raises it when the server has
        # closed the connection while we send) and its network thread ends without on_disconnect:
        # that is a close, too
        loop = self.client._thread_main

        def guarded_loop():
            try:
                loop()
            except (ssl.SSLError, OSError) as e:
                self._on_disconnect(self.client, None, "%r" % (e,))
        self.client._thread_main = guarded_loop
        self.started = False

    def __repr__(self):
        return "<MqttDevice %s port %d>" % (self.device_id, self.port)

    # callbacks run in paho's network thread
    def _on_connect(self, client, userdata, flags, rc):
        self.connack_rc = rc
        self.connack.set()

    def _on_disconnect(self, client, userdata, rc):
        self.disconnect_rc = rc
        self.closed.set()
        with self.cond:
            self.cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, msg.payload, msg.qos, msg.dup, msg.retain))
            self.cond.notify_all()

    def _on_publish(self, client, userdata, mid):
        with self.cond:
            self.acked[mid] = time.monotonic()
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, granted):
        with self.cond:
            self.subacks[mid] = tuple(granted)
            self.cond.notify_all()

    def _on_unsubscribe(self, client, userdata, mid):
        with self.cond:
            self.unsubacks.add(mid)
            self.cond.notify_all()

    def connect(self, timeout=20):
        """Connect and wait for CONNACK. Returns its return code, or None when the server
        closed the connection without one."""
        self.client._connect_timeout = 10.0
        try:
            self.client.connect(HOST, self.port, self.keepalive)
        except (ssl.SSLError, OSError) as e:
            raise AssertionError("%r: TCP/TLS connect failed: %r" % (self, e))
        self.client.loop_start()
        self.started = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connack.wait(0.05):
                return self.connack_rc
            if self.closed.is_set():
                return None
        raise AssertionError("%r: no CONNACK and no close within %d s" % (self, timeout))

    def connect_ok(self, timeout=20):
        rc = self.connect(timeout)
        assert rc == 0, "%r: CONNACK %r, expected 0 (accepted)" % (self, rc)
        return self

    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%r: timed out after %.0f s waiting for %s" % (self, timeout, what))
                self.cond.wait(min(left, 0.2))

    def subscribe(self, topic=None, qos=1, timeout=20):
        """Subscribe and wait for SUBACK; returns the granted qos tuple."""
        topic = topic or "devices/%s/messages/devicebound/#" % self.device_id
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS, "%r: subscribe failed locally: %d" % (self, rc)
        return self._wait(lambda: self.subacks.get(mid), timeout, "SUBACK of %s" % topic)

    def unsubscribe(self, topic=None, timeout=20):
        """Unsubscribe and wait for UNSUBACK."""
        topic = topic or "devices/%s/messages/devicebound/#" % self.device_id
        rc, mid = self.client.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS, "%r: unsubscribe failed locally: %d" % (self, rc)
        self._wait(lambda: mid in self.unsubacks, timeout, "UNSUBACK of %s" % topic)

    def subscribe_commands(self, timeout=20):
        granted = self.subscribe(timeout=timeout)
        assert granted == (1,), "%r: SUBACK for devicebound/# granted %r, expected (1,)" % (self, granted)
        return granted

    METHODS = "$iothub/methods/POST/#"

    def serve_methods(self, handler, subscribe=True):
        """Answer direct methods: handler(name, payload bytes, rid) returns (status, body bytes)
        to publish on $iothub/methods/res/{status}/?$rid={rid}, or None to stay silent. Each
        request is also recorded in self.method_calls as (name, rid, payload, qos). Subscribes
        $iothub/methods/POST/# (and checks the grant is QoS 0) unless subscribe is False."""
        self.method_calls = []

        def on_request(client, userdata, msg):
            name, _, query = msg.topic[len("$iothub/methods/POST/"):].partition("/?")
            rid = urllib.parse.parse_qs(query).get("$rid", [""])[0]
            with self.cond:
                self.method_calls.append((name, rid, msg.payload, msg.qos))
                self.cond.notify_all()
            answer = handler(name, msg.payload, rid)
            if answer is not None:
                client.publish("$iothub/methods/res/%d/?$rid=%s" % (answer[0], rid), answer[1], 0)

        self.client.message_callback_add(self.METHODS, on_request)
        if subscribe:
            granted = self.subscribe(self.METHODS, qos=0)
            assert granted == (0,), "%r: SUBACK for %s granted %r, expected (0,)" % (self, self.METHODS, granted)
            # (the SUBACK comes once the device's shard has the subscription: calls reach it now)
        return self

    def wait_method_calls(self, n, timeout=30):
        return self._wait(lambda: self.method_calls if len(self.method_calls) >= n else None, timeout,
                          "%d method requests" % n)

    def publish(self, topic, payload, qos=1):
        info = self.client.publish(topic, payload, qos)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, "%r: publish failed locally: rc %d" % (self, info.rc)
        return info.mid

    def telemetry_topic(self, props=None):
        return "devices/%s/messages/events/%s" % (self.device_id, encode_bag(props or {}))

    def send(self, payload, props=None, qos=1, timeout=30):
        """Publish telemetry; with QoS 1 wait for the PUBACK. Returns the mid."""
        mid = self.publish(self.telemetry_topic(props), payload, qos)
        if qos:
            self.wait_acked([mid], timeout)
        return mid

    def wait_acked(self, mids, timeout=30):
        mids = list(mids)
        self._wait(lambda: all(m in self.acked for m in mids) or self.closed.is_set(), timeout,
                   "PUBACK of %d publishes" % len(mids))
        missing = [m for m in mids if m not in self.acked]
        assert not missing, "%r: connection closed (rc %r) with %d of %d publishes unacknowledged" % (
            self, self.disconnect_rc, len(missing), len(mids))

    def wait_messages(self, n, timeout=30):
        """Wait until n messages have arrived; returns the first n as (topic, payload, ...)."""
        self._wait(lambda: len(self.messages) >= n, timeout, "%d messages (have %d)" % (n, len(self.messages)))
        with self.cond:
            return list(self.messages[:n])

    def commands(self):
        """Received cloud-to-device messages as dicts: props (decoded bag), payload, topic, dup."""
        prefix = "devices/%s/messages/devicebound/" % self.device_id
        out = []
        with self.cond:
            msgs = list(self.messages)
        for topic, payload, qos, dup, retain in msgs:
            assert topic.startswith(prefix), "%r: message on unexpected topic %r" % (self, topic)
            out.append({"topic": topic, "props": parse_bag(topic[len(prefix):]), "payload": payload,
                        "qos": qos, "dup": dup})
        return out

    def wait_commands(self, n, timeout=30):
        self.wait_messages(n, timeout)
        return self.commands()

    def wait_closed(self, timeout=20):
        """True when the server closed the connection within timeout."""
        return self.closed.wait(timeout)

    def is_connected(self):
        return self.connack_rc == 0 and not self.closed.is_set()

    def close(self):
        if self.started:
            try:
                if not self.closed.is_set():
                    self.client.disconnect()
            except Exception:
                pass
            self.client._thread_terminate = True
            try:
                self.client.loop_stop()
            except Exception:
                pass
            self.started = False
        try:
            self.client.socket() and self.client.socket().close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# --------------------------------------------------------------------------------------------
# mosquitto command-line clients


def mosquitto_args(gw, device_id, password, port=None, client_id=None):
    """password None: no -P (X.509 and PSK devices; add --cert/--key or --psk to the extra arguments)."""
    return (["-h", HOST, "-p", str(port or gw.mqtt_ports[0]), "--cafile", gw.ca, "-V", "mqttv311",
             "-i", client_id or device_id, "-u", username_for(device_id)]
            + (["-P", password] if password is not None else []))


def mosquitto_pub(gw, device_id, password, topic, message=None, file=None, qos=1, port=None,
                  timeout=30, extra=()):
    args = ["mosquitto_pub"] + mosquitto_args(gw, device_id, password, port) + ["-t", topic, "-q", str(qos)]
    if file is not None:
        args += ["-f", file]
    else:
        args += ["-m", message if message is not None else ""]
    args += list(extra)
    try:
        return subprocess.run(args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("mosquitto_pub did not finish in %d s: %r" % (timeout, e))


def mosquitto_sub(gw, device_id, password, count=1, topic=None, port=None, timeout=30, fmt="%t\t%x"):
    """Subscribe to the device's devicebound/# with QoS 1; returns (rc, [(topic, payload bytes)])."""
    topic = topic or "devices/%s/messages/devicebound/#" % device_id
    args = (["mosquitto_sub"] + mosquitto_args(gw, device_id, password, port)
            + ["-t", topic, "-q", "1", "-C", str(count), "-W", str(int(timeout)), "-F", fmt])
    try:
        r = subprocess.run(args, capture_output=True, timeout=timeout + 10, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("mosquitto_sub did not finish in %d s: %r" % (timeout + 10, e))
    msgs = []
    for line in r.stdout.decode("utf-8", "replace").splitlines():
        if "\t" in line:
            t, _, hx = line.partition("\t")
            msgs.append((t, bytes.fromhex(hx)))
    return r, msgs


# --------------------------------------------------------------------------------------------
# raw MQTT over TLS, for malformed input

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14


def enc_varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def enc_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + enc_varint(len(body)) + body


def pkt_connect(client_id, username=None, password=None, keepalive=60, clean=True,
                proto=b"MQTT", level=4):
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = enc_str(proto) + bytes([level, flags]) + struct.pack("!H", keepalive) + enc_str(client_id)
    if username is not None:
        body += enc_str(username)
    if password is not None:
        body += enc_str(password)
    return packet(CONNECT, 0, body)


def pkt_publish(topic, payload=b"", qos=0, mid=1, retain=False, dup=False):
    if isinstance(payload, str):
        payload = payload.encode()
    body = enc_str(topic) + (struct.pack("!H", mid) if qos else b"") + payload
    return packet(PUBLISH, (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0), body)


def pkt_subscribe(mid, filters):
    body = struct.pack("!H", mid) + b"".join(enc_str(f) + bytes([q]) for f, q in filters)
    return packet(SUBSCRIBE, 0x02, body)


def pkt_puback(mid):
    return packet(PUBACK, 0, struct.pack("!H", mid))


def pkt_pingreq():
    return packet(PINGREQ, 0, b"")


def pkt_disconnect():
    return packet(DISCONNECT, 0, b"")


_CLIENT_CONTEXTS = {}


def _client_context(cafile, tls_version=None):
    """One client SSLContext per CA file and pinned TLS version: Python resumes a session only
    through the context that made it."""
    key = (cafile, tls_version)
    ctx = _CLIENT_CONTEXTS.get(key)
    if ctx is None:
        ctx = ssl.create_default_context(cafile=cafile)
        if tls_version:
            ctx.minimum_version = ctx.maximum_version = tls_version
        _CLIENT_CONTEXTS[key] = ctx
    return ctx


class RawConn:
    """A TLS socket to a frontend that speaks hand-encoded MQTT."""

    def __init__(self, gw, port=None, tls=True, timeout=15, rcvbuf=None, session=None, tls_version=None):
        """rcvbuf: a small receive buffer (bytes) to play a device that reads slowly.
        session: an ssl.SSLSession from an earlier RawConn's .session() to resume;
        tls_version: an ssl.TLSVersion to pin (TLS 1.2 or 1.3)."""
        self.gw = gw
        self.port = port or gw.mqtt_ports[0]
        if rcvbuf:
            raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            raw.settimeout(timeout)
            raw.connect((LOOPBACK, self.port))
        else:
            raw = socket.create_connection((LOOPBACK, self.port), timeout=timeout)
        if tls:
            ctx = _client_context(gw.ca, tls_version)
            try:
                self.sock = ctx.wrap_socket(raw, server_hostname=HOST, session=session)
            except Exception:
                raw.close()
                raise
        else:
            self.sock = raw
        self.buf = b""
        self.eof = False
        self.error = None

    def send(self, data):
        """False when the peer has already closed (the write failed)."""
        try:
            self.sock.sendall(data)
            return True
        except (OSError, ssl.SSLError) as e:
            self.error = e
            self.eof = True
            return False

    def _fill(self, timeout):
        if self.eof:
            return False
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return None
        except (OSError, ssl.SSLError) as e:   # reset, unexpected EOF: the server closed it
            self.error = e
            self.eof = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _parse(self):
        if len(self.buf) < 2:
            return None
        mult, n, i = 1, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise AssertionError("server sent a malformed remaining length")
        if len(self.buf) < i + n:
            return None
        head, body = self.buf[0], self.buf[i:i + n]
        self.buf = self.buf[i + n:]
        return (head >> 4, head & 0x0F, body)

    def read_packet(self, timeout=15):
        """(type, flags, body); None when the server closed; raises AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            p = self._parse()
            if p:
                return p
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no packet from the server within %.0f s" % timeout)
            r = self._fill(left)
            if r is False:
                return None

    def expect(self, ptype, timeout=15):
        p = self.read_packet(timeout)
        assert p is not None, "server closed the connection while we waited for packet type %d (%r)" % (
            ptype, self.error)
        assert p[0] == ptype, "expected packet type %d, got %d (%r)" % (ptype, p[0], p)
        return p

    def wait_closed(self, timeout=20):
        """Read (and drop) packets until the server closes; True if it did within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self._parse():
                continue
            if self.eof:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._fill(min(left, 1.0))

    def connect(self, device_id, password, keepalive=60, client_id=None, username=None, timeout=15):
        """Send CONNECT, return the CONNACK return code (None if closed instead)."""
        self.send(pkt_connect(client_id or device_id, username or username_for(device_id), password,
                              keepalive=keepalive))
        p = self.read_packet(timeout)
        if p is None:
            return None
        assert p[0] == CONNACK and len(p[2]) == 2, "expected CONNACK, got %r" % (p,)
        return p[2][1]

    def session(self):
        """The TLS session to resume later (TLS 1.3 tickets arrive after the handshake: read a
        packet, e.g. the CONNACK, first)."""
        return self.sock.session

    def resumed(self):
        """True when this connection's TLS handshake resumed a session (no full handshake)."""
        return self.sock.session_reused

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# --------------------------------------------------------------------------------------------
# test case base and runner


def restart_shard(test, partition):
    """Restart the shard of partition (the whole process for sacgate all) and wait until the
    gateway is ready again."""
    gw = test.gw
    if gw.topology == "all":
        test.assertTrue(gw.stop(), "sacgate all did not exit on SIGTERM")
        gw.start()
    else:
        name = next(s["name"] for s in gw.cluster_info()["shards"] if s["partition"] == partition)
        gw.kill(name)
        gw.start_member(name)
        gw.wait_member_ready(name)
    gw.wait_ready()


# --------------------------------------------------------------------------------------------
# X.509 device certificates, made at test time (python3-cryptography)

class Cert:
    """A certificate and its key as PEM files in directory d; .thumbprint is the hex SHA-256 of
    its DER encoding (what a device entry registers)."""

    def __init__(self, d, name, cert, key):
        from cryptography.hazmat.primitives import serialization
        self.cert, self.key = cert, key
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self.certfile = os.path.join(d, name + ".crt")
        self.keyfile = os.path.join(d, name + ".key")
        with open(self.certfile, "wb") as f:
            f.write(self.cert_pem)
        with open(self.keyfile, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        self.thumbprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def chain_file(self, *issuers):
        """A PEM file with this certificate followed by issuers' (what a client sends)."""
        path = self.certfile[:-4] + "-chain.crt"
        with open(path, "wb") as f:
            f.write(self.cert_pem + b"".join(i.cert_pem for i in issuers))
        return path


def make_cert(d, cn, issuer=None, ca=False, days=30, not_before_days=-1, name=None):
    """An EC P-256 certificate for subject CN=cn, self-signed or signed by issuer (a Cert), valid
    from not_before_days to days from now (a negative days makes an expired one)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer.cert.subject if issuer else subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=not_before_days))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    cert = b.sign(issuer.key if issuer else key, hashes.SHA256())
    return Cert(d, name or uid("crt"), cert, key)


class GatewayTest(unittest.TestCase):
    """Starts one gateway per test class (topology from SACGATE_TOPOLOGY unless TOPOLOGY is set).

    Subclasses may set TOPOLOGY ('all'/'cluster'), SETS (--set values for the all-in-one) and
    TOKENS ({name: roles} extra API tokens), GATEWAY (a Gateway class to start instead of the
    topology's, given the same arguments).
    """

    TOPOLOGY = None
    SETS = ()
    ENV = {}          # SACGATE_* variables the gateway's processes start with (any topology)
    TOKENS = {"svc": "service", "reader": "registry-read", "writer": "registry-write"}
    GATEWAY = None
    gw = None

    @classmethod
    def setUpClass(cls):
        topo = cls.TOPOLOGY or TOPOLOGY
        kw = {"tokens": cls.TOKENS}
        if topo == "all":
            kw["sets"] = cls.SETS
        t0 = time.monotonic()
        saved = {k: os.environ.get(k) for k in cls.ENV}
        os.environ.update(cls.ENV)
        try:
            cls.gw = cls.GATEWAY(**kw) if cls.GATEWAY else start_gateway(topo, **kw)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        log("%s: started %s in %.1f s" % (cls.__name__, cls.gw, time.monotonic() - t0))

    @classmethod
    def tearDownClass(cls):
        if cls.gw:
            cls.gw.stop()
            problems = cls.gw.sanitizer_reports()
            cls.gw.cleanup_dir()
            if problems:
                raise AssertionError("sanitizer reports in the gateway's logs:\n" + problems)

    def setUp(self):
        self._clients = []
        self._mark = self.gw.log_mark() if self.gw else {}
        signal.signal(signal.SIGALRM, self._alarm)
        signal.alarm(TEST_TIMEOUT)

    def _alarm(self, signum, frame):
        raise TestTimeout("test exceeded SGTEST_TEST_TIMEOUT=%d s" % TEST_TIMEOUT)

    def tearDown(self):
        signal.alarm(0)
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass

    # -- helpers for tests
    @property
    def is_cluster(self):
        return self.gw.topology == "cluster"

    def device(self, dev, port=None, **kw):
        """A paho client for dev (from gw.create_device), closed at the end of the test."""
        kw.setdefault("key", dev["primary"])
        c = MqttDevice(self.gw, dev["id"], port=port, **kw)
        self._clients.append(c)
        return c

    def connected(self, dev, port=None, subscribe=False, **kw):
        c = self.device(dev, port=port, **kw).connect_ok()
        if subscribe:
            c.subscribe_commands()
        return c

    def raw(self, port=None, tls=True, rcvbuf=None):
        c = RawConn(self.gw, port=port, tls=tls, rcvbuf=rcvbuf)
        self._clients.append(c)
        return c

    def raw_subscribed(self, dev, qos=1, port=None, rcvbuf=None):
        """A raw connection of `dev` (from create_device), connected and subscribed to its
        devicebound topic with the QoS granted as asked."""
        did = dev["id"]
        raw = self.raw(port=port, rcvbuf=rcvbuf)
        self.assertEqual(raw.connect(did, sas_token(did, dev["primary"])), 0)
        raw.send(pkt_subscribe(1, [("devices/%s/messages/devicebound/#" % did, qos)]))
        _, _, body = raw.expect(SUBACK)
        self.assertEqual(body, struct.pack("!HB", 1, qos), "SUBACK granting QoS %d" % qos)
        return raw

    def assertError(self, r, status, error=None):
        """An HTTP error answer: the status and a JSON {"error", "message"} body."""
        self.assertEqual(r.status, status, "expected HTTP %d, got %r" % (status, r))
        body = r.json
        self.assertIsInstance(body, dict, r)
        self.assertIsInstance(body.get("error"), str, "error field missing: %r" % (r,))
        self.assertTrue(body["error"], r)
        self.assertIsInstance(body.get("message"), str, "message field missing: %r" % (r,))
        if error:
            self.assertEqual(body["error"], error, r)
        return body


class _Result(unittest.TextTestResult):
    """Prints the gateway log lines written during a failing test."""

    def _dump(self, test):
        gw = getattr(test, "gw", None)
        mark = getattr(test, "_mark", {})
        try:
            if gw is not None:
                self.stream.write("\n==== gateway log during %s ====\n%s\n" % (test, gw.log_since(mark)))
            else:
                with _GW_LOCK:
                    gws = list(_GATEWAYS)
                for g in gws[-1:]:
                    self.stream.write("\n==== gateway log tail (%s) ====\n%s\n" % (test, g.log_tail()))
            self.stream.flush()
        except Exception as e:
            self.stream.write("(could not print the gateway log: %r)\n" % e)

    def addError(self, test, err):
        super().addError(test, err)
        self._dump(test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._dump(test)


def main():
    """Entry point of every test file: unittest with log dumps, a watchdog, clean shutdown."""
    if not os.access(BIN, os.X_OK):
        sys.stderr.write("sgtest: sacgate binary not found at %s (set SACGATE_BIN)\n" % BIN)
        sys.exit(2)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    wd = threading.Timer(FILE_TIMEOUT, _watchdog)
    wd.daemon = True
    wd.start()
    log("binary %s, topology %s" % (BIN, TOPOLOGY))
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_Result, stream=sys.stdout)
    prog = unittest.main(testRunner=runner, exit=False, argv=sys.argv)
    wd.cancel()
    _cleanup_all()
    sys.exit(0 if prog.result.wasSuccessful() else 1)
