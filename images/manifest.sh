# shellcheck shell=bash
# Manifest of a mounted filesystem tree: what a reader of an image must see (sourced, not run).
#
# Used by images/make-reference-images.sh to write images/NNN-*/manifest.txt and by
# tests/oracle/reference_images_test.sh to compare what the kernel (and later ubtrfs) reads with it.
#
# Format: one line per path, sorted bytewise (LC_ALL=C), fields separated by one TAB:
#
#   path type mode uid gid size nlink rdev mtime target sha256 xattrs
#
#   path    relative to the root, "." for the root itself, no "./" prefix
#   type    find(1) %y letter: f d l p c b s
#   mode    permission bits in octal, as find's %m (set-id and sticky bits included, e.g. 4755)
#   size    st_size (for a btrfs directory: twice the sum of its name lengths)
#   rdev    "major:minor" for c and b, "-" otherwise
#   mtime   the exact decimal value with 9 fraction digits, as stat's %.9Y: 1704164645.123456789,
#           and -1.500000000 for tv_sec -2 tv_nsec 500000000; the generator fixes every mtime
#   target  symlink target, "-" otherwise
#   sha256  of the content for regular files, "-" otherwise
#   xattrs  "name=hexvalue" joined with ",", sorted by name, "-" if none ("name=" for an empty value)
#
# Names must not contain TAB, newline or "," (the generator never makes such names). atime and
# ctime are left out: the kernel sets them and they cannot be fixed from userspace.
#
# Needs GNU find, stat, sort, sha256sum, xargs; xattrs are read with getfattr(1) when installed,
# else with python3 (os.listxattr); manifest_of fails if neither is there.

# _manifest_xattrs: reads NUL-separated paths (relative to the current directory) on stdin, prints
# "path<TAB>name=hex,name=hex" for every path that has at least one xattr. Symlinks not followed.
_manifest_xattrs() {
  if command -v getfattr >/dev/null 2>&1; then
    # getfattr prints "# file: PATH", then "name=0xHEX" or "name" (empty value), then a blank line.
    xargs -0 -r getfattr -h -d -m - -e hex --absolute-names -- 2>/dev/null |
      awk '
        function flush() { if (path != "" && n > 0) { printf "%s\t", path; for (i = 1; i <= n; i++) printf "%s%s", (i > 1 ? "," : ""), kv[i]; printf "\n" } path = ""; n = 0 }
        /^# file: / { flush(); path = substr($0, 9); next }
        /^$/ { flush(); next }
        { eq = index($0, "="); if (eq == 0) { kv[++n] = $0 "=" } else { v = substr($0, eq + 1); if (v == "\"\"") v = ""; sub(/^0x/, "", v); kv[++n] = substr($0, 1, eq) v } }
        END { flush() }' |
      while IFS=$'\t' read -r p list; do
        # getfattr lists names in its own order: sort them.
        printf '%s\t%s\n' "$p" "$(tr ',' '\n' <<<"$list" | LC_ALL=C sort | paste -sd, -)"
      done
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c '
import os, sys
for p in sys.stdin.buffer.read().split(b"\0"):
    if not p:
        continue
    names = sorted(os.listxattr(p, follow_symlinks=False), key=os.fsencode)
    if not names:
        continue
    kv = [os.fsencode(n) + b"=" + os.getxattr(p, n, follow_symlinks=False).hex().encode() for n in names]
    sys.stdout.buffer.write(p + b"\t" + b",".join(kv) + b"\n")
'
  else
    echo "manifest: neither getfattr nor python3 is available to read xattrs" >&2
    return 1
  fi
}

# manifest_of DIR: prints the manifest of the tree rooted at DIR (see the format above).
manifest_of() {
  local root=$1 tmp
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/ubtrfs-manifest.XXXXXX") || return 1
  (
    set -euo pipefail
    cd "$root"
    export LC_ALL=C
    find . -print0 >"$tmp/paths"
    # Base fields; rdev, the content hash and xattrs are joined in below.
    find . -printf '%p\t%y\t%m\t%U\t%G\t%s\t%n\t%l\n' >"$tmp/base"
    xargs -0 -r stat -c '%n	%.9Y' -- <"$tmp/paths" >"$tmp/mtime"
    find . -type f -print0 | sort -z | xargs -0 -r sha256sum -- |
      sed -E 's/^([0-9a-f]{64}) [ *](.*)$/\2\t\1/' >"$tmp/sha"
    find . \( -type c -o -type b \) -print0 | xargs -0 -r stat -c '%n	%Hr:%Lr' -- >"$tmp/rdev"
    _manifest_xattrs <"$tmp/paths" >"$tmp/xattr"
    awk -F'\t' -v OFS='\t' '
      function rel(p) { if (p == ".") return "."; sub(/^\.\//, "", p); return p }
      FILENAME == ARGV[1] { sha[$1] = $2; next }
      FILENAME == ARGV[2] { rdev[$1] = $2; next }
      FILENAME == ARGV[3] { xa[$1] = $2; next }
      FILENAME == ARGV[4] { mtime[$1] = $2; next }
      {
        p = $1
        target = ($2 == "l") ? $8 : "-"
        print rel(p), $2, $3, $4, $5, $6, $7, (p in rdev ? rdev[p] : "-"), mtime[p], target, \
              (p in sha ? sha[p] : "-"), (p in xa ? xa[p] : "-")
      }' "$tmp/sha" "$tmp/rdev" "$tmp/xattr" "$tmp/mtime" "$tmp/base" | sort
  )
  local rc=$?
  rm -rf "$tmp"
  return $rc
}
