#!/usr/bin/env bash
# `cmake --install` of this build into an empty DESTDIR (a clean, container-like tree) installs
# exactly the expected files (cmake/packaging.cmake): the daemon and the mkfs/fsck helpers in
# sbin, ubtrfs-inspect, ubtrfs-stress and ubtrfs-ctl in bin, a man page and a bash completion for each, the
# README and LICENSE — nothing else (no test tool, no library, no header). The installed binaries
# run from there (--version), the completion file is valid bash, and --prefix moves everything.
#
# Rule named here: install_tree_is_the_expected_file_set.
# shellcheck source=lib.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

build=$(cd "$UBTRFS_BIN/.." && pwd)
command -v cmake >/dev/null || skip_or_fail "cmake not installed"
[[ -f $build/cmake_install.cmake ]] || skip_or_fail "no configured build at $build"
[[ -f $build/man/ubtrfs.8 ]] || skip_or_fail "man pages not built (go-md2man missing at configure time)"

tools_sbin=(ubtrfs mkfs.ubtrfs fsck.ubtrfs)
tools_bin=(ubtrfs-inspect ubtrfs-stress ubtrfs-ctl)
for prefix in /usr/local /opt/ubtrfs; do
  dest=$(make_tmpdir)
  if ! out=$(DESTDIR=$dest cmake --install "$build" --prefix "$prefix" 2>&1); then
    failed "cmake --install --prefix $prefix: $out"
    continue
  fi
  expected=()
  for t in "${tools_sbin[@]}"; do expected+=("$prefix/sbin/$t"); done
  for t in "${tools_bin[@]}"; do expected+=("$prefix/bin/$t"); done
  for t in "${tools_sbin[@]}" "${tools_bin[@]}"; do
    expected+=("$prefix/share/man/man8/$t.8" "$prefix/share/bash-completion/completions/$t")
  done
  expected+=("$prefix/share/doc/ubtrfs/README.md" "$prefix/share/doc/ubtrfs/LICENSE")
  if diff <(printf '%s\n' "${expected[@]}" | sort) <(cd "$dest" && find . -type f -o -type l | sed 's|^\.||' | sort) >&2; then
    pass "--prefix $prefix: the ${#expected[@]} expected files, nothing else"
  else
    failed "--prefix $prefix: installed files differ from the expected set (< expected, > installed)"
  fi
  bad=0
  for t in "${tools_sbin[@]}"; do
    v=$("$dest$prefix/sbin/$t" --version 2>&1) || bad=1
    [[ $v == "$t "* ]] || bad=1
  done
  for t in "${tools_bin[@]}"; do
    v=$("$dest$prefix/bin/$t" --version 2>&1) || bad=1
    [[ $v == "$t "* ]] || bad=1
  done
  if ((bad)); then failed "--prefix $prefix: an installed tool does not answer --version"; else pass "--prefix $prefix: installed tools run"; fi
  if [[ $(stat -c %a "$dest$prefix/sbin/ubtrfs") == 755 ]] && bash -n "$dest$prefix/share/bash-completion/completions/ubtrfs" &&
    bash -c "source '$dest$prefix/share/bash-completion/completions/ubtrfs' && complete -p mkfs.ubtrfs ubtrfs >/dev/null"; then
    pass "--prefix $prefix: modes and the bash completion"
  else
    failed "--prefix $prefix: binary mode or bash completion"
  fi
done
finish
