# Tollplane developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Go (for the pinned control plane build) lives in /usr/local/go on these machines.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH):/usr/local/go/bin

.PHONY: help venv system-deps toolchain cluster cluster-down lint typecheck layers crds test test-fast demo bench bench-gate bench-operator clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## Create .venv with Tollplane and its dev tools

system-deps: ## Install Debian packages the tests need (redis-server)
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

toolchain: venv ## Build (or reuse) kube-apiserver, kube-controller-manager, etcd, kubectl, helm from pinned Go modules
	$(PY) tests/support/controlplane.py build

cluster: toolchain ## Start etcd, kube-apiserver, kube-controller-manager on loopback; writes .cluster/kubeconfig
	$(PY) tests/support/controlplane.py up

cluster-down: venv ## Stop the local control plane
	$(PY) tests/support/controlplane.py down

lint: venv ## ruff
	ruff check operator/tollplane tests
	ruff format --check operator/tollplane tests

typecheck: venv ## mypy --strict
	mypy

layers: venv ## import-linter: api <- compile <- controller, api <- gate
	lint-imports

crds: venv ## Regenerate crds/ from the pydantic models
	tollplane crds --output-dir crds

test: venv system-deps toolchain lint typecheck layers ## Everything CI runs: lint, types, layers, unit + control-plane tests
	pytest -m 'not benchmark'

test-fast: venv ## Unit tests only (no control plane)
	pytest -m 'not benchmark and not cluster and not redis' tests/unit

demo: venv ## Run Tollplane locally on examples/ (no cluster needed)
	tollplane dev examples/

bench: bench-gate bench-operator ## All benchmarks (not part of `make test`)

bench-gate: venv system-deps ## Gate throughput/latency vs direct and nginx (wrk); writes .bench/gate.md
	@{ command -v wrk && { command -v nginx || test -x /usr/sbin/nginx; }; } >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null; }
	@test -x $(VENV)/bin/granian || $(PY) -m pip install --quiet -e '.[dev,bench]'
	pytest -m benchmark tests/benchmarks/test_gate_bench.py -s

bench-operator: venv system-deps toolchain ## Compile/publish time and memory at 1,000 Apis x 10,000 tenants
	pytest -m benchmark tests/benchmarks/test_operator_bench.py -s

clean: ## Remove the venv and caches (the built toolchain stays in ~/.cache/tollplane)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
