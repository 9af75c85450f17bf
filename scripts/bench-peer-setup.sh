#!/usr/bin/env bash
# Creates (or reuses) the Python environment of versa-bench's peer server
# (`--scenario external --peer mlserver`): Seldon MLServer and ONNX Runtime
# from bench/mlserver/requirements.txt, in
# ${VERSA_CACHE_DIR:-~/.cache/versa}/bench-venv (outside the clone), keyed by
# the file's hash so a change reinstalls and a second run is instant.
# Prints the venv's path on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
requirements="$here/bench/mlserver/requirements.txt"
venv="${VERSA_BENCH_VENV:-${VERSA_CACHE_DIR:-$HOME/.cache/versa}/bench-venv}"
stamp="$venv/.requirements-$(sha256sum "$requirements" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setting up $venv (mlserver, onnxruntime)" >&2
  # Only a venv this script made (it has a stamp, maybe an old one) is
  # replaced; any other existing directory is left alone.
  if [ -e "$venv" ] && ! compgen -G "$venv/.requirements-*" >/dev/null; then
    echo "$venv exists and was not made by this script: choose another VERSA_BENCH_VENV" >&2
    exit 1
  fi
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 ships venv without ensurepip until python3-venv is installed.
    echo "installing python3-venv" >&2
    sudo_if_needed=()
    [ "$(id -u)" -eq 0 ] || sudo_if_needed=(sudo)
    "${sudo_if_needed[@]}" apt-get update -qq >&2
    "${sudo_if_needed[@]}" apt-get install -y -qq python3-venv >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements" >&2
  "$venv/bin/python" -c 'import mlserver, onnxruntime' >&2
  touch "$stamp"
fi
echo "$venv"
