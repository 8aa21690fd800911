"""Engines, sessions and the embedded PostgreSQL used when no database URL is configured."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger("sastre.db")


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (as pgserver and most providers print them) and use psycopg 3."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError("only PostgreSQL URLs are supported")


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL under `data_dir/postgres` and return its URL.

    pgserver listens on a Unix socket inside its data directory only, so nothing is exposed on the
    network. It keeps running after the process that started it exits (Ray builds the app in another
    process, which must find it up); `python -m serve_app.cli stop-db` stops it.
    """
    import pgserver

    server = pgserver.get_server(Path(data_dir) / "postgres", cleanup_mode=None)
    return server.get_uri()


def make_engine(url: str, pool_size: int = 5, *, max_overflow: int | None = None, pool_timeout: float = 30.0,
                statement_timeout: float | None = None) -> Engine:
    """An engine that survives idle connections dropped by the server or a proxy (pool_pre_ping).

    The service's replicas size `pool_size` to the threads that use the engine, with no overflow, so
    none waits for a connection (see `serve_app/deployments.py`). Waiting longer than `pool_timeout`
    for one raises `sqlalchemy.exc.TimeoutError`; a statement running (or waiting for a lock) longer
    than `statement_timeout` seconds is cancelled by the server (`QueryCanceled`).
    """
    connect_args = {}
    if statement_timeout:
        connect_args["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
    return create_engine(
        sqlalchemy_url(url), pool_pre_ping=True, pool_size=pool_size,
        max_overflow=pool_size * 2 if max_overflow is None else max_overflow, pool_timeout=pool_timeout,
        pool_recycle=1800, connect_args=connect_args,
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def ping(session: Session) -> None:
    """The health probe: one round trip to the database (raises when it is away)."""
    session.execute(text("SELECT 1"))
