"""The HTTP server every service runs: uvicorn's httptools protocol, refusing overload below the app.

Past capacity most of what a service does is refuse (at twice its capacity, one request in two),
and a refusal through uvicorn and the app (a scope, a task, the ASGI middleware, the answer's headers
checked and written in two pieces) cost mcp-context a fifth to a third of a served search
(docs/performance-mcp-context.md), which capped what it could serve. This protocol asks the app's
`Door` (sophia_chassis.admission) when a limited request's headers are read; while the event loop's
turn is over its bound it reads and drops the body, writes the prebuilt 503 + Retry-After in one
piece, counts the shed and keeps the connection, without entering the app. Anything it does not
refuse (the door open, another path, a pipelined request behind one still running, HEAD, an
`Expect: 100-continue`) goes to uvicorn's own handling, and the app's door still judges it. It
refuses before anything in the app, mcp-context's shard hand-over gate included (which otherwise
forwards a request before the app's door sees it): a process whose loop is over its bound would not
forward it promptly either. uvicorn's access log does not see these answers; requests_shed_total
counts them (`where="server"`).

The app hands its door over in the lifespan state (create_app does: `DOOR_STATE`); an app without
one, or run by another server, is served as uvicorn's httptools protocol serves it.

Run with `uvicorn --http sophia_chassis.server:HttpProtocol` (`HTTP_PROTOCOL`; services/Dockerfile)."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from sophia_chassis.admission import Door

HTTP_PROTOCOL = "sophia_chassis.server:HttpProtocol"  # uvicorn's --http
DOOR_STATE = "sophia_chassis.door"  # the lifespan state's key for the app's Door


class HttpProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._door: Door | None = self.app_state.get(DOOR_STATE)
        self._refusing = False

    def on_headers_complete(self) -> None:
        door = self._door
        if (
            door is not None
            and door.closed_to(self.url.partition(b"?")[0])
            and (self.cycle is None or self.cycle.response_complete)  # else the answer would overtake one
            and not self.expect_100_continue
            and not self.parser.should_upgrade()
            and self.parser.get_method() != b"HEAD"
        ):
            self._refusing = True
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refusing:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refusing:
            super().on_message_complete()
            return
        self._refusing = False
        door = self._door
        assert door is not None
        keep_alive = self.parser.should_keep_alive() and self.parser.get_http_version() != "1.0"
        door.count("server")
        self.transport.write(_answer(door, self.server_state.default_headers, keep_alive))
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()  # as after any answer: counted, reading resumed, keep-alive armed


# Answers for the current default headers (uvicorn replaces that list, Date and Server, once a second).
_answers: dict[tuple[Door, bool], bytes] = {}
_answers_for: list[object] = [None]


def _answer(door: Door, default_headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    """The door's answer as bytes, with the server's default headers: built once a second."""
    if _answers_for[0] is not default_headers:
        _answers.clear()
        _answers_for[0] = default_headers
    answer = _answers.get((door, keep_alive))
    if answer is None:
        close = () if keep_alive else ((b"connection", b"close"),)
        lines = [b"%s: %s\r\n" % header for header in (*default_headers, *door.headers, *close)]
        answer = _answers[(door, keep_alive)] = b"".join((STATUS_LINE[door.status], *lines, b"\r\n", door.body))
    return answer
