"""agno-teams: business AI teams (SalesIntelligenceTeam, ClientHealthTeam) on the chassis.
Deterministic scoring answers without a model; team runs need agno-coordinator.

Run with `uvicorn --factory agno_teams.main:build_app`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from agno_teams import client_health, sales
from agno_teams.gather import Gatherer
from agno_teams.metrics import TeamMetrics
from agno_teams.peers import Peer, PeerError
from agno_teams.runner import ModelError, ModelNotConfigured, TeamRunner, TeamTimeout, prompt
from agno_teams.settings import Settings
from agno_teams.teams import client_health_team, sales_intelligence_team
from sophia_chassis import create_app
from sophia_chassis.auth import ServiceCredentials, require
from sophia_chassis.inputs import HubSpotRecordId, Text
from sophia_chassis.problems import problem, retry_after


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    focus: Text(2000) | None = Field(None, description="what the team should look at in particular")


# Company and deal ids go into mcp-hubspot's URLs: HubSpot's id grammar, checked here.
CompanyId = DealId = HubSpotRecordId


def as_of_or_now(as_of: datetime | None) -> datetime:
    if as_of is None:
        return datetime.now(UTC)
    return as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()
    credentials = ServiceCredentials(settings.service_tokens_dir)
    peer_args = {
        "timeout": settings.peer_timeout_seconds,
        "attempts": settings.peer_attempts,
        "credentials": credentials,
    }
    hubspot = Peer("mcp-hubspot", settings.mcp_hubspot_url, **peer_args)
    context = Peer("mcp-context", settings.mcp_context_url, **peer_args)
    coordinator = (
        Peer(
            "agno-coordinator",
            settings.agno_coordinator_url,
            timeout=settings.peer_timeout_seconds,
            attempts=1,
            credentials=credentials,
            headers={"Authorization": f"Bearer {settings.model_api_key}"} if settings.model_api_key else None,
        )
        if settings.agno_coordinator_url
        else None
    )
    gatherer = Gatherer(
        hubspot,
        context,
        max_engagements=settings.max_engagements_per_type,
        support_namespace=settings.support_namespace,
    )

    async def close() -> None:
        await hubspot.aclose()
        await context.aclose()
        if coordinator:
            await coordinator.aclose()

    app = create_app(settings, degraded={"mcp-hubspot": hubspot.ping, "mcp-context": context.ping}, on_shutdown=[close])
    metrics = TeamMetrics(app.state.registry)
    runner = TeamRunner(settings, hubspot, context, metrics, coordinator)

    @app.exception_handler(PeerError)
    async def peer_failed(_: Request, exc: PeerError):
        title = (
            "Not found" if exc.status == 404 else "Dependency unavailable" if exc.status == 503 else "Upstream error"
        )
        headers = retry_after(exc.retry_after) if exc.retry_after is not None else None
        return problem(exc.status, title, str(exc), headers=headers, peer=exc.peer)

    @app.exception_handler(ModelNotConfigured)
    async def no_model(_: Request, exc: ModelNotConfigured):
        return problem(503, "Model not configured", str(exc))

    @app.exception_handler(ModelError)
    async def model_failed(_: Request, exc: ModelError):
        return problem(502, "Model call failed", str(exc), peer="agno-coordinator")

    @app.exception_handler(TeamTimeout)
    async def too_slow(_: Request, exc: TeamTimeout):
        return problem(504, "Team run timed out", str(exc))

    async def health(company_id: str, as_of: datetime | None) -> dict[str, Any]:
        data = await gatherer.company(company_id)
        result = client_health.score(
            data["company"], data["deals"], data["engagements"], data["support"], as_of_or_now(as_of)
        )
        metrics.health.observe(result["score"])
        return result

    async def signals(deal_id: str, as_of: datetime | None) -> dict[str, Any]:
        data = await gatherer.deal(deal_id)
        result = sales.deal_signals(data["deal"], data["engagements"], as_of_or_now(as_of))
        metrics.deal_risk.labels(result["risk"]).inc()
        return result

    # Every peer call acts for the caller's tenant (set by `require`).
    read, write = [Depends(require("teams:read"))], [Depends(require("teams:write"))]

    @app.get("/teams", dependencies=read)
    async def teams() -> dict[str, Any]:
        missing = settings.model_missing()
        return {
            "model": {"configured": missing is None, **({"detail": missing} if missing else {})},
            "teams": ["SalesIntelligenceTeam", "ClientHealthTeam"],
        }

    @app.get("/teams/client-health/companies/{company_id}", dependencies=read)
    async def company_health(company_id: CompanyId, as_of: datetime | None = None) -> dict[str, Any]:
        return await health(company_id, as_of)

    @app.post("/teams/client-health/companies/{company_id}/review", dependencies=write)
    async def company_review(
        company_id: CompanyId, body: ReviewIn | None = None, as_of: datetime | None = None
    ) -> dict[str, Any]:
        await runner.require_model("ClientHealthTeam")
        result = await health(company_id, as_of)
        task = f"Review the health of client company {company_id} ({result['company']}) and explain its score." + (
            f" Focus: {body.focus}" if body and body.focus else ""
        )
        run = await runner.run("ClientHealthTeam", client_health_team, prompt(task, result))
        return {
            "company_id": company_id,
            "health": result,
            "review": run["content"],
            "team": run["team"],
            "tool_calls": run["tool_calls"],
        }

    @app.get("/teams/sales/deals/{deal_id}/signals", dependencies=read)
    async def deal_signals(deal_id: DealId, as_of: datetime | None = None) -> dict[str, Any]:
        return await signals(deal_id, as_of)

    @app.post("/teams/sales/deals/{deal_id}/analysis", dependencies=write)
    async def deal_analysis(
        deal_id: DealId, body: ReviewIn | None = None, as_of: datetime | None = None
    ) -> dict[str, Any]:
        await runner.require_model("SalesIntelligenceTeam")
        result = await signals(deal_id, as_of)
        task = f"Analyse deal {deal_id} ({result['deal']}) and write coaching notes for its owner." + (
            f" Focus: {body.focus}" if body and body.focus else ""
        )
        run = await runner.run("SalesIntelligenceTeam", sales_intelligence_team, prompt(task, result))
        return {
            "deal_id": deal_id,
            "signals": result,
            "analysis": run["content"],
            "team": run["team"],
            "tool_calls": run["tool_calls"],
        }

    return app
