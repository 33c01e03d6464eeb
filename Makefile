# modelops — every target has a one-line help: `make help`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE        ?= $(HOME)/.cache/modelops
LOCK_HASH    := $(shell sha256sum requirements/lock.txt | cut -c1-12)
VENV         ?= $(CACHE)/venv-$(LOCK_HASH)
PY           := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)/jobs
export PIP_CACHE_DIR ?= $(CACHE)/pip
KUBE_VERSION ?= 1.35.4
JOBSET_VERSION ?= 0.12.0
KSERVE_VERSION ?= 0.16.0
PYTEST       := $(PY) -m pytest
MODELOPS     := $(PY) -m modelops_cli.main

.PHONY: help install system-deps control-plane jobset kserve seaweedfs mlflow crds crds-check lint typecheck test test-unit test-chart test-jobs \
        test-integration test-e2e cluster-up cluster-down cluster-restart demo bench clean-venv dashboards

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed:
	@echo ">> creating $(VENV) (dependencies only; the repo is used from PYTHONPATH)"
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/lock.txt
	touch $@

install: $(VENV)/.installed system-deps ## install Python deps (cached venv), Prometheus, build the control plane, fetch KServe's CRD
	@$(MAKE) --no-print-directory control-plane kserve

system-deps: ## install Debian packages the tests need (prometheus, promtool, openssl)
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || ! command -v openssl >/dev/null; then \
	  echo ">> installing Debian packages: prometheus openssl"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus openssl >/dev/null; \
	fi

seaweedfs: ## build SeaweedFS's weed (the real S3 server of the storage tests) from source (cached)
	@MODELOPS_CACHE=$(CACHE) hack/build-seaweedfs.sh >/dev/null

mlflow: ## install the MLflow tracking server of the registry tests into its own cached venv (pins: requirements/mlflow.txt)
	@MODELOPS_CACHE=$(CACHE) hack/install-mlflow.sh >/dev/null

control-plane: ## build kube-apiserver, kube-controller-manager, kubectl and etcd from source (cached)
	@KUBE_VERSION=$(KUBE_VERSION) MODELOPS_CACHE=$(CACHE) hack/build-control-plane.sh >/dev/null

jobset: ## build the JobSet controller (sigs.k8s.io/jobset) from source, with its CRD (cached)
	@JOBSET_VERSION=$(JOBSET_VERSION) MODELOPS_CACHE=$(CACHE) hack/build-jobset.sh >/dev/null

kserve: ## fetch KServe's InferenceService CRD (github.com/kserve/kserve) through the Go module proxy (cached)
	@KSERVE_VERSION=$(KSERVE_VERSION) MODELOPS_CACHE=$(CACHE) hack/kserve-crds.sh >/dev/null

crds: $(VENV)/.installed ## generate crds/, the chart's CRD copy and docs/api.md from the API models
	$(MODELOPS) crds --out crds --out charts/modelops/files/crds
	$(MODELOPS) api-docs

crds-check: $(VENV)/.installed ## fail if committed CRDs, docs/api.md or dashboards differ from their sources
	$(MODELOPS) crds --check --out crds --out charts/modelops/files/crds
	$(MODELOPS) api-docs --check
	$(PY) dashboards/build.py --check

dashboards: $(VENV)/.installed ## regenerate the Grafana dashboards from dashboards/build.py
	$(PY) dashboards/build.py

lint: $(VENV)/.installed ## ruff lint + format check, and import boundaries (import-linter)
	$(VENV)/bin/ruff check operator jobs tests benchmarks dashboards
	$(VENV)/bin/ruff format --check operator jobs tests benchmarks dashboards
	cd $(CURDIR) && $(VENV)/bin/lint-imports

typecheck: $(VENV)/.installed ## mypy on the operator side and the jobs (modelops_jobs)
	$(PY) -m mypy

test: install helm seaweedfs jobset kserve mlflow crds-check lint typecheck ## every tier that needs no GPU (unit, jobs, integration, e2e, chart)
	$(PYTEST) tests/unit tests/chart tests/jobs tests/integration tests/e2e

test-unit: $(VENV)/.installed ## unit tier: models, CRD generation, plan(), builders (no servers, no binaries)
	$(PYTEST) tests/unit

test-chart: $(VENV)/.installed helm ## chart tier: helm lint + template of every ci/ scenario (builds helm once, cached)
	$(PYTEST) tests/chart

test-jobs: $(VENV)/.installed seaweedfs ## jobs tier: each algorithm end to end on tiny models (CPU)
	$(PYTEST) tests/jobs

test-integration: install mlflow ## integration tier: the real local control plane
	$(PYTEST) tests/integration

test-e2e: install seaweedfs jobset kserve mlflow ## e2e tier: control plane + a real Prometheus + SeaweedFS
	$(PYTEST) tests/e2e

cluster-up: install ## local control plane + CRDs + stand-in kubelet in the background; prints KUBECONFIG
	$(MODELOPS) cluster up --run-pods

cluster-restart: $(VENV)/.installed ## fault drill: restart etcd and kube-apiserver of the local control plane
	$(MODELOPS) cluster restart

cluster-down: $(VENV)/.installed ## stop the local control plane
	$(MODELOPS) cluster down

demo: install ## the main job: local control plane + operator + one example of each kind
	$(PY) -m modelops_devcluster.demo

bench: $(VENV)/.installed seaweedfs ## run the benchmarks and rewrite docs/benchmarks.md
	$(PY) benchmarks/perp.py
	$(PY) benchmarks/unlearning.py
	$(PY) benchmarks/cpt.py
	$(PY) benchmarks/translora.py
	$(PY) benchmarks/distributed.py
	$(PY) benchmarks/storage.py
	$(PY) benchmarks/assemble.py

clean-venv: ## remove the cached virtualenv of the current lock file
	rm -rf $(VENV)

.PHONY: helm helm-test
helm: ## build helm from source through the Go module proxy (cached; version pinned in hack/build-helm.sh)
	@MODELOPS_CACHE=$(CACHE) hack/build-helm.sh >/dev/null

helm-test: install helm ## the chart: lint + template every ci/ scenario, assertions, install + RBAC and security e2e
	$(PYTEST) tests/chart tests/unit/test_images.py tests/e2e/test_helm.py tests/e2e/test_security.py
