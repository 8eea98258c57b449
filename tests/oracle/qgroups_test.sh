#!/usr/bin/env bash
# Quota groups: a filesystem on which `btrfs quota enable` ran (openSUSE and Fedora's snapper do
# it) stays check-clean when ubtrfs writes to it, and the kernel's next read-write mount recounts
# the qgroups by itself:
#   1. the kernel makes the image: quotas on, a subvolume with a limit, a level-1 qgroup holding
#      it, files; counts consistent (btrfs check verifies them);
#   2. a ubtrfs mount (noatime) that only reads leaves the qgroups consistent (no commit, no rescan);
#   3. ubtrfs writes, deletes, creates a subvolume and snapshots one; the daemon says once that it
#      does not account quotas; after unmount the status item is ON|RESCAN|INCONSISTENT with
#      progress 0 and the last commit's generation, every QGROUP_INFO is zero, the new subvolume
#      and the snapshot have their 0/<id> qgroups, the limit is kept; the image is check-clean
#      (before this, btrfs check failed: "Counts for qgroup id: 0/5 are different");
#   4. the kernel mounts it read-write, resumes the rescan itself ("qgroup scan completed" in its
#      log), reports counts that match the files, and after its unmount btrfs check verifies those
#      counts and finds them right.
# Rule named here: a_commit_on_a_quota_enabled_filesystem_hands_the_counts_to_a_kernel_rescan.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_root
require_btrfs_check
require_kernel_btrfs
require_ubtrfs
command -v mkfs.btrfs >/dev/null || skip_or_fail "mkfs.btrfs (btrfs-progs) not installed"
CTL=$UBTRFS_BIN/ctl/ubtrfs-ctl
[[ -x $CTL ]] || { echo "FAIL: $CTL not built" >&2; exit 1; }

tmp=$(make_tmpdir)
img=$tmp/q.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
MiB=$((1 << 20))

# status_line IMG: the QGROUP_STATUS line of the quota tree ("version 1 generation G flags F scan S").
# (Every helper reads its producer to the end: with pipefail an early exit would fail the pipe.)
status_line() { btrfs inspect-internal dump-tree -t quota "$1" | awk '/^\s*version [0-9]+ generation/ && !n++'; }
# info_field IMG QGROUPID FIELD: a QGROUP_INFO counter (referenced / exclusive) as the image holds it.
info_field() {
  btrfs inspect-internal dump-tree -t quota "$1" | awk -v q="$2" -v f="$3" '
    $0 ~ "QGROUP_INFO " q "\\)" { hit = 1; next }
    hit && $1 == f && !n++ { print $2 }'
}
super_generation() { btrfs inspect-internal dump-super "$1" | awk '$1 == "generation" && !n++ {print $2}'; }
# qgroup_rfer MNT QGROUPID: referenced bytes as the kernel reports them.
qgroup_rfer() { btrfs qgroup show --raw "$1" | awk -v q="$2" '$1 == q && !n++ {print $2}'; }

# ---- 1. the kernel's image ----------------------------------------------------------------------
truncate -s 512M "$img"
mkfs.btrfs -q -f "$img" >/dev/null
kernel_mount "$img" "$kmnt" || { failed "kernel mount of a fresh image"; finish; }
btrfs quota enable "$kmnt"
btrfs subvolume create "$kmnt/sv" >/dev/null
head -c $((8 * MiB)) /dev/urandom >"$kmnt/a"
head -c $((4 * MiB)) /dev/urandom >"$kmnt/sv/b"
btrfs qgroup create 1/100 "$kmnt"
btrfs qgroup assign 0/256 1/100 "$kmnt" 2>/dev/null || true
btrfs qgroup limit 100M "$kmnt/sv"
btrfs quota rescan -w "$kmnt" >/dev/null
kernel_umount "$kmnt"
if out=$(btrfs check "$img" 2>&1) && ! grep -q 'are different' <<<"$out"; then
  pass "the kernel's image has consistent qgroups ($(status_line "$img" | xargs))"
else
  failed "the kernel's own image does not check clean: $(tail -5 <<<"$out")"
fi

# ---- 2. a mount that changes nothing ------------------------------------------------------------
before=$(status_line "$img")
# noatime: with relatime the first read after a write updates the access time, a real change.
if ubtrfs_mount "$img" "$mnt" noatime; then
  cat "$mnt/a" "$mnt/sv/b" >/dev/null
  ubtrfs_umount "$mnt" || failed "unmount after reading"
  after=$(status_line "$img")
  if [[ $after == "$before" ]]; then
    pass "a ubtrfs mount that only reads leaves the qgroup status as it was ($(xargs <<<"$after"))"
  else
    failed "reading through ubtrfs changed the qgroup status: '$before' -> '$after'"
  fi
else
  failed "ubtrfs mount of the kernel's quota image"
fi

# ---- 3. ubtrfs changes the filesystem -------------------------------------------------------------
head -c $((3 * MiB)) /dev/urandom >"$tmp/e.src"
head -c $((2 * MiB)) /dev/urandom >"$tmp/c.src"
head -c $((1 * MiB)) /dev/urandom >"$tmp/n.src"
if ubtrfs_mount "$img" "$mnt"; then
  cp "$tmp/e.src" "$mnt/e"
  rm "$mnt/a"
  cp "$tmp/c.src" "$mnt/sv/c"
  "$CTL" subvolume create "$mnt/new" >/dev/null || failed "ubtrfs-ctl subvolume create"
  cp "$tmp/n.src" "$mnt/new/n"
  "$CTL" subvolume snapshot "$mnt/sv" "$mnt/snap" >/dev/null || failed "ubtrfs-ctl subvolume snapshot"
  new_id=$("$CTL" subvolume list "$mnt" | awk '$NF == "new" {print $2}')
  snap_id=$("$CTL" subvolume list "$mnt" | awk '$NF == "snap" {print $2}')
  log=$(ubtrfs_log "$mnt")
  ubtrfs_umount "$mnt" || failed "ubtrfs unmount after the changes"
  n=$(grep -c 'quota groups are enabled' "$log" || true)
  if ((n == 1)); then
    pass "the daemon says once that it does not account quota groups"
  else
    failed "the daemon's quota warning appeared $n times (log $log)"
  fi
  st=$(status_line "$img")
  gen=$(super_generation "$img")
  if [[ $st =~ flags\ ON\|SCANNING\|INCONSISTENT\ scan\ 0$ && $st == *"generation $gen "* ]]; then
    pass "after ubtrfs wrote: status ON|RESCAN|INCONSISTENT, progress 0, generation $gen (the last commit)"
  else
    failed "after ubtrfs wrote, the status is '$(xargs <<<"$st")' (superblock generation $gen)"
  fi
  nonzero=''
  for q in 0/5 0/256 1/100 "0/$new_id" "0/$snap_id"; do
    r=$(info_field "$img" "$q" referenced)
    [[ $r == 0 ]] || nonzero+=" $q=${r:-missing}"
  done
  if [[ -z $nonzero && -n $new_id && -n $snap_id ]]; then
    pass "every QGROUP_INFO is zero for the rescan, the new subvolume ($new_id) and the snapshot ($snap_id) included"
  else
    failed "QGROUP_INFO not zero or missing:$nonzero (new '$new_id', snapshot '$snap_id')"
  fi
  quota_tree=$(btrfs inspect-internal dump-tree -t quota "$img")
  if grep -A2 'QGROUP_LIMIT 0/256)' <<<"$quota_tree" | grep -q 'max_referenced 104857600'; then
    pass "the 100M limit of 0/256 is kept"
  else
    failed "the limit of 0/256 was lost"
  fi
  if check_clean_full "$img"; then pass "check-clean after ubtrfs wrote (btrfs check both modes, data csum, kernel read, fsck.ubtrfs)"; else failed "not check-clean after ubtrfs wrote"; fi
  out=$(btrfs check "$img" 2>&1) || true
  if grep -q 'Qgroup rescan is running' <<<"$out"; then
    pass "btrfs check sees the pending rescan"
  else
    failed "btrfs check does not report the pending rescan"
  fi
else
  failed "second ubtrfs mount"
fi

# ---- 4. the kernel recounts -----------------------------------------------------------------------
# The kernel's log from now on (the ring buffer may drop old lines, so by time, not line count).
since=$(cut -d' ' -f1 /proc/uptime)
if kernel_mount "$img" "$kmnt"; then
  dev=$(findmnt -n -o SOURCE "$kmnt")
  btrfs quota rescan -W "$kmnt" >/dev/null 2>&1 || true
  sync
  klog=$(dmesg | awk -v t="$since" -v d="(device ${dev#/dev/})" '{ s = $0; sub(/^\[ */, "", s); sub(/\].*/, "", s) } s + 0 >= t + 0 && index($0, d)')
  if grep -q 'qgroup scan completed' <<<"$klog"; then
    pass "the kernel resumed the rescan at its read-write mount and completed it"
  else
    failed "no 'qgroup scan completed' in the kernel log after its mount: $(grep -i qgroup <<<"$klog" | head -3)"
  fi
  r5=$(qgroup_rfer "$kmnt" 0/5)
  r256=$(qgroup_rfer "$kmnt" 0/256)
  rnew=$(qgroup_rfer "$kmnt" "0/$new_id")
  rsnap=$(qgroup_rfer "$kmnt" "0/$snap_id")
  # Data plus the subvolume's tree blocks (a few 16 KiB blocks).
  in_range() { [[ -n $1 ]] && (($1 >= $2 && $1 <= $2 + MiB)); }
  if in_range "$r5" $((3 * MiB)) && in_range "$r256" $((6 * MiB)) && in_range "$rnew" $((1 * MiB)) && in_range "$rsnap" $((6 * MiB)); then
    pass "the kernel's recount matches the files: 0/5 $r5, 0/256 $r256, 0/$new_id $rnew, snapshot 0/$snap_id $rsnap bytes"
  else
    failed "the kernel's recount: 0/5 '$r5' (3 MiB expected), 0/256 '$r256' (6), 0/$new_id '$rnew' (1), 0/$snap_id '$rsnap' (6)"
  fi
  kernel_umount "$kmnt"
  out=$(btrfs check "$img" 2>&1) || true
  if [[ $(status_line "$img") =~ flags\ ON\ scan ]] && ! grep -qE 'are different|rescan is running|inconsistent' <<<"$out" &&
    grep -q 'no error found' <<<"$out"; then
    pass "after the kernel's rescan the qgroups are consistent and btrfs check verifies their counts"
  else
    failed "after the kernel's rescan: status '$(status_line "$img" | xargs)', check: $(grep -iE 'qgroup|differ|error' <<<"$out" | head -5)"
  fi
else
  failed "the kernel refused a read-write mount after ubtrfs wrote"
fi

finish
