"""The real application: `python -m serve_app.cli run` (what `make run` starts) on a free loopback port.

Ray Serve, the five deployments and the HTTP proxy run exactly as in a local run, against the
session's PostgreSQL database, with the tiny-random model profile at a small output size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from db.engine import make_engine
from serve_app.launcher import serve
from tests.conftest import fresh_database

IMAGE_SIZE = 128
# Tests drive the service from one address far faster than a customer would: no per-client limits.
UNLIMITED = {"rate_limit_generate": "1000000/minute", "rate_limit_upload": "1000000/minute"}


@dataclass
class Service:
    base_url: str
    data_dir: Path

    @property
    def uploads(self) -> Path:
        return self.data_dir / "storage" / "temp-uploads"

    def stored_uploads(self) -> set[str]:
        return {p.name for p in self.uploads.glob("*")} if self.uploads.exists() else set()

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)


@pytest.fixture(scope="session")
def service_database_url(server_url: str) -> Iterator[str]:
    """The running service's own database: its JobRunner must not claim the unit tests' jobs."""
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture(scope="session")
def service_engine(service_database_url: str) -> Iterator[Engine]:
    engine = make_engine(service_database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def service(service_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("service")
    settings = {"database_url": service_database_url, "data_dir": str(root / "data"), "model_profile": "tiny-random",
                "image_size": IMAGE_SIZE, "poll_seconds": 0.5, "db_statement_timeout_seconds": 2, **UNLIMITED}
    with serve(root, settings) as launched:
        yield Service(launched.base_url, root / "data")
