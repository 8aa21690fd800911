"""The FastAPI app under a real uvicorn, for tests that need real sockets (streams, many clients)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from serve_app.deps import Services
from serve_app.launcher import free_port
from serve_app.web import create_app


@contextmanager
def uvicorn_serving(services: Services, **config) -> Iterator[str]:
    """The app in a thread of its own (its own event loop) on a free loopback port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=free_port(),
                                           log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)
