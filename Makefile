# Versa — common tasks. `make help` lists them.
SHELL := /usr/bin/env bash
CARGO ?= cargo

.PHONY: help build test lint fmt check-deps ci

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

build: ## Build every crate
	$(CARGO) build --workspace --all-targets

test: check-deps ## Run every test (unit, scenario, wire contract, end-to-end)
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --profile ci
	$(CARGO) test --workspace --doc

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

check-deps: ## versa-core must not depend on RPC/HTTP/ML/Kubernetes crates
	./scripts/check-core-deps.sh

ci: lint test ## What .ci/run runs
