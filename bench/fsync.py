#!/usr/bin/env python3
"""fsync.py [--dir DIR] [--count N] [--bytes B] [--modes M,...] [--out FILE] — what one fdatasync after an
append costs on DIR's file system, for the four ways a log file can be laid out:

  append      a new file that grows with every write (no preallocation);
  keep-size   blocks preallocated with FALLOC_FL_KEEP_SIZE: the file's size still grows with
              every write (RocksDB's posix default for WAL files);
  size-set    blocks preallocated with the size set (fallocate mode 0): the size does not change
              (what sacgate's shards use for WAL files: store/st_db_budget.cc);
  overwrite   blocks written once before (a recycled file: RocksDB's recycle_log_file_num, which
              its point-in-time recovery mode does not allow).

Each mode appends B bytes (a group commit of a dozen telemetry messages) and fdatasyncs, N
times, twice in alternation; prints average, p50 and p99 in microseconds. Run by hand; the
figures depend on the device and the file system. A test runs it small (bench_smoke_fsync)."""
import argparse
import ctypes
import json
import os
import tempfile
import time

FALLOC_FL_KEEP_SIZE = 1
MODES = ("append", "keep-size", "size-set", "overwrite")


def one(path, mode, count, size, libc):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        total = size * count
        if mode == "overwrite":
            os.write(fd, b"\0" * total)
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        elif mode in ("keep-size", "size-set"):
            flags = FALLOC_FL_KEEP_SIZE if mode == "keep-size" else 0
            if libc.fallocate(fd, flags, ctypes.c_long(0), ctypes.c_long(total)) != 0:
                raise OSError(ctypes.get_errno(), "fallocate (%s): %s" % (mode, os.strerror(ctypes.get_errno())))
            os.fsync(fd)
        buf = b"x" * size
        took = []
        for _ in range(count):
            os.write(fd, buf)
            t = time.perf_counter()
            os.fdatasync(fd)
            took.append(time.perf_counter() - t)
        return took
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=None, help="directory on the file system to measure (default: the system's temp dir)")
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--bytes", type=int, default=1600)
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: %s (default: all)" % ", ".join(MODES))
    ap.add_argument("--out", help="write the figures as JSON here too")
    a = ap.parse_args()
    modes = [m for m in a.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        ap.error("--modes takes some of: %s" % ", ".join(MODES))
    libc = ctypes.CDLL(None, use_errno=True)
    took = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(dir=a.dir, prefix="sacgate-fsync-") as d:
        for _ in range(2):   # alternated: a drift of the device shows in every mode alike
            for m in modes:
                took[m] += one(os.path.join(d, "log"), m, a.count, a.bytes, libc)
    figures = {}
    for m in modes:
        t = sorted(took[m])
        n = len(t)
        figures[m] = {"avgUs": round(sum(t) / n * 1e6, 1), "p50Us": round(t[n // 2] * 1e6, 1),
                      "p99Us": round(t[min(n - 1, int(n * 0.99))] * 1e6, 1), "n": n}
        print("%-10s n %-6d avg %7.1f us  p50 %7.1f us  p99 %7.1f us"
              % (m, n, figures[m]["avgUs"], figures[m]["p50Us"], figures[m]["p99Us"]))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"scenario": "fsync", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "bytes": a.bytes, "dir": a.dir or tempfile.gettempdir(), "figures": figures}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
