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
        """The verdict. It may take a pooled connection to count: call it before taking one of your own."""
        stale = self._checked_at is None or time.monotonic() - self._checked_at >= self.ttl_seconds
        loop = asyncio.get_running_loop()  # a count in progress is joined only from its own loop (tests run several)
        counting = self._refresh is not None and not self._refresh.done() and self._refresh.get_loop() is loop
        if stale and not counting:
            self._refresh = loop.create_task(self._count(engine))
            self._refresh.add_done_callback(_log_failure)
        if self._checked_at is None or self.ttl_seconds == 0:
            # The replica's first verdict (one count, shared by a burst of first requests), or every
            # verdict without a TTL, is waited for; a failure is the request's (503).
            await asyncio.shield(self._refresh)
        return self._full

    async def _count(self, engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            self._full = await jobs.pending_at_least(conn, self.limit)
        self._checked_at = time.monotonic()


def _log_failure(task: asyncio.Task) -> None:
    """A background count that failed (the database is away) keeps the last verdict; the next request
    past the TTL tries again."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("backlog count failed (%s); keeping the last verdict", type(task.exception()).__name__)
