"""The health report `GET /health` answers from: every part checked at most once per `max_age`.

A live check calls every deployment (`check_health`, the runner's status, the generator's
description) and takes a route thread for the database and storage. Done per request, a flood of
/health queued behind the runner's and generator's request slots, where jobs wait. So one ingress
replica keeps the latest report: a request answers from it while it is younger than `max_age`;
past half that age one check starts in the background (the next request still answers at once);
past `max_age` requests wait for that one check, which all of them share.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger("sastre.api")


class HealthReports:
    def __init__(self, max_age_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age_seconds
        self.clock = clock
        self._report: dict | None = None
        self._checked_at = -math.inf  # when the checks of the latest report started
        self._refresh: asyncio.Task | None = None

    async def latest(self, check: Callable[[], Awaitable[dict]]) -> tuple[dict, float]:
        """The latest report and its age in seconds, running `check` first when none is young enough."""
        age = self.clock() - self._checked_at
        loop = asyncio.get_running_loop()  # a check in progress is joined only from its own loop (tests run several)
        checking = self._refresh is not None and not self._refresh.done() and self._refresh.get_loop() is loop
        if age >= self.max_age / 2 and not checking:
            self._refresh = loop.create_task(self._check(check))
            self._refresh.add_done_callback(_log_failure)
        if self._report is None or age >= self.max_age:
            await asyncio.shield(self._refresh)
        return self._report, max(0.0, self.clock() - self._checked_at)

    async def _check(self, check: Callable[[], Awaitable[dict]]) -> None:
        started = self.clock()
        report = await check()
        self._report, self._checked_at = report, started


def _log_failure(task: asyncio.Task) -> None:
    """A background check that failed keeps the last report; the request that waited for it gets the error."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("health check failed (%s); keeping the last report", type(task.exception()).__name__)
