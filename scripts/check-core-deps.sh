#!/usr/bin/env bash
# versa-core must stay free of RPC, HTTP, ML-runtime and Kubernetes crates.
set -euo pipefail
forbidden='^(tonic|tonic-[a-z-]+|tract-[a-z-]+|kube|kube-[a-z-]+|k8s-openapi|hyper|hyper-util|axum|h2|prost|reqwest)$'
found=$(cargo tree -p versa-core --edges normal,build --prefix none --format '{p}' \
  | awk '{print $1}' | sort -u | grep -E "$forbidden" || true)
if [ -n "$found" ]; then
  echo "versa-core depends on forbidden crates:" >&2
  echo "$found" >&2
  exit 1
fi
echo "versa-core dependency tree: no RPC/HTTP/ML/Kubernetes crates"
