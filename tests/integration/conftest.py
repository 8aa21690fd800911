"""The real application: `python -m serve_app.cli run` (what `make run` starts) on a free loopback port.

Ray Serve, the five deployments and the HTTP proxy run exactly as in a local run, against the
session's PostgreSQL database, with the tiny-random model profile at a small output size.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from serve_app.cli import LOCAL_CONFIG

IMAGE_SIZE = 128


@dataclass
class Service:
    base_url: str
    log: Path

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def service(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = {"database_url": database_url, "data_dir": str(root / "data"), "model_profile": "tiny-random",
                "image_size": IMAGE_SIZE, "public_base_url": base_url, "poll_seconds": 0.5}
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    config["http_options"]["port"] = port
    config["applications"][0]["args"] = settings
    config_path = root / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, **{f"SASTRE_{k.upper()}": str(v) for k, v in settings.items()}}
    log = root / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "serve_app.cli", "run", "--config", str(config_path), "--no-dashboard"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                pytest.fail(f"service exited early:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"service not healthy after 240 s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield Service(base_url, log)
    finally:
        # Ctrl-C path first (Serve shuts down, then the Ray instance), then whatever is left of the group.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
