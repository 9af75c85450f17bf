#!/usr/bin/env bash
# Prints the directory cargo writes a profile's binaries to:
#   scripts/bin-dir.sh [PROFILE]      (default dev)
# <target dir>/<profile dir>, or <target dir>/<triple>/<profile dir> when a
# target is set (the Makefile builds for the host triple with +crt-static, so
# the binaries are the static ones the images carry).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-dev}"
[ "$profile" = dev ] && profile=debug
target_dir="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
echo "$target_dir/${CARGO_BUILD_TARGET:+$CARGO_BUILD_TARGET/}$profile"
