"""The real application: `python -m serve_app.cli run` (what `make run` starts) on a free loopback port.

Ray Serve, the five deployments and the HTTP proxy run exactly as in a local run, against a database
of their own on the session's PostgreSQL, with the tiny-random model profile at a small output size.
`service` is the main shared service (tests/services.py, `MAIN`): every module that asks for it, here
and in tests/e2e, gets the same running instance.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from db.engine import make_engine
from tests.services import IMAGE_SIZE, MAIN, UNLIMITED, Service, Services  # noqa: F401


@pytest.fixture(scope="module")
def service(services: Services) -> Service:
    return services.shared(MAIN)


@pytest.fixture(scope="module")
def service_database_url(service: Service) -> str:
    """The running service's own database: its JobRunner must not claim the unit tests' jobs."""
    return service.database_url


@pytest.fixture(scope="module")
def service_engine(service_database_url: str) -> Iterator[Engine]:
    engine = make_engine(service_database_url)
    yield engine
    engine.dispose()
