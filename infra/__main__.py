"""Entry point the Pulumi language host runs (`main: infra/` in Pulumi.yaml)."""

from infra.program import run

run()
