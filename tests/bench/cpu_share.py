#!/usr/bin/env python3
"""Where the machine's CPU goes for SECONDS: the cores each kind of process used
(user + system time from /proc), written to OUT, most first. A server's CPU per
request says nothing of what else shares the machine; this says who does.

    tests/bench/cpu_share.py SECONDS OUT [NAME=PID ...]

A process given as NAME=PID is counted under NAME; PostgreSQL's processes are
counted together, as `postgres`; every other process under its command.
"""
import os
import sys
import time
from collections import Counter


def kinds(named):
    """Each process's CPU time so far, in clock ticks, summed by kind."""
    ticks = Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline") as f:
                command = f.read().replace("\0", " ").strip()
        except OSError:
            continue  # ended between the listing and the read
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if pid in named:
            kind = named[pid]
        elif name.startswith("postgres") or command.startswith("postgres"):
            kind = "postgres"
        else:
            kind = (command or name)[:50]
        ticks[kind] += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


def main():
    seconds, out = float(sys.argv[1]), sys.argv[2]
    named = dict(reversed(arg.split("=", 1)) for arg in sys.argv[3:])
    hertz = os.sysconf("SC_CLK_TCK")
    before, started = kinds(named), time.monotonic()
    time.sleep(seconds)
    after, elapsed = kinds(named), time.monotonic() - started
    used = {kind: (after[kind] - before.get(kind, 0)) / hertz / elapsed for kind in after}
    with open(out, "w") as report:
        for kind, cores in sorted(used.items(), key=lambda item: -item[1])[:6]:
            if cores >= 0.01:
                report.write(f"  {cores:5.2f} cores  {kind}\n")


if __name__ == "__main__":
    main()
