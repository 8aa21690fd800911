"""The JobRunner's loop on a real database, with the workers in-process (no Ray)."""

from __future__ import annotations

import asyncio
import io
import time

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from ray.exceptions import ActorDiedError
from sqlalchemy import event, select

from catalog.data import CatalogData, load_catalog
from catalog.loader import color_swatch_key, sync_catalog
from catalog.swatches import render_swatch
from db import fabrics, jobs
from db.engine import make_engine, make_sessionmaker
from db.job_failures import NOT_IN_CATALOG, RENDER_FAILED
from db.models import Color, GenerationJob
from deployments.generation import CutGenerator, SdxlTurboModel
from deployments.rendering import CutResult
from deployments.storage import LocalStorage, ObjectMissing, StorageError
from serve_app.bootstrap import put_catalog_swatches
from serve_app.jobqueue.plans import plan_cuts
from serve_app.jobqueue.worker import JobWorker
from tests.in_process import finished, job_worker, render_chain, run_job, run_jobs, running, wait_for_job
from tests.job_rows import expire_leases


@pytest.fixture(scope="module")
def model() -> SdxlTurboModel:
    return SdxlTurboModel.from_profile("tiny-random", device="cpu")


def _catalog_in(sessions, tmp_path) -> tuple[CatalogData, LocalStorage]:
    """What the service's start does: the shipped catalog synced, its swatches put into local storage."""
    catalog = load_catalog()
    with sessions.begin() as s:
        sync_catalog(s, catalog)
    storage = LocalStorage(tmp_path, "http://127.0.0.1:8000/media")
    put_catalog_swatches(storage, catalog)
    return catalog, storage


@pytest.fixture
def runner(sessions, database_url, tmp_path, model):
    catalog, storage = _catalog_in(sessions, tmp_path)
    return job_worker(sessions, database_url, catalog, render_chain(CutGenerator(model, storage), storage)), storage


def _create(sessions, cuts, color="lana-fria-azul-marino", swatch_key="SASTRE 2026-27/095T-0121.png",
            **options) -> str:
    with sessions.begin() as s:
        return jobs.create_job(s, family_id="lana-fria", color_id=color, cuts=cuts, seed=7, swatch_url=None,
                               swatch_key=swatch_key, **options).job_id


def test_runner_completes_jobs_in_cut_order_with_progress(runner, sessions):
    runner, storage = runner
    ids = [_create(sessions, ["cruzado", "recto"]), _create(sessions, ["recto"]), _create(sessions, ["recto"])]
    run_jobs(runner, sessions, ids)
    with sessions() as s:
        first = jobs.get_job(s, ids[0])
        others = [jobs.get_job(s, j) for j in ids[1:]]
    assert first.status == "completed" and first.lease_owner is None and first.attempts == 1
    assert [u.rsplit("/", 1)[1] for u in first.result_urls] == ["cruzado.jpg", "recto.jpg"]
    assert first.result_urls[0].endswith(f"generated/lana-fria/lana-fria-azul-marino/{first.result_token}/cruzado.jpg")
    assert first.cut_progress["cruzado"]["status"] == "completed" and first.cut_progress["cruzado"]["seed"] == 7
    assert first.cut_progress["recto"]["seed"] == 8 and not first.cut_progress["recto"]["ip_adapter_fallback"]
    assert all(o.status == "completed" for o in others)
    key = storage.key_for_url(first.result_urls[1])
    with Image.open(io.BytesIO(storage.get(key))) as image:
        assert image.format == "JPEG" and image.size == (64, 64)
    assert not runner.active


def test_missing_swatch_completes_with_fallback_recorded(runner, sessions):
    runner, _ = runner
    job_id = _create(sessions, ["recto"], swatch_key="temp-uploads/gone.png")
    run_jobs(runner, sessions, [job_id])
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == "completed"
    assert job.cut_progress["recto"]["ip_adapter_fallback"] is True


def test_job_for_a_removed_color_fails_with_a_clear_error(runner, sessions):
    runner, _ = runner
    job_id = _create(sessions, ["recto"])
    with sessions.begin() as s:  # an admin deletes the color after the job was accepted
        fabrics.delete_color(s, s.scalars(select(Color).where(Color.color_id == "lana-fria-azul-marino")).one())
    run_jobs(runner, sessions, [job_id])
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == "failed" and job.error_message == NOT_IN_CATALOG.message
    assert "no longer in the catalog" in job.error_detail


class Flaky:
    """Wraps a renderer: fails the first `failures[cut]` calls for a cut with `error` (by default the
    replica died, as Ray reports it: worth another attempt), counts every call."""

    def __init__(self, inner, failures: dict[str, int] | None = None, delay: float = 0.0,
                 error: Callable[[], Exception] = ActorDiedError) -> None:
        self.inner, self.failures, self.delay, self.error = inner, dict(failures or {}), delay, error
        self.calls: dict[str, int] = {}

    async def render(self, task):
        self.calls[task.cut] = self.calls.get(task.cut, 0) + 1
        await asyncio.sleep(self.delay)
        if self.failures.get(task.cut, 0) > 0:
            self.failures[task.cut] -= 1
            raise self.error()
        return await self.inner.render(task)


def test_a_failing_cut_is_retried_and_the_others_are_not_redone(runner, sessions):
    runner, _ = runner
    runner.renderer = flaky = Flaky(runner.renderer, {"cruzado": 2})
    runner.cut_retry_seconds = 0.01
    job_id = _create(sessions, ["recto", "cruzado"])
    run_jobs(runner, sessions, [job_id])
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == "completed"
    assert flaky.calls == {"recto": 1, "cruzado": 3}
    assert job.cut_progress["cruzado"]["attempt"] == 3


def test_a_cut_that_keeps_failing_fails_the_job_with_the_reason(runner, sessions):
    runner, _ = runner
    runner.renderer = Flaky(runner.renderer, {"recto": 99})
    runner.cut_retry_seconds, runner.cut_attempts = 0.01, 3
    job_id = _create(sessions, ["recto"])
    run_jobs(runner, sessions, [job_id])
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == "failed"
    assert job.error_message == RENDER_FAILED.message
    assert "cut recto failed 3 times" in job.error_detail and "ActorDiedError: The actor died" in job.error_detail


@pytest.mark.parametrize("error", [lambda: ValueError("a seed out of range"), lambda: AttributeError("a bug"),
                                   lambda: ObjectMissing("no object 'generated/x.jpg'"),
                                   lambda: StorageError("cannot write: AccessDenied (403)")])
def test_a_cut_failure_no_retry_can_cure_fails_the_job_at_once(runner, sessions, error):
    """A bad value, a bug, a missing object or a refusal gives the same answer however often it is asked."""
    runner, _ = runner
    runner.renderer = flaky = Flaky(runner.renderer, {"recto": 99}, error=error)
    runner.cut_retry_seconds, runner.cut_attempts = 0.01, 3
    job_id = _create(sessions, ["recto"])
    run_jobs(runner, sessions, [job_id])
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert flaky.calls == {"recto": 1}
    assert (job.status, job.error_message) == ("failed", RENDER_FAILED.message)
    assert job.error_detail.startswith(f"CutFailed: cut recto failed 1 time; last error: {type(error()).__name__}: ")


def test_a_rerun_after_a_crash_keeps_finished_cuts_and_their_objects(runner, sessions):
    runner, storage = runner
    job_id = _create(sessions, ["recto", "cruzado"])
    run_jobs(runner, sessions, [job_id])
    with sessions.begin() as s:  # as if the runner died after finishing recto only: back to pending
        job = jobs.get_job(s, job_id)
        progress = dict(job.cut_progress)
        progress["cruzado"] = {"status": "processing", "seed": 8}
        job.cut_progress, job.status, job.result_urls = progress, "pending", None
    runner.renderer = flaky = Flaky(runner.renderer)
    run_jobs(runner, sessions, [job_id])
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == "completed" and flaky.calls == {"cruzado": 1}
    assert job.attempts == 2
    keys = sorted(p.name for p in (storage.root / f"generated/lana-fria/lana-fria-azul-marino/{job.result_token}").iterdir())
    assert keys == ["cruzado.jpg", "recto.jpg"]  # the same keys, overwritten, never duplicated


def test_cancel_stops_a_processing_job_at_a_cut_boundary(runner, sessions):
    runner, _ = runner
    runner.renderer = Flaky(runner.renderer, {"recto": 1}, delay=0.3)
    runner.cut_retry_seconds = 0.5
    job_id = _create(sessions, ["recto"])

    async def scenario():
        async with running(runner):
            await wait_for_job(sessions, job_id, lambda job: job.status == "processing", 30)
            with sessions.begin() as s:
                assert jobs.request_cancel(s, job_id) == "requested"
            await wait_for_job(sessions, job_id, lambda job: job.status == "canceled" or finished(job), 30)

    asyncio.run(scenario())
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == "canceled" and job.result_urls is None and job.lease_owner is None


def test_a_pending_job_past_its_deadline_expires_without_a_render(runner, sessions):
    runner, _ = runner
    runner.renderer = flaky = Flaky(runner.renderer)
    late = _create(sessions, ["recto"], deadline_seconds=0.2)
    in_time = _create(sessions, ["recto"], deadline_seconds=600)
    time.sleep(0.3)

    async def scenario():
        async with running(runner):
            await wait_for_job(sessions, in_time, finished, 30)
            return await wait_for_job(sessions, late, lambda job: job.status != "pending", 30)

    expired = asyncio.run(scenario())
    assert expired.status == "expired" and expired.attempts == 0 and expired.cut_progress == {}
    assert expired.error_message.startswith("deadline_passed:") and expired.completed_at is not None
    assert flaky.calls == {"recto": 1}  # the job in time only


def test_a_running_job_stops_at_its_next_cut_boundary_past_the_deadline_and_keeps_its_done_cuts(runner, sessions):
    runner, storage = runner
    # cruzado's first attempt fails; its retry, 1.5 s later, comes after the 1 s deadline: that boundary ends it
    runner.renderer = flaky = Flaky(runner.renderer, {"cruzado": 1})
    runner.cut_retry_seconds = 1.5
    job_id = _create(sessions, ["recto", "cruzado"], deadline_seconds=1.0)

    async def scenario():
        async with running(runner):
            return await wait_for_job(sessions, job_id, lambda job: job.status not in ("pending", "processing"), 30)

    job = asyncio.run(scenario())
    assert job.status == "expired" and job.error_message.startswith("deadline_passed:")
    assert job.lease_owner is None and job.result_urls is None
    assert flaky.calls == {"recto": 1, "cruzado": 1}  # never rendered again once past the deadline
    done = job.cut_progress["recto"]
    assert done["status"] == "completed" and storage.exists(done["key"])  # the finished cut stays available
    assert job.cut_progress["cruzado"]["status"] == "processing"


def test_a_shoppers_job_waits_behind_at_most_the_runners_batch_jobs(runner, sessions):
    runner, _ = runner
    runner.renderer = flaky = Flaky(runner.renderer, delay=0.05)
    runner.concurrency, runner.batch_jobs = 4, 2
    prewarm = [_create(sessions, ["recto"], lane="batch") for _ in range(40)]
    shopper: list[str] = []

    async def scenario():
        async with running(runner):
            while sum(flaky.calls.values()) < 6:  # the prewarm is under way
                await asyncio.sleep(0.01)
            shopper.append(_create(sessions, ["cruzado"]))
            await wait_for_job(sessions, shopper[0], finished, 30)
            for job_id in prewarm:
                await wait_for_job(sessions, job_id, finished, 60)

    asyncio.run(scenario())
    with sessions() as s:
        mine = jobs.get_job(s, shopper[0])
        batch = jobs.get_jobs(s, prewarm)
    assert mine.status == "completed" and all(job.status == "completed" for job in batch)
    # Claimed at once: the runner keeps room for shoppers and claims them first (one batch claim may race
    # the shopper's insert). Without lanes it was the 41st job of one client: claimed after the prewarm.
    claimed_meanwhile = [job for job in batch if mine.created_at < job.started_at < mine.started_at]
    assert len(claimed_meanwhile) <= 1 and (mine.started_at - mine.created_at).total_seconds() < 1.0
    assert sum(job.started_at > mine.completed_at for job in batch) >= 20  # it finished well ahead of them
    assert max(job.attempts for job in batch) == 1


def test_claims_take_the_interactive_lane_first_and_bound_the_batch_lane(runner, sessions):
    batch = [_create(sessions, ["recto"], lane="batch") for _ in range(5)]
    interactive = [_create(sessions, ["recto"]) for _ in range(2)]
    with sessions.begin() as s:
        first = jobs.claim_jobs(s, "test", 4, 30, batch_limit=1)
    assert {job.job_id for job in first} == {*interactive, batch[0]}
    with sessions.begin() as s:
        assert {job.job_id for job in jobs.claim_jobs(s, "test", 4, 30, batch_limit=0)} == set()
        assert [job.job_id for job in jobs.claim_jobs(s, "test", 2, 30)] == batch[1:3]


def test_shutdown_releases_jobs_it_cannot_finish_in_time(runner, sessions):
    runner, _ = runner
    runner.renderer = Flaky(runner.renderer, delay=30)
    job_id = _create(sessions, ["recto"])

    async def scenario():
        loop = asyncio.create_task(runner.run_forever())
        while not runner.active:
            await asyncio.sleep(0.02)
        return await runner.shutdown(loop, grace_seconds=0.5)

    assert asyncio.run(scenario()) == [job_id]
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert (job.status, job.attempts, job.lease_owner) == ("pending", 0, None)


def test_heartbeats_never_abandon_jobs_claimed_between_renewals(runner, sessions):
    """Renewals every 0.1 s while jobs start and finish all the time: every job runs exactly once."""
    runner, _ = runner
    runner.lease_seconds = 0.3
    runner.renderer = flaky = Flaky(runner.renderer, delay=0.15)
    ids = [_create(sessions, ["recto"]) for _ in range(8)]
    run_jobs(runner, sessions, ids)
    with sessions() as s:
        finals = [jobs.get_job(s, j) for j in ids]
    assert [(j.status, j.attempts) for j in finals] == [("completed", 1)] * 8
    assert flaky.calls == {"recto": 8}


def test_notify_wakes_an_idle_runner_long_before_its_poll(runner, sessions):
    runner, _ = runner
    runner.poll_seconds = 30  # the fallback poll cannot be what picks the job up

    async def scenario():
        async with running(runner):
            await asyncio.sleep(1.0)  # idle, LISTENing
            job_id = await asyncio.to_thread(_create, sessions, ["recto"])
            return await wait_for_job(sessions, job_id, lambda job: job.status == "completed", 20)

    job = asyncio.run(scenario())
    pickup = (job.started_at - job.created_at).total_seconds()
    assert pickup < 0.25, f"picked up after {pickup:.3f} s"


def test_a_paused_runner_claims_nothing_and_the_job_waits_for_one_that_is_not(runner, sessions):
    runner, _ = runner
    runner.paused = True
    job_id = _create(sessions, ["recto"])

    async def paused_for(seconds: float) -> None:
        async with running(runner):
            await asyncio.sleep(seconds)  # five poll intervals, and the NOTIFY of the job above

    asyncio.run(paused_for(1.0))
    with sessions() as s:
        job = jobs.get_job(s, job_id)
        assert (job.status, job.attempts, job.started_at) == ("pending", 0, None)
    runner.paused = False
    run_jobs(runner, sessions, [job_id])
    with sessions() as s:
        assert jobs.get_job(s, job_id).status == "completed"


class Gated:
    """A renderer the test steers: render n waits until gate n opens, and its URL names n."""

    def __init__(self) -> None:
        self.renders = 0
        self.gates: dict[int, asyncio.Event] = {}

    def gate(self, n: int) -> asyncio.Event:
        return self.gates.setdefault(n, asyncio.Event())

    async def render(self, task):
        self.renders += 1
        n = self.renders
        await self.gate(n).wait()
        return CutResult(f"http://r/{task.result_key}?render={n}", f"{task.result_key}#{n}", task.seed, False)


async def _until(predicate, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def _let_the_next_attempt_finish(runner: JobWorker, gated: Gated, sessions, job_id: str) -> None:
    """Opens the gates of the renders after the first, then waits until the job has finished and the
    runner holds no attempt of it any more."""
    for n in range(2, 6):
        gated.gate(n).set()
    await wait_for_job(sessions, job_id, finished, 20)
    await _until(lambda: not runner.active)


async def _lapse_the_first_attempt(runner: JobWorker, gated: Gated, sessions, job_id: str) -> asyncio.Task:
    """Waits until attempt 1 is inside its render, then makes what a paused runner sees on waking: its
    lease ran out and another runner's rescuer re-queued the job. Attempt 1's task."""
    await _until(lambda: gated.renders == 1)
    first = runner.active[job_id]
    with sessions.begin() as s:
        expire_leases(s, job_id)
        assert jobs.release_expired_leases(s, [0.0]) == [(job_id, "pending")]
    return first


def test_a_stale_attempt_cannot_complete_a_job_its_runner_claimed_again(runner, sessions):
    runner, _ = runner
    runner.renderer = gated = Gated()
    runner.poll_seconds = 30  # the test, not the poll, decides when the runner looks for work
    job_id = _create(sessions, ["recto"])

    async def scenario():
        async with running(runner):
            first = await _lapse_the_first_attempt(runner, gated, sessions, job_id)
            reclaimed = await runner.claim_and_start()  # the same runner looks for work while attempt 1 lives
            gated.gate(1).set()  # attempt 1 resumes and tries to write its render
            await asyncio.wait([first], timeout=10)
            await _let_the_next_attempt_finish(runner, gated, sessions, job_id)
        return reclaimed

    reclaimed = asyncio.run(scenario())
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    # Exactly one attempt's writes landed: the job holds render 2's result, not the stale render 1's.
    assert job.status == "completed"
    assert job.result_urls == [f"http://r/{plan_cuts(job)[0].result_key}?render=2"]
    assert job.cut_progress["recto"]["url"].endswith("?render=2")
    assert (job.attempts, gated.renders) == (2, 2)
    assert reclaimed == []  # a runner never holds two attempts of one job


def test_a_stale_attempt_is_stopped_by_the_heartbeat_before_it_renders_again(runner, sessions):
    runner, _ = runner
    runner.renderer = gated = Gated()
    runner.lease_seconds = 0.6  # heartbeat every 0.2 s
    runner.poll_seconds = 30
    job_id = _create(sessions, ["recto"])

    async def scenario():
        async with running(runner):
            first = await _lapse_the_first_attempt(runner, gated, sessions, job_id)
            await asyncio.wait([first], timeout=5)  # never opened: only the heartbeat can end it
            stopped = first.done()
            await _let_the_next_attempt_finish(runner, gated, sessions, job_id)
        return stopped

    assert asyncio.run(scenario())
    with sessions() as s:
        job = jobs.get_job(s, job_id)
    assert job.status == "completed" and job.result_urls[0].endswith("?render=2")
    assert (job.attempts, gated.renders) == (2, 2)


def test_a_job_whose_attempt_died_in_a_database_outage_is_rescued_by_its_own_runner(runner, sessions):
    """The attempt's last writes fail (database away longer than the retries) and the task dies; the
    same, still running runner must put the job back instead of leaving it `processing` forever."""
    runner, _ = runner
    healthy = runner.sessions
    outage = make_sessionmaker(make_engine("postgresql://postgres@127.0.0.1:9/nowhere"))
    runner.lease_seconds, runner.poll_seconds, runner.db_attempts = 0.6, 0.1, 2
    inner = runner.renderer

    class DatabaseGoesAway:
        renders = 0

        async def render(self, task):
            DatabaseGoesAway.renders += 1
            result = await inner.render(task)
            if DatabaseGoesAway.renders == 1:
                runner.sessions = outage  # every database call of this attempt from here on fails
            return result

    runner.renderer = DatabaseGoesAway()
    job_id = _create(sessions, ["recto"])

    async def scenario():
        async with running(runner):
            await _until(lambda: DatabaseGoesAway.renders == 1)
            first = runner.active[job_id]
            await asyncio.wait([first], timeout=20)
            assert first.done() and first.exception() is not None  # the attempt died with the outage
            runner.sessions = healthy  # the database is back; the runner itself never stopped
            return await wait_for_job(sessions, job_id, finished, 15)

    job = asyncio.run(scenario())
    assert (job.status, job.attempts, DatabaseGoesAway.renders) == ("completed", 2, 2)


def test_a_two_cut_job_costs_five_transactions_besides_its_share_of_the_claim(runner, sessions, engine):
    """Two progress writes per cut (each also answers "cancel requested?") and the completion; the claim,
    which also plans the jobs it returns, is shared. The runner before spent 9 per job and 16 statements:
    it re-read the claimed row, and checked cancel before each cut and once more at the end."""
    runner, _ = runner
    ids = [_create(sessions, ["recto", "cruzado"]) for _ in range(2)]
    begins, statements = [], []

    def on_begin(conn):
        begins.append(conn)

    def on_statement(conn, cursor, statement, *rest):
        statements.append(statement)

    async def claim_and_finish():
        started = await runner.claim_and_start()
        await asyncio.gather(*runner.active.values())
        return started

    event.listen(engine, "begin", on_begin)
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        started = asyncio.run(claim_and_finish())
    finally:
        event.remove(engine, "begin", on_begin)
        event.remove(engine, "before_cursor_execute", on_statement)
    with sessions() as s:
        assert [jobs.get_job(s, j).status for j in ids] == ["completed", "completed"]
    assert sorted(started) == sorted(ids)
    # claim: UPDATE … RETURNING, its NOTIFY, families, colors; each write: UPDATE and its NOTIFY.
    assert len(begins) <= 1 + 5 * len(ids), len(begins)
    assert len(statements) <= 4 + 10 * len(ids), statements


def test_a_catalog_swatch_is_read_once_until_an_admin_replaces_it(sessions, database_url, tmp_path, model):
    catalog, storage = _catalog_in(sessions, tmp_path)
    generator = CutGenerator(model, storage)
    runner = job_worker(sessions, database_url, catalog, render_chain(generator, storage), storage=storage)

    def run_one() -> GenerationJob:
        return run_job(runner, sessions, _create(sessions, ["recto"]))

    first = run_one()
    read = generator.reads  # 1, or 0 when an earlier test of this module's model embedded the swatch already
    second = run_one()
    assert first.swatch_digest is None  # a catalog color's job: the runner digests its swatch once per version
    assert generator.reads == read <= 1 and len(runner.swatch_digests) == 1
    assert np.array_equal(_pixels(storage, first), _pixels(storage, second))  # the cached embedding is the read one's

    with sessions.begin() as s:  # what an admin's swatch replacement does: new content, same key, next version
        color = s.scalars(select(Color).where(Color.color_id == "lana-fria-azul-marino")).one()
        storage.put(color_swatch_key(color.family, color), render_swatch("#5E2430", "330W-0534"), "image/png")
        color.swatch_version += 1
    third = run_one()
    assert generator.reads == read + 1 and third.status == "completed" and len(runner.swatch_digests) == 2
    assert not np.array_equal(_pixels(storage, third), _pixels(storage, second))


def _pixels(storage: LocalStorage, job: GenerationJob) -> np.ndarray:
    with Image.open(io.BytesIO(storage.get(storage.key_for_url(job.result_urls[0])))) as image:
        return np.asarray(image.convert("RGB"))
