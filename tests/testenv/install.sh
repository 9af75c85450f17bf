#!/usr/bin/env bash
# Installs what the Kubernetes test environment needs and builds a real
# kube-apiserver and kube-controller-manager (v1.20.2) from Debian's source
# package. Binaries are cached outside the repository, keyed by version, so a
# second run only re-checks the Debian packages. Never commits source or binaries.
#
#   tests/testenv/install.sh            # prints the directory holding the binaries
#
# Environment: VERSA_CACHE_DIR (default ~/.cache/versa).
set -euo pipefail

K8S_VERSION=1.20.2
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
cache_root="${VERSA_CACHE_DIR:-$HOME/.cache/versa}"
bin_dir="$cache_root/k8s-$K8S_VERSION/bin"
work_dir="$cache_root/k8s-$K8S_VERSION/build"

log() { echo "[testenv $(date +%H:%M:%S)] $*" >&2; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_packages=()
command -v etcd >/dev/null 2>&1 || need_packages+=(etcd-server)
command -v openssl >/dev/null 2>&1 || need_packages+=(openssl)
if [ ! -x "$bin_dir/kube-apiserver" ] || [ ! -x "$bin_dir/kube-controller-manager" ]; then
  [ -x /usr/lib/go-1.19/bin/go ] || need_packages+=(golang-1.19-go)
  command -v rsync >/dev/null 2>&1 || need_packages+=(rsync)
  [ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ] || need_packages+=(golang-github-modern-go-reflect2-dev)
fi
if [ "${#need_packages[@]}" -gt 0 ]; then
  log "installing Debian packages: ${need_packages[*]}"
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

if [ -x "$bin_dir/kube-apiserver" ] && [ -x "$bin_dir/kube-controller-manager" ]; then
  log "cached: $bin_dir"
  echo "$bin_dir"
  exit 0
fi

started=$(date +%s)
mkdir -p "$work_dir" "$bin_dir"
cd "$work_dir"
if [ ! -d "kubernetes-$K8S_VERSION" ]; then
  if ! ls kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
    # deb-src is off by default; enable it for Debian's own mirrors only.
    if [ ! -f /etc/apt/sources.list.d/debian-src.sources ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
      log "enabling deb-src"
      sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
        | sudo_if_needed tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
    fi
    sudo_if_needed apt-get update -qq
    log "fetching Debian source package kubernetes=$DEB_VERSION"
    apt-get source --download-only "kubernetes=$DEB_VERSION" >/dev/null
  fi
  log "unpacking"
  tar -xzf kubernetes_*.orig.tar.gz
fi
src="$work_dir/kubernetes-$K8S_VERSION"

# Required patch: the vendored reflect2 1.0.1 crashes under Go 1.19 on the
# first custom-resource read; Debian's 1.0.2 does not.
log "patching vendor/github.com/modern-go/reflect2 with Debian's 1.0.2"
vendored="$src/vendor/github.com/modern-go/reflect2"
rm -f "$vendored"/*.go "$vendored"/*.s
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$vendored"/
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$vendored"/ 2>/dev/null || true

log "building kube-apiserver and kube-controller-manager (about 13 minutes cold on 2 cores)"
cd "$src"
export GOPATH="$src/.go" PATH="/usr/lib/go-1.19/bin:$PATH" CGO_ENABLED=0
export GOCACHE="$cache_root/go-build"
mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work_dir/build.log" 2>&1 || {
  tail -40 "$work_dir/build.log" >&2
  exit 1
}
cp _output/local/bin/linux/amd64/kube-apiserver _output/local/bin/linux/amd64/kube-controller-manager "$bin_dir/"
log "built in $(( $(date +%s) - started ))s: $bin_dir"
echo "$bin_dir"
