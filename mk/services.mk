# The services themselves, run locally (no cluster).
.PHONY: dev
dev: bootstrap ## run every service that has code locally (uvicorn), with a local Redis
	@scripts/dev.sh
