#!/usr/bin/env python3
"""Three records per device against one (issue 7 part 3): runs build/bench/dev_records_bench.

    bench/dev_records.py [--devices 1000000] [--loads 100000] [--reps 3] [--bin build/bench/dev_records_bench]
                         [--out bench/results/dev-records.json]

Creates both layouts once in a temporary directory under /tmp (removed at the end), then for
each repetition (seed 1..reps, the layouts' order alternating) and each read mode (random:
read-ahead batches of 1,024; sorted: a start-up's load of its live sessions; point: one device at a
time with rocksdb_get; multi1: one device at a time through the batched MultiGet) runs a fresh process per layout twice: with the database's files dropped from the page
cache (cold) and with them read into it first (a restart the kernel still caches). Each process
reports three passes over the same K devices: first (empty block cache), warm (blocks cached),
decode (warm, records decoded as the writer does). Also random with K/10 devices cold (loads that
share few blocks), and once per layout a cold run after /proc/sys/vm/drop_caches where the kernel
permits it (every cache of the machine, as a reboot would leave it). Last, layout a's database is
migrated in place to layout b (the one-off rewrite a format change needs) and read again. Prints medians with
[min-max] and writes every run and the summary as JSON.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(binary, *args):
    out = subprocess.run([binary, *args], check=True, stdout=subprocess.PIPE, text=True, timeout=600).stdout
    return json.loads(out)


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def spread(values):
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=1000000)
    ap.add_argument("--loads", type=int, default=100000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "build", "bench", "dev_records_bench"))
    ap.add_argument("--no-drop-caches", action="store_true", help="skip the runs after /proc/sys/vm/drop_caches")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "dev-records.json"))
    a = ap.parse_args()
    started = time.time()
    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="dev-records-", dir="/tmp")
    runs = []
    try:
        db = os.path.join(tmp, "db")
        created = run(a.bin, "create", db, "--devices", str(a.devices))
        print("created %d devices: layout a %.1f MB (%d keys), layout b %.1f MB (%d keys)" % (
            a.devices, created["a"]["devSstBytes"] / 1e6, created["a"]["keys"], created["b"]["devSstBytes"] / 1e6,
            created["b"]["keys"]), flush=True)
        common = ["--devices", str(a.devices)]
        for rep in range(a.reps):
            seed = str(rep + 1)
            layouts = ("a", "b") if rep % 2 == 0 else ("b", "a")
            for mode, loads in (("random", a.loads), ("sorted", a.loads), ("point", a.loads), ("multi1", a.loads),
                                ("random", a.loads // 10)):
                for cache in ("cold", "warm"):
                    if loads != a.loads and cache == "warm":
                        continue
                    for layout in layouts:
                        r = run(a.bin, "read", db, "--layout", layout, "--mode", mode, "--loads", str(loads),
                                "--seed", seed, "--page-cache", cache, *common)
                        runs.append(r)
                        print("rep %d %-6s K=%-6d page cache %-4s layout %s: first %.2f us (cpu %.2f), warm %.2f, "
                              "decode %.2f" % (rep + 1, mode, loads, cache, layout, r["first"]["wallUsPerDevice"],
                                               r["first"]["cpuUsPerDevice"], r["warm"]["wallUsPerDevice"],
                                               r["decode"]["wallUsPerDevice"]), flush=True)
        permitted = None
        for layout in () if a.no_drop_caches else ("a", "b"):
            permitted = drop_caches()
            if not permitted:
                break
            r = run(a.bin, "read", db, "--layout", layout, "--mode", "random", "--loads", str(a.loads), "--seed", "1",
                    *common)
            r["pageCache"] = "drop_caches"
            runs.append(r)
            print("drop_caches random layout %s: first %.2f us (cpu %.2f)" % (
                layout, r["first"]["wallUsPerDevice"], r["first"]["cpuUsPerDevice"]), flush=True)
        # The migration a format change would need, on layout a's database in place; read after
        # as layout b, it must give what layout b gave.
        migrated = run(a.bin, "migrate", db)
        print("migrated %d devices in place: rewrite %.1f s, compaction %.1f s" % (
            migrated["devices"], migrated["rewriteSeconds"], migrated["compactSeconds"]), flush=True)
        os.rename(os.path.join(db, "b"), os.path.join(db, "b0"))
        os.rename(os.path.join(db, "a"), os.path.join(db, "b"))
        after = run(a.bin, "read", db, "--layout", "b", "--mode", "random", "--loads", str(a.loads), "--seed", "1",
                    "--page-cache", "cold", *common)
        migrated["readDigestSame"] = any(r["digest"] == after["digest"] for r in runs
                                         if r["mode"] == "random" and r["seed"] == 1 and r["loads"] == a.loads)
        migrated["read"] = after
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # Both layouts must have read the same records for the same devices.
    digests = {}
    for r in runs:
        digests.setdefault((r["mode"], r["loads"], r["seed"]), set()).add(r["digest"])
    mismatched = [k for k, v in digests.items() if len(v) != 1]
    if mismatched or any(r["bad"] or r["missing"] for r in runs) or not migrated["readDigestSame"]:
        sys.exit("dev_records.py: the layouts read different records: %s" % mismatched)

    summary = {}
    for r in runs:
        for p in ("first", "warm", "decode"):
            if r["pageCache"] != "cold" and p != "first":
                continue   # the same as the cold runs' warm passes: block cache hits only
            key = "%s K=%d page-cache=%s pass=%s" % (r["mode"], r["loads"], r["pageCache"], p)
            summary.setdefault(key, {}).setdefault(r["layout"], []).append(r)
    table = {}
    for key, by in summary.items():
        row = {}
        for layout, rs in sorted(by.items()):
            p = key.rsplit("pass=", 1)[1]
            n = rs[0]["loads"]
            row[layout] = {"wallUsPerDevice": spread([x[p]["wallUsPerDevice"] for x in rs]),
                           "cpuUsPerDevice": spread([x[p]["cpuUsPerDevice"] for x in rs]),
                           "blockMissesPerDevice": round(statistics.median([x[p]["cacheMisses"] for x in rs]) / n, 3),
                           "blockHitsPerDevice": round(statistics.median([x[p]["cacheHits"] for x in rs]) / n, 3),
                           "diskBytesPerDevice": round(statistics.median([x[p]["diskBytesRead"] for x in rs]) / n, 1)}
        if "a" in row and "b" in row:
            row["wallRatioBoverA"] = round(row["b"]["wallUsPerDevice"]["median"] /
                                           row["a"]["wallUsPerDevice"]["median"], 3)
            row["cpuRatioBoverA"] = round(row["b"]["cpuUsPerDevice"]["median"] /
                                          row["a"]["cpuUsPerDevice"]["median"], 3)
        table[key] = row
    print("\n%-52s %-24s %-24s %s" % ("case (us per device, median [min-max])", "a: 3 records", "b: 1 record",
                                      "b/a wall, cpu"))
    for key, row in table.items():
        cell = {}
        for layout in ("a", "b"):
            if layout in row:
                w = row[layout]["wallUsPerDevice"]
                cell[layout] = "%.2f [%.2f-%.2f] cpu %.2f" % (w["median"], w["min"], w["max"],
                                                              row[layout]["cpuUsPerDevice"]["median"])
        print("%-52s %-24s %-24s %s, %s" % (key, cell.get("a", "-"), cell.get("b", "-"), row.get("wallRatioBoverA"),
                                            row.get("cpuRatioBoverA")))
    result = {
        "scenario": "dev-records",
        "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
        "command": "bench/dev_records.py --devices %d --loads %d --reps %d" % (a.devices, a.loads, a.reps),
        "machine": "%d cores, shared with other sessions" % os.cpu_count(),
        "seconds": round(time.time() - started, 1),
        "loadAverage1mBeforeAfter": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "dropCachesPermitted": permitted,
        "create": created,
        "migrate": migrated,
        "summary": table,
        "runs": runs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print("wrote %s (%.0f s)" % (a.out, time.time() - started))


if __name__ == "__main__":
    main()
