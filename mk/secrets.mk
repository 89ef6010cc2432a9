# ESC environments (esc/), secret rotation and backups (docs/secrets.md).
.PHONY: esc-check esc-apply

esc-check: bootstrap ## load and type-check the ESC environments in esc/ offline (github.com/pulumi/esc's evaluator)
	@.venv/bin/esc-eval check sophia/base sophia/dev-logins sophia/prod-logins sophia/dev sophia/prod

esc-apply: bootstrap ## push esc/*.yaml to Pulumi Cloud, keeping live rotator state (DRY_RUN=1 prints instead)
	@scripts/esc-apply.sh
