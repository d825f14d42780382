#!/usr/bin/env python3
"""report_browser_test.py — the simulator's HTML report in a real browser.

Writes the report page of each fixture with sim_report_write (the function `sacgate-sim report`
calls), loads it in Debian's headless Chromium and watches it over the DevTools protocol: the page
must render (data-status="ok"), draw its charts, log no console error, throw no exception and
request nothing from the network. Then it loads two deliberately broken pages to prove the
checks can fail (a watcher that stopped hearing events would otherwise pass everything).

  report_browser_test.py --tool build-rep/sim/sim_report_write tests/sim/fixtures
  [--keep] keeps the pages and prints where; [--screenshots DIR] saves a PNG of each page.

Exit 0: passed, 1: failed, 77: skipped (no /usr/bin/chromium). Standard library only: Debian's
python3 has no websocket module, so a small client is below.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

CHROMIUM = os.environ.get("SG_CHROMIUM", "/usr/bin/chromium")
SKIP = 77
WATCHDOG_S = 105          # ctest kills at 120 s; fail with a message (and a cleaned-up browser) first
STEP_TIMEOUT_S = 30       # browser start, one page load, one DevTools answer


class Failure(Exception):
    pass


class WebSocket:
    """Just enough RFC 6455 for DevTools: text frames, fragmentation, ping and close."""

    def __init__(self, url, timeout):
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Failure("DevTools closed the connection during the websocket handshake")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if not head.startswith(b"HTTP/1.1 101") or accept not in head:
            raise Failure(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise Failure("DevTools closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _send_frame(self, opcode, payload):
        n = len(payload)
        head = bytes([0x80 | opcode])
        # client frames must be masked
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, text):
        self._send_frame(0x1, text.encode())

    def recv(self, timeout):
        """One whole text message; socket.timeout when none arrives in time."""
        self.sock.settimeout(max(timeout, 0.001))
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._send_frame(0xA, payload)
            elif opcode == 0x8:
                raise Failure("DevTools closed the websocket")
            elif opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()

    def close(self):
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


class DevTools:
    """Commands over the browser's websocket; pages are attached with flatten=True, so each
    page's commands and events carry its sessionId on the same connection."""

    def __init__(self, url):
        self.ws = WebSocket(url, STEP_TIMEOUT_S)
        self.next_id = 0
        self.events = []

    def call(self, method, params=None, session=None, timeout=STEP_TIMEOUT_S):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline, method)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise Failure(f"{method}: {m['error']}")
                return m.get("result", {})

    def wait_event(self, method, session, timeout):
        deadline = time.monotonic() + timeout
        seen = len(self.events)
        while True:
            for e in self.events[seen:]:
                if e["method"] == method and e.get("sessionId") == session:
                    return e
            seen = len(self.events)
            self._next(deadline, method)

    def drain(self, seconds):
        """Collect events for a while (late console errors, late requests)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._next(deadline, None)
        except socket.timeout:
            pass

    def _next(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout(f"no answer to {what}")
        m = json.loads(self.ws.recv(left))
        if "method" in m:
            self.events.append(m)
        return m


class Browser:
    def __init__(self, workdir):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir)
        self.log_path = os.path.join(workdir, "chromium.log")
        self.log = open(self.log_path, "wb")
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "about:blank"]
        # its own process group, so that teardown reaches the renderer and GPU helpers too
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        self.dt = DevTools(self._endpoint())

    def _endpoint(self):
        # Chromium writes the port it picked and the browser's path into the profile
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"chromium exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            try:
                with open(port_file) as f:
                    lines = f.read().split("\n")
                if len(lines) >= 2 and lines[0].isdigit() and lines[1].startswith("/devtools/"):
                    return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        raise Failure(f"chromium did not open DevTools within {STEP_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-3000:].decode(errors="replace")

    def close(self):
        try:
            self.dt.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:
            self.dt.ws.close()
        except Exception:
            pass
        self.log.close()

    def load(self, path, screenshot=None):
        """Load a page and report what happened: the body's test hooks, the charts, and every
        console error, uncaught exception and network request the page caused."""
        url = "file://" + urllib.parse.quote(os.path.abspath(path))
        dt = self.dt
        target = dt.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = dt.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            dt.call(f"{domain}.enable", session=session)
        first = len(dt.events)
        nav = dt.call("Page.navigate", {"url": url}, session=session)
        if nav.get("errorText"):
            raise Failure(f"{path}: navigation failed: {nav['errorText']}")
        dt.wait_event("Page.loadEventFired", session, STEP_TIMEOUT_S)
        probe = """JSON.stringify({
            status: document.body ? document.body.dataset.status || null : null,
            rendered: document.body ? document.body.dataset.rendered || null : null,
            title: document.getElementById('title') ? document.getElementById('title').textContent : null,
            text: document.body ? document.body.innerText : '',
            charts: Array.from(document.querySelectorAll('svg.chart')).map(s => ({
                title: s.getAttribute('aria-label'), points: s.getAttribute('data-points'),
                noData: s.textContent.includes('no data')}))})"""
        # the render runs inline before the load event, but give a slow machine a moment
        deadline = time.monotonic() + 10
        while True:
            r = dt.call("Runtime.evaluate", {"expression": probe, "returnByValue": True}, session=session)
            state = json.loads(r["result"]["value"])
            if state["status"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        state["tip"] = self._hover(session) if state["status"] == "ok" else None
        dt.drain(0.5)
        if screenshot:
            shot = dt.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session)
            with open(screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        dt.call("Target.closeTarget", {"targetId": target})

        problems = []
        for e in dt.events[first:]:
            if e.get("sessionId") != session:
                continue
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                problems.append("uncaught exception: " + (d.get("exception", {}).get("description") or d.get("text", "?")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                problems.append(f"console.{p['type']}: {args}")
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                problems.append(f"console error ({p['entry'].get('source')}): {p['entry'].get('text')}")
            elif m == "Network.requestWillBeSent" and p["request"]["url"] != url:
                problems.append(f"network request: {p['request']['url']}")
        state["problems"] = problems
        return state


    def _hover(self, session):
        """Move the mouse over the middle of the first chart with data; the tooltip's text (None
        when no chart has data), so the hover code runs too and its errors are seen."""
        dt = self.dt
        r = dt.call("Runtime.evaluate", {"returnByValue": True, "expression": """(() => {
            const s = Array.from(document.querySelectorAll('svg.chart')).find(s => +s.dataset.points > 0);
            if (!s) return null;
            s.scrollIntoView({block: 'center'});
            const b = s.getBoundingClientRect();
            return [b.left + b.width / 2, b.top + b.height / 2];
        })()"""}, session=session)
        at = r["result"].get("value")
        if not at:
            return None
        dt.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": at[0], "y": at[1]}, session=session)
        r = dt.call("Runtime.evaluate", {"returnByValue": True, "expression":
                    "(document.querySelector('.tip:not([hidden])') || {}).textContent || ''"}, session=session)
        return r["result"].get("value")


def write_page(tool, src, dst):
    r = subprocess.run([tool, src, dst], capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    if r.returncode != 0:
        raise Failure(f"{tool} {src}: exit {r.returncode}: {r.stderr.strip()}")


def inject(page, dst, before_script, drop_csp=False):
    """A copy of page with extra markup just before the page's own renderer."""
    with open(page, encoding="utf-8") as f:
        html = f.read()
    anchor = "<script>\n'use strict';"
    assert html.count(anchor) == 1, "the renderer's <script> moved: update inject()"
    html = html.replace(anchor, before_script + "\n" + anchor)
    if drop_csp:
        html = "\n".join(l for l in html.split("\n") if "Content-Security-Policy" not in l)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(html)


def damaged(sample):
    """Summaries with sections missing, null or of the wrong type (older, merged or hand-edited
    summaries): the page must still render each one without an error."""
    keep = {"tool": "sacgate-sim"}
    out = {"every section null": dict({k: None for k in sample}, **keep),
           "every section a string": dict({k: "x" for k in sample}, **keep),
           "every section an empty list": dict({k: [] for k in sample}, **keep)}
    odd = json.loads(json.dumps(sample))
    for i, k in enumerate(odd["series"]):
        # series: missing, null, a number, ragged, strings and nulls inside
        odd["series"][k] = [None, 5, "7", {"v": 1}, list(range(3)), odd["series"][k][:i], odd["series"][k] + ["x", None]][i % 7]
    for i, k in enumerate(odd["latency"]):
        h = odd["latency"][k]
        h["counts"] = [None, "x", [[1], [2, "3"], ["a", 4], [-5, 6], [100000000, 1]], [[300, 2]]][i]
        h["count"] = [5, None, "9", 2][i]
    odd["sessions"]["failed"] = {"x": "y", "z": None}
    odd["sessions"]["dropped"] = [1, 2]
    odd["resources"] = {"simulator": [], "server": "gone"}
    odd["storm"] = {}
    odd["target"]["ports"] = "8883"
    odd["slices"] = [None, 3, {"index": "a"}]
    out["fields of the wrong type"] = odd
    return out


def check(cond, what, errors):
    print(("  ok    " if cond else "  FAIL  ") + what)
    if not cond:
        errors.append(what)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tool", required=True, help="the sim_report_write binary")
    ap.add_argument("--keep", action="store_true", help="keep the pages and the browser log")
    ap.add_argument("--screenshots", help="directory for a PNG of each page")
    ap.add_argument("fixtures", help="directory with report-sample.json and report-minimal.json")
    a = ap.parse_args()

    if not os.access(CHROMIUM, os.X_OK):
        print(f"skipped: chromium not installed ({CHROMIUM} is missing; apt-get install chromium)")
        return SKIP

    def watchdog(signum, frame):
        raise Failure(f"watchdog: the test took over {WATCHDOG_S} s")
    signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(WATCHDOG_S)

    work = tempfile.mkdtemp(prefix="sim-report-browser-")
    errors, browser = [], None
    try:
        pages = {}
        for name in ("sample", "minimal"):
            pages[name] = os.path.join(work, f"report-{name}.html")
            write_page(a.tool, os.path.join(a.fixtures, f"report-{name}.json"), pages[name])
        with open(os.path.join(a.fixtures, "report-sample.json")) as f:
            sample = json.load(f)
        # the broken pages: a renderer that throws, a stray URL under the page's CSP, and the
        # same URL with the CSP removed (the request itself must then be seen)
        bad = {name: os.path.join(work, f"broken-{name}.html") for name in ("throws", "csp", "request")}
        inject(pages["sample"], bad["throws"],
               "<script>document.createElementNS = () => { throw new Error('injected failure'); };</script>")
        inject(pages["sample"], bad["csp"], '<img alt="" src="http://127.0.0.1:9/pixel.png">')
        inject(pages["sample"], bad["request"], '<img alt="" src="http://127.0.0.1:9/pixel.png">', drop_csp=True)

        browser = Browser(work)
        shot = (lambda n: os.path.join(a.screenshots, f"report-{n}.png")) if a.screenshots else (lambda n: None)
        if a.screenshots:
            os.makedirs(a.screenshots, exist_ok=True)

        print("sample fixture:")
        s = browser.load(pages["sample"], shot("sample"))
        check(s["status"] == "ok", f"renders (data-status={s['status']!r})", errors)
        for p in s["problems"]:
            check(False, p, errors)
        check(not s["problems"], "no console errors, exceptions or network requests", errors)
        charts = s["charts"]
        drawn = [c for c in charts if int(c["points"] or 0) > 0]
        check(int(s["rendered"] or 0) >= 5, f"at least 5 charts drew data (data-rendered={s['rendered']})", errors)
        check(int(s["rendered"] or -1) == len(drawn), f"data-rendered matches the charts with points ({len(drawn)})", errors)
        for title in ("sessions", "rates", "latency per second", "memory (RSS)", "CPU",
                      "connect (TCP start → CONNACK)", "publish → PUBACK"):
            c = next((c for c in charts if c["title"] == title), None)
            check(c is not None and int(c["points"] or 0) > 0,
                  f"chart {title!r} drew points ({c['points'] if c else 'missing'})", errors)
        check(all(c["noData"] for c in charts if int(c["points"] or 0) == 0), "every empty chart says 'no data'", errors)
        check(s["title"] == "sacgate-sim · " + sample["label"], f"title shows the label ({s['title']!r})", errors)
        check(s["text"].count("no samples") == 2, "command and telemetry latency rows say 'no samples'", errors)
        check(bool(s["tip"]) and "online" in s["tip"], f"hovering the sessions chart shows values ({s['tip']!r})", errors)

        print("minimal fixture:")
        m = browser.load(pages["minimal"], shot("minimal"))
        check(m["status"] == "ok", f"renders (data-status={m['status']!r})", errors)
        for p in m["problems"]:
            check(False, p, errors)
        check(not m["problems"], "no console errors, exceptions or network requests", errors)
        check(m["rendered"] == "0" and all(c["noData"] for c in m["charts"]),
              f"no chart drew data, each says 'no data' ({len(m['charts'])} charts)", errors)

        print("damaged summaries still render:")
        for i, (what, doc) in enumerate(damaged(sample).items()):
            src, dst = os.path.join(work, f"damaged-{i}.json"), os.path.join(work, f"damaged-{i}.html")
            with open(src, "w") as f:
                json.dump(doc, f)
            write_page(a.tool, src, dst)
            d = browser.load(dst)
            check(d["status"] == "ok" and not d["problems"],
                  f"{what}: data-status={d['status']!r} " + "; ".join(p.split("\n")[0] for p in d["problems"]), errors)

        print("the checks catch a broken page:")
        b = browser.load(bad["throws"])
        check((b["status"] or "").startswith("error: ") and "injected failure" in b["status"],
              f"a throwing renderer sets data-status={b['status']!r}", errors)
        check(any(p.startswith("uncaught exception") and "injected failure" in p for p in b["problems"]),
              "its exception is seen: " + "; ".join(p.split("\n")[0] for p in b["problems"])[:160], errors)
        b = browser.load(bad["csp"])
        check(any("127.0.0.1:9" in p for p in b["problems"]),
              "a stray URL is refused by the CSP and seen: " + "; ".join(b["problems"])[:160], errors)
        b = browser.load(bad["request"])
        check(any(p == "network request: http://127.0.0.1:9/pixel.png" for p in b["problems"]),
              "without the CSP the request itself is seen: " + "; ".join(b["problems"])[:160], errors)
    except (Failure, socket.timeout, OSError) as e:
        errors.append(str(e))
        print(f"  FAIL  {e}")
        if browser:
            print("chromium log (tail):\n" + browser.log_tail())
    finally:
        signal.alarm(0)
        if browser:
            browser.close()
        if a.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    if errors:
        print(f"FAILED: {len(errors)} check(s)")
        return 1
    print("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
