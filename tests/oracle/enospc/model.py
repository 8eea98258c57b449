"""The expected state of what an ENOSPC workload acknowledged, shared by workload.py (which builds it)
and verify.py (which checks an image against it).

Content is deterministic: the 4 KiB block number i of a file whose content key is K holds
  K's 8-byte id | i as little-endian u64 | 4080 bytes of K's pattern
so a verifier recomputes every byte from the manifest alone, and a block found at the wrong offset or
in the wrong file is told apart from the right one. The key is the path the file was created at; a
rename keeps it.

A FileModel holds the file's expected size and the byte ranges whose content some write() reported
written (only the bytes it returned: a short write acknowledges exactly its return value). Every
other byte below the size reads as zero (holes, preallocated ranges, the tail a truncate left).
"""
import hashlib
import struct

BLOCK = 4096
KiB = 1 << 10
MiB = 1 << 20

_patterns = {}


def _pattern(key):
    p = _patterns.get(key)
    if p is None:
        seed = hashlib.sha256(key.encode()).digest()
        out = bytearray()
        counter = 0
        while len(out) < BLOCK:
            out += hashlib.sha256(seed + struct.pack("<Q", counter)).digest()
            counter += 1
        p = (seed[:8], bytes(out[: BLOCK - 16]))
        if len(_patterns) > 4096:
            _patterns.clear()
        _patterns[key] = p
    return p


def content(key, off, n):
    """The n bytes of file key K's content starting at byte offset off."""
    if n <= 0:
        return b""
    ident, tail = _pattern(key)
    first, last = off // BLOCK, (off + n - 1) // BLOCK
    buf = b"".join(ident + struct.pack("<Q", i) + tail for i in range(first, last + 1))
    start = off - first * BLOCK
    return buf[start : start + n]


def xattr_value(path, name, n):
    """The value setxattr gave attribute name of the file created at path."""
    return content(f"xattr:{path}:{name}", 0, n)


class FileModel:
    __slots__ = ("key", "size", "ranges", "xattrs")

    def __init__(self, key, size=0, ranges=None, xattrs=None):
        self.key = key
        self.size = size
        self.ranges = ranges if ranges is not None else []  # sorted, disjoint [start, end)
        self.xattrs = xattrs if xattrs is not None else {}  # name -> value length

    def written(self, off, n):
        """n bytes at off acknowledged by write()."""
        if n <= 0:
            return
        start, end = off, off + n
        kept = []
        for s, e in self.ranges:
            if e < start or s > end:
                kept.append((s, e))
            else:
                start, end = min(s, start), max(e, end)
        kept.append((start, end))
        kept.sort()
        self.ranges = kept
        self.size = max(self.size, off + n)

    def extended(self, size):
        """fallocate mode 0 or a truncate upwards: zeros up to size."""
        self.size = max(self.size, size)

    def truncated(self, size):
        self.ranges = [(s, min(e, size)) for s, e in self.ranges if s < size]
        self.size = size

    def acked_bytes(self):
        return sum(e - s for s, e in self.ranges)

    def to_json(self):
        d = {"key": self.key, "size": self.size, "ranges": self.ranges}
        if self.xattrs:
            d["xattrs"] = self.xattrs
        return d

    @staticmethod
    def from_json(d):
        return FileModel(d["key"], d["size"], [tuple(r) for r in d["ranges"]], d.get("xattrs", {}))

    def expected(self, off, n):
        """The n bytes the file must hold at off (n may run past the size: zeros are not padded)."""
        end = min(off + n, self.size)
        if end <= off:
            return b""
        out = bytearray(end - off)
        for s, e in self.ranges:
            a, b = max(s, off), min(e, end)
            if a < b:
                out[a - off : b - off] = content(self.key, a, b - a)
        return bytes(out)


class Manifest:
    """Paths relative to the workload's root: files (FileModel), dirs, and paths that must be absent."""

    def __init__(self):
        self.files = {}
        self.dirs = set()
        self.absent = set()

    def to_json(self):
        return {
            "files": {p: f.to_json() for p, f in sorted(self.files.items())},
            "dirs": sorted(self.dirs),
            "absent": sorted(self.absent),
        }

    @staticmethod
    def from_json(d):
        m = Manifest()
        m.files = {p: FileModel.from_json(f) for p, f in d["files"].items()}
        m.dirs = set(d["dirs"])
        m.absent = set(d["absent"])
        return m
