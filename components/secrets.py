"""Internal secrets the platform generates itself (never typed by a person).

Each value is a `random.RandomPassword` whose keeper is the stack's rotation counter:
bumping `sophia:secret_rotation` replaces every value on the next `pulumi up`, and the
services that mount one roll because their config checksum changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_random as random


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
            password = random.RandomPassword(
                f"{name}-{secret_name}",
                length=args.length,
                # Alphanumeric only: values land in URLs, ACL files and ini files unquoted.
                special=False,
                keepers={"rotation": str(args.rotation)},
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["result"]),
            )
            self.values[secret_name] = pulumi.Output.secret(password.result)
        self.register_outputs({"names": sorted(self.values)})
