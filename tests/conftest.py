"""Shared fixtures: a real PostgreSQL database for the whole session, migrated with Alembic.

`SASTRE_TEST_DATABASE_URL` points at an existing server (a fresh database is created in it);
without it an embedded PostgreSQL (pgserver) starts in a temporary directory, so a bare machine works.
"""

from __future__ import annotations

import os

# Tests never reach a model hub: everything they load is built or saved locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_sessionmaker
from db.migrate import fresh_database  # re-exported: tests import it from here

if TYPE_CHECKING:
    from tests.services import Services


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("SASTRE_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """The unit tests' database (integration tests give the running service one of its own)."""
    with fresh_database(server_url) as url:
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine) -> Iterator[sessionmaker[Session]]:
    """A session factory over a clean schema (tables emptied before each test)."""
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE generation_jobs, colors, fabric_families, admin_users, admin_login_failures, render_cache "
                          "RESTART IDENTITY CASCADE"))
    yield make_sessionmaker(engine)


@pytest.fixture(scope="session")
def storage_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage")


@dataclass
class S3Server:
    endpoint_url: str

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def new_bucket(self) -> str:
        name = f"sastre-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """An S3-compatible server (moto) on 127.0.0.1, reached by boto3 over HTTP like R2 or MinIO."""
    from moto.server import ThreadedMotoServer

    from serve_app.launcher import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3Server(f"http://127.0.0.1:{port}")
    server.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis for shared rate-limit counts: `SASTRE_TEST_REDIS_URL`, or a `redis-server` (Debian's
    package) started here on a free loopback port, keeping nothing on disk."""
    configured = os.environ.get("SASTRE_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    import shutil
    import subprocess
    import time

    import redis

    from serve_app.launcher import free_port

    binary = shutil.which("redis-server")
    assert binary, "the rate-limit tests need redis-server (apt-get install redis-server) or SASTRE_TEST_REDIS_URL"
    port = free_port()
    server = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path_factory.mktemp("redis"))], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            assert server.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait(timeout=10)


# Launched services, shared between modules where their settings allow (tests/services.py).

@pytest.fixture(scope="session")
def services(server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The session's launched services: one shared service idle at a time, each ended fast."""
    from tests.services import Services

    manager = Services(server_url, tmp_path_factory)
    try:
        yield manager
    finally:
        manager.end_idle()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules that share a service run one after another, so it starts once (tests/services.py)."""
    from tests.services import order_by_service

    order_by_service(items)
