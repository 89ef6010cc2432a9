"""Feature flags through OpenFeature, with a provider reading the flags the platform declares.

The stack declares flags as code (`sophia:flags` in Pulumi.<stack>.yaml, checked by
infra/config.py); the program renders them into one ConfigMap, mounted as a directory (never
subPath, so the kubelet updates the file in place) at FLAGS_FILE. `FileFlagProvider` re-reads the
file when it changes (checked at most every FLAGS_POLL_SECONDS, on evaluation), so flipping a
flag rolls no pod. The file:

    {"flags": {"<key>": {"default": false, "percentage": 10, "tenants": ["acme"], "users": []}}}

A flag is boolean, variants `on` and `off`: on for the listed tenants and users (the caller's
identity, sophia_chassis.auth), on for `percentage` % of tenants, chosen by a stable hash of flag
and tenant (the same tenant keeps its answer while the percentage grows), else `default`.
Every evaluation counts in `feature_flag_evaluations_total{flag, variant}`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, FlagResolutionDetails, Reason
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import AbstractProvider
from openfeature.provider.metadata import Metadata
from prometheus_client import CollectorRegistry, Counter

from sophia_chassis.auth import Identity

ON, OFF = "on", "off"
BUCKETS = 10_000  # percentages to two decimals
log = structlog.get_logger()


def bucket(flag: str, key: str) -> float:
    """Where `key` falls for `flag`, in [0, 100): stable across processes and restarts (a hash,
    not Python's salted hash()); per flag, so one tenant is not first in line for every flag."""
    digest = hashlib.sha256(f"{flag}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS * 100 / BUCKETS


def resolve(flag: str, rule: Mapping[str, Any], tenant: str | None, user: str | None) -> tuple[bool, str]:
    """A flag's value and the OpenFeature reason, for one caller."""
    if (tenant and tenant in rule.get("tenants", ())) or (user and user in rule.get("users", ())):
        return True, Reason.TARGETING_MATCH
    percentage = float(rule.get("percentage", 0))
    if tenant and percentage > 0:
        return bucket(flag, tenant) < percentage, Reason.SPLIT
    return bool(rule.get("default", False)), Reason.STATIC


class FileFlagProvider(AbstractProvider):
    """Flags from a JSON file, re-read when the file changes (inode, mtime or size: a ConfigMap
    update swaps a symlink, so the path resolves to a new file). A file that does not parse keeps
    the last good flags; no file means no flags (every evaluation gets the code's default)."""

    def __init__(self, path: str | None, poll_seconds: float = 2.0):
        super().__init__()
        self.path = Path(path) if path else None
        self.poll_seconds = poll_seconds
        self._flags: dict[str, Mapping[str, Any]] = {}
        self._seen: tuple[int, int, int] | None = None
        self._checked_at = float("-inf")
        self._reload()

    def get_metadata(self) -> Metadata:
        return Metadata(name="sophia-file")

    @property
    def flags(self) -> dict[str, Mapping[str, Any]]:
        if time.monotonic() - self._checked_at >= self.poll_seconds:
            self._reload()
        return self._flags

    def _reload(self) -> None:
        self._checked_at = time.monotonic()
        if self.path is None:
            return
        try:
            stat = os.stat(self.path)
        except OSError:
            if self._seen is not None:
                log.warning("flags_file_missing", path=str(self.path))
            self._flags, self._seen = {}, None
            return
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen == self._seen:
            return
        self._seen = seen
        try:
            flags = json.loads(self.path.read_text())["flags"]
            if not isinstance(flags, dict) or not all(isinstance(r, dict) for r in flags.values()):
                raise ValueError("`flags` must map each key to its rule")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("flags_file_invalid", path=str(self.path), error=str(exc), kept=sorted(self._flags))
            return
        self._flags = flags
        log.info("flags_loaded", path=str(self.path), flags=sorted(flags))

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        rule = self.flags.get(flag_key)
        if rule is None:
            return FlagResolutionDetails(
                default_value,
                error_code=ErrorCode.FLAG_NOT_FOUND,
                error_message=f"no flag {flag_key!r} in {self.path}",
                reason=Reason.DEFAULT,
            )
        context = evaluation_context or EvaluationContext()
        user = context.attributes.get("user")
        value, reason = resolve(flag_key, rule, context.targeting_key, user if isinstance(user, str) else None)
        return FlagResolutionDetails(value, reason=reason, variant=ON if value else OFF)

    def _not_boolean(self, flag_key: str, default_value: Any) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(
            default_value,
            error_code=ErrorCode.TYPE_MISMATCH,
            error_message=f"flag {flag_key!r}: the platform's flags are boolean",
            reason=Reason.ERROR,
        )

    def resolve_string_details(self, flag_key: str, default_value: str, evaluation_context=None):
        return self._not_boolean(flag_key, default_value)

    def resolve_integer_details(self, flag_key: str, default_value: int, evaluation_context=None):
        return self._not_boolean(flag_key, default_value)

    def resolve_float_details(self, flag_key: str, default_value: float, evaluation_context=None):
        return self._not_boolean(flag_key, default_value)

    def resolve_object_details(
        self, flag_key: str, default_value: Sequence[Any] | Mapping[str, Any], evaluation_context=None
    ):
        return self._not_boolean(flag_key, default_value)


class CountEvaluations(Hook):
    """Every evaluation, by flag and variant (`default`: the flag is not declared, the code's
    default was used; `error`: the evaluation failed and fell back to the default)."""

    def __init__(self, registry: CollectorRegistry):
        self.counter = Counter(
            "feature_flag_evaluations_total", "Feature flag evaluations", ("flag", "variant"), registry=registry
        )

    def finally_after(self, hook_context: HookContext, details: FlagEvaluationDetails[Any], hints: HookHints) -> None:
        if details.variant:
            variant = details.variant
        else:
            variant = "default" if details.error_code in (None, ErrorCode.FLAG_NOT_FOUND) else "error"
        self.counter.labels(hook_context.flag_key, variant).inc()


class Flags:
    """A service's flags: `flags.enabled("key", identity)`."""

    def __init__(self, client: OpenFeatureClient, provider: FileFlagProvider):
        self.client, self.provider = client, provider

    def enabled(self, flag: str, identity: Identity | None, default: bool = False) -> bool:
        context = EvaluationContext()
        if identity is not None:
            # The tenant is the targeting key (a percentage splits tenants); the user may be listed.
            context = EvaluationContext(
                targeting_key=identity.tenant, attributes={"user": identity.subject, "kind": identity.kind}
            )
        return self.client.get_boolean_value(flag, default, context)


def install_flags(service: str, path: str | None, poll_seconds: float, registry: CollectorRegistry) -> Flags:
    """The OpenFeature client of one app. Its own domain (not the global default provider), so
    apps built in one process (the tests) do not share a provider."""
    domain = f"{service}/{uuid.uuid4().hex[:8]}"
    provider = FileFlagProvider(path, poll_seconds)
    api.set_provider(provider, domain=domain)
    client = api.get_client(domain=domain)
    client.add_hooks([CountEvaluations(registry)])
    return Flags(client, provider)
