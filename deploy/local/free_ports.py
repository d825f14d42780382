#!/usr/bin/env python3
"""free_ports.py — loopback ports that are free now, for processes about to listen on them
(cluster.sh, the integration tests, bench/bench.py). `free_ports.py N` prints N of them.

A port is taken at random below the kernel's ephemeral range when there is room there, not from
the kernel (bind to port 0): a port from the ephemeral range can become a client socket's own port
(a simulator beside the test opens them by the thousand) between the moment it is found free and
the moment the process meant to listen on it binds it. Random, so two callers at the same moment
rarely pick the same one; the ports of one call are held bound together until all are found, so
they differ."""
import secrets
import socket
import sys


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_ports(n, host="127.0.0.1"):
    low = _ephemeral_low()
    span = min(low - 1024, 22000)   # 10768-32767 with Linux's default range
    socks = []
    tries = 0
    try:
        while len(socks) < n:
            tries += 1
            s = socket.socket()
            try:
                s.bind((host, low - 1 - secrets.randbelow(span) if span >= 4096 and tries < 100 * n else 0))
                socks.append(s)
            except OSError:
                s.close()
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host="127.0.0.1"):
    return free_ports(1, host)[0]


if __name__ == "__main__":
    print(" ".join(str(p) for p in free_ports(int(sys.argv[1]))))
