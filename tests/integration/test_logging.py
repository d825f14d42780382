#!/usr/bin/python3
"""An event loop never waits for its log. sacgate all runs with stderr on a pipe nobody reads
(a stuck log collector); a storm of connections that fail their TLS handshake logs a line each
on the frontend's loop. The pipe fills after a few hundred lines; the gateway must go on serving
devices and operators, cut the storm to the rate limit and say how many lines it left out once
the pipe is read again."""

import os
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402
from sgtest import GatewayTest  # noqa: E402

STORM = 3000


class UnreadStderrAllInOne(sgtest.AllInOne):
    """sacgate all whose stderr is a pipe that is read only when the test says so."""

    def start(self, timeout=45):
        self.pipe_r, pipe_w = os.pipe()
        self.reader = None
        self._stderr_fd = pipe_w
        super().start(timeout)

    def _popen_stderr(self):
        return self._stderr_fd

    def read_stderr(self):
        """From now on copy the pipe into the log file (in the background)."""
        if self.reader:
            return

        def copy():
            with open(self.stderr_path, "ab") as out:
                while True:
                    b = os.read(self.pipe_r, 65536)
                    if not b:
                        break
                    out.write(b)
                    out.flush()
        self.reader = threading.Thread(target=copy, daemon=True)
        self.reader.start()

    def stop(self, sig=None, timeout=15):
        self.read_stderr()   # an exit writes what is left: it must not wait for a reader
        ok = super().stop(timeout=timeout) if sig is None else super().stop(sig, timeout)
        self.reader.join(10)
        return ok


class UnreadLogTest(GatewayTest):
    TOPOLOGY = "all"
    GATEWAY = UnreadStderrAllInOne

    def test_a_log_nobody_reads_does_not_stop_the_gateway(self):
        gw = self.gw
        port = gw.mqtt_ports[0]
        t0 = time.monotonic()
        for _ in range(STORM):   # connect, say nothing, close: a tls.failed line each
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.close()
        sgtest.log("%d failed handshakes in %.1f s" % (STORM, time.monotonic() - t0))
        # the frontend's loop still serves devices, the admin endpoint still answers
        dev = gw.create_device()
        c = self.connected(dev)
        c.send(b"still-here", timeout=20)
        c.close()
        self.assertEqual(len(gw.wait_records(dev["id"], 1, timeout=20)), 1)
        self.assertEqual(gw.get("/v1/cluster").status, 200)
        # once the pipe is read, the storm shows cut to the rate, and summed up (a second's
        # suppressions are reported once it is over)
        gw.read_stderr()

        def counted():
            shown = len(gw.grep_log(r"comp=frontend event=tls\.failed"))
            suppressed = sum(int(l.split("lines=")[1].split()[0])
                             for l in gw.grep_log(r"event=log\.suppressed of=frontend/tls\.failed lines=\d+"))
            return shown, suppressed
        sgtest.wait_until(lambda: sum(counted()) >= STORM, 30, "every failed handshake written or counted")
        shown, suppressed = counted()
        self.assertLess(shown, STORM, "every line of the storm was written")
        self.assertGreater(suppressed, 0)
        self.assertLessEqual(shown + suppressed, STORM + 50)   # the harness's own port probes add a few


if __name__ == "__main__":
    sgtest.main()
