# Entry points users run. Each concern adds its targets in mk/*.mk.
SHELL := /bin/bash
STACK ?= local
OUT ?= render/$(STACK)
PY := .venv/bin/python

.PHONY: help bootstrap up down test render bench
help:
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

bootstrap: ## install everything (Debian packages, venvs); safe to re-run
	@scripts/bootstrap.sh

up: bootstrap ## bring up the local stack (the main job)
	@scripts/up.sh

down: ## tear down the local stack
	@rm -rf render/local && echo "[down] removed render/local; no cluster resources exist to destroy"

test: bootstrap ## run the test suite
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo 'pytest: no tests collected'; exit 0; fi; exit $$rc

render: bootstrap ## write every Kubernetes object of STACK into OUT, offline
	@$(PY) -m infra.render --stack $(STACK) --out $(OUT)

bench: bootstrap ## print all benchmark figures
	@for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

bench-%: bootstrap ## print one benchmark's figures (bench/bench_<part>.py)
	@$(PY) bench/bench_$*.py

-include mk/*.mk
