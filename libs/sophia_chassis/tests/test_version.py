"""Which build answered: version and track on every response and in /metrics."""

from __future__ import annotations

import httpx

from sophia_chassis import ServiceSettings, create_app
from sophia_testing.servers import serve


def test_every_response_names_the_version_and_track_that_answered() -> None:
    app = create_app(ServiceSettings(service_name="demo", service_version="1.4.0-rc.1", service_track="canary"))
    with serve(app) as url:
        answer = httpx.get(f"{url}/healthz")
        missing = httpx.get(f"{url}/nowhere")
        metrics = httpx.get(f"{url}/metrics").text
    for response in (answer, missing):
        assert response.headers["x-sophia-version"] == "1.4.0-rc.1"
        assert response.headers["x-sophia-track"] == "canary"
    assert 'service_info{service="demo",track="canary",version="1.4.0-rc.1"} 1.0' in metrics
