# ESC environments (esc/), secret rotation and backups (docs/secrets.md).
.PHONY: esc-check esc-apply

esc-check: bootstrap ## load and type-check the ESC environments in esc/ offline (github.com/pulumi/esc's evaluator)
	@.venv/bin/esc-eval check sophia/base sophia/dev-logins sophia/prod-logins sophia/dev sophia/prod

esc-apply: bootstrap ## push esc/*.yaml to Pulumi Cloud, keeping live rotator state (DRY_RUN=1 prints instead)
	@scripts/esc-apply.sh

# Backups of the `make dev` stores with the file the CronJobs run (components/sophia_backup.py).
# Needs BACKUP_BUCKET, BACKUP_ACCESS_KEY_ID, BACKUP_SECRET_ACCESS_KEY (and BACKUP_ENDPOINT for a
# non-AWS store) in the environment. STORE=qdrant (the embedded store in .state/dev-qdrant; stop
# `make dev` first) or STORE=redis (127.0.0.1:6379, no password).
STORE ?= qdrant
.PHONY: backup restore backup-list
backup: bootstrap ## back up a `make dev` store (STORE=qdrant|redis) to S3-compatible storage
	@QDRANT_PATH=$${QDRANT_PATH:-$$PWD/.state/dev-qdrant} $(PY) components/sophia_backup.py backup $(STORE)

restore: bootstrap ## restore the newest (or AT=<stamp>) backup of STORE; redis: TO_DIR=<data dir of the stopped redis>
	@QDRANT_PATH=$${QDRANT_PATH:-$$PWD/.state/dev-qdrant} $(PY) components/sophia_backup.py restore $(STORE) \
	  $(if $(AT),--at $(AT)) $(if $(TO_DIR),--to-dir $(TO_DIR))

backup-list: bootstrap ## list the complete backups of STORE
	@$(PY) components/sophia_backup.py list $(STORE)

.PHONY: rotate-drill
rotate-drill: bootstrap ## rotate Redis, PgBouncer, PostgreSQL and Qdrant credentials under load (local processes); prints sent/failed and the windows
	@$(PY) -m rotation.drill
