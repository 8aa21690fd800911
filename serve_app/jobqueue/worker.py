"""The JobWorker: turns pending rows into finished images, durably.

It claims rows with `FOR UPDATE SKIP LOCKED` under a lease, renews the lease while it works, fans a
job's cuts out concurrently to the worker deployments, and writes each cut's progress as it lands.
A NOTIFY wakes it at once; a poll every `poll_seconds` is the fallback, and the same tick runs the
rescuer that re-queues jobs whose runner died, or whose attempt died here. The runner never holds more
than `concurrency` jobs, so a burst of POSTs waits in Postgres instead of piling onto the GPUs. Claims
are fair across clients (`jobs.claim_jobs`), and a task of its own deletes what aged out
(`serve_app/jobqueue/retention.py`).

Each claim is an attempt with a lease of its own (`jobs.Lease`): every write carries it, and a write
refused because the lease was lost stops that attempt (`LeaseLost`). A job this runner still has an
attempt of is never claimed again by it, so it holds at most one attempt per job.

The database work per job is kept to what the guarantees need, because under a backlog it is a
visible share of the cost of a cut: the claim's transaction also reads what planning the jobs it
claimed takes (their fabric words; no second read of the row), each cut costs two progress writes
whose answer says whether cancel was requested (no separate cancel check), and the job's last write
completes it. A job's cuts are planned once per attempt (`serve_app/jobqueue/plans.py`): seeds, prompts,
digests, cache and result keys all come from that plan.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Protocol

import psycopg
from cachetools import LRUCache
from sqlalchemy.orm import Session, sessionmaker

from catalog.data import CatalogData
from db import jobs, cached_renders, queue_positions
from db.fabrics import find_families_and_colors
from db.job_failures import INTERNAL, NOT_IN_CATALOG, RENDER_FAILED, FailureReason
from db.models import Color, FabricFamily, GenerationJob
from deployments import metrics
from deployments.rendering import CutResult, CutTask
from deployments.replica_health import LoopHeartbeat
from deployments.storage import UPLOAD_PREFIX, Storage
from serve_app.jobqueue.plans import CutNotInCatalog, CutPlan, PromptWords, plan_cuts
from serve_app.jobqueue.render_cache import RenderCache, RenderSettings
from serve_app.jobqueue.swatches import catalog_swatch_digest
from serve_app.jobqueue.retention import Lifetimes, prune
from serve_app.retrying import Backoff, connection_lost, database_unavailable, retrying, worth_rendering_again
from serve_app.settings import Settings

logger = logging.getLogger("sastre.runner")

SWEEP_INTERVAL_SECONDS = 600
DB_ATTEMPTS = 10  # tries of a database call, 0.2 s apart doubling to 5 s (see _db): rides out a ~26 s restart
RESCUE_BACKOFF = Backoff(2.0, cap=300.0)  # when a job whose attempt died (its lease ran out) is due again
CACHE_PLAN_SECONDS = 2.0  # longest wait for a catalog swatch's digest to key the render cache (see _swatch_digest)
LOOP_DB_THREADS = 4  # database threads for the loop's own calls, besides one per job in hand
DEFAULTS = Settings.model_fields  # the runner's defaults are the service's, written once in Settings


def database_connections(concurrency: int) -> int:
    """The pool a runner needs so no thread waits for a connection: its database threads and the lease thread."""
    return concurrency + LOOP_DB_THREADS + 1


class JobCanceled(Exception):
    """The client canceled the job; raised at a cut boundary."""


class JobExpired(Exception):
    """The job's deadline passed; raised at a cut boundary."""


class CutFailed(Exception):
    """A cut kept failing after its retries."""


class NotInCatalog(LookupError):
    """The job's fabric, color or cut left the catalog after it was accepted: it can never run."""


class LeaseLost(Exception):
    """This attempt's lease lapsed and the job went back to the queue: the attempt must stop."""


class CutRenderer(Protocol):
    async def render(self, task: CutTask) -> CutResult:
        """Produce, watermark and store one cut."""


@dataclass(frozen=True)
class Claim:
    """One claimed attempt, with what its claim's transaction read: the job's fabric words (for its plan),
    the progress entries of cuts an earlier attempt finished, or why the job cannot run (`NotInCatalog`)."""

    lease: jobs.Lease
    job: GenerationJob | None = None  # the claimed row
    words: PromptWords | None = None
    color_version: int = 0  # the color's `swatch_version`: with the job's swatch key, names a catalog swatch
    done: dict[str, dict] = field(default_factory=dict)
    error: NotInCatalog | None = None


def failure_reason(error: Exception) -> FailureReason:
    """What the client is told of a failed job; the exception's own text goes to logs and admins."""
    if isinstance(error, NotInCatalog):
        return NOT_IN_CATALOG
    if isinstance(error, CutFailed):
        return RENDER_FAILED
    return INTERNAL


def libpq_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


# The runner's final writes and the outcome each one records.
FINAL_OUTCOMES = {jobs.complete_job: "completed", jobs.fail_job: "failed", jobs.mark_canceled: "canceled",
                  jobs.mark_expired: "expired"}


class JobWorker:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        database_url: str,
        catalog: CatalogData,
        renderer: CutRenderer,
        *,
        concurrency: int = DEFAULTS["runner_concurrency"].default,
        lease_seconds: float = DEFAULTS["lease_seconds"].default,
        poll_seconds: float = DEFAULTS["poll_seconds"].default,
        storage: Storage | None = None,
        upload_ttl_seconds: float = DEFAULTS["upload_ttl_hours"].default * 3600,
        cut_attempts: int = DEFAULTS["cut_attempts"].default,
        cut_retry_seconds: float = DEFAULTS["cut_retry_seconds"].default,
        render: RenderSettings | None = None,
        paused: bool = DEFAULTS["runner_paused"].default,
        lifetimes: Lifetimes | None = None,
        prune_interval_seconds: float = DEFAULTS["prune_interval_seconds"].default,
        batch_jobs: int = DEFAULTS["runner_batch_jobs"].default,
    ) -> None:
        self.sessions = sessions
        self.paused = paused
        self.database_url = libpq_url(database_url)
        self.catalog = catalog
        self.renderer = renderer
        self.concurrency = concurrency
        # Batch work never takes the last slot, so a shopper's job is claimed at once (one slot: it must share).
        self.batch_jobs = max(1, min(batch_jobs, concurrency - 1))
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.cut_attempts = cut_attempts
        self.cut_retry_seconds = cut_retry_seconds
        self.storage = storage
        self.upload_ttl_seconds = upload_ttl_seconds
        # The render cache needs the stored images; None (no render settings, no storage): every cut renders.
        self.render = render if render and storage else None
        self.cache = RenderCache(sessions, storage) if self.render is not None else None
        # (catalog swatch key, its color's swatch_version) -> digest, for jobs accepted without one
        # (see _swatch_digest)
        self.swatch_digests: LRUCache = LRUCache(1024)
        self._next_sweep = 0.0
        self.lifetimes = lifetimes  # None: nothing ages out (what it deletes needs the storage too)
        self.prune_interval_seconds = prune_interval_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.db_attempts = DB_ATTEMPTS
        self.active: dict[str, asyncio.Task] = {}  # job id -> the task of the one attempt held here
        self.leases: dict[str, jobs.Lease] = {}  # job id -> that attempt's lease
        self.batch_held: set[str] = set()  # the jobs in hand from the batch lane
        # Database calls block, so they run on threads: one pool sized for the jobs in hand, and one
        # thread of its own for lease renewals, which must never queue behind job work.
        self._db_threads = ThreadPoolExecutor(concurrency + LOOP_DB_THREADS, thread_name_prefix="runner-db")
        self._lease_thread = ThreadPoolExecutor(1, thread_name_prefix="runner-lease")
        self._wake = asyncio.Event()
        self._stopping = False
        self.loop_heartbeat = LoopHeartbeat()  # stamped each time the claim loop goes round (check_health reads it)

    # -- the loop --------------------------------------------------------------------------------
    async def run_forever(self) -> None:
        self._stopping = False
        self._wake = asyncio.Event()  # bound to this loop
        if self.paused:  # claim nothing until stopped: the jobs wait in the table for a runner that claims
            while not self._stopping:
                self.loop_heartbeat.beat()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                except asyncio.TimeoutError:
                    pass
            return
        listener = asyncio.create_task(self._listen())
        heartbeat = asyncio.create_task(self._heartbeat())
        ageing = asyncio.create_task(self._age_out())
        try:
            while not self._stopping:
                self.loop_heartbeat.beat()
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
            ageing.cancel()

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
            unfinished = list(self.leases.values())
            for task in list(self.active.values()):
                task.cancel()
            await asyncio.gather(*self.active.values(), return_exceptions=True)
            released = await self._db(self._release, unfinished)
            loop_task.cancel()
            logger.warning("shutdown: released %d unfinished jobs: %s", len(released), released)
            return released

    def _release(self, leases: list[jobs.Lease]) -> list[str]:
        with self.sessions.begin() as session:
            return jobs.release_jobs(session, leases)

    async def claim_and_start(self) -> list[str]:
        capacity = self.concurrency - len(self.active)
        if capacity <= 0:
            return []
        claimed = await self._in(self._db_threads, self._claim, capacity, list(self.active),
                                 max(0, self.batch_jobs - len(self.batch_held)))
        for claim in claimed:
            lease = claim.lease
            task = asyncio.create_task(self.process(claim))
            self.active[lease.job_id], self.leases[lease.job_id] = task, lease
            if claim.job is not None and claim.job.lane == "batch":
                self.batch_held.add(lease.job_id)
            task.add_done_callback(lambda t, j=lease.job_id: self._finished(j, t))
        return [claim.lease.job_id for claim in claimed]

    def _finished(self, job_id: str, task: asyncio.Task) -> None:
        if self.active.get(job_id) is task:
            del self.active[job_id], self.leases[job_id]
            self.batch_held.discard(job_id)
        self._wake.set()  # capacity freed: look for more work now

    async def backlog(self) -> jobs.Backlog:
        """The queue's depth for Serve's autoscaler: one query on a loop thread (and its connection), no retry,
        since Serve asks again in a few seconds."""
        return await self._in(self._db_threads, self._backlog)

    def _backlog(self) -> jobs.Backlog:
        with self.sessions() as session:
            return jobs.backlog(session)

    def _claim(self, limit: int, held: list[str], batch_limit: int) -> list[Claim]:
        """Claim up to `limit` jobs (at most `batch_limit` from the batch lane) and plan them, in one
        transaction (the claim returns the rows)."""
        with self.sessions.begin() as session:
            claimed = jobs.claim_jobs(session, self.owner, limit, self.lease_seconds, held, batch_limit)
            if not claimed:
                return []
            families, colors = find_families_and_colors(session, [j.family_id for j in claimed],
                                                        [j.color_id for j in claimed])
            planned = [self._plan(job, families.get(job.family_id), colors.get(job.color_id)) for job in claimed]
        for job in claimed:
            if job.attempts == 1:  # queue wait is the first claim's; a re-queued job's rescue is not
                metrics.job_claimed((job.started_at - job.created_at).total_seconds())
        return planned

    def _housekeeping(self) -> None:
        """Every tick: re-queue jobs whose runner or attempt died, end pending jobs past their deadline,
        rank the queue for the positions polls show. Every few minutes: expire old uploads."""
        with self.sessions.begin() as session:
            # Attempts running here are renewed by our heartbeat: a late renewal must not make us rescue
            # ourselves. A job of ours whose attempt died (say in a database outage) is rescued like any.
            rescued = jobs.release_expired_leases(session, RESCUE_BACKOFF.schedule(), spare=list(self.leases.values()))
            for job_id, status in rescued:
                logger.warning("job %s lost its runner's lease; now %s", job_id, status)
            expired = jobs.expire_overdue(session)
            backlog = jobs.backlog(session)
        with self.sessions.begin() as session:  # its own transaction: the ranking's lock is held briefly
            queue_positions.refresh(session)
        for _ in range(sum(status == "failed" for _, status in rescued)):  # out of attempts: a final write
            metrics.job_finished("failed")
        for job_id in expired:
            logger.info("job %s expired before it started", job_id)
            metrics.job_finished("expired")
        metrics.backlog_sampled(backlog.pending_jobs, backlog.pending_cuts, backlog.cuts_in_flight,
                                backlog.oldest_pending_seconds)
        if self.storage is not None and time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS
            removed = self.storage.delete_older_than(UPLOAD_PREFIX, self.upload_ttl_seconds)
            if removed:
                logger.info("expired %d uploaded swatches", removed)

    async def _age_out(self) -> None:
        """Every `prune_interval_seconds`, from the start: delete what aged out (serve_app/jobqueue/retention.py).
        Its own task, so a long prune never delays a claim."""
        if self.lifetimes is None or self.storage is None:
            return
        while not self._stopping:
            try:
                await self._in(self._db_threads, prune, self.sessions, self.storage, self.lifetimes)
            except Exception:  # the database may be briefly away: the next interval tries again
                logger.exception("pruning aged-out data failed; retrying in %.0f s", self.prune_interval_seconds)
            await asyncio.sleep(self.prune_interval_seconds)

    async def _listen(self) -> None:
        """LISTEN for new-job notifications, for as long as the runner runs (`run_forever` cancels it); a
        lost connection is made again every poll interval, and meanwhile the poll finds the work."""
        reconnecting = retrying("the runner's LISTEN connection (polling meanwhile)", retry_if=connection_lost,
                                backoff=Backoff(self.poll_seconds, cap=self.poll_seconds), tries=None, log=logger)
        async for attempt in reconnecting:
            with attempt:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {jobs.NOTIFY_CHANNEL}")
                    async for _ in conn.notifies():
                        self._wake.set()

    async def _heartbeat(self) -> None:
        while True:  # cancelled by run_forever once the last job is done
            await asyncio.sleep(self.lease_seconds / 3)
            asked = list(self.leases.values())
            try:
                held = await self._in(self._lease_thread, self._renew, asked)
            except Exception as exc:
                logger.warning("lease renewal failed: %s", exc)
                continue
            # Only attempts we asked about can be lost; attempts started meanwhile have fresh leases.
            for lease in set(asked) - held:
                if self.leases.get(lease.job_id) == lease:
                    logger.warning("job %s: lease lost (re-queued); abandoning this attempt", lease.job_id)
                    self.active[lease.job_id].cancel()

    def _renew(self, leases: list[jobs.Lease]) -> set[jobs.Lease]:
        with self.sessions.begin() as session:
            return jobs.renew_leases(session, leases, self.lease_seconds)

    # -- one job -----------------------------------------------------------------------------------
    def _plan(self, job: GenerationJob, family: FabricFamily | None, color: Color | None) -> Claim:
        """What the attempt needs from the claim's transaction: the job's fabric words, as the database has
        them when the attempt starts (so an admin's edit shows in the next job), and the progress entries
        of cuts an earlier attempt finished. The cuts themselves are planned by `_plan_cuts`."""
        lease = jobs.lease_of(job)
        if family is None or color is None:
            return Claim(lease, error=NotInCatalog(f"fabric {job.family_id}/{job.color_id} is no longer in the catalog"))
        done = {cut: entry for cut, entry in job.cut_progress.items()
                if entry.get("status") == "completed" and entry.get("key")}
        return Claim(lease, job, PromptWords(family.fabric, color.english), color.swatch_version, done)

    async def _plan_cuts(self, claim: Claim) -> list[tuple[CutPlan, CutTask]]:
        """The job's plan (`plan_cuts`), and the workers' task for each cut."""
        job = claim.job
        try:
            plans = plan_cuts(job, self.catalog, claim.words, self.render,
                              await self._swatch_digest(job, claim.color_version))
        except CutNotInCatalog as exc:
            raise NotInCatalog(str(exc)) from None
        return [(plan, CutTask(job_id=job.job_id, cut=plan.cut, prompt=plan.prompt,
                               template_png=self.catalog.cut(plan.cut).template_png(), swatch_key=job.swatch_key,
                               seed=plan.seed, result_key=plan.result_key, template_digest=plan.template_digest,
                               swatch_digest=plan.swatch_digest))
                for plan in plans]

    async def _swatch_digest(self, job: GenerationJob, color_version: int) -> str | None:
        """The digest of a catalog swatch a job was accepted without (POST /generate for a catalog color,
        whose key the INSERT itself reads): read once per swatch version by this runner, since the key
        and the color's `swatch_version` name the content (an admin's replacement bumps the version).
        With it the generator finds the swatch's embedding without reading it, and the render cache has
        its keys. It only saves work, so a store that does not answer within `CACHE_PLAN_SECONDS` costs
        the job that, never its progress: the generator reads the swatch itself then."""
        if job.swatch_digest is not None or job.swatch_key is None or self.storage is None:
            return None
        named = (job.swatch_key, color_version)
        if (digest := self.swatch_digests.get(named)) is not None:
            return digest
        try:
            digest = await asyncio.wait_for(self._in(self._db_threads, catalog_swatch_digest, self.storage,
                                                     job.swatch_key), CACHE_PLAN_SECONDS)
        except asyncio.TimeoutError:
            logger.warning("job %s: its swatch did not answer within %.0f s; planned without its digest (no render "
                           "cache; the generator reads the swatch)", job.job_id, CACHE_PLAN_SECONDS)
            return None
        if digest is not None:
            self.swatch_digests[named] = digest
        return digest

    @staticmethod
    async def _in(pool: ThreadPoolExecutor, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def _db(self, fn, *args):
        """Run a blocking database call off the loop, riding out a database restart. Only an unavailable
        database is retried: any other error is the call's answer."""
        riding_out = retrying("a database call", retry_if=database_unavailable, backoff=Backoff(0.2, cap=5.0),
                              tries=self.db_attempts, log=logger)
        return await riding_out(self._in, self._db_threads, fn, *args)

    def _record(self, lease: jobs.Lease, cut: str, entry: dict) -> jobs.CutRecorded:
        """Write one cut's progress; the same statement says whether the job was canceled or expired."""
        with self.sessions.begin() as session:
            recorded = jobs.record_cut(session, lease, cut, entry)
        if recorded is None:
            raise LeaseLost(lease.job_id)
        return recorded

    def _record_hit(self, lease: jobs.Lease, cut: str, entry: dict) -> jobs.CutRecorded | None:
        """`_record` for a render-cache hit, with the entry still there (`cached_renders.touch`, same
        transaction, so the prune cannot delete its object in between); None when it aged out meanwhile."""
        with self.sessions.begin() as session:
            if not cached_renders.touch(session, entry["key"]):
                return None
            recorded = jobs.record_cut(session, lease, cut, entry)
        if recorded is None:
            raise LeaseLost(lease.job_id)
        return recorded

    async def process(self, claim: Claim) -> None:
        lease, done = claim.lease, claim.done
        job_id = lease.job_id
        finish = partial(self._finish, created_at=claim.job.created_at if claim.job is not None else None)
        cuts: list[tuple[CutPlan, CutTask]] = []
        try:
            if claim.error is not None:
                raise claim.error
            cuts = await self._plan_cuts(claim)
            async with asyncio.TaskGroup() as group:
                running = {plan.cut: group.create_task(self._run_cut(lease, plan, task))
                           for plan, task in cuts if plan.cut not in done}
            results = {**done, **{cut: task.result() for cut, task in running.items()}}
        except Exception as exc:
            errors = exc.exceptions if isinstance(exc, ExceptionGroup) else (exc,)
            if any(isinstance(error, LeaseLost) for error in errors):
                logger.warning("job %s: this attempt lost its lease (the job was re-queued); stopping it", job_id)
                return
            if any(isinstance(error, JobCanceled) for error in errors):
                await self._db(finish, jobs.mark_canceled, lease)
                logger.info("job %s canceled", job_id)
                return
            if any(isinstance(error, JobExpired) for error in errors):
                await self._db(finish, jobs.mark_expired, lease)
                logger.info("job %s expired at a cut boundary", job_id)
                return
            first = errors[0]
            logger.error("job %s failed: %s: %s", job_id, type(first).__name__, first)
            await self._db(finish, jobs.fail_job, lease, failure_reason(first), f"{type(first).__name__}: {first}")
            return
        if await self._db(finish, jobs.complete_job, lease, [results[plan.cut]["url"] for plan, _ in cuts]):
            logger.info("job %s completed (%d cuts, %d reused from an earlier attempt)", job_id, len(cuts), len(done))

    async def _run_cut(self, lease: jobs.Lease, plan: CutPlan, task: CutTask) -> dict:
        """One cut, in up to `cut_attempts` attempts `cut_retry_seconds` apart, doubling. Only a failure another
        attempt can cure is retried (`worth_rendering_again`); the one that ends it fails the cut (`CutFailed`).
        The cancel flag and the deadline are checked at every cut boundary, by the progress write that marks
        it (before each render attempt, and when it is done).

        A cut the render cache has is not rendered: its stored image completes it at once (unless its entry
        aged out between the look-up and the record: then it renders)."""
        cache = plan.cache_entry if self.cache is not None else None
        if cache is not None and (hit := await self._db(self.cache.lookup, task.job_id, task.cut, task.seed,
                                                         cache)) is not None:
            recorded = await self._db(self._record_hit, lease, task.cut, hit)
            if recorded is not None:
                _stop_if_asked(recorded)
                return hit
        rendering = retrying(f"job {task.job_id} cut {task.cut}", retry_if=worth_rendering_again,
                             backoff=Backoff(self.cut_retry_seconds), tries=self.cut_attempts, log=logger)
        attempt = 0
        try:
            async for trying in rendering:
                with trying:
                    attempt = trying.retry_state.attempt_number
                    _stop_if_asked(await self._db(self._record, lease, task.cut,
                                                  {"status": "processing", "seed": task.seed, "attempt": attempt}))
                    result = await self.renderer.render(task)
        except (JobCanceled, JobExpired, LeaseLost):
            raise
        except Exception as exc:  # given up: tried `cut_attempts` times, or failed in a way no retry cures
            raise CutFailed(f"cut {task.cut} failed {attempt} time{'s' if attempt > 1 else ''}; last error: "
                            f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        entry = {"status": "completed", "seed": task.seed, "url": result.url, "key": result.key,
                 "ip_adapter_fallback": result.ip_adapter_fallback, "attempt": attempt, "cached": False,
                 "finished_at": datetime.now(timezone.utc).isoformat()}
        recorded = await self._db(self._record, lease, task.cut, entry)
        if cache is not None:
            await self._db(self.cache.remember, task.job_id, cache, entry)
        _stop_if_asked(recorded)
        return entry

    def _finish(self, operation, lease: jobs.Lease, *args, created_at: datetime | None = None) -> bool:
        """The attempt's last write; False (and nothing changed) when the attempt had lost its lease.

        A write that lands is counted by outcome, and a completion with the job's end-to-end latency,
        from `created_at` (the claimed row's) to now: no statement of its own."""
        with self.sessions.begin() as session:
            landed = operation(session, lease, *args)
        if landed:
            outcome = FINAL_OUTCOMES[operation]
            completed = outcome == "completed" and created_at is not None
            metrics.job_finished(outcome, (datetime.now(timezone.utc) - created_at).total_seconds() if completed else None)
            return True
        logger.warning("job %s: its lease was lost before %s; the write was refused", lease.job_id,
                       operation.__name__)
        return False


def _stop_if_asked(recorded: jobs.CutRecorded) -> None:
    """At a cut boundary: stop the job if its client canceled it or its deadline passed."""
    if recorded.cancel_requested:
        raise JobCanceled()
    if recorded.deadline_passed:
        raise JobExpired()
