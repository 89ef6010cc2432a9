"""The local stack's upstream stand-ins (sophia_testing.upstreams): seeded, scriptable, and
guarded by the same tokens the fakes check in the tests."""

from __future__ import annotations

import time

import httpx

from sophia_testing import github_fake, hubspot_fake
from sophia_testing.servers import serve
from sophia_testing.upstreams import build_apps


def test_the_stand_ins_serve_seeded_data_and_scripted_replies() -> None:
    apps = build_apps()
    with serve(apps["chat"]) as chat, serve(apps["github"]) as github, serve(apps["hubspot"]) as hubspot:
        # Chat: any key; a scripted reply goes to whichever model is asked next, then echo.
        queued = httpx.post(f"{chat}/_upstream/script", json={"replies": [{"content": "scripted"}]}).json()
        assert queued == {"queued": 1}
        ask = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}
        first = httpx.post(f"{chat}/v1/chat/completions", json=ask, headers={"Authorization": "Bearer any"}).json()
        second = httpx.post(f"{chat}/v1/chat/completions", json=ask).json()
        assert first["choices"][0]["message"]["content"] == "scripted"
        assert second["choices"][0]["message"]["content"] == "echo: hi"
        assert {m["id"] for m in httpx.get(f"{chat}/v1/models").json()["data"]} == {"gpt-4.1-mini", "gpt-4.1"}
        # GitHub: the demo repository, with the fake's token only.
        gh_auth = {"Authorization": f"Bearer {github_fake.TOKEN}"}
        assert httpx.get(f"{github}/repos/sophia-demo/handbook").status_code == 401
        repo = httpx.get(f"{github}/repos/sophia-demo/handbook", headers=gh_auth).json()
        assert repo["full_name"] == "sophia-demo/handbook"
        # HubSpot: the seeded company.
        hs_auth = {"Authorization": f"Bearer {hubspot_fake.TOKEN}"}
        companies = httpx.get(f"{hubspot}/crm/v3/objects/companies", headers=hs_auth).json()["results"]
        assert [c["properties"]["name"] for c in companies] == ["Globex"]


def test_a_stand_in_can_be_made_slow_and_fast_again() -> None:
    """The slow dependency of the end-to-end latency alert test: every answer delayed, then not."""
    apps = build_apps()
    auth = {"Authorization": f"Bearer {hubspot_fake.TOKEN}"}
    with serve(apps["hubspot"]) as hubspot:

        def timed() -> float:
            started = time.perf_counter()
            assert httpx.get(f"{hubspot}/crm/v3/objects/companies", headers=auth).status_code == 200
            return time.perf_counter() - started

        assert timed() < 0.4
        assert httpx.post(f"{hubspot}/_upstream/latency", json={"seconds": 0.5}, headers=auth).json() == {
            "seconds": 0.5
        }
        assert timed() >= 0.5
        assert httpx.post(f"{hubspot}/_upstream/latency", json={"seconds": 0}, headers=auth).status_code == 200
        assert timed() < 0.4
        assert httpx.post(f"{hubspot}/_upstream/latency", json={"seconds": -1}, headers=auth).status_code == 422
        for bad in ({}, {"seconds": "slow"}, {"seconds": 31}, [1]):  # a 422 naming the field, never a 500
            refused = httpx.post(f"{hubspot}/_upstream/latency", json=bad, headers=auth)
            assert refused.status_code == 422, (bad, refused.text)
            assert "seconds" in refused.text or bad == [1], (bad, refused.text)
