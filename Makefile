# LineGuard — every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
DEBS_STAMP := $(VENV)/.debs
# checkov pins boto3, packaging, networkx and schema below what the project needs: its own venv.
CHECKOV_VENV := $(VENV)/tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
export CDK_DISABLE_VERSION_CHECK := true
export AWS_EC2_METADATA_DISABLED := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 1
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: help setup test lint typecheck pytest demo device bench e2e-line synth bootstrap deploy clean

help: ## list the commands
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV_STAMP): requirements-dev.txt requirements-device.txt constraints.txt
	@echo "==> Python environment ($(VENV))"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	@# the repository root and the component source are importable (python -m inspector|training|rollout)
	@$(PY) -c 'import pathlib, sys, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "lineguard.pth").write_text("\n".join(sys.argv[1:]) + "\n")' "$(CURDIR)" "$(CURDIR)/edge_component"
	@touch $@

$(CHECKOV_STAMP): requirements-checkov.txt | $(VENV_STAMP)
	@echo "==> checkov ($(CHECKOV_VENV))"
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	@echo "==> CDK CLI (npm ci)"
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(DEBS_STAMP): | $(VENV_STAMP)
	@echo "==> Debian packages the tests need"
	@./scripts/install-debs.sh
	@touch $@

setup: $(VENV_STAMP) $(CHECKOV_STAMP) $(NODE_STAMP) $(DEBS_STAMP) ## install everything (venvs, CDK CLI, Debian packages)

lint: $(VENV_STAMP) ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV_STAMP) ## mypy on the packages
	$(VENV)/bin/mypy stacks rollout training demo bench core_device edge_component/inspector edge_component/line_bridge edge_component/build.py app.py

pytest: setup ## the test suite only
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(VENV)/bin/pytest

test: setup lint typecheck pytest ## everything CI runs: install, lint, types, tests

synth: setup component ## build the components, synthesise the Shared stack(s) and every plant into cdk.out/
	@# a fresh cdk.out: a stack renamed or removed since the last synth must not linger there
	rm -rf cdk.out
	npx cdk synth --quiet

bootstrap: $(VENV_STAMP) $(NODE_STAMP) ## PLANT=<plant>: cdk bootstrap the plant's account and region (once per account and region)
	@test -n "$(PLANT)" || { echo "error: make bootstrap PLANT=<plant> (a file in plants/)"; exit 2; }
	@# the CDK CLI runs the app even to bootstrap, and the app needs the built components
	$(MAKE) component
	npx cdk bootstrap $$($(PY) -m stacks.describe --plant $(PLANT) --environment)

deploy: $(VENV_STAMP) $(NODE_STAMP) ## PLANT=<plant>: preflight, build the components, cdk deploy the plant and its Shared stack
	@test -n "$(PLANT)" || { echo "error: make deploy PLANT=<plant> (a file in plants/)"; exit 2; }
	@# releases: where the rollout controller keeps them in S3 (the repository's copy until it
	@# has one); -c plant selects one Plant stack and the Shared stack of its account/region
	$(PY) -m stacks.preflight --plant $(PLANT) --releases-dir "$$($(PY) -m stacks.release_store url --plant $(PLANT))"
	$(MAKE) component
	npx cdk deploy -c plant=$(PLANT) -c releases_dir="$$($(PY) -m stacks.release_store url --plant $(PLANT))" --all

demo: setup ## the main job on the local default (no AWS account needed)
	$(PY) -m demo

device: setup ## one core device on this machine through the nucleus stand-in (PLANT=demo; Ctrl-C stops)
	@# the code components and a Model from the shipped initial package (MODEL=<dir> for another)
	$(MAKE) component MODEL=$(or $(MODEL),edge_component/initial-model)
	$(PY) -m core_device run --plant $(or $(PLANT),demo) --fresh

bench: setup ## run every bench/*.py; writes out/bench/results.json and report.html
	$(PY) bench/run_all.py --out out/bench --timeout 3600

e2e-line: setup ## inspector + line bridge + simulated OPC UA PLC; JSON figures, fails on a missed reject
	$(PY) bench/line_e2e.py --frames 300 --fps 20 --defect-share 0.1 --manual-share 0.05

.PHONY: component
component: $(VENV_STAMP) ## build Greengrass components into build/components/ (MODEL=<package dir>, BUCKET=<bucket/prefix>)
	$(PY) edge_component/build.py $(if $(MODEL),--model-package $(MODEL)) $(if $(BUCKET),--bucket $(BUCKET))

clean: ## remove build output (keeps .venv and node_modules)
	rm -rf cdk.out build out .pytest_cache .mypy_cache .ruff_cache
