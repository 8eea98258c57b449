# unshim_python DIR: when python3 on PATH is a version manager's shim (pyenv's is a bash script:
# measured 0.5-0.6 s per call against 0.05 s for the interpreter), link the interpreter it stands
# for into DIR and put DIR first on PATH; the oracle tests call python3 hundreds of times.
# Returns 1 (PATH unchanged) when python3 is not a shim or no interpreter is found.
# Sourced by scripts/test.sh (the whole run) and tests/oracle/lib.sh (a test run on its own).
unshim_python() {
  local dir=$1 py real
  py=$(command -v python3 2>/dev/null) || return 1
  [[ $py == */shims/python3 ]] || return 1
  real=$(pyenv which python3 2>/dev/null || true)
  [[ -x ${real:-} ]] || real=/usr/bin/python3
  [[ -x $real ]] || return 1
  mkdir -p "$dir"
  ln -sf "$real" "$dir/python3"
  export PATH="$dir:$PATH"
}
