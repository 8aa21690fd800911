"""Engines, sessions and the embedded PostgreSQL used when no database URL is configured."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import URL, Engine, create_engine, event, text
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
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
    none waits for a connection (see `serve_app/ingress.py`). Waiting longer than `pool_timeout`
    for one raises `sqlalchemy.exc.TimeoutError`; a statement running (or waiting for a lock) longer
    than `statement_timeout` seconds is cancelled by the server (`QueryCanceled`).
    """
    return create_engine(
        sqlalchemy_url(url), pool_pre_ping=True, pool_size=pool_size,
        max_overflow=pool_size * 2 if max_overflow is None else max_overflow, pool_timeout=pool_timeout,
        pool_recycle=1800, connect_args=_connect_args(statement_timeout),
    )


PING_AFTER_IDLE_SECONDS = 1.0


def make_async_engine(url: str | URL, pool_size: int, *, pool_timeout: float, statement_timeout: float | None = None,
                      ping_after_idle: float = PING_AFTER_IDLE_SECONDS) -> AsyncEngine:
    """An asyncio engine (psycopg's async driver) for the hot routes: a request awaits the database on
    the event loop instead of holding a thread for the round trip.

    Autocommit: each statement is its own transaction, so a one-statement route costs one round trip
    (no BEGIN, no COMMIT) and nothing it wrote can be left uncommitted. A connection is pinged only
    after `ping_after_idle` seconds in the pool, and the pool hands out the most recently used one
    first, so under load none is pinged and the rest can idle out. Otherwise as `make_engine`
    (statement timeout, `pool_timeout` then `sqlalchemy.exc.TimeoutError`), with no overflow: the pool
    is the replica's whole budget.
    """
    url = url if isinstance(url, URL) else sqlalchemy_url(url)
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", pool_size=pool_size, max_overflow=0,
                                 pool_timeout=pool_timeout, pool_recycle=1800, pool_use_lifo=True,
                                 connect_args=_connect_args(statement_timeout))
    ping_after_idle_seconds(engine.sync_engine, ping_after_idle)
    return engine


def ping_after_idle_seconds(engine: Engine, idle_seconds: float) -> None:
    """`pool_pre_ping` for the connections that may have gone stale: those that sat in the pool for
    `idle_seconds` or more. One that fails its ping is replaced before the request sees it.

    `pool_pre_ping` pings at every checkout: a second round trip for each one-statement request (seen
    in libpq's trace), which a database across a network makes a second wait. A connection checked in
    a moment ago is as alive as a ping would prove it. If the server went away since, the statement
    fails (a 503, as any request in flight then does) and SQLAlchemy, seeing a disconnect, retires every
    connection the pool held; a server restart takes longer than `idle_seconds`, so after one each
    connection is pinged again.
    """

    @event.listens_for(engine, "checkin")
    def idle_from(dbapi_connection, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(dbapi_connection, record, proxy) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # As pool_pre_ping does: the server may have restarted, so every pooled connection is retired,
            # and the pool checks out a new one for this request.
            raise InvalidatePoolError(f"a connection idle for {idle_seconds} s or more was dropped") from exc


class LoopEngines:
    """One asyncio engine per event loop, made on first use in that loop.

    An asyncio pool and psycopg's async connections belong to the loop that made them: shared with
    another loop, a wait for a connection never wakes. A server process runs one loop, so it gets one
    engine; tests that call the app from several threads (each with its own loop) get one per loop,
    and an engine goes away with its loop.
    """

    def __init__(self, make: Callable[[], AsyncEngine]) -> None:
        self._make = make
        self._engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEngine] = weakref.WeakKeyDictionary()

    def current(self) -> AsyncEngine:
        loop = asyncio.get_running_loop()
        engine = self._engines.get(loop)
        if engine is None:
            engine = self._engines[loop] = self._make()
        return engine


def _connect_args(statement_timeout: float | None) -> dict:
    if not statement_timeout:
        return {}
    return {"options": f"-c statement_timeout={int(statement_timeout * 1000)}"}


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def ping(session: Session) -> None:
    """The health probe: one round trip to the database (raises when it is away)."""
    session.execute(text("SELECT 1"))


def ping_pool(sessions: sessionmaker[Session]) -> None:
    """A replica's health probe: one round trip on a connection of the pool its work uses."""
    with sessions() as session:
        ping(session)
