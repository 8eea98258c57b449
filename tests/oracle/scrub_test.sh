#!/usr/bin/env bash
# Scrub and `ubtrfs-ctl` through a real mount (issue 16; fs/scrub.h, tools/daemon/ioctl.cpp,
# tools/ctl/), judged by btrfs-progs and the kernel.
#
# A DUP-metadata image gets files through ubtrfs; offline, one copy of the FS_TREE root leaf and
# one data sector of /dir/a are corrupted with ubtrfs-corrupt. Mounted again: a program calling
# BTRFS_IOC_SCRUB directly gets, in the kernel's units, verify 4 and corrected 4 (the 4 sectors of
# the bad metadata copy), csum 1 and uncorrectable 1 (the data sector) — the figures the kernel's
# own scrub gives for a copy of the same image; `ubtrfs-ctl scrub status` shows them; a second `ubtrfs-ctl scrub start -B`
# finds only the data error, names /dir/a at offset 4096 and exits 3 (btrfs-progs' code for
# uncorrectable errors); cancel with nothing running exits 2. The status survives the unmount (the
# next mount's `scrub status` shows the last run). Unmounted: both copies of the leaf are
# identical again and `btrfs check` is clean. Then `ubtrfs-ctl filesystem df -b` on ubtrfs and
# `btrfs filesystem df -b` on the kernel's mount of the same image agree (same chunk totals, used
# within 1 MiB), and `btrfs filesystem label` works on the ubtrfs mount while `btrfs scrub` does not
# (btrfs-progs' statfs f_type check).
#
# The kernel scrubs a copy of the corrupted image first: ubtrfs's counters must be the kernel's.
#
# Rules named here: scrub_repairs_metadata_and_names_the_file_of_bad_data_through_the_mount,
# scrub_ioctl_direct_caller_gets_the_same_counts, scrub_counts_match_the_kernel,
# ctl_df_matches_the_kernel.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CTL=$UBTRFS_BIN/ctl/ubtrfs-ctl
CORRUPT=$UBTRFS_BIN/corrupt/ubtrfs-corrupt

require_ubtrfs
fs_is_kernel && skip_or_fail "compares ubtrfs with the kernel"
require_root
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
command -v btrfs-map-logical >/dev/null || skip_or_fail "btrfs-map-logical not installed"
[[ -x $CTL ]] || { echo "FAIL: $CTL not built" >&2; exit 1; }
[[ -x $CORRUPT ]] || { echo "FAIL: $CORRUPT not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/scrub.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
export UBTRFS_STATE_DIR=$tmp/state  # where the daemon keeps the last scrub's status
truncate -s 1G "$img"
mkfs.btrfs -q -f -m dup -d single "$img" >/dev/null

cat >"$tmp/scrub.py" <<'PY'
# scrub.py MNT [scrub|progress|readonly] [UID]: BTRFS_IOC_SCRUB (flags 0 or BTRFS_SCRUB_READONLY)
# or SCRUB_PROGRESS on MNT, devid 1, as UID if given; prints
# "csum C verify V corrected K uncorrectable U" or "errno E".
import fcntl, os, struct, sys
SCRUB, PROGRESS = 0xc400941b, 0xc400941d   # _IOWR(0x94, 27 / 29, struct btrfs_ioctl_scrub_args), 1024 bytes
mode = sys.argv[2] if len(sys.argv) > 2 else "scrub"
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
if len(sys.argv) > 3:
    os.setgroups([])
    os.setgid(int(sys.argv[3]))
    os.setuid(int(sys.argv[3]))
args = bytearray(1024)
struct.pack_into("<QQQQ", args, 0, 1, 0, 2**64 - 1, 1 if mode == "readonly" else 0)   # devid, start, end, flags
try:
    fcntl.ioctl(fd, PROGRESS if mode == "progress" else SCRUB, args)
except OSError as e:
    print("errno", e.errno)
    sys.exit(0)
p = struct.unpack_from("<15Q", args, 32)   # struct btrfs_scrub_progress
print("csum", p[5], "verify", p[6], "corrected", p[12], "uncorrectable", p[11])
# The volume scrubbed, for the comparison with the kernel (data extents are not compared: the
# kernel counts an extent once per 64 KiB stripe it crosses).
print("tree_extents", p[1], "tree_bytes", p[3], "data_bytes", p[2], file=sys.stderr)
PY

# ---- files through ubtrfs, then corruption offline ----
ubtrfs_mount "$img" "$mnt" || failed "mount"
mkdir "$mnt/dir"
head -c 65536 /dev/urandom >"$mnt/dir/a"
head -c 131072 /dev/urandom >"$mnt/b"
ubtrfs_umount "$mnt" || failed "unmount"

fstree=$(btrfs inspect-internal dump-tree -t 5 "$img")
leaf=$(awk '/^(leaf|node) [0-9]+/ { print $2; exit }' <<<"$fstree")
# /dir/a is inode 258 (dir is 257): its first EXTENT_DATA's disk bytenr.
data=$(awk '/key \(258 EXTENT_DATA 0\)/ { f = 1 } f && /disk byte/ { for (i = 1; i <= NF; i++) if ($i == "byte") { print $(i + 1); exit } }' <<<"$fstree")
[[ -n $leaf && -n $data ]] || { failed "cannot locate the FS_TREE leaf ($leaf) or /dir/a's extent ($data)"; finish; }
"$CORRUPT" "$img" --block "$leaf" --flip-byte 300 --mirror 2 --no-recsum >/dev/null || failed "corrupt leaf copy 2"
"$CORRUPT" "$img" --data $((data + 4096)) --flip-byte 10 >/dev/null || failed "corrupt a data sector"
copies() {
  local out
  out=$(btrfs-map-logical -l "$leaf" -b 16384 -c 2 "$img" 2>/dev/null)
  awk '/physical/ { print $6 }' <<<"$out"
}
mapfile -t phys < <(copies)
[[ ${#phys[@]} == 2 ]] || failed "btrfs-map-logical: ${phys[*]}"
leaf_copy() { dd if="$img" bs=16384 count=1 iflag=skip_bytes skip="$1" status=none | sha256sum | cut -d' ' -f1; }
[[ $(leaf_copy "${phys[0]}") != "$(leaf_copy "${phys[1]}")" ]] || failed "the leaf's copies should differ now"

# ---- the kernel scrubs a copy of the corrupted image: the figures to match ----
cp --sparse=always "$img" "$tmp/kernel.img"
kernel_mount "$tmp/kernel.img" "$kmnt"
kout=$(btrfs scrub start -BR "$kmnt" 2>&1) || true
kernel_umount "$kmnt"
rm -f "$tmp/kernel.img"
kfig() { awk -v f="$1:" '$1 == f { print $2 }' <<<"$kout"; }
kernel_counts="csum $(kfig csum_errors) verify $(kfig verify_errors) corrected $(kfig corrected_errors) uncorrectable $(kfig uncorrectable_errors)"
kernel_volume="tree_extents $(kfig tree_extents_scrubbed) tree_bytes $(kfig tree_bytes_scrubbed) data_bytes $(kfig data_bytes_scrubbed)"
echo "kernel scrub of the same corruption: $kernel_counts; $kernel_volume"

# ---- the ioctl directly, then ubtrfs-ctl ----
ubtrfs_mount "$img" "$mnt" || failed "mount after corruption"
[[ $(python3 "$tmp/scrub.py" "$mnt" progress) == "errno 107" ]] && pass "SCRUB_PROGRESS with no scrub running is ENOTCONN" ||
  failed "SCRUB_PROGRESS idle: $(python3 "$tmp/scrub.py" "$mnt" progress)"
direct=$(python3 "$tmp/scrub.py" "$mnt" scrub 2>"$tmp/volume")
# The bad metadata copy counts as verify errors on its 4 sectors (16 KiB nodes), all corrected;
# the data sector as one csum error, uncorrectable: the kernel's units.
[[ $direct == "csum 1 verify 4 corrected 4 uncorrectable 1" ]] &&
  pass "scrub_ioctl_direct_caller_gets_the_same_counts: BTRFS_IOC_SCRUB: $direct" || failed "BTRFS_IOC_SCRUB: $direct"
[[ $direct == "$kernel_counts" ]] && pass "scrub_counts_match_the_kernel: the kernel's scrub of the same corruption: $kernel_counts" ||
  failed "ubtrfs '$direct', kernel '$kernel_counts'"
[[ $(cat "$tmp/volume") == "$kernel_volume" ]] && pass "the same tree extents and bytes scrubbed as the kernel: $kernel_volume" ||
  failed "scrubbed volume: ubtrfs '$(cat "$tmp/volume")', kernel '$kernel_volume'"
status=$("$CTL" scrub status "$mnt")
grep -q "Status: *finished" <<<"$status" && grep -q "Error summary: *verify=4 csum=1" <<<"$status" &&
  grep -q "Corrected: *4" <<<"$status" && grep -q "Uncorrectable: *1" <<<"$status" &&
  pass "scrub status shows the ioctl's figures" || failed "scrub status: $status"

rc=0
out=$("$CTL" scrub start -B "$mnt" 2>&1) || rc=$?
echo "$out"
[[ $rc == 3 ]] && pass "scrub start -B exits 3 with an uncorrectable error" || failed "scrub start -B: exit $rc"
grep -q "Error summary: *csum=1" <<<"$out" && grep -q "Corrected: *0" <<<"$out" &&
  pass "scrub_repairs_metadata_and_names_the_file_of_bad_data_through_the_mount: the metadata copy stays repaired" ||
  failed "second scrub figures"
grep -q "root 5 inode 258 offset 4096 path /dir/a" <<<"$out" && pass "the data error names /dir/a at offset 4096" ||
  failed "no path in: $out"
rc=0
"$CTL" scrub cancel "$mnt" 2>/dev/null || rc=$?
[[ $rc == 2 ]] && pass "scrub cancel with nothing running exits 2" || failed "scrub cancel: exit $rc"
rc=0
btrfs scrub start -B "$mnt" >/dev/null 2>&1 || rc=$?
((rc != 0)) && pass "btrfs-progs' scrub refuses the FUSE mount (statfs f_type): use ubtrfs-ctl" ||
  failed "btrfs scrub start unexpectedly worked"
rc=0
btrfs filesystem df "$mnt" >/dev/null 2>&1 || rc=$?
((rc != 0)) && pass "btrfs-progs' filesystem df refuses the FUSE mount: use ubtrfs-ctl" ||
  failed "btrfs filesystem df unexpectedly worked"
# Without -B: a detached child runs the scrub; status follows it to the end.
out=$("$CTL" scrub start "$mnt") && grep -q "^scrub started on $mnt" <<<"$out" ||
  failed "scrub start (background): $out"
for _ in $(seq 100); do
  status=$("$CTL" scrub status "$mnt")
  grep -q "Status: *finished" <<<"$status" && break
  sleep 0.1
done
grep -q "Status: *finished" <<<"$status" && grep -q "Error summary: *csum=1" <<<"$status" &&
  pass "scrub start in the background; scrub status follows it to the end" || failed "background scrub: $status"
btrfs filesystem label "$mnt" scrubbed && [[ $("$CTL" filesystem label "$mnt") == scrubbed ]] &&
  pass "btrfs filesystem label works on the mount; ubtrfs-ctl reads it back" || failed "label"
ubtrfs_umount "$mnt" || failed "unmount"

[[ $(leaf_copy "${phys[0]}") == "$(leaf_copy "${phys[1]}")" ]] && pass "both copies of the leaf are identical after the repair" ||
  failed "the leaf's copies differ after scrub"
check_clean "$img" && pass "btrfs check clean (metadata repaired)" || failed "btrfs check after scrub"

# ---- the status survives the unmount; df against the kernel ----
ubtrfs_mount "$img" "$mnt" || failed "mount again"
status=$("$CTL" scrub status "$mnt")
grep -q "Error summary: *csum=1" <<<"$status" && pass "scrub status after a remount shows the last run" ||
  failed "status after remount: $status"

# ---- a slow scrub (scrub limit): progress, a second start, cancel, ^C on -B ----
"$CTL" scrub limit -l 64k "$mnt" | grep -q "64.00KiB" || failed "scrub limit -l 64k"
"$CTL" scrub start "$mnt" >/dev/null || failed "scrub start (limited)"
for _ in $(seq 50); do  # until the first extent is counted (paced at 64 KiB/s)
  status=$("$CTL" scrub status "$mnt" 2>&1)
  grep -qE "Bytes scrubbed: *[1-9]" <<<"$status" && break
  sleep 0.1
done
grep -q "Status: *running" <<<"$status" && grep -qE "Bytes scrubbed: *[1-9]" <<<"$status" &&
  pass "scrub status shows a running scrub's progress" || failed "status while running: $status"
rc=0
"$CTL" scrub start -B "$mnt" >/dev/null 2>&1 || rc=$?
[[ $rc == 1 ]] && pass "a second scrub start while one runs exits 1" || failed "second scrub start: exit $rc"
[[ $(python3 "$tmp/scrub.py" "$mnt" progress) == csum* ]] && pass "SCRUB_PROGRESS answers while a scrub runs" ||
  failed "SCRUB_PROGRESS while running: $(python3 "$tmp/scrub.py" "$mnt" progress)"
out=$("$CTL" scrub cancel "$mnt") && [[ $out == "scrub cancelled" ]] &&
  grep -q "Status: *aborted" <<<"$("$CTL" scrub status "$mnt")" && pass "scrub cancel stops it (status aborted)" ||
  failed "scrub cancel: $out"
"$CTL" scrub start -B "$mnt" >"$tmp/fg.out" 2>&1 &
fg=$!
sleep 1
kill -INT "$fg"
rc=0
wait "$fg" || rc=$?
# Exit 1 for the cancel, or 3 when the part scrubbed already held the uncorrectable data sector.
[[ $rc == 1 || $rc == 3 ]] && grep -q "scrub canceled" "$tmp/fg.out" && grep -q "Status: *aborted" "$tmp/fg.out" &&
  pass "^C on scrub start -B cancels the scrub (exit $rc)" || failed "^C on -B: exit $rc: $(cat "$tmp/fg.out")"
"$CTL" scrub limit -l 0 "$mnt" | grep -q unlimited || failed "scrub limit -l 0"
ours=$("$CTL" filesystem df -b "$mnt")
ubtrfs_umount "$mnt" || failed "unmount"

# ---- a read-only mount: only a readonly scrub, which writes nothing; root only ----
before=$(sparse_hash "$img")
ubtrfs_mount "$img" "$mnt" ro,allow_other || failed "mount ro"
[[ $(python3 "$tmp/scrub.py" "$mnt" scrub) == "errno 30" ]] && pass "a repairing scrub on a read-only mount is EROFS" ||
  failed "scrub on ro: $(python3 "$tmp/scrub.py" "$mnt" scrub)"
ro=$(python3 "$tmp/scrub.py" "$mnt" readonly)
[[ $ro == "csum 1 verify 0 corrected 0 uncorrectable 1" ]] && pass "a readonly scrub on a read-only mount: $ro" || failed "readonly scrub: $ro"
[[ $(python3 "$tmp/scrub.py" "$mnt" readonly 65534) == "errno 1" ]] && pass "BTRFS_IOC_SCRUB by a non-root caller is EPERM" ||
  failed "non-root scrub: $(python3 "$tmp/scrub.py" "$mnt" readonly 65534)"
ubtrfs_umount "$mnt" || failed "unmount ro"
[[ $(sparse_hash "$img") == "$before" ]] && pass "the read-only mount's scrubs wrote nothing" || failed "the image changed under a ro mount"
kernel_mount "$img" "$kmnt"
theirs=$(btrfs filesystem df -b "$kmnt")
kernel_umount "$kmnt"
echo "ubtrfs-ctl:"; echo "$ours"; echo "kernel:"; echo "$theirs"
df_ok=1
for type in "Data, single" "System, DUP" "Metadata, DUP"; do
  o=$(grep "^$type:" <<<"$ours" | sed -E 's/.*total=([0-9]+), used=([0-9]+)/\1 \2/')
  t=$(grep "^$type:" <<<"$theirs" | sed -E 's/.*total=([0-9]+), used=([0-9]+)/\1 \2/')
  read -r ot ou <<<"$o"
  read -r tt tu <<<"$t"
  if [[ -z $ot || $ot != "$tt" ]] || (((ou > tu ? ou - tu : tu - ou) > 1048576)); then
    failed "filesystem df $type: ubtrfs '$o', kernel '$t'"
    df_ok=0
  fi
done
((df_ok)) && pass "ctl_df_matches_the_kernel: same chunk totals, used within 1 MiB"

finish
