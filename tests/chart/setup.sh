#!/usr/bin/env bash
# Creates (or reuses) the Python environment the chart tests and the demo
# use: ~/.cache/versa/venv with tests/chart/requirements.txt, keyed by the
# file's hash so a change reinstalls and a second run is instant.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VERSA_VENV:-$HOME/.cache/versa/venv}"
stamp="$venv/.requirements-$(sha256sum "$here/requirements.txt" | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "setting up $venv (helm-python-sdk, kubernetes-validate, lupa)" >&2
rm -rf "$venv"
if ! python3 -m venv "$venv" 2>/dev/null; then
  # Debian's python3 ships venv without ensurepip until python3-venv is installed.
  echo "installing python3-venv" >&2
  apt-get install -y -qq python3-venv >/dev/null
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
touch "$stamp"
