#!/usr/bin/env bash
# Kernel -> ubtrfs (issue 3, acceptance 3): every committed reference image (images/NNN-*/, written
# by the Linux kernel) mounted by the ubtrfs daemon.
#
# 1. Read-only: manifest_of the mount equals the image's manifest.txt, the daemon exits 0 after
#    the unmount, and the image file is byte-identical. 004 (a log tree left by fsync before a
#    crash) is read without its log, so it also equals manifest.txt (the committed state).
# 2. 004 read-write replays the log (fs/tree_log_replay.h): the ubtrfs view equals the kernel's
#    view of its own replay of another copy (directory mtimes aside), and the result is check-clean.
# 3. Read-write (every image but 004): two copies, A and B. The same modification script
#    (modify_tree below: create/overwrite/append/truncate/delete/rename/xattr/hardlink/symlink/
#    chmod/chown, plus per-image work on the 20,000-entry directory of 005, on the compressed
#    files of 002, on prealloc/sparse/inline files of 001) runs on A mounted by ubtrfs and on B
#    mounted by the kernel. Then: ubtrfs's live view of A equals the kernel's view of B; after
#    the unmount A is check-clean (check_clean_full: btrfs check x3, kernel read of every file,
#    fsck.ubtrfs); the kernel's view of A equals its view of B (exactly the changes, nothing
#    else); ubtrfs remounting A read-only sees the same.
#    Times: the script gives every path whose mtime it changes a fixed mtime at the end, so the
#    two runs produce identical manifests; paths it only renames, links, chmods or xattrs keep
#    the image's mtimes (ctime and atime are not in the manifest).
#
# UBTRFS_FS=kernel runs everything against the kernel instead of the daemon (proves the test);
# UBTRFS_KEEP_MANIFESTS=DIR keeps the manifests of the read-write step there (for a failing diff).
# usage: UBTRFS_BIN=<build>/tools bash tests/oracle/kernel_to_ubtrfs_test.sh [IMAGE-DIR ...]
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=../../images/manifest.sh disable=SC1091
source "$UBTRFS_SRC/images/manifest.sh"

require_ubtrfs
require_kernel_btrfs
require_btrfs_check
command -v zstd >/dev/null || skip_or_fail "zstd not installed"
command -v python3 >/dev/null || skip_or_fail "python3 not installed"

started=$SECONDS
tmp=$(make_tmpdir)

# UBTRFS_IMAGES="001 002": only these cases (scripts/test.sh uses it for the sanitizer runs).
dirs=("$@")
if [[ ${#dirs[@]} == 0 ]]; then
  for d in "$UBTRFS_SRC"/images/[0-9][0-9][0-9]-*/; do
    case=$(basename "$d")
    if [[ -n ${UBTRFS_IMAGES:-} && " $UBTRFS_IMAGES " != *" ${case%%-*} "* ]]; then continue; fi
    dirs+=("${d%/}")
  done
fi
[[ ${#dirs[@]} -gt 0 && -f ${dirs[0]}/image.zst ]] || { echo "FAIL: no reference images found" >&2; exit 1; }

# gen MODE SEED SIZE: deterministic content on stdout; MODE r = random bytes, t = compressible text.
cat >"$tmp/gen.py" <<'PY'
import random, sys
mode, seed, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = random.Random(seed)
if mode == "r":
    data = r.randbytes(size)
else:
    words = [b"btrfs", b"extent", b"inode", b"commit", b"leaf", b"node", b"csum", b"chunk", b"fuse"]
    out, n = [], 0
    while n < size:
        line = b"%06d " % r.randrange(1000000) + b" ".join(r.choice(words) for _ in range(8)) + b"\n"
        out.append(line)
        n += len(line)
    data = b"".join(out)
sys.stdout.buffer.write(data[:size])
PY
gen() { python3 "$tmp/gen.py" "$@"; }
# gen_batch: reads "MODE SEED SIZE PATH" lines, writes each PATH (one python start for many files).
cat >"$tmp/gen_batch.py" <<'PY'
import random, sys
for line in sys.stdin:
    mode, seed, size, path = line.rstrip("\n").split(" ", 3)
    r, n = random.Random(seed), int(size)
    data = r.randbytes(n) if mode == "r" else ((seed + " compressible text line\n") * (n // 10 + 1)).encode()[:n]
    with open(path, "wb") as f:
        f.write(data)
PY
gen_batch() { python3 "$tmp/gen_batch.py"; }
# write_at FILE OFFSET MODE SEED SIZE: overwrite SIZE bytes at OFFSET without truncating.
write_at() { gen "$3" "$4" "$5" | dd of="$1" bs=64K seek="$2" oflag=seek_bytes conv=notrunc status=none; }
xattr_set() { python3 -c 'import os, sys; os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode(), follow_symlinks=False)' "$@"; }
xattr_del() { python3 -c 'import os, sys; os.removexattr(sys.argv[1], sys.argv[2], follow_symlinks=False)' "$@"; }

# modify_tree ROOT CASE: the modifications, run in a subshell inside ROOT. Each operation notes
# the paths whose mtime it changes (touched: the path and its parent; parent_touched: only the
# parent); at the end they all get one fixed mtime.
modify_tree() {
  (
    set -euo pipefail
    cd "$1"
    local case=$2 touched=() p i n reserved
    self() { local q; for q in "$@"; do touched+=("$q" "$(dirname "$q")"); done; }
    parent() { local q; for q in "$@"; do touched+=("$(dirname "$q")"); done; }
    # rename_target PATH: PATH with a suffix, or a short name when the suffix would pass 255 bytes.
    renamed() { local b; b=$(basename "$1"); if ((${#b} > 240)); then echo "$(dirname "$1")/long-name-renamed"; else echo "$1-r"; fi; }
    export LC_ALL=C

    # Paths the per-image block below works on; the generic picks leave them alone.
    case $case in
      001-*) reserved='^(prealloc-|sparse$|bookend$|inline-2048$|size-2049$|hole-first$|owned-1000$|mode-4755$|links-[12]/|sticky-dir|dir/a/b/c/|dir/empty-dir)' ;;
      002-*) reserved='^(zlib/big-300k|lzo/small-6000|zstd/big-300k|forced/mixed-512k|zstd/inline-3000|zlib/inline-3000|zlib/random-64k|lzo/overwritten)$' ;;
      003-*) reserved='^(small-3|big-2000)/' ;;
      005-*) reserved='^big/' ;;
      *) reserved='^$' ;;
    esac
    # The image's own regular files and symlinks, picked before anything changes (same on A and B).
    mapfile -t files < <(find . -type f -printf '%P\n' | grep -Ev "$reserved" | sort)
    mapfile -t links < <(find . -type l -printf '%P\n' | grep -Ev "$reserved" | sort)
    n=${#files[@]}
    local pick=()
    if ((n >= 10)); then
      for i in $(seq 0 9); do pick+=("${files[i * n / 10]}"); done
    fi
    # Two more files carrying user.* xattrs, none of the picks.
    mapfile -t xfiles < <(printf '%s\n' "${files[@]}" | grep -vxF -f <(printf '%s\n' "${pick[@]}" _none_) | python3 -c '
import os, sys
found = 0
for f in sys.stdin.read().split("\n"):
    if f and any(n.startswith("user.") for n in os.listxattr(f, follow_symlinks=False)):
        print(f)
        found += 1
        if found == 2:
            break
')

    # New things, in a new directory.
    mkdir ubtrfs-new ubtrfs-new/sub
    self ubtrfs-new ubtrfs-new/sub
    : >ubtrfs-new/empty
    gen t new-100 100 >ubtrfs-new/inline-100
    gen t new-5000 5000 >ubtrfs-new/text-5000
    gen r new-4096 4096 >ubtrfs-new/exactly-4096
    gen r new-300k 307200 >ubtrfs-new/random-300k
    gen r new-2m 2097152 >ubtrfs-new/sub/random-2m
    truncate -s 4M ubtrfs-new/sparse
    write_at ubtrfs-new/sparse 1048676 r new-sparse 8192
    self ubtrfs-new/empty ubtrfs-new/inline-100 ubtrfs-new/text-5000 ubtrfs-new/exactly-4096 \
      ubtrfs-new/random-300k ubtrfs-new/sub/random-2m ubtrfs-new/sparse
    ln -s ../ubtrfs-new/text-5000 ubtrfs-new/sub/link-rel
    ln -s "$(printf 'x%.0s' $(seq 1 1000))" ubtrfs-new/link-1000
    ln ubtrfs-new/text-5000 ubtrfs-new/sub/text-hardlink
    mkfifo ubtrfs-new/fifo
    self ubtrfs-new/sub/link-rel ubtrfs-new/link-1000 ubtrfs-new/fifo
    parent ubtrfs-new/sub/text-hardlink
    xattr_set ubtrfs-new/text-5000 user.new "a value"
    xattr_set ubtrfs-new/sub user.dir "on a directory"
    chmod 4750 ubtrfs-new/exactly-4096
    chown 1234:5678 ubtrfs-new/inline-100

    # The image's files: ten picked evenly, one operation each.
    if ((${#pick[@]} == 10)); then
      p=${pick[0]}; write_at "$p" $(($(stat -c %s "$p") / 2)) r ow-0 3000; self "$p"
      p=${pick[1]}; gen t app-1 10000 >>"$p"; self "$p"
      p=${pick[2]}; truncate -s $(($(stat -c %s "$p") / 3)) "$p"; self "$p"
      p=${pick[3]}; truncate -s $(($(stat -c %s "$p") + 1048576)) "$p"; self "$p"
      p=${pick[4]}; rm "$p"; parent "$p"
      p=${pick[5]}; mv "$p" ubtrfs-new/moved-5; parent "$p" ubtrfs-new/moved-5
      p=${pick[6]}; xattr_set "$p" user.added "added by the modification script"
      p=${pick[7]}; ln "$p" ubtrfs-new/hardlink-7; parent ubtrfs-new/hardlink-7
      p=${pick[8]}; gen r trunc-8 7000 >"$p"; self "$p"
      p=${pick[9]}; chmod 600 "$p"; mv "$p" "$(renamed "$p")"; parent "$p"
    fi
    # Symlinks: one removed, one retargeted.
    if ((${#links[@]} >= 2)); then
      rm "${links[0]}"; parent "${links[0]}"
      rm "${links[1]}"; ln -s ubtrfs-new/text-5000 "${links[1]}"; self "${links[1]}"
    fi
    # Existing xattrs: one removed, one replaced.
    for p in "${xfiles[@]}"; do
      mapfile -t names < <(python3 -c 'import os,sys; print("\n".join(sorted(n for n in os.listxattr(sys.argv[1]) if n.startswith("user."))))' "$p")
      xattr_del "$p" "${names[0]}"
      ((${#names[@]} > 1)) && xattr_set "$p" "${names[1]}" "replaced value"
    done

    case $case in
      001-*)
        rmdir dir/empty-dir; parent dir/empty-dir
        mv dir/a/b/c dir/a/b/c-renamed; parent dir/a/b/c
        rm links-1/link-b; parent links-1/link-b            # nlink 5 -> 4
        ln links-2/pair-1 links-1/pair-extra; parent links-1/pair-extra
        write_at prealloc-full 524288 r pa-full 4096; self prealloc-full      # prealloc -> regular
        write_at prealloc-partial 204800 r pa-part 4096; self prealloc-partial
        write_at sparse 2097152 r sparse-2m 4096; self sparse                 # into a hole
        write_at bookend 100000 r bookend 20000; self bookend
        gen t inline-grow 1 >>inline-2048; self inline-2048                   # inline -> regular
        truncate -s 100 size-2049; self size-2049
        truncate -s 500000 hole-first; self hole-first
        chown 2000:2000 owned-1000
        chmod 755 mode-4755
        mv sticky-dir dir/sticky-moved; parent sticky-dir dir/sticky-moved
        ;;
      002-*)
        write_at zlib/big-300k 150000 r z-ow 4096; self zlib/big-300k          # into compressed extents
        gen t lzo-app 5000 >>lzo/small-6000; self lzo/small-6000
        truncate -s 100000 zstd/big-300k; self zstd/big-300k
        write_at forced/mixed-512k 65536 t forced 131072; self forced/mixed-512k
        truncate -s 1000 zstd/inline-3000; self zstd/inline-3000               # compressed inline, shrunk
        gen t zlib-inline 2000 >>zlib/inline-3000; self zlib/inline-3000       # compressed inline, grown
        rm zlib/random-64k; parent zlib/random-64k
        mv lzo/overwritten zstd/moved-from-lzo; parent lzo/overwritten zstd/moved-from-lzo
        write_at zstd/moved-from-lzo 0 r moved 4096; self zstd/moved-from-lzo
        ;;
      003-*)
        rm -r small-3; parent small-3
        for i in $(seq 1 200); do echo "t b2k-$i $((i * 37)) big-2000/added-$i"; done | gen_batch
        for i in $(seq 1 200); do self "big-2000/added-$i"; done
        ;;
      005-*)
        # The 20,000-entry directory: 300 creations, every 67th entry removed, every 97th renamed
        # in place, 20 moved out, 10 hardlinked, 10 xattrs.
        mapfile -t entries < <(find big -mindepth 1 -maxdepth 1 -printf '%P\n' | sort)
        for i in $(seq 1 300); do echo "t big-$i $((i % 7 * 500)) big/new-$i"; done | gen_batch
        for i in $(seq 1 300); do self "big/new-$i"; done
        for ((i = 0; i < ${#entries[@]}; i += 67)); do
          p=big/${entries[i]}
          if [[ -d $p && ! -L $p ]]; then rmdir "$p"; else rm "$p"; fi
        done
        for ((i = 5; i < ${#entries[@]}; i += 97)); do
          ((i % 67 == 0)) && continue
          mv "big/${entries[i]}" "$(renamed "big/${entries[i]}")"
        done
        for ((i = 11, moved = 0; moved < 20; i += 131)); do
          ((i % 67 == 0 || (i - 5) % 97 == 0)) && continue
          mv "big/${entries[i]}" "moved-out-$moved"; parent "moved-out-$moved"; moved=$((moved + 1))
        done
        for i in $(seq 1 10); do ln "big/new-$((i * 20))" "big/hardlink-$i"; done
        for i in $(seq 1 10); do xattr_set "big/new-$((i * 7))" user.n "$i"; done
        self big
        ;;
    esac

    # One fixed mtime for everything whose mtime changed (existing paths only).
    for p in "${touched[@]}"; do
      [[ -e $p || -L $p ]] && printf '%s\0' "$p"
    done | sort -zu | xargs -0 -r touch -h -d @1700000000.123456789 --
  )
}

# compare NAME WANT GOT: pass when the manifests are identical, else fail with the diff.
compare() {
  local name=$1 want=$2 got=$3
  if diff -u "$want" "$got" >"$tmp/diff.txt"; then
    pass "$name ($(wc -l <"$got") paths)"
  else
    failed "$name: $(grep -c '^[-+][^-+]' "$tmp/diff.txt") lines differ:"
    cut -c1-300 "$tmp/diff.txt" | head -40 >&2
  fi
}

# expected_manifest DIR: manifest.txt of DIR (decompressed when committed as manifest.txt.zst).
expected_manifest() {
  local dir=$1 out
  out=$tmp/$(basename "$1")-manifest.txt
  if [[ -f $dir/manifest.txt ]]; then cp "$dir/manifest.txt" "$out"; else zstd -q -d -f "$dir/manifest.txt.zst" -o "$out"; fi
  echo "$out"
}

for dir in "${dirs[@]}"; do
  name=$(basename "$dir")
  t0=$SECONDS
  img=$tmp/$name.img
  if ! zstd -q -d -f --long=27 "$dir/image.zst" -o "$img"; then failed "$name: cannot decompress image.zst"; continue; fi
  expected=$(expected_manifest "$dir")
  mnt=$tmp/mnt-$name
  log_root=$(btrfs inspect-internal dump-super "$img" | awk '$1 == "log_root" { print $2 }')

  # ---- 1. read-only ----
  before=$(sparse_hash "$img")
  if ubtrfs_mount "$img" "$mnt" ro; then
    if manifest_of "$mnt" >"$tmp/got.txt"; then
      compare "$name: read-only ubtrfs view equals manifest.txt" "$expected" "$tmp/got.txt"
    else
      failed "$name: reading the read-only mount failed"
    fi
    if ubtrfs_umount "$mnt"; then pass "$name: read-only unmount, daemon exit 0"; else failed "$name: read-only unmount"; fi
  else
    failed "$name: ubtrfs refused the read-only mount"
  fi
  if [[ $(sparse_hash "$img") == "$before" ]]; then pass "$name: read-only mount left the image unchanged"; else failed "$name: read-only mount changed the image"; fi

  # ---- 2. an image with a log tree: read-write replays it as the kernel does ----
  if [[ $log_root != 0 ]]; then
    cp --sparse=always "$img" "$tmp/kernel-replay.img"
    kernel_mount "$tmp/kernel-replay.img" "$tmp/kreplay"
    manifest_of "$tmp/kreplay" | awk -F'\t' -v OFS='\t' '$2 == "d" { $9 = "-" } { print }' >"$tmp/kreplay.txt"
    kernel_umount "$tmp/kreplay"
    if ubtrfs_mount "$img" "$mnt"; then
      manifest_of "$mnt" | awk -F'\t' -v OFS='\t' '$2 == "d" { $9 = "-" } { print }' >"$tmp/ureplay.txt"
      ubtrfs_umount "$mnt" || failed "$name: unmount after log replay"
      compare "$name: read-write mount replays the log: ubtrfs view equals the kernel's replay" "$tmp/kreplay.txt" "$tmp/ureplay.txt"
      if check_clean_full "$img"; then pass "$name: replayed image is check-clean"; else failed "$name: replayed image is not check-clean"; fi
    else
      failed "$name: read-write mount of a log-tree image refused"
    fi
    rm -f "$img"
    echo "$name: $((SECONDS - t0)) s"
    continue
  fi

  # ---- 3. read-write: the same changes by ubtrfs (A) and by the kernel (B) ----
  a=$img
  b=$tmp/$name-kernel.img
  cp --sparse=always "$a" "$b"
  mntb=$tmp/mntb-$name
  kernel_mount "$b" "$mntb"
  if ! modify_tree "$mntb" "$name" 2>"$tmp/modify.err"; then
    failed "$name: the modification script failed on the kernel mount (a test bug): $(head -c 800 "$tmp/modify.err")"
    kernel_umount "$mntb"
    continue
  fi
  kernel_umount "$mntb"
  kernel_mount "$b" "$mntb" ro
  manifest_of "$mntb" >"$tmp/want.txt"
  kernel_umount "$mntb"
  changed=$(diff "$expected" "$tmp/want.txt" | grep -c '^[<>]' || true)
  if ((changed >= 20)); then pass "$name: the modifications change $changed manifest lines"; else failed "$name: the modifications change only $changed manifest lines"; fi

  if ! ubtrfs_mount "$a" "$mnt"; then
    failed "$name: ubtrfs refused the read-write mount"
    continue
  fi
  if modify_tree "$mnt" "$name" 2>"$tmp/modify.err"; then
    pass "$name: every modification succeeded on the ubtrfs mount"
  else
    failed "$name: a modification failed on the ubtrfs mount: $(head -c 800 "$tmp/modify.err")"
  fi
  if manifest_of "$mnt" >"$tmp/live.txt"; then
    compare "$name: ubtrfs's live view after the changes equals the kernel's" "$tmp/want.txt" "$tmp/live.txt"
  else
    failed "$name: reading the ubtrfs mount after the changes failed"
  fi
  if ubtrfs_umount "$mnt"; then pass "$name: read-write unmount, daemon exit 0 (final commit)"; else failed "$name: read-write unmount"; fi

  if check_clean_full "$a" "$tmp/kernel-view.txt"; then
    pass "$name: check-clean after the ubtrfs changes (btrfs check x3, kernel read, fsck.ubtrfs)"
  else
    failed "$name: not check-clean after the ubtrfs changes"
  fi
  if [[ -s $tmp/kernel-view.txt ]]; then
    compare "$name: the kernel sees exactly the changes ubtrfs made" "$tmp/want.txt" "$tmp/kernel-view.txt"
  else
    failed "$name: no kernel view of the modified image"
  fi
  if ubtrfs_mount "$a" "$mnt" ro; then
    manifest_of "$mnt" >"$tmp/reread.txt" || true
    compare "$name: ubtrfs rereads its own changes after a remount" "$tmp/want.txt" "$tmp/reread.txt"
    ubtrfs_umount "$mnt" || failed "$name: unmount after the reread"
  else
    failed "$name: ubtrfs cannot remount its own image"
  fi
  if [[ -n ${UBTRFS_KEEP_MANIFESTS:-} ]]; then
    mkdir -p "$UBTRFS_KEEP_MANIFESTS"
    for f in want live kernel-view reread; do cp "$tmp/$f.txt" "$UBTRFS_KEEP_MANIFESTS/$name-$f.txt" 2>/dev/null || true; done
  fi
  rm -f "$a" "$b"
  echo "$name: $((SECONDS - t0)) s"
done

echo "kernel_to_ubtrfs_test: $((SECONDS - started)) s"
finish
