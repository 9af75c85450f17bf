#!/usr/bin/env bash
# `make demo`: build versa-server, generate the example ONNX models, and serve
# them on 127.0.0.1:8500 (gRPC) and 127.0.0.1:8501 (REST) until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

demo_dir="${VERSA_DEMO_DIR:-${TMPDIR:-/tmp}/versa-demo}"
grpc_port="${VERSA_GRPC_PORT:-8500}"
rest_port="${VERSA_REST_PORT:-8501}"
bin_dir="$(scripts/bin-dir.sh release)"

echo "==> building versa-server and the model generator (the first build takes several minutes)"
cargo build --release -p versa-server -p versa-testmodels --bins

echo "==> writing example models under $demo_dir/models"
rm -rf "$demo_dir"
mkdir -p "$demo_dir"
"$bin_dir/gen-test-models" "$demo_dir/models"

config="$demo_dir/models.config"
cat > "$config" <<CONFIG
model_config_list {
  config {
    name: "versioned"
    base_path: "$demo_dir/models/versioned"
    model_platform: "onnx"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "pair"
    base_path: "$demo_dir/models/pair"
    model_platform: "onnx"
  }
  config {
    name: "mlp"
    base_path: "$demo_dir/models/mlp"
    model_platform: "onnx"
  }
}
CONFIG
echo "==> config: $config"
cat "$config"
cat <<HELP

==> serving. In another terminal try:
  curl -s localhost:$rest_port/v1/models/versioned
  curl -s -X POST localhost:$rest_port/v1/models/versioned:predict -d '{"instances": [[0, 0, 0, 0]]}'
  curl -s -X POST localhost:$rest_port/v1/models/versioned/labels/stable:predict -d '{"instances": [[0, 0, 0, 0]]}'
  curl -s -X POST localhost:$rest_port/v1/models/pair:predict -d '{"inputs": {"a": [[1, 2, 3]], "b": [[4, 5, 6]]}}'
  curl -s localhost:$rest_port/v1/models/pair/metadata
  curl -s localhost:$rest_port/metrics | grep tensorflow
  # add a version while it serves:
  cp -r $demo_dir/models/versioned/3 $demo_dir/models/versioned/4 && sleep 2 && curl -s localhost:$rest_port/v1/models/versioned

HELP
exec "$bin_dir/versa-server" \
  --port="$grpc_port" --rest_api_port="$rest_port" --bind_address=127.0.0.1 \
  --model_config_file="$config" --file_system_poll_wait_seconds=1
