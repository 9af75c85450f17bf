#!/usr/bin/env bash
# `make bench`: every benchmark behind the tables in BENCHMARKS.md, in one
# run, on this machine. Release build; loopback only; every run bounded in
# requests and time. The report goes to stdout and to target/bench/.
#
# VERSA_BENCH_PROFILE=profiling uses the quicker-to-build profile (no LTO)
# while iterating; BENCHMARKS.md figures come from the default (release).
#
# The `external` runs drive the server with h2load (gRPC) and wrk (REST),
# installed here from Debian when missing, and compare with Seldon MLServer +
# ONNX Runtime in a venv that scripts/bench-peer-setup.sh sets up (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v wrk >/dev/null || missing+=(wrk)
if [ "${#missing[@]}" -gt 0 ]; then
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    echo "installing ${missing[*]}" >&2
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
peer_venv="$(scripts/bench-peer-setup.sh)"

profile="${VERSA_BENCH_PROFILE:-release}"
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build --profile "$profile" -p versa-server -p versa-bench
bench="$(scripts/bin-dir.sh "$profile")/versa-bench"
mkdir -p "$target_dir/bench"
report="$target_dir/bench/report-$(date -u +%Y%m%dT%H%M%SZ).md"

run() {
    echo
    echo "### versa-bench $*"
    echo
    "$bench" "$@"
}

{
    echo "# versa-bench report, $(date -u +%Y-%m-%d) ($profile build, $(nproc) cores)"
    echo
    echo "## MLP 784→512→256→10"
    run --model mlp --concurrency 1 --requests 5000
    run --model mlp --concurrency 16 --requests 20000
    run --model mlp --concurrency 16 --requests 20000 --batching 8
    run --model mlp --concurrency 16 --requests 20000 --batching 32
    run --scenario codec --model mlp --requests 5000 --duration 5
    run --scenario mirror --model mlp --concurrency 1 --requests 10000
    run --scenario mirror --model mlp --concurrency 4 --requests 10000
    echo
    echo "## Small CNN 1×28×28"
    run --model small_cnn --concurrency 1 --requests 3000
    run --model small_cnn --concurrency 16 --requests 10000
    run --model small_cnn --concurrency 16 --requests 10000 --batching 8
    run --model small_cnn --concurrency 16 --requests 10000 --batching 8 --server-flag=--batching_min_speedup=0
    echo
    echo "## MobileNetV2-sized CNN 3×224×224"
    run --model mobilenet --concurrency 1 --requests 200 --duration 15
    run --model mobilenet --concurrency 4 --requests 300 --duration 15
    run --model mobilenet --concurrency 4 --requests 300 --duration 15 --batching 4
    run --model mobilenet --concurrency 4 --requests 300 --duration 15 --batching 4 --server-flag=--batching_min_speedup=0
    run --scenario codec --model mobilenet --requests 100 --duration 10
    echo
    echo "## Standard load generators (h2load, wrk) and a Python peer (MLServer + ONNX Runtime)"
    echo
    echo "h2load: 1 thread, one stream per connection; wrk: 1 thread for 1 connection, 2 for more."
    echo "MLServer: parallel_workers 0 (the model runs in the server process) unless --peer-workers says otherwise; ONNX Runtime 1 intra-op thread."
    run --scenario external --model mlp --concurrency 1 --requests 20000 --duration 10
    run --scenario external --model mlp --concurrency 16 --requests 20000 --duration 10
    run --scenario external --model mlp --concurrency 1 --requests 20000 --duration 10 --batching 32
    run --scenario external --model mlp --concurrency 16 --requests 20000 --duration 10 --batching 32
    run --scenario external --model mobilenet --concurrency 1 --requests 300 --duration 15
    run --scenario external --model mobilenet --concurrency 4 --requests 300 --duration 15
    peer=(--peer mlserver --peer-venv "$peer_venv")
    run --scenario external --model mlp --concurrency 1 --requests 20000 --duration 10 "${peer[@]}"
    run --scenario external --model mlp --concurrency 16 --requests 20000 --duration 10 "${peer[@]}"
    run --scenario external --model mlp --concurrency 16 --requests 20000 --duration 10 "${peer[@]}" --peer-workers 2
    run --scenario external --model mobilenet --concurrency 1 --requests 300 --duration 15 "${peer[@]}"
    run --scenario external --model mobilenet --concurrency 4 --requests 300 --duration 15 "${peer[@]}"
    run --scenario external --model mobilenet --concurrency 4 --requests 300 --duration 15 "${peer[@]}" --peer-workers 2
    echo
    echo "## Version swaps"
    run --scenario swap --model mlp --concurrency 16 --steady 5 --duration 60
    run --scenario swap --model mobilenet --concurrency 4 --steady 8 --duration 60
    run --scenario memory --model mobilenet --duration 120
    echo
    echo "## Hostile input, batch-size cycling, soak"
    run --scenario hostile
    run --scenario cycling --model mlp --concurrency 4 --requests 30000 --duration 15 --sizes 64
    run --scenario soak --duration 180 --concurrency 8
} | tee "$report"
echo
echo "report written to $report"
