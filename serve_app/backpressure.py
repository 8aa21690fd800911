"""Backpressure for POST /generate: refuse new jobs while the pending backlog is over a limit.

Counting pending rows on every request would put a query on every POST, exactly when the system is
busiest. So each ingress replica keeps a verdict and refreshes it in the background: a request reads
the verdict and, when it is older than `ttl_seconds`, starts one refresh it does not wait for. The
limit is a soft one (a replica may accept a few more jobs in that window), which is all backpressure
needs. `ttl_seconds=0` counts on every request instead (tests that need an exact limit).
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from db import jobs

logger = logging.getLogger("sastre.api")


class BacklogGate:
    def __init__(self, limit: int, ttl_seconds: float) -> None:
        self.limit = limit
        self.ttl_seconds = ttl_seconds
        self._full = False
        self._checked_at: float | None = None  # None: never counted, the first request waits for a count
        self._refresh: asyncio.Task | None = None

    async def is_full(self, engine: AsyncEngine) -> bool:
        if self.ttl_seconds == 0 or self._checked_at is None:
            await self._count(engine)
        elif time.monotonic() - self._checked_at >= self.ttl_seconds and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.get_running_loop().create_task(self._count_in_background(engine))
        return self._full

    async def _count(self, engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            self._full = await jobs.pending_at_least(conn, self.limit)
        self._checked_at = time.monotonic()

    async def _count_in_background(self, engine: AsyncEngine) -> None:
        try:
            await self._count(engine)
        except Exception as exc:  # the database is away: keep the last verdict, the requests will say so
            logger.warning("backlog count failed (%s); keeping the last verdict", type(exc).__name__)
            self._checked_at = time.monotonic()
