#!/usr/bin/env bash
# Install gpuprobe on a machine without a package index, from a folder of wheels made on a connected machine.
#
#   bash scripts/offline_install.sh build WHEELHOUSE [EXTRAS]
#       On a connected machine, in the gpuprobe folder: gpuprobe's own wheel (so nothing is built on the target)
#       and the wheels of its dependencies, with those of EXTRAS (e.g. "gpu", "report" or "report,vllm"), into
#       WHEELHOUSE. For a target with another Python or platform than this machine, set TARGET_PYTHON (e.g. 3.12)
#       and TARGET_PLATFORM (e.g. manylinux_2_28_x86_64); only binary wheels are then taken.
#
#   bash offline_install.sh install WHEELHOUSE VENV [EXTRAS]
#       On the machine without an index: makes the virtual environment VENV and installs gpuprobe[EXTRAS] into it
#       from WHEELHOUSE alone (pip's index and configuration are switched off). The environment also sees the
#       packages already installed for the Python that runs this script (system, user or its own virtual
#       environment), so a torch, CuPy or matplotlib installed there is used as it is and need not be in
#       WHEELHOUSE. Set ISOLATED=1 for an environment that sees nothing but what WHEELHOUSE brings.
#
# PYTHON chooses the interpreter (default: python3). Ends with 'gpuprobe --version' run from VENV.
set -euo pipefail

usage() {
  sed -n '2,17p' "$0" >&2
  exit 2
}

PY="${PYTHON:-python3}"
cmd="${1:-}"
[ $# -ge 2 ] || usage
wheelhouse="$2"

build() {
  local extras="${1:-}" root whl
  root="$(cd "$(dirname "$0")/.." && pwd)"
  [ -f "$root/pyproject.toml" ] || { echo "Error: run build from the gpuprobe folder's scripts/" >&2; exit 1; }
  mkdir -p "$wheelhouse"
  rm -f "$wheelhouse"/gpuprobe-*.whl
  "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$wheelhouse" "$root"
  whl="$(ls "$wheelhouse"/gpuprobe-*.whl)"
  local target=()
  [ -n "${TARGET_PYTHON:-}" ] && target+=(--python-version "$TARGET_PYTHON")
  [ -n "${TARGET_PLATFORM:-}" ] && target+=(--platform "$TARGET_PLATFORM")
  [ ${#target[@]} -gt 0 ] && target+=(--only-binary=:all:)
  "$PY" -m pip download --quiet --dest "$wheelhouse" ${target[@]+"${target[@]}"} "$whl${extras:+[$extras]}"
  echo "wheelhouse $wheelhouse: $(ls "$wheelhouse" | wc -l) files, $(du -sh "$wheelhouse" | cut -f1)"
  echo "copy it and scripts/offline_install.sh to the target, then: bash offline_install.sh install" \
       "$(basename "$wheelhouse") VENV${extras:+ $extras}"
}

install() {
  local venv="$1" extras="${2:-}" pip_in_venv=1
  [ -n "$venv" ] || usage
  ls "$wheelhouse"/gpuprobe-*.whl >/dev/null 2>&1 || {
    echo "Error: no gpuprobe wheel in $wheelhouse" >&2
    echo "  hint: make the folder with 'bash scripts/offline_install.sh build $wheelhouse' on a connected machine" >&2
    exit 1
  }
  # only the wheelhouse: no index, no find-links or index from pip's configuration or environment
  unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL
  export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
  if ! "$PY" -m venv "$venv" 2>/dev/null; then
    # no ensurepip (e.g. Debian without python3-venv): an environment without pip, filled by this Python's pip
    rm -rf "$venv"
    "$PY" -m venv --without-pip "$venv"
    pip_in_venv=0
  fi
  if [ "${ISOLATED:-0}" != 1 ]; then
    local site
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$PY" -c 'import site, sys
dirs = [*site.getsitepackages(), site.getusersitepackages()]
print("\n".join(d for d in dirs if d))' > "$site/gpuprobe-base-packages.pth"
  fi
  local pip=("$venv/bin/python" -m pip)
  [ "$pip_in_venv" = 1 ] || pip=("$PY" -m pip --python "$venv/bin/python")
  if [ "${ISOLATED:-0}" != 1 ] && [ -n "$(ls -d "$site"/setuptools-*.dist-info 2>/dev/null)" ]; then
    # venv's own setuptools (Python < 3.12) would hide a newer one installed for the base Python (torch needs it)
    "${pip[@]}" uninstall --quiet --yes setuptools
  fi
  # gpuprobe itself always from the wheelhouse (a copy installed where the environment looks is not reused) ...
  "${pip[@]}" install --quiet --no-index --find-links "$wheelhouse" --ignore-installed --no-deps gpuprobe
  # ... then what it and the extras need: already installed, else from the wheelhouse
  "${pip[@]}" install --quiet --no-index --find-links "$wheelhouse" "gpuprobe${extras:+[$extras]}"
  "$venv/bin/gpuprobe" --version
  echo "installed in $venv: run $venv/bin/gpuprobe (or '. $venv/bin/activate' first)"
}

case "$cmd" in
  build) build "${3:-}" ;;
  install) [ $# -ge 3 ] || usage; install "$3" "${4:-}" ;;
  *) usage ;;
esac
