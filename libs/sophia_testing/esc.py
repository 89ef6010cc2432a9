"""A stand-in for AWS Secrets Manager as the ESC environments in esc/ read it (secretId ->
SecretString), for esc-eval's local aws-secrets provider: the program's tests evaluate the
environments with it, and `make e2e` deploys the dev and prod shapes from what they give."""

from __future__ import annotations

import json

from sophia_chassis.auth import issue_key


def secrets_manager(stack: str) -> dict[str, str]:
    """Every secret sophia/<stack> opens, with well-formed stand-in values; the API key table
    holds one key `ci` of tenant `acme`."""
    _, entry = issue_key("acme", ["*"], key_id="ci")
    writer = lambda prefix, char: json.dumps({"accessKeyId": prefix, "secretAccessKey": char * 40})  # noqa: E731
    return {
        f"sophia/{stack}/neon-managing-user": json.dumps({"username": "sophia_rotator", "password": "m" * 24}),
        f"sophia/{stack}/openai-api-key": "sk-test-openai",
        f"sophia/{stack}/anthropic-api-key": "sk-ant-test",
        f"sophia/{stack}/github-token": "ghp_test",
        f"sophia/{stack}/hubspot-access-token": "pat-test",
        f"sophia/{stack}/api-keys": json.dumps([entry]),
        f"sophia/{stack}/slack-webhook-url": "https://hooks.slack.com/services/T0/B0/x",
        f"sophia/{stack}/pagerduty-routing-key": "r" * 32,
        f"sophia/{stack}/backup-writer": writer("AKIATEST", "s"),
        f"sophia/{stack}/loki-writer": writer("AKIALOKI", "l"),
    }
