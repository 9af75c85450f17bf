#!/usr/bin/env bash
# `make bench`: every benchmark behind the tables in BENCHMARKS.md, in one
# run, on this machine. Release build; loopback only; every run bounded in
# requests and time. The report goes to stdout and to target/bench/.
#
# VERSA_BENCH_PROFILE=profiling uses the quicker-to-build profile (no LTO)
# while iterating; BENCHMARKS.md figures come from the default (release).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${VERSA_BENCH_PROFILE:-release}"
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
cargo build --profile "$profile" -p versa-server -p versa-bench
bench="$target_dir/$profile/versa-bench"
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
