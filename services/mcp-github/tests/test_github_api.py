"""mcp-github's REST API through a real uvicorn server against the fake GitHub:
pagination by Link, ETag reuse, files, search, commits, pull requests, auth."""

from __future__ import annotations

import httpx
import pytest

from mcp_github.main import Settings, build_app
from sophia_testing.github_fake import TOKEN, FakeGitHub
from sophia_testing.servers import free_port, serve


def settings(github_url: str, **overrides) -> Settings:
    values = dict(
        github_token=TOKEN,
        github_api_url=github_url,
        mcp_context_url=f"http://127.0.0.1:{free_port()}",
        github_backoff_max_seconds=2.0,
    )
    return Settings(**{**values, **overrides})


@pytest.fixture
def api(fake: FakeGitHub, github_url: str):
    app = build_app(settings(github_url))
    with serve(app) as url:
        yield url, app


def test_repositories_of_the_token_an_org_and_a_user_follow_link_pages(fake: FakeGitHub, api) -> None:
    url, _ = api
    for i in range(7):
        fake.add_repo("acme", f"svc-{i}", {"README.md": f"service {i}\n"})
    fake.page_size_cap = 3
    mine = httpx.get(f"{url}/github/repos", params={"limit": 100}).json()["results"]
    org = httpx.get(f"{url}/github/repos", params={"owner": "acme", "limit": 5}).json()["results"]
    user = httpx.get(f"{url}/github/repos", params={"owner": "octocat"}).json()["results"]
    assert len(mine) == 9 and {"acme/billing", "octocat/hello"} <= {r["full_name"] for r in mine}
    assert len(fake.statuses("/user/repos")) == 3  # 3 + 3 + 3 over rel="next"
    assert len(org) == 5 and all(r["full_name"].startswith("acme/") for r in org)
    assert [r["full_name"] for r in user] == ["octocat/hello"] and user[0]["default_branch"] == "main"


def test_commits_pages_are_reused_by_etag_on_the_second_listing(fake: FakeGitHub, api) -> None:
    url, app = api
    repo = fake.repos["acme/billing"]
    for i in range(4):
        repo.commit({**repo.commits[0].files, "CHANGELOG.md": f"v{i}\n".encode()}, f"release {i}", author="ana")
    fake.page_size_cap = 2
    first = httpx.get(f"{url}/github/repos/acme/billing/commits", params={"limit": 10})
    used = fake.used
    second = httpx.get(f"{url}/github/repos/acme/billing/commits", params={"limit": 10})
    assert [c["message"] for c in first.json()["results"]] == [
        "release 3",
        "release 2",
        "release 1",
        "release 0",
        "initial import",
    ]
    assert first.json()["results"][0]["author"] == "ana"
    assert second.json() == first.json()
    assert fake.statuses("/repos/acme/billing/commits") == [200, 200, 200, 304, 304, 304]
    assert fake.used == used  # 304s cost no rate limit
    assert app.state.service.github.not_modified == 3


def test_files_directories_and_missing_paths(api) -> None:
    url, _ = api
    readme = httpx.get(f"{url}/github/repos/acme/billing/contents/README.md")
    nested = httpx.get(f"{url}/github/repos/acme/billing/contents/src/billing/retry.py", params={"ref": "main"})
    directory = httpx.get(f"{url}/github/repos/acme/billing/contents/src")
    binary = httpx.get(f"{url}/github/repos/acme/billing/contents/docs/logo.png")
    missing = httpx.get(f"{url}/github/repos/acme/billing/contents/nope.txt")
    assert readme.json()["text"].startswith("# Billing")
    assert "exponential backoff" in nested.json()["text"]
    assert directory.status_code == 422 and "not a file" in directory.json()["detail"]
    assert binary.status_code == 422 and "binary" in binary.json()["detail"]
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_code_search_pull_requests_and_validation(fake: FakeGitHub, api) -> None:
    url, _ = api
    fake.repos["acme/billing"].pulls = [
        {
            "number": n,
            "title": f"PR {n}",
            "state": "open" if n % 2 else "closed",
            "user": {"login": "ana"},
            "draft": False,
            "merged_at": None,
            "updated_at": f"2026-11-{n:02d}T00:00:00Z",
            "head": {"ref": f"feature-{n}"},
            "base": {"ref": "main"},
            "html_url": f"https://github.com/pr/{n}",
        }
        for n in range(1, 6)
    ]
    hits = httpx.get(f"{url}/github/search/code", params={"q": "backoff", "repo": "acme/billing"}).json()
    everywhere = httpx.get(f"{url}/github/search/code", params={"q": "print"}).json()
    open_prs = httpx.get(f"{url}/github/repos/acme/billing/pulls").json()["results"]
    all_prs = httpx.get(f"{url}/github/repos/acme/billing/pulls", params={"state": "all", "limit": 2}).json()
    bad_state = httpx.get(f"{url}/github/repos/acme/billing/pulls", params={"state": "merged"})
    assert [h["path"] for h in hits["results"]] == ["src/billing/retry.py"]
    assert "q=backoff+repo%3Aacme%2Fbilling" in [p for _, p, _ in fake.requests if p.startswith("/search")][0]
    assert [h["repository"] for h in everywhere["results"]] == ["octocat/hello"]
    assert [p["number"] for p in open_prs] == [5, 3, 1] and open_prs[0]["head"] == "feature-5"
    assert [p["number"] for p in all_prs["results"]] == [5, 4]
    assert bad_state.status_code == 422 and bad_state.json()["title"] == "Invalid request"


def test_token_comes_from_the_secret_file_and_a_bad_one_is_a_clear_problem(github_url, tmp_path, monkeypatch) -> None:
    (tmp_path / "GITHUB_TOKEN").write_text(TOKEN)
    monkeypatch.setenv("SOPHIA_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("GITHUB_API_URL", github_url)
    loaded = Settings.load()
    assert loaded.github_token == TOKEN and loaded.github_api_url == github_url
    with serve(build_app(loaded)) as url:
        assert httpx.get(f"{url}/github/repos/acme/billing/commits").status_code == 200
    with serve(build_app(settings(github_url, github_token="ghp_wrong"))) as url:
        denied = httpx.get(f"{url}/github/repos/acme/billing/commits")
    assert denied.status_code == 502
    assert "GITHUB_TOKEN" in denied.json()["detail"] and "Bad credentials" in denied.json()["detail"]
