"""The model table: which models exist, on which provider, what they cost, how hard a
request they handle and how fast they answer. Validated at startup; a bad table stops
the service with a message naming the offending field."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

DEFAULT_TABLE = Path(__file__).with_name("models.yaml")
PROVIDERS = ("openai", "anthropic", "local")
TIER_NAMES = {"low": 1, "medium": 2, "high": 3}


def parse_tier(value: Any) -> Any:
    """`low`/`medium`/`high` or 1-3."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TIER_NAMES:
            return TIER_NAMES[text]
        if not text.isdigit():
            raise ValueError(f"tier must be low, medium, high or 1-3, not {value!r}")
        return int(text)
    return value


Tier = Annotated[int, BeforeValidator(parse_tier), Field(ge=1, le=3)]


def tier_name(tier: int) -> str:
    return {v: k for k, v in TIER_NAMES.items()}[tier]


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)  # what callers ask for and see in `model`
    provider: Literal["openai", "anthropic", "local"]
    upstream: str = Field(min_length=1)  # the provider's own model id
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    tier: Tier
    latency_ms: int = Field(gt=0)
    context_window: int = Field(gt=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_usd_per_mtok + completion_tokens * self.output_usd_per_mtok) / 1e6


class ModelTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def unique_names(self) -> ModelTable:
        seen: set[str] = set()
        for spec in self.models:
            if spec.name in seen or spec.name == "auto":
                raise ValueError(f"model name {spec.name!r} is used twice or reserved")
            seen.add(spec.name)
        return self

    def get(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.name == name), None)


class TableError(ValueError):
    """The model table cannot be read or is invalid."""


def load_table(source: str | None = None) -> ModelTable:
    """The packaged table, or `source`: inline JSON (starts with `{` or `[`) or a file path
    (YAML or JSON; YAML reads both)."""
    where = "inline JSON" if source and source.lstrip()[:1] in "{[" else str(source or DEFAULT_TABLE)
    try:
        text = source if where == "inline JSON" else Path(where).read_text()
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise TableError(f"model table ({where}) cannot be read: {exc}") from exc
    if isinstance(data, list):  # a bare list of models is accepted too
        data = {"models": data}
    try:
        return ModelTable.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'table'}: {e['msg']}" for e in exc.errors())
        raise TableError(f"model table ({where}) is invalid: {problems}") from exc
