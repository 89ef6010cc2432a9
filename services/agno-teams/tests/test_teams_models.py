"""The Agno teams against a fake OpenAI-compatible coordinator returning scripted tool calls;
the tools run for real against mcp-hubspot and mcp-context over MCP."""

from __future__ import annotations

import json

import httpx

from sophia_testing.hubspot_fake import FakeHubSpot
from sophia_testing.openai_chat_fake import FakeChat, Reply

from .teams_data import AS_OF, MODEL_KEY, MODEL_TIMEOUT_SECONDS


def delegate(member: str, task: str) -> Reply:
    return Reply(tool_calls=[("delegate_task_to_member", {"member_id": member, "task": task})])


def tool_results(request: dict) -> str:
    return "\n".join(str(m.get("content")) for m in request["body"]["messages"] if m["role"] == "tool")


def test_client_health_team_reads_support_memories_over_mcp(teams_url: str, fresh_chat: FakeChat) -> None:
    fresh_chat.script(
        "auto",
        delegate("support-analyst", "Find open support issues for Globex"),
        Reply(tool_calls=[("search_memories", {"query": "Globex outage", "namespace": "support"})]),
        Reply(content="Globex had a three-day billing export outage, escalated to the CTO."),
        Reply(content="Globex is critical: silent for 120 days, a lost expansion and an outage."),
    )
    response = httpx.post(
        f"{teams_url}/teams/client-health/companies/502/review",
        params=AS_OF,
        json={"focus": "renewal risk"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["team"] == "ClientHealthTeam" and body["health"]["score"] == 5
    assert body["review"].startswith("Globex is critical")
    assert {
        "member": "support-analyst",
        "tool": "search_memories",
        "args": {"query": "Globex outage", "namespace": "support"},
    } in body["tool_calls"]
    leader, member, member_after_tool, leader_after = fresh_chat.requests
    # The leader got the rule-based score and reasons, and the focus.
    user = next(m["content"] for m in leader["body"]["messages"] if m["role"] == "user")
    assert '"score": 5' in user and "renewal risk" in user and "last engagement 120 days ago" in user
    assert {t["function"]["name"] for t in member["body"]["tools"]} == {"search_memories"}  # reads only
    # The memory really came from mcp-context into the member's next model request.
    assert "three-day outage of the billing export" in tool_results(member_after_tool)
    assert "billing export outage" in tool_results(leader_after)
    assert all(r["headers"]["authorization"] == f"Bearer {MODEL_KEY}" for r in fresh_chat.requests)
    assert all(r["body"]["model"] == "auto" for r in fresh_chat.requests)


def test_sales_team_reads_the_crm_and_memories_then_coaches(
    teams_url: str, fresh_chat: FakeChat, crm: FakeHubSpot
) -> None:
    before = len(crm.calls("GET", "/crm/v3/objects/deals/9002"))
    fresh_chat.script(
        "auto",
        delegate("deal-analyst", "Read deal 9002"),
        Reply(tool_calls=[("get_record", {"object_type": "deals", "object_id": "9002"})]),
        Reply(content="Acme upsell: 4000, appointment scheduled, close date passed."),
        delegate("sales-coach", "Coaching notes for the Acme upsell"),
        Reply(tool_calls=[("search_memories", {"query": "Acme renewal QBR", "namespace": "sales"})]),
        Reply(content="- Book the QBR before sending anything: the CFO signs only after one."),
        Reply(content="Analysis: the upsell slipped 12 days.\nCoaching notes:\n- Book the QBR first."),
    )
    response = httpx.post(f"{teams_url}/teams/sales/deals/9002/analysis", params=AS_OF, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["team"] == "SalesIntelligenceTeam" and body["signals"]["risk"] == "high"
    assert "Coaching notes" in body["analysis"]
    assert [(c["member"], c["tool"]) for c in body["tool_calls"] if c["member"] != "leader"] == [
        ("deal-analyst", "get_record"),
        ("sales-coach", "search_memories"),
    ]
    # The model's get_record went through mcp-hubspot to HubSpot (scoring itself only searches).
    assert len(crm.calls("GET", "/crm/v3/objects/deals/9002")) == before + 1
    analyst_after_tool, coach_after_tool = fresh_chat.requests[2], fresh_chat.requests[5]
    assert json.loads(tool_results(analyst_after_tool))["properties"]["dealname"] == "Acme upsell"
    assert "CFO signs renewals only after a QBR" in tool_results(coach_after_tool)
    analyst_tools = {t["function"]["name"] for t in fresh_chat.requests[1]["body"]["tools"]}
    assert analyst_tools == {"search_crm", "get_record", "list_associations"}


def test_a_failing_coordinator_is_a_502_problem_not_a_stack_trace(teams_url: str, fresh_chat: FakeChat) -> None:
    for outcome, words in (
        (500, "server had an error"),
        (503, "server had an error"),
        (429, "Rate limit"),
        ("timeout", "timed out"),
    ):
        fresh_chat.failures.clear()
        fresh_chat.slow_seconds = MODEL_TIMEOUT_SECONDS + 5  # a "timeout" answers only after the client gave up
        fresh_chat.fail("auto", outcome, outcome)
        response = httpx.post(f"{teams_url}/teams/client-health/companies/501/review", params=AS_OF, timeout=60)
        assert response.status_code == 502, (outcome, response.text)
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["title"] == "Model call failed" and problem["peer"] == "agno-coordinator"
        assert words in problem["detail"], (outcome, problem)
        assert "Traceback" not in response.text
    metrics = httpx.get(f"{teams_url}/metrics").text
    assert 'teams_runs_total{outcome="model_error",team="ClientHealthTeam"} 4.0' in metrics
