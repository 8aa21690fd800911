"""Bounds on a stage's work (preprocess, generate, finish), and the record a health check reads.

A stage's blocking work runs on worker threads (model calls, storage reads). A thread cannot be
cancelled, so a hang there (a stuck CUDA call, a storage endpoint that accepts and never answers)
leaves the event loop free and a `pass` health check content. Two things close that gap:
`bounded` gives up on the call after the stage timeout (the caller sees `StageTimeout`, a failed cut
attempt that is retried), and `CallsInFlight` remembers when each blocking call started, so the
replica's `check_health` fails while one has been running longer than that bound and Serve replaces it.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class StageTimeout(Exception):
    """A stage call did not finish within its bound; the cut attempt fails and is retried.

    Not a `TimeoutError`: Ray takes a TimeoutError from a replica for its own wait timing out, and a
    response passed on to the next deployment then never fails (seen with Ray 2.60).
    """


async def bounded(stage: str, seconds: float, work: Awaitable[T]) -> T:
    """Await `work` for at most `seconds`, then cancel it and raise `StageTimeout` naming the stage."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            return await work
    except TimeoutError:
        if deadline.expired():
            raise StageTimeout(f"{stage} did not finish within {seconds:g} s") from None
        raise  # a TimeoutError of the work's own


class CallsInFlight:
    """Start times of the blocking calls running now, for a health check that proves the replica works."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._started: dict[int, float] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., T], *args) -> T:
        """Call `fn(*args)` on this thread, recorded from start to return (or raise)."""
        token = next(self._ids)
        with self._lock:
            self._started[token] = time.monotonic()
        try:
            return fn(*args)
        finally:
            with self._lock:
                del self._started[token]

    def oldest_seconds(self) -> float:
        """How long the oldest call in flight has been running (0 when none is)."""
        with self._lock:
            first = min(self._started.values(), default=None)
        return 0.0 if first is None else time.monotonic() - first

    def check(self, max_seconds: float) -> None:
        """Raise while a call has been running longer than `max_seconds`: the replica is stuck."""
        age = self.oldest_seconds()
        if age > max_seconds:
            raise RuntimeError(f"a {self.what} call has been running for {age:.0f} s (bound {max_seconds:g} s): "
                               "this replica is stuck")
