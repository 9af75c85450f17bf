#!/usr/bin/env bash
# `make images` / `make push`: the container images, built with no daemon.
#
#   scripts/images.sh build [--profile release|dev] [--no-build]
#   scripts/images.sh push  REGISTRY            (e.g. ghcr.io/acme)
#
# build: static binaries (the gnu target with +crt-static), then each
# images/<name>/Containerfile built by buildah with its `build` stage replaced
# by those binaries — every line of the image stage is the file's own. Writes,
# under <cargo target dir>/images/:
#   store/                        an OCI image layout holding every image by
#                                 its full reference (what the process kubelet
#                                 runs Pods from)
#   <name>-<version>.oci.tar      OCI archive    (skopeo copy oci-archive:…)
#   <name>-<version>.docker.tar   docker archive (docker load -i …)
#   digests.txt                   reference, digest and size of each image
# Tags follow the chart's appVersion. Image timestamps are the last commit's,
# so an unchanged binary gives an unchanged digest.
#
# push: copies each image of the store to REGISTRY/<name>:<version> with
# skopeo (credentials: `skopeo login REGISTRY` first, or REGISTRY_AUTH_FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGES=(versa-server versa-operator)
PREFIX="${IMAGE_PREFIX:-ghcr.io/versa-dev}"

ms() { echo $(( $(date +%s%N) / 1000000 )); }
started=$(ms)
seconds_since() { local d=$(( $(ms) - $1 )); printf '%d.%d' $(( d / 1000 )) $(( d % 1000 / 100 )); }
say() { echo "[images $(seconds_since "$started")s] $*" >&2; }

need() {
  local missing=()
  for tool in "$@"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (Debian packages)"
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
    }
  fi
}

version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/versa-operator/Chart.yaml)
[ -n "$version" ] || { echo "no appVersion in charts/versa-operator/Chart.yaml" >&2; exit 1; }
target_dir="${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}"
out="$target_dir/images"

build() {
  local profile=release build_binaries=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --no-build) build_binaries=0; shift ;;
      --profile) profile="$2"; shift 2 ;;
      --profile=*) profile="${1#--profile=}"; shift ;;
      *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
  done
  need buildah skopeo
  local triple profile_dir
  triple=$(rustc -vV | sed -n 's/^host: //p')
  profile_dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
  local triple_var
  triple_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"

  # --no-build: the caller built them (`make test-images` builds the
  # workspace's every target, as the tests do: building fewer packages here
  # would unify other features and relink different binaries).
  if [ "$build_binaries" = 1 ]; then
    say "static binaries: cargo build --profile $profile --target $triple (+crt-static)"
    env "$triple_var=-C target-feature=+crt-static" \
      cargo build -q --profile "$profile" --target "$triple" "${IMAGES[@]/#/--package=}"
  fi

  local revision epoch
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then revision="$revision-dirty"; fi
  epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)

  local buildah=(buildah --storage-driver vfs --root "$out/buildah/root" --runroot "$out/buildah/run")
  rm -rf "$out/store" "$out/context"
  mkdir -p "$out/store" "$out/context"
  : > "$out/digests.txt.new"
  for name in "${IMAGES[@]}"; do
    local binary="$target_dir/$triple/$profile_dir/$name"
    [ -x "$binary" ] || { echo "$binary not built (cargo build --target $triple)" >&2; exit 1; }
    # Not `grep -q`: an early exit would fail readelf with SIGPIPE under pipefail.
    if readelf -l "$binary" | grep 'INTERP' >/dev/null; then
      echo "$binary is dynamically linked: the image has no libc for it" >&2
      exit 1
    fi
    local context="$out/context/$name" ref="$PREFIX/$name:$version"
    mkdir -p "$context"
    strip -o "$context/$name" "$binary"
    # The Containerfile with its `build` stage swapped for the host's binary.
    awk -v name="$name" '
      /^FROM .* AS build$/ { print "FROM scratch AS build"; print "COPY " name " /out/" name; skipping = 1; next }
      skipping && /^FROM / { skipping = 0 }
      !skipping { print }
    ' "images/$name/Containerfile" > "$context/Containerfile"
    grep -q "^COPY $name /out/$name\$" "$context/Containerfile" || {
      echo "images/$name/Containerfile has no 'FROM … AS build' stage to replace" >&2; exit 1; }
    local t0
    t0=$(ms)
    "${buildah[@]}" build -q --format oci --layers=false --timestamp "$epoch" \
      --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
      -f "$context/Containerfile" -t "$ref" "$context" >/dev/null
    "${buildah[@]}" push -q --digestfile "$context/digest" "$ref" "oci:$out/store:$ref"
    "${buildah[@]}" push -q "$ref" "oci-archive:$out/$name-$version.oci.tar:$ref"
    rm -f "$out/$name-$version.docker.tar"
    "${buildah[@]}" push -q "$ref" "docker-archive:$out/$name-$version.docker.tar:$ref"
    "${buildah[@]}" rmi -f "$ref" >/dev/null
    local digest size
    digest=$(cat "$context/digest")
    size=$(stat -c %s "$out/$name-$version.oci.tar")
    printf '%s\t%s\t%s bytes (OCI archive; binary %s bytes)\n' "$ref" "$digest" "$size" \
      "$(stat -c %s "$context/$name")" >> "$out/digests.txt.new"
    say "$ref $digest ($(( size / 1024 / 1024 )) MiB, $(seconds_since "$t0") s)"
  done
  mv "$out/digests.txt.new" "$out/digests.txt"
  cat "$out/digests.txt"
}

push() {
  local registry="${1:-}"
  [ -n "$registry" ] || { echo "usage: scripts/images.sh push REGISTRY (make push REGISTRY=ghcr.io/acme)" >&2; exit 2; }
  need skopeo
  [ -f "$out/store/index.json" ] || { echo "no images in $out/store: run make images first" >&2; exit 1; }
  for name in "${IMAGES[@]}"; do
    say "pushing $PREFIX/$name:$version to $registry/$name:$version"
    skopeo copy --quiet "oci:$out/store:$PREFIX/$name:$version" "docker://$registry/$name:$version"
  done
}

command="${1:-build}"
shift || true
case "$command" in
  build) build "$@" ;;
  push) push "$@" ;;
  *) echo "usage: scripts/images.sh build [--profile release|dev] | push REGISTRY" >&2; exit 2 ;;
esac
