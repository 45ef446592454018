#!/usr/bin/env python3
"""The disk's own commit latency: a 16 KiB write followed by fdatasync, in a loop, in the
directory a database would live in. Whatever a database's commit costs, it cannot beat
this on the same disk, so SQLite figures read against it travel between machines.
usage: fsync.py [DIRECTORY] [seconds]   (writes and removes one scratch file there)"""
import os, sys, tempfile, time

directory = sys.argv[1] if len(sys.argv) > 1 else "."
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
block = os.urandom(16 * 1024)
fd, path = tempfile.mkstemp(prefix="fsync-bench-", dir=directory)
latencies = []
try:
    offset, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        os.pwrite(fd, block, offset)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - began)
        # A WAL grows: append up to 64 MiB, then start over, as a checkpointed WAL does.
        offset = (offset + len(block)) % (64 * 1024 * 1024)
finally:
    os.close(fd)
    os.unlink(path)

latencies.sort()
def quantile(q):
    return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
print(f"16 KiB write + fdatasync in {directory}: {len(latencies)} in {seconds:.0f} s; "
      f"p50 {quantile(0.5):.2f} ms, p99 {quantile(0.99):.2f} ms, max {latencies[-1] * 1000:.2f} ms")
