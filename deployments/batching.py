"""Batches across concurrent requests, each batch formed when the model is free to run it.

Ray Serve's `@serve.batch` (2.60) forms a batch as soon as its wait timeout passes and only then queues
it for a free slot (`max_concurrent_batches`). Under a backlog one request arrives per model call, so
every batch formed from that one request and waited its turn: the generator ran batches of one while
a dozen requests stood in line (draining 100 jobs: 88 of 94 batches held one cut). `Batches` waits for
the previous batch to finish before it forms the next, so the next batch is everything that arrived
meanwhile, up to `max_batch_size`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batches(Generic[T, R]):
    """`await batches(item)` returns `run_batch`'s result for `item`, run together with the items that
    were waiting beside it; one batch runs at a time.

    A caller that gives up (its task is cancelled, as `bounded` does on a stage timeout) is dropped from
    the batch it had not yet joined. An exception from `run_batch` fails that batch's callers only.
    """

    def __init__(self, run_batch: Callable[[list[T]], Awaitable[list[R]]], max_batch_size: int,
                 wait_s: float) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run_forever())
        return await future

    async def _run_forever(self) -> None:
        busy = False  # a batch has just run
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
                busy = False
            # An idle model waits briefly for the requests sent with this one; after a batch, what waited
            # meanwhile goes at once: those requests have waited long enough.
            if not busy and self._live() < self.max_batch_size and self.wait_s > 0:
                await asyncio.sleep(self.wait_s)
            batch = self._take()
            busy = bool(batch)
            if batch:
                await self._run(batch)

    def _live(self) -> int:
        return sum(not future.done() for _, future in self._waiting)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch = []
        while self._waiting and len(batch) < self.max_batch_size:
            item, future = self._waiting.popleft()
            if not future.done():  # done already: its caller was cancelled
                batch.append((item, future))
        return batch

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.run_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} returned {len(results)} results")
        except BaseException as exc:
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:  # this worker is being cancelled (the replica shuts down): so are its callers
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
