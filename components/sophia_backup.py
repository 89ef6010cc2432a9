"""Backups of the platform's data stores to S3-compatible object storage, and their restore.

Standard library only: the backup CronJobs (components/backup.py) run this very file, mounted
from a ConfigMap, in the upstream python image; `make backup` / `make restore` run it against
the `make dev` stores; tests/program/test_backups.py runs it against moto's S3 server.

    python sophia_backup.py backup  qdrant|redis
    python sophia_backup.py restore qdrant [--at STAMP]
    python sophia_backup.py restore redis --to-dir DIR [--at STAMP]
    python sophia_backup.py list    qdrant|redis

Where from (environment):
  qdrant  QDRANT_URLS (space-separated, one per replica: each node's snapshot of every collection,
          through Qdrant's snapshot API) and QDRANT_API_KEY; or QDRANT_PATH, an embedded (Qdrant
          Edge) store's directory, archived whole (its service stopped: `make dev` is not running).
  redis   REDIS_HOST, REDIS_PORT, REDIS_USERNAME, REDIS_PASSWORD: the RDB, taken over Redis's
          replication protocol (what `redis-cli --rdb` does), so the backup needs no access to
          Redis's volume and Redis does not stop. Restore writes dump.rdb into the data directory
          of a stopped Redis (docs/secrets.md has the cluster procedure).
Where to: BACKUP_BUCKET, BACKUP_PREFIX, BACKUP_REGION, BACKUP_ENDPOINT (unset: AWS S3),
  BACKUP_RETENTION_DAYS, and the keys BACKUP_ACCESS_KEY_ID / BACKUP_SECRET_ACCESS_KEY (the
  environment, or files of those names in BACKUP_SECRETS_DIR). A secret value may also be read
  from a file: QDRANT_API_KEY_FILE, REDIS_PASSWORD_FILE.

Layout: <prefix><store>/<YYYYmmddTHHMMSSZ>/<files>, then manifest.json (each file's size and
SHA-256), written last: a backup without a manifest is incomplete and is never restored or counted.
Retention deletes backups older than BACKUP_RETENTION_DAYS, but never the newest complete one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import io
import json
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit

STAMP = "%Y%m%dT%H%M%SZ"
MANIFEST = "manifest.json"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
CHUNK = 1 << 20


class BackupError(RuntimeError):
    pass


def setting(name: str, default: str | None = None, required: bool = False) -> str | None:
    value = os.environ.get(name)
    if value is None and os.environ.get(f"{name}_FILE"):
        value = Path(os.environ[f"{name}_FILE"]).read_text().strip()
    if (
        value is None
        and os.environ.get("BACKUP_SECRETS_DIR")
        and (Path(os.environ["BACKUP_SECRETS_DIR"]) / name).is_file()
    ):
        value = (Path(os.environ["BACKUP_SECRETS_DIR"]) / name).read_text().strip()
    if value is None:
        value = default
    if required and not value:
        raise BackupError(f"{name} is not set")
    return value


# ---------------------------------------------------------------------------------------------
# S3 with AWS Signature Version 4 (path-style requests with an endpoint, virtual-hosted without).


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_headers(
    method: str,
    url: str,
    payload_sha256: str,
    region: str,
    access_key: str,
    secret_key: str,
    now: dt.datetime,
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    """The request's headers with x-amz-date, x-amz-content-sha256 and the Authorization header."""
    parts = urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    signed = {k.lower(): str(v).strip() for k, v in (headers or {}).items()}
    signed |= {"host": parts.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256}
    query = []
    for pair in filter(None, parts.query.split("&")):
        k, _, v = pair.partition("=")
        query.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            "&".join(f"{k}={v}" for k, v in sorted(query)),
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), amz_date[:8]), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return {
        **(headers or {}),
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_sha256,
        "Authorization": authorization,
    }


class S3:
    def __init__(self, bucket: str, region: str, access_key: str, secret_key: str, endpoint: str | None = None):
        self.bucket, self.region, self.access_key, self.secret_key = bucket, region, access_key, secret_key
        self.base = f"{endpoint.rstrip('/')}/{bucket}" if endpoint else f"https://{bucket}.s3.{region}.amazonaws.com"

    @classmethod
    def from_environment(cls) -> S3:
        return cls(
            bucket=setting("BACKUP_BUCKET", required=True),
            region=setting("BACKUP_REGION", "us-east-1"),
            access_key=setting("BACKUP_ACCESS_KEY_ID", required=True),
            secret_key=setting("BACKUP_SECRET_ACCESS_KEY", required=True),
            endpoint=setting("BACKUP_ENDPOINT") or None,
        )

    def _request(
        self,
        method: str,
        key: str = "",
        query: str = "",
        body: IO[bytes] | bytes | None = None,
        sha: str = EMPTY_SHA256,
        size: int = 0,
    ) -> urllib.request.Request:
        url = f"{self.base}/{quote(key, safe='/-_.~')}" + (f"?{query}" if query else "")
        # urllib would send form-encoded otherwise, and a server would parse the body as a form.
        extra = {"Content-Length": str(size), "Content-Type": "application/octet-stream"} if body is not None else {}
        headers = sigv4_headers(
            method, url, sha, self.region, self.access_key, self.secret_key, dt.datetime.now(dt.UTC), extra
        )
        return urllib.request.Request(url, data=body, method=method, headers=headers)

    def _open(self, request: urllib.request.Request, timeout: float = 300):
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            raise BackupError(
                f"S3 {request.get_method()} {request.full_url}: {exc.code} {exc.read()[:300]!r}"
            ) from None

    def put_file(self, key: str, path: Path) -> dict[str, Any]:
        digest, size = file_sha256(path), path.stat().st_size
        with path.open("rb") as f, self._open(self._request("PUT", key, body=f, sha=digest, size=size)):
            pass
        return {"name": key.rsplit("/", 1)[-1], "size": size, "sha256": digest}

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._open(self._request("PUT", key, body=data, sha=hashlib.sha256(data).hexdigest(), size=len(data))):
            pass

    def get_to(self, key: str, path: Path) -> None:
        with self._open(self._request("GET", key)) as response, path.open("wb") as out:
            shutil.copyfileobj(response, out, CHUNK)

    def get_bytes(self, key: str) -> bytes:
        with self._open(self._request("GET", key)) as response:
            return response.read()

    def delete(self, key: str) -> None:
        with self._open(self._request("DELETE", key)):
            pass

    def list(self, prefix: str) -> list[str]:
        keys, token = [], None
        while True:
            query = "list-type=2&prefix=" + quote(prefix, safe="-_.~")
            if token:
                query += "&continuation-token=" + quote(token, safe="-_.~")
            with self._open(self._request("GET", query=query)) as response:
                root = ET.fromstring(response.read())
            ns = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
            keys += [c.findtext(f"{ns}Key") for c in root.findall(f"{ns}Contents")]
            if root.findtext(f"{ns}IsTruncated") != "true":
                return keys
            token = root.findtext(f"{ns}NextContinuationToken")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Backup sets: <prefix><store>/<stamp>/...


class Sets:
    def __init__(self, s3: S3, prefix: str, store: str):
        self.s3, self.root = s3, f"{prefix}{store}/"

    def complete(self) -> list[str]:
        """Stamps of the backups that have a manifest, oldest first."""
        return sorted(k[len(self.root) :].split("/")[0] for k in self.s3.list(self.root) if k.endswith(f"/{MANIFEST}"))

    def manifest(self, stamp: str) -> dict[str, Any]:
        return json.loads(self.s3.get_bytes(f"{self.root}{stamp}/{MANIFEST}"))

    def pick(self, at: str | None) -> str:
        stamps = self.complete()
        if not stamps:
            raise BackupError(f"no complete backup under {self.root}")
        if at is None:
            return stamps[-1]
        if at not in stamps:
            raise BackupError(f"no complete backup {at} under {self.root} (there are: {', '.join(stamps)})")
        return at

    def fetch(self, stamp: str, name: str, into: Path, manifest: dict[str, Any]) -> Path:
        entry = next((f for f in manifest["files"] if f["name"] == name), None)
        if entry is None:
            raise BackupError(f"{name} is not in backup {stamp}")
        path = into / name.replace("/", "_")
        self.s3.get_to(f"{self.root}{stamp}/{name}", path)
        if file_sha256(path) != entry["sha256"]:
            raise BackupError(f"{name} of backup {stamp} does not match its manifest's SHA-256")
        return path

    def prune(self, retention_days: int, now: dt.datetime) -> list[str]:
        """Delete backups older than the retention, never the newest complete one; incomplete ones
        (no manifest) older than a day go too."""
        keys = self.s3.list(self.root)
        complete = set(self.complete())
        newest = max(complete, default=None)
        cutoff = now - dt.timedelta(days=retention_days)
        removed = []
        for stamp in sorted({k[len(self.root) :].split("/")[0] for k in keys}):
            try:
                taken = dt.datetime.strptime(stamp, STAMP).replace(tzinfo=dt.UTC)
            except ValueError:
                continue  # not ours
            old = taken < cutoff if stamp in complete else taken < now - dt.timedelta(days=1)
            if old and stamp != newest:
                for k in keys:
                    if k.startswith(f"{self.root}{stamp}/"):
                        self.s3.delete(k)
                removed.append(stamp)
        return removed


def write_set(sets: Sets, stamp: str, files: list[tuple[str, Path]], meta: dict[str, Any]) -> dict[str, Any]:
    entries = [{**sets.s3.put_file(f"{sets.root}{stamp}/{name}", path), "name": name} for name, path in files]
    manifest = {**meta, "created": stamp, "files": entries}
    sets.s3.put_bytes(f"{sets.root}{stamp}/{MANIFEST}", json.dumps(manifest, indent=2).encode())
    return manifest


# ---------------------------------------------------------------------------------------------
# Qdrant: snapshots through the REST API (a server), or the embedded store's directory.


def _qdrant(
    method: str, url: str, api_key: str | None, body: IO[bytes] | bytes | None = None, headers: dict | None = None
):
    request = urllib.request.Request(url, data=body, method=method, headers={**(headers or {})})
    if api_key:
        request.add_header("api-key", api_key)
    try:
        return urllib.request.urlopen(request, timeout=3600)
    except urllib.error.HTTPError as exc:
        raise BackupError(f"Qdrant {method} {url}: {exc.code} {exc.read()[:300]!r}") from None


def _qdrant_json(method: str, url: str, api_key: str | None) -> Any:
    with _qdrant(method, url, api_key) as response:
        return json.loads(response.read())["result"]


def qdrant_server_backup(urls: list[str], api_key: str | None, work: Path) -> tuple[list[tuple[str, Path]], dict]:
    """Each node's snapshot of each collection (a distributed collection's shards live on their
    nodes, so every replica is snapshotted); the server-side snapshot is deleted once copied."""
    files, collections = [], set()
    for node, url in enumerate(urls):
        url = url.rstrip("/")
        for c in _qdrant_json("GET", f"{url}/collections", api_key)["collections"]:
            name = c["name"]
            collections.add(name)
            snap = _qdrant_json("POST", f"{url}/collections/{quote(name)}/snapshots?wait=true", api_key)["name"]
            local = work / f"node{node}-{name}.snapshot"
            with (
                _qdrant("GET", f"{url}/collections/{quote(name)}/snapshots/{quote(snap)}", api_key) as r,
                local.open("wb") as out,
            ):
                shutil.copyfileobj(r, out, CHUNK)
            _qdrant("DELETE", f"{url}/collections/{quote(name)}/snapshots/{quote(snap)}?wait=true", api_key).close()
            files.append((f"node{node}/{name}.snapshot", local))
    return files, {"source": "server", "nodes": len(urls), "collections": sorted(collections)}


class _Multipart(io.RawIOBase):
    """A multipart/form-data body with one file field, read in chunks (snapshots can be large)."""

    def __init__(self, field: str, path: Path):
        self.boundary = uuid.uuid4().hex
        head = (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.length = len(head) + path.stat().st_size + len(tail)
        self._parts: Iterator[bytes] = self._chunks(head, path, tail)
        self._buffer = b""

    @staticmethod
    def _chunks(head: bytes, path: Path, tail: bytes) -> Iterator[bytes]:
        yield head
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
        yield tail

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._parts, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def qdrant_server_restore(urls: list[str], api_key: str | None, files: dict[str, Path], manifest: dict) -> None:
    """Each node's snapshot uploaded back to that node, with priority=snapshot (its data wins)."""
    if manifest.get("nodes", 1) != len(urls):
        raise BackupError(f"the backup has {manifest.get('nodes')} node(s), QDRANT_URLS names {len(urls)}")
    for name, path in files.items():
        node, _, file = name.partition("/")
        collection = file.removesuffix(".snapshot")
        url = urls[int(node.removeprefix("node"))].rstrip("/")
        body = _Multipart("snapshot", path)
        headers = {"Content-Type": f"multipart/form-data; boundary={body.boundary}", "Content-Length": str(body.length)}
        target = f"{url}/collections/{quote(collection)}/snapshots/upload?priority=snapshot&wait=true"
        _qdrant("POST", target, api_key, body=body, headers=headers).close()


def qdrant_embedded_backup(path: Path, work: Path) -> tuple[list[tuple[str, Path]], dict]:
    if not path.is_dir():
        raise BackupError(f"QDRANT_PATH {path} is not a directory")
    archive = work / "qdrant-embedded.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(path.iterdir()):
            tar.add(child, arcname=child.name)
    collections = sorted(c.name for c in path.iterdir() if c.is_dir())
    return [("qdrant-embedded.tar.gz", archive)], {"source": "embedded", "collections": collections}


def qdrant_embedded_restore(path: Path, archive: Path) -> None:
    if path.exists() and any(path.iterdir()):
        raise BackupError(f"QDRANT_PATH {path} is not empty: stop the service and move it aside first")
    path.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(path, filter="data")


# ---------------------------------------------------------------------------------------------
# Redis: the RDB over the replication protocol.


def _resp(*args: str) -> bytes:
    out = f"*{len(args)}\r\n".encode()
    for a in args:
        b = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out


def redis_rdb(host: str, port: int, username: str | None, password: str | None, out: Path, timeout: float = 600) -> int:
    """Write Redis's RDB to `out` as a replica would receive it; the user needs only
    `+sync +replconf` (+ping). Returns its size."""
    with socket.create_connection((host, port), timeout=timeout) as sock, sock.makefile("rb") as reader:

        def call(*args: str) -> bytes:
            sock.sendall(_resp(*args))
            return reader.readline()

        if password:
            reply = call("AUTH", *([username] if username else []), password)
            if not reply.startswith(b"+"):
                raise BackupError(f"Redis AUTH as {username or 'default'}: {reply.strip().decode(errors='replace')}")
        call("REPLCONF", "rdb-only", "1")  # Redis >= 7: send the RDB and nothing after (older: ignored)
        sock.sendall(_resp("SYNC"))
        line = reader.readline()
        while line in (b"\n", b"\r\n"):  # keep-alives while the fork writes the snapshot
            line = reader.readline()
        if not line.startswith(b"$"):
            raise BackupError(f"Redis SYNC: {line.strip().decode(errors='replace') or 'connection closed'}")
        size = 0
        with out.open("wb") as f:
            if line.startswith(b"$EOF:"):  # diskless: the payload ends with this 40-byte mark
                mark, tail = line[5:45], b""
                while True:
                    chunk = reader.read1(CHUNK)
                    if not chunk:
                        raise BackupError("Redis SYNC: connection closed before the end of the RDB")
                    data = tail + chunk
                    if data.endswith(mark):
                        f.write(data[: -len(mark)])
                        size += len(data) - len(mark)
                        break
                    f.write(data[:-40])
                    size += len(data[:-40])
                    tail = data[-40:]
            else:
                remaining = int(line[1:])
                while remaining:
                    chunk = reader.read(min(CHUNK, remaining))
                    if not chunk:
                        raise BackupError("Redis SYNC: connection closed before the end of the RDB")
                    f.write(chunk)
                    remaining -= len(chunk)
                    size += len(chunk)
    with out.open("rb") as f:
        if f.read(5) != b"REDIS":
            raise BackupError("Redis SYNC: the payload is not an RDB file")
    return size


# ---------------------------------------------------------------------------------------------


def _qdrant_urls() -> list[str]:
    return (setting("QDRANT_URLS") or setting("QDRANT_URL") or "").split()


def backup(store: str, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or dt.datetime.now(dt.UTC)
    stamp = now.strftime(STAMP)
    sets = Sets(S3.from_environment(), setting("BACKUP_PREFIX", ""), store)
    with tempfile.TemporaryDirectory(prefix="sophia-backup-") as tmp:
        work = Path(tmp)
        if store == "qdrant":
            urls = _qdrant_urls()
            if urls:
                files, meta = qdrant_server_backup(urls, setting("QDRANT_API_KEY"), work)
            else:
                files, meta = qdrant_embedded_backup(Path(setting("QDRANT_PATH", required=True)), work)
        elif store == "redis":
            rdb = work / "dump.rdb"
            redis_rdb(
                setting("REDIS_HOST", "127.0.0.1"),
                int(setting("REDIS_PORT", "6379")),
                setting("REDIS_USERNAME"),
                setting("REDIS_PASSWORD"),
                rdb,
            )
            files, meta = [("dump.rdb", rdb)], {"source": "redis"}
        else:
            raise BackupError(f"unknown store {store!r} (qdrant, redis)")
        manifest = write_set(sets, stamp, files, {"store": store, **meta})
    removed = sets.prune(int(setting("BACKUP_RETENTION_DAYS", "14")), now)
    return {"stamp": stamp, "files": manifest["files"], "pruned": removed}


def restore(store: str, at: str | None, to_dir: str | None) -> dict[str, Any]:
    sets = Sets(S3.from_environment(), setting("BACKUP_PREFIX", ""), store)
    stamp = sets.pick(at)
    manifest = sets.manifest(stamp)
    with tempfile.TemporaryDirectory(prefix="sophia-restore-") as tmp:
        files = {f["name"]: sets.fetch(stamp, f["name"], Path(tmp), manifest) for f in manifest["files"]}
        if store == "qdrant" and manifest["source"] == "server":
            qdrant_server_restore(_qdrant_urls(), setting("QDRANT_API_KEY"), files, manifest)
        elif store == "qdrant":
            qdrant_embedded_restore(Path(setting("QDRANT_PATH", required=True)), files["qdrant-embedded.tar.gz"])
        elif store == "redis":
            if not to_dir:
                raise BackupError("restore redis needs --to-dir: the data directory of the stopped Redis")
            target = Path(to_dir) / "dump.rdb"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files["dump.rdb"], target)
        else:
            raise BackupError(f"unknown store {store!r} (qdrant, redis)")
    return {"restored": stamp, "files": [f["name"] for f in manifest["files"]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sophia_backup", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["backup", "restore", "list"])
    parser.add_argument("store", choices=["qdrant", "redis"])
    parser.add_argument("--at", help="restore this backup (a stamp from `list`) instead of the newest")
    parser.add_argument("--to-dir", help="redis: the data directory to write dump.rdb into")
    args = parser.parse_args(argv)
    try:
        if args.command == "backup":
            result = backup(args.store)
        elif args.command == "restore":
            result = restore(args.store, args.at, args.to_dir)
        else:
            result = {"complete": Sets(S3.from_environment(), setting("BACKUP_PREFIX", ""), args.store).complete()}
    except (BackupError, OSError) as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
