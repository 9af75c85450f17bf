#!/usr/bin/env bash
# `make demo`: everything from a fresh clone — the Kubernetes test binaries,
# the chart's Python environment, Versa — then a local cluster with the chart
# installed and the GitOps example walked through (canary → 50% → promote →
# rollback). The cluster stays up until Ctrl-C; pass --exit-when-done to stop
# after the walk-through.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> Kubernetes control-plane binaries (first run on a machine builds kube-apiserver from Debian's source: ~13 min)"
./tests/testenv/install.sh
echo "==> Python environment for rendering the Helm chart (helm-python-sdk)"
./tests/chart/setup.sh
echo "==> building versa-server, versa-operator and the demo driver (a first build takes several minutes)"
cargo build -p versa-server -p versa-operator -p versa-testenv --bins

target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
venv="${VERSA_VENV:-$HOME/.cache/versa/venv}"
work="$(mktemp -d -t versa-demo-XXXXXX)"
echo "==> rendering charts/versa-operator"
"$venv/bin/python" tests/chart/chart.py render --skip-crds \
  --set-json '{"rollout": {"progressRequeueMs": 250}, "specPolicy": {"allowedVolumeSources": ["hostPath", "persistentVolumeClaim", "emptyDir"]}}' "$work/chart.yaml"
exec "$target_dir/debug/versa-demo" \
  --chart="$work/chart.yaml" \
  --crd=charts/versa-operator/crds/modeldeployments.serving.versa.dev.yaml \
  --steps=examples/gitops/steps "$@"
