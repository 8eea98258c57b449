#!/usr/bin/env python3
"""selftest.py ROOT: proves that the ENOSPC suite's checks can fail (run by enospc_selftest_test.sh
on a small tmpfs mounted at ROOT: a file system that fills in a second and whose df is exact).

For each scenario: workload.py fills ROOT/<scenario>; verify.py and judge.py (the run as its own
reference) must find nothing wrong. Then the image is damaged in known ways (a flipped byte, a
shortened file, a removed file, a removed xattr, a deleted path recreated, a removed directory) and
verify.py must report exactly those losses; and the record is altered in known ways (a non-ENOSPC
errno, fewer bytes than the reference, a short write into preallocated space, a failing rm, a df
that was off, an early ENOSPC, an ENOSPC where none may be) and judge.py must fail exactly the
criterion concerned. Prints one "PASS:"/"FAIL:" line per expectation.
"""
import copy
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
failures = 0


def expect(ok, what):
    global failures
    if not ok:
        failures += 1
    print(f"{'PASS' if ok else 'FAIL'}: selftest: {what}")


def run_py(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True)


def judge(result, ver, ref, tmp, extra=()):
    paths = []
    for name, obj in (("r", result), ("v", ver), ("k", ref)):
        p = os.path.join(tmp, f"judge-{name}.json")
        with open(p, "w") as f:
            json.dump(obj, f)
        paths.append(p)
    out = run_py(os.path.join(HERE, "judge.py"), "--result", paths[0], "--verify", paths[1], "--ref", paths[2],
                 "--config", "selftest", "--fs", "selftest", *extra).stdout
    return [line for line in out.splitlines() if line.startswith("FAIL:")], out


def verify(res_path, root, tmp):
    out = os.path.join(tmp, "verify.json")
    p = run_py(os.path.join(HERE, "verify.py"), res_path, root, out)
    if p.returncode != 0:
        print(p.stderr, file=sys.stderr)
        return None
    with open(out) as f:
        return json.load(f)


def mutated(obj, fn):
    o = copy.deepcopy(obj)
    fn(o)
    return o


def expect_judge_fails(name, res, ver, ref, tmp, needle):
    fails, out = judge(res, ver, ref, tmp)
    hit = [f for f in fails if needle in f]
    expect(len(hit) >= 1 and len(hit) == len(fails),
           f"judge fails '{needle}' (and only that) when {name}: {fails if fails else 'no failure'}")


def main():
    root = sys.argv[1]
    tmp = tempfile.mkdtemp(dir=os.path.dirname(root.rstrip("/")))
    results = {}
    for scen in ("files", "concurrent", "parallel", "fill"):
        d = os.path.join(root, scen)
        os.mkdir(d)
        res_path = os.path.join(tmp, f"{scen}.json")
        p = run_py(os.path.join(HERE, "workload.py"), scen, d, res_path, "--deadline", "120")
        expect(p.returncode == 0, f"workload {scen} runs on tmpfs ({p.stderr.strip()[:200]})")
        with open(res_path) as f:
            res = json.load(f)
        ver = verify(res_path, d, tmp)
        expect(ver is not None and ver["ok"] and ver["lost_bytes"] == 0 and ver["acked_bytes"] > 0,
               f"{scen}: verify finds every acknowledged byte ({ver and ver['acked_bytes']} bytes, problems "
               f"{ver and ver['problems'][:3]})")
        fails, out = judge(res, ver, res, tmp)
        expect(not fails, f"{scen}: judge passes an intact run against itself ({fails})")
        results[scen] = (res, ver, res_path, d)
        if scen != "fill":  # tmpfs is small: keep only the fill, which the damage below needs
            subprocess.run(["rm", "-rf", d], check=True)

    # ---- damage to the file system: verify.py must see exactly it --------------------------------------
    res, ver, res_path, d = results["fill"]
    big = max((p for p in res["manifest"]["files"] if p.startswith("fill/")),
              key=lambda p: res["manifest"]["files"][p]["size"])
    with open(os.path.join(d, big), "r+b") as f:  # one flipped byte: one 4 KiB block lost
        f.seek(12345)
        b = f.read(1)
        f.seek(12345)
        f.write(bytes([b[0] ^ 0x40]))
    os.truncate(os.path.join(d, "pre/mode0"), 4 << 20)  # the second half of 8 MiB acknowledged
    os.unlink(os.path.join(d, "probe/file"))  # 64 KiB acknowledged
    os.rmdir(os.path.join(d, "probe/dir"))
    open(os.path.join(d, "d/victim-file"), "w").close()  # deleted by the workload: must stay absent
    with open(os.path.join(d, "d/again"), "ab") as f:  # one byte too many
        f.write(b"x")
    v = verify(res_path, d, tmp)
    want_lost = 4096 + (4 << 20) + (64 << 10)
    expect(v is not None and v["lost_bytes"] == want_lost,
           f"verify counts exactly the bytes lost ({v and v['lost_bytes']}, expected {want_lost})")
    expect(v is not None and v["missing_files"] == 1 and v["wrong_content"] == 3 and v["wrong_size"] == 2
           and v["missing_dirs"] == 1 and v["present_but_deleted"] == 1 and not v["ok"],
           f"verify reports the missing file, the wrong contents and sizes, the missing directory, the "
           f"resurrected path ({v and {k: v[k] for k in ('missing_files', 'wrong_content', 'wrong_size', 'missing_dirs', 'present_but_deleted')}})")
    expect(v is not None and v["problems"] and v["problems"][0].startswith("pre/mode0"),
           f"verify lists the biggest loss first ({v and v['problems'][:1]})")
    # A missing xattr (the fill's only one is probe/file's: check one of the concurrent scenario's
    # kind on a fresh file instead).
    res2 = copy.deepcopy(res)
    res2["manifest"]["files"]["d/rename-dst"]["xattrs"] = {"user.gone": 10}
    p2 = os.path.join(tmp, "fill-xattr.json")
    with open(p2, "w") as f:
        json.dump(res2, f)
    v2 = verify(p2, d, tmp)
    expect(v2 is not None and v2["wrong_xattrs"] == 1, f"verify reports a missing xattr ({v2 and v2['wrong_xattrs']})")
    fails, _ = judge(res, v, res, tmp)
    expect(any("(h) no acknowledged byte is lost" in f for f in fails), "judge fails (h) on the damaged image")

    # ---- altered records: judge.py must fail exactly the criterion concerned ---------------------------
    fres, fver = results["fill"][0], results["fill"][1]

    def add_eio(o):
        o["errors"]["write EIO"] = 1
        o["error_log"].append({"op": "write", "path": "fill/f0000", "errno": "EIO", "t": 0})

    expect_judge_fails("a write failed with EIO", mutated(fres, add_eio), fver, fres, tmp, "failed with ENOSPC")
    expect_judge_fails("the kernel fitted 3 % more", fres, fver,
                       mutated(fres, lambda o: o["figures"]["fill"].update(bytes=int(o["figures"]["fill"]["bytes"] * 1.03))),
                       tmp, "(a) one writer writes at least 98 %")
    expect_judge_fails("a preallocated range took a short write", mutated(
        fres, lambda o: o["figures"]["prealloc_writes"]["pre/mode0"].update(acked=4096)), fver, fres, tmp, "(e)")
    expect_judge_fails("the fallocate before the fill failed", mutated(
        fres, lambda o: o["figures"].update(setup_errors={"fallocate EOPNOTSUPP": 1})), fver, fres, tmp,
        "the setup before the fill")
    expect_judge_fails("rm failed", mutated(fres, lambda o: o["figures"]["full_ops"].update(rm=28)), fver, fres, tmp,
                       "(d) rm")
    expect_judge_fails("the writes after rm failed", mutated(
        fres, lambda o: o["figures"]["full_ops"]["write_again"].update(acked=0, errno="ENOSPC")), fver, fres, tmp,
        "(d) after them")

    def df_off(o):
        for c in o["checkpoints"]:
            if c["label"].startswith("90 %"):
                c["avail"] = int(c["avail"] * 1.05)

    expect_judge_fails("df said 5 % more than then fitted", mutated(fres, df_off), fver, fres, tmp, "(3)")

    # With the writeback cache's held bytes (judge --held): up to that much more than Avail may be
    # written after a df, never less than Avail.
    def df_low(by):
        def fn(o):
            for c in o["checkpoints"]:
                if c["label"].startswith("90 %"):
                    c["avail"] -= by
        return fn

    held = 4 * 1024 * 1024
    fails, _ = judge(mutated(fres, df_low(held // 2)), fver, fres, tmp, ("--held", str(held)))
    expect(not any("(3)" in f for f in fails), f"judge --held {held}: df under what fits by half of it passes (3) "
           f"({fails if fails else 'no failure'})")
    fails, _ = judge(mutated(fres, df_low(2 * held)), fver, fres, tmp, ("--held", str(held)))
    expect(any("(3)" in f for f in fails), f"judge --held {held}: df under what fits by twice it fails (3)")
    fails, _ = judge(mutated(fres, df_off), fver, fres, tmp, ("--held", str(held)))
    expect(any("(3)" in f for f in fails), f"judge --held {held}: df 5 % over what fits still fails (3)")
    expect_judge_fails("the probe could not write", mutated(fres, lambda o: o["figures"]["probe"].update(ok=False)),
                       fver, fres, tmp, "(g) the file system stays writable")

    cres, cver = results["concurrent"][0], results["concurrent"][1]
    expect_judge_fails("the first ENOSPC came with 5 % free", mutated(
        cres, lambda o: o["figures"]["first_enospc"]["df_raw"].update(avail=o["figures"]["first_enospc"]["df_raw"]["size"] // 20)),
        cver, cres, tmp, "(c)")

    bres, bver = results["files"][0], results["files"][1]
    expect_judge_fails("the kernel made 2 % more 4 KiB files", bres, bver, mutated(
        bres, lambda o: o["figures"]["files_4k"].update(count=int(o["figures"]["files_4k"]["count"] * 1.02) + 1)),
        tmp, "4 KiB files as the kernel")
    expect_judge_fails("the kernel made 3 % more files", bres, bver, mutated(
        bres, lambda o: o["figures"].update(files_total=int(o["figures"]["files_total"] * 1.03) + 1)),
        tmp, "(b) as many files")

    pres, pver = results["parallel"][0], results["parallel"][1]

    def early_enospc(o):
        o["errors"]["fallocate ENOSPC"] = 1
        o["figures"]["write_and_fallocate"].update(fallocated=0, fallocate_errno="ENOSPC")

    fails, _ = judge(mutated(pres, early_enospc), pver, pres, tmp)
    expect(any("(f) no call failed" in f for f in fails) and any("fallocate at once" in f for f in fails),
           f"judge fails (f) on an ENOSPC where everything fits ({fails})")
    print(f"selftest: {failures} expectation(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
