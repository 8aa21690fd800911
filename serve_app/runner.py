"""The JobRunner: turns pending rows into finished images, durably.

It claims rows with `FOR UPDATE SKIP LOCKED` under a lease, renews the lease while it works, fans a
job's cuts out concurrently to the worker deployments, and writes each cut's progress as it lands.
A NOTIFY wakes it at once; a poll every `poll_seconds` is the fallback, and the same tick runs the
rescuer that re-queues jobs whose runner died. The runner never holds more than `concurrency` jobs,
so a burst of POSTs waits in Postgres instead of piling onto the GPUs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import psycopg
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from catalog.data import CatalogData
from catalog.prompts import build_prompt
from db import jobs
from db.models import Color, FabricFamily, GenerationJob
from deployments.storage import UPLOAD_PREFIX, Storage
from serve_app.job_inputs import forget_swatch

logger = logging.getLogger("sastre.runner")

SWEEP_INTERVAL_SECONDS = 600
DB_ATTEMPTS = 10  # backoff 0.2 s doubling to 5 s: about 30 s in all


@dataclass(frozen=True)
class CutTask:
    """Everything the workers need for one cut: small values and storage keys only."""

    job_id: str
    cut: str
    prompt: str
    template_png: bytes
    swatch_key: str | None
    seed: int
    result_key: str


class JobCanceled(Exception):
    """The client canceled the job; raised at a cut boundary."""


class CutFailed(Exception):
    """A cut kept failing after its retries."""


class CutRenderer(Protocol):
    async def render(self, task: CutTask) -> dict:
        """Produce, watermark and store one cut; returns {url, key, seed, ip_adapter_fallback}."""


def result_key(job: GenerationJob, cut: str) -> str:
    """`generated/{family}/{color}/{run_id}/{cut}.jpg`; run_id is the job id, so a retry overwrites."""
    return f"generated/{job.family_id}/{job.color_id}/{job.job_id}/{cut}.jpg"


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class JobRunner:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        database_url: str,
        catalog: CatalogData,
        renderer: CutRenderer,
        *,
        concurrency: int = 16,
        lease_seconds: float = 30.0,
        poll_seconds: float = 2.0,
        storage: Storage | None = None,
        upload_ttl_seconds: float = 24 * 3600,
        cut_attempts: int = 3,
        cut_retry_seconds: float = 1.0,
    ) -> None:
        self.sessions = sessions
        self.database_url = libpq_url(database_url)
        self.catalog = catalog
        self.renderer = renderer
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.cut_attempts = cut_attempts
        self.cut_retry_seconds = cut_retry_seconds
        self.storage = storage
        self.upload_ttl_seconds = upload_ttl_seconds
        self._next_sweep = 0.0
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.active: dict[str, asyncio.Task] = {}
        # Database calls block, so they run on threads: one pool sized for the jobs in hand, and one
        # thread of its own for lease renewals, which must never queue behind job work.
        self._db_threads = ThreadPoolExecutor(concurrency + 4, thread_name_prefix="runner-db")
        self._lease_thread = ThreadPoolExecutor(1, thread_name_prefix="runner-lease")
        self._wake = asyncio.Event()
        self._stopping = False

    # -- the loop --------------------------------------------------------------------------------
    async def run_forever(self) -> None:
        self._stopping = False
        self._wake = asyncio.Event()  # bound to this loop
        listener = asyncio.create_task(self._listen())
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping:
                try:
                    await self._in(self._db_threads, self._housekeeping)
                    await self.claim_and_start()
                except Exception:  # the database may be briefly away; the loop must outlive it
                    logger.exception("runner tick failed; retrying after the poll interval")
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                except asyncio.TimeoutError:
                    pass
                self._wake.clear()
            # Stopping: claim nothing new, let the jobs in hand finish (their leases are still renewed).
            await asyncio.gather(*self.active.values(), return_exceptions=True)
        finally:
            listener.cancel()
            heartbeat.cancel()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def shutdown(self, loop_task: asyncio.Task, grace_seconds: float) -> list[str]:
        """Graceful stop: finish the jobs in hand within `grace_seconds`, release the rest.

        Released jobs go straight back to pending (their attempt not counted) for another runner.
        """
        self.stop()
        try:
            await asyncio.wait_for(asyncio.shield(loop_task), timeout=grace_seconds)
            return []
        except asyncio.TimeoutError:
            unfinished = list(self.active)
            for task in list(self.active.values()):
                task.cancel()
            await asyncio.gather(*self.active.values(), return_exceptions=True)
            released = await self._db(self._release, unfinished)
            loop_task.cancel()
            logger.warning("shutdown: released %d unfinished jobs: %s", len(released), released)
            return released

    def _release(self, job_ids: list[str]) -> list[str]:
        with self.sessions.begin() as session:
            return jobs.release_jobs(session, self.owner, job_ids)

    async def claim_and_start(self) -> list[str]:
        capacity = self.concurrency - len(self.active)
        if capacity <= 0:
            return []
        claimed = await self._in(self._db_threads, self._claim, capacity)
        for job_id in claimed:
            task = asyncio.create_task(self.process(job_id))
            self.active[job_id] = task
            task.add_done_callback(lambda _t, j=job_id: self._finished(j))
        return claimed

    def _finished(self, job_id: str) -> None:
        self.active.pop(job_id, None)
        self._wake.set()  # capacity freed: look for more work now

    def _claim(self, limit: int) -> list[str]:
        with self.sessions.begin() as session:
            return [job.job_id for job in jobs.claim_jobs(session, self.owner, limit, self.lease_seconds)]

    def _housekeeping(self) -> None:
        """Every tick: re-queue jobs whose runner died. Every few minutes: expire old uploads."""
        with self.sessions.begin() as session:
            # Our own jobs are renewed by our heartbeat: a late renewal must not make us rescue ourselves.
            for job_id, status in jobs.release_expired_leases(session, exclude_owner=self.owner):
                logger.warning("job %s lost its runner's lease; now %s", job_id, status)
        if self.storage is not None and time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS
            removed = self.storage.delete_older_than(UPLOAD_PREFIX, self.upload_ttl_seconds)
            if removed:
                logger.info("expired %d uploaded swatches", removed)

    async def _listen(self) -> None:
        """LISTEN for new-job notifications; reconnects forever, the poll covers the gaps."""
        while not self._stopping:
            try:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {jobs.NOTIFY_CHANNEL}")
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("LISTEN connection lost (%s); polling until it is back", exc)
                await asyncio.sleep(self.poll_seconds)

    async def _heartbeat(self) -> None:
        while True:  # cancelled by run_forever once the last job is done
            await asyncio.sleep(self.lease_seconds / 3)
            asked = list(self.active)
            try:
                held = await self._in(self._lease_thread, self._renew, asked)
            except Exception as exc:
                logger.warning("lease renewal failed: %s", exc)
                continue
            # Only jobs we asked about can be lost; jobs claimed meanwhile have fresh leases.
            for job_id in set(asked) - held:
                if job_id in self.active:
                    logger.warning("job %s: lease lost to another runner; abandoning it", job_id)
                    self.active[job_id].cancel()

    def _renew(self, job_ids: list[str]) -> set[str]:
        with self.sessions.begin() as session:
            return jobs.renew_leases(session, self.owner, job_ids, self.lease_seconds)

    # -- one job -----------------------------------------------------------------------------------
    def _plan(self, job_id: str) -> tuple[list[CutTask], dict[str, dict]]:
        """The job's cuts as tasks, and the progress entries of cuts an earlier attempt already finished."""
        with self.sessions.begin() as session:
            job = jobs.get_job(session, job_id)
            family = session.scalars(select(FabricFamily).where(FabricFamily.family_id == job.family_id)).one_or_none()
            color = session.scalars(select(Color).where(Color.color_id == job.color_id)).one_or_none()
            if family is None or color is None:
                raise LookupError(f"fabric {job.family_id}/{job.color_id} is no longer in the catalog")
            family_spec = self.catalog.family(family.family_id)
            color_spec = next((c for c in family_spec.colors if c.color_id == color.color_id), None) if family_spec else None
            fabric = family_spec.fabric if family_spec else family.display_name
            color_words = color_spec.english if color_spec else color.name
            tasks = []
            for index, cut in enumerate(job.cuts):
                spec = self.catalog.cut(cut)
                if spec is None:
                    raise LookupError(f"cut {cut!r} is no longer in the catalog")
                tasks.append(CutTask(
                    job_id=job.job_id, cut=cut, prompt=build_prompt(spec.prompt, fabric, color_words),
                    template_png=spec.template_png(), swatch_key=job.swatch_key, seed=job.seed + index,
                    result_key=result_key(job, cut),
                ))
            done = {cut: entry for cut, entry in job.cut_progress.items()
                    if entry.get("status") == "completed" and entry.get("key")}
            return tasks, done

    @staticmethod
    async def _in(pool: ThreadPoolExecutor, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def _db(self, fn, *args):
        """Run a blocking database call off the loop, riding out a database restart of up to ~30 s."""
        delay = 0.2
        for attempt in range(DB_ATTEMPTS):
            try:
                return await self._in(self._db_threads, fn, *args)
            except (OperationalError, InterfaceError) as exc:
                if attempt == DB_ATTEMPTS - 1:
                    raise
                logger.warning("database unavailable (%s); retrying in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _record(self, job_id: str, cut: str, entry: dict) -> None:
        with self.sessions.begin() as session:
            jobs.record_cut(session, job_id, self.owner, cut, entry)

    def _cancel_requested(self, job_id: str) -> bool:
        with self.sessions() as session:
            return jobs.cancel_requested(session, job_id)

    async def process(self, job_id: str) -> None:
        tasks: list[CutTask] = []
        try:
            tasks, done = await self._db(self._plan, job_id)
            async with asyncio.TaskGroup() as group:
                running = {t.cut: group.create_task(self._run_cut(t)) for t in tasks if t.cut not in done}
            results = {**done, **{cut: task.result() for cut, task in running.items()}}
            if await self._db(self._cancel_requested, job_id):
                raise JobCanceled()
        except Exception as exc:
            errors = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
            if any(isinstance(error, JobCanceled) for error in errors):
                if await self._db(self._finish, jobs.mark_canceled, job_id):
                    await self._forget_swatch(job_id, tasks)
                logger.info("job %s canceled", job_id)
                return
            first = errors[0]
            logger.error("job %s failed: %s: %s", job_id, type(first).__name__, first)
            await self._db(self._finish, jobs.fail_job, job_id, f"{type(first).__name__}: {first}")
            return
        if await self._db(self._finish, jobs.complete_job, job_id, [results[t.cut]["url"] for t in tasks]):
            await self._forget_swatch(job_id, tasks)
        logger.info("job %s completed (%d cuts, %d reused from an earlier attempt)", job_id, len(tasks), len(done))

    async def _run_cut(self, task: CutTask) -> dict:
        """One cut, retried with backoff; the cancel flag is checked at every cut boundary."""
        for attempt in range(1, self.cut_attempts + 1):
            if await self._db(self._cancel_requested, task.job_id):
                raise JobCanceled()
            await self._db(self._record, task.job_id, task.cut,
                           {"status": "processing", "seed": task.seed, "attempt": attempt})
            try:
                result = await self.renderer.render(task)
                break
            except Exception as exc:
                if attempt == self.cut_attempts:
                    raise CutFailed(f"cut {task.cut} failed {attempt} times; last error: "
                                    f"{type(exc).__name__}: {str(exc)[:300]}") from exc
                delay = self.cut_retry_seconds * 2 ** (attempt - 1)
                logger.warning("job %s cut %s attempt %d failed (%s); retrying in %.1f s",
                               task.job_id, task.cut, attempt, type(exc).__name__, delay)
                await asyncio.sleep(delay)
        entry = {"status": "completed", "seed": task.seed, "url": result["url"], "key": result["key"],
                 "ip_adapter_fallback": result["ip_adapter_fallback"], "attempt": attempt,
                 "finished_at": datetime.now(timezone.utc).isoformat()}
        await self._db(self._record, task.job_id, task.cut, entry)
        return entry

    def _finish(self, operation, job_id: str, *args) -> bool:
        with self.sessions.begin() as session:
            return operation(session, job_id, self.owner, *args)

    async def _forget_swatch(self, job_id: str, tasks: list[CutTask]) -> None:
        """The job is done (its final write landed): its own swatch copy is no longer needed."""
        if self.storage is not None and tasks:
            await self._in(self._db_threads, forget_swatch, self.storage, job_id, tasks[0].swatch_key)
