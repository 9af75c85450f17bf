# Versa — common tasks. `make help` lists them.
SHELL := /usr/bin/env bash
CARGO ?= cargo
VENV ?= $(HOME)/.cache/versa/venv
export VERSA_VENV := $(VENV)

# Every build is for the host triple with a statically linked C library, so
# the binaries the tests run are the ones the images carry (one build, not
# two). --target keeps build scripts and proc macros dynamic, as they must be.
HOST_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
export CARGO_BUILD_TARGET ?= $(HOST_TRIPLE)
STATIC_RUSTFLAGS_VAR := CARGO_TARGET_$(shell echo '$(CARGO_BUILD_TARGET)' | tr 'a-z-' 'A-Z_')_RUSTFLAGS
$(STATIC_RUSTFLAGS_VAR) ?= -C target-feature=+crt-static
export $(STATIC_RUSTFLAGS_VAR)
# `make images` builds release binaries; the tests and the demo build images
# from the debug binaries they already have.
IMAGE_PROFILE ?= release

.PHONY: help build test lint fmt check-deps ci demo demo-server models bench testenv pyenv chart-test dev-cluster generate check-generated images test-images push

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

build: ## Build every crate
	$(CARGO) build --workspace --all-targets

testenv: ## Install etcd and build kube-apiserver/-controller-manager from Debian's source (cached in ~/.cache/versa)
	./tests/testenv/install.sh

dev-cluster: testenv ## Start a local control plane + process kubelet and print its kubeconfig
	$(CARGO) build -p versa-server -p versa-testenv --bins
	$(CARGO) run -q -p versa-testenv --bin versa-dev-cluster

pyenv: ## Python environment for the chart (Helm as a library, kubernetes-validate), cached in ~/.cache/versa/venv
	./tests/chart/setup.sh

chart-test: pyenv ## Lint, render and validate the Helm chart offline
	$(VENV)/bin/python tests/chart/chart.py test

images: ## Container images (OCI and docker archives, and the local image store) under <target>/images, no daemon needed
	scripts/images.sh build --profile $(IMAGE_PROFILE)

push: ## Push the images built by `make images`: make push REGISTRY=ghcr.io/acme
	scripts/images.sh push "$(REGISTRY)"

test-images: ## The images from the debug binaries the tests build (what the process kubelet runs)
	$(CARGO) build --workspace --all-targets
	scripts/images.sh build --profile dev --no-build

test: testenv check-deps chart-test test-images ## Run every test (unit, scenario, wire contract, end-to-end, chart, Kubernetes)
	$(CARGO) nextest run --workspace --profile ci
	$(CARGO) test --workspace --doc

generate: ## Write generated artefacts (crds/, and the chart's copy)
	$(CARGO) run -q -p versa-crd --bin crdgen > crds/modeldeployments.serving.versa.dev.yaml.new
	mv crds/modeldeployments.serving.versa.dev.yaml.new crds/modeldeployments.serving.versa.dev.yaml
	cp crds/modeldeployments.serving.versa.dev.yaml charts/versa-operator/crds/

check-generated: generate ## Fail when crds/ or the chart's CRD is stale
	git diff --exit-code crds/ charts/versa-operator/crds/

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

check-deps: ## versa-core must not depend on RPC/HTTP/ML/Kubernetes crates
	./scripts/check-core-deps.sh

demo: ## Local cluster + Helm chart + example ModelDeployment; walks canary → promote → rollback, stays up
	./scripts/demo.sh

demo-server: ## Just versa-server, serving the example models on :8500 (gRPC) / :8501 (REST)
	./scripts/demo-server.sh

models: ## Write the generated example ONNX models to target/models
	$(CARGO) run -q -p versa-testmodels --bin gen-test-models -- target/models

bench: ## Every benchmark behind BENCHMARKS.md: throughput, batching, swaps, memory (not part of the tests)
	scripts/bench.sh

ci: lint check-generated test ## What .ci/run runs
