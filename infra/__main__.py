"""Entry point the Pulumi language host runs (`main: infra/` in Pulumi.yaml)."""

import os

import pulumi.log

# The SDK sends about four debug lines per resource ("registering resource ...") to the engine as
# blocking calls, 880 in a no-op up, which only `pulumi up --debug` shows: 0.5-1 s of a no-op
# (issue 18, part 5). SOPHIA_PULUMI_DEBUG=1 sends them.
if not os.environ.get("SOPHIA_PULUMI_DEBUG"):
    pulumi.log.debug = lambda *args, **kwargs: None

from infra.program import run  # noqa: E402 (after the SDK setting above)

run()
