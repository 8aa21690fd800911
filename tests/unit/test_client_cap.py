"""A client's cap of unfinished jobs is exact under concurrent POSTs (CI once saw 151 jobs of a cap of 150).

The insert is one autocommit statement; here a first POST is held open in a transaction at the moment
a second POST of the same client runs, which is the race two request threads can hit: the second must
wait for the first and then be refused, and a POST of another client must not wait at all.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from catalog.data import load_catalog
from catalog.loader import sync_catalog
from db import jobs
from db.engine import make_async_engine, sqlalchemy_url

NAVY = {"family_id": "lana-fria", "color_id": "lana-fria-azul-marino", "cuts": ["recto"]}
CAP = 2


@pytest.fixture
def catalog(sessions) -> None:
    with sessions.begin() as session:
        sync_catalog(session, load_catalog())


def _post(conn, client: str):
    """POST /generate's insert, run as the route runs it."""
    return conn.run_sync(jobs.create_job, **NAVY, seed=7, client=client, client_cap=CAP)


def test_two_posts_at_the_cap_at_once_let_exactly_one_in(catalog, database_url):
    async def race() -> tuple[bool, bool, bool]:
        held = create_async_engine(sqlalchemy_url(database_url))  # transactions we commit ourselves
        autocommit = make_async_engine(database_url, pool_size=2, pool_timeout=5)
        try:
            async with autocommit.connect() as conn:
                assert await _post(conn, "127.0.0.5") is not None  # one of two: the next POST is at the cap
            async with held.connect() as first:
                assert await _post(first, "127.0.0.5") is not None  # not committed yet
                async with autocommit.connect() as second, autocommit.connect() as stranger:
                    other_client = await asyncio.wait_for(_post(stranger, "127.0.0.6"), 5)
                    racing = asyncio.create_task(_post(second, "127.0.0.5"))
                    await asyncio.sleep(0.5)
                    waited = not racing.done()
                    await first.commit()
                    return waited, await asyncio.wait_for(racing, 5) is None, other_client is not None
        finally:
            await held.dispose()
            await autocommit.dispose()

    waited, refused, other_accepted = asyncio.run(race())
    assert (waited, refused, other_accepted) == (True, True, True)
