"""Which build answered: the service's version and track (stable or canary), set by the
platform (SERVICE_VERSION, SERVICE_TRACK), on every response and as the `service_info` metric,
so a canary's share and its errors can be told apart from the stable track's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

VERSION_HEADER = b"x-sophia-version"
TRACK_HEADER = b"x-sophia-track"


class AnnounceVersion:
    def __init__(self, app: ASGIApp, version: str, track: str):
        self.app = app
        self.headers = [(VERSION_HEADER, version.encode("latin-1")), (TRACK_HEADER, track.encode("latin-1"))]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_announced(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_announced)


def service_info(registry: CollectorRegistry, service: str, version: str, track: str) -> None:
    Gauge(
        "service_info",
        "1 for the running build: its version and track",
        ("service", "version", "track"),
        registry=registry,
    ).labels(service, version, track).set(1)
