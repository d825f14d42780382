#!/usr/bin/env python3
"""shard-stall.py DIR SECONDS OUT — the shard-stall scenario's disruption (bench.py): freeze every
store shard of the local cluster in DIR (SIGSTOP) for SECONDS while the devices keep publishing,
sampling the resident memory of the router and the frontends every 100 ms, then thaw them.
Writes {"stallMs", "routerRssBefore", "routerRssPeak", "frontendsRssBefore", "frontendsRssPeak"}
(bytes; the frontends summed) to OUT. Whatever happens, the shards are thawed before it exits."""
import glob
import json
import os
import signal
import sys
import time


def pids(d, prefix):
    out = []
    for p in glob.glob(os.path.join(d, prefix + "*.pid")):
        with open(p) as f:
            out.append(int(f.read().strip()))
    return out


def rss(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main():
    d, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    stores, routers, fronts = pids(d, "store-"), pids(d, "router-"), pids(d, "fe-")
    if not stores or not routers or not fronts:
        sys.exit("shard-stall.py: no store, router or frontend pid files in %s" % d)
    r0 = sum(rss(p) for p in routers)
    f0 = sum(rss(p) for p in fronts)
    r_peak, f_peak = r0, f0
    t0 = time.monotonic()
    for p in stores:
        os.kill(p, signal.SIGSTOP)
    try:
        while time.monotonic() - t0 < seconds:
            time.sleep(0.1)
            r_peak = max(r_peak, sum(rss(p) for p in routers))
            f_peak = max(f_peak, sum(rss(p) for p in fronts))
    finally:
        for p in stores:
            os.kill(p, signal.SIGCONT)
    res = {"stallMs": round((time.monotonic() - t0) * 1000), "routerRssBefore": r0, "routerRssPeak": r_peak,
           "frontendsRssBefore": f0, "frontendsRssPeak": f_peak}
    with open(out, "w") as f:
        json.dump(res, f)
    sys.stderr.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
