#!/usr/bin/env bash
# The man pages (packaging/man/*.8.md, built into build/man/ by go-md2man) against the tools:
#   - every page renders with `man -l` without a groff warning, with its NAME and OPTIONS;
#   - each page lists exactly the options its tool's --help lists (for ubtrfs-inspect also every
#     subcommand's --help and the subcommand names; for the daemon also the mount options of its
#     "ubtrfs options:" list), so a new option without a page entry, or a page entry for an
#     option that is gone, fails here;
#   - every installed tool has a page, and every tool answers --version with the project version.
# Page convention: an option is a definition-list term (a line followed by one starting with ':')
# starting with **-x** or **--name**; a mount option a term in MOUNT OPTIONS starting with
# **name**; a subcommand a term in SUBCOMMANDS.
#
# Rule named here: man_page_options_match_help.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

man_dir=$UBTRFS_BIN/../man
command -v python3 >/dev/null || skip_or_fail "python3 not installed"
command -v man >/dev/null || skip_or_fail "man (man-db) not installed"
[[ -f $man_dir/ubtrfs.8 ]] || skip_or_fail "man pages not built in $man_dir (go-md2man missing at configure time)"

declare -A tool_of=(
  [ubtrfs]=$UBTRFS_BIN/daemon/ubtrfs
  [mkfs.ubtrfs]=$UBTRFS_BIN/mkfs/mkfs.ubtrfs
  [fsck.ubtrfs]=$UBTRFS_BIN/fsck/fsck.ubtrfs
  [ubtrfs-inspect]=$UBTRFS_BIN/inspect/ubtrfs-inspect
  [ubtrfs-stress]=$UBTRFS_BIN/stress/ubtrfs-stress
  [ubtrfs-ctl]=$UBTRFS_BIN/ctl/ubtrfs-ctl
)
version=$(sed -nE 's/^project\(ubtrfs VERSION ([0-9.]+).*/\1/p' "$UBTRFS_SRC/CMakeLists.txt")

for page in "$UBTRFS_SRC"/packaging/man/*.8.md; do
  name=$(basename "$page" .8.md)
  [[ -n ${tool_of[$name]:-} ]] || failed "$name.8.md: no tool of that name is checked here"
done

for name in "${!tool_of[@]}"; do
  tool=${tool_of[$name]}
  src=$UBTRFS_SRC/packaging/man/$name.8.md
  roff=$man_dir/$name.8
  [[ -x $tool ]] || { failed "$name: $tool not built"; continue; }
  [[ -f $src && -f $roff ]] || { failed "$name: no man page ($src, $roff)"; continue; }

  # 1. man -l renders it, without groff warnings.
  rc=0
  text=$(MANWIDTH=100 man --warnings -l "$roff" 2>"$UBTRFS_TEST_ROOT/man.err") || rc=$?
  if ((rc != 0)) || [[ -s $UBTRFS_TEST_ROOT/man.err ]]; then
    failed "$name: man -l exit $rc: $(head -c 500 "$UBTRFS_TEST_ROOT/man.err")"
  elif ! grep -q '^NAME' <<<"$text" || ! grep -q '^OPTIONS' <<<"$text" || ! grep -qE "^ +$name - " <<<"$text"; then
    failed "$name: man -l output lacks NAME/OPTIONS: $(head -c 300 <<<"$text")"
  elif ! grep -q "ubtrfs $version" <<<"$text"; then
    failed "$name: man page footer lacks 'ubtrfs $version'"
  else
    pass "$name: man -l renders $(wc -l <<<"$text") lines"
  fi

  # 2. --version.
  out=$("$tool" --version 2>&1) || true
  if [[ $out == "$name $version"* ]]; then pass "$name --version: $out"; else failed "$name --version: '$out'"; fi

  # 3. The option lists.
  if diff_out=$(python3 - "$tool" "$src" "$name" <<'PY'
import re, subprocess, sys
tool, src, name = sys.argv[1:4]

def help_text(*args):
    return subprocess.run([tool, *args, "--help"], capture_output=True, text=True).stdout

def help_options(text):
    # Option lines of CLI11 and of the daemon's usage: "  -a,-p,--preen  ...", "  -o OPTIONS  ...".
    opts = set()
    for line in text.splitlines():
        m = re.match(r"^ +((?:--?[A-Za-z0-9][\w-]*[, ]*)+)", line)
        if m:
            opts.update(t for t in re.split(r"[, ]+", m.group(1)) if t.startswith("-"))
    return opts

def section(text, title):
    m = re.search(r"^# " + title + r"\n(.*?)(?=^# |\Z)", text, re.S | re.M)
    return m.group(1) if m else ""

def terms(text):
    # Definition-list terms: a line followed by one starting with ':'.
    lines = text.splitlines()
    return [l for l, nxt in zip(lines, lines[1:]) if nxt.startswith(":")]

page = open(src).read()
page_opts = set()
for line in terms(page):
    if line.startswith("**-"):
        page_opts.update(re.findall(r"\*\*(--?[A-Za-z0-9][\w-]*)\*\*", line))

main_help = help_text()
want = help_options(main_help)
problems = []
if name == "ubtrfs-inspect":
    subs = re.search(r"^Subcommands:\n((?:  .*\n?)+)", main_help, re.M)
    sub_names = set(re.findall(r"^  ([a-z][\w-]*)", subs.group(1), re.M)) if subs else set()
    page_subs = {m.group(1) for t in terms(section(page, "SUBCOMMANDS")) if (m := re.match(r"\*\*([a-z][\w-]*)\*\*", t))}
    if sub_names != page_subs:
        problems.append(f"subcommands: --help {sorted(sub_names)} page {sorted(page_subs)}")
    for s in sub_names:
        want |= help_options(help_text(s))
if name == "ubtrfs-ctl":
    # Two levels of subcommands (scrub start, filesystem df, ...): their options are on the page too.
    for sub in (("scrub", "start"), ("scrub", "status"), ("scrub", "cancel"), ("scrub", "limit"), ("filesystem", "df"),
                ("filesystem", "usage"), ("filesystem", "label"), ("subvolume", "create"), ("subvolume", "delete"), ("subvolume", "snapshot"),
                ("subvolume", "list"), ("subvolume", "show"), ("subvolume", "get-default"), ("subvolume", "set-default"),
                ("property", "get"), ("property", "set")):
        want |= help_options(help_text(*sub))
if name == "ubtrfs":
    block = re.search(r"^ubtrfs options:\n(.*?)^FUSE options:", main_help, re.S | re.M)
    mount_help = set(re.findall(r"^  ([a-z_]+)", block.group(1), re.M)) if block else set()
    mount_page = {m.group(1) for t in terms(section(page, "MOUNT OPTIONS")) if (m := re.match(r"\*\*([a-z_]+)", t))}
    if not mount_help or mount_help != mount_page:
        problems.append(f"mount options only in --help: {sorted(mount_help - mount_page)}, "
                        f"only in the page: {sorted(mount_page - mount_help)}")
if not want:
    problems.append("no options found in --help")
if want != page_opts:
    problems.append(f"options only in --help: {sorted(want - page_opts)}, only in the page: {sorted(page_opts - want)}")
print("; ".join(problems) if problems else f"{len(want)} options")
sys.exit(1 if problems else 0)
PY
  ); then
    pass "$name: page options match --help ($diff_out)"
  else
    failed "$name: $diff_out"
  fi
done
finish
