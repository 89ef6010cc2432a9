"""Backups and restores through components/sophia_backup.py (the file the backup CronJobs run),
against moto's S3 server with signatures and IAM checked (`reset-auth`), real redis-server, and
mcp-context's own embedded Qdrant: memories stored, backed up, wiped, restored, and the same
searches return the same results."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis
from fastapi import FastAPI, File, Header, HTTPException, Query, UploadFile
from fastapi.responses import Response

from components import sophia_backup
from sophia_testing.servers import free_port, serve

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "components" / "sophia_backup.py"
BUCKET = "sophia-backups"
WRITER_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
        }
    ],
}


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """moto's S3 server with one bucket and a writer limited to it; from then on every request must
    be signed by a known key and allowed by its policy (as on AWS)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto's backends are per process, shared by every ThreadedMotoServer: start from nothing.
    httpx.post(f"{url}/moto-api/reset").raise_for_status()
    admin = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "x", "aws_secret_access_key": "x"}
    try:
        boto3.client("s3", **admin).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="backup-writer")
        iam.put_user_policy(UserName="backup-writer", PolicyName="backups", PolicyDocument=json.dumps(WRITER_POLICY))
        key = iam.create_access_key(UserName="backup-writer")["AccessKey"]
        httpx.post(f"{url}/moto-api/reset-auth", content=b"0").raise_for_status()
        yield {
            "BACKUP_ENDPOINT": url,
            "BACKUP_BUCKET": BUCKET,
            "BACKUP_REGION": "us-east-1",
            "BACKUP_ACCESS_KEY_ID": key["AccessKeyId"],
            "BACKUP_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
    finally:
        httpx.post(f"{url}/moto-api/reset-auth", content=b"inf")
        server.stop()


def run(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *command],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_bad_signature_is_refused(s3: dict[str, str], tmp_path: Path) -> None:
    """The signature is checked by the server: our SigV4 is what makes the other tests pass."""
    client = sophia_backup.S3(
        BUCKET, "us-east-1", s3["BACKUP_ACCESS_KEY_ID"], "not-the-secret", endpoint=s3["BACKUP_ENDPOINT"]
    )
    with pytest.raises(sophia_backup.BackupError, match="403"):
        client.put_bytes("probe", b"x")
    good = sophia_backup.S3(
        BUCKET, "us-east-1", s3["BACKUP_ACCESS_KEY_ID"], s3["BACKUP_SECRET_ACCESS_KEY"], endpoint=s3["BACKUP_ENDPOINT"]
    )
    good.put_bytes("probe/a b+c.txt", b"x")  # a key that needs encoding
    assert good.list("probe/") == ["probe/a b+c.txt"]
    good.delete("probe/a b+c.txt")


MEMORIES = [
    {"text": "The customer prefers to be contacted by email on Mondays.", "namespace": "crm", "user": "ana"},
    {"text": "A man is eating a piece of bread at the bakery.", "namespace": "notes", "user": "ana"},
    {"text": "The deployment pipeline failed because the Docker registry was down.", "namespace": "ops"},
    {"text": "Quarterly revenue grew by twelve percent.", "namespace": "crm", "user": "bo"},
] + [{"text": f"Filler memory number {i} about topic {i % 7}.", "namespace": "bulk"} for i in range(16)]
QUERIES = [
    {"query": "what did the man eat?", "top_k": 3},
    {"query": "how should we reach the client", "namespace": "crm"},
    {"query": "build broke", "top_k": 5},
    {"query": "topic 3", "namespace": "bulk", "top_k": 10},
]


def searches(url: str) -> list[list[tuple[str, str, float]]]:
    out = []
    for q in QUERIES:
        response = httpx.post(f"{url}/memories/search", json=q, timeout=60)
        assert response.status_code == 200, response.text
        out.append([(r["id"], r["text"], r["score"]) for r in response.json()["results"]])
    return out


def test_memories_come_back_identical_after_backup_wipe_and_restore(s3: dict[str, str], tmp_path: Path) -> None:
    from mcp_context.main import Settings, build_app

    path = tmp_path / "qdrant"
    settings = Settings(embedding_provider="local", qdrant_path=str(path))
    with serve(build_app(settings)) as url:
        ids = httpx.post(f"{url}/memories/batch", json=MEMORIES, timeout=120).json()["ids"]
        before = searches(url)
    assert len(ids) == len(MEMORIES) and all(before)

    env = {**s3, "BACKUP_PREFIX": "test/", "QDRANT_PATH": str(path)}
    made = run(["backup", "qdrant"], env)
    assert [f["name"] for f in made["files"]] == ["qdrant-embedded.tar.gz"]
    shutil.rmtree(path)  # the disk is gone
    with serve(build_app(settings)) as url:
        assert all(not r for r in searches(url)), "wiped: nothing is found"
    shutil.rmtree(path)  # what that empty start created; a restore refuses a non-empty directory

    restored = run(["restore", "qdrant"], env)
    assert restored["restored"] == made["stamp"]
    with serve(build_app(settings)) as url:
        assert searches(url) == before


@pytest.fixture
def redis_at(tmp_path: Path):
    """Start redis-server on a data directory with an ACL: an app user and a backup user that may
    only take the RDB."""
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default off\n"
        "user app on >app-password ~* &* +@all\n"
        "user backup on >backup-password resetkeys -@all +sync +replconf +ping\n"
    )
    procs = []

    def start(data: Path) -> redis.Redis:
        port = free_port()
        data.mkdir(parents=True, exist_ok=True)
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
                + ["--dbfilename", "dump.rdb", "--aclfile", str(acl), "--appendonly", "no", "--save", ""],
                stdout=subprocess.DEVNULL,
            )
        )
        client = redis.Redis(
            host="127.0.0.1", port=port, username="app", password="app-password", decode_responses=True
        )
        for _ in range(250):
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_redis_rdb_is_taken_without_stopping_redis_and_restores(s3: dict[str, str], tmp_path: Path, redis_at) -> None:
    client = redis_at(tmp_path / "data")
    client.set("embedding:one", "0.1,0.2")
    client.hset("task:7", mapping={"state": "succeeded", "attempts": "2"})
    client.xadd("events", {"kind": "started"})
    client.xadd("events", {"kind": "answer"})
    port = client.connection_pool.connection_kwargs["port"]
    backup_user = redis.Redis(host="127.0.0.1", port=port, username="backup", password="backup-password")
    with pytest.raises(redis.exceptions.NoPermissionError):
        backup_user.get("embedding:one")  # the backup user reads nothing through commands

    env = {**s3, "BACKUP_PREFIX": "test/", "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port)}
    env |= {"REDIS_USERNAME": "backup", "REDIS_PASSWORD": "backup-password"}
    made = run(["backup", "redis"], env)
    assert made["files"][0]["name"] == "dump.rdb" and made["files"][0]["size"] > 0
    assert client.get("embedding:one") == "0.1,0.2"  # Redis kept serving

    client.shutdown(nosave=True)
    shutil.rmtree(tmp_path / "data")
    run(["restore", "redis", "--to-dir", str(tmp_path / "data")], env)
    back = redis_at(tmp_path / "data")
    assert back.get("embedding:one") == "0.1,0.2"
    assert back.hgetall("task:7") == {"state": "succeeded", "attempts": "2"}
    assert [e[1]["kind"] for e in back.xrange("events")] == ["started", "answer"]

    back_port = str(back.connection_pool.connection_kwargs["port"])
    bad = run_fails(["backup", "redis"], {**env, "REDIS_PORT": back_port, "REDIS_PASSWORD": "wrong"})
    assert "AUTH as backup" in bad


def run_fails(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, str(SCRIPT), *command], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    return result.stderr


def test_retention_keeps_the_newest_and_incomplete_backups_are_never_restored(
    s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "sophia-memories").mkdir()
    (tmp_path / "q" / "sophia-memories" / "segment").write_bytes(b"data")
    for key, value in {**s3, "BACKUP_PREFIX": "retention/", "QDRANT_PATH": str(tmp_path / "q")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BACKUP_RETENTION_DAYS", "14")
    now = dt.datetime(2026, 12, 3, 3, 17, tzinfo=dt.UTC)
    s3c = sophia_backup.S3.from_environment()
    sets = sophia_backup.Sets(s3c, "retention/", "qdrant")

    first = sophia_backup.backup("qdrant", now=now - dt.timedelta(days=30))
    assert sets.complete() == [first["stamp"]]  # older than the retention, but the only one: kept
    second = sophia_backup.backup("qdrant", now=now - dt.timedelta(days=10))
    assert second["pruned"] == [first["stamp"]]
    # An interrupted run: files but no manifest.
    s3c.put_bytes("retention/qdrant/20261202T000000Z/qdrant-embedded.tar.gz", b"partial")
    assert sets.pick(None) == second["stamp"]
    third = sophia_backup.backup("qdrant", now=now)
    assert third["pruned"] == ["20261202T000000Z"]  # incomplete and a day old; `second` is 10 days old
    assert sets.complete() == [second["stamp"], third["stamp"]]
    with pytest.raises(sophia_backup.BackupError, match="no complete backup 20261202T000000Z"):
        sets.pick("20261202T000000Z")


def test_prod_backs_up_qdrant_and_redis_on_a_schedule(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from components import redis as redis_component
    from infra.render import REDACTED

    from .conftest import find

    objects = rendered["prod"]
    for store, kind in (("qdrant", "qdrant"), ("redis", "redis")):
        cron = find(objects, "CronJob", f"{store}-backup")
        assert cron["spec"]["schedule"] == "17 3 * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"][-2:] == ["backup", kind]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["BACKUP_BUCKET"] == "sophia-backups-111122223333" and env["BACKUP_PREFIX"] == "prod/"
        assert env["BACKUP_RETENTION_DAYS"] == "30"
        script = find(objects, "ConfigMap", f"{store}-backup")["data"]["sophia_backup.py"]
        assert script == SCRIPT.read_text()  # the tested file is what runs
        keys = find(objects, "Secret", f"{store}-backup")
        assert set(keys.get("stringData") or keys.get("data")) >= {"BACKUP_ACCESS_KEY_ID", "BACKUP_SECRET_ACCESS_KEY"}
        # The store admits its backup job, and the job reaches only the store, DNS and HTTPS out.
        policy = find(objects, "NetworkPolicy", store)
        sources = [p.get("podSelector", {}).get("matchLabels") for r in policy["spec"]["ingress"] for p in r["from"]]
        assert {"app.kubernetes.io/name": f"{store}-backup"} in sources
        egress = find(objects, "NetworkPolicy", f"{store}-backup")["spec"]["egress"]
        assert len(egress) == 3 and not find(objects, "NetworkPolicy", f"{store}-backup")["spec"]["ingress"]
    qdrant_env = {
        e["name"]: e["value"]
        for e in find(objects, "CronJob", "qdrant-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert len(qdrant_env["QDRANT_URLS"].split()) == 3  # every replica's shards
    acl = find(objects, "Secret", "redis-acl")
    assert REDACTED in str(acl)  # values never rendered
    assert redis_component.BACKUP_PERMISSIONS == "resetkeys -@all +sync +replconf +ping"
    assert not [o for o in rendered["dev"] if o["kind"] == "CronJob"], "no sophia:backup, no backup jobs"


def fake_qdrant_node(node: int, uploads: dict[str, bytes]):
    """The part of Qdrant's REST API the backup job uses (collections, snapshot create, download,
    delete, upload with priority), as documented; each node's snapshot bytes differ."""
    app = FastAPI()
    made: dict[str, bytes] = {}

    def auth(key: str | None) -> None:
        if key != "qdrant-key":
            raise HTTPException(401, "bad api key")

    @app.get("/collections")
    def collections(api_key: str | None = Header(None)):
        auth(api_key)
        return {"result": {"collections": [{"name": "sophia-memories"}, {"name": "notes"}]}, "status": "ok"}

    @app.post("/collections/{c}/snapshots")
    def create(c: str, wait: bool = Query(False), api_key: str | None = Header(None)):
        auth(api_key)
        assert wait
        name = f"{c}-{node}.snapshot"
        made[name] = f"snapshot of {c} on node {node}".encode() * 1000
        return {"result": {"name": name, "size": len(made[name])}, "status": "ok"}

    @app.get("/collections/{c}/snapshots/{name}")
    def download(c: str, name: str, api_key: str | None = Header(None)):
        auth(api_key)
        return Response(made[name], media_type="application/octet-stream")

    @app.delete("/collections/{c}/snapshots/{name}")
    def delete(c: str, name: str, api_key: str | None = Header(None)):
        auth(api_key)
        del made[name]
        return {"result": True, "status": "ok"}

    @app.post("/collections/{c}/snapshots/upload")
    async def upload(
        c: str, priority: str = Query(...), snapshot: UploadFile = File(...), api_key: str | None = Header(None)
    ):
        auth(api_key)
        assert priority == "snapshot"
        uploads[f"node{node}/{c}"] = await snapshot.read()
        return {"result": True, "status": "ok"}

    return app, made


def test_server_snapshots_of_every_replica_go_up_and_come_back_to_their_node(s3: dict[str, str]) -> None:
    uploads: dict[str, bytes] = {}
    (a, made_a), (b, made_b) = fake_qdrant_node(0, uploads), fake_qdrant_node(1, uploads)
    with serve(a) as url_a, serve(b) as url_b:
        env = {**s3, "BACKUP_PREFIX": "server/", "QDRANT_URLS": f"{url_a} {url_b}", "QDRANT_API_KEY": "qdrant-key"}
        made = run(["backup", "qdrant"], env)
        names = sorted(f["name"] for f in made["files"])
        assert names == [f"node{n}/{c}.snapshot" for n in (0, 1) for c in ("notes", "sophia-memories")]
        assert not made_a and not made_b, "server-side snapshots are deleted once copied"
        run(["restore", "qdrant"], env)
    assert uploads == {
        f"node{n}/{c}": f"snapshot of {c} on node {n}".encode() * 1000
        for n in (0, 1)
        for c in ("notes", "sophia-memories")
    }
