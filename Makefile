# Entry points users run. Each concern adds its targets in mk/*.mk.
SHELL := /bin/bash
STACK ?= local
OUT ?= render/$(STACK)
PY := .venv/bin/python

.PHONY: help bootstrap bootstrap-runtime up down api-key e2e test format render bench
help:
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

bootstrap: ## install everything (Debian packages, venvs); safe to re-run
	@scripts/bootstrap.sh

bootstrap-runtime: ## install what running the stack needs (make up/down/api-key/render), not the test-only tools
	@scripts/bootstrap.sh runtime

up: bootstrap-runtime ## bring up the local stack (the main job)
	@scripts/up.sh

down: bootstrap-runtime ## destroy the local stack and stop the local control plane
	@scripts/up.sh down

api-key: bootstrap-runtime ## print the local stack's API key (after make up): Authorization: Bearer <key>
	@source toolchain/env.sh && $(PY) scripts/local_stack.py api-key

e2e: bootstrap ## real engine on its own fresh local cluster (real node): the local stack (preview, up, pods, gateway, policies, restarts, cluster recreated, destroy), then the dev and prod shapes on simulated prod nodes (STACK=dev|prod: that one); make up's cluster is resumed after
	@SOPHIA_E2E_SHAPES="$(if $(filter local,$(STACK)),dev prod,$(STACK))" scripts/e2e.sh -s $(PYTEST_ARGS)

test: bootstrap ## run the test suite (a run that collects no test fails: pytest exits 5)
	@$(PY) -m pytest -q $(PYTEST_ARGS)

format: bootstrap ## format and fix the whole repository with ruff (make test checks both)
	@$(PY) -m ruff format . && $(PY) -m ruff check --fix .

render: bootstrap-runtime ## write every Kubernetes object of STACK into OUT, offline
	@$(PY) -m infra.render --stack $(STACK) --out $(OUT)

bench: bootstrap ## print all benchmark figures
	@for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

bench-%: bootstrap ## print one benchmark's figures (bench/bench_<part>.py)
	@$(PY) bench/bench_$*.py

-include mk/*.mk
