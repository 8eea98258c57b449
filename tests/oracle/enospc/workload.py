#!/usr/bin/env python3
"""The ENOSPC workload driver: fills a mounted file system and records exactly what it acknowledged.

usage: workload.py SCENARIO ROOT OUT.json [--deadline SECONDS]

Scenarios (issue 7, acceptance 2 and 3; the letters are the acceptance's):
  fill        (a) one writer to ENOSPC, (d) rm/rmdir/truncate/rename-over on the full fs then a new
              write, (e) writes into ranges preallocated before the fill
  files       (b) 4 KiB files until ENOSPC, then empty files until ENOSPC
  concurrent  (c) 4 writers plus mkdir, create and setxattr loops to full; the free fraction df shows
              at the first ENOSPC
  parallel    (f) 4 writers totalling half of df's Avail; then a writer and a fallocate loop, 40 % of
              Avail each, at once
Every scenario ends with a probe (g): delete some data, then a create, a 64 KiB write, a mkdir and a
setxattr must succeed.

Every write()'s return value is recorded: the bytes it returned are acknowledged, a short write
counts for what it returned. Every failing call is recorded with its errno. statvfs is taken at
checkpoints (after syncfs: df's Avail "at that moment", all data written so far accounted) and at
sample points without a sync. OUT.json holds the figures, the errors, the checkpoints and the
manifest (model.py) from which verify.py checks every acknowledged byte on the unmounted image.
"""
import argparse
import ctypes
import errno
import json
import os
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import BLOCK, KiB, MiB, FileModel, Manifest, content, xattr_value  # noqa: E402

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
FALLOC_FL_KEEP_SIZE = 1


class Run:
    """One scenario's state: the manifest, the error record, the statvfs record."""

    def __init__(self, root, scenario, deadline):
        self.root = root
        self.scenario = scenario
        self.m = Manifest()
        self.lock = threading.Lock()
        self.errors = {}  # "op errno-name" -> count
        self.error_log = []  # the first failures, in order
        self.acked = 0  # data bytes write() acknowledged, all phases
        self.fill_acked = 0  # data bytes acknowledged by the fill phase (what (3) compares)
        self.checkpoints = []
        self.samples = []
        self.figures = {}
        self.t0 = time.monotonic()
        self.deadline = self.t0 + deadline
        self.timed_out = False

    def path(self, rel):
        return os.path.join(self.root, rel)

    def now(self):
        return round(time.monotonic() - self.t0, 3)

    def out_of_time(self):
        if time.monotonic() > self.deadline:
            self.timed_out = True
        return self.timed_out

    # ---- statvfs ------------------------------------------------------------------------------------
    def statvfs(self):
        s = os.statvfs(self.root)
        return {
            "avail": s.f_bavail * s.f_frsize,
            "free": s.f_bfree * s.f_frsize,
            "size": s.f_blocks * s.f_frsize,
            "t": self.now(),
        }

    def syncfs(self):
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if libc.syncfs(fd) != 0:
                e = ctypes.get_errno()
                self.failed("syncfs", ".", OSError(e, os.strerror(e)))
        finally:
            os.close(fd)

    def checkpoint(self, label):
        """syncfs, then statvfs: df's Avail at this moment, with the fill bytes written so far."""
        self.syncfs()
        s = self.statvfs()
        with self.lock:
            s.update(label=label, written=self.fill_acked, acked=self.acked)
            self.checkpoints.append(s)
        return s

    def sample(self, label):
        """statvfs without a sync."""
        s = self.statvfs()
        with self.lock:
            s.update(label=label, written=self.fill_acked, acked=self.acked)
            if len(self.samples) < 2000:
                self.samples.append(s)
        return s

    # ---- operations: each returns 0 or the errno, records failures and updates the manifest ---------
    def failed(self, op, rel, e, **ctx):
        name = errno.errorcode.get(e.errno, str(e.errno))
        with self.lock:
            k = f"{op} {name}"
            self.errors[k] = self.errors.get(k, 0) + 1
            if len(self.error_log) < 200:
                self.error_log.append(dict(op=op, path=rel, errno=name, t=self.now(), **ctx))
        return e.errno

    def mkdir(self, rel):
        try:
            os.mkdir(self.path(rel))
        except OSError as e:
            return self.failed("mkdir", rel, e)
        with self.lock:
            self.m.dirs.add(rel)
        return 0

    def create(self, rel):
        """(fd, 0) or (None, errno): a new empty file."""
        try:
            fd = os.open(self.path(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            return None, self.failed("create", rel, e)
        with self.lock:
            self.m.files[rel] = FileModel(rel)
        return fd, 0

    def open(self, rel):
        try:
            return os.open(self.path(rel), os.O_WRONLY), 0
        except OSError as e:
            return None, self.failed("open", rel, e)

    def write(self, fd, rel, off, n, fill=False):
        """One pwrite of n bytes of rel's content at off: (bytes acknowledged, 0 or errno)."""
        f = self.m.files[rel]
        try:
            done = os.pwrite(fd, content(f.key, off, n), off)
        except OSError as e:
            return 0, self.failed("write", rel, e, off=off, len=n)
        with self.lock:
            f.written(off, done)
            self.acked += done
            if fill:
                self.fill_acked += done
        if done == 0:  # write(2) returning 0 for n > 0 would loop forever: treat as a failure
            return 0, self.failed("write", rel, OSError(errno.EIO, "write returned 0"), off=off, len=n)
        return done, 0

    def close(self, fd, rel):
        try:
            os.close(fd)
        except OSError as e:
            return self.failed("close", rel, e)
        return 0

    def fallocate(self, rel, fd, mode, off, n):
        if libc.fallocate(fd, mode, off, n) != 0:
            e = ctypes.get_errno()
            return self.failed("fallocate", rel, OSError(e, os.strerror(e)), mode=mode, off=off, len=n)
        if not mode & FALLOC_FL_KEEP_SIZE:
            with self.lock:
                self.m.files[rel].extended(off + n)
        return 0

    def unlink(self, rel):
        try:
            os.unlink(self.path(rel))
        except OSError as e:
            return self.failed("unlink", rel, e)
        with self.lock:
            self.m.files.pop(rel, None)
            self.m.absent.add(rel)
        return 0

    def rmdir(self, rel):
        try:
            os.rmdir(self.path(rel))
        except OSError as e:
            return self.failed("rmdir", rel, e)
        with self.lock:
            self.m.dirs.discard(rel)
            self.m.absent.add(rel)
        return 0

    def truncate(self, rel, size):
        try:
            os.truncate(self.path(rel), size)
        except OSError as e:
            return self.failed("truncate", rel, e, size=size)
        with self.lock:
            self.m.files[rel].truncated(size)
        return 0

    def rename(self, a, b):
        try:
            os.rename(self.path(a), self.path(b))
        except OSError as e:
            return self.failed("rename", a, e, to=b)
        with self.lock:
            self.m.files[b] = self.m.files.pop(a)
            self.m.absent.add(a)
            self.m.absent.discard(b)
        return 0

    def setxattr(self, rel, name, n):
        try:
            os.setxattr(self.path(rel), name, xattr_value(self.m.files[rel].key, name, n))
        except OSError as e:
            return self.failed("setxattr", rel, e, name=name)
        with self.lock:
            self.m.files[rel].xattrs[name] = n
        return 0

    # ---- compound steps ------------------------------------------------------------------------------
    def write_file(self, rel, size, chunk=MiB, fill=False):
        """Create rel and write size bytes in chunk-sized writes. Returns (acked, errno of the first failure)."""
        fd, err = self.create(rel)
        if err:
            return 0, err
        acked, err = self.write_range(fd, rel, 0, size, chunk, fill)
        cerr = self.close(fd, rel)
        return acked, err or cerr

    def write_range(self, fd, rel, off, size, chunk, fill=False):
        acked = 0
        while acked < size:
            done, err = self.write(fd, rel, off + acked, min(chunk, size - acked), fill)
            acked += done
            if err:
                return acked, err
        return acked, 0

    def result(self):
        return {
            "scenario": self.scenario,
            "figures": self.figures,
            "errors": self.errors,
            "error_log": self.error_log,
            "checkpoints": self.checkpoints,
            "samples": self.samples,
            "acked_bytes": self.acked,
            "fill_acked": self.fill_acked,
            "timed_out": self.timed_out,
            "seconds": self.now(),
            "manifest": self.m.to_json(),
        }


class Gate:
    """Lets the main thread stop every worker between two operations (for a synced statvfs that no
    write in flight disturbs). Workers call gate() before each operation; pause() returns once every
    registered worker is parked in gate() or finished."""

    def __init__(self):
        self.cv = threading.Condition()
        self.paused = False
        self.parked = 0
        self.active = 0

    def enter(self):
        with self.cv:
            self.active += 1

    def leave(self):
        with self.cv:
            self.active -= 1
            self.cv.notify_all()

    def gate(self):
        with self.cv:
            if not self.paused:
                return
            self.parked += 1
            self.cv.notify_all()
            while self.paused:
                self.cv.wait()
            self.parked -= 1

    def pause(self, timeout=120):
        with self.cv:
            self.paused = True
            end = time.monotonic() + timeout
            while self.parked < self.active:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
            return True

    def resume(self):
        with self.cv:
            self.paused = False
            self.cv.notify_all()


def fill_writer(run, dirrel, file_max, chunks, gate=None, hook=None):
    """Writes dirrel/f0000, f0001, ... of file_max bytes each in chunks[0]-sized writes; after an
    ENOSPC goes on with the next smaller chunk size, and stops at an ENOSPC of the smallest one (the
    file system is full) or at any other error. Returns a summary."""
    ci = 0
    i = 0
    files = 0
    while True:
        rel = f"{dirrel}/f{i:04}"
        if gate:
            gate()
        if run.out_of_time():
            return {"files": files, "end": "timeout"}
        fd, err = run.create(rel)
        if err:
            return {"files": files, "end": f"create {errno.errorcode.get(err, err)}"}
        files += 1
        off = 0
        while off < file_max:
            if gate:
                gate()
            if run.out_of_time():
                run.close(fd, rel)
                return {"files": files, "end": "timeout"}
            n = min(chunks[ci], file_max - off)
            done, err = run.write(fd, rel, off, n, fill=True)
            off += done
            if hook:
                hook()
            if err == errno.ENOSPC:
                ci += 1
                if ci == len(chunks):
                    run.close(fd, rel)
                    return {"files": files, "end": "write ENOSPC", "chunk_sizes_tried": list(chunks)}
            elif err:
                run.close(fd, rel)
                return {"files": files, "end": f"write {errno.errorcode.get(err, err)}"}
        if run.close(fd, rel):
            return {"files": files, "end": "close error"}
        i += 1


def probe_setup(run):
    """Before a fill: the directory of the probe and the 1 MiB it will delete (4 files of 256 KiB)."""
    run.mkdir("probe")
    for k in range(4):
        run.write_file(f"probe/victim{k}", 256 * KiB)


def probe(run, more_victims=()):
    """(g) the file system stays writable: after deleting the 1 MiB probe_setup wrote, a create, a
    64 KiB write, a mkdir and a setxattr must all succeed. A file system whose metadata is full
    (the files scenario) needs more than 1 MiB of data freed: then more_victims are deleted, 500 at
    a time, until each of them succeeds (the count is reported)."""
    res = {"deleted": 0, "freed": 0, "tries": 0}
    victims = [f"probe/victim{k}" for k in range(4)]
    more = list(more_victims)
    rel = "probe/file"
    while True:
        for v in victims:
            f = run.m.files.get(v)
            if f is None:
                continue
            size = f.acked_bytes()
            err = run.unlink(v)
            if err:
                res["unlink"] = errname(err)
                break
            res["freed"] += size
            res["deleted"] += 1
        if "unlink" in res:
            break
        res["tries"] += 1
        if rel not in run.m.files:
            fd, err = run.create(rel)
            if err == errno.ENOSPC and more:
                victims, more = more[:500], more[500:]
                continue
            if err:
                res["create"] = errname(err)
                break
            run.close(fd, rel)
        fd, err = run.open(rel)
        if err:
            res["open"] = errname(err)
            break
        acked, err = run.write_range(fd, rel, 0, 64 * KiB, 64 * KiB)
        run.close(fd, rel)
        if err == errno.ENOSPC and more:
            victims, more = more[:500], more[500:]
            continue
        res["write"] = errname(err)
        res["write_acked"] = acked
        break
    def delete_more():
        nonlocal more
        batch, more = more[:500], more[500:]
        for v in batch:
            f = run.m.files.get(v)
            if f is None:
                continue
            size = f.acked_bytes()
            if run.unlink(v):
                return False
            res["freed"] += size
            res["deleted"] += 1
        res["tries"] += 1
        return True

    if "write" in res:
        # A full metadata space may need more deleted before each of these too (as for the create).
        while True:
            err = run.mkdir("probe/dir")
            if err == errno.ENOSPC and more and delete_more():
                continue
            res["mkdir"] = errname(err)
            break
        while True:
            err = run.setxattr(rel, "user.probe", 64)
            if err == errno.ENOSPC and more and delete_more():
                continue
            res["setxattr"] = errname(err)
            break
    res["ok"] = (res.get("write") == 0 and res.get("write_acked") == 64 * KiB and res.get("mkdir") == 0
                 and res.get("setxattr") == 0)
    run.figures["probe"] = res


def errname(err):
    return errno.errorcode.get(err, str(err)) if err else 0


# ---- scenarios ---------------------------------------------------------------------------------------
def scenario_fill(run):
    """(a) (d) (e): setup, the fill, writes into the preallocated ranges, the full-fs operations."""
    fig = run.figures
    for d in ("pre", "d", "d/victim-dir", "fill"):
        run.mkdir(d)
    probe_setup(run)
    # (e) preallocated before the fill: 8 MiB mode 0 (size 8 MiB), 2 MiB KEEP_SIZE (size stays 0).
    prealloc = {"pre/mode0": (0, 8 * MiB), "pre/keep": (FALLOC_FL_KEEP_SIZE, 2 * MiB)}
    for rel, (mode, n) in prealloc.items():
        fd, err = run.create(rel)
        if not err:
            run.fallocate(rel, fd, mode, 0, n)
            run.close(fd, rel)
    # (d) what the full file system will delete, truncate and rename over.
    for rel, size in (("d/victim-file", MiB), ("d/trunc", 2 * MiB), ("d/rename-src", 64 * KiB), ("d/rename-dst", MiB)):
        run.write_file(rel, size)
    fig["setup_errors"] = dict(run.errors)
    start = run.checkpoint("fill start")
    a0 = start["avail"]
    marks = [0.5, 0.9]
    state = {"next": 0}

    def hook():
        while state["next"] < len(marks) and run.fill_acked >= marks[state["next"]] * a0:
            run.checkpoint(f"{int(marks[state['next']] * 100)} % of the start Avail written")
            state["next"] += 1
        if len(run.samples) < 400 and run.fill_acked // (4 * MiB) >= len(run.samples):
            run.sample("during the fill")

    summary = fill_writer(run, "fill", 64 * MiB, (MiB, 64 * KiB, BLOCK), hook=hook)
    fig["fill"] = dict(summary, bytes=run.fill_acked, start_avail=a0)
    fig["full_raw"] = run.sample("full, no sync")
    fig["full"] = run.checkpoint("full")

    # (e) writes into the preallocated ranges of a 100 % full file system.
    e = {}
    for rel, (mode, n) in prealloc.items():
        if rel not in run.m.files:
            e[rel] = {"wanted": n, "acked": 0, "errno": "not created"}
            continue
        fd, err = run.open(rel)
        acked = 0
        if not err:
            acked, err = run.write_range(fd, rel, 0, n, 256 * KiB)
            cerr = run.close(fd, rel)
            err = err or cerr
        e[rel] = {"wanted": n, "acked": acked, "errno": errname(err)}
    fig["prealloc_writes"] = e

    # (d) on the full file system, then a new write of 2 MiB without a remount.
    d = {
        "rm": errname(run.unlink("d/victim-file")),
        "rmdir": errname(run.rmdir("d/victim-dir")),
        "truncate": errname(run.truncate("d/trunc", 0)),
        "rename_over": errname(run.rename("d/rename-src", "d/rename-dst")),
    }
    acked, err = run.write_file("d/again", 2 * MiB)
    d["write_again"] = {"wanted": 2 * MiB, "acked": acked, "errno": errname(err)}
    fig["full_ops"] = d
    probe(run)


def scenario_files(run):
    """(b) 4 KiB files until ENOSPC, then empty files until ENOSPC, 1000 to a directory."""
    fig = run.figures
    run.mkdir("files")
    probe_setup(run)
    fig["setup_errors"] = dict(run.errors)
    a0 = run.checkpoint("fill start")["avail"]
    marks = [0.5, 0.9]
    state = {"i": 0, "dir": None, "mark": 0}

    def make_files(kind, size):
        """Files of size bytes (one write) until a call fails: (count, the call and errno that ended)."""
        count = 0
        while True:
            i = state["i"]
            d = f"files/d{i // 1000:04}"
            if d != state["dir"]:
                err = run.mkdir(d)
                if err:
                    return count, f"mkdir {errname(err)}"
                state["dir"] = d
            if run.out_of_time():
                return count, "timeout"
            rel = f"{d}/{kind}{i % 1000:03}"
            fd, err = run.create(rel)
            if err:
                return count, f"create {errname(err)}"
            if size:
                _, err = run.write(fd, rel, 0, size, fill=True)
                cerr = run.close(fd, rel)
                if err or cerr:
                    return count, f"write {errname(err)}" if err else f"close {errname(cerr)}"
            elif run.close(fd, rel):
                return count, "close error"
            count += 1
            state["i"] += 1
            while state["mark"] < len(marks) and run.fill_acked >= marks[state["mark"]] * a0:
                run.checkpoint(f"{int(marks[state['mark']] * 100)} % of the start Avail written")
                state["mark"] += 1

    t = time.monotonic()
    n4k, end = make_files("f", BLOCK)
    fig["files_4k"] = {"count": n4k, "end": end, "bytes": run.fill_acked, "start_avail": a0,
                       "seconds": round(time.monotonic() - t, 1)}
    fig["full_raw"] = run.sample("4 KiB files full, no sync")
    fig["full"] = run.checkpoint("4 KiB files full")
    # Empty files go on in the same directories (the last one may have room left).
    t = time.monotonic()
    nempty, end = make_files("e", 0)
    fig["files_empty"] = {"count": nempty, "end": end, "seconds": round(time.monotonic() - t, 1)}
    fig["files_total"] = n4k + nempty
    fig["empty_full"] = run.checkpoint("empty files full")
    # The metadata is full: the probe may delete files, the empty ones last made first.
    probe(run, [r for r in sorted(run.m.files, reverse=True) if r.startswith("files/")])


def scenario_concurrent(run):
    """(c) 4 writers + mkdir, create and setxattr loops until the writers are full."""
    fig = run.figures
    for d in ("c", "c/dirs", "c/files", "c/xattr") + tuple(f"c/w{k}" for k in range(4)):
        run.mkdir(d)
    probe_setup(run)
    fig["setup_errors"] = dict(run.errors)
    gate = Gate()
    start = run.checkpoint("fill start")
    a0 = start["avail"]
    first = {}
    first_event = threading.Event()
    writers_done = threading.Event()
    wake = threading.Event()
    pending = []  # checkpoints asked for: the asking thread has already closed the gate

    def request(label):
        with gate.cv:
            gate.paused = True
            pending.append(label)
        wake.set()

    orig_failed = run.failed

    def failed(op, rel, e, **ctx):
        r = orig_failed(op, rel, e, **ctx)
        if e.errno == errno.ENOSPC and not first_event.is_set():
            with run.lock:
                if first:
                    return r
                first.update(op=op, path=rel, thread=threading.current_thread().name, t=run.now())
            first["df_raw"] = run.statvfs()  # at once, in the failing thread
            first["written"] = run.fill_acked
            first_event.set()
            request("first ENOSPC (all workers paused, synced)")
        return r

    run.failed = failed
    marks = [0.5, 0.9]
    nxt = [0]

    def hook():
        """After each write of a writer: at 50 % and 90 % of the start Avail, a paused checkpoint."""
        with run.lock:
            if first or nxt[0] >= len(marks) or run.fill_acked < marks[nxt[0]] * a0:
                return
            label = f"{int(marks[nxt[0]] * 100)} % of the start Avail written (all workers paused)"
            nxt[0] += 1
        request(label)

    ops_per_mib = 32  # metadata loops keep pace with the data: 32 operations per MiB written

    def paced(k):
        """Waits until the writers have written enough for the k-th metadata operation."""
        while run.fill_acked < k * MiB // ops_per_mib and not writers_done.is_set():
            gate.gate()
            if run.out_of_time():
                return False
            time.sleep(0.002)
        gate.gate()
        return not writers_done.is_set() and not run.out_of_time()

    counts = {}

    def meta_loop(kind):
        k = 0
        end = "writers done"
        while paced(k):
            if kind == "mkdir":
                err = run.mkdir(f"c/dirs/d{k:06}")
            elif kind == "create":
                rel = f"c/files/f{k:06}"
                fd, err = run.create(rel)
                if not err:
                    err = run.close(fd, rel)
            else:
                rel = f"c/xattr/x{k // 32:05}"
                err = 0
                if k % 32 == 0:
                    fd, err = run.create(rel)
                    if not err:
                        err = run.close(fd, rel)
                if not err:
                    err = run.setxattr(rel, f"user.a{k % 32:02}", 200)
            if err:
                end = f"{kind} {errname(err)}"
                break
            k += 1
        counts[kind] = {"ops": k, "end": end}

    writer_res = {}

    def writer(k):
        writer_res[k] = fill_writer(run, f"c/w{k}", 16 * MiB, (256 * KiB, 64 * KiB, BLOCK), gate=gate.gate, hook=hook)

    def runner(fn, *args):
        def body():
            try:
                fn(*args)
            finally:
                gate.leave()

        gate.enter()
        th = threading.Thread(target=body, name=f"{fn.__name__}{args}")
        th.start()
        return th

    writers = [runner(writer, k) for k in range(4)]
    loops = [runner(meta_loop, kind) for kind in ("mkdir", "create", "setxattr")]
    last_sample = 0.0
    while True:
        alive = any(th.is_alive() for th in writers)
        if pending:
            paused = gate.pause()
            cp = None
            for label in list(pending):
                cp = run.checkpoint(label)
                if label.startswith("first ENOSPC"):
                    first["df_synced"] = cp
                    first["all_paused"] = paused
            pending.clear()
            gate.resume()
        if not alive:
            break
        if time.monotonic() - last_sample > 0.1:
            last_sample = time.monotonic()
            run.sample("periodic")
        wake.wait(0.05)
        wake.clear()
    writers_done.set()
    for th in writers + loops:
        th.join()
    run.failed = orig_failed
    fig["fill"] = {"bytes": run.fill_acked, "start_avail": a0, "writers": writer_res}
    fig["meta_loops"] = counts
    fig["first_enospc"] = first or None
    pre = [s for s in run.samples if first and s["t"] <= first["t"]]
    fig["last_sample_before_first_enospc"] = pre[-1] if pre else None
    fig["full_raw"] = run.sample("full, no sync")
    fig["full"] = run.checkpoint("full")
    probe(run)


def scenario_parallel(run):
    """(f) no ENOSPC while what is written fits: 4 writers, half of Avail; then a writer and a
    fallocate loop at once, 40 % of Avail each."""
    fig = run.figures
    run.mkdir("p")
    probe_setup(run)
    fig["setup_errors"] = dict(run.errors)
    a = run.checkpoint("start")["avail"]
    share = (a // 8) // BLOCK * BLOCK
    res = {}

    def writer(k):
        res[k] = run.write_file(f"p/t{k}", share, chunk=MiB)

    ths = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    fig["four_writers"] = {"avail": a, "wanted": 4 * share, "acked": sum(r[0] for r in res.values()),
                           "errnos": [errname(r[1]) for r in res.values()]}

    a2 = run.checkpoint("after the four writers")["avail"]
    part = int(a2 * 0.4) // MiB * MiB
    out = {}

    def w():
        out["write"] = run.write_file("p/w", part, chunk=MiB)

    def falloc():
        fd, err = run.create("p/falloc")
        done = 0
        while not err and done < part:
            n = min(4 * MiB, part - done)
            err = run.fallocate("p/falloc", fd, 0, done, n)
            if not err:
                done += n
        if fd is not None:
            err = err or run.close(fd, "p/falloc")
        out["fallocate"] = (done, err)

    ths = [threading.Thread(target=w), threading.Thread(target=falloc)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    fig["write_and_fallocate"] = {
        "avail": a2,
        "wanted_each": part,
        "written": out["write"][0],
        "write_errno": errname(out["write"][1]),
        "fallocated": out["fallocate"][0],
        "fallocate_errno": errname(out["fallocate"][1]),
    }
    fig["end"] = run.checkpoint("end")
    probe(run)


SCENARIOS = {"fill": scenario_fill, "files": scenario_files, "concurrent": scenario_concurrent,
             "parallel": scenario_parallel}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("root")
    ap.add_argument("out")
    ap.add_argument("--deadline", type=float, default=1200, help="seconds; the workload stops and reports a timeout")
    args = ap.parse_args()
    run = Run(args.root, args.scenario, args.deadline)
    crash = None
    try:
        SCENARIOS[args.scenario](run)
    except Exception as e:  # the record so far is still written: it says what was acknowledged
        crash = f"{type(e).__name__}: {e}"
        print(f"workload {args.scenario}: {crash}", file=sys.stderr)
    res = run.result()
    res["crash"] = crash
    with open(args.out, "w") as f:
        json.dump(res, f)
    return 0 if crash is None else 2


if __name__ == "__main__":
    sys.exit(main())
