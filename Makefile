# The two commands of the README: `make run` and `make test`. Every target installs
# what it needs on a fresh machine (Debian packages, Python packages, the Kubernetes
# binaries and the GitOps tools built from Go modules, the container image) and does
# nothing more when it is already there.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test deps k8s gitops image lint typecheck pytest clean

run: deps k8s image
	$(BIN)/wardgate demo

test: deps k8s gitops image lint typecheck pytest

deps: $(STAMP)

$(STAMP): pyproject.toml hack/install-system-deps.sh
	bash hack/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

k8s:
	bash hack/k8s-binaries.sh

# Flux's source-controller and kustomize-controller, and Argo CD's Lua interpreter.
gitops:
	bash hack/gitops-binaries.sh

# The image the local cluster's pods run (and its pause image): rebuilt only when the
# build context changes.
image: deps k8s
	bash hack/build-image.sh > /dev/null

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: deps
	$(BIN)/mypy

pytest: deps k8s gitops image
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
