#!/usr/bin/env python3
"""verify.py RESULT.json ROOT OUT.json: checks a (read-only) mount of the unmounted image against the
manifest workload.py recorded: (h) every byte write() acknowledged is in its file, (g) every file
written before ENOSPC is intact: each file has exactly its expected size and content (acknowledged
ranges hold their content, every other byte is zero), its acknowledged xattrs; every directory
created exists; every path deleted or renamed away is absent. Nothing else is required (files the
workload did not create are ignored).

Writes a summary (acknowledged bytes, bytes found intact, bytes lost, files missing or wrong, the
first problems) to OUT.json and prints it in one line per figure.
"""
import json
import os
import stat
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import BLOCK, MiB, Manifest, xattr_value  # noqa: E402


def intact_bytes(actual, want, base, ranges):
    """Bytes of the acknowledged ranges (absolute [s, e)) inside [base, base+len(want)) that match."""
    good = 0
    end = base + len(want)
    for s, e in ranges:
        a, b = max(s, base), min(e, end)
        if a >= b:
            continue
        for blk in range(a, b, BLOCK):
            hi = min(b, (blk // BLOCK + 1) * BLOCK)
            lo = blk
            if actual[lo - base : hi - base] == want[lo - base : hi - base]:
                good += hi - lo
    return good


def verify(manifest, root):
    s = {
        "files": len(manifest.files),
        "acked_bytes": 0,
        "intact_bytes": 0,
        "missing_files": 0,
        "wrong_size": 0,
        "wrong_content": 0,
        "wrong_xattrs": 0,
        "missing_dirs": 0,
        "present_but_deleted": 0,
        "problems": [],
    }

    problems = []  # (acknowledged bytes lost, message): the biggest losses are reported first

    def problem(msg, lost=0):
        problems.append((lost, len(problems), msg))

    for rel, f in sorted(manifest.files.items()):
        acked = f.acked_bytes()
        s["acked_bytes"] += acked
        path = os.path.join(root, rel)
        if f.size == 0 and not f.xattrs:  # an empty file: its type and size say it all
            try:
                st = os.lstat(path)
            except OSError as e:
                s["missing_files"] += 1
                problem(f"{rel}: missing ({e.strerror})")
                continue
            if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
                s["wrong_size"] += 1
                problem(f"{rel}: not an empty regular file (mode {st.st_mode:o}, size {st.st_size})")
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            s["missing_files"] += 1
            problem(f"{rel}: cannot open ({e.strerror}); {acked} acknowledged bytes lost", acked)
            continue
        try:
            size = os.fstat(fd).st_size
            if size != f.size:
                s["wrong_size"] += 1
                problem(f"{rel}: size {size}, expected {f.size}")
            bad_at = None
            good = 0
            off = 0
            while off < max(size, f.size):
                n = min(4 * MiB, max(size, f.size) - off)
                actual = os.pread(fd, n, off)
                want = f.expected(off, n)
                want = want + bytes(n - len(want))  # beyond the expected size: must not matter here
                if len(actual) < n:
                    actual = actual + bytes(n - len(actual))
                if actual == want:
                    good += sum(max(0, min(e, off + n) - max(st, off)) for st, e in f.ranges)
                else:
                    g = intact_bytes(actual, want, off, f.ranges)
                    good += g
                    if bad_at is None:
                        i = next(k for k in range(n) if actual[k] != want[k])
                        bad_at = off + i
                off += n
            s["intact_bytes"] += good
            if bad_at is not None:
                s["wrong_content"] += 1
                problem(f"{rel}: content differs from offset {bad_at} ({acked - good} of {acked} acknowledged bytes lost)",
                        acked - good)
            for name, n in f.xattrs.items():
                try:
                    v = os.getxattr(path, name)
                except OSError as e:
                    v = e.strerror
                if v != xattr_value(f.key, name, n):
                    s["wrong_xattrs"] += 1
                    problem(f"{rel}: xattr {name} wrong or missing ({v if isinstance(v, str) else len(v)})")
        finally:
            os.close(fd)
    for rel in sorted(manifest.dirs):
        if not os.path.isdir(os.path.join(root, rel)):
            s["missing_dirs"] += 1
            problem(f"{rel}/: directory missing")
    for rel in sorted(manifest.absent):
        if os.path.lexists(os.path.join(root, rel)):
            s["present_but_deleted"] += 1
            problem(f"{rel}: deleted or renamed away, but present")
    problems.sort(key=lambda p: (-p[0], p[1]))
    s["problems"] = [p[2] for p in problems[:30]]
    s["lost_bytes"] = s["acked_bytes"] - s["intact_bytes"]
    s["ok"] = all(
        s[k] == 0
        for k in ("lost_bytes", "missing_files", "wrong_size", "wrong_content", "wrong_xattrs", "missing_dirs",
                  "present_but_deleted")
    )
    return s


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        res = json.load(f)
    s = verify(Manifest.from_json(res["manifest"]), sys.argv[2])
    with open(sys.argv[3], "w") as f:
        json.dump(s, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
