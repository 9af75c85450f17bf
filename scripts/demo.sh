#!/usr/bin/env bash
# `make demo`: everything from a fresh clone — the Kubernetes test binaries,
# the chart tools (the Helm CLI), Versa and its images — then a local cluster
# with the chart installed by `helm install` (and checked by `helm test`) and
# the GitOps example walked through (canary → 50% → promote → rollback). The
# cluster stays up until Ctrl-C; pass --exit-when-done to stop after the
# walk-through.
set -euo pipefail
cd "$(dirname "$0")/.."

# As the Makefile builds (also when this script is run by hand): for the host
# triple with a static C library, so the binaries are the ones the images carry
# and `cargo build` and `scripts/images.sh` share one build.
CARGO_BUILD_TARGET="${CARGO_BUILD_TARGET:-$(rustc -vV | sed -n 's/^host: //p')}"
export CARGO_BUILD_TARGET
rustflags_var="CARGO_TARGET_$(echo "$CARGO_BUILD_TARGET" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
export "$rustflags_var=${!rustflags_var:--C target-feature=+crt-static}"
export VERSA_VENV="${VERSA_VENV:-$HOME/.cache/versa/venv}"

echo "==> Kubernetes control-plane binaries (first run on a machine builds kube-apiserver from Debian's source: ~13 min)"
./tests/testenv/install.sh
echo "==> chart tools: Python environment and the Helm CLI ($VERSA_VENV)"
./tests/chart/setup.sh
echo "==> building Versa and the demo driver (a first build takes several minutes)"
cargo build --workspace --bins
echo "==> Versa's images (the process kubelet runs every Pod from them)"
scripts/images.sh build --profile dev --no-build
bin_dir="$(scripts/bin-dir.sh dev)"
exec "$bin_dir/versa-demo" --chart=charts/versa-operator --steps=examples/gitops/steps "$@"
