#!/usr/bin/env python3
"""Where chatd's CPU per poll goes beyond the cached-answer ceiling's: two perf recordings
(perf record -F HZ, each server during its own phase of the polling mix) read as samples
per poll by part of the stack, side by side, and the difference.

usage: profile_diff.py HZ CHATD_DATA CHATD_POLLS CEILING_DATA CEILING_POLLS

CHATD_POLLS and CEILING_POLLS are the polls each server answered while perf recorded it
(rate x seconds). A sample at HZ stands for 1/HZ s of CPU, so the table reads in
microseconds of CPU per poll. chatd's column includes its background (the students'
writes, the summary sweep), which CPU=1 in poll.sh measures apart."""
import re
import subprocess
import sys

# The first group whose test matches a symbol takes its samples.
GROUPS = [
    ("kernel", lambda s: s.startswith("[k]")),
    ("tracing (the per-call span, log filters)", lambda s: "tracing" in s),
    ("the caches (quick_cache: tokens, summaries)", lambda s: "quick_cache" in s),
    ("allocator (glibc malloc, free)",
     lambda s: re.search(r"malloc|free|realloc|_int_|unlink_chunk", s) is not None),
    ("memmove, memcmp", lambda s: re.search(r"memmove|memcmp|memcpy|memset", s) is not None),
    ("metrics", lambda s: "prometheus" in s or "Metrics" in s or "metrics::" in s),
    ("h2 (HTTP/2, HPACK)", lambda s: "h2::" in s),
    ("hyper", lambda s: "hyper" in s),
    ("tokio", lambda s: "tokio" in s),
    ("prost, bytes (protobuf)", lambda s: "prost" in s or "bytes::" in s),
    ("chatd's own code", lambda s: "chatd::" in s),
    ("tonic, tower, axum, http", lambda s: re.search(r"tonic|tower|axum|http::", s) is not None),
    ("the clock (vdso)", lambda s: "clock_gettime" in s),
    ("other", lambda s: True),
]


def samples_by_group(data):
    """Self samples of each group in one recording."""
    report = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--stdio", "-g", "none",
         "--sort", "sym", "-n"],
        capture_output=True, text=True, check=True).stdout
    groups = {}
    for line in report.splitlines():
        fields = line.split(None, 2)
        if len(fields) < 3 or line.startswith("#") or not fields[1].isdigit():
            continue
        symbol = fields[2].strip()
        name = next(name for name, matches in GROUPS if matches(symbol))
        groups[name] = groups.get(name, 0) + int(fields[1])
    return groups


def main():
    hz = float(sys.argv[1])
    chatd, chatd_polls = samples_by_group(sys.argv[2]), float(sys.argv[3])
    ceiling, ceiling_polls = samples_by_group(sys.argv[4]), float(sys.argv[5])
    per_poll = lambda samples, polls: samples / hz / polls * 1e6
    print(f"{'CPU per poll, by part of the stack (us)':46} {'chatd':>7} {'ceiling':>8} {'chatd - ceiling':>16}")
    totals = [0.0, 0.0]
    for name, _ in GROUPS:
        a = per_poll(chatd.get(name, 0), chatd_polls)
        b = per_poll(ceiling.get(name, 0), ceiling_polls)
        totals[0] += a
        totals[1] += b
        print(f"  {name:44} {a:7.2f} {b:8.2f} {a - b:+16.2f}")
    print(f"  {'all':44} {totals[0]:7.2f} {totals[1]:8.2f} {totals[0] - totals[1]:+16.2f}")


if __name__ == "__main__":
    main()
