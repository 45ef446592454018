#!/usr/bin/env python3
"""Where a process's time goes, from `perf script`: a flame graph (SVG) and a table of
self time by part of the stack (kernel, allocator, h2, hyper, tonic, tokio, chatd, ...).

    perf record -F 499 --call-graph dwarf -p PID -o perf.data -- sleep 9
    perf script -i perf.data | python3 tests/bench/flamegraph.py OUT.svg "title"

The table goes to stdout: each part's share of the samples whose innermost frame is in
it (self time), and of the samples with a frame of it anywhere (inclusive); then the
innermost frames with the most samples. Only the
Python standard library is used, so it runs wherever perf does.
"""

import collections
import html
import re
import sys
import zlib

# Parts of the stack, first match wins; matched against "symbol (object)".
PARTS = [
    ("kernel", re.compile(r"\[kernel\.kallsyms\]|\(\[kernel|^\[unknown\] \(\[")),
    ("allocator", re.compile(r"^(_int_malloc|_int_free|malloc|free|cfree|realloc|calloc|"
                             r"__libc_malloc|__libc_free|__libc_realloc|malloc_consolidate|"
                             r"tcache_|unlink_chunk|__rust_alloc|__rust_dealloc|__rust_realloc|"
                             r"alloc::alloc::|<alloc::alloc::Global)")),
    ("memcpy/memmove", re.compile(r"^(__memmove|__memcpy|memcpy|memmove|__memset|memset)")),
    ("h2", re.compile(r"\bh2::")),
    ("hyper", re.compile(r"\bhyper(_util)?::")),
    ("http/httparse", re.compile(r"\bhttp(parse)?::|\bhttp_body")),
    ("tonic", re.compile(r"\btonic(_health|_reflection)?::")),
    ("tower", re.compile(r"\btower(_http|_layer|_service)?::")),
    ("prost", re.compile(r"\bprost::|\bbytes::")),
    ("tokio", re.compile(r"\btokio::|\bmio::")),
    ("token check (jsonwebtoken, hmac, sha2, base64, serde_json)",
     re.compile(r"\b(jsonwebtoken|hmac|sha2|base64|serde_json|serde)::")),
    ("tracing/metrics", re.compile(r"\b(tracing|tracing_core|tracing_subscriber|opentelemetry\w*)::")),
    ("database (diesel, tokio-postgres, sqlite)", re.compile(r"\b(diesel\w*|tokio_postgres|postgres_protocol)::|sqlite3")),
    ("cache lookups (quick_cache: tokens, summaries)", re.compile(r"\bquick_cache::")),
    ("chatd", re.compile(r"\bchatd::")),
    ("clock", re.compile(r"clock_gettime|\[vdso\]")),
    ("libc/std (other)", re.compile(r"libc\.so|\bstd::|\bcore::|\balloc::")),
]


def part_of(frame):
    for name, pattern in PARTS:
        if pattern.search(frame):
            return name
    return "other"


FRAME = re.compile(r"^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$")


INNERMOST_GENERICS = re.compile(r"<[^<>]*>")
FOLDED = "\x00"


def shorten(symbol, longest=120):
    """Rust's generic arguments make symbols kilobytes long: fold them into <..>, the
    innermost first, until the name reads in a line."""
    while len(symbol.replace(FOLDED, "<..>")) > longest:
        folded = INNERMOST_GENERICS.sub(FOLDED, symbol, count=1)
        if folded == symbol:
            break
        symbol = folded
    return symbol.replace(FOLDED, "<..>")


def samples(lines):
    """Yields (thread name, [frames, outermost first]) per sample of `perf script`."""
    comm, frames = None, []
    for line in lines:
        if not line.strip():
            if comm is not None and frames:
                yield comm, list(reversed(frames))
            comm, frames = None, []
            continue
        if not line[0].isspace():
            comm = line.split()[0] if line.split() else "?"
            frames = []
            continue
        match = FRAME.match(line)
        if match:
            symbol, obj = match.groups()
            symbol = re.sub(r"\+0x[0-9a-f]+$", "", symbol)
            symbol = re.sub(r"::h[0-9a-f]{16}$", "", symbol)
            frames.append(f"{symbol} ({obj.rsplit('/', 1)[-1]})")
    if comm is not None and frames:
        yield comm, list(reversed(frames))


def thread_kind(comm):
    # tokio's workers are "tokio-runtime-w" (or chatd's own names): group them.
    return re.sub(r"[-_]?\d+$", "", comm)


class Node:
    __slots__ = ("children", "count")

    def __init__(self):
        self.children = {}
        self.count = 0


def svg(root, total, title, width=1600, row=16):
    depth = [0]

    def walk(node, level):
        depth[0] = max(depth[0], level)
        for child in node.children.values():
            walk(child, level + 1)

    walk(root, 0)
    height = (depth[0] + 3) * row
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<rect width="100%" height="100%" fill="#fff"/>',
        f'<text x="8" y="{row}" font-size="13">{html.escape(title)} ({total} samples)</text>',
    ]

    def colour(name):
        # The same part the same hue, run after run (str's hash() is salted per process).
        hue = zlib.crc32(part_of(name).encode()) % 60
        light = 60 + zlib.crc32(name.encode()) % 15
        return f"hsl({hue + 10},80%,{light}%)"

    def draw(node, name, x, level):
        w = node.count / total * (width - 16)
        if w < 1.5:
            # Too narrow to see or point at: left out, which keeps the file small.
            return
        y = height - (level + 1) * row
        share = 100.0 * node.count / total
        label = html.escape(f"{name} — {node.count} samples, {share:.2f}%")
        out.append(
            f'<g><title>{label}</title><rect x="{x + 8:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{row - 1}" fill="{colour(name)}"/>'
        )
        chars = int(w / 7)
        if chars > 3:
            text = name if len(name) <= chars else name[: chars - 2] + ".."
            out.append(f'<text x="{x + 10:.1f}" y="{y + row - 4}">{html.escape(text)}</text>')
        out.append("</g>")
        cx = x
        for child_name, child in sorted(node.children.items()):
            draw(child, child_name, cx, level + 1)
            cx += child.count / total * (width - 16)

    draw(root, "all", 0, 0)
    out.append("</svg>")
    return "\n".join(out)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out_path = sys.argv[1]
    title = sys.argv[2] if len(sys.argv) > 2 else "perf"
    root = Node()
    selfs = collections.Counter()
    leaves = collections.Counter()
    inclusive = collections.Counter()
    total = 0
    for comm, frames in samples(sys.stdin):
        total += 1
        # The graph shows names folded to a line; the parts are told from whole names.
        stack = [thread_kind(comm)] + [shorten(frame) for frame in frames]
        node = root
        node.count += 1
        for frame in stack:
            node = node.children.setdefault(frame, Node())
            node.count += 1
        selfs[part_of(frames[-1])] += 1
        leaves[frames[-1]] += 1
        for part in {part_of(frame) for frame in frames}:
            inclusive[part] += 1
    if total == 0:
        sys.exit("no samples read: pipe `perf script` output in")
    with open(out_path, "w") as f:
        f.write(svg(root, total, title))
    print(f"{total} samples; flame graph in {out_path}")
    print(f"{'part of the stack':<58} {'self':>7} {'inclusive':>10}")
    for part, count in selfs.most_common():
        print(f"{part:<58} {100.0 * count / total:6.1f}% {100.0 * inclusive[part] / total:9.1f}%")
    for part in sorted(set(inclusive) - set(selfs)):
        print(f"{part:<58} {0.0:6.1f}% {100.0 * inclusive[part] / total:9.1f}%")
    print("innermost frames with the most samples:")
    for frame, count in leaves.most_common(25):
        print(f"{100.0 * count / total:6.1f}%  [{part_of(frame)}] {shorten(frame)}")


if __name__ == "__main__":
    main()
