"""agno-teams tests: the service and its real peers (mcp-hubspot against the fake HubSpot,
mcp-context with its offline embedder and embedded Qdrant), a fake model provider."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sophia_testing.hubspot_fake import FakeHubSpot, build_fake_hubspot
from sophia_testing.openai_chat_fake import FakeChat, build_fake_chat
from sophia_testing.servers import serve

from .teams_data import MODEL_KEY, SUPPORT_MEMORIES, hubspot_app, seed_crm, teams_settings


@pytest.fixture(scope="session")
def crm() -> FakeHubSpot:
    hs = FakeHubSpot()
    seed_crm(hs)
    return hs


@pytest.fixture(scope="session")
def hubspot_url(crm: FakeHubSpot) -> Iterator[str]:
    with serve(build_fake_hubspot(crm)) as url:
        yield url


@pytest.fixture(scope="session")
def mcp_hubspot_url(hubspot_url: str) -> Iterator[str]:
    with serve(hubspot_app(hubspot_url)) as url:
        yield url


@pytest.fixture(scope="session")
def mcp_context_url() -> Iterator[str]:
    """A real mcp-context: the offline MiniLM embedder (loaded once per session), embedded Qdrant."""
    from mcp_context.main import Settings, build_app

    with serve(build_app(Settings(embedding_provider="local"))) as url:
        response = httpx.post(f"{url}/memories/batch", json=SUPPORT_MEMORIES, timeout=60)
        assert response.status_code == 201, response.text
        yield url


# The model provider and the service are made per test: a team run goes on after its request
# (model and tool calls) when its caller gave up or timed out, and on a provider shared with the
# next test it took the replies that test had scripted (seen under load: the test got an echo).
# Closing the test's service ends its runs; the next test's provider never hears from them.
@pytest.fixture
def fresh_chat() -> FakeChat:
    return FakeChat(api_key=MODEL_KEY, models=("auto",), slow_seconds=6.0)  # past the 5 s model timeout


@pytest.fixture
def coordinator_url(fresh_chat: FakeChat) -> Iterator[str]:
    with serve(build_fake_chat(fresh_chat)) as url:
        yield url


@pytest.fixture
def teams_url(mcp_hubspot_url: str, mcp_context_url: str, coordinator_url: str) -> Iterator[str]:
    from agno_teams.main import build_app

    settings = teams_settings(
        mcp_hubspot_url=mcp_hubspot_url,
        mcp_context_url=mcp_context_url,
        agno_coordinator_url=coordinator_url,
        model_api_key=MODEL_KEY,
    )
    with serve(build_app(settings)) as url:
        yield url


@pytest.fixture(scope="session")
def no_model_url(mcp_hubspot_url: str, mcp_context_url: str) -> Iterator[str]:
    """The same service without a model key."""
    from agno_teams.main import build_app

    with serve(
        build_app(
            teams_settings(
                mcp_hubspot_url=mcp_hubspot_url,
                mcp_context_url=mcp_context_url,
                agno_coordinator_url="http://127.0.0.1:9",
            )
        )
    ) as url:
        yield url
