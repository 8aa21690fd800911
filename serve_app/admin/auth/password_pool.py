"""The bcrypt checks of one ingress replica: a few threads of their own and a bounded queue.

A password check is ~0.25 s of CPU by design. Run on the route threads, a login flood took all of them
and every public route waited behind it. Here checks run on `workers` threads of their own, at most
`queue` more logins wait (including those serving a username's delay), and past that a login is
refused at once (`PoolBusy`, answered 429 with `Retry-After`): the flood pays, the shop does not.
The threads also run in Linux's SCHED_IDLE class (per thread): on a busy machine a shopper's request
gets the core before a password check does, which still gets a small share (CFS weight 3, a fifth of
nice 19's), so an admin's login slows under load but always finishes: a login may wait, a page should not.
And each thread rests after a check as long as the check took (its answer is not held back), so under
a flood the pool keeps at most half of each of its cores: on a machine with spare cores the idle class
alone let a continuous bcrypt thread slow GET /catalog 2.3x on two cores.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

T = TypeVar("T")


def _lower_priority() -> None:
    """Run once in each pool thread: on Linux, a thread id names that thread only."""
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed: the bounded pool still protects the routes
        pass


class PoolBusy(Exception):
    """Every worker is busy and the queue is full (answered as 429 with `Retry-After`)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many logins at once; retry in {retry_after} s")
        self.retry_after = retry_after


class PasswordPool:
    """Admits at most `workers + queue` logins at a time; runs their bcrypt calls on `workers` threads.

    Used from the replica's event loop only (admission is a plain counter, no lock needed)."""

    def __init__(self, workers: int, queue: int, check_seconds: float = 0.3) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self.check_seconds = check_seconds  # about one bcrypt check: sizes Retry-After
        self.admitted = 0
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bcrypt", initializer=_lower_priority)

    @asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """A place among the logins in progress, or `PoolBusy` at once."""
        if self.admitted >= self.capacity:
            raise PoolBusy(max(1, round(self.capacity * self.check_seconds / self.workers)))
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def run(self, check: Callable[..., T], *args) -> T:
        """`check(*args)` on one of the pool's threads, which then rests as long as the check took."""
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self.executor.submit(_check_then_rest, loop, answer, check, args)
        return await answer


def _check_then_rest(loop: asyncio.AbstractEventLoop, answer: asyncio.Future, check: Callable, args: tuple) -> None:
    """Answer first, then hold the thread as long again: at most half a core for password checks."""
    started = time.perf_counter()
    try:
        result = check(*args)
    except Exception as exc:
        loop.call_soon_threadsafe(lambda: answer.done() or answer.set_exception(exc))
    else:
        loop.call_soon_threadsafe(lambda: answer.done() or answer.set_result(result))
    time.sleep(time.perf_counter() - started)
