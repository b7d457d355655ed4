#!/usr/bin/env python3
"""Groups heaptrack's live heap ("leaked" at a SIGKILL) by allocation site.

    heaptrack_print -f FILE --print-leaks 1 --print-peaks 0 --print-allocators 0 \
        --print-temporary 0 -m 0 -n 1000000 > leaks.txt
    benches/heaptrack_sites.py leaks.txt N [TOP]

A site is the innermost frame in troupe's own code (a path that exists in
this worktree) together with the innermost frame of the library that
allocated (a path under the cargo registry, or the standard library's).
Prints, per site, the bytes and allocations per connection, largest first,
and the total. heaptrack loses what it had not yet written out when the
process is killed (the last connections' allocations, a few percent), so the
divisor is the number of connections the data shows (tungstenite read
buffers made), not N, when that is fewer.
"""

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAD = re.compile(r"^(\S+) leaked over (\d+) calls from")
AT = re.compile(r"^\s+at (.+):(\d+)$")
SIZE = {"B": 1, "K": 1e3, "M": 1e6, "G": 1e9}


def size(text):
    m = re.match(r"^([\d.]+)([KMG]?)B?$", text)
    return float(m.group(1)) * SIZE[m.group(2) or "B"]


def entries(lines):
    current = None
    func = None
    for line in lines:
        head = HEAD.match(line)
        if head:
            if current:
                yield current
            current = (size(head.group(1)), int(head.group(2)), [])
            continue
        if current is None:
            continue
        at = AT.match(line)
        if at:
            current[2].append((func, at.group(1), int(at.group(2))))
        elif line.startswith("  ") and not line.strip().startswith("in "):
            func = line.strip()
    if current:
        yield current


def ours(path):
    return not path.startswith("/") and os.path.exists(os.path.join(ROOT, path))


def crate(path):
    m = re.search(r"/registry/src/[^/]+/([^/]+)/", path)
    if m:
        return m.group(1)
    if path.startswith("/rustc/"):
        return "std"
    return None


def site(frames):
    lib = None
    for func, path, line in frames:
        name = crate(path)
        if name and name != "std" and lib is None:
            lib = f"{name} {func} {os.path.basename(path)}:{line}"
        if ours(path):
            return f"{path}:{line} {func}", lib
    return None, lib


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    sites = defaultdict(lambda: [0.0, 0])
    total = 0.0
    sockets = 0
    with open(path) as f:
        for bytes_, calls, frames in entries(f):
            total += bytes_
            key = site(frames)
            sites[key][0] += bytes_
            sites[key][1] += calls
            funcs = [func for func, _, _ in frames]
            if "from_raw_socket<>" in funcs and key[1] and key[1].startswith("bytes-"):
                sockets += calls
    if 0 < sockets < n:
        print(f"{n} connections asked, {sockets} in the data: dividing by {sockets}")
        n = sockets
    print(f"live heap {total / 1e6:.2f} MB = {total / n:.0f} B per connection over {n}")
    print(f"{'B/conn':>8} {'allocs/conn':>11}  troupe frame | library frame")
    for (ours_, lib), (b, c) in sorted(sites.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{b / n:8.0f} {c / n:11.2f}  {ours_ or '-'} | {lib or '-'}")


if __name__ == "__main__":
    main()
