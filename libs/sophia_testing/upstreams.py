"""The upstream APIs as one long-running process: the local stack's stand-ins for the internet.

`python -m sophia_testing.upstreams` serves the faithful fakes of this package on three ports
(the local cluster has no route off the machine, and no keys):

- OpenAI-compatible chat on UPSTREAM_CHAT_PORT (8081), for agno-coordinator: any key; the
  coordinator's OpenAI models; replies echo the last user message unless scripted (whichever
  model the coordinator picks takes the next scripted reply);
- GitHub's REST API on UPSTREAM_GITHUB_PORT (8082), for mcp-github: one demo repository,
  `sophia-demo/handbook`;
- HubSpot's CRM API on UPSTREAM_HUBSPOT_PORT (8083), for mcp-hubspot and agno-teams: a
  company, its contact, a deal and engagements.

Each also answers `/_upstream/...` for the end-to-end test: POST /_upstream/script on the
chat port queues replies for any model, GET /_upstream/requests counts what was asked, and
POST /_upstream/latency {"seconds": s} delays every answer of that port by s until set back to 0
(a slow dependency, for the latency alerts); on the GitHub and HubSpot ports with the fake's
token, as every request there. Request logs are trimmed so a pod that runs for days stays small.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from pydantic import BaseModel, Field

from sophia_testing.github_fake import FakeGitHub, build_fake_github
from sophia_testing.hubspot_fake import FakeHubSpot, build_fake_hubspot
from sophia_testing.openai_chat_fake import FakeChat, Reply, build_fake_chat

# The OpenAI models in agno-coordinator's packaged table (agno_coordinator/models.yaml).
CHAT_MODELS = ("gpt-4.1-mini", "gpt-4.1")
KEEP_REQUESTS = 200
PORTS = {"chat": "8081", "github": "8082", "hubspot": "8083"}

HANDBOOK = {
    "README.md": "# Handbook\n\nHow the Sophia demo team works. See docs/ for the details.\n",
    "docs/deploys.md": (
        "# Deploys\n\nWe deploy on weekdays. The deploy freeze starts on Friday at 12:00 UTC and ends "
        "on Monday at 08:00 UTC. Hotfixes need a second reviewer during the freeze.\n"
    ),
    "docs/oncall.md": (
        "# On call\n\nThe on-call engineer answers pages within 15 minutes and hands over on Tuesdays.\n"
    ),
    "src/app.py": 'def greet(name: str) -> str:\n    return f"hello {name}"\n',
}


def seed_github() -> FakeGitHub:
    gh = FakeGitHub()
    gh.orgs.add("sophia-demo")
    gh.add_repo("sophia-demo", "handbook", HANDBOOK)
    return gh


def seed_hubspot() -> FakeHubSpot:
    hs = FakeHubSpot()
    company = hs.add("companies", {"name": "Globex", "domain": "globex.example", "lifecyclestage": "customer"}, "501")
    contact = hs.add("contacts", {"email": "hank@globex.example", "firstname": "Hank", "lastname": "Scorpio"}, "601")
    deal = hs.add("deals", {"dealname": "Globex renewal", "amount": "120000", "dealstage": "contractsent"}, "701")
    hs.associate("companies", company, "contacts", contact)
    hs.associate("companies", company, "deals", deal)
    return hs


def echo(body: dict[str, Any]) -> Reply:
    last = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), {})
    return Reply(content=f"echo: {last.get('content', '')}")


class Latency(BaseModel):
    # Typed at the edge: a missing, non-numeric or out-of-range value is a 422 naming the field.
    seconds: float = Field(ge=0, le=30, allow_inf_nan=False)


def with_admin(app: FastAPI, log: list[Any], queue: list[Reply] | None = None) -> FastAPI:
    delay = {"seconds": 0.0}

    @app.middleware("http")
    async def slow(request: Request, call_next):
        if delay["seconds"] and not request.url.path.startswith("/_upstream/"):
            await asyncio.sleep(delay["seconds"])
        return await call_next(request)

    @app.post("/_upstream/latency")
    async def latency(body: Latency) -> dict[str, float]:
        """{"seconds": 0.5}: every other answer of this API comes that much later; 0 puts it back."""
        delay["seconds"] = body.seconds
        return delay

    @app.get("/_upstream/requests")
    async def requests_seen() -> dict[str, int]:
        return {"requests": len(log)}

    if queue is not None:

        @app.post("/_upstream/script")
        async def script(request: Request) -> dict[str, int]:
            """{"replies": [{"content": "..."}, {"tool_calls": [[name, {args}]]}, ...]}"""
            body = await request.json()
            queue.extend(
                Reply(content=r.get("content"), tool_calls=[(n, a) for n, a in r.get("tool_calls") or []])
                for r in body["replies"]
            )
            return {"queued": len(queue)}

    return app


async def trim(*logs: list[Any]) -> None:
    while True:
        await asyncio.sleep(60)
        for log in logs:
            del log[:-KEEP_REQUESTS]


def build_apps() -> dict[str, FastAPI]:
    """The three fakes, seeded, each with its admin routes: {"chat": ..., "github": ..., "hubspot": ...}."""
    queue: list[Reply] = []
    chat = FakeChat(api_key=None, models=CHAT_MODELS, responder=lambda body: queue.pop(0) if queue else echo(body))
    gh, hs = seed_github(), seed_hubspot()
    apps = {
        "chat": with_admin(build_fake_chat(chat), chat.requests, queue),
        "github": with_admin(build_fake_github(gh), gh.requests),
        "hubspot": with_admin(build_fake_hubspot(hs), hs.requests),
    }
    for app in apps.values():
        app.state.logs = (chat.requests, gh.requests, gh.targets, hs.requests, hs.targets)
    return apps


async def main() -> None:
    apps = build_apps()
    ports = {name: int(os.environ.get(f"UPSTREAM_{name.upper()}_PORT", default)) for name, default in PORTS.items()}
    servers = [
        uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=ports[name], log_level="warning"))  # noqa: S104
        for name, app in apps.items()
    ]
    trimmer = asyncio.create_task(trim(*apps["chat"].state.logs))
    try:
        await asyncio.gather(*(s.serve() for s in servers))
    finally:
        trimmer.cancel()


if __name__ == "__main__":
    asyncio.run(main())
