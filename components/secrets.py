"""Internal secrets the platform generates itself (never typed by a person).

Each value is a `RotatingSecret`: random on create, kept in state (encrypted), and
renewed when its keeper changes, keeping the value before as `previous`. The keeper is the stack's rotation counter, so
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
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

ALPHABET = string.ascii_letters + string.digits  # values land in URLs, ACL and ini files unquoted


def _random(length: Any) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(int(length)))


class _RotatingSecretProvider(ResourceProvider):
    """A new keeper updates the value in place and keeps the one before as `previous`, so a store
    can accept both for a rotation's window (Redis ACL users with two passwords). A new length
    replaces the resource (no previous)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=uuid.uuid4().hex, outs={**props, "result": _random(props["length"]), "previous": ""})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("keeper", "length") if str(olds.get(k)) != str(news.get(k))]
        replaces = [k for k in changed if k == "length"]
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**news, "result": _random(news["length"]), "previous": olds.get("result") or ""})


class RotatingSecret(Resource):
    """A random alphanumeric value, renewed whenever `keeper` changes; `previous` is the value before."""

    result: pulumi.Output[str]
    previous: pulumi.Output[str]

    def __init__(
        self, name: str, keeper: pulumi.Input[str], length: int = 40, opts: pulumi.ResourceOptions | None = None
    ):
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["result", "previous"])
        )
        props = {"keeper": keeper, "length": length, "result": None, "previous": None}
        super().__init__(_RotatingSecretProvider(), name, props, opts)


@dataclass(frozen=True)
class GeneratedSecretsArgs:
    names: Sequence[str]
    rotation: int = 0
    length: int = 40


class GeneratedSecrets(pulumi.ComponentResource):
    values: dict[str, pulumi.Output[str]]
    # The value each had before the last rotation ("" before the first): still accepted by the
    # stores that can hold two credentials, for the window in which pods roll to the new one.
    previous: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: GeneratedSecretsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:GeneratedSecrets", name, None, opts)
        self.values, self.previous = {}, {}
        for secret_name in sorted(set(args.names)):
            value = RotatingSecret(
                f"{name}-{secret_name}",
                keeper=str(args.rotation),
                length=args.length,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.values[secret_name] = pulumi.Output.secret(value.result)
            self.previous[secret_name] = pulumi.Output.secret(value.previous.apply(lambda p: p or ""))
        self.register_outputs({"names": sorted(self.values)})
