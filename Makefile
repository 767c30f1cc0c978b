# aitbc-operator — one entry point.
#   make demo       local cluster + PostgreSQL + operator + samples, ends with their status   (make demo-down stops it)
#   make test       everything CI runs: ruff, mypy --strict, layer contracts, CRD drift, unit + integration tests
# Both install what they need (virtualenv, Debian packages, Go-built cluster binaries), idempotently and cached.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/aitbc-operator
K8S_VERSION ?= v1.34.4
K8S_BIN := $(CACHE_DIR)/k8s-$(K8S_VERSION)/bin
export AITBC_K8S_VERSION := $(K8S_VERSION)
export AITBC_K8S_BIN := $(K8S_BIN)
APT_PACKAGES := btrfs-progs postgresql-15 sqlite3 e2fsprogs openssl
# The real node (localcluster/node.py) and its images (localcluster/images.py): runtime, CNI, image builders.
APT_PACKAGES += containerd runc containernetworking-plugins iptables conntrack buildah podman mmdebstrap gcc libc6-dev
PYTEST_ARGS ?=
# As root (CI, this project's machines) the Btrfs and real-node tests must run: a missing loop device or container
# runtime is a failure, not a skip.
export AITBC_REQUIRE_BTRFS ?= $(shell [ "$$(id -u)" = 0 ] && echo 1 || echo 0)
export AITBC_REQUIRE_REALNODE ?= $(AITBC_REQUIRE_BTRFS)

.PHONY: help
help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# --- installation (idempotent, cached) -------------------------------------------------------------------------------
$(STAMPS)/venv: pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(STAMPS)/venv ## create/refresh the virtualenv with the project and dev tools

.PHONY: system-deps
system-deps: ## install the Debian packages (PostgreSQL 15, btrfs-progs, sqlite3, containerd, runc, CNI, buildah, ...)
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

.PHONY: cluster-bins
cluster-bins: ## build the control plane, kubelet, kube-proxy, kubectl, etcd, kwok, helm, crictl from Go modules (cached)
	bash localcluster/build-binaries.sh "$(K8S_BIN)" >/dev/null

.PHONY: images
images: venv system-deps ## build the real node's images without Docker: pause, python base, aitbc-operator:dev, aitbc-standin:dev (cached)
	$(BIN)/python -m localcluster.images build

# --- generated files --------------------------------------------------------------------------------------------------
.PHONY: generate
generate: venv ## regenerate every generated file (CRDs, chart CRDs, golden files)
	$(BIN)/aitbc-operator crds
	$(BIN)/aitbc-operator manifests
	$(BIN)/python -m tests.golden.regen

# --- quality gates ----------------------------------------------------------------------------------------------------
.PHONY: lint
lint: venv ## ruff, mypy --strict, import-linter layer contracts, CRD drift
	$(BIN)/ruff check operator localcluster tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/aitbc-operator crds --check
	$(BIN)/aitbc-operator manifests --check

.PHONY: unit
unit: venv ## fast unit tests only (no cluster, no PostgreSQL, no Btrfs)
	$(BIN)/pytest -m "not cluster and not postgres and not btrfs and not realnode" $(PYTEST_ARGS)

.PHONY: test
test: venv system-deps cluster-bins lint ## the whole suite, as CI runs it
	$(BIN)/pytest $(PYTEST_ARGS)

# --- demo -------------------------------------------------------------------------------------------------------------
.PHONY: demo
demo: venv system-deps cluster-bins ## PostgreSQL + cluster with a real node + operator pod + samples, then status (AITBC_DEMO_MODE=kwok: simulated)
	$(BIN)/python -m localcluster.demo up

.PHONY: demo-down
demo-down: venv ## stop the demo and remove its state
	$(BIN)/python -m localcluster.demo down

.PHONY: demo-status
demo-status: venv ## print the demo's resources again
	$(BIN)/python -m localcluster.demo status

# --- benchmarks -------------------------------------------------------------------------------------------------------
BENCH_COUNT ?= 200

.PHONY: bench-db
bench-db: venv system-deps cluster-bins ## AitbcDatabase benchmark: BENCH_COUNT resources to Ready vs the SQL floor, one idle drift pass
	$(BIN)/python -m benchmarks.db_bench --count $(BENCH_COUNT) $(BENCH_ARGS)

.PHONY: bench-db-isolation
bench-db-isolation: venv system-deps cluster-bins ## 50 AitbcDatabases on a healthy server: Ready time alone vs next to 50 on a dead one
	$(BIN)/python -m benchmarks.db_isolation_bench $(BENCH_ARGS)
.PHONY: bench-watch
bench-watch: venv cluster-bins ## operator RSS: empty cluster vs 5,000 unrelated 10 KiB Secrets + 2,000 Pods (own cluster)
	$(BIN)/python -m benchmarks.watch_rss $(BENCH_ARGS)
.PHONY: bench-chain
bench-chain: venv system-deps ## chain day-2 on a 200 MB chain.db: backup time and writer stall vs a baseline, restore, VACUUM
	$(BIN)/python -m benchmarks.chain_bench $(BENCH_ARGS)

.PHONY: bench-node
bench-node: venv cluster-bins ## AitbcNode rollout: config change -> node + RPC Ready, operator vs kubectl (own cluster)
	$(BIN)/python -m benchmarks.node_bench $(BENCH_ARGS)

# --- kind (needs Docker and kind; not runnable on the CI machine: checked statically by tests/unit/test_kind_config.py)
KIND ?= kind
KIND_CLUSTER ?= aitbc
KIND_CONTEXT := kind-$(KIND_CLUSTER)
KIND_DATA_DIR ?= /tmp/aitbc-kind/chain-data
KIND_IMAGE ?= aitbc-operator:dev
KUBECTL ?= kubectl

.PHONY: kind-up
kind-up: ## create the kind cluster of kind-config.yaml (control plane + worker, host dir for chain data)
	mkdir -p $(KIND_DATA_DIR)
	$(KIND) create cluster --name $(KIND_CLUSTER) --config kind-config.yaml --wait 120s

.PHONY: kind-load
kind-load: ## build the operator and stand-in images and load them into the kind nodes
	docker build -t $(KIND_IMAGE) .
	docker build -t aitbc-standin:dev localcluster/standin
	$(KIND) load docker-image $(KIND_IMAGE) aitbc-standin:dev --name $(KIND_CLUSTER)

.PHONY: kind-demo
kind-demo: kind-load ## on the kind cluster: CRDs + operator (deploy/overlays/kind), then the samples and their status
	$(KUBECTL) --context $(KIND_CONTEXT) apply --server-side -k crds
	$(KUBECTL) --context $(KIND_CONTEXT) wait --for=condition=Established --timeout=60s \
	  crd/aitbcdatabases.aitbc.io crd/aitbcnodes.aitbc.io
	$(KUBECTL) --context $(KIND_CONTEXT) apply --server-side -k deploy/overlays/kind
	$(KUBECTL) --context $(KIND_CONTEXT) -n aitbc-system rollout status deployment/aitbc-operator --timeout=180s
	$(KUBECTL) --context $(KIND_CONTEXT) apply -k deploy/samples-local
	@echo "the AitbcDatabases need a Secret postgres-admin in namespace aitbc-demo (see crds/samples/README.md)"
	$(KUBECTL) --context $(KIND_CONTEXT) get aitbc -A

.PHONY: kind-down
kind-down: ## delete the kind cluster (the chain data in KIND_DATA_DIR stay)
	$(KIND) delete cluster --name $(KIND_CLUSTER)

.PHONY: clean
clean: ## remove the virtualenv and stamps (the binary cache in ~/.cache/aitbc-operator is kept)
	rm -rf $(VENV) $(STAMPS) .mypy_cache .ruff_cache .pytest_cache
