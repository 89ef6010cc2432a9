"""Internal secrets the platform generates itself (never typed by a person).

Each value is a `RotatingSecret`: random on create, kept in state (encrypted), and
replaced when its keeper changes. The keeper is the stack's rotation counter, so
bumping `sophia:secret_rotation` replaces every value on the next `pulumi up`, and
the services that mount one roll because their config checksum changes.

Why a dynamic resource and not `pulumi-random`: the random provider plugin cannot be
built from the Go module proxy (its provider module is not served), and machines here
can't download plugins. A Python dynamic resource runs inside the language host, has
the same keeper semantics, and needs no plugin.
"""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

ALPHABET = string.ascii_letters + string.digits  # values land in URLs, ACL and ini files unquoted


class _RotatingSecretProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        value = "".join(secrets.choice(ALPHABET) for _ in range(int(props["length"])))
        return CreateResult(id_=uuid.uuid4().hex, outs={**props, "result": value})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("keeper", "length") if str(olds.get(k)) != str(news.get(k))]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)


class RotatingSecret(Resource):
    """A random alphanumeric value, replaced whenever `keeper` changes."""

    result: pulumi.Output[str]

    def __init__(
        self, name: str, keeper: pulumi.Input[str], length: int = 40, opts: pulumi.ResourceOptions | None = None
    ):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["result"]))
        super().__init__(_RotatingSecretProvider(), name, {"keeper": keeper, "length": length, "result": None}, opts)


@dataclass(frozen=True)
class GeneratedSecretsArgs:
    names: Sequence[str]
    rotation: int = 0
    length: int = 40


class GeneratedSecrets(pulumi.ComponentResource):
    values: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: GeneratedSecretsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:GeneratedSecrets", name, None, opts)
        self.values = {}
        for secret_name in sorted(set(args.names)):
            value = RotatingSecret(
                f"{name}-{secret_name}",
                keeper=str(args.rotation),
                length=args.length,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.values[secret_name] = pulumi.Output.secret(value.result)
        self.register_outputs({"names": sorted(self.values)})
