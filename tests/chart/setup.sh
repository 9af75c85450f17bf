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
if ! python3 -m venv --help >/dev/null 2>&1; then
  echo "installing python3-venv" >&2
  apt-get install -y -qq python3-venv >/dev/null
fi
echo "setting up $venv (helm-python-sdk, kubernetes-validate)" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
touch "$stamp"
