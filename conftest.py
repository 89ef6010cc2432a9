"""Shared by every test folder (tests/, services/*/tests/, libs/*/tests/).

The services' functional suites test what a service does, not who may ask: they run with
AUTH_MODE=off (every caller trusted, acting for tenant "default"). The suites about identity
(libs/sophia_chassis/tests/test_auth.py, tests/integration/test_tenancy.py and
test_routes_need_identity.py) set AUTH_MODE=required explicitly. Nothing in the platform sets
AUTH_MODE, so a deployed service requires an identity (a program test asserting it is still to do)."""

import os

os.environ.setdefault("AUTH_MODE", "off")
