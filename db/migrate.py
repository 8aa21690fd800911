"""Apply Alembic migrations programmatically (used by `make run`, the app builder, tests and benchmarks),
and make a scratch database migrated to a given revision (tests and database benchmarks)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config


def alembic_config(url: str) -> Config:
    config = Config(str(Path(__file__).with_name("alembic.ini")))
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def _with_database(url: str, name: str) -> str:
    """`url` with its database name replaced, its query (e.g. `?host=/var/run/postgresql`) kept."""
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{query}" if query else "")


@contextmanager
def fresh_database(server_url: str, revision: str = "head") -> Iterator[str]:
    """A new database on the server `server_url` reaches, migrated to `revision`, dropped afterwards
    (even with sessions still open), so each user starts from a known schema and leaves nothing."""
    name = f"sastre_scratch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(server_url, name)
    try:
        upgrade(url, revision)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
