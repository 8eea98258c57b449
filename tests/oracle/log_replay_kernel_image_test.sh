#!/usr/bin/env bash
# Log tree replay of kernel-made crash images (issue 9, acceptance 2; fs/tree_log_replay.h).
#
# For each scenario: mkfs.ubtrfs an image, mount it with the kernel (commit=300 so no transaction
# commit happens on its own), build a committed baseline (sync), make the scenario's changes and
# fsync them (so they are only in the log tree), copy the image while still mounted (a power cut:
# FORMAT.md §7.6), unmount. The copy must have log_root != 0. Then:
#   - the kernel mounts one copy of the crash image (it replays the log): its manifest is the
#     reference;
#   - ubtrfs mounts another copy read-write (it replays the log): its live manifest must equal the
#     kernel's, and so must the manifest after the unmount seen by the kernel (check_clean_full:
#     btrfs check original/lowmem/data csums, kernel read of every file, fsck.ubtrfs);
#   - the ubtrfs-replayed image has log_root 0.
# Manifests (images/manifest.sh) compare names, types, modes, sizes, link counts, content hashes and
# xattrs; mtimes are compared for files only (a directory that gains a name during replay gets the
# replay's time, in either implementation).
# Also: a read-only ubtrfs mount of a crash image ignores the log (committed state) and leaves the
# image byte-identical; -o nologreplay refuses read-write, image unchanged.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../../images/manifest.sh disable=SC1091
source "$UBTRFS_SRC/images/manifest.sh"

require_ubtrfs
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
command -v setfattr >/dev/null || skip_or_fail "setfattr not installed"
command -v fallocate >/dev/null || skip_or_fail "fallocate not installed"

tmp=$(make_tmpdir)
MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
CORRUPT=$UBTRFS_BIN/corrupt/ubtrfs-corrupt

# do_fsync PATH...: fsync(2) of each path (files and directories).
do_fsync() {
  python3 -c '
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)' "$@"
}
# gen SEED SIZE FILE: deterministic random content.
gen() { python3 -c 'import random,sys; sys.stdout.buffer.write(random.Random(sys.argv[1]).randbytes(int(sys.argv[2])))' "$1" "$2" >"$3"; }
# pwrite_at FILE OFFSET SIZE SEED: overwrite in place (no truncation).
pwrite_at() {
  python3 -c '
import os, random, sys
f, off, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fd = os.open(f, os.O_WRONLY)
os.pwrite(fd, random.Random(seed).randbytes(n), off)
os.close(fd)' "$@"
}
# manifest for comparison: directories' mtime blanked (field 9).
manifest_cmp() { manifest_of "$1" | awk -F'\t' -v OFS='\t' '$2 == "d" { $9 = "-" } { print }'; }

# The committed baseline every scenario starts from.
baseline() {
  local m=$1
  mkdir "$m/d" "$m/e"
  echo "base file" >"$m/d/f"
  gen 1 65536 "$m/d/small"
  gen 2 1048576 "$m/big"
  setfattr -n user.a -v one "$m/d/f"
  setfattr -n user.b -v two "$m/d/f"
  echo victim >"$m/d/gone"
  mkdir "$m/d/sub"
  echo inner >"$m/d/sub/x"
  sync
}

# The scenarios: each changes the mounted filesystem and fsyncs.
sc_new_file() { echo "fresh data" >"$1/d/new"; do_fsync "$1/d/new"; }
sc_append() { gen 3 12288 "$tmp/app" && cat "$tmp/app" >>"$1/d/small"; do_fsync "$1/d/small"; }
sc_overwrite_middle() { pwrite_at "$1/big" 524288 8192 4; do_fsync "$1/big"; }
sc_truncate() { truncate -s 100000 "$1/big"; do_fsync "$1/big"; }
sc_punch_hole() { fallocate -p -o 262144 -l 131072 "$1/big"; do_fsync "$1/big"; }
sc_hard_link() { ln "$1/d/f" "$1/e/f-link"; do_fsync "$1/d/f"; }
# A rename to another directory is logged (rather than committed) when the file was already in
# this transaction's log: the old directory is logged with DIR_LOG_INDEX ranges that delete the
# old name at replay.
sc_rename() {
  gen 6 4096 "$tmp/app" && cat "$tmp/app" >>"$1/d/small"
  do_fsync "$1/d/small"
  mv "$1/d/small" "$1/e/renamed"
  do_fsync "$1/e/renamed"
}
sc_rename_same_dir() { mv "$1/d/small" "$1/d/renamed"; do_fsync "$1/d/renamed"; }
sc_xattr() { setfattr -n user.c -v three "$1/d/f"; setfattr -x user.a "$1/d/f"; do_fsync "$1/d/f"; }
sc_new_dir() { mkdir "$1/n"; gen 5 20000 "$1/n/x"; do_fsync "$1/n/x"; do_fsync "$1/n"; }
sc_unlink_dir_fsync() { rm "$1/d/gone"; do_fsync "$1/d"; }
# The subvolume root logged: its ".." ref (256, INODE_REF, 256) must not become a name.
sc_root_dir_fsync() { echo r >"$1/rootfile"; rm "$1/big"; do_fsync "$1"; }
# A directory removed with its contents, the parent fsynced: replay removes the whole subtree.
sc_rmdir_tree() { rm -rf "$1/d/sub"; do_fsync "$1/d"; }
# Symlink, fifo and a preallocated file, parent fsynced.
sc_special() {
  ln -s ../big "$1/d/link"
  mkfifo "$1/d/fifo"
  fallocate -l 1M "$1/d/prealloc"
  gen 7 5000 "$tmp/p" && dd if="$tmp/p" of="$1/d/prealloc" conv=notrunc status=none
  do_fsync "$1/d/prealloc" "$1/d"
}
# A log tree of more than one level: many new files with data, and 8 MiB of new data in one file.
sc_big_log() {
  local i
  mkdir "$1/many"
  for i in $(seq 1 400); do echo "file $i" >"$1/many/file-with-a-longer-name-$i"; done
  gen 8 8388608 "$1/many/large"
  do_fsync "$1"/many/* "$1/many"
}
sc_fdatasync_append() {
  gen 9 20000 "$tmp/app" && cat "$tmp/app" >>"$1/big"
  python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fdatasync(fd)' "$1/big"
}
# The same file logged twice in one transaction (the second fsync updates the log in place).
sc_double_fsync() {
  pwrite_at "$1/big" 4096 4096 10; do_fsync "$1/big"
  pwrite_at "$1/big" 900000 50000 11; truncate -s 2000000 "$1/big"; do_fsync "$1/big"
}
# A name taken over by a new inode after the old one moved away.
sc_name_reuse() {
  echo more >>"$1/d/f"; do_fsync "$1/d/f"
  mv "$1/d/f" "$1/e/f2"; echo "new f" >"$1/d/f"; do_fsync "$1/d/f" "$1/e/f2"
}
# One of two hard links removed, the file fsynced.
sc_unlink_hardlink() { ln "$1/d/f" "$1/d/f2"; sync; rm "$1/d/f"; do_fsync "$1/d/f2"; }
sc_dir_xattr() { setfattr -n user.dir -v yes "$1/d"; setfattr -n user.big -v "$(head -c 3000 /dev/zero | tr '\0' x)" "$1/d/f"; do_fsync "$1/d" "$1/d/f"; }
# A log tree per subvolume: changes fsynced in the top level and in a subvolume.
sc_subvolume() {
  btrfs subvolume create "$1/sv" >/dev/null
  echo committed >"$1/sv/c"
  sync
  gen 12 30000 "$1/sv/new"; echo more >>"$1/sv/c"
  echo top >"$1/d/top"
  do_fsync "$1/sv/new" "$1/sv/c" "$1/d/top"
}
# Compressed extents in the log (zstd through the file's compression property).
sc_compressed() {
  touch "$1/d/cz"
  btrfs property set "$1/d/cz" compression zstd
  python3 -c 'import sys; sys.stdout.write("".join("line %d of compressible text\n" % i for i in range(40000)))' >"$1/d/cz"
  do_fsync "$1/d/cz"
}
sc_many() {
  # Several inodes in one log: appends, a new file with a hard link, a rename in place.
  local i
  for i in 1 2 3 4 5 6; do gen "m$i" $((i * 5000)) "$1/e/m$i"; done
  ln "$1/e/m1" "$1/e/m1-link"
  mv "$1/e/m2" "$1/e/m2-renamed"
  do_fsync "$1"/e/m* "$1/e"
}
# ACE-style random sequences (CrashMonkey's bounded generator, issue 9): 1-3 core operations over a
# small file set, each followed by an fsync of a random file or directory. Seeds 1..N
# (UBTRFS_LOG_RANDOM, default 40); a seed the kernel answered with a full commit (no log) is skipped.
cat >"$tmp/ace.py" <<'PY'
import os, random, sys
root, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
names = ["d/f", "d/small", "d/gone", "d/sub/x", "e/p", "e/q", "big", "d/sub", "e/dd"]
def p(n): return os.path.join(root, n)
def fsync(n):
    fd = os.open(p(n), os.O_RDONLY); os.fsync(fd); os.close(fd)
def existing(kind=None):
    out = []
    for n in names:
        q = p(n)
        if os.path.lexists(q) and (kind is None or (kind == "f") == os.path.isfile(q)):
            out.append(n)
    return out
ops = []
for _ in range(r.randint(1, 3)):
    op = r.choice(["creat", "write", "falloc", "punch", "link", "unlink", "rename", "mkdir", "rmdir", "setxattr", "truncate"])
    try:
        files = existing("f"); dirs = ["d", "e", "d/sub"] + [n for n in existing() if os.path.isdir(p(n))]
        if op == "creat":
            n = r.choice(dirs) + "/" + r.choice(["n1", "n2", "n3"]); open(p(n), "ab").close(); names.append(n)
        elif op == "write" and files:
            n = r.choice(files); fd = os.open(p(n), os.O_WRONLY)
            os.pwrite(fd, random.Random(seed * 7 + len(ops)).randbytes(r.choice([100, 4096, 70000])), r.choice([0, 5000, 300000])); os.close(fd)
        elif op == "falloc" and files:
            n = r.choice(files); fd = os.open(p(n), os.O_WRONLY); os.posix_fallocate(fd, r.choice([0, 8192, 1 << 20]), 65536); os.close(fd)
        elif op == "punch" and files:
            n = r.choice(files); os.system("fallocate -p -o %d -l %d %s" % (r.choice([0, 4096, 262144]), r.choice([4096, 131072]), p(n)))
        elif op == "link" and files:
            n = r.choice(files); m = r.choice(dirs) + "/" + r.choice(["l1", "l2"])
            if not os.path.lexists(p(m)): os.link(p(n), p(m)); names.append(m)
        elif op == "unlink" and files:
            os.unlink(p(r.choice(files)))
        elif op == "rename" and files:
            n = r.choice(files); m = r.choice(dirs) + "/" + r.choice(["r1", "r2", "f"])
            if not os.path.isdir(p(m)): os.rename(p(n), p(m)); names.append(m)
        elif op == "mkdir":
            n = r.choice(["d", "e"]) + "/" + r.choice(["m1", "m2"])
            if not os.path.lexists(p(n)): os.mkdir(p(n)); names.append(n)
        elif op == "rmdir":
            for n in existing():
                if os.path.isdir(p(n)) and not os.listdir(p(n)) and n not in ("d", "e"): os.rmdir(p(n)); break
        elif op == "setxattr" and files:
            os.setxattr(p(r.choice(files)), "user." + r.choice(["a", "b", "z"]), b"v%d" % seed)
        elif op == "truncate" and files:
            os.truncate(p(r.choice(files)), r.choice([0, 1000, 4096, 600000]))
    except OSError:
        pass
    ops.append(op)
    target = r.choice(existing() + ["d", "e", "."])
    fsync(target)
    ops.append("fsync " + target)
print(" ".join(ops))
PY
for i in $(seq 1 "${UBTRFS_LOG_RANDOM:-40}"); do
  eval "sc_ace$i() { python3 \"\$tmp/ace.py\" \"\$1\" $i >\"\$tmp/ace$i.ops\"; }"
done
ace_scenarios=()
for i in $(seq 1 "${UBTRFS_LOG_RANDOM:-40}"); do ace_scenarios+=("ace$i"); done

scenarios=(new_file append overwrite_middle truncate punch_hole hard_link rename rename_same_dir xattr new_dir unlink_dir_fsync root_dir_fsync rmdir_tree special big_log fdatasync_append double_fsync name_reuse unlink_hardlink dir_xattr subvolume compressed many)
scenarios+=("${ace_scenarios[@]}")
if [[ -n ${UBTRFS_LOG_SCENARIOS:-} ]]; then read -r -a scenarios <<<"$UBTRFS_LOG_SCENARIOS"; fi

log_root_of() { btrfs inspect-internal dump-super "$1" | awk '$1 == "log_root" { print $2 }'; }

first_crash=""
for sc in "${scenarios[@]}"; do
  dir=$tmp/$sc
  mkdir -p "$dir"
  img=$dir/live.img
  # The kernel sometimes answers an fsync with a full commit for reasons of its own (an unlink of
  # an inode not in the log, a transaction that had to commit): up to 3 tries for a logged crash.
  for try in 1 2 3; do
    rm -rf "$img" "$dir/live"
    "$MKFS" -q -f -b 256M "$img"
    kernel_mount "$img" "$dir/live" commit=300
    baseline "$dir/live"
    "sc_$sc" "$dir/live"
    cp --sparse=always "$img" "$dir/crash.img"
    kernel_umount "$dir/live"
    lr=$(log_root_of "$dir/crash.img")
    [[ -n $lr && $lr != 0 ]] && break
    [[ $sc == ace* ]] && break  # deterministic: the kernel commits for these sequences
  done
  if [[ ( -z $lr || $lr == 0 ) && $sc == ace* ]]; then
    echo "note: $sc ($(cat "$tmp/$sc.ops")): the kernel committed instead of logging; skipped"
    continue
  fi
  [[ $sc == ace* ]] && echo "note: $sc: $(cat "$tmp/$sc.ops")"
  if [[ -z $lr || $lr == 0 ]]; then
    failed "$sc: the crash image has no log tree (log_root=$lr): the scenario did not exercise replay"
    continue
  fi
  [[ -n $first_crash ]] || first_crash=$dir/crash.img
  # fsck.ubtrfs on the crash image itself: log blocks have no extent items and are neither leaked
  # nor overlapping (and must not overlap allocated extents).
  if out=$("$UBTRFS_BIN/fsck/fsck.ubtrfs" "$dir/crash.img" 2>&1); then
    pass "$sc: fsck.ubtrfs accepts the crash image with its log"
  else
    failed "$sc: fsck.ubtrfs rejects the crash image: $(grep -m3 ERROR <<<"$out")"
  fi

  # The reference: the kernel's own replay.
  cp --sparse=always "$dir/crash.img" "$dir/kernel.img"
  kernel_mount "$dir/kernel.img" "$dir/km"
  manifest_cmp "$dir/km" >"$dir/kernel.manifest"
  kernel_umount "$dir/km"

  # The fsynced changes are only in the log: the committed state (a read-only mount ignores the
  # log) differs from the replay, so the comparisons below can fail.
  cp --sparse=always "$dir/crash.img" "$dir/ro.img"
  if ubtrfs_mount "$dir/ro.img" "$dir/rom" ro; then
    manifest_cmp "$dir/rom" >"$dir/committed.manifest"
    ubtrfs_umount "$dir/rom"
    if cmp -s "$dir/committed.manifest" "$dir/kernel.manifest" && [[ $sc == ace* ]]; then
      pass "$sc: the log changes nothing visible (an fsync of an unchanged inode)"
    elif cmp -s "$dir/committed.manifest" "$dir/kernel.manifest"; then
      failed "$sc: the committed state already equals the replay: the log holds nothing this test sees"
    else
      pass "$sc: the fsynced changes are only in the log"
    fi
  else
    failed "$sc: read-only mount of the crash image refused"
  fi

  # ubtrfs replays a copy read-write.
  cp --sparse=always "$dir/crash.img" "$dir/ubtrfs.img"
  if ! ubtrfs_mount "$dir/ubtrfs.img" "$dir/um"; then
    failed "$sc: ubtrfs refused to mount the crash image read-write"
    continue
  fi
  manifest_cmp "$dir/um" >"$dir/ubtrfs.manifest"
  ubtrfs_umount "$dir/um"
  if diff -u "$dir/kernel.manifest" "$dir/ubtrfs.manifest" >"$dir/diff"; then
    pass "$sc: ubtrfs's replay shows what the kernel's replay shows ($(wc -l <"$dir/kernel.manifest") paths)"
  else
    failed "$sc: ubtrfs's replay differs from the kernel's:"
    cat "$dir/diff" >&2
  fi
  lr=$(log_root_of "$dir/ubtrfs.img")
  [[ $lr == 0 ]] && pass "$sc: replayed image has log_root 0" || failed "$sc: replayed image still has log_root $lr"
  if check_clean_full "$dir/ubtrfs.img" "$dir/after.raw"; then
    pass "$sc: replayed image is check-clean (btrfs check x3, kernel read, fsck.ubtrfs)"
  else
    failed "$sc: replayed image is not check-clean"
  fi
  awk -F'\t' -v OFS='\t' '$2 == "d" { $9 = "-" } { print }' "$dir/after.raw" >"$dir/after.manifest"
  if diff -u "$dir/kernel.manifest" "$dir/after.manifest" >"$dir/diff2"; then
    pass "$sc: the kernel sees the ubtrfs-replayed image as its own replay"
  else
    failed "$sc: the kernel's view of the ubtrfs-replayed image differs from its own replay:"
    cat "$dir/diff2" >&2
  fi
done

# Read-only mounts never write: the log is ignored (its changes invisible), the image unchanged.
if [[ -n $first_crash ]]; then
  ro=$tmp/ro.img
  cp --sparse=always "$first_crash" "$ro"
  before=$(hash_file "$ro")
  if ubtrfs_mount "$ro" "$tmp/rom" ro; then
    ubtrfs_umount "$tmp/rom"
    if [[ $(hash_file "$ro") == "$before" ]] && grep -q "not visible" "$UBTRFS_LAST_LOG"; then
      pass "read-only mount of a crash image: log ignored with a warning, image byte-identical"
    else
      failed "read-only mount of a crash image wrote to it or did not warn: $(grep -i log "$UBTRFS_LAST_LOG" | head -3)"
    fi
  else
    failed "read-only mount of a crash image refused"
  fi
  # A corrupt log (bad checksum in the log root block) fails the read-write mount with the block's
  # bytenr, before anything is written.
  bad=$tmp/badlog.img
  cp --sparse=always "$first_crash" "$bad"
  lr=$(log_root_of "$bad")
  if [[ -x $CORRUPT ]]; then
    "$CORRUPT" "$bad" --block "$lr" --flip-byte 300 --no-recsum >/dev/null
    bad_before=$(hash_file "$bad")
    ubtrfs_try_mount "$bad" "$tmp/badm"
    if [[ $TRY_RC != 0 && $TRY_RC -lt 124 ]] && grep -q "log tree block $lr" "$TRY_ERR" && ! is_mounted "$tmp/badm" &&
      [[ $(hash_file "$bad") == "$bad_before" ]]; then
      pass "corrupt log root block: read-write refused naming block $lr, image unchanged"
    else
      failed "corrupt log root block: exit $TRY_RC, mounted=$(is_mounted "$tmp/badm" && echo yes || echo no): $(head -c 400 "$TRY_ERR")"
    fi
  else
    failed "ubtrfs-corrupt not built at $CORRUPT"
  fi
  for opt in nologreplay rescue=nologreplay; do
    ubtrfs_try_mount "$ro" "$tmp/nlr" "$opt"
    if [[ $TRY_RC != 0 && $TRY_RC -lt 124 ]] && grep -q "nologreplay" "$TRY_ERR" && ! is_mounted "$tmp/nlr" &&
      [[ $(hash_file "$ro") == "$before" ]]; then
      pass "-o $opt: read-write refused, image unchanged"
    else
      failed "-o $opt: exit $TRY_RC, mounted=$(is_mounted "$tmp/nlr" && echo yes || echo no): $(head -c 400 "$TRY_ERR")"
    fi
  done
fi

finish
