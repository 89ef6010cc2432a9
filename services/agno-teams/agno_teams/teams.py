"""The Agno teams. Members reach the CRM and memories as MCP tools (agno's MCPTools on an
MCP client session per run); every model call goes to agno-coordinator's OpenAI-compatible
/v1 with model "auto"."""

from __future__ import annotations

from agno.agent import Agent
from agno.models.openai.like import OpenAILike
from agno.team import Team
from agno.team.mode import TeamMode
from agno.tools.mcp import MCPTools

from agno_teams.settings import Settings
from sophia_chassis.auth import acting_for

CRM_TOOLS = ["search_crm", "get_record", "list_associations"]  # reads only
MEMORY_TOOLS = ["search_memories"]  # no store or delete: a review must not change what it reviews


def model(settings: Settings) -> OpenAILike:
    return OpenAILike(
        id=settings.model_id,
        base_url=f"{settings.agno_coordinator_url.rstrip('/')}/v1",
        api_key=settings.model_key(),  # read per run: the kubelet rotates the service token
        default_headers={"X-Sophia-Tenant": acting_for.get() or ""},
        timeout=settings.model_timeout_seconds,
        max_retries=settings.model_max_retries,
    )


def _agent(settings: Settings, member_id: str, name: str, role: str, tools: MCPTools, instructions: list[str]) -> Agent:
    # telemetry off: no calls home from inside the cluster.
    return Agent(
        id=member_id,
        name=name,
        role=role,
        model=model(settings),
        tools=[tools],
        instructions=instructions,
        telemetry=False,
    )


def _team(settings: Settings, name: str, members: list[Agent], instructions: list[str]) -> Team:
    return Team(
        name=name,
        mode=TeamMode.coordinate,
        members=members,
        model=model(settings),
        instructions=instructions,
        store_member_responses=True,
        telemetry=False,
    )


def sales_intelligence_team(settings: Settings, crm: MCPTools, memories: MCPTools) -> Team:
    analyst = _agent(
        settings,
        "deal-analyst",
        "Deal Analyst",
        "Analyses a deal from HubSpot CRM data",
        crm,
        [
            "Read the deal, its company, contacts and engagements with the CRM tools.",
            "Report facts with their dates and amounts; say when data is missing.",
        ],
    )
    coach = _agent(
        settings,
        "sales-coach",
        "Sales Coach",
        "Writes coaching notes from account history",
        memories,
        [
            "Search memories for what is known about the account and similar deals.",
            "Write short, concrete coaching notes for the deal owner.",
        ],
    )
    return _team(
        settings,
        "SalesIntelligenceTeam",
        [analyst, coach],
        [
            "You get a deal's deterministic signals (stage age, last touch, close-date slip, risk flags).",
            "Do not contradict those numbers; explain them.",
            "Answer with a deal analysis, then coaching notes as a bulleted list.",
        ],
    )


def client_health_team(settings: Settings, crm: MCPTools, memories: MCPTools) -> Team:
    analyst = _agent(
        settings,
        "crm-analyst",
        "CRM Analyst",
        "Reviews a company's CRM activity and deals",
        crm,
        ["Read the company's deals and engagements with the CRM tools; summarise trends."],
    )
    support = _agent(
        settings,
        "support-analyst",
        "Support Analyst",
        "Finds support signals in memories",
        memories,
        ["Search memories (namespace 'support' first) for issues, escalations and sentiment about the company."],
    )
    return _team(
        settings,
        "ClientHealthTeam",
        [analyst, support],
        [
            "You get a client health score computed by rules, with the reasons behind it.",
            "Do not change the score; explain it from the evidence and what the members find.",
            "End with three next actions for the account team.",
        ],
    )
