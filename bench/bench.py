#!/usr/bin/env python3
"""bench.py — sacgate's benchmarks: named scenarios, each run with the same simulator
(build/sacgate-sim) against sacgate (`sacgate all`, and the local cluster of separate processes)
and against Debian's Mosquitto with the same certificate, in one invocation. Prints every figure
and the sacgate/Mosquitto ratio, and writes bench/results/<scenario>.json plus one HTML report per
run (bench/results/<scenario>-<target>.html).

    bench/bench.py idle-tls                       # every target of the scenario
    bench/bench.py telemetry-qos1 --targets all,mosquitto
    bench/bench.py scale --devices 250000 --hold 600
    bench/bench.py revocation --devices 1000      # HTTP revoke -> closed socket, p50/p99
    bench/bench.py method-rtt --devices 100 --messages 5000 --parallel 8   # direct method round trip
    bench/bench.py connect-credentials            # connects/s per credential kind: SAS, PSK 1.3/1.2, X.509
    bench/bench.py --smoke all-scenarios          # seconds each, a few hundred devices (ctest)
    bench/bench.py telemetry-qos1 --devices 1 --messages 50000 --rounds 7   # median of 7 paired ratios
    bench/bench.py telemetry-qos1 --devices 1 --targets sacgate-all,sacgate-all-nosync,mosquitto   # the disk's share

Everything runs on loopback, every load is bounded in count and time and stops by itself.
No figure is checked against a threshold: these machines are shared and noisy. --smoke checks
that each scenario works (every session online, every message acknowledged ...), not how fast.
"""
import argparse
import base64
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import math
import os
import re
import secrets
import selectors
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
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("SACGATE_BUILD", os.path.join(ROOT, "build"))
SACGATE = os.environ.get("SACGATE_BIN", os.path.join(BUILD, "sacgate"))
SIM = os.environ.get("SACGATE_SIM", os.path.join(BUILD, "sacgate-sim"))
WAKEUP_PROBE = os.environ.get("SACGATE_WAKEUP_PROBE", os.path.join(BUILD, "bench", "wakeup_probe"))
CLUSTER_SH = os.path.join(ROOT, "deploy", "local", "cluster.sh")
sys.path.insert(0, os.path.dirname(CLUSTER_SH))
import free_ports as _free_ports  # noqa: E402  (deploy/local/free_ports.py, which cluster.sh runs too)
SESSIONS_PER_FRONTEND = 18000      # frontend.max_connections: a process may hold 20,000 files here
MOSQUITTO_MAX_SESSIONS = 19000     # Mosquitto is one process under the same 20,000-file limit
# Measure the gateway, not the per-device telemetry rate limit (100 msg/s by default).
GATEWAY_ENV = {"SACGATE_FRONTEND_TELEMETRY_RATE": "65535", "SACGATE_FRONTEND_TELEMETRY_BURST": "65535"}


class BenchError(Exception):
    pass


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def free_port():
    """A loopback port that was free a moment ago (see deploy/local/free_ports.py)."""
    return _free_ports.free_port()


def wait_tcp(port, timeout):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError("nothing listens on port %d after %d s" % (port, timeout))


# ---------- targets ----------

def stop_process(proc, sig=signal.SIGTERM, timeout=30):
    """Ask a server to stop, and kill it if it has not after timeout seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class Target:
    name = "?"
    kind = "sacgate"          # or "mosquitto"
    max_sessions = 10 ** 9
    dir = None

    def sim_args(self):
        raise NotImplementedError

    def stop(self):
        pass

    def sanitizer_reports(self):
        """Lines of sanitizer reports in the server's logs (an instrumented build's findings); each
        report is also printed whole (its stacks), since the work directory goes with the run."""
        found = []
        for root, _, files in os.walk(self.dir or "/nonexistent"):
            for name in files:
                if name.endswith(".log"):
                    with open(os.path.join(root, name), errors="replace") as f:
                        lines = f.read().splitlines()
                    for i, line in enumerate(lines):
                        if any(m in line for m in SANITIZER_MARKS):
                            found.append(line.strip())
                            print("---- %s:\n%s" % (name, "\n".join(lines[i:i + 60])), file=sys.stderr, flush=True)
        return found


class SacgateAll(Target):
    """`sacgate all`: every tier in one process. With sync=False (the target sacgate-all-nosync) its
    shards acknowledge without fdatasync (store.sync=never): the same path without the disk, so a
    run shows what the durable acknowledgement costs beside what the hand-offs cost."""
    name = "sacgate-all"
    max_sessions = SESSIONS_PER_FRONTEND

    def __init__(self, workdir, shards=1, sync=True):
        self.shards = shards
        self.sync = sync
        if not sync:
            self.name = "sacgate-all-nosync"
        self.dir = os.path.join(workdir, "all")
        os.makedirs(self.dir)
        env = dict(os.environ, **GATEWAY_ENV)
        env["SACGATE_STORE_SYNC"] = "always" if sync else "never"
        self.log = open(os.path.join(self.dir, "sacgate.log"), "w")
        self.proc = subprocess.Popen([SACGATE, "all", "--data-dir", self.dir, "--mqtt-port", "0", "--ws-port", "0", "--admin-port", "0",
                                      "--log-level", "warn", "--shard-count", str(shards)], stdout=subprocess.PIPE,
                                     stderr=self.log, env=env,
                                     text=True)
        self.mqtt = self.admin = self.ws = None
        end = time.time() + 60
        for line in self.proc.stdout:
            if "MQTT over TLS" in line:
                self.mqtt = int(line.rsplit(":", 1)[1])
            if "MQTT over WSS" in line:
                self.ws = int(line.split("wss://localhost:")[1].split("/")[0])
            if "admin HTTP" in line:
                self.admin = int(line.split("http://127.0.0.1:")[1].split()[0])
            if self.mqtt and self.admin or time.time() > end:
                break
        if not (self.mqtt and self.admin):
            self.stop()
            raise BenchError("sacgate all did not start (see %s/sacgate.log)" % self.dir)
        # drain the rest of its output so it never blocks on a full pipe
        self.proc.stdout.close()
        wait_tcp(self.mqtt, 30)

    def sim_args(self):
        return ["--mode", "iothub", "--port", str(self.mqtt), "--cafile", os.path.join(self.dir, "ca.crt"),
                "--admin", "http://127.0.0.1:%d" % self.admin, "--token-file", os.path.join(self.dir, "admin.token"),
                "--server-pids", str(self.proc.pid)]

    def stop(self):
        stop_process(self.proc)
        self.log.close()


class SacgateCluster(Target):
    """deploy/local/cluster.sh: shards, a router, frontends and the admin as separate processes."""
    kind = "sacgate"

    def __init__(self, workdir, frontends, shards=2, credit=None, link="tcp"):
        self.name = "sacgate-cluster"
        self.frontends = frontends
        self.shards = shards
        self.link = link
        self.max_sessions = SESSIONS_PER_FRONTEND * frontends
        self.dir = os.path.join(workdir, "cluster")
        env = dict(os.environ, SACGATE_BIN=SACGATE, FRONTENDS=str(frontends), SHARDS=str(shards), LOG_LEVEL="warn",
                   LINK=link, SACGATE_STORE_SYNC="always", **GATEWAY_ENV)
        if credit:
            env["SACGATE_CLUSTER_CREDIT"] = str(credit)
        r = subprocess.run([CLUSTER_SH, "up", self.dir], env=env, capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise BenchError("cluster.sh up failed: %s" % (r.stderr.strip()[-500:]))
        self.env = env

    def sim_args(self):
        return ["--mode", "iothub", "--ports-env", os.path.join(self.dir, "ports.env"), "--cafile",
                os.path.join(self.dir, "ca.crt"), "--token-file", os.path.join(self.dir, "admin.token"),
                "--server-pids-dir", self.dir]

    def kill_member(self, name):
        subprocess.run([CLUSTER_SH, "kill", name, self.dir], env=self.env, check=True, timeout=60)

    def start_member(self, name):
        subprocess.run([CLUSTER_SH, "start", name, self.dir], env=self.env, check=True, timeout=60)

    def stop(self):
        subprocess.run([CLUSTER_SH, "down", self.dir], env=self.env, capture_output=True, timeout=120)


class Mosquitto(Target):
    """Debian's Mosquitto with sacgate's development certificate, tuned as its documentation
    advises for this load: no Nagle delay, no persistence, and no silent limits (connections,
    in-flight and queued QoS 1 messages are unlimited, so a slow subscriber is never dropped)."""
    name = "mosquitto"
    kind = "mosquitto"
    max_sessions = MOSQUITTO_MAX_SESSIONS

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "mosquitto")
        os.makedirs(self.dir)
        subprocess.run([SACGATE, "init", "--data-dir", self.dir], check=True, capture_output=True, timeout=60)
        self.port = free_port()
        conf = os.path.join(self.dir, "mosquitto.conf")
        user = "" if os.geteuid() != 0 else "user root\n"
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\n" % self.port)
            f.write("cafile %s/ca.crt\ncertfile %s/server.crt\nkeyfile %s/server.key\n" % ((self.dir,) * 3))
            f.write("allow_anonymous true\nset_tcp_nodelay true\npersistence false\nmax_connections -1\n"
                    "max_inflight_messages 0\nmax_queued_messages 0\nmax_queued_bytes 0\nmemory_limit 0\n"
                    "log_type error\nlog_dest stderr\n" + user)
        self.log = open(os.path.join(self.dir, "mosquitto.log"), "w")
        self.version = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.split("\n")[0]
        self.proc = subprocess.Popen(["mosquitto", "-c", conf], stdout=self.log, stderr=self.log,
                                     preexec_fn=lambda: os.setpgrp())
        wait_tcp(self.port, 30)

    def sim_args(self):
        return ["--mode", "plain", "--port", str(self.port), "--cafile", os.path.join(self.dir, "ca.crt"),
                "--server-pids", str(self.proc.pid)]

    def stop(self):
        stop_process(self.proc)
        self.log.close()


# ---------- running the simulator ----------

def run_sim(target, args, label, outdir, timeout):
    """Run sacgate-sim against target; returns its JSON summary."""
    prefix = os.path.join(outdir, label)
    cmd = [SIM, "run", "--label", label, "--report", prefix] + target.sim_args() + args
    log("run:", " ".join(cmd))
    t0 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout)
    sys.stderr.write(r.stdout)
    if r.returncode != 0 or not os.path.exists(prefix + ".json"):
        raise BenchError("sacgate-sim failed (exit %d) against %s" % (r.returncode, target.name))
    with open(prefix + ".json") as f:
        s = json.load(f)
    s["_wall"] = time.time() - t0
    s["_report"] = prefix + ".html"
    return s


def hist(s, name):
    return s.get("latency", {}).get(name) or {}


def ms(h, p):
    v = h.get(p)
    return None if not h.get("count") else round(v / 1000.0, 3)


def provision_args(target, devices_needed):
    """sacgate devices are registered through the import API, Mosquitto needs none."""
    return ["--provision", "import"] if target.kind == "sacgate" else []


def server_bytes_per_session(s):
    """Server memory per session at the peak: (added since the start, all of it). Proportional set
    sizes where the simulator measured them (shared library pages counted once over all the
    server's processes, not once per process), else resident set sizes."""
    srv = (s.get("resources") or {}).get("server") or {}
    peak = s["sessions"].get("peakOnline") or 0
    if not srv or not peak:
        return None, None
    kind = "Pss" if srv.get("pssAtPeakOnlineBytes") else "Rss"
    at, start = srv.get(kind.lower() + "AtPeakOnlineBytes", 0), srv.get("start%sBytes" % kind, 0)
    return round((at - start) / peak), round(at / peak)


def server_rss_per_session(s):
    srv = (s.get("resources") or {}).get("server") or {}
    peak = s["sessions"].get("peakOnline") or 0
    return round(srv.get("rssAtPeakOnlineBytes", 0) / peak) if srv and peak else None


def sim_bytes_per_session(s):
    sim = (s.get("resources") or {}).get("simulator") or {}
    peak = s["sessions"].get("peakOnline") or 0
    if not peak:
        return None
    return round((sim.get("pssAtPeakOnlineBytes") or sim.get("rssAtPeakOnlineBytes", 0)) / peak)


def check(cond, what, problems):
    if not cond:
        problems.append(what)


# ---------- scenarios ----------
# Each returns (figures, problems); figures are what the tables print and the results keep.

def idle_tls(target, p, outdir, problems, base):
    n = min(p.devices or (300 if p.smoke else 10000), target.max_sessions)
    args = provision_args(target, n) + ["--prefix", "idle", "--devices", str(n), "--rate", "0",
                                        "--max-connecting", "64", "--keepalive", "60", "--hold",
                                        str(p.hold if p.hold is not None else (3 if p.smoke else 15)),
                                        "--duration", str(120 + n / 200)]
    s = run_sim(target, args, "%s-%s" % (base, target.name), outdir, timeout=600 + n / 100)
    inc, total = server_bytes_per_session(s)
    srv = s["resources"].get("server") or {}
    ses = s["sessions"]
    check(ses["everOnline"] == n, "%s: %d of %d sessions came online" % (target.name, ses["everOnline"], n), problems)
    check(sum(ses["dropped"].values()) == 0, "%s: sessions dropped while idle: %s" % (target.name, ses["dropped"]),
          problems)
    return {
        "sessions": n,
        "connectsPerSecond": s["rates"]["connectsPerSecond"],
        "connectP50Ms": ms(hist(s, "connect"), "p50"),
        "connectP99Ms": ms(hist(s, "connect"), "p99"),
        "serverBytesPerSession": inc,
        "serverTotalBytesPerSession": total,
        "serverRssTotalBytesPerSession": server_rss_per_session(s),
        "serverProcesses": srv.get("processes"),
        "serverCpuMicrosPerConnect": round(srv.get("cpuSeconds", 0) * 1e6 / max(1, ses["connects"])) if srv else None,
        "simBytesPerSession": sim_bytes_per_session(s),
        "simCpuSeconds": s["resources"]["simulator"]["cpuSeconds"],
        "failed": {k: v for k, v in ses["failed"].items() if v},
    }, s


def server_processes(target):
    """{name: pid} of a target's server processes (a cluster's member names from cluster.sh)."""
    if isinstance(target, SacgateCluster):
        out = {}
        for f in sorted(os.listdir(target.dir)):
            if f.endswith(".pid"):
                try:
                    out[f[:-4]] = int(open(os.path.join(target.dir, f)).read().strip())
                except (OSError, ValueError):
                    pass
        return out
    proc = getattr(target, "proc", None)
    return {"all" if isinstance(target, SacgateAll) else target.name: proc.pid} if proc else {}


def thread_counts(procs):
    """Two snapshots of the threads of procs ({name: pid}), keyed "member thread-name" (the threads
    of one name in one process summed; sacgate names its own: sg-st-writer, sg-fe-loop...;
    ZeroMQ's are ZMQbg/IO/0): the CPU seconds each used so far, and the times each went to sleep
    and was woken (voluntary context switches, what a hand-off between threads costs on this
    machine)."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu, wakeups = {}, {}
    for name, pid in procs.items():
        try:
            tids = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for tid in tids:
            try:
                st = open("/proc/%d/task/%s/stat" % (pid, tid)).read()
                status = open("/proc/%d/task/%s/status" % (pid, tid)).read()
            except OSError:
                continue
            comm = st[st.index("(") + 1:st.rindex(")")]
            f = st[st.rindex(")") + 2:].split()
            key = "%s %s" % (name, comm)
            cpu[key] = cpu.get(key, 0.0) + (int(f[11]) + int(f[12])) / tick
            m = re.search(r"^voluntary_ctxt_switches:\s*(\d+)", status, re.M)
            wakeups[key] = wakeups.get(key, 0) + (int(m.group(1)) if m else 0)
    return cpu, wakeups


def cpu_by_thread(before, after, top=40):
    """The CPU each (member, thread name) used between two thread_counts CPU snapshots, largest first;
    threads that started in between count from zero."""
    d = {k: round(v - before.get(k, 0.0), 2) for k, v in after.items()}
    return dict(sorted(((k, v) for k, v in d.items() if v > 0), key=lambda kv: -kv[1])[:top])


def commits(target):
    """(group commits, operations in them, the shards' store.sync: "always", "never", "mixed" or
    "none reported", WAL fsyncs, microseconds in them) summed over a sacgate target's shards;
    None for others."""
    if not isinstance(target, (SacgateAll, SacgateCluster)):
        return None
    _, admin_port, token, _ = target_endpoints(target)
    status, body = AdminClient(admin_port, token).request("GET", "/v1/cluster")
    if status != 200:
        return None
    shards = json.loads(body).get("shards") or []
    syncs = {s["sync"] for s in shards if s.get("sync")}
    wal = [s.get("rocksdb") or {} for s in shards]
    return (sum(s.get("batches") or 0 for s in shards), sum(s.get("batchedOps") or 0 for s in shards),
            syncs.pop() if len(syncs) == 1 else ("mixed" if syncs else "none reported"),
            sum(w.get("walSyncs") or 0 for w in wal), sum(w.get("walSyncMicros") or 0 for w in wal))


# Credential kinds a device can connect with, as sacgate-sim arguments (the simulator registers
# each kind's devices on import: PSK keys derived per device, one client certificate's thumbprint).
def credential_kinds(workdir):
    cert, key = os.path.join(workdir, "bench-device.crt"), os.path.join(workdir, "bench-device.key")
    if not os.path.exists(cert):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "2", "-subj", "/CN=bench-device", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
    return [("sas", []), ("psk-tls1.3", ["--psk-derive", "--tls-version", "1.3"]),
            ("psk-tls1.2", ["--psk-derive", "--tls-version", "1.2"]), ("x509", ["--cert", cert, "--key", key])]


def connect_credentials(target, p, outdir, problems, base):
    """The idle-tls connect, once per credential kind: connects/s, connect p50/p99 and the
    server's CPU per connect for SAS tokens, TLS 1.3 and 1.2 pre-shared keys and X.509
    thumbprints."""
    n = min(p.devices or (200 if p.smoke else 5000), target.max_sessions)
    figures, s = {}, None
    for kind, extra in credential_kinds(target.dir):
        args = provision_args(target, n) + ["--prefix", "cred-" + kind.replace(".", ""), "--devices", str(n),
                                            "--rate", "0", "--max-connecting", "64", "--keepalive", "60",
                                            "--hold", "1", "--duration", str(120 + n / 200)] + extra
        s = run_sim(target, args, "%s-%s-%s" % (base, target.name, kind), outdir, timeout=600 + n / 100)
        ses, srv = s["sessions"], s["resources"].get("server") or {}
        check(ses["everOnline"] == n, "%s %s: %d of %d sessions came online" % (target.name, kind, ses["everOnline"], n),
              problems)
        figures[kind + " connectsPerSecond"] = s["rates"]["connectsPerSecond"]
        figures[kind + " connectP50Ms"] = ms(hist(s, "connect"), "p50")
        figures[kind + " connectP99Ms"] = ms(hist(s, "connect"), "p99")
        figures[kind + " serverCpuMicrosPerConnect"] = (round(srv.get("cpuSeconds", 0) * 1e6 / max(1, ses["connects"]))
                                                        if srv else None)
    return figures, s


def telemetry_qos1(target, p, outdir, problems, base):
    devices = p.devices or (5 if p.smoke else 20)
    # The smoke run's 2,000 messages a device keep the server CPU figures (sampled once a second, in
    # clock ticks of 10 ms) measurable: at 200 (0.1 s a run) a target's CPU could read 0 and the
    # round lose its ratios.
    messages = p.messages or (2000 if p.smoke else 5000)
    # The back-end's reads answer at every group commit (--read-min 1, the default), or, as Event
    # Hubs' batch receive and Kafka's fetch do, once --read-min records are there or --read-wait-ms
    # has passed (GET /v1/telemetry min and wait). Mosquitto's subscriber gets each message pushed.
    args = provision_args(target, devices) + ["--prefix", "tele", "--devices", str(devices), "--rate", "0",
                                              "--messages", str(messages), "--window", "16", "--qos", "1",
                                              "--size", "100", "--backend", "--duration", "300",
                                              "--backend-min", str(p.read_min), "--backend-wait-ms", str(p.read_wait_ms)]
    c0 = commits(target)
    procs = server_processes(target)
    t0, w0 = thread_counts(procs)
    s = run_sim(target, args, "%s-%s" % (base, target.name), outdir, timeout=900)
    t1, w1 = thread_counts(procs)
    threads = cpu_by_thread(t0, t1)
    wakeups = {k: v - w0.get(k, 0) for k, v in w1.items() if v > w0.get(k, 0)}
    c1 = commits(target)
    ops_per_commit = round((c1[1] - c0[1]) / max(1, c1[0] - c0[0]), 1) if c0 and c1 else None
    # one WAL fdatasync under this load, as RocksDB timed it (machine.fsync is the same disk idle;
    # the shards' write-ahead of zeros, a MiB at a time, is not in it). None when a shard's
    # counters went back (it restarted during the run).
    wal_sync_us = (round((c1[4] - c0[4]) / (c1[3] - c0[3]), 1)
                   if c0 and c1 and c1[3] > c0[3] and c1[4] >= c0[4] else None)
    if threads:
        print("%s: CPU seconds by thread: %s" % (target.name, ", ".join("%s %.2f" % kv for kv in threads.items())),
              flush=True)
    if wakeups:
        print("%s: wake-ups by thread: %s" % (target.name, ", ".join(
            "%s %d" % kv for kv in sorted(wakeups.items(), key=lambda kv: -kv[1]))), flush=True)
    c = s["counters"]
    srv = s["resources"].get("server") or {}
    check(c["acked"] == devices * messages, "%s: %d of %d messages acknowledged" % (target.name, c["acked"],
                                                                                  devices * messages), problems)
    # what the shards say they did (GET /v1/cluster sync): a durable figure must come from shards
    # that fsync, sacgate-all-nosync's from shards that do not
    sync = c1[2] if c1 else None
    want = "never" if isinstance(target, SacgateAll) and not target.sync else "always"
    check(not c1 or sync == want, "%s: its shards report store.sync %s, not %s" % (target.name, sync, want), problems)
    check(c["telemetryRead"] >= c["acked"],
          "%s: the back-end read %d of %d acknowledged messages" % (target.name, c["telemetryRead"], c["acked"]),
          problems)
    # the publishing phase: from the first PUBLISH to the last PUBACK
    secs = max(1e-3, s["rates"]["publishSeconds"])
    return {
        "devices": devices,
        "messages": devices * messages,
        "ackedPerSecond": round(c["acked"] / secs),
        "readPerSecond": round(c["telemetryRead"] / secs),
        "publishAckP50Ms": ms(hist(s, "publishAck"), "p50"),
        "publishAckP99Ms": ms(hist(s, "publishAck"), "p99"),
        "publishToReadableP50Ms": ms(hist(s, "telemetry"), "p50"),
        "publishToReadableP99Ms": ms(hist(s, "telemetry"), "p99"),
        "serverCpuSecondsPer1000": round(srv.get("cpuSeconds", 0) * 1000 / max(1, c["acked"]), 5) if srv else None,
        "simCpuSecondsPer1000": round(s["resources"]["simulator"]["cpuSeconds"] * 1000 / max(1, c["acked"]), 5),
        "opsPerCommit": ops_per_commit,   # shards' group commits during the run (every operation, reads aside)
        "shardSync": sync,   # store.sync as the shards report it (always: every PUBACK waited for an fdatasync)
        "walSyncAvgUs": wal_sync_us,   # the shards' average WAL fdatasync during the run
        # the back-end's reads that brought records (long polls: about one per group commit and partition)
        "recordsPerRead": round(c["telemetryRead"] / c["telemetryPages"], 1) if c.get("telemetryPages") else None,
        # where the server's CPU went (the largest; not a ratio figure)
        "cpuSecondsByThread": threads or None,
        # how often the server's threads slept and were woken, per 1,000 messages, in all and by
        # thread (on this machine a hand-off's cost is mostly the wake-up: fewer, fuller batches
        # are what make a hop cheap; a count, steadier from run to run than CPU time)
        "serverWakeupsPer1000": round(sum(wakeups.values()) * 1000 / max(1, c["acked"]), 1) if wakeups else None,
        "wakeupsPer1000ByThread": dict(sorted(((k, round(v * 1000 / max(1, c["acked"]), 1))
                                               for k, v in wakeups.items() if v * 1000 >= 0.05 * max(1, c["acked"])),
                                              key=lambda kv: -kv[1])) or None,
    }, s


def c2d_latency(target, p, outdir, problems, base):
    devices = min(p.devices or (50 if p.smoke else 1000), target.max_sessions)
    rate = p.rate or (20 if p.smoke else 200)
    hold = p.hold if p.hold is not None else (5 if p.smoke else 30)
    args = provision_args(target, devices) + ["--prefix", "c2d", "--devices", str(devices), "--rate", "0",
                                              "--subscribe", "--backend", "--command-rate", str(rate),
                                              "--command-size", "100", "--hold", str(hold),
                                              "--duration", str(hold + 120)]
    s = run_sim(target, args, "%s-%s" % (base, target.name), outdir, timeout=hold + 600)
    c = s["counters"]
    check(c["commandsSent"] > 0 and c["commandsReceived"] >= c["commandsAccepted"] * 0.95,
          "%s: %d commands accepted, %d received" % (target.name, c["commandsAccepted"], c["commandsReceived"]),
          problems)
    h = hist(s, "command")
    return {
        "devices": devices,
        "commandsPerSecond": rate,
        "commandsSent": c["commandsSent"],
        "commandsReceived": c["commandsReceived"],
        "rejected": c["commandsRejected"],
        "p50Ms": ms(h, "p50"),
        "p90Ms": ms(h, "p90"),
        "p99Ms": ms(h, "p99"),
        "maxMs": ms(h, "max"),
    }, s


def storm_cpu_per_reconnect(s, st, back):
    """Server CPU (µs) per reconnect of the storm: the 1 s samples of the server's CPU from the
    storm to one sample after the last device was back, over the devices that reconnected."""
    series = s.get("series") or {}
    ts, pcts = series.get("t") or [], series.get("serverCpuPct") or []
    if back is None or not ts or len(pcts) != len(ts):
        return None
    t0, t1 = st.get("atSeconds", 0), st.get("atSeconds", 0) + back + 1.5
    cpu = 0.0
    for i in range(1, len(ts)):
        if t0 < ts[i] <= t1 and pcts[i] is not None:
            cpu += pcts[i] / 100.0 * (ts[i] - ts[i - 1])
    return round(cpu * 1e6 / max(1, st.get("devices", 0)))


def connect_storm(target, p, outdir, problems, base):
    n = min(p.devices or (300 if p.smoke else 10000), target.max_sessions)
    args = provision_args(target, n) + ["--prefix", "storm", "--devices", str(n), "--rate", "0",
                                        "--max-connecting", "64", "--storm-after", "2", "--hold", "2",
                                        "--backoff-min", "500", "--backoff-max", "5000",
                                        "--duration", str(300 + n / 100)]
    if p.tls_resume:
        args += ["--tls-resume", "on"]   # every device offers the ticket of its first session
    s = run_sim(target, args, "%s-%s" % (base, target.name), outdir, timeout=900 + n / 50)
    st = s.get("storm") or {}
    ses = s["sessions"]
    c = s["counters"]
    check(st.get("allBackAfterSeconds") is not None,
          "%s: not every session came back after the storm (%s of %s)" % (target.name, st.get("back"),
                                                                          st.get("devices")), problems)
    check(ses["online"] == n, "%s: %d of %d online at the end" % (target.name, ses["online"], n), problems)
    back = st.get("allBackAfterSeconds")
    return {
        "sessions": n,
        "stormDevices": st.get("devices"),
        "allBackAfterSeconds": back,
        "reconnectsPerSecond": round(st.get("devices", 0) / back) if back else None,
        "tlsResume": bool(p.tls_resume),
        "tlsResumed": c.get("tlsResumed", 0),
        "serverCpuMicrosPerReconnect": storm_cpu_per_reconnect(s, st, back),
        "failedDuringRun": {k: v for k, v in ses["failed"].items() if v},
        "sessionsLost": n - ses["online"],
    }, s


def scale(target, p, outdir, problems, base):
    n = p.devices or default_devices("scale", p)
    hold = p.hold if p.hold is not None else (5 if p.smoke else 600)
    rate = p.rate or (500 if p.smoke else 1500)
    args = provision_args(target, n) + ["--prefix", "scale", "--devices", str(n), "--rate", str(rate),
                                        "--max-connecting", "128", "--keepalive", str(p.keepalive or 120),
                                        "--hold", str(hold), "--duration", str(n / rate * 3 + hold + 600)]
    if p.kill_frontend_after is not None and isinstance(target, SacgateCluster):
        # a reconnect storm the way production gets one: a frontend pod dies and its devices
        # reconnect to the others (the simulator moves a refused device to the next port)
        args += ["--disrupt-after", str(p.kill_frontend_after), "--disrupt-command",
                 "%s kill fe-0 %s" % (CLUSTER_SH, target.dir)]
    s = run_sim(target, args, "%s-%s" % (base, target.name), outdir, timeout=n / rate * 3 + hold + 1800)
    ses = s["sessions"]
    inc, total = server_bytes_per_session(s)
    check(ses["everOnline"] == n, "%s: %d of %d sessions came online" % (target.name, ses["everOnline"], n), problems)
    dis = s.get("disruption") or {}
    # with a frontend killed on purpose, its sessions drop (once): any other drop is a problem
    expected = dis.get("devicesDown") or 0
    check(sum(ses["dropped"].values()) <= expected * 1.05 + (5 if expected else 0),
          "%s: sessions dropped: %s" % (target.name, ses["dropped"]), problems)
    c = s["counters"]
    if dis:
        check(dis.get("allBackAfterSeconds") is not None,
              "%s: not every session came back after fe-0 was killed" % target.name, problems)
    figures = {
        "sessions": n,
        "heldSeconds": hold,
        "keepalive": p.keepalive or 120,
        "peakOnline": ses["peakOnline"],
        "onlineAtEnd": ses["online"],
        "dropped": {k: v for k, v in ses["dropped"].items() if v},
        "failed": {k: v for k, v in ses["failed"].items() if v},
        "pings": c["pings"],
        "connectsPerSecond": s["rates"]["connectsPerSecond"],
        "connectP99Ms": ms(hist(s, "connect"), "p99"),
        "serverBytesPerSession": inc,
        "serverTotalBytesPerSession": total,
        "serverRssTotalBytesPerSession": server_rss_per_session(s),
        "serverProcesses": (s["resources"].get("server") or {}).get("processes"),
        "simBytesPerSession": sim_bytes_per_session(s),
        "simProcesses": s["resources"]["simulator"]["processes"],
    }
    if dis:
        figures.update({"frontendKilledAfterSeconds": dis.get("atSeconds"),
                        "sessionsOnKilledFrontend": dis.get("devicesDown"),
                        "allBackAfterKillSeconds": dis.get("allBackAfterSeconds")})
    return figures, s


def shard_restart(target, p, outdir, problems, base):
    """A shard holding many registered devices and live sessions is killed and started again while
    its sessions stay connected to the frontends: how long until it is ready (/readyz), and does
    any session drop (none should: an idle session has nothing waiting at the shard)."""
    registered = p.registered or (3000 if p.smoke else 1000000)
    n = p.devices or default_devices("shard-restart", p)
    if registered < n:
        raise BenchError("--registered must be at least --devices")
    rate = p.rate or (500 if p.smoke else 1500)
    hold = p.hold if p.hold is not None else (5 if p.smoke else 30)
    # every device registered (one simulator device connects, the import is what counts)
    imp = run_sim(target, ["--provision", "import", "--prefix", "rs", "--devices", str(registered), "--rate", "1",
                           "--duration", "1", "--processes", "1"], "%s-%s-import" % (base, target.name), outdir,
                  timeout=registered / 20000 + 600)
    out = os.path.join(target.dir, "restart.json")
    args = ["--prefix", "rs", "--devices", str(n), "--rate", str(rate), "--max-connecting", "128", "--keepalive", "120",
            "--hold", str(hold), "--duration", str(n / rate * 3 + hold + 900), "--disrupt-after", "5",
            "--disrupt-command", "%s %s store-0 %s" % (os.path.join(ROOT, "bench", "shard-restart.sh"), target.dir, out)]
    s = run_sim(target, args, "%s-%s" % (base, target.name), outdir, timeout=n / rate * 3 + hold + 1800)
    ses = s["sessions"]
    check(ses["everOnline"] == n, "%s: %d of %d sessions came online" % (target.name, ses["everOnline"], n), problems)
    if not os.path.exists(out):
        raise BenchError("the shard restart did not report (see %s)" % target.dir)
    with open(out) as f:
        r = json.load(f)
    dis = s.get("disruption") or {}
    check(sum(ses["dropped"].values()) == 0, "%s: sessions dropped: %s" % (target.name, ses["dropped"]), problems)
    if target.shards == 1:
        check(r["sessions"] == n, "%s: the restarted shard holds %d sessions, not %d" % (target.name, r["sessions"], n),
              problems)
    return {
        "shards": target.shards,
        "registeredDevices": registered,
        "importPerSecond": round(registered / imp["_wall"]) if imp.get("_wall") else None,
        "sessions": n,
        "sessionsOnRestartedShard": r["sessions"],
        "readySeconds": round(r["readyMs"] / 1000.0, 3),
        "dropped": {k: v for k, v in ses["dropped"].items() if v},
        "disruptionStatus": dis.get("status"),
    }, s


def shard_stall(target, p, outdir, problems, base):
    """Every shard is frozen (SIGSTOP) for --stall seconds while many devices publish QoS 1 as fast
    as they may: with credit (cluster.credit, --credit), the frontends stop reading those devices
    and hold their PUBACKs; nothing is refused, dropped or disconnected, and what waits in the
    router and the frontends stays bounded. Reports how much their memory grew during the stall
    and what the devices saw."""
    devices = p.devices or (50 if p.smoke else 4000)
    messages = p.messages or (40 if p.smoke else 150)   # at 10 a second each: publishing outlasts the stall
    stall = p.stall or (1 if p.smoke else 5)
    out = os.path.join(target.dir, "stall.json")
    args = provision_args(target, devices) + [
        "--prefix", "stall", "--devices", str(devices), "--rate", "0", "--publish-rate", "10",
        "--messages", str(messages), "--window", "16",
        "--qos", "1", "--size", "1000", "--duration", "900", "--disrupt-after", "1",
        "--disrupt-command", "%s %s %s %s" % (os.path.join(ROOT, "bench", "shard-stall.py"), target.dir, stall, out)]
    s = run_sim(target, args, "%s-%s" % (base, target.name), outdir, timeout=1800)
    c = s["counters"]
    ses = s["sessions"]
    check(c["acked"] == devices * messages, "%s: %d of %d messages acknowledged" % (target.name, c["acked"],
                                                                                  devices * messages), problems)
    check(sum(ses["dropped"].values()) == 0, "%s: sessions dropped: %s" % (target.name, ses["dropped"]), problems)
    if not os.path.exists(out):
        raise BenchError("the stall did not report (see %s)" % target.dir)
    with open(out) as f:
        r = json.load(f)
    _, admin_port, token, _ = target_endpoints(target)
    status, body = AdminClient(admin_port, token).request("GET", "/metrics")
    metrics = body.decode() if isinstance(body, bytes) else (body or "")

    def total(name):
        return sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines() if l.startswith(name + "{"))
    return {
        "devices": devices,
        "messages": devices * messages,
        "credit": int(target.env.get("SACGATE_CLUSTER_CREDIT", "1048576")),
        "stallSeconds": round(r["stallMs"] / 1000.0, 2),
        "routerRssGrowthBytes": r["routerRssPeak"] - r["routerRssBefore"],
        "frontendsRssGrowthBytes": r["frontendsRssPeak"] - r["frontendsRssBefore"],
        "publishAckP99Ms": ms(hist(s, "publishAck"), "p99"),
        "publishAckMaxMs": ms(hist(s, "publishAck"), "max"),
        "dropped": {k: v for k, v in ses["dropped"].items() if v},
        "frontendCreditWaits": total("sacgate_frontend_credit_waits_total"),
        "shardRefusedBusy": total("sacgate_shard_refused_busy_total"),
        "shardDroppedFrames": total("sacgate_shard_dropped_frames_total"),
    }, s


# ---------- revocation: our own device connections, so each socket's close is timed ----------

def percentile(values, q):
    """Nearest-rank percentile of a list (None when empty)."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(q / 100.0 * len(v)) - 1))]


def sas_token(device_id, key_b64, ttl=7200, host="localhost"):
    se = int(time.time() + ttl)
    sr = urllib.parse.quote("%s/devices/%s" % (host, device_id), safe="")
    mac = hmac.new(base64.b64decode(key_b64), ("%s\n%d" % (sr, se)).encode(), hashlib.sha256)
    return "SharedAccessSignature sr=%s&sig=%s&se=%d" % (sr, urllib.parse.quote(base64.b64encode(mac.digest()).decode(),
                                                                              safe=""), se)


def mqtt_connect_packet(device_id, password, keepalive):
    def s(x):
        b = x.encode()
        return struct.pack("!H", len(b)) + b
    body = s("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", keepalive) + s(device_id)
    body += s("localhost/%s/?api-version=2021-04-12" % device_id) + s(password)
    n, rl = len(body), b""
    while True:
        d, n = n % 128, n // 128
        rl += bytes([d | (0x80 if n else 0)])
        if not n:
            break
    return bytes([0x10]) + rl + body


class AdminClient:
    """One keep-alive HTTP connection to the admin endpoint (one per revoking thread)."""

    def __init__(self, port, token):
        self.port, self.token = port, token
        self.conn = None

    def request(self, method, path, body=None, headers=None, timeout=60):
        h = {"Authorization": "Bearer " + self.token}
        h.update(headers or {})
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise


def target_endpoints(target):
    """(MQTT ports of every frontend, admin port, admin token, CA file) of a sacgate target."""
    with open(os.path.join(target.dir, "admin.token")) as f:
        token = f.read().strip()
    if isinstance(target, SacgateCluster):
        env = {}
        with open(os.path.join(target.dir, "ports.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                env[k] = v.strip('"')
        return [int(x) for x in env["MQTT_PORTS"].split()], int(env["ADMIN_PORT"]), token, os.path.join(target.dir,
                                                                                                        "ca.crt")
    return [target.mqtt], target.admin, token, os.path.join(target.dir, "ca.crt")


def ws_upgrade(sock):
    """The WebSocket upgrade on a TLS socket (the ws port); the 101 answer read."""
    sock.sendall(b"GET /$iothub/websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
                 + base64.b64encode(secrets.token_bytes(16)) + b"\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise BenchError("the connection closed during the WebSocket upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101 "):
        raise BenchError("WebSocket upgrade refused: %r" % head[:200])


def ws_frame(payload):
    """A masked binary frame (payloads under 64 KiB)."""
    key = secrets.token_bytes(4)
    n = len(payload)
    head = bytes([0x82, 0x80 | n]) if n < 126 else bytes([0x82, 0x80 | 126]) + struct.pack("!H", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def hold_device(port, cafile, device_id, key, keepalive, ws=False):
    """A TLS connection with an accepted CONNECT (blocking set-up), returned non-blocking.
    ws: MQTT over WebSocket on the ws port (the CONNECT in one frame, the CONNACK in another)."""
    ctx = ssl.create_default_context(cafile=cafile)
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
        connect = mqtt_connect_packet(device_id, sas_token(device_id, key), keepalive)
        if ws:
            ws_upgrade(sock)
            connect = ws_frame(connect)
        sock.sendall(connect)
        ack = b""
        want = 6 if ws else 4
        while len(ack) < want:
            chunk = sock.recv(want - len(ack))
            if not chunk:
                raise BenchError("%s: the connection closed before CONNACK" % device_id)
            ack += chunk
        if ws:
            if ack[:2] != b"\x82\x04":
                raise BenchError("%s: not a 4-byte binary frame: %r" % (device_id, ack))
            ack = ack[2:]
        if ack[0] != 0x20 or ack[3] != 0:
            raise BenchError("%s: CONNACK %r" % (device_id, ack))
    except Exception:
        raw.close()
        raise
    sock.setblocking(False)
    return sock


def connack_code(port, cafile, device_id, key):
    """The CONNACK return code a fresh CONNECT gets (None: closed without one)."""
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(mqtt_connect_packet(device_id, sas_token(device_id, key), 60))
            ack = b""
            while len(ack) < 4:
                chunk = sock.recv(4 - len(ack))
                if not chunk:
                    return None
                ack += chunk
            return ack[3]


def import_devices(adm, prefix, n):
    """n SAS devices registered through the import API: [(id, primary key)]."""
    devices = [("%s-%06d" % (prefix, i), base64.b64encode(secrets.token_bytes(32)).decode()) for i in range(n)]
    body = "".join(json.dumps({"deviceId": d, "auth": {"type": "sas", "primaryKey": k}}) + "\n" for d, k in devices)
    status, answer = adm.request("POST", "/v1/devices:import", body=body.encode(),
                                 headers={"Content-Type": "application/x-ndjson"}, timeout=600)
    if status != 200 or json.loads(answer).get("failed"):
        raise BenchError("import failed: %d %s" % (status, answer[:300]))
    return devices


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def idle_ws(target, p, outdir, problems, base):
    """Server memory per idle session over WebSocket against plain MQTT/TLS, in the same process:
    n devices connect on the MQTT port and are held (RSS added), closed, then n other devices
    connect on the ws port (upgrade, CONNECT in a frame) and are held on top of the first ones
    (closing them first would let the second batch reuse their freed heap). RSS is read after the
    frontend's heap trim (every 5 s after accepts)."""
    if not isinstance(target, SacgateAll):
        raise BenchError("idle-ws measures one sacgate all process")
    n = p.devices or (200 if p.smoke else 2000)
    _, admin_port, token, cafile = target_endpoints(target)
    adm = AdminClient(admin_port, token)
    figures = {"sessions": n}
    held = []
    for kind, port, ws in (("tls", target.mqtt, False), ("ws", target.ws, True)):
        devices = import_devices(adm, "idle%s-%s" % (kind, secrets.token_hex(3)), n)
        time.sleep(2 if p.smoke else 6)   # the import's memory settles
        before = rss_bytes(target.proc.pid)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            socks = list(pool.map(lambda d: hold_device(port, cafile, d[0], d[1], 1200, ws=ws), devices))
        time.sleep(p.hold if p.hold is not None else 6 if p.smoke else 12)   # past a heap trim (every 5 s)
        after = rss_bytes(target.proc.pid)
        held += socks
        figures["%sServerBytesPerSession" % kind] = round((after - before) / n)
        log("idle-ws: %d %s sessions added %.1f KB each" % (n, kind, (after - before) / n / 1024))
    for s in held:
        s.close()
    report = os.path.join(outdir, "%s-%s.json" % (base, target.name))
    with open(report, "w") as f:
        json.dump({"figures": figures}, f, indent=0)
    print("idle-ws %s: %d sessions, server RSS per idle session %.1f KB over MQTT/TLS, %.1f KB over WebSocket"
          % (target.name, n, figures["tlsServerBytesPerSession"] / 1024, figures["wsServerBytesPerSession"] / 1024),
          flush=True)
    return figures, {"_report": report}


def call_in_parallel(parallel, count, admin_port, token, work):
    """work(client, i) for i in 0..count-1 from `parallel` threads, each with its own keep-alive
    AdminClient; returns the seconds it all took."""
    todo, lock = iter(range(count)), threading.Lock()

    def worker():
        c = AdminClient(admin_port, token)
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            work(c, i)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return time.monotonic() - t0


def new_devices(prefix, n):
    """n (id, primary key, secondary key) with fresh random keys."""
    return [("%s-%06d" % (prefix, i), base64.b64encode(secrets.token_bytes(32)).decode(),
             base64.b64encode(secrets.token_bytes(32)).decode()) for i in range(n)]


def register_devices(adm, devices):
    """Register (id, primary, secondary) SAS devices with one streamed import."""
    body = "".join(json.dumps({"deviceId": d, "auth": {"type": "sas", "primaryKey": k1, "secondaryKey": k2}}) + "\n"
                   for d, k1, k2 in devices)
    status, answer = adm.request("POST", "/v1/devices:import", body=body.encode(),
                                 headers={"Content-Type": "application/x-ndjson"}, timeout=600)
    imported = json.loads(answer) if status == 200 else {}
    if status != 200 or imported.get("failed"):
        raise BenchError("import failed: %d %s" % (status, answer[:300]))


def method_rtt(target, p, outdir, problems, base):
    """Direct method round trip over HTTP: N paho-mqtt devices (spread over every frontend) answer
    every call at once with its payload; `parallel` callers, each on its own keep-alive HTTP
    connection, POST /v1/devices/{id}/methods/echo to devices in turn, and each call is timed
    from sending the request to reading the 200 (admin -> router -> shard -> frontend -> device
    and back). Reports calls per second and latency percentiles."""
    if target.kind != "sacgate":
        raise BenchError("method-rtt needs a sacgate target (Mosquitto has no HTTP method API)")
    try:
        import paho.mqtt.client as mqtt   # only this scenario needs it
    except ImportError:
        raise BenchError("method-rtt needs paho-mqtt (Debian's python3-paho-mqtt: run with /usr/bin/python3)")
    n = p.devices or default_devices("method-rtt", p)
    calls = p.messages or (200 if p.smoke else 5000)
    parallel = p.parallel or 8
    ports, admin_port, token, cafile = target_endpoints(target)
    devices = new_devices("mth-%s" % secrets.token_hex(3), n)
    register_devices(AdminClient(admin_port, token), devices)
    clients, ready = [], threading.Semaphore(0)

    def answer(client, userdata, msg):
        rid = urllib.parse.parse_qs(msg.topic.partition("/?")[2]).get("$rid", [""])[0]
        client.publish("$iothub/methods/res/200/?$rid=%s" % rid, msg.payload, 0)

    for i, (d, k1, _) in enumerate(devices):
        c = mqtt.Client(client_id=d, clean_session=True, protocol=mqtt.MQTTv311)
        c.username_pw_set("localhost/%s/?api-version=2021-04-12" % d, sas_token(d, k1))
        c.tls_set(ca_certs=cafile)
        c.on_message = answer
        c.on_subscribe = lambda client, userdata, mid, granted: ready.release()
        c.on_connect = lambda client, userdata, flags, rc: client.subscribe("$iothub/methods/POST/#", 0)
        c.connect("localhost", ports[i % len(ports)], 120)
        c.loop_start()
        clients.append(c)
    for _ in range(n):
        if not ready.acquire(timeout=60):
            raise BenchError("not every device subscribed to methods within 60 s")
    lat, statuses, lock = [], {}, threading.Lock()
    payload = json.dumps({"payload": {"n": 1, "data": "x" * 64}, "responseTimeoutSeconds": 30}).encode()

    def one_call(c, k):
        path = "/v1/devices/%s/methods/echo" % urllib.parse.quote(devices[k % n][0], safe="")
        t = time.monotonic()
        status, _ = c.request("POST", path, body=payload, headers={"Content-Type": "application/json"})
        dt = (time.monotonic() - t) * 1000
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                lat.append(dt)

    elapsed = call_in_parallel(parallel, calls, admin_port, token, one_call)
    for c in clients:
        c.loop_stop()
        c.disconnect()
    check(statuses.get(200, 0) == calls, "%s: calls answered %r, expected %d x 200" % (target.name, statuses, calls),
          problems)
    figures = {"devices": n, "frontends": len(ports), "calls": calls, "parallelCalls": parallel,
               "callsPerSecond": round(calls / elapsed) if elapsed > 0 else None,
               "p50Ms": round(percentile(lat, 50), 3) if lat else None,
               "p90Ms": round(percentile(lat, 90), 3) if lat else None,
               "p99Ms": round(percentile(lat, 99), 3) if lat else None,
               "maxMs": round(max(lat), 3) if lat else None, "statuses": {str(k): v for k, v in statuses.items()}}
    print("method-rtt %s: %d calls, %s/s, round trip p50 %s ms, p90 %s ms, p99 %s ms, max %s ms (%d devices, %d "
          "frontends, %d callers)" % (target.name, calls, figures["callsPerSecond"], figures["p50Ms"], figures["p90Ms"],
                                      figures["p99Ms"], figures["maxMs"], n, len(ports), parallel), flush=True)
    report = os.path.join(outdir, "%s-%s.json" % (base, target.name))
    with open(report, "w") as f:
        json.dump({"figures": figures, "roundTripMs": [round(v, 3) for v in lat]}, f, indent=0)
    return figures, {"_report": report}


def revocation(target, p, outdir, problems, base):
    """N devices hold TLS connections spread over every frontend; the bench revokes each one over
    HTTP, several calls in parallel (every other device disabled with PUT status=disabled, the
    others DELETEd), and times each device from sending its HTTP request to the moment its socket
    reads EOF (the selector thread notes time.monotonic() at the close). SPEC 5: p99 under 1 s."""
    if target.kind != "sacgate":
        raise BenchError("revocation needs a sacgate target (Mosquitto has no device registry)")
    n = p.devices or default_devices("revocation", p)
    parallel = p.parallel or 16
    ports, admin_port, token, cafile = target_endpoints(target)
    prefix = "rev-%s" % secrets.token_hex(3)
    devices = new_devices(prefix, n)
    register_devices(AdminClient(admin_port, token), devices)

    # connect: blocking set-ups on a few threads, each device to the next frontend in turn
    t0 = time.monotonic()
    socks = [None] * n
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futs = {pool.submit(hold_device, ports[i % len(ports)], cafile, d, k1, 1200): i
                for i, (d, k1, _) in enumerate(devices)}
        for f in concurrent.futures.as_completed(futs):
            socks[futs[f]] = f.result()
    connect_s = time.monotonic() - t0
    log("revocation: %d devices connected over %d frontend(s) in %.1f s" % (n, len(ports), connect_s))

    closed_at = [None] * n
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    done = threading.Event()

    def watch():
        left = n
        while left and not done.is_set():
            for key, _ in sel.select(0.2):
                now = time.monotonic()
                i = key.data
                try:
                    data = key.fileobj.recv(4096)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    continue
                except (OSError, ssl.SSLError):
                    data = b""
                if data:
                    continue   # nothing is expected (no subscription, keep-alive 1200 s)
                closed_at[i] = now
                sel.unregister(key.fileobj)
                key.fileobj.close()
                left -= 1

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(1)
    early = [devices[i][0] for i in range(n) if closed_at[i] is not None]
    check(not early, "%s: %d sessions closed before any revocation" % (target.name, len(early)), problems)

    # revoke: `parallel` callers, each on its own keep-alive HTTP connection
    sent_at, answered_at, statuses = [None] * n, [None] * n, [None] * n
    kinds = ["disable" if i % 2 == 0 else "delete" for i in range(n)]

    def revoke(c, i):
        d, k1, k2 = devices[i]
        path = "/v1/devices/" + urllib.parse.quote(d, safe="")
        if kinds[i] == "disable":
            req = ("PUT", json.dumps({"status": "disabled", "auth": {"type": "sas", "primaryKey": k1,
                                                                     "secondaryKey": k2}}).encode())
        else:
            req = ("DELETE", None)
        sent_at[i] = time.monotonic()
        statuses[i], _ = c.request(req[0], path, body=req[1],
                                   headers={"Content-Type": "application/json"} if req[1] else None)
        answered_at[i] = time.monotonic()

    revoke_s = call_in_parallel(parallel, n, admin_port, token, revoke)
    end = time.monotonic() + 30
    while time.monotonic() < end and any(c is None for c in closed_at):
        time.sleep(0.1)
    done.set()
    watcher.join(5)
    not_closed = [devices[i][0] for i in range(n) if closed_at[i] is None]
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
    bad = [(devices[i][0], statuses[i]) for i in range(n)
           if statuses[i] != (200 if kinds[i] == "disable" else 204)]
    check(not bad, "%s: %d revocations answered unexpectedly, e.g. %s" % (target.name, len(bad), bad[:3]), problems)
    check(not not_closed, "%s: %d sessions still open 30 s after the last revocation, e.g. %s"
          % (target.name, len(not_closed), not_closed[:3]), problems)
    # the revoked devices cannot come back, on any frontend
    for i in range(min(n, 4)):
        rc = connack_code(ports[(i + 1) % len(ports)], cafile, devices[i][0], devices[i][1])
        check(rc == 5, "%s: %s (%s) reconnected after revocation: CONNACK %r" % (target.name, devices[i][0], kinds[i],
                                                                                rc), problems)

    def ms_list(kind=None):
        return [(closed_at[i] - sent_at[i]) * 1000 for i in range(n)
                if closed_at[i] is not None and sent_at[i] is not None and (kind is None or kinds[i] == kind)]

    lat, http_lat = ms_list(), [(answered_at[i] - sent_at[i]) * 1000 for i in range(n) if answered_at[i]]

    def r3(v):
        return None if v is None else round(v, 3)

    figures = {
        "devices": n,
        "frontends": len(ports),
        "parallelCalls": parallel,
        "connectSeconds": round(connect_s, 2),
        "revocationsPerSecond": round(n / revoke_s) if revoke_s > 0 else None,
        "closeP50Ms": r3(percentile(lat, 50)),
        "closeP90Ms": r3(percentile(lat, 90)),
        "closeP99Ms": r3(percentile(lat, 99)),
        "closeMaxMs": r3(max(lat) if lat else None),
        "disableCloseP50Ms": r3(percentile(ms_list("disable"), 50)),
        "disableCloseP99Ms": r3(percentile(ms_list("disable"), 99)),
        "deleteCloseP50Ms": r3(percentile(ms_list("delete"), 50)),
        "deleteCloseP99Ms": r3(percentile(ms_list("delete"), 99)),
        "httpAnswerP50Ms": r3(percentile(http_lat, 50)),
        "httpAnswerP99Ms": r3(percentile(http_lat, 99)),
        "notClosed": len(not_closed),
    }
    report = os.path.join(outdir, "%s-%s.json" % (base, target.name))
    with open(report, "w") as f:
        json.dump({"figures": figures, "closeMs": {devices[i][0]: r3(v) for i, v in enumerate(
            [(closed_at[i] - sent_at[i]) * 1000 if closed_at[i] and sent_at[i] else None for i in range(n)])},
            "kind": dict(zip((d for d, _, _ in devices), kinds))}, f, indent=0)
    print("revocation %s: close after the HTTP call p50 %s ms, p99 %s ms, max %s ms (%d devices, %d frontends)"
          % (target.name, figures["closeP50Ms"], figures["closeP99Ms"], figures["closeMaxMs"], n, len(ports)),
          flush=True)
    return figures, {"_report": report}


def telemetry_probe(port, cafile, device_id, key, stop, out):
    """One device publishing QoS 1 telemetry back to back until stop is set: (monotonic send
    time, PUBACK latency in ms) of each message appended to out."""
    sock = hold_device(port, cafile, device_id, key, 600)
    sock.setblocking(True)
    sock.settimeout(60)
    topic = ("devices/%s/messages/events/" % device_id).encode()
    pid = 0
    try:
        while not stop.is_set():
            pid = pid % 65535 + 1
            body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", pid) + b"x" * 100
            t0 = time.monotonic()
            sock.sendall(bytes([0x32, len(body) & 0x7F | 0x80, len(body) >> 7]) + body)
            ack = b""
            while len(ack) < 4:
                chunk = sock.recv(4 - len(ack))
                if not chunk:
                    raise BenchError("%s: closed while waiting for PUBACK" % device_id)
                ack += chunk
            if ack[0] != 0x40 or struct.unpack("!H", ack[2:4])[0] != pid:
                raise BenchError("%s: expected PUBACK %d, got %r" % (device_id, pid, ack))
            out.append((t0, (time.monotonic() - t0) * 1000))
            time.sleep(0.01)
    finally:
        sock.close()


def import_tagged(adm, tag, n):
    """n devices "<tag>-NNNNNNN" tagged fleet=<tag> (keys generated), imported 50,000 a request."""
    for start in range(0, n, 50000):
        body = "".join(json.dumps({"deviceId": "%s-%07d" % (tag, i), "tags": {"fleet": tag}}) + "\n"
                       for i in range(start, min(n, start + 50000)))
        status, answer = adm.request("POST", "/v1/devices:import", body=body.encode(),
                                     headers={"Content-Type": "application/x-ndjson"}, timeout=600)
        if status != 200 or json.loads(answer).get("failed"):
            raise BenchError("import failed: %d %s" % (status, answer[:300]))


def start_probe(adm, tag, port, cafile):
    """A device "<tag>-probe" publishing QoS 1 telemetry back to back (telemetry_probe) from now
    on, after 5 s of baseline: (stop event, [(send time, PUBACK ms)], thread)."""
    probe = "%s-probe" % tag
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    status, answer = adm.request("PUT", "/v1/devices/" + probe, body=json.dumps(
        {"auth": {"type": "sas", "primaryKey": key, "secondaryKey": key}}).encode(), timeout=60)
    if status != 201:
        raise BenchError("probe device: %d %s" % (status, answer[:200]))
    stop, lat = threading.Event(), []
    th = threading.Thread(target=telemetry_probe, args=(port, cafile, probe, key, stop, lat), daemon=True)
    th.start()
    time.sleep(5)   # the baseline
    return stop, lat, th


def notification_fanout(target, p, outdir, problems, base):
    """N devices registered with one tag (POST /v1/devices:import), then one notification to all
    of them (POST /v1/notifications) while one device publishes QoS 1 telemetry back to back
    (10 ms apart): the time to the 202 (which comes once every shard has every copy queued and
    durable), the copies counted, and the telemetry PUBACK latency before and during the fan-out."""
    if target.kind != "sacgate":
        raise BenchError("notification-fanout needs a sacgate target (Mosquitto has no registry)")
    n = p.devices or default_devices("notification-fanout", p)
    ports, admin_port, token, cafile = target_endpoints(target)
    tag = "nf-%s" % secrets.token_hex(3)
    adm = AdminClient(admin_port, token)
    t0 = time.monotonic()
    import_tagged(adm, tag, n)
    log("notification-fanout: %d devices imported in %.1f s" % (n, time.monotonic() - t0))
    stop, lat, th = start_probe(adm, tag, ports[0], cafile)
    sent = time.monotonic()
    status, answer = adm.request("POST", "/v1/notifications", body=json.dumps(
        {"tags": {"fleet": tag}, "payload": "bench", "ttlSeconds": 3600}).encode(), timeout=900)
    done = time.monotonic()
    time.sleep(2)
    stop.set()
    th.join(60)
    if status != 202:
        raise BenchError("notification: %d %s" % (status, answer[:300]))
    res = json.loads(answer)
    check(res["targets"] == n, "%s: %d of %d devices got the notification" % (target.name, res["targets"], n),
          problems)
    before = [ms_ for t, ms_ in lat if t < sent]
    during = [ms_ for t, ms_ in lat if sent <= t <= done]
    r3 = lambda v: None if v is None else round(v, 3)  # noqa: E731
    figures = {
        "devices": n,
        "targets": res["targets"],
        "rejected": res["rejected"],
        "postTo202Seconds": round(done - sent, 3),
        "copiesPerSecond": round(res["targets"] / max(1e-3, done - sent)),
        "telemetryBeforeCount": len(before),
        "telemetryBeforeP50Ms": r3(percentile(before, 50)),
        "telemetryBeforeP99Ms": r3(percentile(before, 99)),
        "telemetryDuringCount": len(during),
        "telemetryDuringP50Ms": r3(percentile(during, 50)),
        "telemetryDuringP99Ms": r3(percentile(during, 99)),
        "telemetryDuringMaxMs": r3(max(during) if during else None),
    }
    report = os.path.join(outdir, "%s-%s.json" % (base, target.name))
    with open(report, "w") as f:
        json.dump({"figures": figures}, f, indent=0)
    print("notification-fanout %s: %d copies durable %.2f s after the POST; telemetry PUBACK p99 %s ms before, %s ms "
          "during" % (target.name, res["targets"], done - sent, figures["telemetryBeforeP99Ms"],
                      figures["telemetryDuringP99Ms"]), flush=True)
    return figures, {"_report": report}


def enqueue_worker(admin_port, token, device_ids, per, threads):
    """One process of c2d-enqueue: `threads` keep-alive connections, each POSTing `per` messages
    to each of its share of device_ids (round-robin). Returns ({status: count}, [latency ms])."""
    statuses, lat, lock = {}, [], threading.Lock()
    body = json.dumps({"payload": "x" * 100}).encode()

    def run(ids):
        adm = AdminClient(admin_port, token)
        mine_s, mine_l = {}, []
        for _ in range(per):
            for did in ids:
                t0 = time.monotonic()
                status, _ = adm.request("POST", "/v1/devices/%s/messages" % did, body=body,
                                        headers={"Content-Type": "application/json"})
                mine_l.append((time.monotonic() - t0) * 1000)
                mine_s[status] = mine_s.get(status, 0) + 1
        with lock:
            lat.extend(mine_l)
            for k, v in mine_s.items():
                statuses[k] = statuses.get(k, 0) + v

    ths = [threading.Thread(target=run, args=(device_ids[i::threads],)) for i in range(threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    return statuses, lat


def c2d_enqueue(target, p, outdir, problems, base):
    """Enqueue rate over HTTP: --parallel keep-alive connections (default 32, spread over 4 client
    processes so the client's GIL is not the limit) POST /v1/devices/{id}/messages (100-byte
    payload) round-robin over --devices offline devices (default 1000), --messages each (default
    40, under the 50-message queue limit). Every 201 means durable (fsynced group commit)."""
    if target.kind != "sacgate":
        raise BenchError("c2d-enqueue needs a sacgate target (HTTP enqueue)")
    n = p.devices or (50 if p.smoke else 1000)
    per = p.messages or (5 if p.smoke else 40)
    par = p.parallel or (8 if p.smoke else 32)
    procs = min(4, par)
    _, admin_port, token, _ = target_endpoints(target)
    devices = import_devices(AdminClient(admin_port, token), "enq-%s" % secrets.token_hex(3), n)
    ids = [d for d, _ in devices]
    statuses, lat = {}, []
    t0 = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(procs) as ex:
        futs = [ex.submit(enqueue_worker, admin_port, token, ids[i::procs], per, par // procs) for i in range(procs)]
        for f in futs:
            st, la = f.result()
            lat += la
            for k, v in st.items():
                statuses[k] = statuses.get(k, 0) + v
    secs = time.monotonic() - t0
    accepted = statuses.get(201, 0)
    check(accepted == n * per, "%s: %d of %d messages accepted (%r)" % (target.name, accepted, n * per, statuses),
          problems)
    r3 = lambda v: None if v is None else round(v, 3)  # noqa: E731
    figures = {"devices": n, "messagesPerDevice": per, "connections": par, "clientProcesses": procs,
               "accepted": accepted, "statuses": {str(k): v for k, v in sorted(statuses.items())},
               "seconds": round(secs, 3), "acceptedPerSecond": round(accepted / max(secs, 1e-3)),
               "requestP50Ms": r3(percentile(lat, 50)), "requestP99Ms": r3(percentile(lat, 99)),
               "requestMaxMs": r3(max(lat) if lat else None)}
    report = os.path.join(outdir, "%s-%s.json" % (base, target.name))
    with open(report, "w") as f:
        json.dump({"figures": figures}, f, indent=0)
    print("c2d-enqueue %s: %d accepted in %.1f s = %d/s, request p50 %s ms p99 %s ms" % (
        target.name, accepted, secs, figures["acceptedPerSecond"], figures["requestP50Ms"], figures["requestP99Ms"]),
        flush=True)
    return figures, {"_report": report}


def feedback_total(adm):
    """Feedback records written so far over every shard (each shard's feedbackLast + 1)."""
    status, answer = adm.request("GET", "/v1/cluster")
    if status != 200:
        raise BenchError("GET /v1/cluster: %d" % status)
    return sum(s.get("feedbackLast", -1) + 1 for s in json.loads(answer)["shards"])


def c2d_expiry(target, p, outdir, problems, base):
    """Expiry at scale: --devices offline devices (default 20,000) get --messages queued messages
    each (default 50: 1,000,000 in all), enqueued fast as that many notifications (POST
    /v1/notifications, one copy per device, ack negative) whose TTLs all end at the same second,
    --ttl seconds (default 120) after the first POST. Measured: how long after that second every
    copy is dead-lettered (counted by its `expired` feedback record), the expiry rate, and the
    PUBACK latency of one device publishing QoS 1 telemetry back to back (10 ms apart) before,
    during the enqueueing and during the expiry."""
    if target.kind != "sacgate":
        raise BenchError("c2d-expiry needs a sacgate target")
    n = p.devices or (200 if p.smoke else 20000)
    per = p.messages or (5 if p.smoke else 50)
    lead = p.ttl or (10 if p.smoke else 120)
    ports, admin_port, token, cafile = target_endpoints(target)
    adm = AdminClient(admin_port, token)
    tag = "ex-%s" % secrets.token_hex(3)
    import_tagged(adm, tag, n)
    stop, lat, th = start_probe(adm, tag, ports[0], cafile)
    fb0 = feedback_total(adm)
    t_enq = time.monotonic()
    expire_at = time.time() + lead   # wall clock: TTLs are whole seconds from each POST
    targets = 0
    for i in range(per):
        ttl = max(1, int(round(expire_at - time.time())))
        status, answer = adm.request("POST", "/v1/notifications", body=json.dumps(
            {"tags": {"fleet": tag}, "payload": "expiring-%d" % i, "ttlSeconds": ttl, "ack": "negative"}).encode(),
            timeout=900)
        if status != 202:
            raise BenchError("notification %d: %d %s" % (i, status, answer[:300]))
        targets += json.loads(answer)["targets"]
    t_enq_done = time.monotonic()
    enq_secs = t_enq_done - t_enq
    check(targets == n * per, "%s: %d of %d copies queued" % (target.name, targets, n * per), problems)
    left = expire_at - time.time()
    check(left > 0, "%s: enqueueing took %.0f s, past the expiry (raise --ttl)" % (target.name, enq_secs), problems)
    log("c2d-expiry: %d copies queued in %.1f s; they expire in %.1f s" % (targets, enq_secs, left))
    t_exp = time.monotonic() + max(0.0, left)
    first = done = None
    deadline = t_exp + 3600
    while time.monotonic() < deadline:
        got = feedback_total(adm) - fb0
        now = time.monotonic()
        if got > 0 and first is None:
            first = now
        if got >= targets:
            done = now
            break
        time.sleep(0.2)
    time.sleep(2)
    stop.set()
    th.join(60)
    check(done is not None, "%s: not every copy was dead-lettered within an hour" % target.name, problems)
    r3 = lambda v: None if v is None else round(v, 3)  # noqa: E731
    phases = {"Before": [m for t, m in lat if t < t_enq], "Enqueue": [m for t, m in lat if t_enq <= t < t_enq_done],
              "Expiry": [m for t, m in lat if t_exp <= t <= (done or t_exp)]}
    figures = {"devices": n, "messagesPerDevice": per, "queued": targets, "enqueueSeconds": round(enq_secs, 2),
               "enqueuedPerSecond": round(targets / max(enq_secs, 1e-3)),
               "firstExpiredAfterSeconds": r3(first - t_exp if first else None),
               "allExpiredAfterSeconds": r3(done - t_exp if done else None),
               "expiredPerSecond": round(targets / max(done - t_exp, 1e-3)) if done else None}
    for ph, v in phases.items():
        figures["telemetry%sCount" % ph] = len(v)
        figures["telemetry%sP50Ms" % ph] = r3(percentile(v, 50))
        figures["telemetry%sP99Ms" % ph] = r3(percentile(v, 99))
    report = os.path.join(outdir, "%s-%s.json" % (base, target.name))
    with open(report, "w") as f:
        json.dump({"figures": figures}, f, indent=0)
    print("c2d-expiry %s: %d copies queued in %.1f s, all dead-lettered %s s after their expiry; telemetry PUBACK "
          "p99 %s ms before, %s ms during the expiry" % (target.name, targets, enq_secs, figures["allExpiredAfterSeconds"],
                                                         figures["telemetryBeforeP99Ms"], figures["telemetryExpiryP99Ms"]),
          flush=True)
    return figures, {"_report": report}


SCENARIOS = {
    "idle-tls": (idle_tls, ["sacgate-all", "sacgate-cluster", "mosquitto"]),
    "telemetry-qos1": (telemetry_qos1, ["sacgate-all", "sacgate-cluster", "mosquitto"]),
    "c2d-latency": (c2d_latency, ["sacgate-all", "sacgate-cluster", "mosquitto"]),
    "connect-storm": (connect_storm, ["sacgate-all", "sacgate-cluster", "mosquitto"]),
    "scale": (scale, ["sacgate-cluster"]),
    "shard-restart": (shard_restart, ["sacgate-cluster"]),
    "shard-stall": (shard_stall, ["sacgate-cluster"]),
    "revocation": (revocation, ["sacgate-all", "sacgate-cluster"]),
    "notification-fanout": (notification_fanout, ["sacgate-all", "sacgate-cluster"]),
    "idle-ws": (idle_ws, ["sacgate-all"]),
    "method-rtt": (method_rtt, ["sacgate-all", "sacgate-cluster"]),
    "connect-credentials": (connect_credentials, ["sacgate-all", "sacgate-cluster"]),
    "c2d-enqueue": (c2d_enqueue, ["sacgate-all", "sacgate-cluster"]),
    "c2d-expiry": (c2d_expiry, ["sacgate-all", "sacgate-cluster"]),
}

# The figures each scenario compares between the local cluster and `sacgate all` (the cost of
# separate processes, issue 7's target), when both ran.
CLUSTER_RATIO_OF = {"telemetry-qos1": ["serverCpuSecondsPer1000", "serverWakeupsPer1000"]}
# The figure each scenario compares against Mosquitto, and whether higher is better.
RATIO_OF = {
    "idle-tls": [("connectsPerSecond", True), ("serverBytesPerSession", False)],
    "telemetry-qos1": [("ackedPerSecond", True), ("readPerSecond", True), ("publishAckP99Ms", False),
                       ("serverCpuSecondsPer1000", False)],
    "c2d-latency": [("p50Ms", False), ("p99Ms", False)],
    "connect-storm": [("allBackAfterSeconds", False)],
    "scale": [],
    "shard-restart": [],
    "shard-stall": [],
    "revocation": [],   # Mosquitto has no registry to revoke from
    "notification-fanout": [],
    "idle-ws": [],
    "method-rtt": [],   # nor direct methods
    "connect-credentials": [],
    "c2d-enqueue": [],
    "c2d-expiry": [],
}


def default_devices(scenario, p):
    """Sessions a scenario holds when --devices is not given (the cluster gets frontends for them)."""
    return {"scale": 1000 if p.smoke else 250000, "shard-restart": 1500 if p.smoke else 250000,
            "revocation": 50 if p.smoke else 1000, "method-rtt": 10 if p.smoke else 100,
            "notification-fanout": 1000 if p.smoke else 100000,
            "c2d-expiry": 200 if p.smoke else 20000}.get(scenario, 0)


def make_target(name, workdir, p, scenario):
    if name == "sacgate-all":
        return SacgateAll(workdir, p.all_shards)
    if name == "sacgate-all-nosync":
        return SacgateAll(workdir, p.all_shards, sync=False)
    if name == "sacgate-cluster":
        need = p.devices or default_devices(scenario, p)
        fe = p.frontends or max(2, math.ceil(need * 1.05 / SESSIONS_PER_FRONTEND))
        if p.kill_frontend_after is not None and not p.frontends:
            fe += 1   # room for the devices of the frontend that is killed
        # shard-restart measures one shard holding everything unless told otherwise
        shards = p.shards or (1 if scenario == "shard-restart" else 2)
        return SacgateCluster(workdir, fe, shards, p.credit, p.link)
    if name == "mosquitto":
        if not shutil.which("mosquitto"):
            raise BenchError("mosquitto is not installed (Debian package mosquitto)")
        return Mosquitto(workdir)
    raise BenchError("unknown target %s" % name)


def machine():
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return {"cpus": os.cpu_count(), "memoryBytes": mem, "kernel": os.uname().release}


def wakeup_cost(smoke, problems):
    """What waking a sleeping thread costs this machine today (bench/wakeup_probe.c): across CPUs,
    on one CPU and left to the scheduler. Recorded in every results file because sacgate hands each
    batch from thread to thread, and on a virtual machine the cost of waking an idle CPU moves from
    day to day (41.6 us and 32 us of CPU a wake-up across CPUs on 2026-11-30; 1.2 us on one CPU):
    figures of different days compare only with this beside them."""
    try:
        out = subprocess.run([WAKEUP_PROBE, "--count", "300" if smoke else "4000"], capture_output=True, text=True,
                             timeout=120, check=True).stdout
        w = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        problems.append("wakeup_probe (%s): %s" % (WAKEUP_PROBE, e))
        return None
    cross, same = w.get("crossCore"), w.get("sameCore")
    log("a wake-up on this machine: across CPUs %s, on one CPU %.1f us (p50 wall; CPU %s / %.1f us)"
        % ("%.1f us" % cross["p50Us"] if cross else "-", same["p50Us"], "%.1f" % cross["cpuUs"] if cross else "-",
           same["cpuUs"]))
    return w


def fsync_cost(smoke, problems):
    """What one fdatasync after a small append costs on the file system the targets' data live on
    (bench/fsync.py, a preallocated file as the shards' WAL files are). Recorded in every results
    file beside the wake-up cost: a shard acknowledges a QoS 1 publish only after the fdatasync of
    its group commit, so at a few devices, whose publishes wait for each commit in turn, this is a
    floor under their latency that a broker which does not write to disk (Mosquitto here) never
    pays. It moves from day to day too (0.1 ms in the machine notes; 0.2 ms p50 on 2026-11-30)."""
    base = tempfile.gettempdir()   # where run_one makes every target's working directory
    out = os.path.join(tempfile.mkdtemp(prefix="sg-bench-fsync-"), "fsync.json")
    try:
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "fsync.py"), "--modes", "size-set", "--count",
                        "50" if smoke else "1000", "--dir", base, "--out", out], capture_output=True, text=True,
                       timeout=120, check=True)
        with open(out) as f:
            r = json.load(f)
        fig = dict(r["figures"]["size-set"], bytes=r["bytes"], dir=base)
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
        problems.append("fsync.py: %s" % e)
        return None
    finally:
        shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    log("an fdatasync of a %d-byte append in %s: p50 %.1f us, p99 %.1f us, average %.1f us"
        % (fig["bytes"], base, fig["p50Us"], fig["p99Us"], fig["avgUs"]))
    return fig


def run_one(name, fn, tname, p, outdir, result, base):
    """One run of one target: its run record (target, figures, report), or None when it failed (the
    failure is in result["problems"])."""
    workdir = tempfile.mkdtemp(prefix="sg-bench-")
    target = None
    try:
        target = make_target(tname, workdir, p, name)
        figures, summary = fn(target, p, outdir, result["problems"], base)
        run = {"target": target.name, "figures": figures, "report": os.path.relpath(summary["_report"], outdir),
               "serverVersion": getattr(target, "version", "sacgate")}
        if isinstance(target, SacgateCluster):
            run["frontends"] = target.frontends
            run["shards"] = target.shards
            run["link"] = target.link
        if isinstance(target, SacgateAll):
            run["shards"] = target.shards
            run["sync"] = "always" if target.sync else "never"
        return run
    except (BenchError, subprocess.TimeoutExpired) as e:
        result["problems"].append("%s: %s" % (tname, e))
        log("ERROR", tname, e)
        return None
    finally:
        if target:
            target.stop()
            for line in target.sanitizer_reports()[:5]:
                result["problems"].append("%s: sanitizer report in its log: %s" % (tname, line))
        if not p.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def figure_medians(runs, targets):
    """{target: {figure: median over its runs}} for the numeric figures every run of it has (an
    integer figure stays an integer; the others keep the 5 decimals the CPU figures carry), and the
    words every run of it gives alike."""
    out = {}
    for tname in targets:
        mine = [r["figures"] for r in runs if r["target"] == tname]
        if not mine:
            continue
        med = {}
        for key in mine[0]:
            vals = [f.get(key) for f in mine]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                m = median(vals)
                med[key] = int(m) if all(isinstance(v, int) for v in vals) and m == int(m) else round(m, 5)
            elif all(isinstance(v, str) for v in vals) and len(set(vals)) == 1:
                med[key] = vals[0]   # a word every run agrees on (shardSync)
        out[tname] = med
    return out


def run_scenario(name, p):
    fn, default_targets = SCENARIOS[name]
    # results are named by scenario, and by --tag when given (scale runs: by their size)
    base = name + ("-" + p.tag if p.tag else "")
    targets = [t for t in (p.targets.split(",") if p.targets else default_targets) if t in default_targets or p.targets]
    outdir = p.out
    os.makedirs(outdir, exist_ok=True)
    result = {"scenario": name, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": p.smoke,
              "machine": machine(), "command": " ".join(sys.argv), "runs": [], "ratios": {}, "problems": []}
    # With --rounds N every target runs N times, the order reversed every other round (ABC, CBA,
    # ...) so that a machine getting slower or faster during the rounds weighs on every target
    # alike. Each round's ratios are taken within the round (a run against the Mosquitto run next
    # to it), and the figure reported is their median, with every round's value beside it: on a
    # shared machine one pair of runs can differ from the next by more than the difference measured.
    rounds = []
    result["machine"]["wakeup"] = wakeup_cost(p.smoke, result["problems"])
    result["machine"]["fsync"] = fsync_cost(p.smoke, result["problems"])
    for k in range(p.rounds):
        order = targets if k % 2 == 0 else list(reversed(targets))
        runs = []
        for tname in order:
            run = run_one(name, fn, tname, p, outdir, result, base if p.rounds == 1 else "%s-r%d" % (base, k + 1))
            if run:
                if p.rounds > 1:
                    run["round"] = k + 1
                runs.append(run)
        runs.sort(key=lambda r: targets.index(r["target"]) if r["target"] in targets else len(targets))
        result["runs"] += runs
        rounds.append(runs)
    # ratios: each sacgate run against Mosquitto's figure of the same round
    per_round = {}
    for runs in rounds:
        mq = next((r for r in runs if r["target"] == "mosquitto"), None)
        for r in runs:
            if r is mq or not mq:
                continue
            for key, higher_better in RATIO_OF.get(name, []):
                a, b = r["figures"].get(key), mq["figures"].get(key)
                if a is not None and b:
                    per_round.setdefault("%s/%s %s" % (r["target"], "mosquitto", key), []).append(round(a / b, 3))
        # the cost of separate processes: the local cluster against `sacgate all` (issue 7's target)
        al = next((r for r in runs if r["target"] == "sacgate-all"), None)
        cl = next((r for r in runs if r["target"] == "sacgate-cluster"), None)
        for key in CLUSTER_RATIO_OF.get(name, []) if al and cl else []:
            a, b = cl["figures"].get(key), al["figures"].get(key)
            if a is not None and b:
                per_round.setdefault("sacgate-cluster/sacgate-all %s" % key, []).append(round(a / b, 3))
    for key, values in per_round.items():
        result["ratios"][key] = round(median(values), 3)
        check(len(values) == len(rounds), "%s: a ratio in %d of %d rounds" % (key, len(values), len(rounds)),
              result["problems"])
    if p.rounds > 1:
        result["rounds"] = p.rounds
        result["ratioByRound"] = per_round
        result["medians"] = figure_medians(result["runs"], targets)
    with open(os.path.join(outdir, base + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    print_table(result)
    return result


def print_table(result):
    print("\n== %s%s" % (result["scenario"], " (smoke)" if result["smoke"] else ""))
    if result.get("rounds"):
        print("medians over %d rounds" % result["rounds"])
        columns = [{"target": t, "figures": f} for t, f in result["medians"].items()]
    else:
        columns = result["runs"]
    keys = []
    for r in columns:
        for k, v in r["figures"].items():
            if k not in keys and not isinstance(v, dict):   # a breakdown (cpuSecondsByThread) is printed by its run
                keys.append(k)
    width = max([len(k) for k in keys] + [10])
    print("%-*s" % (width, "") + "".join("%22s" % r["target"] for r in columns))
    for k in keys:
        cells = []
        for r in columns:
            v = r["figures"].get(k)
            cells.append("%22s" % (json.dumps(v) if isinstance(v, (dict, list)) else ("-" if v is None else v)))
        print("%-*s" % (width, k) + "".join(cells))
    for k, v in result["ratios"].items():
        by_round = result.get("ratioByRound", {}).get(k)
        if by_round:
            print("ratio %s = %s (median; by round: %s)" % (k, v, ", ".join(str(x) for x in by_round)))
        else:
            print("ratio %s = %s" % (k, v))
    for prob in result["problems"]:
        print("PROBLEM:", prob)
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="+", help="%s, or all-scenarios" % ", ".join(SCENARIOS))
    ap.add_argument("--targets", help="comma-separated: sacgate-all, sacgate-cluster, mosquitto (default: the "
                                      "scenario's), or sacgate-all-nosync: `sacgate all` acknowledging without "
                                      "fdatasync (store.sync=never), to see the disk's share of a figure")
    ap.add_argument("--smoke", action="store_true", help="small and short: does every scenario work")
    ap.add_argument("--devices", type=int, help="devices (sessions) of the scenario")
    ap.add_argument("--messages", type=int, help="telemetry-qos1, c2d-enqueue, c2d-expiry: messages per device; "
                                                 "method-rtt: calls in all (default 5000)")
    ap.add_argument("--ttl", type=int, help="c2d-expiry: seconds from the first enqueue to the expiry of every "
                                            "message (default 120)")
    ap.add_argument("--rate", type=float, help="c2d-latency: commands/s; scale: connects/s")
    ap.add_argument("--hold", type=float, help="seconds to hold the sessions (idle-tls, c2d-latency, scale)")
    ap.add_argument("--keepalive", type=int, help="scale: MQTT keep-alive (s)")
    ap.add_argument("--kill-frontend-after", type=float, help="scale: SIGKILL frontend fe-0 this many seconds after "
                                                              "every device is online; its devices must come back "
                                                              "through the others")
    ap.add_argument("--frontends", type=int, help="sacgate-cluster: frontend processes (default: enough for "
                                                  "--devices at 18,000 each, at least 2)")
    ap.add_argument("--shards", type=int, help="sacgate-cluster: store shards (default 2; shard-restart: 1)")
    ap.add_argument("--link", choices=("tcp", "ipc"), default="tcp",
                    help="sacgate-cluster: the links between its tiers (cluster.sh LINK): tcp on loopback, as "
                         "between pods (default), or ipc, Unix sockets, as tiers on one host may use")
    ap.add_argument("--all-shards", type=int, default=1, help="sacgate-all: in-process shards (--shard-count, "
                                                                "default 1)")
    ap.add_argument("--registered", type=int, help="shard-restart: devices registered (default 1,000,000; the first "
                    "--devices of them connect)")
    ap.add_argument("--parallel", type=int, help="revocation, c2d-enqueue: HTTP calls in flight at once (default 16; "
                                                 "c2d-enqueue 32); method-rtt: callers (default 8)")
    ap.add_argument("--tls-resume", action="store_true", help="connect-storm: devices resume their TLS session "
                    "with the ticket of their first connect (sacgate-sim --tls-resume)")
    ap.add_argument("--stall", type=float, help="shard-stall: seconds the shards stay frozen (default 5)")
    ap.add_argument("--credit", type=int, help="sacgate-cluster: cluster.credit in bytes (default: the gateway's, "
                                               "1 MiB)")
    ap.add_argument("--read-min", type=int, default=1, help="telemetry-qos1: records a back-end read waits for "
                    "(GET /v1/telemetry min; default 1: it answers at every commit)")
    ap.add_argument("--read-wait-ms", type=int, default=2000, help="telemetry-qos1: ...or this long (default 2000)")
    ap.add_argument("--rounds", type=int, default=1, help="run every target this many times, the order reversed "
                    "every other round; ratios are taken within each round and their median is reported, with "
                    "each round's value (default 1)")
    ap.add_argument("--out", help="results directory (default bench/results; a temporary one with --smoke)")
    ap.add_argument("--keep", action="store_true", help="keep the targets' working directories")
    ap.add_argument("--tag", help="name results <scenario>-<tag> (default for scale: the device count, e.g. 250k)")
    p = ap.parse_args()
    if p.rounds < 1:
        ap.error("--rounds must be at least 1")
    names = list(SCENARIOS) if p.scenarios == ["all-scenarios"] else p.scenarios
    if not p.tag and not p.smoke and names == ["scale"] and p.devices:
        p.tag = "%dk" % (p.devices // 1000) if p.devices % 1000 == 0 else str(p.devices)
    for n in names:
        if n not in SCENARIOS:
            ap.error("unknown scenario %s" % n)
    for b in (SACGATE, SIM):
        if not os.access(b, os.X_OK):
            ap.error("%s is missing: build first (cmake --build build)" % b)
    tmp = None
    if not p.out:
        if p.smoke:
            tmp = tempfile.mkdtemp(prefix="sg-bench-smoke-")
            p.out = tmp
        else:
            p.out = os.path.join(ROOT, "bench", "results")
    problems = []
    for n in names:
        problems += run_scenario(n, p)["problems"]
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    if problems:
        print("\n%d problem(s)" % len(problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
