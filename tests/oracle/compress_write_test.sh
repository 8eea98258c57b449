#!/usr/bin/env bash
# Compression on write through a real mount, judged by btrfs check, the kernel and compsize
# (issue 16 acceptance 4; fs/file_compress.cpp, tools/inspect/compsize.cpp).
#
# ubtrfs mounted with -o compress=zstd gets text (words drawn at random from the licence texts),
# random bytes, a small text file and a few files in a directory, then 4 MiB of text each under
# compress=lzo and compress-force=zlib:9, and without the option 2 MiB each in a file with the
# btrfs.compression property (lzo) and one with chattr +c; after the unmount `btrfs check`
# is clean, the kernel mounts the image read-only and reads every file identically, the text uses
# at most a third of its size on disk and the random data is stored uncompressed — measured by
# `ubtrfs-inspect compsize` on the image and, when installed, by compsize on the kernel mount,
# which must report the same figures. Then the kernel appends to the text with compress=zstd and
# ubtrfs reads the kernel's extents back.
#
# Size: UBTRFS_COMPRESS_TEXT_MB (default 64, the CI run, ~15 s). The acceptance run of 1 GiB is
#   UBTRFS_COMPRESS_TEXT_MB=1024 bash tests/oracle/compress_write_test.sh
# (not in CI: a few minutes).
#
# Rules named here: compressed_text_uses_at_most_a_third_of_its_size,
# random_data_is_stored_uncompressed, the_kernel_reads_what_ubtrfs_compressed,
# inspect_compsize_matches_compsize_on_the_kernel_mount.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MKFS=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
INSPECT=$UBTRFS_BIN/inspect/ubtrfs-inspect
TEXT_MB=${UBTRFS_COMPRESS_TEXT_MB:-64}

require_ubtrfs
fs_is_kernel && skip_or_fail "compares ubtrfs with the kernel"
require_kernel_btrfs
require_btrfs_check
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
[[ -x $MKFS && -x $INSPECT ]] || { echo "FAIL: mkfs.ubtrfs or ubtrfs-inspect not built" >&2; exit 1; }
have_compsize=0
command -v compsize >/dev/null && have_compsize=1

tmp=$(make_tmpdir)
img=$tmp/compress.img
mnt=$tmp/mnt
kmnt=$tmp/kernel
src=$tmp/src
mkdir -p "$src/dir"
truncate -s $((TEXT_MB * 2 + 1024))M "$img"
"$MKFS" -q "$img"

# Sources: text of TEXT_MB MiB, 8 MiB of random bytes, a 3000-byte text (a compressed inline
# extent), a directory of mixed small files.
python3 - "$src" "$TEXT_MB" <<'PY'
import glob, os, random, re, sys
src, mb = sys.argv[1], int(sys.argv[2])
words = set()
for f in glob.glob('/usr/share/common-licenses/*'):
    try:
        words.update(re.findall(r'[A-Za-z]+', open(f, errors='ignore').read()))
    except OSError:
        pass
words = sorted(words) or ['btrfs', 'extent', 'tree', 'copy', 'write']
r = random.Random(16)
r.shuffle(words)
# Word frequencies follow Zipf's law, as in natural language (the n-th word 1/n as often as the first).
cum, total = [], 0.0
for i in range(len(words)):
    total += 1.0 / (i + 1)
    cum.append(total)
def text(n):
    out, size = [], 0
    while size < n:
        s = ' '.join(r.choices(words, cum_weights=cum, k=5000)) + '\n'
        out.append(s)
        size += len(s)
    return ''.join(out).encode()[:n]
with open(os.path.join(src, 'text.txt'), 'wb') as f:
    for _ in range(mb):
        f.write(text(1 << 20))
with open(os.path.join(src, 'random.bin'), 'wb') as f:
    f.write(os.urandom(8 << 20))
with open(os.path.join(src, 'small.txt'), 'wb') as f:
    f.write(text(3000))
for i in range(8):
    with open(os.path.join(src, 'dir', f'f{i}'), 'wb') as f:
        f.write(text(1000 + 37000 * i) if i % 2 == 0 else os.urandom(5000 * i + 1))
PY
text_size=$(stat -c %s "$src/text.txt")

start=$SECONDS
ubtrfs_mount "$img" "$mnt" compress=zstd
cp -r "$src/." "$mnt/"
sync
ubtrfs_umount "$mnt"
echo "copied $((text_size >> 20)) MiB of text and the rest under compress=zstd in $((SECONDS - start)) s"
# The other formats, in mounts of their own: lzo, and zlib at level 9 through compress-force.
head -c $((4 << 20)) "$src/text.txt" >"$src/lzo.txt"
head -c $((4 << 20)) "$src/text.txt" >"$src/zlib.txt"
ubtrfs_mount "$img" "$mnt" compress=lzo
cp "$src/lzo.txt" "$mnt/"
ubtrfs_umount "$mnt"
ubtrfs_mount "$img" "$mnt" compress-force=zlib:9
cp "$src/zlib.txt" "$mnt/"
ubtrfs_umount "$mnt"
# Without the option, per file: the btrfs.compression property (what `btrfs property set FILE
# compression lzo` writes) and chattr +c (zlib).
head -c $((2 << 20)) "$src/text.txt" >"$tmp/prop.txt"
head -c $((2 << 20)) "$src/text.txt" >"$tmp/chattr.txt"
ubtrfs_mount "$img" "$mnt"
touch "$mnt/prop.txt" "$mnt/chattr.txt"
python3 -c 'import os, sys; os.setxattr(sys.argv[1], "btrfs.compression", b"lzo")' "$mnt/prop.txt"
chattr +c "$mnt/chattr.txt"
cat "$tmp/prop.txt" >>"$mnt/prop.txt"
cat "$tmp/chattr.txt" >>"$mnt/chattr.txt"
ubtrfs_umount "$mnt"
mv "$tmp/prop.txt" "$tmp/chattr.txt" "$src/"

if check_clean "$img"; then pass "btrfs check clean after ubtrfs wrote compressed extents"; else failed "btrfs check"; fi

# compsize_figures OUTPUT ROW: "disk uncompressed referenced" of the row (TOTAL, none, zstd, ...)
# of a compsize -b report; empty when the row is absent.
compsize_figures() { awk -v row="$2" '$1 == row { print $3, $4, $5 }' <<<"$1"; }

# ubtrfs-inspect's figures, taken now (it refuses an image the kernel has mounted).
declare -A ours
for what in text.txt random.bin dir lzo.txt zlib.txt prop.txt chattr.txt /; do ours[$what]=$("$INSPECT" compsize -b "$img" "$what"); done
report_text=${ours[text.txt]}
report_random=${ours[random.bin]}
echo "ubtrfs-inspect compsize of the whole filesystem:"
"$INSPECT" compsize "$img"
read -r t_disk t_uncomp t_ref <<<"$(compsize_figures "$report_text" zstd)"
if [[ -n ${t_disk:-} ]] && ((t_ref == text_size || t_ref == (text_size + 4095) / 4096 * 4096)) && ((t_disk * 3 <= text_size)); then
  pass "text: $t_disk bytes on disk for $text_size ($((t_disk * 100 / text_size))%), all zstd"
else
  failed "text: expected zstd with at most a third of $text_size on disk, got: $report_text"
fi
if [[ -n $(compsize_figures "$report_text" none) ]]; then
  # A few pieces may legitimately stay plain (the last sector); the bulk must not.
  read -r n_disk _ <<<"$(compsize_figures "$report_text" none)"
  ((n_disk <= 1048576)) || failed "text: $n_disk bytes stored uncompressed"
fi
for f in lzo:lzo:4 zlib:zlib:4 prop:lzo:2 chattr:zlib:2; do
  IFS=: read -r t row mb <<<"$f"
  read -r c_disk c_uncomp _ <<<"$(compsize_figures "${ours[$t.txt]}" "$row")"
  # lzo compresses each sector on its own: it keeps more than half of this text.
  if [[ -n ${c_disk:-} ]] && ((c_uncomp == mb << 20 && c_disk * 4 < c_uncomp * 3)); then
    pass "$t.txt: $row, $c_disk bytes on disk for $c_uncomp"
  else
    failed "$t: ${ours[$t.txt]}"
  fi
done
read -r r_disk _ r_ref <<<"$(compsize_figures "$report_random" none)"
if [[ -z $(compsize_figures "$report_random" zstd) && ${r_disk:-0} == $((8 << 20)) ]]; then
  pass "random data stored uncompressed (the heuristic)"
else
  failed "random data: $report_random"
fi

kernel_mount "$img" "$kmnt" ro
bad=0
while IFS= read -r -d '' f; do
  rel=${f#"$src"/}
  cmp -s "$f" "$kmnt/$rel" || { failed "kernel reads $rel differently"; bad=1; }
done < <(find "$src" -type f -print0)
((bad)) || pass "the kernel reads every file identically"
prop=$(btrfs property get "$kmnt/prop.txt" compression 2>&1 || true)
flags=$(lsattr -d "$kmnt/prop.txt" "$kmnt/chattr.txt" 2>&1 | awk '{ print $1 }' | tr '\n' ' ')
if [[ $prop == compression=lzo && $flags == *c*' '*c* ]]; then
  pass "the kernel sees the property (lzo) and the c flag"
else
  failed "kernel: property get '$prop', lsattr '$flags'"
fi
if ((have_compsize)); then
  ok=1
  for what in text.txt random.bin dir lzo.txt zlib.txt prop.txt chattr.txt /; do
    theirs=$(compsize -b "$kmnt/$what" 2>&1) || true
    [[ $what == / ]] && { echo "compsize on the kernel mount:"; echo "$theirs"; }
    for row in TOTAL none zlib lzo zstd; do
      if [[ "$(compsize_figures "${ours[$what]}" $row)" != "$(compsize_figures "$theirs" $row)" ]]; then
        failed "compsize of '$what' row $row: ubtrfs-inspect '$(compsize_figures "${ours[$what]}" $row)' compsize on the kernel mount '$(compsize_figures "$theirs" $row)'"
        echo "$theirs" >&2
        ok=0
      fi
    done
  done
  ((ok)) && pass "ubtrfs-inspect compsize matches compsize on the kernel mount"
else
  echo "note: compsize not installed: the kernel-side figures were not compared" >&2
fi
kernel_umount "$kmnt"

# The reverse direction on the same image: the kernel appends compressed text, ubtrfs reads it.
kernel_mount "$img" "$kmnt" compress=zstd
head -c $((4 << 20)) "$src/text.txt" >>"$kmnt/text.txt"
kernel_umount "$kmnt"
cat "$src/text.txt" <(head -c $((4 << 20)) "$src/text.txt") >"$tmp/expected.txt"
ubtrfs_mount "$img" "$mnt" ro
if cmp -s "$tmp/expected.txt" "$mnt/text.txt"; then pass "ubtrfs reads the kernel's appended compressed extents"; else failed "ubtrfs reads text.txt differently after the kernel's append"; fi
ubtrfs_umount "$mnt"

finish
