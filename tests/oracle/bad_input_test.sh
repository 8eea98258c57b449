#!/usr/bin/env bash
# Bad input: ubtrfs-inspect on things that are not healthy btrfs images must fail cleanly.
#
# For each case (a non-btrfs file, an empty and a tiny file, a truncated image, a bad superblock
# checksum, an unknown incompat flag, a tree block with a bad checksum, a
# tree block with a valid checksum but broken structure, a missing file) both dump-super and
# dump-tree (where it applies) must: exit non-zero, print exactly one line on stderr of the form
# "ubtrfs-inspect: error: ..." naming the problem, never crash (no sanitizer report, no signal), and
# leave the image byte-for-byte unchanged. A DUP image whose first copy of a block is corrupt must
# still dump (exit 0) from the second copy.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

INSPECT=${UBTRFS_INSPECT:-$UBTRFS_BIN/inspect/ubtrfs-inspect}
[[ -x $INSPECT ]] || { echo "FAIL: $INSPECT not built" >&2; exit 1; }
command -v mkfs.btrfs >/dev/null || skip_or_fail "mkfs.btrfs not installed"
command -v python3 >/dev/null || skip_or_fail "python3 not installed"

tmp=$(make_tmpdir)

# Byte surgery helper: set a little-endian field and recompute a crc32c checksum (superblock or tree
# block), so a case can get past the checksum to the check behind it.
cat >"$tmp/edit.py" <<'EOF'
import struct, sys

def crc32c(data, crc=0xFFFFFFFF):
    table = crc32c.table
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
crc32c.table = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    crc32c.table.append(c)

def main():
    path, op = sys.argv[1], sys.argv[2]
    with open(path, 'r+b') as f:
        if op == 'set':                      # set PATH set OFFSET SIZE VALUE
            off, size, val = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5], 0)
            f.seek(off); f.write(val.to_bytes(size, 'little'))
        elif op == 'flip':                   # flip PATH flip OFFSET
            off = int(sys.argv[3]); f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xFF]))
        elif op == 'csum':                   # csum PATH csum OFFSET LENGTH (crc32c over [32, LENGTH))
            off, length = int(sys.argv[3]), int(sys.argv[4])
            f.seek(off); blk = f.read(length)
            f.seek(off); f.write(struct.pack('<I', crc32c(blk[32:])) + b'\0' * 28)
main()
EOF
edit() { python3 "$tmp/edit.py" "$@"; }

# expect_error NAME PATTERN CMD...: non-zero exit, one stderr line matching the pattern, image unchanged.
expect_error() {
  local name=$1 pattern=$2
  shift 2
  local img=${*: -1} before after rc=0 lines
  before=$( [[ -e $img ]] && hash_file "$img" || echo none)
  "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  after=$( [[ -e $img ]] && hash_file "$img" || echo none)
  lines=$(wc -l <"$tmp/err")
  if [[ $rc == 0 ]]; then
    failed "$name: exit status 0"
  elif ((rc > 128)); then
    failed "$name: killed by signal $((rc - 128)): $(head -c 400 "$tmp/err")"
  elif [[ $lines != 1 ]]; then
    failed "$name: $lines lines on stderr (want 1):"
    head -c 1000 "$tmp/err" >&2
  elif ! grep -qE "^ubtrfs-inspect: error: .*($pattern)" "$tmp/err"; then
    failed "$name: stderr does not match '$pattern': $(cat "$tmp/err")"
  elif [[ $before != "$after" ]]; then
    failed "$name: image changed"
  elif [[ $rc != 1 ]]; then
    failed "$name: exit status $rc, want 1"
  else
    pass "$name: $(cat "$tmp/err")"
  fi
}

both() {  # both NAME PATTERN IMG: dump-super and dump-tree
  expect_error "$1 (dump-super)" "$2" "$INSPECT" dump-super "$3"
  expect_error "$1 (dump-tree)" "$2" "$INSPECT" dump-tree "$3"
}

# A healthy base image with metadata SINGLE: mkfs places its chunks at logical == physical.
base=$tmp/base.img
truncate -s 256M "$base"
mkfs.btrfs -q -f -m single "$base" >/dev/null
"$INSPECT" dump-tree "$base" >/dev/null || { echo "FAIL: base image does not dump" >&2; exit 1; }

head -c 1M /dev/urandom >"$tmp/random.img"
both "random bytes" "not a btrfs filesystem" "$tmp/random.img"

: >"$tmp/empty.img"
both "empty file" "too small" "$tmp/empty.img"
head -c 70000 /dev/zero >"$tmp/tiny.img"
both "tiny file" "too small|not a btrfs filesystem" "$tmp/tiny.img"

head -c 40M "$base" >"$tmp/truncated.img"
expect_error "truncated image (dump-tree)" "truncated|beyond the device end|exceeds device size" \
  "$INSPECT" dump-tree "$tmp/truncated.img"

cp "$base" "$tmp/badsuper.img"
edit "$tmp/badsuper.img" flip $((65536 + 300))
both "bad superblock checksum" "superblock checksum mismatch" "$tmp/badsuper.img"

cp "$base" "$tmp/incompat.img"
old=$(python3 -c "import sys;f=open(sys.argv[1],'rb');f.seek(65536+0xBC);print(int.from_bytes(f.read(8),'little'))" "$base")
edit "$tmp/incompat.img" set $((65536 + 0xBC)) 8 $((old | (1 << 20)))
edit "$tmp/incompat.img" csum 65536 4096
both "unknown incompat flag" "unknown incompat features 0x100000" "$tmp/incompat.img"

# sha256 and blake2 checksums are supported (libsodium): such images dump like any other, with
# every key btrfs-progs shows. (Their data path is tested through the daemon by
# csum_algorithms_test.sh.)
for csum in sha256 blake2; do
  truncate -s 256M "$tmp/$csum.img"
  mkfs.btrfs -q -f --csum "$csum" "$tmp/$csum.img" >/dev/null
  ours=$("$INSPECT" dump-tree "$tmp/$csum.img" 2>&1 | grep -c 'key (' || true)
  theirs=$(btrfs inspect-internal dump-tree "$tmp/$csum.img" 2>/dev/null | grep -c 'key (' || true)
  if "$INSPECT" dump-super "$tmp/$csum.img" | grep -q "csum_type.*$csum" && [[ $ours -gt 0 && $ours == "$theirs" ]]; then
    pass "$csum checksums: dump-super names the type, dump-tree shows all $ours keys"
  else
    failed "$csum checksums: dump-tree shows $ours keys, btrfs-progs $theirs"
  fi
done

expect_error "missing file" "No such file|not found|does not exist|ENOENT" "$INSPECT" dump-tree "$tmp/does-not-exist.img"
expect_error "unknown tree name" "unknown tree" "$INSPECT" dump-tree -t nosuchtree "$base"
expect_error "absent tree id" "not found" "$INSPECT" dump-tree -t 4242 "$base"

# Tree block cases: the FS tree root leaf of the single-metadata image (logical == physical).
fs_root=$("$INSPECT" dump-tree -t root "$base" | grep -A1 'key (FS_TREE ROOT_ITEM 0)' | grep -oP 'bytenr \K[0-9]+')
nodesize=$("$INSPECT" dump-super "$base" | grep -oP '^nodesize\s+\K[0-9]+')

cp "$base" "$tmp/badcsum.img"
edit "$tmp/badcsum.img" flip $((fs_root + 500))
expect_error "tree block checksum" "checksum verify failed on $fs_root wanted 0x[0-9a-f]+ found 0x[0-9a-f]+" \
  "$INSPECT" dump-tree "$tmp/badcsum.img"
expect_error "tree block checksum (-t fs)" "checksum verify failed on $fs_root" \
  "$INSPECT" dump-tree -t fs "$tmp/badcsum.img"

cp "$base" "$tmp/nritems.img"
edit "$tmp/nritems.img" set $((fs_root + 0x60)) 4 100000
edit "$tmp/nritems.img" csum "$fs_root" "$nodesize"
expect_error "leaf nritems beyond the block" "corrupt leaf: root=5 block=$fs_root slot=0, invalid nritems" \
  "$INSPECT" dump-tree -t 5 "$tmp/nritems.img"

cp "$base" "$tmp/itemoff.img"
# Item 0's data offset (header 101 + key 17): one byte lower leaves a gap at the end of the leaf.
off0=$(python3 -c "import sys;f=open(sys.argv[1],'rb');f.seek(int(sys.argv[2])+101+17);print(int.from_bytes(f.read(4),'little'))" "$base" "$fs_root")
edit "$tmp/itemoff.img" set $((fs_root + 101 + 17)) 4 $((off0 - 1))
edit "$tmp/itemoff.img" csum "$fs_root" "$nodesize"
expect_error "leaf item offset" "corrupt leaf: root=5 block=$fs_root slot=0, unexpected item end" \
  "$INSPECT" dump-tree "$tmp/itemoff.img"

cp "$base" "$tmp/bytenr.img"
edit "$tmp/bytenr.img" set $((fs_root + 0x30)) 8 $((fs_root + nodesize))
edit "$tmp/bytenr.img" csum "$fs_root" "$nodesize"
expect_error "tree block bytenr" "bad tree block $fs_root: bytenr mismatch" "$INSPECT" dump-tree "$tmp/bytenr.img"

cp "$base" "$tmp/gen.img"
gen=$(python3 -c "import sys;f=open(sys.argv[1],'rb');f.seek(int(sys.argv[2])+0x50);print(int.from_bytes(f.read(8),'little'))" "$base" "$fs_root")
edit "$tmp/gen.img" set $((fs_root + 0x50)) 8 $((gen - 1))
edit "$tmp/gen.img" csum "$fs_root" "$nodesize"
expect_error "tree block generation" "parent transid verify failed on $fs_root wanted $gen found $((gen - 1))" \
  "$INSPECT" dump-tree "$tmp/gen.img"

# Random corruption of random tree blocks (checksum recomputed so the tree checker sees it): the
# tool must exit 0 or 1 with at most one line on stderr, never crash.
iters=${UBTRFS_BAD_INPUT_ITERS:-40}
"$INSPECT" dump-tree "$base" | grep -oP '^(leaf|node) \K[0-9]+(?= (items|level))' | sort -u >"$tmp/blocks"
crashes=0
for ((i = 0; i < iters; i++)); do
  cp "$base" "$tmp/fuzz.img"
  blk=$(shuf -n 1 "$tmp/blocks")
  for _ in $(seq 1 $((RANDOM % 4 + 1))); do
    edit "$tmp/fuzz.img" set $((blk + 32 + RANDOM % (nodesize > 1000 ? 1000 : nodesize - 32))) 1 $((RANDOM % 256))
  done
  edit "$tmp/fuzz.img" csum "$blk" "$nodesize"
  rc=0
  "$INSPECT" dump-tree "$tmp/fuzz.img" >/dev/null 2>"$tmp/err" || rc=$?
  if ((rc > 1)) || (($(wc -l <"$tmp/err") > 1)); then
    crashes=$((crashes + 1))
    echo "fuzz case $i (block $blk): rc $rc: $(head -c 500 "$tmp/err")" >&2
  fi
done
if ((crashes == 0)); then
  pass "random tree block corruption: $iters images, no crash, at most one error line"
else
  failed "random tree block corruption: $crashes of $iters runs crashed or printed several lines"
fi

# DUP: the first copy of the FS tree leaf corrupt, the second intact -> read from mirror 2, exit 0.
dup=$tmp/dup.img
truncate -s 256M "$dup"
mkfs.btrfs -q -f "$dup" >/dev/null
dup_root=$("$INSPECT" dump-tree -t root "$dup" | grep -A1 'key (FS_TREE ROOT_ITEM 0)' | grep -oP 'bytenr \K[0-9]+')
# Physical address of the first copy: METADATA chunk stripe 0 offset + (logical - chunk start).
phys=$("$INSPECT" dump-tree -t chunk "$dup" | python3 -c "
import re, sys
want = int(sys.argv[1]); start = None
for line in sys.stdin:
    m = re.search(r'CHUNK_ITEM (\d+)\)', line)
    if m: start = int(m.group(1)); continue
    m = re.search(r'length (\d+) ', line)
    if m: length = int(m.group(1)); continue
    m = re.search(r'stripe 0 devid \d+ offset (\d+)', line)
    if m and start is not None and start <= want < start + length:
        print(int(m.group(1)) + want - start); break
" "$dup_root")
before=$(hash_file "$dup")
edit "$dup" flip $((phys + 500))
before=$(hash_file "$dup")
if "$INSPECT" dump-tree -t fs "$dup" >"$tmp/out" 2>"$tmp/err" && grep -q "^leaf $dup_root " "$tmp/out" &&
  [[ ! -s $tmp/err ]] && [[ $(hash_file "$dup") == "$before" ]]; then
  pass "DUP copy 1 corrupt: read from copy 2, exit 0, image unchanged"
else
  failed "DUP copy 1 corrupt: $(cat "$tmp/err")"
fi
# stderr captured first: `cmd | grep -q` under pipefail fails when grep exits before cmd is done
# writing (SIGPIPE) — which the slower ASan build hit.
if verbose_err=$("$INSPECT" -v dump-tree -t fs "$dup" 2>&1 >/dev/null) && grep -q "checksum verify failed on $dup_root" <<<"$verbose_err"; then
  pass "DUP copy 1 corrupt: -v warns about mirror 1"
else
  failed "DUP copy 1 corrupt: -v shows no warning"
fi

finish
