#!/usr/bin/env bash
# make_corpora.sh SEED_TOOL SOURCE_DIR OUT_DIR: the seed corpora of the fuzz targets, one folder per
# target under OUT_DIR/seeds: superblock/, tree/, image/ (the reader and the read-write mount share
# it). Sources: ubtrfs-fuzz-seeds' own mkfs images and the reference images 001, 002 and 004 of
# images/ (decompressed once into OUT_DIR/raw, sparse). Image seeds over 400 KB (003 and 005, whose
# many tree blocks make 4.6 and 8.8 MB inputs) are left out: libFuzzer mutates small inputs much
# faster; the mkfs-4k-multilevel seed has trees of more than one level instead.
set -euo pipefail
tool=$1 src=$2 out=$3
mkdir -p "$out/raw" "$out/seeds"
raws=()
for case in 001-basic-crc32c-dup 002-compressed-xxhash 004-log-tree; do
  img=$out/raw/$case/image.img
  if [[ ! -f $img ]]; then
    mkdir -p "$out/raw/$case"
    zstd -q -d --long=27 "$src/images/$case/image.zst" -o "$img.tmp" && mv "$img.tmp" "$img"
  fi
  raws+=("$img")
done
rm -rf "$out/seeds.tmp"
"$tool" "$out/seeds.tmp" "${raws[@]}" >"$out/seeds.log"
find "$out/seeds.tmp/image" -name '*.ubfz' -size +400k -delete
rm -rf "$out/seeds"
mv "$out/seeds.tmp" "$out/seeds"
echo "seeds: $(ls "$out/seeds/superblock" | wc -l) superblocks, $(ls "$out/seeds/tree" | wc -l) tree blocks, $(ls "$out/seeds/image" | wc -l) images"
