"""Real uvicorn servers on loopback for tests: `serve` an app, `free_port` for a port nobody listens on."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(app, port: int) -> tuple[uvicorn.Server, threading.Thread] | None:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
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
    """Run `app` in a real uvicorn server on 127.0.0.1; yields its base URL."""
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
