"""agno-coordinator tests: two fake OpenAI-compatible providers on loopback
(sophia_testing.openai_chat_fake), one as "openai", one as "anthropic", each with its own
key and models."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agno_coordinator.main import Settings
from sophia_testing.openai_chat_fake import FakeChat, build_fake_chat
from sophia_testing.servers import serve

from .coordinator_data import ANTHROPIC_KEY, OPENAI_KEY, TABLE


def openai_chat() -> FakeChat:
    return FakeChat(api_key=OPENAI_KEY, models=("gpt-4o-mini", "gpt-4o"), retry_after_seconds=1, slow_seconds=1.0)


def anthropic_chat() -> FakeChat:
    return FakeChat(
        api_key=ANTHROPIC_KEY, models=("claude-haiku", "claude-sonnet"), retry_after_seconds=1, slow_seconds=1.0
    )


# The fake providers are served once per session (a server's start and stop is most of a
# test's time); each test gets them back in their initial state.
@pytest.fixture(scope="session")
def _served_fakes() -> Iterator[tuple[FakeChat, str, FakeChat, str]]:
    openai, anthropic = openai_chat(), anthropic_chat()
    with serve(build_fake_chat(openai)) as openai_base, serve(build_fake_chat(anthropic)) as anthropic_base:
        yield openai, f"{openai_base}/v1", anthropic, f"{anthropic_base}/v1/"  # Anthropic's base URL ends in /


@pytest.fixture
def openai_fake(_served_fakes) -> FakeChat:
    fake = _served_fakes[0]
    fake.__dict__.update(openai_chat().__dict__)
    return fake


@pytest.fixture
def anthropic_fake(_served_fakes) -> FakeChat:
    fake = _served_fakes[2]
    fake.__dict__.update(anthropic_chat().__dict__)
    return fake


@pytest.fixture
def openai_url(_served_fakes, openai_fake: FakeChat) -> str:
    return _served_fakes[1]


@pytest.fixture
def anthropic_url(_served_fakes, anthropic_fake: FakeChat) -> str:
    return _served_fakes[3]


@pytest.fixture
def make_settings(openai_url: str, anthropic_url: str):
    def make(**overrides) -> Settings:
        values = dict(
            openai_api_key=OPENAI_KEY,
            openai_base_url=openai_url,
            anthropic_api_key=ANTHROPIC_KEY,
            anthropic_base_url=anthropic_url,
            coordinator_models=json.dumps({"models": TABLE}),
            provider_timeout_seconds=0.4,
            provider_attempts=2,
            provider_backoff_seconds=0.01,
            provider_backoff_max_seconds=0.05,
            provider_max_retry_wait_seconds=1.5,
            breaker_failure_threshold=3,
            breaker_reset_seconds=30.0,
        )
        return Settings(**{**values, **overrides})

    return make
