"""Real uvicorn servers on loopback for tests: `serve` an app in a thread, `serve_process` a service
in its own process, `free_port` for a port nobody listens on."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from sophia_chassis.server import HTTP_PROTOCOL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(app, port: int) -> tuple[uvicorn.Server, threading.Thread] | None:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", http=HTTP_PROTOCOL)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive():
            return None  # e.g. the port was taken between free_port() and the bind
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    return server, thread


@contextmanager
def serve(app, port: int | None = None) -> Iterator[str]:
    """Run `app` in a real uvicorn server on 127.0.0.1, with the services' HTTP protocol; yields its base URL."""
    for _ in range(1 if port else 3):
        port_used = port or free_port()
        started = _start(app, port_used)
        if started:
            break
    else:
        raise RuntimeError("test server did not start")
    server, thread = started
    port = port_used
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class ServiceProcess:
    url: str
    log: Path  # the process's stdout and stderr (the service's JSON log lines)
    pid: int

    def log_lines(self) -> list[dict]:
        """The JSON log lines (anything else the process printed is skipped)."""
        lines = []
        for line in self.log.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
        return [x for x in lines if isinstance(x, dict)]


@contextmanager
def serve_processes(
    services: dict[str, dict[str, str]], log_dir: Path, start_timeout: float = 90.0
) -> Iterator[dict[str, ServiceProcess]]:
    """Run services as their image does — each its own process, `uvicorn --factory
    <package>.main:build_app`, settings from its environment (`services`: name -> env) — on free
    loopback ports, each told the others' `<NAME>_URL` as the platform does; started together,
    stopped with SIGTERM (graceful shutdown) on exit."""
    ports = {name: free_port() for name in services}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    peers = {f"{name.upper().replace('-', '_')}_URL": url for name, url in urls.items()}
    running: dict[str, tuple[subprocess.Popen, ServiceProcess]] = {}
    try:
        for name, env in services.items():
            log = log_dir / f"{name}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "uvicorn", "--factory", f"{name.replace('-', '_')}.main:build_app"),
                        *(
                            "--http",
                            HTTP_PROTOCOL,
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(ports[name]),
                            "--no-access-log",
                        ),
                        *("--timeout-graceful-shutdown", "5"),
                    ],
                    env={**os.environ, **peers, **env, "PORT": str(ports[name])},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            running[name] = (proc, ServiceProcess(urls[name], log, proc.pid))
        deadline = time.monotonic() + start_timeout
        waiting = set(services)
        while waiting:
            for name in sorted(waiting):
                proc, service = running[name]
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{service.log.read_text()[-3000:]}")
                try:
                    if httpx.get(f"{service.url}/healthz", timeout=1).status_code == 200:
                        waiting.discard(name)
                except httpx.TransportError:
                    pass
            if waiting and time.monotonic() > deadline:
                raise RuntimeError(f"{', '.join(sorted(waiting))} did not answer /healthz in {start_timeout:.0f} s")
            time.sleep(0.1)
        yield {name: service for name, (_, service) in running.items()}
    finally:
        for proc, _ in running.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in running.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
