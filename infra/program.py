"""The Pulumi program: validate everything, then register the stack's resources."""

from __future__ import annotations

from pathlib import Path

import pulumi

from infra.config import NAMESPACE, SECRETS_KEY, parse_stack_config, raw_stack_config, secret_keys_available
from infra.discovery import SERVICES_DIR, discover
from infra.plan import plan_services
from infra.stack import deploy


def run(services_dir: Path = SERVICES_DIR) -> None:
    stack = pulumi.get_stack()
    raw = raw_stack_config()
    # All checks happen before the first resource is registered, so bad input touches nothing.
    config = parse_stack_config(stack, raw)
    available = secret_keys_available(stack, raw)
    planned = plan_services(stack, config, discover(services_dir), available, services_dir)
    secret_values = pulumi.Config(NAMESPACE).get_secret_object(SECRETS_KEY) if available else None
    outputs = deploy(stack, config, planned, secret_values)
    for key, value in outputs.items():
        pulumi.export(key, value)
