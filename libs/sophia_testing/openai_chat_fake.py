"""A fake OpenAI-compatible chat server (a real FastAPI app, served with uvicorn on loopback).

It speaks the paths and shapes model providers and agno-coordinator speak:
`POST /v1/chat/completions` (non-streaming and `stream: true` SSE chunks ending in
`data: [DONE]`), `GET /v1/models`, bearer auth (401 `invalid_api_key`), `usage` token
counts, `tool_calls` with JSON-string arguments and `finish_reason: tool_calls`.

Replies are scripted: a queue of `Reply`s per model (or one `responder` that sees the
request), and failures are injected per model: an HTTP status (429 carries Retry-After),
or "timeout" (the answer is delayed by `slow_seconds`). Every request is recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass
class Reply:
    content: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (function name, arguments)


Responder = Callable[[dict[str, Any]], Reply]


@dataclass
class FakeChat:
    api_key: str | None = "sk-fake"  # None accepts any key
    models: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o")
    scripts: dict[str, list[Reply]] = field(default_factory=dict)  # per model, consumed in order
    responder: Responder | None = None  # used when a model has no scripted reply left
    failures: dict[str, list[int | str]] = field(default_factory=dict)  # per model: 500, 429, "timeout", ...
    retry_after_seconds: int = 1
    slow_seconds: float = 5.0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def script(self, model: str, *replies: Reply) -> None:
        self.scripts.setdefault(model, []).extend(replies)

    def fail(self, model: str, *outcomes: int | str) -> None:
        self.failures.setdefault(model, []).extend(outcomes)

    def reply_for(self, body: dict[str, Any]) -> Reply:
        queue = self.scripts.get(body["model"]) or []
        if queue:
            return queue.pop(0)
        if self.responder:
            return self.responder(body)
        last = next((m for m in reversed(body["messages"]) if m.get("role") == "user"), {})
        return Reply(content=f"echo: {last.get('content', '')}")


def count_tokens(text: str) -> int:
    # Roughly OpenAI's ratio (4 characters a token); exactness is not what tests check.
    return max(1, len(text) // 4)


def completion(model: str, reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for name, args in reply.tool_calls
        ]
    prompt = count_tokens(json.dumps(body["messages"]))
    output = count_tokens(json.dumps(message))
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output},
    }


def chunks(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The same completion as OpenAI streams it: a role delta, content/tool-call deltas, a finish chunk."""
    base = {k: result[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    message, finish = result["choices"][0]["message"], result["choices"][0]["finish_reason"]
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    for word in (message["content"] or "").split(" ") if message["content"] else []:
        deltas.append({"content": word + " "})
    for i, call in enumerate(message.get("tool_calls", [])):
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                ]
            }
        )
        deltas.append({"tool_calls": [{"index": i, "function": {"arguments": call["function"]["arguments"]}}]})
    out = [base | {"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    out.append(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": result["usage"]})
    return out


def build_fake_chat(fake: FakeChat) -> FastAPI:
    app = FastAPI()

    def unauthorized(request: Request) -> JSONResponse | None:
        if fake.api_key is None or request.headers.get("authorization") == f"Bearer {fake.api_key}":
            return None
        return JSONResponse(
            {
                "error": {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
            status_code=401,
        )

    @app.get("/v1/models")
    async def models(request: Request):
        return unauthorized(request) or {
            "object": "list",
            "data": [{"id": m, "object": "model", "owned_by": "fake"} for m in fake.models],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        fake.requests.append({"body": body, "headers": dict(request.headers)})
        if denied := unauthorized(request):
            return denied
        model = body.get("model")
        if model not in fake.models:
            return JSONResponse(
                {
                    "error": {
                        "message": f"The model `{model}` does not exist",
                        "type": "invalid_request_error",
                        "code": "model_not_found",
                    }
                },
                status_code=404,
            )
        pending = fake.failures.get(model) or []
        if pending:
            outcome = pending.pop(0)
            if outcome == "timeout":
                await asyncio.sleep(fake.slow_seconds)
            elif outcome == 429:
                return JSONResponse(
                    {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
                    status_code=429,
                    headers={"Retry-After": str(fake.retry_after_seconds)},
                )
            else:
                return JSONResponse(
                    {"error": {"message": "The server had an error", "type": "server_error"}}, status_code=int(outcome)
                )
        result = completion(model, fake.reply_for(body), body)
        if not body.get("stream"):
            return result

        async def sse():
            for chunk in chunks(result):
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")

    return app
